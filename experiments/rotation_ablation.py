"""Why rotation does what it does to weight-only W4 (issue 4): norm fusion alone vs norm fusion + residual rotation.

QuaRot-style rotation first folds every norm's scale into the projections that read it, then rotates the residual
stream. The two steps change the weights differently, so this separates them: per model, W4 perplexity and the mean
relative W4 weight error per projection role, for the original model, the norm-fused model
(``RotateConfig(rotate_residual=False)``) and the fused and rotated one
(``RotateConfig(seed=0, online_hadamard=True)``).

    TCOMPRESS_DATA_DIR=../shared python experiments/rotation_ablation.py --json docs/results/rotation_ablation.json

Text and budgets as in ``experiments/rotation_perplexity.py`` (SmolLM2: 16,384 WikiText-2 raw test tokens; stories260K:
the ten TinyStories stories, each alone with BOS).
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
from collections import defaultdict

import tcompress
import torch
from tcompress import data, evaluate, models
from tcompress.analysis import outliers
from tcompress.recipes import QuantizeConfig, RotateConfig, compress_

PREPROCESSING = {
    "original": None,
    "norms fused": RotateConfig(rotate_residual=False),
    "norms fused + rotated": RotateConfig(seed=0, online_hadamard=True),
}


def role_errors(model, config) -> dict[str, float]:
    """{projection role: mean relative RTN weight error over the blocks} for ``config``'s format."""
    groups = defaultdict(list)
    for item in outliers.weight_quantization_error(model, config):
        groups[item.name.rsplit(".", 1)[-1]].append(item.relative_error)
    return {role: sum(v) / len(v) for role, v in groups.items()}


def ablate(name, model, measure, formats) -> dict:
    results = {}
    for label, pre in PREPROCESSING.items():
        base = model if pre is None else compress_(copy.deepcopy(model), pre)
        row = {}
        for fmt, config in formats.items():
            errors = role_errors(base, config)
            ppl = measure(compress_(copy.deepcopy(base), config)).ppl
            row[fmt] = {"perplexity": ppl, "weight_error_by_role": errors}
            cells = " | ".join(f"{role} {err:.3f}" for role, err in errors.items())
            print(f"| {name} | {label} | {fmt} | {ppl:.4f} | {cells} |", flush=True)
        results[label] = row
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=16384, help="WikiText-2 token budget for SmolLM2")
    parser.add_argument("--json", help="write the results to this JSON file")
    args = parser.parse_args(argv)
    print(
        f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}, tcompress {tcompress.__version__}",
        flush=True,
    )
    print("| model | preprocessing | W4 format | perplexity | mean relative W4 weight error by role |")
    print("|---|---|---|---|---|")
    out = {}

    stories, stories_tok = tcompress.load("stories260k")
    texts = data.tinystories_texts()
    out["stories260K"] = ablate(
        "stories260K",
        stories,
        lambda m: evaluate.perplexity_of_texts(m, stories_tok, texts, bos=True, max_length=512),
        {"W4 per-channel": QuantizeConfig(bits=4, group_size=None)},  # the MLP width 172 admits no group of 64
    )

    smol, smol_tok = tcompress.load("smollm2-135m")
    length = models.architecture(smol).eval_length(smol)
    windows = data.token_windows(data.text_source("wikitext2").text, smol_tok, length, max_tokens=args.tokens)
    out["SmolLM2-135M"] = ablate(
        "SmolLM2-135M",
        smol,
        lambda m: evaluate.perplexity(m, windows, progress=False),
        {"W4 g64": QuantizeConfig(bits=4, group_size=64), "W4 per-channel": QuantizeConfig(bits=4, group_size=None)},
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
