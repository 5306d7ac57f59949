"""Block linearity and linear block substitution on real models (issue 5): everything the README section reports.

    TCOMPRESS_DATA_DIR=../shared python experiments/structure_experiments.py --model stories260k --out structure_s.json
    TCOMPRESS_DATA_DIR=../shared python experiments/structure_experiments.py --model smollm2-135m --out structure_m.json

Per model: the per-block held-out R² curve (output and residual targets, pooled and per-dimension, with and without
the first position), conditional linearity for a few (k, l) pairs, last-block substitution at several ranks and
dense (compression ratio, perplexity change), and 2- and 4-block substitution of the last blocks with clean and
sequential fits. Writes one JSON file and prints Markdown tables.

Budgets (defaults): SmolLM2-135M is calibrated on 64 windows x 256 tokens of WikiText-2 validation (seed 0; 10% of
the windows held out for R²) and evaluated on 8 windows x 2,048 tokens of WikiText-2 raw test (16,384 tokens).
stories260K is calibrated on the first 5 of the 10 shared TinyStories stories (adjacent windows of 64 tokens, BOS
first) and evaluated on the other 5 (each alone, BOS first), so calibration and evaluation text never overlap.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch
from tcompress import data, evaluate, models
from tcompress.analysis.activations import collect_block_statistics
from tcompress.analysis.linearity import block_linearity, conditional_linearity
from tcompress.recipes import SubstituteConfig
from tcompress.recipes.substitute import measure_substitution


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _setup(args):
    model, tokenizer = models.load(args.model)
    model.eval()
    if args.model == "stories260k":
        stories = data.tinystories_texts()
        calibration_text = "\n\n".join(stories[:5])
        # Adjacent windows (no overlap), so held-out windows share no tokens with train windows.
        calib = data.token_windows(calibration_text, tokenizer, args.calib_length or 64, bos=True)
        held_texts = stories[5:]

        def ppl(m):
            return evaluate.perplexity_of_texts(m, tokenizer, held_texts).ppl

        budgets = {
            "calibration": f"TinyStories stories 1-5: {calib.shape[0]} adjacent windows x {calib.shape[1]} tokens, BOS",
            "evaluation": "TinyStories stories 6-10, each alone with BOS",
        }
    else:
        n, length = args.calib_windows or 64, args.calib_length or 256
        calib = data.calibration_windows(tokenizer, n, length, seed=0)
        windows = evaluate.eval_windows(model, tokenizer, data.wikitext2_test_text(), max_tokens=args.eval_tokens)

        def ppl(m):
            return evaluate.perplexity(m, windows, progress=False).ppl

        budgets = {
            "calibration": f"{data.calibration_source().label}: {n} windows x {length} tokens, seed 0",
            "evaluation": f"WikiText-2 raw test: {windows.shape[0]} windows x {windows.shape[1]} tokens",
        }
    return model, calib, ppl, budgets


def _substitution(model, calib, ppl, config, baseline, stats, batch_size):
    row = measure_substitution(model, calib, config, ppl, baseline, batch_size=batch_size, statistics=stats)
    print(json.dumps(row), flush=True)
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["stories260k", "smollm2-135m"], required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--calib-windows", type=int, default=None)
    parser.add_argument("--calib-length", type=int, default=None)
    parser.add_argument("--eval-tokens", type=int, default=16384)
    parser.add_argument("--ridge", type=float, default=1e-6)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    model, calib, ppl, budgets = _setup(args)
    num_blocks = len(models.architecture(model).blocks(model))
    d = models.architecture(model).embeddings(model).weight.shape[1]
    result = {
        "model": args.model,
        "date": datetime.date.today().isoformat(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": f"{platform.machine()} CPU, {torch.get_num_threads()} threads, torch {torch.__version__}",
        "commit": _git_commit(),
        "budgets": budgets,
        "ridge": args.ridge,
        "hidden_size": d,
        "num_blocks": num_blocks,
    }
    print(json.dumps(result), flush=True)

    stats = collect_block_statistics(model, calib, holdout=0.1, seed=0, batch_size=args.batch_size)
    linearity = block_linearity(stats, ridge=args.ridge)
    result["linearity"] = linearity.to_dict()
    print("linearity done", f"{time.perf_counter() - started:.0f}s", flush=True)

    last = num_blocks - 1
    pairs = sorted({(0, 1), (last // 2, last // 2 + 1), (last - 2, last - 1), (last - 1, last)})
    conditional = conditional_linearity(
        model, calib, pairs, clean_stats=stats, ridge=args.ridge, batch_size=args.batch_size
    )
    result["conditional"] = conditional.to_dict()
    print("conditional done", f"{time.perf_counter() - started:.0f}s", flush=True)

    baseline = ppl(model)
    result["baseline_ppl"] = baseline
    print("baseline ppl", baseline, flush=True)
    # The train split of the clean statistics serves every clean fit (substitute_ fits on train windows only).
    subs = []
    for rank in (d // 16, d // 8, d // 4, d // 2, None):
        subs.append(
            _substitution(
                model,
                calib,
                ppl,
                SubstituteConfig(blocks=(-1,), rank=rank, ridge=args.ridge),
                baseline,
                stats,
                args.batch_size,
            )
        )
    subs.append(
        _substitution(
            model,
            calib,
            ppl,
            SubstituteConfig(blocks=(-1,), rank=d // 4, quantize="int8", ridge=args.ridge),
            baseline,
            stats,
            args.batch_size,
        )
    )
    for count in (2, 4):
        for fit in ("clean", "sequential"):
            config = SubstituteConfig(blocks=tuple(range(-count, 0)), rank=d // 4, fit=fit, ridge=args.ridge)
            subs.append(_substitution(model, calib, ppl, config, baseline, stats, args.batch_size))
    result["substitution"] = subs
    result["seconds"] = time.perf_counter() - started
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown(result))
    return 0


def markdown(result: dict) -> str:
    """The README tables of one run."""
    lines = [f"#### {result['model']}: per-block held-out R² (ridge {result['ridge']})", ""]
    lines.append(
        "| block | output pooled | output per-dim | residual pooled | residual per-dim "
        "| output pooled, all positions | residual pooled, all positions |"
    )
    lines.append("|---|---|---|---|---|---|---|")
    for block in result["linearity"]["blocks"]:
        nf, al = block["r2"]["no_first"], block["r2"]["all"]
        lines.append(
            f"| {block['layer']} | {nf['output']['pooled']:.4f} | {nf['output']['per_dim']:.4f} | "
            f"{nf['residual']['pooled']:.4f} | {nf['residual']['per_dim']:.4f} | {al['output']['pooled']:.4f} | "
            f"{al['residual']['pooled']:.4f} |"
        )
    lines += [
        "",
        "| k replaced -> block l | target | l clean | l on shifted inputs, clean fit | l refitted on shifted |",
        "|---|---|---|---|---|",
    ]
    for pair in result["conditional"]["pairs"]:
        for target in ("output", "residual"):
            lines.append(
                f"| {pair['upstream']} -> {pair['layer']} | {target} | {pair['clean'][target]['pooled']:.4f} | "
                f"{pair['shifted_clean_fit'][target]['pooled']:.4f} | {pair['shifted_refit'][target]['pooled']:.4f} |"
            )
    lines += [
        "",
        f"Baseline perplexity {result['baseline_ppl']:.4f}.",
        "",
        "| blocks | rank | fit | factors | compression | perplexity | change |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in result["substitution"]:
        rank = "dense" if row["rank"] is None else row["rank"]
        lines.append(
            f"| {', '.join(map(str, row['blocks']))} | {rank} | {row['fit']} | {row['quantize'] or 'fp32'} | "
            f"{row['compression_ratio']:.1f}x | {row['ppl']:.4f} | {row['ppl_change']:+.4f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
