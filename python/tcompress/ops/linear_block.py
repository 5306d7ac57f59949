"""Fused linear block substitution: ``y = x + ((x - mu) @ U) @ V + b`` in one pass over the rows.

Shapes: x (..., d); U (d, r); V (r, d); b (d,); mu (d,). Factors float32/bfloat16/float16, or int8 with per-column
scales: ``U_deq = U * u_scale[None, :]`` (u_scale (r,)), ``V_deq = V * v_scale[None, :]`` (v_scale (d,)).

Layout: the kernels take the factors exactly in these documented shapes, row-major; no packed or transposed copy
is needed. Both products broadcast one activation and stream a contiguous factor row (``t += a_k * U[k, :]``,
``y += t_i * V[i, :]``), which is the natural layout of a broadcast-FMA kernel; for many rows the CPU kernel widens
the factors into fp32 panels once per call (see csrc/cpu/linear_block_kernel.h).

Registered op (namespace ``tcompress``; see :mod:`._op` for how every op is registered and called):

- ``linear_block(Tensor x, Tensor U, Tensor V, Tensor b, Tensor mu, Tensor? u_scale, Tensor? v_scale) -> Tensor``
  (differentiable with respect to x, b and mu; the factors are a fixed, fitted map)
"""

from __future__ import annotations

import torch

from . import _common
from ._op import Op, OpDeclaration

_OP = "tcompress.ops.linear_block"
_FACTOR_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.int8)
_INT8_FACTOR_CODE = 3  # TC_LINEAR_BLOCK_INT8 of csrc/include/tcompress/linear_block.h


def linear_block_reference(
    x: torch.Tensor,
    U: torch.Tensor,
    V: torch.Tensor,
    b: torch.Tensor,
    mu: torch.Tensor,
    u_scale: torch.Tensor | None = None,
    v_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """x (..., d) -> (..., d) in x's dtype: ``x + ((x - mu) @ U) @ V + b`` computed in fp32."""
    u = U.to(torch.float32) if u_scale is None else U.to(torch.float32) * u_scale.to(torch.float32)[None, :]
    v = V.to(torch.float32) if v_scale is None else V.to(torch.float32) * v_scale.to(torch.float32)[None, :]
    xf = x.to(torch.float32)
    y = xf + ((xf - mu.to(torch.float32)) @ u) @ v + b.to(torch.float32)
    return y.to(x.dtype)


# ---------------------------------------------------------------------------------------------------------------
# Checks: everything the native kernels rely on, with messages naming the argument, the expectation and the value.
# ---------------------------------------------------------------------------------------------------------------


def _check_factors(op, device, U, V, b, mu, u_scale, v_scale) -> None:
    """Validates the fitted map's tensors on ``device`` (everything but x)."""
    for name, t in (("U", U), ("V", V), ("b", b), ("mu", mu), ("u_scale", u_scale), ("v_scale", v_scale)):
        if t is None and name in ("u_scale", "v_scale"):
            continue
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{op}: {name} must be a torch.Tensor; got {type(t).__name__}")
        if t.device != device:
            raise ValueError(f"{op}: {name} must be on x's device {device}; got {t.device}")
    for name, t in (("U", U), ("V", V)):
        if t.dtype not in _FACTOR_DTYPES:
            raise TypeError(f"{op}: {name} must have dtype float32, bfloat16, float16 or int8; got {t.dtype}")
    if U.dtype != V.dtype:
        raise TypeError(f"{op}: U and V must have the same dtype; got U {U.dtype}, V {V.dtype}")
    if U.dim() != 2 or V.dim() != 2:
        raise ValueError(f"{op}: U must be (d, r) and V (r, d); got U {tuple(U.shape)}, V {tuple(V.shape)}")
    d, r = U.shape
    if d == 0 or r == 0:
        raise ValueError(f"{op}: U must not be empty; got shape {tuple(U.shape)}")
    if tuple(V.shape) != (r, d):
        raise ValueError(
            f"{op}: V must have shape (r, d) = ({r}, {d}) to match U {tuple(U.shape)}; got {tuple(V.shape)}"
        )
    for name, t in (("b", b), ("mu", mu)):
        _common.check_float(op, name, t)
        if tuple(t.shape) != (d,):
            raise ValueError(f"{op}: {name} must have shape (d,) = ({d},); got {tuple(t.shape)}")
    if U.dtype == torch.int8:
        for name, t, n in (("u_scale", u_scale, r), ("v_scale", v_scale, d)):
            if t is None:
                raise ValueError(f"{op}: int8 factors need per-column scales; {name} ({n},) is missing")
            _common.check_float(op, name, t)
            if tuple(t.shape) != (n,):
                raise ValueError(f"{op}: {name} must have shape ({n},) for U {tuple(U.shape)}; got {tuple(t.shape)}")
    elif u_scale is not None or v_scale is not None:
        raise ValueError(f"{op}: u_scale/v_scale apply to int8 factors only; the factors are {U.dtype}")


# ---------------------------------------------------------------------------------------------------------------
# The declaration: schema arguments (x, U, V, b, mu, u_scale, v_scale).
# ---------------------------------------------------------------------------------------------------------------


def _check(label, x, U, V, b, mu, u_scale, v_scale) -> None:
    _common.check_float(label, "x", x)
    _common.check_at_least_1d(label, "x", x)
    _check_factors(label, x.device, U, V, b, mu, u_scale, v_scale)
    if x.shape[-1] != U.shape[0]:
        raise ValueError(f"{label}: x has inner size {x.shape[-1]} but U {tuple(U.shape)} expects d = {U.shape[0]}")


def _fake(_, x, *args):
    return x.new_empty(x.shape)


def _reference(*args):
    return linear_block_reference(*args).contiguous()


class _Operands:
    """The factors as the native entry points take them: contiguous tensors (kept alive here), pointers, codes."""

    __slots__ = ("tensors", "d", "args")

    def __init__(self, U, V, b, mu, u_scale, v_scale):
        d, r = U.shape
        U, V, b, mu = U.contiguous(), V.contiguous(), b.contiguous(), mu.contiguous()
        if u_scale is not None:
            u_scale = u_scale.to(torch.float32).contiguous()
            v_scale = v_scale.to(torch.float32).contiguous()
        self.tensors = (U, V, b, mu, u_scale, v_scale)
        self.d = d
        factor_code = _INT8_FACTOR_CODE if U.dtype == torch.int8 else _common.dtype_code(U.dtype)
        # The arguments between x's (pointer, dtype, rows, d, row stride) and y's.
        self.args = (U.data_ptr(), V.data_ptr(), factor_code, r, 0 if u_scale is None else u_scale.data_ptr(),
                     0 if v_scale is None else v_scale.data_ptr(), b.data_ptr(), _common.dtype_code(b.dtype),
                     mu.data_ptr(), _common.dtype_code(mu.dtype))  # fmt: skip

    def launch(self, native, x: torch.Tensor) -> torch.Tensor:
        y = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        if y.numel() == 0:
            return y
        x, rows, x_stride = _common.rows_of(x)
        d = self.d
        args = (x.data_ptr(), _common.dtype_code(x.dtype), rows, d, x_stride, *self.args, y.data_ptr(), d)
        _common.call_native(native.linear_block, args, x)
        return y


def _launch(native, _, x, U, V, b, mu, u_scale, v_scale) -> torch.Tensor:
    return _Operands(U, V, b, mu, u_scale, v_scale).launch(native, x)


def _setup_context(ctx, inputs, output) -> None:
    x, U, V, b, mu, u_scale, v_scale = inputs
    ctx.save_for_backward(U, V, u_scale, v_scale)
    ctx.dtypes = (x.dtype, b.dtype, mu.dtype)


def _backward(ctx, grad: torch.Tensor):
    # y = x + (x - mu) M + b with M = U V fixed  =>  dL/dx = g + g M^T, dL/dmu = -sum(g M^T), dL/db = sum(g).
    U, V, u_scale, v_scale = ctx.saved_tensors
    x_dtype, b_dtype, mu_dtype = ctx.dtypes
    u = U.to(torch.float32) if u_scale is None else U.to(torch.float32) * u_scale.to(torch.float32)[None, :]
    v = V.to(torch.float32) if v_scale is None else V.to(torch.float32) * v_scale.to(torch.float32)[None, :]
    g = grad.to(torch.float32)
    through = (g @ v.t()) @ u.t()  # g M^T without forming the d x d matrix M
    grad_x = (g + through).to(x_dtype) if ctx.needs_input_grad[0] else None
    grad_b = g.reshape(-1, g.shape[-1]).sum(0).to(b_dtype) if ctx.needs_input_grad[3] else None
    grad_mu = (-through.reshape(-1, g.shape[-1]).sum(0)).to(mu_dtype) if ctx.needs_input_grad[4] else None
    return grad_x, None, None, grad_b, grad_mu, None, None


LINEAR_BLOCK = Op(
    OpDeclaration(
        name="linear_block",
        schema="(Tensor x, Tensor U, Tensor V, Tensor b, Tensor mu, Tensor? u_scale, Tensor? v_scale) -> Tensor",
        check=_check,
        fake=_fake,
        reference=_reference,
        launch=_launch,
        backward=_backward,
        setup_context=_setup_context,
        differentiable=(0, 3, 4),
    )
)


# ---------------------------------------------------------------------------------------------------------------
# Public API.
# ---------------------------------------------------------------------------------------------------------------


def linear_block(
    x: torch.Tensor,
    U: torch.Tensor,
    V: torch.Tensor,
    b: torch.Tensor,
    mu: torch.Tensor,
    u_scale: torch.Tensor | None = None,
    v_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """x (..., d) -> (..., d): ``x + ((x - mu) @ U) @ V + b``, fp32 accumulation, output in x's dtype.

    Args:
        x: float32, float16 or bfloat16 on CPU or CUDA, any leading dimensions and any layout (a copy is made only
            when its rows cannot be addressed with one stride).
        U: (d, r) and V: (r, d), both float32, bfloat16, float16, or both int8 codes (the dequantized factors are
            ``U * u_scale[None, :]`` and ``V * v_scale[None, :]``). Read in this layout; no packing needed.
        b, mu: (d,) float tensors (any float dtype).
        u_scale, v_scale: (r,) and (d,) float per-column scales, required for int8 factors, None otherwise.

    Returns:
        A new tensor of x's shape and dtype. Differentiable with respect to x, b and mu (the factors get no grad).

    Raises:
        TypeError: a wrong dtype (x, b, mu not floating; factors not float/int8; U and V of different dtypes).
        ValueError: inconsistent shapes (the message names them), missing or superfluous scales, tensors on
            different devices.
    """
    return LINEAR_BLOCK.call(_OP, x, U, V, b, mu, u_scale, v_scale)


class PreparedLinearBlock:
    """The fitted map's tensors, checked and laid out once: a call checks only ``x``.

    For :class:`~tcompress.nn.LinearBlock`, which prepares again whenever a buffer is replaced (``.to()``, a load
    that assigns, offload hooks); values changed in place need nothing. Args and errors as :func:`linear_block`
    without x.
    """

    __slots__ = ("device", "d", "_operands", "_schema_args")

    def __init__(self, U, V, b, mu, u_scale=None, v_scale=None):
        self.device = U.device if isinstance(U, torch.Tensor) else None
        _check_factors(_OP, self.device, U, V, b, mu, u_scale, v_scale)
        self.d = U.shape[0]
        native_device = self.device.type in ("cpu", "cuda")
        self._operands = _Operands(U, V, b, mu, u_scale, v_scale) if native_device else None
        self._schema_args = (U, V, b, mu, u_scale, v_scale)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., d) -> (..., d): as :func:`linear_block` on the prepared map."""
        if not (type(x) is torch.Tensor and x.dtype in _common.FLOAT_DTYPES and x.dim() and x.shape[-1] == self.d
                and x.device == self.device):  # fmt: skip
            _check(_OP, x, *self._schema_args)
        args = self._schema_args
        return LINEAR_BLOCK.call_prepared(self._operands, x, args, args[2], args[3])
