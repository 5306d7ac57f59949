"""The fused linear block ``tcompress.ops.linear_block(x, U, V, b, mu)`` (``y = x + ((x - mu) @ U) @ V + b``) against
the same map as separate torch ops (two ``F.linear`` and the adds) and against the decoder block it replaces, a
transformers ``LlamaDecoderLayer`` with random fp32 weights, at SmolLM2-135M (d 576, MLP 1536, 9 heads / 3 KV heads)
and Mistral-7B (d 4096, MLP 14336, 32 heads / 8 KV heads) shapes, ranks d/8 and d/4, fp32 and int8 factors.

    python -m pytest bench/bench_linear_block.py --benchmark-only      # -k decode / -k prefill / -k smollm2 / -k int8

Rows of x: ``decode`` is 1 row; the block then runs one token at position 256 against a KV cache holding 256 past
tokens (cropped back after every call, so each call sees the same cache). ``prefill`` is 512 rows; the block runs
1 x 512 tokens, causal, no cache. The rotary cos/sin are computed once outside the timed call, as the model computes
them once for all its layers. Everything runs under ``torch.inference_mode``.

Each case records in extra_info: the kernel's, the unfused torch composition's and the block's times, GFLOP/s of
the map (4 r d per row), GB/s over the bytes the kernel must touch (factors, b, mu, x, y), the fraction of copy
bandwidth for those bytes (copy time / kernel time), the parameter ratio (block parameters / stored map elements,
scales included) and the byte ratio (block bytes / map bytes), the speedups, and the targets as numbers:
``x_vs_unfused`` >= 1.5 at batch 1 (``unfused_margin`` = x_vs_unfused / 1.5, >= 1 meets it; decode only) and
``x_vs_block`` >= ``block_target`` = param_ratio / 2 (``block_margin`` = x_vs_block / block_target, >= 1 meets it).
The int8 case's unfused baseline is the fp32 torch composition of the dequantized factors (torch has no int8 path
for this map at fp32 activations).
"""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from conftest import best_seconds, kernel_seconds
from tcompress import _native, models
from tcompress.nn import LinearBlock
from tcompress.ops import linear_block

# name: (hidden, intermediate, heads, kv heads)
MODELS = {"smollm2": (576, 1536, 9, 3), "mistral": (4096, 14336, 32, 8)}
RANK_DIVISORS = (8, 4)  # r = d / 8 and d / 4
PHASES = {"decode": 1, "prefill": 512}
FACTORS = ("fp32", "int8")
CACHE_TOKENS = 256
COPY_MIN_BYTES = 128 << 20  # well past the 32 MiB L3 of the benchmark machine
UNFUSED_TARGET = 1.5


def _repeat(benchmark, model: str, phase: str) -> int:
    """Rounds for the kernel and its baselines: a Mistral prefill block is seconds of fp32 work on 2 cores; a smoke
    run (``--benchmark-disable``) times everything once."""
    if benchmark.disabled:
        return 1
    return 3 if model == "mistral" and phase == "prefill" else 20 if phase == "decode" else 10


# ---------------------------------------------------------------------------------------------------------------
# The original decoder block.
# ---------------------------------------------------------------------------------------------------------------


@functools.cache
def _llama_layer(model: str):
    """(layer, config, rotary): one randomly initialized fp32 LlamaDecoderLayer of the model's shape, SDPA attention."""
    from transformers import LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding

    hidden, intermediate, heads, kv_heads = MODELS[model]
    config = LlamaConfig(
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        num_hidden_layers=1,
        max_position_embeddings=4096,
        rms_norm_eps=1e-5,
    )
    config._attn_implementation = "sdpa"
    torch.manual_seed(0)
    layer = LlamaDecoderLayer(config, layer_idx=0).eval()
    return layer, config, LlamaRotaryEmbedding(config)


def _block_parameters(model: str) -> int:
    layer, _, _ = _llama_layer(model)
    return sum(p.numel() for p in layer.parameters())


def _block_step(model: str, phase: str):
    """A callable running the block once as the model would in ``phase`` (see the module docstring)."""
    from transformers import DynamicCache

    layer, config, rotary = _llama_layer(model)
    gen = torch.Generator().manual_seed(1)
    if phase == "prefill":
        rows = PHASES[phase]
        hidden = torch.randn(1, rows, config.hidden_size, generator=gen)
        position = torch.arange(rows)[None]
        with torch.inference_mode():
            cos_sin = rotary(hidden, position)

        def step():
            with torch.inference_mode():
                # attention_mask None with more than one query: SDPA runs causal, as create_causal_mask arranges.
                return layer(hidden, attention_mask=None, position_ids=position, position_embeddings=cos_sin)

        return step

    cache = DynamicCache(config=config)
    past = torch.randn(1, CACHE_TOKENS, config.hidden_size, generator=gen)
    past_position = torch.arange(CACHE_TOKENS)[None]
    hidden = torch.randn(1, 1, config.hidden_size, generator=gen)
    position = torch.tensor([[CACHE_TOKENS]])
    cache_arg = models.cache_kwargs(type(layer).forward, cache)  # cache= (past_key_values= before transformers 5.2x)
    with torch.inference_mode():
        layer(
            past,
            attention_mask=None,
            position_ids=past_position,
            use_cache=True,
            **cache_arg,
            position_embeddings=rotary(past, past_position),
        )
        cos_sin = rotary(hidden, position)

    def step():
        with torch.inference_mode():
            extra = cache.get_seq_length() - CACHE_TOKENS
            if extra:
                cache.crop(-extra)  # a negative count removes that many tokens (older transformers: the same)
            return layer(
                hidden,
                attention_mask=None,
                position_ids=position,
                use_cache=True,
                **cache_arg,
                position_embeddings=cos_sin,
            )

    return step


@functools.cache
def _block_seconds(model: str, phase: str, repeat: int) -> float:
    return best_seconds(_block_step(model, phase), repeat=repeat, warmup=1)


# ---------------------------------------------------------------------------------------------------------------
# The map and its unfused torch composition.
# ---------------------------------------------------------------------------------------------------------------


@functools.cache
def _map(d: int, r: int, factors: str) -> LinearBlock:
    """A LinearBlock with random factors of a plausible scale (fp32, or int8 codes with per-column scales)."""
    gen = torch.Generator().manual_seed(d * 7 + r)
    U = torch.randn(d, r, generator=gen) / d**0.5
    V = torch.randn(r, d, generator=gen) / r**0.5 * 0.1
    b = torch.randn(d, generator=gen) * 0.01
    mu = torch.randn(d, generator=gen) * 0.1
    return LinearBlock.from_factors(U, V, b, mu, quantize="int8" if factors == "int8" else None)


def _map_args(block: LinearBlock) -> tuple:
    scales = (block.u_scale, block.v_scale) if block.quantize == "int8" else (None, None)
    return (block.U, block.V, block.b, block.mu, *scales)


def _unfused(block: LinearBlock):
    """The baseline: the map as plain torch ops on fp32 factors stored (out, in) as nn.Linear keeps its weights."""
    u, v = block.U.float(), block.V.float()
    if block.quantize == "int8":
        u, v = u * block.u_scale[None, :], v * block.v_scale[None, :]
    u_t, v_t = u.t().contiguous(), v.t().contiguous()
    b, mu = block.b.float(), block.mu.float()
    return lambda x: x + F.linear(F.linear(x - mu, u_t), v_t, b)


def _map_bytes(block: LinearBlock) -> int:
    return sum(t.numel() * t.element_size() for t in block.buffers())


@functools.cache
def _copy_seconds_per_byte() -> float:
    src = torch.ones(COPY_MIN_BYTES, dtype=torch.uint8)
    dst = torch.empty_like(src)
    return best_seconds(lambda: dst.copy_(src), repeat=20) / COPY_MIN_BYTES


@pytest.mark.parametrize("factors", FACTORS)
@pytest.mark.parametrize("phase", list(PHASES))
@pytest.mark.parametrize("rank_div", RANK_DIVISORS, ids=[f"r=d/{k}" for k in RANK_DIVISORS])
@pytest.mark.parametrize("model", list(MODELS))
def test_linear_block(benchmark, record, model, rank_div, phase, factors):
    d = MODELS[model][0]
    r = d // rank_div
    rows = PHASES[phase]
    block = _map(d, r, factors)
    args = _map_args(block)
    x = torch.randn(rows, d, generator=torch.Generator().manual_seed(rows + d))
    reference = _unfused(block)
    torch.testing.assert_close(linear_block(x, *args), reference(x), rtol=1e-4, atol=1e-4)

    repeat = _repeat(benchmark, model, phase)
    benchmark.group = f"linear_block cpu {model} {phase} r=d/{rank_div}"
    with torch.inference_mode():
        t_kernel = kernel_seconds(benchmark, lambda: linear_block(x, *args), repeat)
        t_unfused = best_seconds(lambda: reference(x), repeat=repeat, warmup=2)
    t_block = _block_seconds(model, phase, repeat)

    map_params = block.num_parameters()
    block_params = _block_parameters(model)
    map_bytes = _map_bytes(block)
    nbytes = map_bytes + 2 * x.numel() * x.element_size()
    t_copy = _copy_seconds_per_byte() * nbytes
    param_ratio = block_params / map_params
    x_vs_block = t_block / t_kernel
    targets = {"unfused_margin": t_unfused / t_kernel / UNFUSED_TARGET} if rows == 1 else {}
    record(
        benchmark,
        model=model,
        d=d,
        r=r,
        phase=phase,
        rows=rows,
        factors=factors,
        isa=_native.get_isa(),
        kernel_us=t_kernel * 1e6,
        unfused_us=t_unfused * 1e6,
        block_us=t_block * 1e6,
        copy_us=t_copy * 1e6,
        gflop_per_s=4 * rows * d * r / t_kernel / 1e9,
        gb_per_s=nbytes / t_kernel / 1e9,
        # The copy reads and writes the bytes, the kernel reads the factors once: bandwidth against bandwidth.
        frac_of_copy=(nbytes / t_kernel) / (2 * nbytes / t_copy),
        param_ratio=param_ratio,
        byte_ratio=block_params * 4 / map_bytes,
        x_vs_unfused=t_unfused / t_kernel,
        **targets,
        x_vs_block=x_vs_block,
        block_target=param_ratio / 2,
        block_margin=x_vs_block / (param_ratio / 2),
    )
