"""What a batch-1 call costs on top of its kernel, at SmolLM2-135M's shapes (d 576, MLP 1536): the module call
(``QuantLinear`` / ``LinearBlock``, prepared operands), the op call (``tcompress.ops.qlinear`` / ``linear_block``,
checked per call, no dispatcher), the kernel alone (the native entry point with its arguments made beforehand,
no Python checks, no allocation) and the baselines: torch's int8 weight kernel (``_weight_int8pack_mm``, bf16) and fp32
``F.linear`` for QuantLinear; the unfused torch composition (two ``F.linear`` and the adds) for LinearBlock.

    python -m pytest bench/bench_call_overhead.py --benchmark-only

Each case records the four times (µs) and the ratios the targets of the decode issue are stated in:
``module_vs_kernel`` (target <= 1.3), ``x_vs_torch_i8`` (torch int8 time / module time, target >= 1.0) and, for the
linear block, ``x_vs_unfused`` (target >= 1.5). Timings are min over rounds of a loop of calls; run on a quiet
machine: every number is a ratio against a baseline measured in the same case.
"""

from __future__ import annotations

import time

import pytest
import torch
import torch.nn.functional as F
from tcompress import _native
from tcompress.nn import LinearBlock, QuantLinear, QuantSpec
from tcompress.ops import _common, linear_block, qlinear

SHAPES = [(576, 576), (576, 1536), (1536, 576)]
FORMATS = {"W4 g64": QuantSpec(4, 64, True), "W8": QuantSpec(8, None, True)}
LOOP = 200


def _per_call_us(fn, rounds: int) -> float:
    """Minimum over ``rounds`` of the mean time of ``LOOP`` back-to-back calls, in µs."""
    for _ in range(20):
        fn()
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(LOOP):
            fn()
        best = min(best, (time.perf_counter() - t0) / LOOP)
    return best * 1e6


def _rounds(benchmark) -> int:
    return 1 if benchmark.disabled else 15


def _kernel_only_qlinear(module: QuantLinear, x: torch.Tensor):
    """The native qlinear call with every argument made beforehand (into a preallocated y)."""
    native = _native.cpu_native()
    y = torch.empty(x.shape[0], module.out_features)
    spec = module.spec
    args = (x.data_ptr(), _common.dtype_code(x.dtype), x.shape[0], module.in_features, module.in_features,
            module.qweight.data_ptr(), module.out_features, spec.bits, module.scales.data_ptr(),
            _common.dtype_code(module.scales.dtype), 0, spec.group_size or 0, 0, 0, y.data_ptr(),
            module.out_features, torch.get_num_threads())  # fmt: skip
    return lambda: native.qlinear(*args) or y  # the closure keeps y (which the kernel writes) alive


@pytest.mark.skipif(_native._C is None, reason="tcompress._C is not built")
@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize(("k", "n"), SHAPES, ids=[f"{k}to{n}" for k, n in SHAPES])
def test_quant_linear(benchmark, record, k, n, fmt):
    torch.manual_seed(0)
    module = QuantLinear.from_linear(torch.nn.Linear(k, n, bias=False), FORMATS[fmt])
    x = torch.randn(1, k)
    w = torch.randn(n, k)
    # torch's int8 weight kernel as bench_qlinear.py calls it: bf16 activations and scales (its fp32 path crashes
    # on some shapes in torch 2.13).
    w8 = torch.randint(-127, 128, (n, k), dtype=torch.int8)
    s8 = torch.rand(n).bfloat16()
    xb = x.bfloat16()
    rounds = _rounds(benchmark)
    benchmark.group = f"call overhead qlinear {k}->{n}"
    with torch.inference_mode():
        benchmark.pedantic(lambda: module(x), rounds=rounds, warmup_rounds=1)
        t_module = _per_call_us(lambda: module(x), rounds)
        spec = module.spec
        t_op = _per_call_us(lambda: qlinear(x, module.qweight, module.scales, None, spec.bits, spec.group_size), rounds)
        t_kernel = _per_call_us(_kernel_only_qlinear(module, x), rounds)
        t_i8 = _per_call_us(lambda: torch.ops.aten._weight_int8pack_mm(xb, w8, s8), rounds)
        t_f32 = _per_call_us(lambda: F.linear(x, w), rounds)
    record(
        benchmark,
        case=f"QuantLinear {fmt}",
        shape=f"{k}->{n}",
        isa=_native.get_isa(),
        module_us=t_module,
        op_us=t_op,
        kernel_us=t_kernel,
        torch_i8_us=t_i8,
        f32_us=t_f32,
        module_vs_kernel=t_module / t_kernel,
        x_vs_torch_i8=t_i8 / t_module,
        x_vs_f32=t_f32 / t_module,
    )


@pytest.mark.skipif(_native._C is None, reason="tcompress._C is not built")
@pytest.mark.parametrize("rank", [72, 144])
def test_linear_block(benchmark, record, rank):
    d = 576
    torch.manual_seed(0)
    U, V = torch.randn(d, rank) * 0.05, torch.randn(rank, d) * 0.05
    b, mu = torch.randn(d), torch.randn(d)
    module = LinearBlock.from_factors(U, V, b, mu)
    x = torch.randn(1, d)
    native = _native.cpu_native()
    y = torch.empty(1, d)
    args = (x.data_ptr(), 0, 1, d, d, module.U.data_ptr(), module.V.data_ptr(), 0, rank, 0, 0, module.b.data_ptr(), 0,
            module.mu.data_ptr(), 0, y.data_ptr(), d, torch.get_num_threads())  # fmt: skip
    ut, vt = U.t().contiguous(), V.t().contiguous()
    rounds = _rounds(benchmark)
    benchmark.group = f"call overhead linear_block d{d} r{rank}"
    with torch.inference_mode():
        benchmark.pedantic(lambda: module(x), rounds=rounds, warmup_rounds=1)
        t_module = _per_call_us(lambda: module(x), rounds)
        t_op = _per_call_us(lambda: linear_block(x, module.U, module.V, module.b, module.mu), rounds)
        t_kernel = _per_call_us(lambda: native.linear_block(*args), rounds)
        t_unfused = _per_call_us(lambda: x + F.linear(F.linear(x - mu, ut), vt) + b, rounds)
    record(
        benchmark,
        case=f"LinearBlock r{rank}",
        shape=f"{d}->{d}",
        isa=_native.get_isa(),
        module_us=t_module,
        op_us=t_op,
        kernel_us=t_kernel,
        unfused_us=t_unfused,
        module_vs_kernel=t_module / t_kernel,
        x_vs_unfused=t_unfused / t_module,
    )
