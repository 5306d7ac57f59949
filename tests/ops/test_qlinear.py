"""tcompress.ops.qlinear: the native kernels (GEMV and GEMM paths) against the pure-torch reference under every
supported ISA, over bits, symmetric/asymmetric codes, group sizes, activation/scale/bias dtypes and row counts;
real and awkward shapes, layouts, autograd, opcheck, torch.compile and bad inputs."""

from __future__ import annotations

import functools
import warnings

import pytest
import torch
from tcompress import _native
from tcompress.ops import qlinear, qlinear_reference
from tcompress.ops.quantize import pack_int4_reference, quantize_reference
from tensors import randn, rel_error

# Tolerances on max |got - want| / max |want|: fp32 rounding for fp32 x; about one output ulp for fp16/bf16.
TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}
X_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
GEMV_MAX_M = getattr(_native._C, "QLINEAR_GEMV_MAX_M", 8)
# Row counts on both sides of the GEMV/GEMM switch, and GEMM tails (not multiples of the micro-tile).
ROW_COUNTS = (1, 2, 3, 7, 8, 9, 33, 130)


@functools.cache
def weight(n: int, k: int, bits: int, group_size, symmetric: bool, scale_dtype=torch.float32, seed=0):
    """(qweight, scales, zeros) of a fresh random (n, k) weight in the packed format."""
    q = quantize_reference(randn(n, k, seed=seed + 7), bits, group_size, symmetric, scale_dtype)
    qweight = pack_int4_reference(q.codes) if bits == 4 else q.codes
    return qweight, q.scales, q.zeros


def check(x, qweight, scales, zeros, bits, group_size, bias=None):
    got = qlinear(x, qweight, scales, zeros, bits, group_size, bias)
    want = qlinear_reference(x, qweight, scales, zeros, bits, group_size, bias)
    assert got.dtype == x.dtype and got.shape == want.shape
    if got.numel():
        err = rel_error(got, want)
        assert err <= TOL[x.dtype], f"relative error {err:.3g} > {TOL[x.dtype]:.0e}"
    return got


# ------------------------------------------------------------------------------------------------------------
# Correctness against the reference.
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("group_size", [None, 32, 64, 128])
@pytest.mark.parametrize("symmetric", [True, False], ids=["sym", "asym"])
@pytest.mark.parametrize("bits", [4, 8])
def test_every_format_dtype_and_row_count(isa, bits, symmetric, group_size):
    n, k = 37, 384
    for i, m in enumerate(ROW_COUNTS):
        # x, scale and bias dtypes rotate so that every pair meets across the row counts.
        x_dtype = X_DTYPES[i % 3]
        scale_dtype = X_DTYPES[(i // 3 + i) % 3]
        qweight, scales, zeros = weight(n, k, bits, group_size, symmetric, scale_dtype)
        bias = randn(n, dtype=X_DTYPES[(i + 1) % 3], seed=i) if i % 2 else None
        check(randn(m, k, dtype=x_dtype, seed=m), qweight, scales, zeros, bits, group_size, bias)


@pytest.mark.parametrize(
    ("k", "n", "bits", "group_size"),
    [(576, 1536, 4, 64), (1536, 576, 4, 128), (768, 3072, 4, 128), (576, 1536, 8, None), (768, 3072, 8, None)],
)
def test_real_model_shapes(isa, k, n, bits, group_size):
    qweight, scales, zeros = weight(n, k, bits, group_size, True, torch.bfloat16)
    bias = randn(n, seed=3)
    for m, dtype in ((1, torch.float32), (4, torch.bfloat16), (8, torch.float32), (20, torch.float32)):
        check(randn(m, k, dtype=dtype, seed=m), qweight, scales, zeros, bits, group_size, bias)


@pytest.mark.parametrize(
    ("k", "group_size"),
    [
        (172, None),  # per channel, K not a multiple of any vector block
        (344, 172),  # groups not multiples of the block, block not a multiple of the group
        (96, 24),  # groups straddling vector blocks
        (120, 40),
        (36, 6),  # groups narrower than a 32-bit lane of int4 codes: column by column
        (20, 2),
        (8, None),  # a single lane
        (2, None),
    ],
)
@pytest.mark.parametrize("bits", [4, 8])
def test_awkward_sizes_and_groups(isa, bits, k, group_size):
    for n in (1, 5, 33):
        qweight, scales, zeros = weight(n, k, bits, group_size, False)
        for m in (1, 3, 8, 11):
            check(randn(m, k, seed=m + n), qweight, scales, zeros, bits, group_size, randn(n, seed=n))


def bf16_gemm_expected(isa) -> bool:
    """Whether bf16 x with more than GEMV_MAX_M rows runs the vdpbf16ps GEMM (avx512 variant + AVX512_BF16)."""
    native = _native.cpu_native()
    return isa == "avx512" and native is not None and native.cpu_features().get("avx512_bf16", False)


# The bf16-x GEMM (vdpbf16ps) takes whole-group layouts: one group per row, or groups a multiple of the vector
# block (int4 128 columns, int8 64), and int4 groups of 64; other group sizes (g32, ...) fall back to the fp32 GEMM.
@pytest.mark.parametrize(
    ("bits", "k", "group_size"),
    [
        (4, 384, None),
        (4, 384, 128),
        (4, 512, 256),
        (4, 172, None),  # a partial vector block
        (4, 384, 64),  # split blocks, two groups per block (reordered)
        (4, 320, 64),  # ... and a half block at the end
        (4, 384, 32),  # fallback to the fp32 GEMM
        (8, 384, None),
        (8, 384, 64),
        (8, 384, 128),
        (8, 173, None),  # odd K: a zero-padded last pair
        (8, 192, 192),  # groups straddling the 256-column panels
        (8, 576, 192),
    ],
)
@pytest.mark.parametrize("symmetric", [True, False], ids=["sym", "asym"])
def test_bf16_x_gemm(isa, bits, k, group_size, symmetric):
    for n, m in ((37, 9), (5, 33), (130, 100), (29, 300)):
        scale_dtype = (torch.bfloat16, torch.float32, torch.float16)[m % 3]
        qweight, scales, zeros = weight(n, k, bits, group_size, symmetric, scale_dtype)
        bias = randn(n, dtype=torch.bfloat16, seed=n) if m % 2 else None
        check(randn(m, k, dtype=torch.bfloat16, seed=m), qweight, scales, zeros, bits, group_size, bias)


def test_bf16_x_gemm_is_used_where_supported(isa):
    # vdpbf16ps flushes subnormal bf16 inputs: lone subnormal activations times huge weights give exactly 0
    # there and a nonzero output on the fp32 paths; so this tells which path ran.
    k, n, m = 320, 16, 12
    codes = pack_int4_reference(torch.full((n, k), 15, dtype=torch.uint8))
    x = torch.zeros(m, k, dtype=torch.bfloat16)
    x[:, 3] = x[:, 300] = 2.0**-130
    for group_size, bf16_gemm in ((None, True), (64, True), (32, False)):
        scales = torch.full((n, k // (group_size or k)), 1e30)
        y = qlinear(x, codes, scales, None, 4, group_size)
        if bf16_gemm and bf16_gemm_expected(isa):
            assert torch.equal(y, torch.zeros_like(y)), group_size
        else:
            assert (y.float() > 0).all(), group_size
        # Decode (M <= GEMV_MAX_M) never takes it.
        assert (qlinear(x[:GEMV_MAX_M], codes, scales, None, 4, group_size).float() > 0).all()


def test_leading_dimensions_and_empty(isa):
    qweight, scales, zeros = weight(24, 64, 4, 32, True)
    check(randn(2, 3, 64, seed=1), qweight, scales, zeros, 4, 32)
    check(randn(2, 1, 5, 64, seed=2), qweight, scales, zeros, 4, 32)
    check(randn(64, seed=3), qweight, scales, zeros, 4, 32)  # a single vector
    y = qlinear(torch.empty(0, 64), qweight, scales, zeros, 4, 32)
    assert y.shape == (0, 24)
    y = qlinear(torch.empty(3, 0, 64, dtype=torch.bfloat16), qweight, scales, zeros, 4, 32)
    assert y.shape == (3, 0, 24) and y.dtype == torch.bfloat16


@pytest.mark.parametrize(
    "make",
    [
        lambda: randn(64, 10, seed=1).t(),  # transposed: copied
        lambda: randn(10, 100, seed=2)[:, 3:67],  # rows of a wider buffer: strided, no copy
        lambda: randn(6, 2, 64, seed=3)[:, 1],  # every other row
        lambda: randn(64, seed=4).expand(12, 64),  # one row read twelve times
        lambda: randn(3, 64, 4, seed=5)[..., 1],  # elements not contiguous
    ],
)
def test_non_contiguous_x(isa, make):
    x = make()
    for bits in (4, 8):
        qweight, scales, zeros = weight(40, 64, bits, 16, False)
        check(x, qweight, scales, zeros, bits, 16, randn(40, seed=9))


def test_non_contiguous_weight_tensors(isa):
    qweight, scales, zeros = weight(40, 128, 8, 32, False)
    check(randn(3, 128, seed=1), qweight.t().contiguous().t(), scales.t().contiguous().t(), zeros.t().contiguous().t(),
          8, 32, randn(80, seed=2)[::2])  # fmt: skip


def test_thread_count_does_not_change_the_result(isa):
    qweight, scales, zeros = weight(300, 512, 4, 128, True)
    threads = torch.get_num_threads()
    for m in (1, 5, 40):
        x = randn(m, 512, seed=m)
        want = qlinear(x, qweight, scales, zeros, 4, 128)
        try:
            torch.set_num_threads(1)
            got = qlinear(x, qweight, scales, zeros, 4, 128)
        finally:
            torch.set_num_threads(threads)
        assert torch.equal(got, want)


def test_extreme_codes_and_scales(isa):
    # Every code 0 or 2^bits - 1 with zero points at the other end: the largest |u - z| the format has.
    n, k = 20, 256
    for bits in (4, 8):
        top = (1 << bits) - 1
        codes = torch.randint(0, 2, (n, k), generator=torch.Generator().manual_seed(bits), dtype=torch.uint8) * top
        qweight = pack_int4_reference(codes) if bits == 4 else codes
        scales = torch.rand(n, 2) * 1e3 + 1e-3
        zeros = torch.where(torch.rand(n, 2) < 0.5, 0, top).to(torch.uint8)
        for m in (1, 9):
            check(randn(m, k, seed=m), qweight, scales, zeros, bits, 128)


def test_falls_back_to_the_reference_without_native_code(monkeypatch):
    qweight, scales, zeros = weight(16, 64, 4, 32, True)
    monkeypatch.setattr(_native, "cpu_native", lambda: None)
    check(randn(3, 64, seed=1), qweight, scales, zeros, 4, 32)


# ------------------------------------------------------------------------------------------------------------
# Autograd, opcheck, torch.compile.
# ------------------------------------------------------------------------------------------------------------


def test_backward_matches_the_reference():
    qweight, scales, zeros = weight(24, 64, 4, 32, False)
    x = randn(2, 5, 64, seed=1).requires_grad_()
    bias = randn(24, seed=2).requires_grad_()
    grad = randn(2, 5, 24, seed=3)
    qlinear(x, qweight, scales, zeros, 4, 32, bias).backward(grad)
    x2, bias2 = x.detach().clone().requires_grad_(), bias.detach().clone().requires_grad_()
    qlinear_reference(x2, qweight, scales, zeros, 4, 32, bias2).backward(grad)
    assert rel_error(x.grad, x2.grad) <= 1e-5 and rel_error(bias.grad, bias2.grad) <= 1e-5


def test_opcheck():
    op = torch.ops.tcompress.qlinear.default
    for bits, group_size, symmetric in ((4, 32, True), (8, 0, False), (4, -1, False)):
        gs = None if group_size <= 0 else group_size
        qweight, scales, zeros = weight(24, 64, bits, gs, symmetric)
        torch.library.opcheck(op, (randn(3, 64, seed=1), qweight, scales, zeros, bits, group_size, None, 0, False))
        x = randn(2, 3, 64, seed=2).requires_grad_()
        torch.library.opcheck(op, (x, qweight, scales, zeros, bits, group_size, randn(24, seed=3), 0, False))
        x = randn(11, 64, dtype=torch.bfloat16)
        torch.library.opcheck(op, (x, qweight, scales, zeros, bits, group_size, None, 0, False))


def test_torch_compile_fullgraph():
    qweight, scales, zeros = weight(48, 128, 4, 64, False)
    bias = randn(48, seed=4)

    def f(x):
        return torch.relu(qlinear(x * 2, qweight, scales, zeros, 4, 64, bias)) + 1

    compiled = torch.compile(f, fullgraph=True)
    for m in (1, 12):
        x = randn(m, 128, seed=m)
        assert rel_error(compiled(x), f(x)) <= 1e-6


def test_meta_tensors_give_shapes_without_computing():
    qweight, scales, zeros = weight(24, 64, 8, None, False)
    meta = [t.to("meta") for t in (qweight, scales, zeros)]
    y = qlinear(torch.empty(2, 7, 64, device="meta", dtype=torch.float16), *meta, 8, None)
    assert y.shape == (2, 7, 24) and y.dtype == torch.float16 and y.device.type == "meta"


# ------------------------------------------------------------------------------------------------------------
# Bad input: every one a clear error.
# ------------------------------------------------------------------------------------------------------------


def _args(bits=4, group_size=32, symmetric=False, n=24, k=64):
    qweight, scales, zeros = weight(n, k, bits, group_size, symmetric)
    return dict(x=randn(3, k), qweight=qweight, scales=scales, zeros=zeros, bits=bits, group_size=group_size)


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        (dict(x=torch.zeros(3, 64, dtype=torch.int32)), TypeError, "x must have dtype float32, float16 or bfloat16"),
        (dict(x=torch.zeros(3, 64, dtype=torch.float64)), TypeError, "got torch.float64"),
        (dict(x=torch.tensor(1.0)), ValueError, "x must have at least one dimension"),
        (dict(x=randn(3, 62)), ValueError, "x has inner size 62 but the weight expects in_features 64"),
        (dict(bits=3), ValueError, "bits must be 4 or 8; got 3"),
        (dict(bits=8), ValueError, "x has inner size 64 but the weight expects in_features 32"),
        (dict(qweight=torch.zeros(24, 32, dtype=torch.int8)), TypeError, "qweight must have dtype torch.uint8"),
        (dict(qweight=torch.zeros(24, 32, 1, dtype=torch.uint8)), ValueError, "qweight must be 2-D"),
        (dict(qweight=torch.zeros(0, 32, dtype=torch.uint8)), ValueError, "qweight must not be empty"),
        (dict(group_size=48), ValueError, "group_size 48 does not divide in_features 64"),
        (dict(group_size=0), ValueError, "group_size must be a positive int or None"),
        (dict(group_size=-1), ValueError, "group_size must be a positive int or None"),
        (dict(group_size=16), ValueError, r"scales must have shape \(out_features, groups\) = \(24, 4\)"),
        (dict(scales=torch.ones(24, 2, dtype=torch.float64)), TypeError, "scales must have dtype float32"),
        (dict(scales=torch.ones(2, 24)), ValueError, r"got \(2, 24\)"),
        (dict(zeros=torch.zeros(24, 2, dtype=torch.int32)), TypeError, "zeros must have dtype torch.uint8"),
        (dict(zeros=torch.zeros(24, 1, dtype=torch.uint8)), ValueError, r"zeros must have scales' shape \(24, 2\)"),
        (dict(bias=torch.zeros(23)), ValueError, r"bias must have shape \(out_features,\) = \(24,\); got \(23,\)"),
        (dict(bias=torch.zeros(24, dtype=torch.int64)), TypeError, "bias must have dtype float32"),
        (dict(scales=torch.ones(24, 2, device="meta")), ValueError, "scales must be on x's device cpu; got meta"),
        (dict(qweight="weights"), TypeError, "qweight must be a torch.Tensor; got str"),
    ],
)
def test_bad_input_is_a_clear_error(change, error, match):
    args = _args()
    bias = change.pop("bias", None)
    args.update(change)
    with pytest.raises(error, match="tcompress.ops.qlinear: .*" + match):
        qlinear(**args, bias=bias)


def test_wrong_device_of_x():
    args = _args()
    args["x"] = args["x"].to("meta")
    with pytest.raises(ValueError, match="qweight must be on x's device meta; got cpu"):
        qlinear(**args)


def test_schema_op_checks_too():
    a = _args()
    with pytest.raises(ValueError, match="tcompress::qlinear: x has inner size 63"):
        torch.ops.tcompress.qlinear(randn(2, 63), a["qweight"], a["scales"], a["zeros"], 4, 32, None, 0, False)


@pytest.mark.skipif(_native._C is None, reason="tcompress._C is not built")
def test_native_code_rechecks_its_arguments():
    C = _native._C
    qweight, scales, zeros = weight(24, 64, 4, 32, False)
    x, y = randn(3, 64), torch.empty(3, 24)
    good = dict(x=x.data_ptr(), x_dtype=0, M=3, K=64, x_row_stride=64, qweight=qweight.data_ptr(), N=24, bits=4,
                scales=scales.data_ptr(), scale_dtype=0, zeros=zeros.data_ptr(), group_size=32, bias=0, bias_dtype=0,
                y=y.data_ptr(), y_row_stride=24, num_threads=1)  # fmt: skip
    C.qlinear(**good)
    assert rel_error(y, qlinear_reference(x, qweight, scales, zeros, 4, 32)) <= 1e-5
    bad = [
        (dict(x_dtype=7), "unknown dtype code"),
        (dict(scale_dtype=-1), "unknown dtype code"),
        (dict(bits=2), "invalid argument"),
        (dict(K=63), "unsupported size"),
        (dict(group_size=24), "unsupported size"),
        (dict(group_size=-3), "unsupported size"),
        (dict(M=-1), "unsupported size"),
        (dict(N=0), "unsupported size"),
        (dict(x_row_stride=10), "invalid row stride"),
        (dict(y_row_stride=23), "invalid row stride"),
        (dict(qweight=0), "a required pointer is null"),
        (dict(y=0), "a required pointer is null"),
        (dict(y=x.data_ptr()), "invalid argument"),  # output overlapping an input
        (dict(y=scales.data_ptr() - 8), "invalid argument"),
    ]
    for change, message in bad:
        with pytest.raises(ValueError, match=message):
            C.qlinear(**{**good, **change})


# ------------------------------------------------------------------------------------------------------------
# CUDA (skipped without a device).
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", X_DTYPES)
@pytest.mark.parametrize(("bits", "group_size", "symmetric"), [(4, 128, True), (4, 64, False), (8, None, True)])
def test_cuda_matches_reference(cuda_device, bits, group_size, symmetric, dtype):
    for k, n in ((256, 40), (576, 1536), (1536, 576)):
        qweight, scales, zeros = weight(n, k, bits, group_size, symmetric, torch.bfloat16)
        dev = [None if t is None else t.to(cuda_device) for t in (qweight, scales, zeros)]
        for m in (1, 3, 8, 9, 64, 130):
            x = randn(m, k, dtype=dtype, seed=m)
            bias = randn(n, seed=m)
            want = qlinear_reference(x, qweight, scales, zeros, bits, group_size, bias)
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # no fallback to the reference
                got = qlinear(x.to(cuda_device), *dev, bits, group_size, bias.to(cuda_device))
            assert got.device == cuda_device and rel_error(got.cpu(), want) <= TOL[dtype]


def test_cuda_keeps_the_current_device_and_takes_strided_x(cuda_device):
    qweight, scales, zeros = weight(40, 128, 4, 32, False)
    dev = [t.to(cuda_device) for t in (qweight, scales, zeros)]
    x = randn(6, 200, seed=1)[:, 10:138]
    before = torch.cuda.current_device()
    got = qlinear(randn(6, 200, seed=1).to(cuda_device)[:, 10:138], *dev, 4, 32)
    assert torch.cuda.current_device() == before
    assert rel_error(got.cpu(), qlinear_reference(x, qweight, scales, zeros, 4, 32)) <= 1e-5


@pytest.mark.skipif(_native._cuda is None, reason="tcompress._cuda is not built")
def test_cuda_entry_point_checks_arguments_and_reports_a_missing_device():
    C = _native._cuda
    args = dict(x=1 << 20, x_dtype=0, M=1, K=64, x_row_stride=64, qweight=2 << 20, N=8, bits=4, scales=3 << 20,
                scale_dtype=0, zeros=0, group_size=32, bias=0, bias_dtype=0, y=4 << 20, y_row_stride=8, device=0,
                stream=0)  # fmt: skip
    with pytest.raises(ValueError, match="unsupported size"):
        C.qlinear(**{**args, "group_size": 24})
    if C.device_count() == 0:
        with pytest.raises(RuntimeError, match="no CUDA device"):
            C.qlinear(**args)
