"""Matrix multiplication with packed int4/int8 weights: ``y = x @ dequant(W)^T + bias``.

Weight format: see :mod:`tcompress.ops.quantize` (unsigned codes, ``(u - z) * s`` per group, int4 packed two per
byte with the even column in the low nibble).

Registered op (namespace ``tcompress``), with a fake (meta) implementation, a CPU kernel (``_C``), a CUDA kernel
(``_cuda``) and a pure-torch reference, which also serves other devices and builds without native code:

- ``qlinear(Tensor x, Tensor qweight, Tensor scales, Tensor? zeros, int bits, int group_size, Tensor? bias)
  -> Tensor`` (group_size 0 or -1: one group per output channel; differentiable with respect to x and bias)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import _common
from .quantize import SCALE_DTYPES, dequantize_reference, unpack_int4_reference

_OP = "tcompress.ops.qlinear"


def qlinear_reference(
    x: torch.Tensor,
    qweight: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor | None,
    bits: int,
    group_size: int | None,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """x (..., in), qweight (out, in) [int8] or (out, in // 2) [int4] uint8 -> (..., out) in x's dtype.

    Pure-torch reference: dequantize to fp32, ``F.linear`` in fp32, cast to x's dtype.
    """
    codes = unpack_int4_reference(qweight) if bits == 4 else qweight
    w = dequantize_reference(codes, scales, zeros, bits, group_size)
    y = F.linear(x.to(torch.float32), w, None if bias is None else bias.to(torch.float32))
    return y.to(x.dtype)


# ---------------------------------------------------------------------------------------------------------------
# Checks: everything the native kernels rely on, with messages naming the argument, the expectation and the value.
# ---------------------------------------------------------------------------------------------------------------


def _group_or_none(group_size: int | None) -> int | None:
    """The schema's per-channel spellings (0, -1) as None."""
    return None if group_size is None or group_size in (0, -1) else group_size


def _check_args(
    op: str,
    x: torch.Tensor,
    qweight: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor | None,
    bits: int,
    group_size: int | None,
    bias: torch.Tensor | None,
) -> tuple[int, int]:
    """Validates a qlinear call; returns (in_features K, out_features N)."""
    _common.check_float(op, "x", x)
    _common.check_at_least_1d(op, "x", x)
    if isinstance(bits, bool) or bits not in (4, 8):
        raise ValueError(f"{op}: bits must be 4 or 8; got {bits!r}")
    for name, t in (("qweight", qweight), ("scales", scales), ("zeros", zeros), ("bias", bias)):
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{op}: {name} must be a torch.Tensor; got {type(t).__name__}")
        if t.device != x.device:
            raise ValueError(f"{op}: {name} must be on x's device {x.device}; got {t.device}")
    if qweight.dtype != torch.uint8:
        raise TypeError(f"{op}: qweight must have dtype torch.uint8 (packed codes); got {qweight.dtype}")
    if qweight.dim() != 2:
        raise ValueError(
            f"{op}: qweight must be 2-D, (out_features, in_features{' // 2' if bits == 4 else ''}); "
            f"got shape {tuple(qweight.shape)}"
        )
    n, k = qweight.shape[0], qweight.shape[1] * (2 if bits == 4 else 1)
    if n == 0 or k == 0:
        raise ValueError(f"{op}: qweight must not be empty; got shape {tuple(qweight.shape)}")
    if x.shape[-1] != k:
        layout = "int4 codes packed two per byte" if bits == 4 else "int8 codes"
        raise ValueError(
            f"{op}: x has inner size {x.shape[-1]} but the weight expects in_features {k} "
            f"(qweight {tuple(qweight.shape)} holds {layout})"
        )
    if group_size is not None:
        if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size <= 0:
            raise ValueError(
                f"{op}: group_size must be a positive int or None (one group per output channel); got {group_size!r}"
            )
        if k % group_size != 0:
            raise ValueError(f"{op}: group_size {group_size} does not divide in_features {k}")
    groups = 1 if group_size is None else k // group_size
    if scales.dtype not in SCALE_DTYPES:
        raise TypeError(f"{op}: scales must have dtype float32, float16 or bfloat16; got {scales.dtype}")
    if tuple(scales.shape) != (n, groups):
        raise ValueError(
            f"{op}: scales must have shape (out_features, groups) = ({n}, {groups}) for in_features {k} and "
            f"group_size {group_size}; got {tuple(scales.shape)}"
        )
    if zeros is not None:
        if zeros.dtype != torch.uint8:
            raise TypeError(f"{op}: zeros must have dtype torch.uint8 (or be None: symmetric); got {zeros.dtype}")
        if tuple(zeros.shape) != (n, groups):
            raise ValueError(f"{op}: zeros must have scales' shape ({n}, {groups}); got {tuple(zeros.shape)}")
    if bias is not None:
        _common.check_float(op, "bias", bias)
        if tuple(bias.shape) != (n,):
            raise ValueError(f"{op}: bias must have shape (out_features,) = ({n},); got {tuple(bias.shape)}")
    return k, n


def _dequantized(qweight, scales, zeros, bits, group_size) -> torch.Tensor:
    codes = unpack_int4_reference(qweight) if bits == 4 else qweight
    return dequantize_reference(codes, scales, zeros, bits, _group_or_none(group_size))


# ---------------------------------------------------------------------------------------------------------------
# Native launches.
# ---------------------------------------------------------------------------------------------------------------


def _launch(x, qweight, scales, zeros, bits, group_size, bias) -> torch.Tensor:
    k, n = x.shape[-1], qweight.shape[0]
    y = torch.empty((*x.shape[:-1], n), dtype=x.dtype, device=x.device)
    if y.numel() == 0:
        return y
    native = _common.native_module(x, _OP)
    if native is None:
        y.copy_(qlinear_reference(x, qweight, scales, zeros, bits, _group_or_none(group_size), bias))
        return y
    x, rows, x_stride = _common.rows_of(x)
    qweight, scales = qweight.contiguous(), scales.contiguous()
    zeros = None if zeros is None else zeros.contiguous()
    bias = None if bias is None else bias.contiguous()
    g = 0 if _group_or_none(group_size) is None else group_size
    args = (x.data_ptr(), _common.dtype_code(x.dtype), rows, k, x_stride, qweight.data_ptr(), n, bits,
            scales.data_ptr(), _common.dtype_code(scales.dtype), 0 if zeros is None else zeros.data_ptr(), g,
            0 if bias is None else bias.data_ptr(), 0 if bias is None else _common.dtype_code(bias.dtype),
            y.data_ptr(), n)  # fmt: skip
    _common.call_native(native.qlinear, args, x)
    return y


# ---------------------------------------------------------------------------------------------------------------
# Op registration.
# ---------------------------------------------------------------------------------------------------------------

_SCHEMA_OP = "tcompress::qlinear"


@torch.library.custom_op(_SCHEMA_OP, mutates_args=())
def _qlinear(
    x: torch.Tensor,
    qweight: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor | None,
    bits: int,
    group_size: int,
    bias: torch.Tensor | None,
) -> torch.Tensor:
    _check_args(_SCHEMA_OP, x, qweight, scales, zeros, bits, _group_or_none(group_size), bias)
    return qlinear_reference(x, qweight, scales, zeros, bits, _group_or_none(group_size), bias).contiguous()


@_qlinear.register_fake
def _(x, qweight, scales, zeros, bits, group_size, bias):
    _, n = _check_args(_SCHEMA_OP, x, qweight, scales, zeros, bits, _group_or_none(group_size), bias)
    return x.new_empty((*x.shape[:-1], n))


@_qlinear.register_kernel(("cpu", "cuda"))
def _(x, qweight, scales, zeros, bits, group_size, bias):
    _check_args(_SCHEMA_OP, x, qweight, scales, zeros, bits, _group_or_none(group_size), bias)
    return _launch(x, qweight, scales, zeros, bits, group_size, bias)


def _setup_context(ctx, inputs, output) -> None:
    x, qweight, scales, zeros, bits, group_size, bias = inputs
    ctx.save_for_backward(qweight, scales, zeros)
    ctx.bits, ctx.group_size, ctx.x_dtype = bits, group_size, x.dtype
    ctx.bias_dtype = None if bias is None else bias.dtype


def _backward(ctx, grad: torch.Tensor):
    # y = x W^T + b  =>  dL/dx = dL/dy W, dL/db = sum of dL/dy over the leading dimensions (W is not trained).
    qweight, scales, zeros = ctx.saved_tensors
    grad_x = grad_bias = None
    if ctx.needs_input_grad[0]:
        w = _dequantized(qweight, scales, zeros, ctx.bits, ctx.group_size)
        grad_x = (grad.to(torch.float32) @ w).to(ctx.x_dtype)
    if ctx.bias_dtype is not None and ctx.needs_input_grad[6]:
        grad_bias = grad.to(torch.float32).reshape(-1, grad.shape[-1]).sum(0).to(ctx.bias_dtype)
    return grad_x, None, None, None, None, None, grad_bias


_qlinear.register_autograd(_backward, setup_context=_setup_context)


# ---------------------------------------------------------------------------------------------------------------
# Public API.
# ---------------------------------------------------------------------------------------------------------------


def qlinear(
    x: torch.Tensor,
    qweight: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor | None,
    bits: int,
    group_size: int | None,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """x (..., in_features) -> (..., out_features): ``x @ dequant(W)^T + bias``, fp32 accumulation, x's dtype.

    Args:
        x: float32, float16 or bfloat16 tensor on CPU or CUDA, any leading dimensions and any layout (a copy is
            made only when its rows cannot be addressed with one stride).
        qweight: uint8 codes on x's device: (out_features, in_features) for bits=8, or
            (out_features, in_features // 2) for bits=4 (column 2j in the low nibble of byte j).
        scales: (out_features, groups) float32/float16/bfloat16, groups = in_features // group_size (1 per channel),
            finite: with a NaN or Inf scale the result is unspecified (the kernels apply a scale after summing its
            group, the reference before, so they give -inf and NaN respectively). Not checked per call;
            :func:`quantize` never produces one and :class:`~tcompress.nn.QuantLinear` refuses one on load.
        zeros: (out_features, groups) uint8 zero points (asymmetric), or None (symmetric: zero point 2^(bits-1)).
        bits: 4 or 8.
        group_size: input columns per group, dividing in_features; None for one group per output channel.
        bias: optional (out_features,) float tensor.

    Returns:
        A new tensor (..., out_features) in x's dtype. Differentiable with respect to x and bias.

    On CPUs with AVX512_BF16, bf16 x with more than 8 rows uses a ``vdpbf16ps`` kernel: the weights stay exact
    (codes minus zero point are small integers), scales are applied in fp32 per group; results may differ from the
    fp32 path in summation order, and activations with |x| < 2^-126 count as zero.

    Raises:
        TypeError: a tensor has the wrong dtype (x/bias not floating, qweight/zeros not uint8, scales not floating).
        ValueError: bad bits or group_size, inconsistent shapes (the message names both sizes), or tensors on
            different devices.
    """
    _check_args(_OP, x, qweight, scales, zeros, bits, group_size, bias)
    return torch.ops.tcompress.qlinear(
        x, qweight, scales, zeros, int(bits), 0 if group_size is None else group_size, bias
    )
