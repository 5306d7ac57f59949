"""report.md from a results.json dict: the findings side by side with the paper, then every step's tables and
plots. Pure formatting: every number comes from ``results``."""

from __future__ import annotations

from typing import Any

from .findings import NOT_JUDGED, RULE


def _step(results, name):
    entry = results.get("steps", {}).get(name)
    return entry.get("result") if entry and entry.get("status") == "ok" else None


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) >= 1e4 else f"{value:.{digits}f}"
    return str(value)


def _image(results, plot: str, alt: str) -> list[str]:
    name = results.get("plots", {}).get(plot)
    if name and not name.startswith("failed"):
        return [f"![{alt}]({name})", ""]
    return []


def _header(results) -> list[str]:
    m, d, env = results["model"], results["data"], results["environment"]
    ev, cal = d["evaluation"], d["calibration"]
    lines = [
        f"# tcompress report: {m['name']}",
        "",
        "Reproduction of *Variance Is Not Importance: Structural Analysis of Transformer Compressibility Across Model "
        "Scales* (arXiv 2604.20682) on this model.",
        "",
        f"- Command: `{results['command']}`",
        f"- Date: {results['started']} (total {results['seconds']:.0f} s); budget **{results['budget']['name']}**",
        f"- Machine: {env['machine']}; tcompress {env['tcompress']} (CPU kernels: {env['isa']}), torch {env['torch']}, "
        f"transformers {env['transformers']}, Python {env['python']}",
        f"- Model: {m['class']} ({m['family']}), {m['num_blocks']} blocks, d = {m['hidden_size']}, "
        f"{m['parameters']:,} parameters, {m['dtype']} on {m['device']}; source: {m.get('source', m['name'])}",
        f"- Evaluation: {ev['label']}; {ev['tokens']:,} tokens in windows {ev['windows']}",
        f"- Calibration: {cal['label']}; {cal['tokens']:,} tokens in windows {cal['windows']}"
        + (" — **the same text as the evaluation**" if cal["overlaps_evaluation"] else "")
        + (
            f" — **only {cal['windows'][0]} non-overlapping windows fit the text; the budget asked for "
            f"{cal['windows_asked']}**"
            if "windows_asked" in cal
            else ""
        ),
        "",
    ]
    if "fallback" in ev["name"]:
        lines += [
            "> **The evaluation text is the offline fallback, not WikiText-2**: perplexities are not comparable with "
            "published numbers (relative changes still are).",
            "",
        ]
    return lines


def _findings(results) -> list[str]:
    lines = [
        "## The paper's findings against this run",
        "",
        "| | finding | paper | this run | verdict |",
        "|---|---|---|---|---|",
    ]
    for f in results["findings"]:
        ours = "; ".join(c["measured"] for c in f["criteria"] if c["measured"]) or "—"
        paper = "; ".join(c["paper"] for c in f["criteria"])
        lines.append(f"| {f['key']} | {f['title']} | {paper} | {ours} | **{f['verdict']}** |")
    lines += ["", f"**Rule.** {RULE}", ""]
    for f in results["findings"]:
        lines += [f"### {f['key']}: {f['title']} — {f['verdict']}", "", f"Paper: {f['claim']}", ""]
        if f.get("reason"):
            lines += [f"Not judged: {f['reason']}.", ""]
        for c in f["criteria"]:
            mark = {True: "met", False: "not met", None: "not measured"}[c["met"]]
            if f["verdict"] == NOT_JUDGED:  # in-sample numbers: a criterion's outcome is shown, not counted
                mark = f"{mark}, not judged"
            lines.append(f"- [{mark}] {c['description']}. Paper: {c['paper']}. This run: {c['measured'] or '—'}.")
        lines.append("")
    return lines


def _steps_table(results) -> list[str]:
    lines = ["## Steps", "", "| step | status | time |", "|---|---|---|"]
    for name, entry in results["steps"].items():
        status = entry["status"]
        if status == "failed":
            status = f"**failed**: {entry['error']}"
        lines.append(f"| {name} | {status} | {entry.get('seconds', 0):.0f} s |")
    return [*lines, ""]


def _compression(results) -> list[str]:
    lines = []
    base = _step(results, "baseline")
    if base:
        lines += ["## Baseline", "", f"Perplexity {base['ppl']:.4f} over {base['tokens']:,} predicted tokens.", ""]
    sp = _step(results, "spectral")
    if sp:
        lines += [
            "## Spectral compression",
            "",
            "Truncated SVD of every projection (plain, and whitened by the calibration inputs).",
            "",
            "| SVD | params kept | energy kept (mean) | ‖W−AB‖/‖W‖ | ‖X(W−AB)ᵀ‖/‖XWᵀ‖ | perplexity |",
            "|---|---|---|---|---|---|",
        ]
        for p in sp["points"]:
            lines.append(
                f"| {p['method']} | {p['params_kept_fraction']:.3f} | {p['energy_kept_mean']:.3f} | "
                f"{p['weight_rel_error']:.4f} | {p['output_rel_error']:.4f} | {_fmt(p['perplexity'])} |"
            )
        lines.append("")
    q = _step(results, "quantization")
    if q:
        lines += [
            "## Quantization, with and without rotation",
            "",
            f"Round-to-nearest, symmetric; rotation {q['rotation']}. fp32 rotated must equal the baseline "
            f"({q['baseline_ppl']:.4f}): the rotation is exact.",
            "",
            "| setting | plain | rotated |",
            "|---|---|---|",
        ]
        for setting in dict.fromkeys(r["setting"] for r in q["rows"]):

            def cell(rotated, setting=setting):
                row = next((r for r in q["rows"] if r["setting"] == setting and r["rotated"] == rotated), None)
                if row is None:
                    return f"{q['baseline_ppl']:.4f}" if setting == "fp32" else "—"
                return _fmt(row["ppl"]) if row["ppl"] is not None else row.get("note", "—")

            lines.append(f"| {setting} | {cell(False)} | {cell(True)} |")
        lines += ["", *_image(results, "quantization", "quantization")]
    wall = _step(results, "wall")
    if wall:
        lines += [
            "## The reconstruction wall",
            "",
            f"Equal bits per weight (group size {wall['group_size']}); Q(A)·Q(B) at the largest rank within direct "
            "int4's bits, Q(W − AB) + AB within direct int5's.",
            "",
            "| rotated | variant | bits/weight | ‖W−Ŵ‖/‖W‖ | ‖X(W−Ŵ)ᵀ‖/‖XWᵀ‖ | perplexity |",
            "|---|---|---|---|---|---|",
        ]
        for run in wall["runs"]:
            for v in run["variants"]:
                lines.append(
                    f"| {'yes' if run['rotated'] else 'no'} | {v['variant']} | {v['bits_per_weight']:.3f} | "
                    f"{v['weight_rel_error']:.4f} | {v['output_rel_error']:.4f} | {_fmt(v['perplexity'])} |"
                )
        for run in wall["runs"]:
            factored = next((v for v in run["variants"] if v["cross_terms"]), None)
            if factored:
                terms = ", ".join(f"{k} {w:.4g}" for k, (w, _) in factored["cross_terms"].items())
                lines += ["", f"Error terms of Q(A)·Q(B) (rotated: {run['rotated']}; weight space, pooled): {terms}."]
        lines.append("")
    return lines


_POSITION_WORDS = {
    "no_outliers": "positions ≥ 1 without massive tokens (no outliers)",
    "no_first": "positions ≥ 1 (no first)",
    "all": "every position",
}


def _headline_positions(result: dict) -> str:
    """The position set a linearity curve or geometry report calls its headline (results before there was a
    choice: "no_first")."""
    return result.get("default_positions", "no_first")


def _beside_null(measured: dict, null: dict | None, key: str) -> str:
    """A geometry figure with its null beside it: random k-subspaces under the same covariance, mean ± std over the
    null's draws (results from before the null: the figure alone)."""
    if not null:
        return f"{measured[key]:.3f}"
    return f"{measured[key]:.3f} ({null[key]:.3f} ± {null[key + '_std']:.3f})"


def _structure(results) -> list[str]:
    lines = []
    lin = _step(results, "linearity")
    if lin:
        lines += [
            "## Block linearity",
            "",
            "Held-out R² of a ridge affine fit per block, pooled over dimensions; output target (the block's output "
            "hidden state) and residual-update target (output − input), over "
            f"{_POSITION_WORDS[_headline_positions(lin['curve'])]}; then the output R² over the other position sets. "
            '"no outliers" leaves out the first position of every window (attention sink) and every token whose '
            "block input or output norm exceeds 10× the block's median (massive activations; counted per block in the "
            'last column, train + held-out); "no first" leaves out only the first position.',
            "",
            "| block | output | residual update | output, no first | output, all positions | massive tokens |",
            "|---|---|---|---|---|---|",
        ]
        headline = _headline_positions(lin["curve"])
        marks = lin["curve"]["statistics"].get("massive_tokens") or {}
        massive = {b["layer"]: b["count"] for b in marks.get("blocks", [])}
        for b in lin["curve"]["blocks"]:
            hl, nf, al = b["r2"][headline], b["r2"]["no_first"], b["r2"]["all"]
            lines.append(
                f"| {b['layer']} | {hl['output']['pooled']:.4f} | {hl['residual']['pooled']:.4f} | "
                f"{nf['output']['pooled']:.4f} | {al['output']['pooled']:.4f} | {massive.get(b['layer'], '–')} |"
            )
        lines += [
            "",
            *_image(results, "linearity", "R² against depth"),
            "Conditional linearity (block k replaced by its linear map, block l = k + 1 measured):",
            "",
            "| k → l | target | clean | shifted inputs, clean fit | shifted inputs, refitted |",
            "|---|---|---|---|---|",
        ]
        for p in lin["conditional"]["pairs"]:
            for target in ("output", "residual"):
                lines.append(
                    f"| {p['upstream']} → {p['layer']} | {target} | {p['clean'][target]['pooled']:.4f} | "
                    f"{p['shifted_clean_fit'][target]['pooled']:.4f} | {p['shifted_refit'][target]['pooled']:.4f} |"
                )
        lines.append("")
    sub = _step(results, "substitution")
    if sub:
        lines += [
            "## Linear block substitution",
            "",
            f"Baseline perplexity {sub['baseline_ppl']:.4f}; maps h + (h − μ)UV + b fitted on the calibration text "
            "over the position set named in the table (the map then runs on every token).",
            "",
            "| blocks | rank | fit | fitted on | factors | compression | perplexity | change |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in sub["rows"]:
            rank = "dense" if r["rank"] is None else r["rank"]
            lines.append(
                f"| {', '.join(map(str, r['blocks']))} | {rank} | {r['fit']} | {r.get('positions', 'all')} | "
                f"{r['quantize'] or 'fp32'} | "
                f"{r['compression_ratio']:.1f}× | {r['ppl']:.4f} | {r['ppl_change']:+.4f} "
                f"({100 * r['ppl_change_relative']:+.1f}%) |"
            )
        lines += ["", *_image(results, "compression", "perplexity against kept parameters")]
    geo = _step(results, "geometry")
    if geo:
        headline = _headline_positions(geo["geometry"])
        proj = {(p["layer"], p["basis"]): p for p in geo["projections"] if p["positions"] == headline}
        lines += [
            "## Activation geometry",
            "",
            f"Block inputs over {_POSITION_WORDS[headline]}; the projections leave the excluded tokens unchanged.",
            "",
            "| block input | k(90%)/d | top-1 share | overlap with gradient subspace (null) | mean canonical corr. "
            "(null) | CC < 0.5 (null) | variance kept, U_k projection | ppl, U_k projection | ppl, G_k projection |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for g in geo["geometry"]["layers"]:
            if g["positions"] != headline or not g["gradient"]:
                continue
            gr, pv, pg = g["gradient"], proj.get((g["layer"], "variance")), proj.get((g["layer"], "gradient"))
            null = g.get("null")
            lines.append(
                f"| {g['layer']} | {g['k']}/{g['hidden_size']} | {g['top_direction_share']:.3f} | "
                f"{_beside_null(gr, null, 'overlap')} | {_beside_null(gr, null, 'mean_canonical_correlation')} | "
                f"{_beside_null(gr, null, 'uncorrelated_fraction')} | "
                f"{_fmt(pv and pv['retained_variance'], 3)} | "
                f"{_fmt(pv and pv['ppl'])} | {_fmt(pg and pg['ppl'])} |"
            )
        lines += ["", f"Baseline perplexity {geo['baseline_ppl']:.4f}.", ""]
        lines += _image(results, "geometry", "variance vs gradient spectra")
    return lines


def _early_exit(results) -> list[str]:
    ex = _step(results, "early-exit")
    if not ex:
        return []
    cost = ex["head_cost"]
    lines = [
        "## Easy tokens and early exit",
        "",
        f"Exit heads after blocks {ex['depths']} of {ex['num_blocks']}; trained heads: {cost['head_parameters']:,} "
        f"parameters ({100 * cost['fraction_of_model']:.2f}% of the model), {ex['training']['steps']} steps; "
        f"measured on {ex['windows'][0]} windows of {ex['windows'][1]} tokens.",
        "",
        "| heads | τ (nats) | exit by 50% depth (strict) | exit by 75% depth (strict) |",
        "|---|---|---|---|",
    ]
    for kind in ("lens", "tuned"):
        d = ex[f"difficulty_{kind}"]
        for tau in d["exit_by_50pct"]:
            lines.append(f"| {kind} | {tau} | {d['exit_by_50pct'][tau]:.3f} | {d['exit_by_75pct'][tau]:.3f} |")
    lines += [
        "",
        "| heads | τ | easy tokens | judged KL | actual KL when skipped | loss change when skipped: easy / as many "
        "random tokens (nats/token) | ppl full → skipped | mean depth |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for kind in ("lens", "tuned"):
        s = ex[f"sensitivity_{kind}"]
        random = s.get("loss_change_random")  # absent from results that predate the random-token null
        lines.append(
            f"| {kind} | {s['tau']} | {s['easy_tokens']}/{s['easy_tokens'] + s['other_tokens']} | "
            f"{s['predicted_kl_easy']:.4f} | {s['actual_kl_easy']:.4f} | {s['loss_change_easy']:+.4f} / "
            f"{'—' if random is None else f'{random:+.4f}'} | {s['ppl_full']:.3f} → {s['ppl_skipped']:.3f} | "
            f"{s['mean_depth']:.2f} |"
        )
    lines += [
        "",
        "| heads | threshold | mean depth fraction | perplexity | change | top-1 agreement |",
        "|---|---|---|---|---|---|",
    ]
    for kind in ("lens", "tuned"):
        for r in ex[f"sweep_{kind}"]:
            lines.append(
                f"| {kind} | {r['threshold']} | {r['depth_fraction']:.3f} | {r['ppl']:.3f} | "
                f"{100 * (r['ppl'] / r['ppl_full'] - 1):+.2f}% | {r['agreement']:.3f} |"
            )
    s = ex.get("speed")
    if s:
        tps = s["tokens_per_s"]
        lines += [
            "",
            f"Decoding (batch 1, greedy, {s['new_tokens']} tokens, best of {s['repeats']}, threshold "
            f"{s['threshold']}): plain loop {tps['full_model_loop']:.1f} tok/s, EarlyExitLM {tps['early_exit']:.1f} "
            f"tok/s ({s['speedup_vs_full_loop']:.2f}×), never exiting {tps['early_exit_never']:.1f} tok/s; mean depth "
            f"{s['mean_depth_generated']:.1f}; same tokens as the full model: {s['same_tokens_as_full']}.",
        ]
    lines += ["", *_image(results, "easy_tokens", "easy tokens"), *_image(results, "early_exit", "early exit")]
    return lines


def render_markdown(results: dict[str, Any]) -> str:
    """The whole report.md for ``results``."""
    lines = _header(results) + _findings(results) + _steps_table(results)
    lines += _compression(results) + _structure(results) + _early_exit(results)
    lines += ["", "Every number above is in `results.json` next to this file, with the configuration and versions."]
    return "\n".join(lines) + "\n"
