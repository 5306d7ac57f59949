"""qlinear_a8 (W8A8 / W4A8: per-token int8 activations x int8/int4 weights, integer dot products) at real model
shapes, prefill (512 rows) and decode (1 row), vs ``F.linear`` in fp32 and bf16, vs tcompress's weight-only
``qlinear`` on the same packed weight, and vs torch's own dynamically quantized int8 linear
(``torch.ao.nn.quantized.dynamic.Linear``, per-token-tensor int8 activations x per-channel int8 weights, fbgemm)
where this torch build has it.

Run: ``pytest bench/bench_qlinear_a8.py --benchmark-only`` (``-k prefill`` / ``-k W8A8``). Each case records in
extra_info the kernel time, GOP/s (2 * rows * in * out integer ops per second), the fp32 F.linear GFLOP/s and the
speedups over every baseline, all measured in the same process. W8A8 uses one group per output channel, W4A8 group
size 128 (64 where 128 does not divide in_features); symmetric codes, bf16 scales, fp32 activations.
Target (issue 4): W8A8 prefill >= 1.5x fp32 F.linear at 4096->14336 and 768->3072.
"""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from conftest import best_seconds
from tcompress import _native
from tcompress.ops import qlinear, qlinear_a8
from tcompress.ops.quantize import pack_int4_reference, quantize_reference

# (in_features, out_features): Mistral 7B MLP up, GPT-2 124M MLP up, SmolLM2-135M MLP up.
SHAPES = ((4096, 14336), (768, 3072), (576, 1536))
ROWS = {"decode": 1, "prefill": 512}
FORMATS = {"W8A8": 8, "W4A8": 4}


@functools.cache
def _weights(k: int, n: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(k * 31 + n)
    return torch.randn(n, k, generator=gen) * 0.02


@functools.cache
def _packed(bits: int, k: int, n: int):
    g = None if bits == 8 else (128 if k % 128 == 0 else 64)
    q = quantize_reference(_weights(k, n), bits, g, True, torch.bfloat16)
    return g, q.scales, (pack_int4_reference(q.codes) if bits == 4 else q.codes)


def _repeat(rows: int, k: int, n: int) -> int:
    return 3 if rows * k * n > (1 << 30) else 10


@functools.cache
def _dense_seconds(rows: int, k: int, n: int) -> tuple[float, float]:
    """(fp32, bf16) F.linear times."""
    w, x = _weights(k, n), torch.randn(rows, k)
    r = _repeat(rows, k, n)
    t32 = best_seconds(lambda: F.linear(x, w), repeat=r)
    wb, xb = w.bfloat16(), x.bfloat16()
    return t32, best_seconds(lambda: F.linear(xb, wb), repeat=r)


@functools.cache
def _torch_dynamic_int8_seconds(rows: int, k: int, n: int) -> float:
    """torch.ao.nn.quantized.dynamic.Linear (int8 weights per channel, activations quantized per call), or NaN
    when this torch build does not have it (or its quantized engine cannot run here)."""
    try:
        from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

        layer = DynamicLinear(k, n, bias_=False, dtype=torch.qint8)
        w_fp32 = _weights(k, n)
        zero_points = torch.zeros(n, dtype=torch.long)
        w = torch.quantize_per_channel(w_fp32, w_fp32.abs().amax(1) / 127, zero_points, 0, torch.qint8)
        layer.set_weight_bias(w, None)
        x = torch.randn(rows, k)
        layer(x)
    except Exception:  # noqa: BLE001 - absent module, no engine, removed API: no baseline
        return float("nan")
    return best_seconds(lambda: layer(x), repeat=_repeat(rows, k, n))


@pytest.mark.parametrize("phase", list(ROWS))
@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize(("k", "n"), SHAPES, ids=[f"{k}to{n}" for k, n in SHAPES])
def test_cpu(benchmark, record, k, n, fmt, phase):
    rows, bits = ROWS[phase], FORMATS[fmt]
    g, scales, qweight = _packed(bits, k, n)
    x = torch.randn(rows, k)
    benchmark.group = f"qlinear_a8 cpu {phase} {k}->{n}"
    benchmark.pedantic(lambda: qlinear_a8(x, qweight, scales, None, bits, g, 8), rounds=_repeat(rows, k, n),
                       warmup_rounds=1)  # fmt: skip
    t_kernel = benchmark.stats.stats.min
    t_wonly = best_seconds(lambda: qlinear(x, qweight, scales, None, bits, g), repeat=_repeat(rows, k, n))
    t_f32, t_bf16 = _dense_seconds(rows, k, n)
    t_dyn = _torch_dynamic_int8_seconds(rows, k, n)
    ops = 2 * rows * k * n
    record(
        benchmark,
        phase=phase,
        shape=f"{k}->{n}",
        fmt=f"{fmt} g{g}" if g else f"{fmt} per-ch",
        isa=_native.get_isa(),
        kernel=_native._C.qlinear_a8_kernel_name() if _native._C is not None else "reference",
        a8_ms=t_kernel * 1e3,
        f32_ms=t_f32 * 1e3,
        bf16_ms=t_bf16 * 1e3,
        w_only_ms=t_wonly * 1e3,
        torch_dyn_i8_ms=t_dyn * 1e3,
        gop_per_s=ops / t_kernel / 1e9,
        f32_gflop_per_s=ops / t_f32 / 1e9,
        x_vs_f32=t_f32 / t_kernel,
        x_vs_bf16=t_bf16 / t_kernel,
        x_vs_w_only=t_wonly / t_kernel,
        x_vs_torch_dyn_i8=t_dyn / t_kernel,
    )


# The decode row kernel (M = 1) at SmolLM2-135M's shapes and its head, in the formats of the decode recipes: the
# native entry points called directly with arguments made beforehand (what the native decode step calls), so the
# figures are the kernels' alone.
DECODE_SHAPES = ((576, 576), (576, 1536), (1536, 576), (576, 49152), (4096, 14336))
DECODE_FORMATS = {"W4 g32": (4, 32), "W4 g64": (4, 64), "W8 per-ch": (8, None)}


@pytest.mark.parametrize("fmt", list(DECODE_FORMATS))
@pytest.mark.parametrize(("k", "n"), DECODE_SHAPES, ids=[f"{k}to{n}" for k, n in DECODE_SHAPES])
def test_decode_row_kernel(benchmark, record, k, n, fmt):
    """_C.qlinear_a8 at M = 1 (int8 activations per token and per weight group) against _C.qlinear on the same packed
    weight with fp32 activations; GB/s of weights (codes and fp32 scales) streamed."""
    if _native._C is None:
        pytest.skip("tcompress._C is not built")
    C, bits, g = _native._C, *DECODE_FORMATS[fmt]
    q = quantize_reference(_weights(k, n), bits, g, True, torch.float32)
    qweight = (pack_int4_reference(q.codes) if bits == 4 else q.codes).contiguous()
    scales, x, y = q.scales.contiguous(), torch.randn(1, k), torch.empty(1, n)
    threads = torch.get_num_threads()
    head = (x.data_ptr(), 0, 1, k, k, qweight.data_ptr(), n, bits, scales.data_ptr(), 0, 0, g or 0)
    tail = (0, 0, y.data_ptr(), n, threads)
    calls = 20 if k * n > 1e7 else 300

    def many(fn):
        return lambda: [fn() for _ in range(calls)]

    float_act = many(lambda: C.qlinear(*head, *tail))
    per_token = many(lambda: C.qlinear_a8(*head, 8, 0, *tail))
    per_group = many(lambda: C.qlinear_a8(*head, 8, 1, *tail))
    best = {name: float("inf") for name in ("float", "token", "group")}
    for _ in range(7):  # alternating
        for name, fn in (("float", float_act), ("token", per_token), ("group", per_group)):
            best[name] = min(best[name], best_seconds(fn, repeat=1, warmup=0) / calls)
    benchmark.group = f"qlinear_a8 decode row kernel {k}->{n}"
    benchmark.pedantic(per_group, rounds=1, iterations=1)
    nbytes = qweight.numel() + scales.numel() * 4
    record(
        benchmark,
        shape=f"{k}->{n}",
        fmt=fmt,
        isa=_native.get_isa(),
        fp32_act_us=best["float"] * 1e6,
        a8_per_token_us=best["token"] * 1e6,
        a8_per_group_us=best["group"] * 1e6,
        fp32_act_gb_per_s=nbytes / best["float"] / 1e9,
        a8_per_group_gb_per_s=nbytes / best["group"] / 1e9,
        per_group_x_vs_fp32_act=best["float"] / best["group"],
    )
