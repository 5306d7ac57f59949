"""qlinear on packed int4/int8 weights at real model shapes, decode (batch 1) and prefill (512 rows): tcompress vs
``F.linear`` in fp32 and bf16, vs torch's own weight-only kernels (``aten._weight_int8pack_mm`` and
``aten._weight_int4pack_mm_for_cpu``, bf16 activations), and vs a copy of as many bytes as the packed weight
(``dst.copy_(src)`` on buffers larger than the last-level cache, scaled to the weight's size).

Run: ``pytest bench/bench_qlinear.py --benchmark-only`` (``-k decode`` / ``-k prefill`` / ``-k int4``). Each case
records in extra_info the kernel time, GB/s over the packed weight bytes (codes + scales), the fraction of copy
bandwidth (copy time / kernel time), and its speedups over every baseline, all measured in the same process.
int4 uses group size 128 (64 where 128 does not divide in_features), int8 one group per output channel;
symmetric codes, bf16 scales, fp32 activations for tcompress (``tc_bf16_ms``: bf16 activations).
"""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from conftest import best_seconds
from tcompress import _native
from tcompress.ops import qlinear
from tcompress.ops.quantize import pack_int4_reference, quantize_reference

# (in_features, out_features): Mistral 7B MLP up/down, GPT-2 124M MLP, SmolLM2-135M MLP.
SHAPES = ((4096, 14336), (14336, 4096), (768, 3072), (3072, 768), (576, 1536), (1536, 576))
ROWS = {"decode": 1, "prefill": 512}
COPY_MIN_BYTES = 128 << 20  # well past the 32 MiB L3 of the benchmark machine


def _group_size(fmt: str, k: int) -> int | None:
    if fmt == "int8":
        return None
    return 128 if k % 128 == 0 else 64


@functools.cache
def _weights(k: int, n: int):
    gen = torch.Generator().manual_seed(k * 31 + n)
    return torch.randn(n, k, generator=gen) * 0.02


@functools.cache
def _packed(fmt: str, k: int, n: int):
    bits = 4 if fmt == "int4" else 8
    g = _group_size(fmt, k)
    q = quantize_reference(_weights(k, n), bits, g, True, torch.bfloat16)
    qweight = pack_int4_reference(q.codes) if bits == 4 else q.codes
    return bits, g, q, qweight


def _repeat(rows: int, k: int, n: int) -> int:
    return 3 if rows * k * n > (1 << 30) else 10


@functools.cache
def _copy_seconds_per_byte() -> float:
    src = torch.ones(COPY_MIN_BYTES, dtype=torch.uint8)
    dst = torch.empty_like(src)
    return best_seconds(lambda: dst.copy_(src), repeat=20) / COPY_MIN_BYTES


@functools.cache
def _dense_seconds(rows: int, k: int, n: int) -> tuple[float, float]:
    """(fp32, bf16) F.linear times."""
    w = _weights(k, n)
    x = torch.randn(rows, k)
    r = _repeat(rows, k, n)
    t32 = best_seconds(lambda: F.linear(x, w), repeat=r)
    wb, xb = w.bfloat16(), x.bfloat16()
    t16 = best_seconds(lambda: F.linear(xb, wb), repeat=r)
    return t32, t16


@functools.cache
def _torch_int8_seconds(rows: int, k: int, n: int) -> float:
    _, _, q, _ = _packed("int8", k, n)
    w8 = (q.codes.to(torch.int16) - 128).to(torch.int8)
    scales = q.scales.reshape(n).to(torch.bfloat16)
    x = torch.randn(rows, k).bfloat16()
    return best_seconds(lambda: torch.ops.aten._weight_int8pack_mm(x, w8, scales), repeat=_repeat(rows, k, n))


@functools.cache
def _torch_int4_seconds(rows: int, k: int, n: int) -> float:
    _, g, q, _ = _packed("int4", k, n)
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q.codes.to(torch.int32), 2)
    # torch's int4 format dequantizes to (u - 8) * scale + zero: symmetric codes have zero 0.
    sz = torch.stack((q.scales.t(), torch.zeros_like(q.scales.t())), dim=-1).to(torch.bfloat16).contiguous()
    x = torch.randn(rows, k).bfloat16()
    return best_seconds(
        lambda: torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed, g, sz),
        repeat=1 if rows > 1 and k * n > (1 << 24) else _repeat(rows, k, n),
    )


@pytest.mark.parametrize("phase", list(ROWS))
@pytest.mark.parametrize("fmt", ["int4", "int8"])
@pytest.mark.parametrize(("k", "n"), SHAPES, ids=[f"{k}to{n}" for k, n in SHAPES])
def test_cpu(benchmark, record, k, n, fmt, phase):
    rows = ROWS[phase]
    bits, g, q, qweight = _packed(fmt, k, n)
    x = torch.randn(rows, k)
    benchmark.group = f"qlinear cpu {phase} {k}->{n}"
    benchmark.pedantic(
        lambda: qlinear(x, qweight, q.scales, None, bits, g),
        rounds=_repeat(rows, k, n),
        warmup_rounds=1,
    )
    t_kernel = benchmark.stats.stats.min
    xb = x.bfloat16()
    t_bf16 = best_seconds(lambda: qlinear(xb, qweight, q.scales, None, bits, g), repeat=_repeat(rows, k, n))
    nbytes = qweight.numel() + q.scales.numel() * q.scales.element_size()
    t_copy = _copy_seconds_per_byte() * nbytes
    t_f32, t_f16 = _dense_seconds(rows, k, n)
    t_i8 = _torch_int8_seconds(rows, k, n)
    t_i4 = _torch_int4_seconds(rows, k, n)
    record(
        benchmark,
        phase=phase,
        shape=f"{k}->{n}",
        fmt=f"{fmt} g{g}" if g else f"{fmt} per-ch",
        isa=_native.get_isa(),
        tc_ms=t_kernel * 1e3,
        tc_bf16_ms=t_bf16 * 1e3,
        f32_ms=t_f32 * 1e3,
        bf16_ms=t_f16 * 1e3,
        torch_i8_ms=t_i8 * 1e3,
        torch_i4_ms=t_i4 * 1e3,
        copy_ms=t_copy * 1e3,
        gb_per_s=nbytes / t_kernel / 1e9,
        # Bandwidth against bandwidth: the kernel reads the packed bytes once, the copy reads and writes them.
        frac_of_copy=(nbytes / t_kernel) / (2 * nbytes / t_copy),
        gflop_per_s=2 * rows * k * n / t_kernel / 1e9,
        x_vs_f32=t_f32 / t_kernel,
        x_vs_bf16=t_f16 / t_kernel,
        x_vs_torch_i8=t_i8 / t_kernel,
        x_vs_torch_i4=t_i4 / t_kernel,
    )
