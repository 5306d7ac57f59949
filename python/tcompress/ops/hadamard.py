"""The Hadamard transform op: ``x (..., n) -> x @ H_n * scale`` for n = K * 2^m.

H_n = kron(H_K, H_{2^m}) with H_{2^m} the Sylvester matrix and H_K a small Hadamard matrix from
:mod:`tcompress.hadamard.constructions`. With the default scale 1/sqrt(n) the transform is orthonormal, so its
inverse is the *transposed* transform (``transpose=True``); H_{2^m} is symmetric, so for powers of two the
transform is its own inverse.

Registered ops (namespace ``tcompress``; see :mod:`._op` for how every op is registered and called):

- ``hadamard(Tensor x, float scale, bool transpose) -> Tensor`` (differentiable)
- ``hadamard_out(Tensor x, float scale, bool transpose, Tensor(a!) out) -> ()``
- ``hadamard_(Tensor(a!) x, float scale, bool transpose) -> ()``
"""

from __future__ import annotations

import functools
import math

import torch

from .. import _native
from ..hadamard.constructions import base_hadamard, factor_size
from . import _common
from ._op import Op, OpDeclaration

_OP = "tcompress.ops.hadamard_transform"


@functools.lru_cache(maxsize=256)
def _factor_size_cached(n: int) -> tuple[int, int]:
    return factor_size(n)


def _factor(op: str, n: int) -> tuple[int, int]:
    try:
        return _factor_size_cached(n)
    except ValueError as exc:
        raise ValueError(f"{op}: {exc}") from None


def _check_input(op: str, x: torch.Tensor) -> None:
    _common.check_float(op, "x", x)
    _common.check_at_least_1d(op, "x", x)
    n = x.shape[-1]
    # Under dynamic shapes n is symbolic while tracing; the kernel checks the concrete size when it runs.
    if isinstance(n, int):
        _factor(op, n)


@functools.cache
def _hk_cpu(k: int, transpose: bool) -> torch.Tensor:
    """The k x k matrix (or its transpose) as a contiguous fp32 CPU tensor, kept alive for native calls."""
    hk = torch.from_numpy(base_hadamard(k).astype("float32"))
    return (hk.t() if transpose else hk).contiguous()


@functools.cache
def _hk_on(k: int, transpose: bool, device: torch.device) -> torch.Tensor:
    return _hk_cpu(k, transpose).to(device)


# ---------------------------------------------------------------------------------------------------------------
# Pure-torch reference: log2(p) butterfly passes written with reshapes (not the O(n^2) matmul), then the K part.
# ---------------------------------------------------------------------------------------------------------------


def hadamard_reference(x: torch.Tensor, scale: float | None = None, transpose: bool = False) -> torch.Tensor:
    """x (..., n) -> (..., n): ``x @ H_n * scale`` (``H_n^T`` with ``transpose``), in fp32, cast back to x's dtype.

    The test oracle and the fallback of the native kernels. Same contract as :func:`hadamard_transform`.
    """
    n = x.shape[-1]
    k, p = _factor("hadamard_reference", n)
    scale = 1.0 / math.sqrt(n) if scale is None else float(scale)
    y = x.to(torch.float32).reshape(-1, k, p)
    h = 1
    while h < p:
        # Pairs (j, j + h) inside each block of 2h elements: the Sylvester butterfly at distance h.
        y = y.reshape(-1, k, p // (2 * h), 2, h)
        a, b = y[..., 0, :], y[..., 1, :]
        y = torch.stack((a + b, a - b), dim=-2)
        h *= 2
    y = y.reshape(-1, k, p)
    if k > 1:
        hk = _hk_on(k, transpose, y.device)
        # Y[c, b] = sum_a hk[a, c] Z[a, b] (hk already transposed when asked).
        y = torch.einsum("rap,ac->rcp", y, hk)
    return (y * scale).reshape(x.shape).to(x.dtype)


# ---------------------------------------------------------------------------------------------------------------
# Native launch. x and out are validated tensors of the same shape/dtype/device.
# ---------------------------------------------------------------------------------------------------------------


def _launch(native, x: torch.Tensor, out: torch.Tensor, scale: float, transpose: bool, fresh_out: bool = False) -> None:
    """Writes ``x @ H * scale`` into ``out`` (same shape, dtype and device; out without self-overlap) through
    ``native`` (``_C`` for CPU tensors, ``_cuda`` for CUDA ones).

    ``out`` may be ``x`` itself (same memory and layout: transformed in place) or overlap it in any other way
    (then the result goes through a temporary). ``fresh_out``: out was just allocated contiguous (no aliasing to
    look for; the checks cost more than a batch-1 transform).
    """
    n = x.shape[-1]
    if x.numel() == 0:
        return
    k, _ = _factor_size_cached(n)
    layout = _common.row_layout(out) if not fresh_out else (out.numel() // n, n)
    in_place = False if fresh_out else _common.same_memory(x, out)
    if layout is None or (not fresh_out and not in_place and _common.overlaps(x, out)):
        # out cannot be written row by row (e.g. transposed), or it shares memory with x in another layout:
        # compute into a fresh buffer, then copy.
        tmp = torch.empty(out.shape, dtype=out.dtype, device=out.device)
        _launch(native, x, tmp, scale, transpose)
        out.copy_(tmp)
        return
    rows, out_stride = layout
    if in_place:
        src, x_stride = out, out_stride
    else:
        src, _, x_stride = _common.rows_of(x)
    if x.device.type == "cpu":
        hk = _hk_cpu(k, transpose) if k > 1 else None
    else:
        max_n = native.hadamard_max_n(x.device.index)
        if n > max_n:
            _native.warn_once(
                f"hadamard-n{n}",
                f"{_OP}: n={n} exceeds the longest row the CUDA kernel holds in shared memory on {x.device} "
                f"({max_n}); using the pure-torch reference",
            )
            out.copy_(hadamard_reference(x, scale, transpose))
            return
        hk = _hk_on(k, transpose, x.device) if k > 1 else None
    # The arguments both native entry points share (see csrc/include/tcompress/hadamard.h).
    args = (src.data_ptr(), out.data_ptr(), rows, n, x_stride, out_stride, _common.dtype_code(x.dtype),
            hk.data_ptr() if hk is not None else 0, k, scale)  # fmt: skip
    _common.call_native(native.hadamard, args, x)


# ---------------------------------------------------------------------------------------------------------------
# The declarations: a functional op, an out= op and an in-place op, all (x, scale, transpose[, out]).
# ---------------------------------------------------------------------------------------------------------------


def _check_writable_out(label, x, scale, transpose, out) -> None:
    _check_input(label, x)
    _common.check_writable(label, "out", out)


def _check_writable_x(label, x, scale, transpose) -> None:
    _check_input(label, x)
    _common.check_writable(label, "x", x)


def _functional(native, _, x, scale, transpose):
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    _launch(native, x, out, scale, transpose, fresh_out=True)
    return out


def _reference_out(x, scale, transpose, out) -> None:
    out.copy_(hadamard_reference(x, scale, transpose))


def _reference_inplace(x, scale, transpose) -> None:
    x.copy_(hadamard_reference(x, scale, transpose))


def _setup_context(ctx, inputs, output) -> None:
    _, ctx.scale, ctx.transpose = inputs


def _backward(ctx, grad: torch.Tensor):
    # y = x H s  =>  dL/dx = dL/dy H^T s: the same op with the transpose flag flipped.
    return HADAMARD.dispatch(grad, ctx.scale, not ctx.transpose), None, None


HADAMARD = Op(
    OpDeclaration(
        name="hadamard",
        schema="(Tensor x, float scale, bool transpose) -> Tensor",
        check=lambda label, x, scale, transpose: _check_input(label, x),
        fake=lambda _, x, scale, transpose: x.new_empty(x.shape),
        reference=lambda x, scale, transpose: hadamard_reference(x, scale, transpose).contiguous(),
        launch=_functional,
        backward=_backward,
        setup_context=_setup_context,
    )
)
HADAMARD_OUT = Op(
    OpDeclaration(
        name="hadamard_out",
        schema="(Tensor x, float scale, bool transpose, Tensor(a!) out) -> ()",
        check=_check_writable_out,
        fake=lambda *_: None,
        reference=_reference_out,
        launch=lambda native, _, x, scale, transpose, out: _launch(native, x, out, scale, transpose),
        mutates_args=("out",),
        differentiable=(),
    )
)
HADAMARD_INPLACE = Op(
    OpDeclaration(
        name="hadamard_",
        schema="(Tensor(a!) x, float scale, bool transpose) -> ()",
        check=_check_writable_x,
        fake=lambda *_: None,
        reference=_reference_inplace,
        launch=lambda native, _, x, scale, transpose: _launch(native, x, x, scale, transpose),
        mutates_args=("x",),
        differentiable=(),
    )
)


# ---------------------------------------------------------------------------------------------------------------
# Public API.
# ---------------------------------------------------------------------------------------------------------------


def _resolve_scale(op: str, n: int, scale: float | None) -> float:
    return 1.0 / math.sqrt(n) if scale is None else _common.check_finite_scale(op, scale)


def _scale_arg(op: str, x, scale: float | None) -> float:
    """The schema's scale before x is checked (the op's check then names what is wrong with x)."""
    if scale is None:
        n = x.shape[-1] if isinstance(x, torch.Tensor) and x.dim() else 0
        return 1.0 / math.sqrt(n) if n > 0 else 1.0
    return _common.check_finite_scale(op, scale)


def _check_no_grad(op: str, *tensors: torch.Tensor) -> None:
    if torch.is_grad_enabled() and any(t.requires_grad for t in tensors):
        raise RuntimeError(
            f"{op}: out= and in-place transforms are not differentiable; call "
            "tcompress.ops.hadamard_transform(x) without out= to get gradients"
        )


def hadamard_transform(
    x: torch.Tensor, scale: float | None = None, out: torch.Tensor | None = None, *, transpose: bool = False
) -> torch.Tensor:
    """x (..., n) -> (..., n): ``x @ H_n * scale``, fp32 arithmetic, result in x's dtype.

    Args:
        x: float32, float16 or bfloat16 tensor on CPU or CUDA; any layout (a copy is made only when its rows
            cannot be addressed with one stride). n = x.shape[-1] must be K * 2^m for a supported K
            (see ``tcompress.hadamard.constructions.SUPPORTED_FACTORS``).
        scale: multiplies the result; default 1/sqrt(n), which makes the transform orthonormal.
        out: optional preallocated tensor of x's shape, dtype and device to write into, in any layout whose
            elements do not share memory. It may be x itself (then the transform is in place) or overlap x in
            another way (then the result goes through a temporary).
        transpose: apply H_n^T instead (the inverse of the orthonormal transform; H_n is symmetric when n is a
            power of two).

    Returns:
        A new tensor, or ``out`` when given. Differentiable when ``out`` is None.

    Raises:
        TypeError: x is not fp32/fp16/bf16, or out has another dtype.
        ValueError: n has no Hadamard construction (the message lists the supported K), out has another shape
            or device, out is expanded (elements sharing memory), or scale is not a finite float32.
    """
    if out is None:
        return HADAMARD.call(_OP, x, _scale_arg(_OP, x, scale), bool(transpose))
    _check_input(_OP, x)
    scale = _resolve_scale(_OP, x.shape[-1], scale)
    _common.check_like(_OP, "out", out, "x", x)
    _check_no_grad(_OP, x, out)
    # No data_ptr() here: this function is traced by torch.compile. The kernels sort out aliasing.
    if out is x:
        torch.ops.tcompress.hadamard_(out, scale, bool(transpose))
    else:
        torch.ops.tcompress.hadamard_out(x, scale, bool(transpose), out)
    return out


def hadamard_transform_(x: torch.Tensor, scale: float | None = None, *, transpose: bool = False) -> torch.Tensor:
    """x (..., n) -> x, transformed in place: ``x <- x @ H_n * scale``. Same arguments as :func:`hadamard_transform`."""
    op = "tcompress.ops.hadamard_transform_"
    _check_input(op, x)
    scale = _resolve_scale(op, x.shape[-1], scale)
    _check_no_grad(op, x)
    torch.ops.tcompress.hadamard_(x, scale, bool(transpose))
    return x
