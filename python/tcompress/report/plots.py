"""The report's PNG plots, drawn from a results.json dict alone (so ``tcompress report --render DIR`` can redraw
them): R² against depth, variance vs gradient spectra, perplexity against kept parameters, the quantization table,
easy-token curves, and early exit's speed/quality trade-off. A plot whose step did not run is skipped."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from .findings import r2_curve

PLOT_FILES = {
    "linearity": "linearity_depth.png",
    "geometry": "variance_vs_gradient_spectra.png",
    "compression": "perplexity_vs_kept_parameters.png",
    "quantization": "quantization.png",
    "easy_tokens": "easy_tokens.png",
    "early_exit": "early_exit_tradeoff.png",
}

#: The paper's reported block-linearity points (Mistral 7B, 32 blocks), placed at relative depth.
PAPER_MISTRAL_R2 = ((0 / 31, 0.17), (31 / 31, 0.93))


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and CI
    import matplotlib.pyplot as plt

    return plt


def _step(results: dict[str, Any], name: str) -> dict[str, Any] | None:
    entry = results.get("steps", {}).get(name)
    return entry.get("result") if entry and entry.get("status") == "ok" else None


def _title(results: dict[str, Any], what: str) -> str:
    model, text = results["model"]["name"], results["data"]["evaluation"]["name"]
    return f"{what}\n{model}, {text}, budget {results['budget']['name']}"


def _save(plt, fig, path: Path) -> bool:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def _linearity(results, plt, path: Path) -> bool:
    lin = _step(results, "linearity")
    if not lin:
        return False
    n = results["model"]["num_blocks"]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    headline = lin["curve"].get("default_positions", "no_first")
    sets = [(headline, 1.0)] + [(p, 0.4) for p in ("no_first", "all") if p != headline]
    words = {"no_outliers": "no outliers", "no_first": "no first position", "all": "all positions"}
    for target, style in (("output", "o-"), ("residual", "s--")):
        for positions, alpha in sets:
            if target == "residual" and positions != headline:
                continue  # the residual curves of the other sets would crowd the plot; report.md has them
            curve = r2_curve(lin, target, positions)
            ax.plot(
                [b / max(n - 1, 1) for b, _ in curve],
                [r for _, r in curve],
                style,
                alpha=alpha,
                ms=3,
                label=f"{target}, {words[positions]}",
            )
    px, py = zip(*PAPER_MISTRAL_R2)
    ax.plot(px, py, "r*", ms=12, label="paper, Mistral 7B (blocks 0, 31)")
    ax.set_xlabel("relative depth (block / last block)")
    ax.set_ylabel("held-out R² (pooled)")
    ax.set_ylim(min(-0.05, ax.get_ylim()[0]), 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(_title(results, "Block linearity against depth"), fontsize=10)
    return _save(plt, fig, path)


def _geometry(results, plt, path: Path) -> bool:
    geo = _step(results, "geometry")
    if not geo or not geo.get("spectra"):
        return False
    layers = list(geo["spectra"])
    fig, axes = plt.subplots(1, len(layers), figsize=(3.2 * len(layers), 3.4), squeeze=False)
    headline = geo["geometry"].get("default_positions", "no_first")
    by_layer = {g["layer"]: g for g in geo["geometry"]["layers"] if g["positions"] == headline}
    for ax, layer in zip(axes[0], layers):
        spectra = geo["spectra"][layer]
        for kind, color in (("variance", "tab:blue"), ("gradient", "tab:orange")):
            values = spectra[kind][:64]
            ax.semilogy(range(1, len(values) + 1), [max(v, 1e-12) for v in values], color=color, label=kind)
        g = by_layer.get(int(layer))
        if g and g["gradient"]:
            if g["k"] <= 64:
                ax.axvline(g["k"], color="gray", ls=":", lw=1)
            ax.text(
                0.97,
                0.97,
                f"k(90%)={g['k']}\noverlap {g['gradient']['overlap']:.2f}\n"
                f"(random {g['gradient']['random_overlap']:.2f})",
                transform=ax.transAxes,
                ha="right",
                va="top",
                fontsize=7,
            )
        ax.set_title(f"block {layer} input", fontsize=9)
        ax.set_xlabel("direction (sorted)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("share of the trace")
    axes[0][0].legend(fontsize=8, loc="lower left")
    fig.suptitle(
        _title(results, "Spectra of the hidden-state covariance and of the loss-gradient second moment"), fontsize=9
    )
    return _save(plt, fig, path)


def _compression(results, plt, path: Path) -> bool:
    spectral, sub = _step(results, "spectral"), _step(results, "substitution")
    if not spectral and not sub:
        return False
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    ax = axes[0]
    if spectral:
        methods = sorted({p["method"] for p in spectral["points"]})
        for method in methods:
            pts = sorted(
                (p["params_kept_fraction"], p["perplexity"]) for p in spectral["points"] if p["method"] == method
            )
            ax.semilogy(*zip(*pts), "o-", label=f"SVD, {method}")
        if spectral.get("baseline_perplexity"):
            ax.axhline(spectral["baseline_perplexity"], color="k", ls=":", label="uncompressed")
        ax.set_xlabel("fraction of projection parameters kept")
        ax.set_ylabel("perplexity (log)")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, which="both")
    ax.set_title("Spectral compression", fontsize=10)
    ax = axes[1]
    if sub:
        single = [r for r in sub["rows"] if len(r["blocks"]) == 1]
        multi = [r for r in sub["rows"] if len(r["blocks"]) > 1]
        if single:
            ax.plot(
                [r["compression_ratio"] for r in single], [r["ppl"] for r in single], "o", label="last block replaced"
            )
        for r in multi:
            ax.plot(r["compression_ratio"], r["ppl"], "s", color="tab:red", alpha=0.7)
            ax.annotate(f"{len(r['blocks'])} blocks, {r['fit']}", (r["compression_ratio"], r["ppl"]), fontsize=7)
        ax.axhline(sub["baseline_ppl"], color="k", ls=":", label="original")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("compression of the replaced blocks (parameters / map parameters)")
        ax.set_ylabel("perplexity (log)")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3, which="both")
    ax.set_title("Linear block substitution", fontsize=10)
    fig.suptitle(_title(results, "Perplexity against kept parameters"), fontsize=9)
    return _save(plt, fig, path)


def _quantization(results, plt, path: Path) -> bool:
    q = _step(results, "quantization")
    if not q:
        return False
    settings = [s for s in dict.fromkeys(r["setting"] for r in q["rows"]) if s != "fp32"]
    if not settings:
        return False
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.38
    for offset, rotated in ((-width / 2, False), (width / 2, True)):
        values = []
        for s in settings:
            row = next((r for r in q["rows"] if r["setting"] == s and r["rotated"] == rotated), None)
            values.append(row["ppl"] if row and row["ppl"] is not None else float("nan"))
        ax.bar([i + offset for i in range(len(settings))], values, width, label="rotated" if rotated else "plain")
    ax.axhline(q["baseline_ppl"], color="k", ls=":", label="fp32")
    ax.set_xticks(range(len(settings)), settings)
    ax.set_yscale("log")
    ax.set_ylabel("perplexity (log)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y", which="both")
    ax.set_title(_title(results, "Round-to-nearest quantization, with and without Hadamard rotation"), fontsize=10)
    return _save(plt, fig, path)


def _easy_tokens(results, plt, path: Path) -> bool:
    ex = _step(results, "early-exit")
    if not ex:
        return False
    n = ex["num_blocks"]
    fig, ax = plt.subplots(figsize=(7, 4))
    for kind, style in (("lens", "--"), ("tuned", "-")):
        d = ex[f"difficulty_{kind}"]
        for tau, curve in d["easy_fraction_strict"].items():
            depths = sorted(curve, key=int)
            ax.plot(
                [int(k) / n for k in depths],
                [curve[k] for k in depths],
                style,
                marker="o",
                ms=3,
                label=f"{'trained heads' if kind == 'tuned' else 'logit lens'}, τ = {tau} nats",
            )
    ax.axhline(0.30, color="r", ls=":", label="paper: ~30% easy")
    ax.set_xlabel("exit depth (fraction of blocks)")
    ax.set_ylabel("fraction of tokens easy from here on (strict)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(_title(results, "Easy tokens against depth"), fontsize=10)
    return _save(plt, fig, path)


def _early_exit(results, plt, path: Path) -> bool:
    ex = _step(results, "early-exit")
    if not ex:
        return False
    fig, ax = plt.subplots(figsize=(7, 4))
    for kind in ("lens", "tuned"):
        rows = ex[f"sweep_{kind}"]
        xs = [r["depth_fraction"] for r in rows]
        ys = [r["ppl"] / r["ppl_full"] for r in rows]
        ax.plot(xs, ys, "o-", label="trained heads" if kind == "tuned" else "logit lens")
        for r, x, y in zip(rows, xs, ys):
            ax.annotate(f"{r['threshold']}", (x, y), fontsize=7)
    ax.axhline(1.02, color="r", ls=":", label="+2% perplexity")
    ax.set_yscale("log")
    ax.set_xlabel("mean depth run (fraction of blocks)")
    ax.set_ylabel("perplexity / full-depth perplexity (log)")
    speed = ex.get("speed")
    if speed:
        ax.text(
            0.02,
            0.08,
            f"decoding (batch 1, threshold {speed['threshold']}): {speed['speedup_vs_full_loop']:.2f}× the plain loop",
            transform=ax.transAxes,
            va="bottom",
            fontsize=8,
        )
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title(_title(results, "Early exit: quality against depth saved (gate threshold annotated)"), fontsize=10)
    return _save(plt, fig, path)


_DRAW: dict[str, Callable] = {
    "linearity": _linearity,
    "geometry": _geometry,
    "compression": _compression,
    "quantization": _quantization,
    "easy_tokens": _easy_tokens,
    "early_exit": _early_exit,
}


def draw_plots(results: dict[str, Any], directory: Path) -> dict[str, str]:
    """Writes every plot whose data is in ``results`` into ``directory``; returns {plot: file name}.

    A plot that fails to draw is reported in the returned dict as ``"failed: <error>"`` rather than raised: the
    numbers in results.json matter more than any one figure.
    """
    plt = _pyplot()
    written = {}
    for name, draw in _DRAW.items():
        path = Path(directory) / PLOT_FILES[name]
        try:
            if draw(results, plt, path):
                written[name] = path.name
        except Exception as exc:  # noqa: BLE001 - see the docstring
            plt.close("all")
            written[name] = f"failed: {type(exc).__name__}: {exc}"
    return written
