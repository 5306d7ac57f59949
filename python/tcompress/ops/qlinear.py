"""Matrix multiplication with packed int4/int8 weights, one op family for float and integer activations:
``y = x @ dequant(W)^T + bias`` (:func:`qlinear`) and ``y = Q(x) @ dequant(W)^T + bias`` with int8/int4 activation
codes, one scale per token or per token and weight group (:func:`qlinear_a8`, the same op with ``act_bits`` 8 or 4).

Weight format: see :mod:`tcompress.ops.quantize` (unsigned codes, ``(u - z) * s`` per group, int4 packed two per
byte with the even column in the low nibble). Activation quantization (per token, symmetric): see
:mod:`tcompress.ops.int8_activations`. The integer kernels compute, exactly in int32, ``acc[m, n, g] = sum_{k in g}
(u[n, k] - z[n, g]) * a[m, k]``, then in fp32 ``c = sum_g float(acc[..., g]) * s[n, g]`` (groups in order) and
``y = c * s_x[m] + bias[n]``; per group ``y = sum_g float(acc[..., g]) * (s[n, g] * s_x[m, g]) + bias[n]`` (see
csrc/include/tcompress/qlinear_a8.h).

Registered op (namespace ``tcompress``; see :mod:`._op` for how every op is registered and called):

- ``qlinear(Tensor x, Tensor qweight, Tensor scales, Tensor? zeros, int bits, int group_size, Tensor? bias,
  int act_bits, bool act_per_group) -> Tensor`` (group_size 0 or -1: one group per output channel; act_bits 0: float
  activations; act_per_group: one activation scale per weight group instead of per token).
  Differentiable with respect to x and bias; with integer activations by the straight-through estimator (the
  activation rounding counts as the identity, so ``dL/dx = dL/dy @ dequant(W)``).

:class:`PreparedQLinear` holds the weight operands checked and laid out once, for modules that call the same
weights many times (a call then checks only x).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import _common
from ._op import Op, OpDeclaration
from ._qlinear_checks import (
    check_act_bits,
    check_act_granularity,
    check_call,
    check_weights,
    check_x,
    group_or_none,
)
from .int8_activations import quantize_activations_reference
from .quantize import dequantize_reference, unpack_int4_reference

_OP = "tcompress.ops.qlinear"
_OP_A8 = "tcompress.ops.qlinear_a8"


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
    w = _dequantized(qweight, scales, zeros, bits, group_size)
    y = F.linear(x.to(torch.float32), w, None if bias is None else bias.to(torch.float32))
    return y.to(x.dtype)


def qlinear_a8_reference(
    x: torch.Tensor,
    qweight: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor | None,
    bits: int,
    group_size: int | None,
    act_bits: int = 8,
    bias: torch.Tensor | None = None,
    act_granularity: str = "per_token",
) -> torch.Tensor:
    """x (..., in) -> (..., out) in x's dtype: fake-quantized activations (one scale per token, or per token and
    weight group) times the dequantized weight, fp32."""
    act_group = (group_size or x.shape[-1]) if act_granularity == "per_group" else None
    codes, act_scales = quantize_activations_reference(x, act_bits, act_group)
    k = x.shape[-1]
    per_column = act_scales.repeat_interleave(k // act_scales.shape[-1], dim=-1)
    w = _dequantized(qweight, scales, zeros, bits, group_size)
    y = F.linear(codes.to(torch.float32) * per_column, w, None if bias is None else bias.to(torch.float32))
    return y.to(x.dtype)


def _dequantized(qweight, scales, zeros, bits, group_size) -> torch.Tensor:
    codes = unpack_int4_reference(qweight) if bits == 4 else qweight
    return dequantize_reference(codes, scales, zeros, bits, group_or_none(group_size))


# ---------------------------------------------------------------------------------------------------------------
# The declaration: schema arguments (x, qweight, scales, zeros, bits, group_size, bias, act_bits).
# ---------------------------------------------------------------------------------------------------------------


def _check(label, x, qweight, scales, zeros, bits, group_size, bias, act_bits, act_per_group) -> tuple[int, int]:
    if act_per_group and not act_bits:
        raise ValueError(f"{label}: per-group activation scales need integer activations (act_bits 8 or 4); got "
                         "float activations")  # fmt: skip
    return check_call(label, x, qweight, scales, zeros, bits, group_or_none(group_size), bias, act_bits or None)


def _fake(kn, x, *args):
    return x.new_empty((*x.shape[:-1], kn[1]))


def _reference(x, qweight, scales, zeros, bits, group_size, bias, act_bits, act_per_group):
    g = group_or_none(group_size)
    if act_bits:
        granularity = "per_group" if act_per_group else "per_token"
        return qlinear_a8_reference(x, qweight, scales, zeros, bits, g, act_bits, bias, granularity).contiguous()
    return qlinear_reference(x, qweight, scales, zeros, bits, g, bias).contiguous()


class _Operands:
    """The weight operands as the native entry points take them: contiguous tensors (kept alive here) and their
    pointers, dtype codes and sizes."""

    __slots__ = ("tensors", "k", "n", "act_bits", "weight_args", "bias_args", "reference_args")

    def __init__(self, qweight, scales, zeros, bits, group_size, bias, act_bits, act_per_group, k, n):
        qweight, scales = qweight.contiguous(), scales.contiguous()
        zeros = None if zeros is None else zeros.contiguous()
        bias = None if bias is None else bias.contiguous()
        self.tensors = (qweight, scales, zeros, bias)
        self.k, self.n, self.act_bits = k, n, act_bits
        g = group_or_none(group_size) or 0
        # Per-group activation scales have a CPU kernel only: elsewhere the reference runs on these arguments.
        self.reference_args = (qweight, scales, zeros, bits, g, bias, act_bits, True) if act_per_group else None
        # The arguments after x's (pointer, dtype, rows, K, row stride) and before bias, per entry point.
        act = (act_bits, int(act_per_group)) if act_bits else ()
        self.weight_args = (qweight.data_ptr(), n, bits, scales.data_ptr(), _common.dtype_code(scales.dtype),
                            0 if zeros is None else zeros.data_ptr(), g, *act)  # fmt: skip
        self.bias_args = (0, 0) if bias is None else (bias.data_ptr(), _common.dtype_code(bias.dtype))

    def launch(self, native, x: torch.Tensor) -> torch.Tensor:
        """y = x @ W^T (+ bias) through ``native`` (x already checked against these operands)."""
        if self.reference_args is not None and x.device.type != "cpu":
            return _reference(x, *self.reference_args)
        y = torch.empty((*x.shape[:-1], self.n), dtype=x.dtype, device=x.device)
        if y.numel() == 0:
            return y
        x, rows, x_stride = _common.rows_of(x)
        args = (x.data_ptr(), _common.dtype_code(x.dtype), rows, self.k, x_stride, *self.weight_args,
                *self.bias_args, y.data_ptr(), self.n)  # fmt: skip
        _common.call_native(native.qlinear_a8 if self.act_bits else native.qlinear, args, x)
        return y


def _launch(native, kn, x, qweight, scales, zeros, bits, group_size, bias, act_bits, act_per_group):
    return _Operands(qweight, scales, zeros, bits, group_size, bias, act_bits, act_per_group, *kn).launch(native, x)


def _setup_context(ctx, inputs, output) -> None:
    x, qweight, scales, zeros, bits, group_size, bias, _act_bits, _act_per_group = inputs
    ctx.save_for_backward(qweight, scales, zeros)
    ctx.bits, ctx.group_size, ctx.x_dtype = bits, group_size, x.dtype
    ctx.bias_dtype = None if bias is None else bias.dtype


def _backward(ctx, grad: torch.Tensor):
    # y = x W^T + b  =>  dL/dx = dL/dy W, dL/db = sum of dL/dy over the leading dimensions (W is not trained).
    # With integer activations the rounding counts as the identity (straight-through), so the same holds.
    qweight, scales, zeros = ctx.saved_tensors
    grad_x = grad_bias = None
    if ctx.needs_input_grad[0]:
        w = _dequantized(qweight, scales, zeros, ctx.bits, ctx.group_size)
        grad_x = (grad.to(torch.float32) @ w).to(ctx.x_dtype)
    if ctx.bias_dtype is not None and ctx.needs_input_grad[6]:
        grad_bias = grad.to(torch.float32).reshape(-1, grad.shape[-1]).sum(0).to(ctx.bias_dtype)
    return grad_x, None, None, None, None, None, grad_bias, None, None


QLINEAR = Op(
    OpDeclaration(
        name="qlinear",
        schema="(Tensor x, Tensor qweight, Tensor scales, Tensor? zeros, int bits, int group_size, Tensor? bias, "
        "int act_bits, bool act_per_group) -> Tensor",
        check=_check,
        fake=_fake,
        reference=_reference,
        launch=_launch,
        backward=_backward,
        setup_context=_setup_context,
        differentiable=(0, 6),
    )
)


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
    *,
    act_bits: int | None = None,
    act_granularity: str = "per_token",
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
        act_bits: None (float activations), or 8 / 4: integer activations, as :func:`qlinear_a8`.
        act_granularity: with act_bits, "per_token" or "per_group", as :func:`qlinear_a8`.

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
    label = _OP if act_bits is None else _OP_A8
    group = _group_arg(label, group_size)
    per_group = _per_group_arg(label, act_bits, act_granularity)
    return QLINEAR.call(label, x, qweight, scales, zeros, bits, group, bias, _act_bits_arg(label, act_bits), per_group)


def qlinear_a8(
    x: torch.Tensor,
    qweight: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor | None,
    bits: int,
    group_size: int | None,
    act_bits: int = 8,
    bias: torch.Tensor | None = None,
    act_granularity: str = "per_token",
) -> torch.Tensor:
    """x (..., in_features) -> (..., out_features): int``act_bits`` activations times int4/int8 weights.

    Args as :func:`tcompress.ops.qlinear`, plus ``act_bits`` (8 or 4) and ``act_granularity``: "per_token" (one
    activation scale per row) or "per_group" (one per row and weight group: with ``group_size`` 32, llama.cpp's
    Q8_0 activations; per-channel weights have one group, so it equals "per_token" there). A group
    (``group_size``, or in_features for per-channel weights) holds at most 65536 columns, so that the int32
    accumulators are exact. Per-group scales run natively on the CPU; on CUDA the reference runs.

    Returns:
        A new tensor (..., out_features) in x's dtype: the integer product scaled per group and per token, in fp32
        (equal to :func:`qlinear_a8_reference` up to fp32 rounding). Differentiable with respect to x and bias by
        the straight-through estimator (the weight is not trained).

    Raises:
        TypeError: a tensor has the wrong dtype (x/bias not floating, qweight/zeros not uint8, scales not floating).
        ValueError: bad bits, act_bits, act_granularity or group_size, inconsistent shapes, tensors on different
            devices, a group over 65536 columns, or (native kernels) x holding NaN or Inf.
    """
    group = _group_arg(_OP_A8, group_size)
    per_group = _per_group_arg(_OP_A8, act_bits, act_granularity)
    act = _act_bits_arg(_OP_A8, act_bits)
    return QLINEAR.call(_OP_A8, x, qweight, scales, zeros, bits, group, bias, act, per_group)


def _group_arg(label: str, group_size: int | None) -> int:
    """The schema's group_size: 0 for None (per channel); the schema's own spellings 0 and -1 are refused here,
    where they would silently mean None."""
    if group_size is None:
        return 0
    if type(group_size) is not int or group_size <= 0:
        raise ValueError(
            f"{label}: group_size must be a positive int or None (one group per output channel); got {group_size!r}"
        )
    return group_size


def _per_group_arg(label: str, act_bits: int | None, act_granularity: str) -> bool:
    """The schema's act_per_group; "per_group" needs integer activations."""
    check_act_granularity(label, act_granularity, act_bits)
    return act_granularity == "per_group"


def _act_bits_arg(label: str, act_bits: int | None) -> int:
    """The schema's act_bits: 0 for float activations; 0 itself is refused (it would silently mean None)."""
    if act_bits is None:
        return 0
    check_act_bits(label, act_bits, 1, None)
    return act_bits


class PreparedQLinear:
    """The weight operands of one qlinear, checked and laid out once: a call checks only ``x``.

    For modules that multiply by the same weights many times (:class:`~tcompress.nn.QuantLinear`): prepare again
    whenever a tensor is replaced or moved (the module does so on construction, state-dict load and ``.to()``);
    values changed in place need nothing. The tensors are referenced, not copied, when already contiguous.

    Args as :func:`qlinear` without x. Raises as :func:`qlinear` for bad weights.
    """

    __slots__ = ("device", "in_features", "out_features", "_operands", "_schema_args", "_label")

    def __init__(
        self, qweight, scales, zeros, bits: int, group_size: int | None, bias=None, act_bits=None,
        act_granularity: str = "per_token",
    ):  # fmt: skip
        label = self._label = _OP if act_bits is None else _OP_A8
        act = _act_bits_arg(label, act_bits)
        per_group = _per_group_arg(label, act_bits, act_granularity)
        self.device = qweight.device if isinstance(qweight, torch.Tensor) else None
        k, n = check_weights(label, self.device, qweight, scales, zeros, bits, group_size, bias, act or None)
        self.in_features, self.out_features = k, n
        # Pointers exist on the devices with native kernels only; elsewhere (meta ...) every call is dispatched.
        native_device = self.device.type in ("cpu", "cuda")
        self._operands = (
            _Operands(qweight, scales, zeros, bits, group_size, bias, act, per_group, k, n) if native_device else None
        )
        self._schema_args = (qweight, scales, zeros, bits, _group_arg(label, group_size), bias, act, per_group)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., in_features) -> (..., out_features); as :func:`qlinear` on the prepared weights."""
        if not (type(x) is torch.Tensor and x.dtype in _common.FLOAT_DTYPES and x.dim()
                and x.shape[-1] == self.in_features and x.device == self.device):  # fmt: skip
            check_x(self._label, x, self.in_features, self.device)
        args = self._schema_args
        return QLINEAR.call_prepared(self._operands, x, args, *(t for t in (args[5],) if t is not None))
