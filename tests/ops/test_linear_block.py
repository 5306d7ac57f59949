"""tcompress.ops.linear_block: the native kernels (GEMV and GEMM paths) against the pure-torch reference under every
supported ISA, over factor dtypes (fp32/bf16/fp16/int8 + scales), x dtypes and row counts; real and awkward shapes,
layouts, autograd, opcheck, torch.compile and bad inputs. CUDA tests skip without a device."""

from __future__ import annotations

import warnings

import pytest
import torch
from tcompress import _native
from tcompress.ops import linear_block, linear_block_reference
from tensors import rel_error

# Tolerances on max |got - want| / max |want|: fp32 rounding for fp32 x; about one output ulp for fp16/bf16.
TOL = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}
X_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
FACTOR_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.int8)
GEMV_MAX_M = getattr(_native._C, "LINEAR_BLOCK_GEMV_MAX_M", 8)
# Both sides of the GEMV/GEMM switch, GEMM tails (not multiples of the micro-tile) and several row blocks.
ROW_COUNTS = (1, 2, 3, 5, GEMV_MAX_M, GEMV_MAX_M + 1, 50, 101)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def make_factors(d: int, r: int, dtype: torch.dtype, seed: int = 0):
    """(U, V, b, mu, u_scale, v_scale) of a fresh random map whose update is of the order of x."""
    g = gen(seed)
    b, mu = torch.randn(d, generator=g), torch.randn(d, generator=g)
    if dtype == torch.int8:
        U = torch.randint(-127, 128, (d, r), generator=g, dtype=torch.int8)
        V = torch.randint(-127, 128, (r, d), generator=g, dtype=torch.int8)
        u_scale = (torch.rand(r, generator=g) + 0.5) / (127 * d**0.5)
        v_scale = (torch.rand(d, generator=g) + 0.5) / (127 * r**0.5)
        return U, V, b, mu, u_scale, v_scale
    U = (torch.randn(d, r, generator=g) / d**0.5).to(dtype)
    V = (torch.randn(r, d, generator=g) / r**0.5).to(dtype)
    return U, V, b, mu, None, None


def check(x, U, V, b, mu, u_scale=None, v_scale=None):
    got = linear_block(x, U, V, b, mu, u_scale, v_scale)
    want = linear_block_reference(x, U, V, b, mu, u_scale, v_scale)
    assert got.dtype == x.dtype and got.shape == x.shape
    if got.numel():
        err = rel_error(got, want)
        assert err <= TOL[x.dtype], f"relative error {err:.3g} > {TOL[x.dtype]:.0e}"
    return got


# ------------------------------------------------------------------------------------------------------------
# Correctness against the reference.
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("factor_dtype", FACTOR_DTYPES, ids=str)
@pytest.mark.parametrize("d,r", [(64, 8), (100, 13), (576, 72)])
def test_every_dtype_and_row_count(isa, factor_dtype, d, r):
    U, V, b, mu, us, vs = make_factors(d, r, factor_dtype, seed=d + r)
    for x_dtype in X_DTYPES:
        for rows in ROW_COUNTS:
            x = torch.randn(rows, d, generator=gen(rows)).to(x_dtype)
            check(x, U, V, b, mu, us, vs)


@pytest.mark.parametrize("factor_dtype", (torch.float32, torch.bfloat16, torch.int8), ids=str)
@pytest.mark.parametrize("rows", [1, 3, 20])
def test_mistral_size(factor_dtype, rows):
    U, V, b, mu, us, vs = make_factors(4096, 512, factor_dtype, seed=3)
    check(torch.randn(rows, 4096, generator=gen(rows)), U, V, b, mu, us, vs)


def test_bias_and_mu_dtypes_and_leading_dims():
    U, V, b, mu, _, _ = make_factors(96, 16, torch.float32)
    x = torch.randn(2, 3, 96, generator=gen(1)).to(torch.bfloat16)
    check(x, U, V, b.to(torch.bfloat16), mu.to(torch.float16))


@pytest.mark.parametrize("rows", [1, 4, 30])
def test_layouts(rows):
    U, V, b, mu, _, _ = make_factors(64, 8, torch.float32)
    wide = torch.randn(rows, 200, generator=gen(2))
    check(wide[:, 10:74], U, V, b, mu)  # rows of a wider buffer: read in place
    check(torch.randn(64, rows, generator=gen(3)).t(), U, V, b, mu)  # transposed: copied first
    check(torch.randn(rows, 0, 64), U, V, b, mu)  # no rows
    # Non-contiguous factors are made contiguous.
    check(torch.randn(rows, 64, generator=gen(4)), U.t().contiguous().t(), V.t().contiguous().t(), b, mu)


def test_mapping_is_the_formula():
    """The kernel and the reference agree with the formula written out with float64 arithmetic."""
    U, V, b, mu, _, _ = make_factors(48, 6, torch.float32)
    x = torch.randn(7, 48, generator=gen(5))
    want = (x.double() + (x.double() - mu.double()) @ U.double() @ V.double() + b.double()).float()
    torch.testing.assert_close(linear_block(x, U, V, b, mu), want, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------------------------------------
# Autograd, opcheck, torch.compile.
# ------------------------------------------------------------------------------------------------------------


def test_autograd_matches_reference():
    U, V, b, mu, _, _ = make_factors(40, 5, torch.float32)
    x = torch.randn(6, 40, generator=gen(6), requires_grad=True)
    b, mu = b.clone().requires_grad_(), mu.clone().requires_grad_()
    weights = torch.randn(6, 40, generator=gen(7))
    (linear_block(x, U, V, b, mu) * weights).sum().backward()
    got = (x.grad, b.grad, mu.grad)
    x2, b2, mu2 = (t.detach().clone().requires_grad_() for t in (x, b, mu))
    (linear_block_reference(x2, U, V, b2, mu2) * weights).sum().backward()
    for g, w in zip(got, (x2.grad, b2.grad, mu2.grad)):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


def test_autograd_int8_factors():
    U, V, b, mu, us, vs = make_factors(32, 4, torch.int8)
    x = torch.randn(3, 32, generator=gen(8), requires_grad=True)
    linear_block(x, U, V, b, mu, us, vs).sum().backward()
    x2 = x.detach().clone().requires_grad_()
    linear_block_reference(x2, U, V, b, mu, us, vs).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("factor_dtype", (torch.float32, torch.int8), ids=str)
def test_opcheck(factor_dtype):
    U, V, b, mu, us, vs = make_factors(32, 4, factor_dtype)
    for rows in (1, 12):
        x = torch.randn(rows, 32, generator=gen(rows), requires_grad=True)
        torch.library.opcheck(torch.ops.tcompress.linear_block.default, (x, U, V, b, mu, us, vs))


def test_torch_compile_fullgraph():
    U, V, b, mu, _, _ = make_factors(64, 8, torch.float32)

    def f(x):
        return linear_block(x * 2, U, V, b, mu) + 1

    x = torch.randn(5, 64, generator=gen(9))
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), f(x))


# ------------------------------------------------------------------------------------------------------------
# Bad input: clear errors.
# ------------------------------------------------------------------------------------------------------------


def test_bad_shapes_and_dtypes():
    U, V, b, mu, _, _ = make_factors(64, 8, torch.float32)
    x = torch.randn(2, 64)
    with pytest.raises(ValueError, match=r"x has inner size 63 but U \(64, 8\) expects d = 64"):
        linear_block(torch.randn(2, 63), U, V, b, mu)
    with pytest.raises(ValueError, match=r"V must have shape \(r, d\) = \(8, 64\)"):
        linear_block(x, U, V[:, :60], b, mu)
    with pytest.raises(ValueError, match=r"U must be \(d, r\) and V \(r, d\)"):
        linear_block(x, U[None], V, b, mu)
    with pytest.raises(ValueError, match=r"b must have shape \(d,\) = \(64,\)"):
        linear_block(x, U, V, b[:5], mu)
    with pytest.raises(ValueError, match=r"mu must have shape \(d,\) = \(64,\)"):
        linear_block(x, U, V, b, mu[None])
    with pytest.raises(TypeError, match="x must have dtype float32, float16 or bfloat16"):
        linear_block(x.to(torch.int32), U, V, b, mu)
    with pytest.raises(TypeError, match="U must have dtype float32, bfloat16, float16 or int8; got torch.float64"):
        linear_block(x, U.double(), V.double(), b, mu)
    with pytest.raises(TypeError, match="U and V must have the same dtype"):
        linear_block(x, U, V.to(torch.bfloat16), b, mu)
    with pytest.raises(ValueError, match="at least one dimension"):
        linear_block(torch.tensor(1.0), U, V, b, mu)


def test_bad_scales():
    U, V, b, mu, us, vs = make_factors(64, 8, torch.int8)
    x = torch.randn(2, 64)
    with pytest.raises(ValueError, match=r"int8 factors need per-column scales; u_scale \(8,\) is missing"):
        linear_block(x, U, V, b, mu)
    with pytest.raises(ValueError, match=r"v_scale must have shape \(64,\)"):
        linear_block(x, U, V, b, mu, us, vs[:8])
    Uf, Vf, _, _, _, _ = make_factors(64, 8, torch.float32)
    with pytest.raises(ValueError, match="u_scale/v_scale apply to int8 factors only"):
        linear_block(x, Uf, Vf, b, mu, us, vs)


def test_bad_device():
    U, V, b, mu, _, _ = make_factors(16, 2, torch.float32)
    with pytest.raises(ValueError, match="mu must be on x's device cpu; got meta"):
        linear_block(torch.randn(2, 16), U, V, b, mu.to("meta"))


def test_native_rejects_overlapping_output():
    """The native entry point re-checks its arguments: y aliasing x is refused with the call in the message."""
    native = _native.cpu_native()
    if native is None:
        pytest.skip("tcompress._C is not built")
    U, V, b, mu, _, _ = make_factors(16, 2, torch.float32)
    x = torch.randn(2, 16)
    with pytest.raises(Exception, match=r"linear_block\(M=2, d=16, r=2"):
        native.linear_block(x.data_ptr(), 0, 2, 16, 16, U.data_ptr(), V.data_ptr(), 0, 2, 0, 0, b.data_ptr(), 0,
                            mu.data_ptr(), 0, x.data_ptr(), 16, 1)  # fmt: skip


# ------------------------------------------------------------------------------------------------------------
# CUDA (skips without a device).
# ------------------------------------------------------------------------------------------------------------


def cuda_native():
    """tcompress._cuda when it was built with the linear_block kernel, else None."""
    native = _native._cuda
    return native if native is not None and hasattr(native, "linear_block") else None


def check_cuda(device, x, U, V, b, mu, u_scale=None, v_scale=None):
    """check() on `device`, refusing a silent fallback to the pure-torch reference (it warns)."""
    to = lambda t: None if t is None else t.to(device)  # noqa: E731
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = check(to(x), to(U), to(V), to(b), to(mu), to(u_scale), to(v_scale))
    assert got.device.type == "cuda"
    return got


@pytest.mark.parametrize("factor_dtype", FACTOR_DTYPES, ids=str)
def test_cuda_matches_reference(cuda_device, factor_dtype):
    U, V, b, mu, us, vs = make_factors(576, 72, factor_dtype)
    for x_dtype in X_DTYPES:
        for rows in (1, 3, 8, 9, 130):
            x = torch.randn(rows, 576, generator=gen(rows)).to(x_dtype)
            check_cuda(cuda_device, x, U, V, b, mu, us, vs)


@pytest.mark.parametrize("factor_dtype", FACTOR_DTYPES, ids=str)
@pytest.mark.parametrize("d,r", [(100, 13), (4096, 512)])
def test_cuda_awkward_and_mistral_sizes(cuda_device, factor_dtype, d, r):
    """Odd sizes (partial column and K tiles) and d = 4096, where the decode path splits K over many blocks."""
    U, V, b, mu, us, vs = make_factors(d, r, factor_dtype, seed=d + r)
    for x_dtype in (torch.float32, torch.bfloat16):
        for rows in (1, 5, GEMV_MAX_M, GEMV_MAX_M + 1, 70):
            check_cuda(cuda_device, torch.randn(rows, d, generator=gen(rows)).to(x_dtype), U, V, b, mu, us, vs)


@pytest.mark.parametrize("rows", [1, 4, 30])
def test_cuda_layouts_and_dtypes(cuda_device, rows):
    U, V, b, mu, _, _ = make_factors(64, 8, torch.float32)
    wide = torch.randn(rows, 200, generator=gen(2)).to(cuda_device)
    check_cuda(cuda_device, wide[:, 10:74], U, V, b, mu)  # rows of a wider buffer (already there): read in place
    check_cuda(cuda_device, torch.randn(64, rows, generator=gen(3)).t(), U, V, b, mu)  # transposed: copied first
    check_cuda(cuda_device, torch.randn(rows, 0, 64), U, V, b, mu)  # no rows
    x = torch.randn(2, rows, 64, generator=gen(4)).to(torch.float16)
    check_cuda(cuda_device, x, U, V, b.to(torch.bfloat16), mu.to(torch.float16))  # leading dims, b/mu dtypes


def test_cuda_more_row_tiles_than_the_grid_has_rows(cuda_device):
    """More than 65535 row tiles of 64: the GEMM blocks loop over the row tiles beyond the grid."""
    U, V, b, mu, _, _ = make_factors(8, 2, torch.float32)
    check_cuda(cuda_device, torch.randn(65535 * 64 + 65, 8, generator=gen(10)), U, V, b, mu)


def test_cuda_side_stream_and_current_device(cuda_device):
    """The kernel runs on the caller's current stream and leaves the current device as it was."""
    U, V, b, mu, us, vs = make_factors(576, 72, torch.int8)
    x = torch.randn(3, 576, generator=gen(11))
    want = linear_block_reference(x, U, V, b, mu, us, vs)
    args = [t.to(cuda_device) for t in (x, U, V, b, mu, us, vs)]
    before = torch.cuda.current_device()
    stream = torch.cuda.Stream(cuda_device)
    stream.wait_stream(torch.cuda.current_stream(cuda_device))
    with torch.cuda.stream(stream):
        got = linear_block(*args)
    torch.cuda.current_stream(cuda_device).wait_stream(stream)
    assert torch.cuda.current_device() == before
    assert rel_error(got.cpu(), want) <= TOL[torch.float32]


def test_cuda_opcheck(cuda_device):
    U, V, b, mu, us, vs = make_factors(32, 4, torch.int8)
    to = lambda t: t.to(cuda_device)  # noqa: E731
    for rows in (1, 12):
        x = torch.randn(rows, 32, generator=gen(rows)).to(cuda_device).requires_grad_()
        torch.library.opcheck(torch.ops.tcompress.linear_block.default, (x, *map(to, (U, V, b, mu, us, vs))))


@pytest.mark.skipif(cuda_native() is None, reason="tcompress._cuda is not built with linear_block")
def test_cuda_entry_point_checks_arguments():
    """The native CUDA entry point re-checks its arguments before touching a device, so this runs without a GPU:
    the pointers are made up and never dereferenced."""
    C = cuda_native()
    args = dict(x=1 << 20, x_dtype=0, M=2, d=16, x_row_stride=16, U=2 << 20, V=3 << 20, factor_dtype=0, r=2,
                u_scale=0, v_scale=0, b=4 << 20, b_dtype=0, mu=5 << 20, mu_dtype=0, y=6 << 20, y_row_stride=16,
                device=0, stream=0)  # fmt: skip
    call = r"tcompress\._cuda\.linear_block\(M=2, d=16, r=2"
    with pytest.raises(ValueError, match=call + r".*invalid argument"):
        C.linear_block(**{**args, "y": args["x"]})  # y overlaps x
    with pytest.raises(ValueError, match=r"invalid argument"):
        C.linear_block(**{**args, "x": args["x"] + 2})  # fp32 x not 4-byte aligned
    with pytest.raises(ValueError, match=r"invalid argument"):
        C.linear_block(**{**args, "u_scale": 7 << 20, "v_scale": 8 << 20})  # scales with float factors
    with pytest.raises(ValueError, match=r"a required pointer is null"):
        C.linear_block(**{**args, "factor_dtype": C.LINEAR_BLOCK_INT8})  # int8 factors without scales
    with pytest.raises(ValueError, match=r"unknown dtype code"):
        C.linear_block(**{**args, "x_dtype": 9})
    with pytest.raises(ValueError, match=r"invalid row stride"):
        C.linear_block(**{**args, "x_row_stride": 15})
    with pytest.raises(ValueError, match=r"unsupported size"):
        C.linear_block(**{**args, "r": 0})
    C.linear_block(**{**args, "M": 0})  # no rows: nothing to do, no device needed
    if C.device_count() == 0:
        with pytest.raises(RuntimeError, match="no CUDA device"):
            C.linear_block(**args)
