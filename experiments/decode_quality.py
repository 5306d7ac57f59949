"""What the decode recipe costs in perplexity: SmolLM2-135M on WikiText-2 raw test, fp32 vs W4 (group 32 and 64)
with the head kept in fp32 or quantized to int8 per channel, W8 per channel with an int8 head, the same with int8
activations per token or per weight group (W4A8 g32/g64 with a weight-only or a W8A8 head, W8A8 with a W8A8
head), and, when
``llama-cpp-python`` is importable, llama.cpp on tcompress's own Q4_0 GGUF export of the fp32 model, on exactly the
same token windows.

    TCOMPRESS_DATA_DIR=../shared python experiments/decode_quality.py            # 4,096 tokens (2 windows of 2,048)
    TCOMPRESS_DATA_DIR=../shared python experiments/decode_quality.py --tokens 16384

Perplexity = exp of the mean NLL of tokens 1..L-1 of each window (tcompress.evaluate.perplexity; the llama.cpp row
computes the same from the logits llama.cpp returns for each window evaluated from an empty context). Prints a
Markdown table.
"""

from __future__ import annotations

import argparse
import copy
import math
import platform
import tempfile
from pathlib import Path

import tcompress
import torch
from tcompress import data, evaluate
from tcompress.recipes import QuantizeConfig, compress_

HEAD_INT8 = QuantizeConfig(bits=8, group_size=None, include=("no projection",), quantize_head=True)
HEAD_INT8_A8 = QuantizeConfig(bits=8, group_size=None, include=("no projection",), quantize_head=True, act_bits=8)


def _variants(model):
    yield "fp32", model
    for group in (32, 64):
        w4 = copy.deepcopy(model)
        compress_(w4, QuantizeConfig(bits=4, group_size=group))
        yield f"W4 g{group}, fp32 head", w4
        compress_(w4, HEAD_INT8)
        yield f"W4 g{group}, int8 head", w4
    w8 = copy.deepcopy(model)
    compress_(w8, QuantizeConfig(bits=8, group_size=None), HEAD_INT8)
    yield "W8 per channel, int8 head", w8
    # The integer decode path: int8 activations into every quantized projection (and the head), one scale per
    # token or one per token and weight group (llama.cpp's Q8_0 activations at g32).
    for group, granularity, head_name, head in (
        (32, "per_token", "int8 head", HEAD_INT8),
        (32, "per_token", "W8A8 head", HEAD_INT8_A8),
        (32, "per_group", "int8 head", HEAD_INT8),
        (32, "per_group", "W8A8 head", HEAD_INT8_A8),
        (64, "per_group", "W8A8 head", HEAD_INT8_A8),
    ):
        w4a8 = copy.deepcopy(model)
        compress_(w4a8, QuantizeConfig(bits=4, group_size=group, act_bits=8, act_granularity=granularity), head)
        yield f"W4A8 g{group} {granularity.replace('_', ' ')}, {head_name}", w4a8
    w8a8 = copy.deepcopy(model)
    compress_(w8a8, QuantizeConfig(bits=8, group_size=None, act_bits=8), HEAD_INT8_A8)
    yield "W8A8 per channel, W8A8 head", w8a8


def _llama_cpp_perplexity(model, tokenizer, windows: torch.Tensor) -> float | None:
    try:
        import llama_cpp
    except ImportError:
        return None
    from tcompress.export.gguf import export_gguf

    with tempfile.TemporaryDirectory() as tmp:
        path = export_gguf(model, Path(tmp) / "q4_0.gguf", tokenizer=tokenizer, qtype="Q4_0")
        length = windows.shape[1]
        llm = llama_cpp.Llama(str(path), n_ctx=length, logits_all=True, n_batch=512, verbose=False,
                              n_threads=torch.get_num_threads())  # fmt: skip
        nll, count = 0.0, 0
        for window in windows.tolist():
            llm.reset()
            llm.eval(window)
            logits = torch.tensor(llm.scores[: length - 1], dtype=torch.float64)
            targets = torch.tensor(window[1:])
            nll += float(torch.nn.functional.cross_entropy(logits, targets, reduction="sum"))
            count += length - 1
        return math.exp(nll / count)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=4096, help="evaluation tokens (default 4096)")
    args = parser.parse_args()
    model, tokenizer = tcompress.load("smollm2-135m")
    source = data.default_text_source()
    windows = evaluate.eval_windows(model, tokenizer, source, max_tokens=args.tokens)
    print(f"SmolLM2-135M on {source.label}, {windows.shape[0]} x {windows.shape[1]} tokens; "
          f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads\n")  # fmt: skip
    print("| model | perplexity |\n|---|---|")
    for name, variant in _variants(model):
        result = evaluate.perplexity(variant, windows, progress=False)
        print(f"| tcompress {name} | {result.ppl:.2f} |")
    q4_0 = _llama_cpp_perplexity(model, tokenizer, windows)
    print("| llama.cpp, tcompress Q4_0 export | " + ("not run: llama_cpp is not importable" if q4_0 is None
                                                     else f"{q4_0:.2f}") + " |")  # fmt: skip


if __name__ == "__main__":
    main()
