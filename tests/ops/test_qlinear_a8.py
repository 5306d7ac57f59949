"""tcompress.ops.qlinear_a8 (W8A8 / W4A8 / A4 integer matmul) under every supported ISA: activation codes and
scales equal to the reference exactly, the int32 group accumulators equal to an exact reference to the last
integer, the float output equal to the exact-order reference up to fp32 rounding and to the fake-quant reference;
layouts, threads, opcheck, torch.compile, the straight-through gradient, bad inputs, and CUDA (skipped here)."""

from __future__ import annotations

import functools
import warnings

import pytest
import torch
from tcompress import _native
from tcompress.ops import (
    PreparedQLinear,
    qlinear,
    qlinear_a8,
    qlinear_a8_reference,
    qlinear_reference,
    quantize_activations_reference,
)
from tcompress.ops.int8_activations import (
    qlinear_a8_accumulators,
    qlinear_a8_accumulators_reference,
    quantize_activations,
)
from tcompress.ops.quantize import pack_int4_reference, quantize_reference
from tensors import randn, rel_error

X_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# max |got - want| / max |want| against the fake-quant reference: fp32 summation order; one output ulp in fp16/bf16.
TOL = {torch.float32: 2e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}
# Row counts around the micro-tiles (4 and 6 rows) and column counts around the panels (16 and 64 columns).
ROW_COUNTS = (1, 2, 5, 6, 7, 13, 64)


def random_codes(*shape, seed=0, low=-127, high=127) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(low, high + 1, shape, generator=gen).to(torch.int8)


@functools.cache
def weight(n: int, k: int, bits: int, group_size, symmetric: bool, scale_dtype=torch.float32, seed=0):
    """(qweight, scales, zeros) of a fresh random (n, k) weight in the packed format."""
    q = quantize_reference(randn(n, k, seed=seed + 7), bits, group_size, symmetric, scale_dtype)
    qweight = pack_int4_reference(q.codes) if bits == 4 else q.codes
    return qweight, q.scales, q.zeros


def random_weight_codes(n: int, k: int, bits: int, groups: int, symmetric: bool, seed=0):
    """(qweight, zeros) with uniformly random codes and zero points over the whole range (extremes included)."""
    gen = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 1 << bits, (n, k), generator=gen).to(torch.uint8)
    zeros = None if symmetric else torch.randint(0, 1 << bits, (n, groups), generator=gen).to(torch.uint8)
    return (pack_int4_reference(codes) if bits == 4 else codes), zeros


def exact_order_reference(x, qweight, scales, zeros, bits, group_size, act_bits, bias=None, per_group=False):
    """float64 of the kernel's own formula: exact accumulators, sum_g acc * s, times the token scale (or
    sum_g acc * s * s_x[g] per group), + bias."""
    codes, sx = quantize_activations_reference(x, act_bits, (group_size or x.shape[-1]) if per_group else None)
    acc = qlinear_a8_accumulators_reference(codes, qweight, zeros, bits, group_size).double()
    if per_group:
        y = (acc * scales.double() * sx.double()[..., None, :]).sum(-1)
    else:
        y = (acc * scales.double()).sum(-1) * sx.double()
    return y if bias is None else y + bias.double()


def check(x, qweight, scales, zeros, bits, group_size, act_bits=8, bias=None, granularity="per_token"):
    got = qlinear_a8(x, qweight, scales, zeros, bits, group_size, act_bits, bias, granularity)
    want = qlinear_a8_reference(x, qweight, scales, zeros, bits, group_size, act_bits, bias, granularity)
    assert got.dtype == x.dtype and got.shape == want.shape
    if got.numel():
        err = rel_error(got, want)
        assert err <= TOL[x.dtype], f"relative error {err:.3g} > {TOL[x.dtype]:.0e}"
    return got


# ------------------------------------------------------------------------------------------------------------
# Exactness: activation codes and scales, integer accumulators, output formula.
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("act_bits", [8, 4])
@pytest.mark.parametrize("dtype", X_DTYPES)
def test_activation_codes_and_scales_are_exact(isa, dtype, act_bits):
    qmax = 2 ** (act_bits - 1) - 1
    x = randn(9, 300, seed=act_bits) * 3
    x[1] = 0.0  # a row of zeros: scale 1, codes 0
    x[2, :] = torch.arange(300) % 7 - 3.0  # integers: many values exactly halfway between codes after scaling
    x[3, 5] = 1e4  # one outlier
    x[4] = (torch.arange(300) - 150.0) * (qmax + 0.5) / 150  # ties of round-half-to-even
    x = x.to(dtype)
    for rows in (x, x[:, 17:250], x[0]):
        codes, scales = quantize_activations(rows, act_bits)
        want_codes, want_scales = quantize_activations_reference(rows, act_bits)
        assert codes.dtype == torch.int8 and scales.dtype == torch.float32 and scales.shape == want_scales.shape
        assert torch.equal(codes, want_codes) and torch.equal(scales, want_scales)
    assert codes.abs().max() <= qmax


@pytest.mark.parametrize("group_size", [None, 32, 6, 3])
@pytest.mark.parametrize("symmetric", [True, False], ids=["sym", "asym"])
@pytest.mark.parametrize("bits", [4, 8])
def test_integer_accumulators_are_exact(isa, bits, symmetric, group_size):
    k = 96
    groups = 1 if group_size is None else k // group_size
    for n, seed in ((16, 0), (37, 1), (130, 2)):
        qweight, zeros = random_weight_codes(n, k, bits, groups, symmetric, seed)
        for m in ROW_COUNTS:
            codes = random_codes(m, k, seed=m + seed, low=-128)
            got = qlinear_a8_accumulators(codes, qweight, zeros, bits, group_size)
            want = qlinear_a8_accumulators_reference(codes, qweight, zeros, bits, group_size)
            assert got.dtype == torch.int32 and got.shape == (m, n, groups)
            assert torch.equal(got, want), (n, m)


def test_integer_accumulators_at_the_extremes(isa):
    # Largest |u - z| and |a| everywhere, over a long group: sums near 255 * 127 * k, far outside int16 (the
    # vpmaddubsw pair saturation) and exact in int32.
    k, n = 4096, 70
    for bits in (8, 4):
        top = (1 << bits) - 1
        gen = torch.Generator().manual_seed(bits)
        codes = (torch.randint(0, 2, (n, k), generator=gen) * top).to(torch.uint8)
        qweight = pack_int4_reference(codes) if bits == 4 else codes
        zeros = torch.where(torch.rand(n, 1, generator=gen) < 0.5, 0, top).to(torch.uint8)
        act = torch.where(torch.rand(7, k, generator=gen) < 0.5, -127, 127).to(torch.int8)
        act[0] = 127
        got = qlinear_a8_accumulators(act, qweight, zeros, bits, None)
        assert torch.equal(got, qlinear_a8_accumulators_reference(act, qweight, zeros, bits, None))
        if bits == 8:
            assert got.abs().max() > 2**24  # really beyond what fp32 or int16 could hold exactly


@pytest.mark.parametrize("act_bits", [8, 4])
@pytest.mark.parametrize(("bits", "group_size", "symmetric"), [(8, None, True), (8, 32, False), (4, 64, True),
                                                              (4, 6, False)])  # fmt: skip
@pytest.mark.parametrize("granularity", ["per_token", "per_group"])
def test_output_is_the_exact_formula_up_to_fp32_rounding(isa, bits, group_size, symmetric, act_bits, granularity):
    k = 384
    qweight, scales, zeros = weight(70, k, bits, group_size, symmetric)
    bias = randn(70, seed=5)
    for m in ROW_COUNTS:
        x = randn(m, k, seed=m)
        got = qlinear_a8(x, qweight, scales, zeros, bits, group_size, act_bits, bias, granularity)
        per_group = granularity == "per_group"
        want = exact_order_reference(x, qweight, scales, zeros, bits, group_size, act_bits, bias, per_group)
        assert rel_error(got, want) <= 2e-6, m


@pytest.mark.parametrize("granularity", ["per_token", "per_group"])
@pytest.mark.parametrize("symmetric", [True, False], ids=["sym", "asym"])
@pytest.mark.parametrize(("bits", "group_size"), [(4, 32), (4, 64), (4, 128), (4, None), (8, 32), (8, 96), (8, None)])
def test_decode_rows_at_the_extremes(isa, bits, group_size, symmetric, granularity):
    # The decode row kernel (M <= 4): codes at 0 and 2^bits - 1 (int8: u - 128 = -128, whose magnitude only fits
    # vpmaddubsw's unsigned operand), activation codes at +-127, zero points anywhere: the exact formula.
    k, n = 384, 67
    groups = 1 if group_size is None else k // group_size
    top = (1 << bits) - 1
    gen = torch.Generator().manual_seed(bits + k)
    codes = (torch.randint(0, 2, (n, k), generator=gen) * top).to(torch.uint8)
    qweight = pack_int4_reference(codes) if bits == 4 else codes
    zeros = None if symmetric else torch.randint(0, top + 1, (n, groups), generator=gen).to(torch.uint8)
    scales = torch.rand(n, groups, generator=gen) + 0.5
    for m in (1, 2, 3, 4):
        # +-1, with a larger magnitude in some groups (different per-group scales).
        x = torch.where(torch.rand(m, k, generator=gen) < 0.5, -1.0, 1.0) * (1 + 3 * (torch.arange(k) // 32 % 3))
        got = qlinear_a8(x, qweight, scales, zeros, bits, group_size, act_granularity=granularity)
        want = exact_order_reference(x, qweight, scales, zeros, bits, group_size, 8, None, granularity == "per_group")
        assert rel_error(got, want) <= 2e-6, m


# ------------------------------------------------------------------------------------------------------------
# Against the fake-quant reference: formats, dtypes, shapes, layouts.
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("granularity", ["per_token", "per_group"])
@pytest.mark.parametrize("group_size", [None, 32, 128])
@pytest.mark.parametrize("symmetric", [True, False], ids=["sym", "asym"])
@pytest.mark.parametrize("bits", [4, 8])
def test_every_format_dtype_and_row_count(isa, bits, symmetric, group_size, granularity):
    n, k = 37, 384
    for i, m in enumerate(ROW_COUNTS):
        x_dtype = X_DTYPES[i % 3]
        scale_dtype = X_DTYPES[(i // 3 + i) % 3]
        qweight, scales, zeros = weight(n, k, bits, group_size, symmetric, scale_dtype)
        bias = randn(n, dtype=X_DTYPES[(i + 1) % 3], seed=i) if i % 2 else None
        x = randn(m, k, dtype=x_dtype, seed=m)
        check(x, qweight, scales, zeros, bits, group_size, 8 - 4 * (i % 2), bias, granularity)


def test_per_group_scales_follow_the_weight_groups():
    # Per group is per token when the weights have one group (per channel); with groups of 32 a row whose groups
    # differ by orders of magnitude keeps the small groups' values (per token they round to zero).
    qweight, scales, zeros = weight(16, 128, 4, None, True)
    x = randn(3, 128, seed=1)
    per_group = qlinear_a8(x, qweight, scales, zeros, 4, None, act_granularity="per_group")
    assert rel_error(per_group, qlinear_a8(x, qweight, scales, zeros, 4, None)) <= 1e-6  # fp32 order of the scales
    row = torch.cat([torch.full((32,), 1e-3), torch.full((32,), 10.0)])
    codes, sx = quantize_activations_reference(row, 8, 32)
    assert sx.shape == (2,) and torch.equal(codes, torch.full((64,), 127, dtype=torch.int8))
    assert torch.count_nonzero(quantize_activations_reference(row, 8)[0]) == 32


@pytest.mark.parametrize(("k", "n", "bits", "group_size"), [(576, 1536, 8, None), (768, 3072, 4, 128)])
def test_real_model_shapes(isa, k, n, bits, group_size):
    qweight, scales, zeros = weight(n, k, bits, group_size, True, torch.bfloat16)
    for m, dtype in ((1, torch.float32), (4, torch.bfloat16), (33, torch.float32)):
        check(randn(m, k, dtype=dtype, seed=m), qweight, scales, zeros, bits, group_size, 8, randn(n, seed=3))


def test_leading_dimensions_empty_and_strided(isa):
    qweight, scales, zeros = weight(24, 64, 4, 32, True)
    check(randn(2, 3, 64, seed=1), qweight, scales, zeros, 4, 32)
    check(randn(64, seed=3), qweight, scales, zeros, 4, 32)
    check(randn(10, 100, seed=2)[:, 3:67], qweight, scales, zeros, 4, 32)  # rows of a wider buffer, no copy
    check(randn(64, 10, seed=4).t(), qweight, scales, zeros, 4, 32)  # transposed: copied
    check(randn(64, seed=5).expand(5, 64), qweight, scales, zeros, 4, 32)
    assert qlinear_a8(torch.empty(0, 64), qweight, scales, zeros, 4, 32).shape == (0, 24)
    y = qlinear_a8(torch.empty(3, 0, 64, dtype=torch.bfloat16), qweight, scales, zeros, 4, 32)
    assert y.shape == (3, 0, 24) and y.dtype == torch.bfloat16


def test_thread_count_does_not_change_the_result(isa):
    # 300 x 256 runs on one thread at batch 1; 1024 x 512 is past the GEMV's split size.
    threads = torch.get_num_threads()
    for n, k, bits in ((300, 256, 8), (1024, 512, 4), (1024, 512, 8)):
        qweight, scales, zeros = weight(n, k, bits, 64, False)
        for m in (1, 3, 5, 40):
            x = randn(m, k, seed=m)
            want = qlinear_a8(x, qweight, scales, zeros, bits, 64)
            try:
                torch.set_num_threads(1)
                got = qlinear_a8(x, qweight, scales, zeros, bits, 64)
            finally:
                torch.set_num_threads(threads)
            assert torch.equal(got, want), (n, k, bits, m)


def test_every_isa_gives_the_same_integers_and_the_expected_kernel():
    if _native._C is None:
        pytest.skip("tcompress._C is not built")
    qweight, zeros = random_weight_codes(70, 256, 8, 4, False)
    codes = random_codes(13, 256, seed=3)
    original = _native.get_isa()
    results, names = {}, {}
    try:
        for isa in _native.supported_isas():
            _native.set_isa(isa)
            results[isa] = qlinear_a8_accumulators(codes, qweight, zeros, 8, 64)
            names[isa] = _native._C.qlinear_a8_kernel_name()
    finally:
        _native.set_isa(original)
    assert all(torch.equal(r, results["scalar"]) for r in results.values())
    assert names["scalar"] == "scalar"
    if "avx2" in names:
        assert names["avx2"] == "avx2"
    if "avx512" in names:
        assert names["avx512"] == ("avx512_vnni" if _native._C.cpu_features()["avx512_vnni"] else "avx2")


def test_falls_back_to_the_reference_without_native_code(monkeypatch):
    qweight, scales, zeros = weight(16, 64, 4, 32, True)
    monkeypatch.setattr(_native, "cpu_native", lambda: None)
    x = randn(3, 64, seed=1)
    want = qlinear_a8_reference(x, qweight, scales, zeros, 4, 32)
    assert torch.equal(qlinear_a8(x, qweight, scales, zeros, 4, 32), want)
    codes, sx = quantize_activations(x)
    assert torch.equal(codes, quantize_activations_reference(x, 8)[0])


# ------------------------------------------------------------------------------------------------------------
# Autograd, opcheck, torch.compile.
# ------------------------------------------------------------------------------------------------------------


def test_gradient_is_straight_through():
    qweight, scales, zeros = weight(24, 64, 4, 32, False)
    x = randn(2, 5, 64, seed=1).requires_grad_()
    bias = randn(24, seed=2).requires_grad_()
    grad = randn(2, 5, 24, seed=3)
    qlinear_a8(x, qweight, scales, zeros, 4, 32, 8, bias).backward(grad)
    x2, bias2 = x.detach().clone().requires_grad_(), bias.detach().clone().requires_grad_()
    qlinear_reference(x2, qweight, scales, zeros, 4, 32, bias2).backward(grad)  # same gradient as W x + b
    assert rel_error(x.grad, x2.grad) <= 1e-5 and rel_error(bias.grad, bias2.grad) <= 1e-5


def test_opcheck():
    op = torch.ops.tcompress.qlinear.default
    cases = ((4, 32, True, 8, False), (8, 0, False, 4, False), (8, -1, True, 8, False), (4, 32, False, 8, True))
    for bits, group_size, symmetric, act_bits, per_group in cases:
        gs = None if group_size <= 0 else group_size
        qweight, scales, zeros = weight(24, 64, bits, gs, symmetric)
        args = (qweight, scales, zeros, bits, group_size)
        torch.library.opcheck(op, (randn(3, 64, seed=1), *args, None, act_bits, per_group))
        x = randn(2, 3, 64, seed=2).requires_grad_()
        torch.library.opcheck(op, (x, *args, randn(24, seed=3), act_bits, per_group))


def test_torch_compile_fullgraph():
    qweight, scales, zeros = weight(48, 128, 8, None, True)
    bias = randn(48, seed=4)

    def f(x):
        return torch.relu(qlinear_a8(x * 2, qweight, scales, zeros, 8, None, 8, bias)) + 1

    compiled = torch.compile(f, fullgraph=True)
    for m in (1, 12):
        x = randn(m, 128, seed=m)
        assert torch.equal(compiled(x), f(x))


def test_meta_tensors_give_shapes_without_computing():
    qweight, scales, zeros = weight(24, 64, 8, None, True)
    meta = [t.to("meta") for t in (qweight, scales)]
    y = qlinear_a8(torch.empty(4, 7, 64, device="meta", dtype=torch.bfloat16), *meta, None, 8, None)
    assert y.shape == (4, 7, 24) and y.dtype == torch.bfloat16 and y.device.type == "meta"


# ------------------------------------------------------------------------------------------------------------
# Bad input.
# ------------------------------------------------------------------------------------------------------------


def _args():
    qweight, scales, zeros = weight(24, 64, 4, 32, False)
    return dict(x=randn(3, 64), qweight=qweight, scales=scales, zeros=zeros, bits=4, group_size=32)


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        (dict(act_bits=3), ValueError, "act_bits must be 8 or 4 .*; got 3"),
        (dict(act_bits=True), ValueError, "act_bits must be 8 or 4"),
        (dict(act_granularity="per_row"), ValueError, "act_granularity must be 'per_token' .* or 'per_group'"),
        (dict(bits=5), ValueError, "bits must be 4 or 8; got 5"),
        (dict(x=randn(3, 63)), ValueError, "x has inner size 63 but the weight expects in_features 64"),
        (dict(x=torch.ones(3, 64, dtype=torch.int32)), TypeError, "x must have dtype float32"),
        (dict(group_size=24), ValueError, "group_size 24 does not divide in_features 64"),
        (dict(scales=torch.ones(24, 3)), ValueError, r"scales must have shape \(out_features, groups\) = \(24, 2\)"),
        (dict(zeros=torch.zeros(24, 2)), TypeError, "zeros must have dtype torch.uint8"),
        (dict(bias=torch.zeros(23)), ValueError, r"bias must have shape \(out_features,\) = \(24,\); got \(23,\)"),
    ],
)
def test_bad_input_is_a_clear_error(change, error, match):
    args = _args()
    args.update(change)
    with pytest.raises(error, match="tcompress.ops.qlinear_a8: .*" + match):
        qlinear_a8(**args)


def test_per_group_scales_need_integer_activations():
    a = _args()
    with pytest.raises(ValueError, match="act_granularity 'per_group' needs integer activations .*; got act_bits None"):
        qlinear(**a, act_granularity="per_group")
    with pytest.raises(ValueError, match="act_granularity 'per_group' needs integer activations"):
        PreparedQLinear(a["qweight"], a["scales"], a["zeros"], 4, 32, act_granularity="per_group")


def test_a_group_too_large_for_int32_is_a_clear_error():
    k = 65536 * 2
    qweight = torch.zeros(1, k, dtype=torch.uint8)
    with pytest.raises(ValueError, match=r"qlinear_a8: a group of at most 65536 columns .*got in_features 131072"):
        qlinear_a8(torch.ones(1, k), qweight, torch.ones(1, 1), None, 8, None)
    with pytest.raises(ValueError, match="got group_size 131072"):
        qlinear_a8(torch.ones(1, k), qweight, torch.ones(1, 1), None, 8, k)
    qlinear_a8(torch.ones(1, k), qweight, torch.ones(1, 2), None, 8, 65536)  # at the limit: fine


def test_non_finite_activations_are_a_clear_error(isa):
    qweight, scales, zeros = weight(24, 64, 8, None, True)
    for bad in (float("nan"), float("inf")):
        x = randn(3, 64)
        x[1, 7] = bad
        with pytest.raises(ValueError, match="input holds NaN or Inf"):
            qlinear_a8(x, qweight, scales, zeros, 8, None)
        with pytest.raises(ValueError, match="input holds NaN or Inf"):
            quantize_activations(x)


def test_schema_op_checks_too():
    a = _args()
    with pytest.raises(ValueError, match="tcompress::qlinear: act_bits must be 8 or 4"):
        torch.ops.tcompress.qlinear(a["x"], a["qweight"], a["scales"], a["zeros"], 4, 32, None, 2, False)
    with pytest.raises(ValueError, match="tcompress::qlinear: per-group activation scales need integer activations"):
        torch.ops.tcompress.qlinear(a["x"], a["qweight"], a["scales"], a["zeros"], 4, 32, None, 0, True)


def test_helpers_reject_bad_input():
    qweight, zeros = random_weight_codes(24, 64, 8, 2, False)
    with pytest.raises(TypeError, match="qlinear_a8_accumulators: codes must be an int8 tensor; got torch.float32"):
        qlinear_a8_accumulators(torch.zeros(2, 64), qweight, zeros, 8, 32)
    with pytest.raises(ValueError, match="codes have inner size 60 but the weight expects in_features 64"):
        qlinear_a8_accumulators(torch.zeros(2, 60, dtype=torch.int8), qweight, zeros, 8, 32)
    with pytest.raises(ValueError, match="quantize_activations: act_bits must be 8 or 4 .*; got 16"):
        quantize_activations(randn(2, 8), 16)
    with pytest.raises(TypeError, match="quantize_activations: x must have dtype float32"):
        quantize_activations(torch.zeros(2, 8, dtype=torch.int64))
    # Before: an IndexError from amax over the empty dimension.
    with pytest.raises(ValueError, match=r"x must have at least one column .* got shape \(3, 0\)"):
        quantize_activations(torch.empty(3, 0))


@pytest.mark.skipif(_native._C is None, reason="tcompress._C is not built")
def test_native_code_rechecks_its_arguments():
    C = _native._C
    qweight, scales, zeros = weight(24, 64, 8, 32, False)
    x, y = randn(3, 64), torch.empty(3, 24)
    good = dict(x=x.data_ptr(), x_dtype=0, M=3, K=64, x_row_stride=64, qweight=qweight.data_ptr(), N=24, bits=8,
                scales=scales.data_ptr(), scale_dtype=0, zeros=zeros.data_ptr(), group_size=32, act_bits=8,
                act_per_group=0, bias=0, bias_dtype=0, y=y.data_ptr(), y_row_stride=24, num_threads=1)  # fmt: skip
    C.qlinear_a8(**good)
    assert rel_error(y, qlinear_a8_reference(x, qweight, scales, zeros, 8, 32)) <= TOL[torch.float32]
    bad = [
        (dict(act_bits=2), "invalid argument"),
        (dict(act_per_group=2), "invalid argument"),
        (dict(bits=3), "invalid argument"),
        (dict(x_dtype=5), "unknown dtype code"),
        (dict(group_size=24), "unsupported size"),
        (dict(x_row_stride=10), "invalid row stride"),
        (dict(y=0), "a required pointer is null"),
        (dict(y=x.data_ptr()), "invalid argument"),
    ]
    for change, message in bad:
        with pytest.raises(ValueError, match=message):
            C.qlinear_a8(**{**good, **change})
    with pytest.raises(ValueError, match="unsupported size"):
        C.qlinear_a8_accumulators(codes=1, M=1, K=1 << 17, qweight=1, N=1, bits=8, zeros=0, group_size=0, acc=1,
                                  num_threads=1)  # fmt: skip
    with pytest.raises(ValueError, match="invalid argument"):
        C.quantize_activations(x=1, x_dtype=0, M=1, K=4, x_row_stride=4, act_bits=5, codes=1, act_scales=1,
                               num_threads=1)  # fmt: skip


# ------------------------------------------------------------------------------------------------------------
# CUDA (skipped without a device).
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", X_DTYPES)
@pytest.mark.parametrize(("bits", "group_size", "symmetric"), [(4, 128, True), (4, 64, False), (8, None, True)])
def test_cuda_matches_reference(cuda_device, bits, group_size, symmetric, dtype):
    for k, n in ((256, 40), (576, 1536)):
        qweight, scales, zeros = weight(n, k, bits, group_size, symmetric, torch.bfloat16)
        dev = [None if t is None else t.to(cuda_device) for t in (qweight, scales, zeros)]
        for m, act_bits in ((1, 8), (3, 4), (17, 8), (130, 8)):
            x = randn(m, k, dtype=dtype, seed=m)
            bias = randn(n, seed=m)
            want = qlinear_a8_reference(x, qweight, scales, zeros, bits, group_size, act_bits, bias)
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # no fallback to the reference
                got = qlinear_a8(x.to(cuda_device), *dev, bits, group_size, act_bits, bias.to(cuda_device))
            assert got.device == cuda_device and rel_error(got.cpu(), want) <= TOL[dtype]


def test_cuda_per_group_scales_run_the_reference(cuda_device):
    # No CUDA kernel quantizes activations per group: the op computes the reference on the device.
    qweight, scales, zeros = weight(40, 256, 4, 32, True)
    x = randn(3, 256, seed=1)
    want = qlinear_a8_reference(x, qweight, scales, zeros, 4, 32, 8, None, "per_group")
    dev = [t.to(cuda_device) for t in (qweight, scales)]
    got = qlinear_a8(x.to(cuda_device), *dev, None, 4, 32, act_granularity="per_group")
    assert got.device == cuda_device and rel_error(got.cpu(), want) <= TOL[torch.float32]
