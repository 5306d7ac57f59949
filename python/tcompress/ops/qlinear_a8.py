"""Integer matmul with dynamically quantized activations: W8A8, W4A8 (and A4) ``y = Q(x) @ dequant(W)^T + bias``.

Activations are quantized per token (row), symmetric, to ``act_bits`` bits: ``s_x = max|x_row| / (2^(b-1) - 1)``,
codes ``clamp(round(x / s_x), -(2^(b-1) - 1), 2^(b-1) - 1)`` as int8 (a row of zeros gets scale 1 and codes 0).
The weight format is that of :mod:`tcompress.ops.quantize` (unsigned codes, ``(u - z) * s`` per group, int4 packed).

The native kernels compute, exactly in int32, ``acc[m, n, g] = sum_{k in g} (u[n, k] - z[n, g]) * a[m, k]``, then in
fp32 ``c = sum_g float(acc[..., g]) * s[n, g]`` (groups in order) and ``y = c * s_x[m] + bias[n]``
(see csrc/include/tcompress/qlinear_a8.h). :func:`qlinear_a8_accumulators` exposes the integer step.

Registered op (namespace ``tcompress``), with a fake (meta) implementation, a CPU kernel (``_C``), a CUDA kernel
(``_cuda``, when built) and the pure-torch reference for other devices and builds without native code:

- ``qlinear_a8(Tensor x, Tensor qweight, Tensor scales, Tensor? zeros, int bits, int group_size, int act_bits,
  Tensor? bias) -> Tensor`` (group_size 0 or -1: one group per output channel). Its gradient is the
  straight-through estimator: the activation rounding counts as the identity, so ``dL/dx = dL/dy @ dequant(W)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import _native
from . import _common
from .qlinear import _check_args as _check_qlinear_args
from .qlinear import _dequantized, _group_or_none
from .quantize import dequantize_reference, implicit_zero, unpack_int4_reference

_OP = "tcompress.ops.qlinear_a8"
# Columns per group up to which the int32 accumulators are exact: 255 * 128 * 65536 < 2^31.
MAX_GROUP = 65536


def quantize_activations_reference(x: torch.Tensor, act_bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """x (..., K) float -> (codes (..., K) int8, scales (..., 1) float32): per-token symmetric quantization."""
    qmax = 2 ** (act_bits - 1) - 1
    xf = x.to(torch.float32)
    amax = xf.abs().amax(dim=-1, keepdim=True)
    scales = torch.where(amax > 0, amax / qmax, torch.ones_like(amax))
    codes = torch.clamp(torch.round(xf / scales), -qmax, qmax).to(torch.int8)
    return codes, scales


def qlinear_a8_reference(
    x: torch.Tensor,
    qweight: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor | None,
    bits: int,
    group_size: int | None,
    act_bits: int = 8,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """x (..., in) -> (..., out) in x's dtype: fake-quantized activations times the dequantized weight, fp32."""
    codes, act_scales = quantize_activations_reference(x, act_bits)
    wcodes = unpack_int4_reference(qweight) if bits == 4 else qweight
    w = dequantize_reference(wcodes, scales, zeros, bits, group_size)
    xq = codes.to(torch.float32) * act_scales
    y = F.linear(xq, w, None if bias is None else bias.to(torch.float32))
    return y.to(x.dtype)


def qlinear_a8_accumulators_reference(
    codes: torch.Tensor, qweight: torch.Tensor, zeros: torch.Tensor | None, bits: int, group_size: int | None
) -> torch.Tensor:
    """codes (..., K) int8 -> (..., N, G) int32: ``sum_{k in g} (u[n, k] - z[n, g]) * codes[..., k]``, exactly.

    Computed in float64, where every partial sum (an integer below 2^31) is exact.
    """
    wcodes = (unpack_int4_reference(qweight) if bits == 4 else qweight).to(torch.float64)
    n, k = wcodes.shape
    gs = k if group_size is None else group_size
    groups = k // gs
    z = torch.full((n, groups), float(implicit_zero(bits)), dtype=torch.float64) if zeros is None else zeros.double()
    w = (wcodes.reshape(n, groups, gs) - z[..., None]).to(codes.device)
    a = codes.to(torch.float64).reshape(*codes.shape[:-1], groups, gs)
    return torch.einsum("...gk,ngk->...ng", a, w).to(torch.int32)


def _check_act_bits(op: str, act_bits: int, k: int, group_size: int | None) -> None:
    if isinstance(act_bits, bool) or act_bits not in (4, 8):
        raise ValueError(f"{op}: act_bits must be 8 or 4 (per-token activation codes); got {act_bits!r}")
    columns = k if group_size is None else group_size
    if columns > MAX_GROUP:
        what = f"group_size {group_size}" if group_size is not None else f"in_features {k} (one group per channel)"
        raise ValueError(
            f"{op}: a group of at most {MAX_GROUP} columns keeps the int32 accumulators exact; got {what}. "
            "Use a smaller group_size"
        )


def _check_args(op, x, qweight, scales, zeros, bits, group_size, act_bits, bias) -> tuple[int, int]:
    """Validates a qlinear_a8 call (the qlinear checks plus act_bits and the group limit); returns (K, N)."""
    k, n = _check_qlinear_args(op, x, qweight, scales, zeros, bits, group_size, bias)
    _check_act_bits(op, act_bits, k, group_size)
    return k, n


# ---------------------------------------------------------------------------------------------------------------
# Native launches.
# ---------------------------------------------------------------------------------------------------------------


def _launch(x, qweight, scales, zeros, bits, group_size, act_bits, bias) -> torch.Tensor:
    k, n = x.shape[-1], qweight.shape[0]
    y = torch.empty((*x.shape[:-1], n), dtype=x.dtype, device=x.device)
    if y.numel() == 0:
        return y
    native = _common.native_module(x, _OP)
    if native is None or not hasattr(native, "qlinear_a8"):
        y.copy_(qlinear_a8_reference(x, qweight, scales, zeros, bits, _group_or_none(group_size), act_bits, bias))
        return y
    x, rows, x_stride = _common.rows_of(x)
    qweight, scales = qweight.contiguous(), scales.contiguous()
    zeros = None if zeros is None else zeros.contiguous()
    bias = None if bias is None else bias.contiguous()
    g = 0 if _group_or_none(group_size) is None else group_size
    args = (x.data_ptr(), _common.dtype_code(x.dtype), rows, k, x_stride, qweight.data_ptr(), n, bits,
            scales.data_ptr(), _common.dtype_code(scales.dtype), 0 if zeros is None else zeros.data_ptr(), g,
            act_bits, 0 if bias is None else bias.data_ptr(), 0 if bias is None else _common.dtype_code(bias.dtype),
            y.data_ptr(), n)  # fmt: skip
    _common.call_native(native.qlinear_a8, args, x)
    return y


# ---------------------------------------------------------------------------------------------------------------
# Op registration.
# ---------------------------------------------------------------------------------------------------------------

_SCHEMA_OP = "tcompress::qlinear_a8"


@torch.library.custom_op(_SCHEMA_OP, mutates_args=())
def _qlinear_a8(
    x: torch.Tensor,
    qweight: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor | None,
    bits: int,
    group_size: int,
    act_bits: int,
    bias: torch.Tensor | None,
) -> torch.Tensor:
    g = _group_or_none(group_size)
    _check_args(_SCHEMA_OP, x, qweight, scales, zeros, bits, g, act_bits, bias)
    return qlinear_a8_reference(x, qweight, scales, zeros, bits, g, act_bits, bias).contiguous()


@_qlinear_a8.register_fake
def _(x, qweight, scales, zeros, bits, group_size, act_bits, bias):
    _, n = _check_args(_SCHEMA_OP, x, qweight, scales, zeros, bits, _group_or_none(group_size), act_bits, bias)
    return x.new_empty((*x.shape[:-1], n))


@_qlinear_a8.register_kernel(("cpu", "cuda"))
def _(x, qweight, scales, zeros, bits, group_size, act_bits, bias):
    _check_args(_SCHEMA_OP, x, qweight, scales, zeros, bits, _group_or_none(group_size), act_bits, bias)
    return _launch(x, qweight, scales, zeros, bits, group_size, act_bits, bias)


def _setup_context(ctx, inputs, output) -> None:
    x, qweight, scales, zeros, bits, group_size, _act_bits, bias = inputs
    ctx.save_for_backward(qweight, scales, zeros)
    ctx.bits, ctx.group_size, ctx.x_dtype = bits, group_size, x.dtype
    ctx.bias_dtype = None if bias is None else bias.dtype


def _backward(ctx, grad: torch.Tensor):
    # Straight-through: the activation rounding counts as the identity, so y = x W^T + b as for qlinear.
    qweight, scales, zeros = ctx.saved_tensors
    grad_x = grad_bias = None
    if ctx.needs_input_grad[0]:
        w = _dequantized(qweight, scales, zeros, ctx.bits, ctx.group_size)
        grad_x = (grad.to(torch.float32) @ w).to(ctx.x_dtype)
    if ctx.bias_dtype is not None and ctx.needs_input_grad[7]:
        grad_bias = grad.to(torch.float32).reshape(-1, grad.shape[-1]).sum(0).to(ctx.bias_dtype)
    return grad_x, None, None, None, None, None, None, grad_bias


_qlinear_a8.register_autograd(_backward, setup_context=_setup_context)


# ---------------------------------------------------------------------------------------------------------------
# Public API.
# ---------------------------------------------------------------------------------------------------------------


def qlinear_a8(
    x: torch.Tensor,
    qweight: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor | None,
    bits: int,
    group_size: int | None,
    act_bits: int = 8,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """x (..., in_features) -> (..., out_features): per-token int``act_bits`` activations times int4/int8 weights.

    Args as :func:`tcompress.ops.qlinear`, plus ``act_bits`` (8 or 4). A group (``group_size``, or in_features
    for per-channel weights) holds at most 65536 columns, so that the int32 accumulators are exact.

    Returns:
        A new tensor (..., out_features) in x's dtype: the integer product scaled per group and per token, in fp32
        (equal to :func:`qlinear_a8_reference` up to fp32 rounding). Differentiable with respect to x and bias by
        the straight-through estimator (the weight is not trained).

    Raises:
        TypeError: a tensor has the wrong dtype (x/bias not floating, qweight/zeros not uint8, scales not floating).
        ValueError: bad bits, act_bits or group_size, inconsistent shapes, tensors on different devices, a group
            over 65536 columns, or (native kernels) x holding NaN or Inf.
    """
    _check_args(_OP, x, qweight, scales, zeros, bits, group_size, act_bits, bias)
    return torch.ops.tcompress.qlinear_a8(
        x, qweight, scales, zeros, int(bits), 0 if group_size is None else group_size, int(act_bits), bias
    )


def quantize_activations(x: torch.Tensor, act_bits: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """x (..., K) float -> (codes (..., K) int8, scales (..., 1) float32): the native per-token quantization step
    of :func:`qlinear_a8` on CPU (the reference elsewhere); equal to :func:`quantize_activations_reference`.

    Raises TypeError for a non-floating x, ValueError for a 0-d x, an empty last dimension, bad act_bits or (native)
    NaN/Inf in x.
    """
    op = "tcompress.ops.quantize_activations"
    _common.check_float(op, "x", x)
    _common.check_at_least_1d(op, "x", x)
    if x.shape[-1] == 0:
        raise ValueError(f"{op}: x must have at least one column per token (..., K >= 1); got shape {tuple(x.shape)}")
    _check_act_bits(op, act_bits, 1, None)
    native = _native.cpu_native() if x.device.type == "cpu" else None
    if native is None or x.numel() == 0:
        return quantize_activations_reference(x, act_bits)
    x, rows, x_stride = _common.rows_of(x)
    codes = torch.empty(x.shape, dtype=torch.int8)
    scales = torch.empty((*x.shape[:-1], 1), dtype=torch.float32)
    native.quantize_activations(x.data_ptr(), _common.dtype_code(x.dtype), rows, x.shape[-1], x_stride, act_bits,
                                codes.data_ptr(), scales.data_ptr(), torch.get_num_threads())  # fmt: skip
    return codes, scales


def qlinear_a8_accumulators(
    codes: torch.Tensor, qweight: torch.Tensor, zeros: torch.Tensor | None, bits: int, group_size: int | None
) -> torch.Tensor:
    """codes (..., K) int8 -> (..., N, G) int32: the exact group accumulators of the native integer kernel (CPU),
    ``sum_{k in g} (u[n, k] - z[n, g]) * codes[..., k]``; for testing it against
    :func:`qlinear_a8_accumulators_reference` to the last integer.

    Raises TypeError / ValueError as :func:`qlinear_a8` for bad weights, codes not int8 or not on the CPU.
    """
    op = "tcompress.ops.qlinear_a8_accumulators"
    if not isinstance(codes, torch.Tensor) or codes.dtype != torch.int8:
        raise TypeError(f"{op}: codes must be an int8 tensor; got {getattr(codes, 'dtype', type(codes).__name__)}")
    if codes.device.type != "cpu":
        raise ValueError(f"{op}: runs on the CPU only; got codes on {codes.device}")
    _common.check_at_least_1d(op, "codes", codes)
    # The weight checks of qlinear, with a float stand-in for x and unit scales.
    groups = 1 if group_size is None else codes.shape[-1] // group_size if group_size > 0 else 1
    stand_in = torch.empty((1, codes.shape[-1]))
    k, n = _check_qlinear_args(op, stand_in, qweight, torch.ones((qweight.shape[0], groups)) if qweight.dim() == 2
                               else torch.ones(1), zeros, bits, group_size, None)  # fmt: skip
    _check_act_bits(op, 8, k, group_size)
    native = _native.cpu_native()
    if native is None:
        return qlinear_a8_accumulators_reference(codes, qweight, zeros, bits, group_size)
    codes = codes.contiguous()
    rows = codes.numel() // k
    acc = torch.empty((*codes.shape[:-1], n, groups), dtype=torch.int32)
    if acc.numel():
        native.qlinear_a8_accumulators(codes.data_ptr(), rows, k, qweight.contiguous().data_ptr(), n, bits,
                                       0 if zeros is None else zeros.contiguous().data_ptr(),
                                       0 if group_size is None else group_size, acc.data_ptr(),
                                       torch.get_num_threads())  # fmt: skip
    return acc
