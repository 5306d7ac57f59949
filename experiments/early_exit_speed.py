"""Decoding speed of EarlyExitLM with already-trained exit heads, at several checkpoint placements (issue 6).

Loads the heads that ``experiments/early_exit_experiments.py`` saved (``--out DIR`` -> ``DIR/heads``) and measures, for
each ``--configs`` entry ``CHECKS@THRESHOLD`` (checks separated by ``+``), tokens/s of the plain model loop, of
EarlyExitLM, and of EarlyExitLM with a gate that never fires, alternating runs (best of ``--repeats``):

    TCOMPRESS_DATA_DIR=../shared python experiments/early_exit_speed.py --heads runs/early_exit_smollm2/heads \
        --configs 12+18@0.9 21@0.9 24@0.8
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import tcompress
import torch
from tcompress.data import token_windows, wikitext2_test_text
from tcompress.recipes.exit_heads import load_exit_heads

sys.path.insert(0, str(Path(__file__).parent))
from early_exit_experiments import _speed  # noqa: E402  (the same timing loop as the experiment script)


def parse_config(text: str) -> tuple[list[int], float]:
    """``"12+18@0.9"`` -> ([12, 18], 0.9)."""
    checks, threshold = text.split("@")
    return [int(c) for c in checks.split("+")], float(threshold)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--heads", required=True, help="a save_exit_heads folder")
    parser.add_argument("--configs", nargs="+", default=["12+18@0.9", "21@0.9", "24@0.8"])
    parser.add_argument("--tokens", type=int, default=128, help="new tokens per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} threads, torch {torch.__version__}", flush=True)
    model, tokenizer = tcompress.load(args.model)
    model.eval()
    heads = load_exit_heads(args.heads, model)
    prompt = token_windows(wikitext2_test_text(), tokenizer, 128, max_tokens=128)[:1, :16]
    print("| checks | threshold | full model tok/s | EarlyExitLM tok/s | never-exit tok/s | speedup | mean depth |")
    print("|---|---|---|---|---|---|---|")
    results = []
    for text in args.configs:
        checks, threshold = parse_config(text)
        s = _speed(model, heads, prompt, args.tokens, args.repeats, threshold, checks)
        tps = s["tokens_per_s"]
        print(
            f"| {', '.join(map(str, checks))} | {threshold} | {tps['full_model_loop']:.1f} | {tps['early_exit']:.1f} | "
            f"{tps['early_exit_never']:.1f} | {s['speedup_vs_full_loop']:.2f}x | {s['mean_depth_generated']:.2f} |",
            flush=True,
        )
        results.append(s)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
