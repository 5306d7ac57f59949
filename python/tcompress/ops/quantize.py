"""Round-to-nearest weight quantization and int4 packing: the storage format every packed kernel reads.

The format (shared by the CPU/CUDA kernels, :mod:`tcompress.ops.qlinear` and ``tcompress.nn.QuantLinear``):

- A weight ``w (out, in)`` is split into groups of ``group_size`` consecutive input columns (``group_size=None``:
  one group per output row, i.e. per output channel). ``group_size`` must divide ``in``.
- Every group has a scale ``s`` (stored in ``scale_dtype``: fp32, fp16 or bf16) and a zero point ``z``. Weights
  are stored as unsigned codes ``u`` in ``[0, 2^bits - 1]`` and dequantize to ``(u - z) * s`` (fp32 arithmetic).
- Symmetric: ``s = absmax / qmax`` with ``qmax = 2^(bits-1) - 1`` (127 or 7); the zero point is implicit,
  ``z = 2^(bits-1)`` (128 or 8), so ``u = clamp(round(w / s), -qmax - 1, qmax) + z``; ``zeros`` is None.
- Asymmetric: the group's range is widened to include 0 (so 0 stays exact), ``s = (max - min) / (2^bits - 1)``,
  ``z = clamp(round(-min / s), 0, 2^bits - 1)`` stored as uint8, ``u = clamp(round(w / s) + z, 0, 2^bits - 1)``.
- Codes are computed with the *stored* scale (rounded to ``scale_dtype`` first), so dequantization is exactly
  what the codes meant. A group whose scale would be 0 (all zeros) gets scale 1. Rounding is half-to-even, and
  ``w / s`` is an IEEE fp32 division, so native kernels and this reference agree bit for bit.
- Shapes: codes ``(out, in)`` uint8; ``scales (out, in // group_size)``; ``zeros`` the same shape, uint8, or None.
- Packing: int8 codes are stored as they are. int4 codes pack two per byte along the input dimension:
  byte ``j`` of a row holds column ``2j`` in its low nibble and ``2j + 1`` in its high nibble, so a packed int4
  weight is ``(out, in // 2)`` uint8 (``in`` must be even).

Registered ops (namespace ``tcompress``; see :mod:`._op` for how every op is registered and called), whose pure-torch
implementations come from the references below:

- ``quantize_weight(Tensor w, int bits, int group_size, bool symmetric, ScalarType scale_dtype)
  -> (Tensor codes, Tensor scales, Tensor zeros)``: ``group_size`` 0 means per channel; symmetric ``zeros`` is an
  empty tensor (the public :func:`quantize` returns None for it);
- ``dequantize(Tensor codes, Tensor scales, Tensor? zeros, int bits, int group_size, bool packed,
  ScalarType dtype) -> Tensor``;
- ``pack_int4(Tensor codes) -> Tensor`` and ``unpack_int4(Tensor packed) -> Tensor``.

None of them is differentiable; :func:`quantize` detaches w.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from . import _common
from . import _quantize_checks as _checks
from ._op import Op, OpDeclaration

SCALE_DTYPES = _checks.SCALE_DTYPES  # the scale storage dtypes: fp32, fp16, bf16


class QuantizedWeight(NamedTuple):
    """codes (out, in) uint8; scales (out, groups) float; zeros (out, groups) uint8 or None (symmetric)."""

    codes: torch.Tensor
    scales: torch.Tensor
    zeros: torch.Tensor | None


def num_groups(in_features: int, group_size: int | None) -> int:
    """Groups per output row: 1 for per-channel (``group_size=None``), else ``in_features // group_size``."""
    return 1 if group_size is None else in_features // group_size


def implicit_zero(bits: int) -> int:
    """The zero point of symmetric codes: 2^(bits-1)."""
    return 1 << (bits - 1)


def _true_divide(x: torch.Tensor, divisor: int) -> torch.Tensor:
    """``x / divisor`` as an IEEE fp32 division on every device.

    ``x / qmax`` with a Python number is not that on CUDA: torch computes ``x * (1 / qmax)`` there (one bit can
    differ), so the reference divides by a tensor of the divisor instead.
    """
    return x / torch.full_like(x, divisor)


def quantize_reference(
    w: torch.Tensor,
    bits: int,
    group_size: int | None = None,
    symmetric: bool = True,
    scale_dtype: torch.dtype = torch.float32,
) -> QuantizedWeight:
    """w (out, in) float -> codes (out, in) uint8, scales (out, groups), zeros (out, groups) uint8 or None.

    Pure-torch reference of the format above (the oracle of the native kernels). Expects a finite ``w`` and a
    ``group_size`` that divides ``in``; the public op checks both.
    """
    out_features, in_features = w.shape
    g = in_features if group_size is None else group_size
    wg = w.detach().to(torch.float32).reshape(out_features, in_features // g, g)
    if symmetric:
        qmax = (1 << (bits - 1)) - 1
        scale = _true_divide(wg.abs().amax(dim=-1), qmax).to(scale_dtype).to(torch.float32)
        scale = torch.where(scale == 0, torch.ones_like(scale), scale)
        q = torch.round(wg / scale[..., None]).clamp(-qmax - 1, qmax) + implicit_zero(bits)
        zeros = None
    else:
        qmax = (1 << bits) - 1
        lo = wg.amin(dim=-1).clamp(max=0)
        hi = wg.amax(dim=-1).clamp(min=0)
        scale = _true_divide(hi - lo, qmax).to(scale_dtype).to(torch.float32)
        scale = torch.where(scale == 0, torch.ones_like(scale), scale)
        zero = torch.round(-lo / scale).clamp(0, qmax)
        q = (torch.round(wg / scale[..., None]) + zero[..., None]).clamp(0, qmax)
        zeros = zero.to(torch.uint8)
    codes = q.to(torch.uint8).reshape(out_features, in_features)
    return QuantizedWeight(codes, scale.to(scale_dtype), zeros)


def dequantize_reference(
    codes: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None, bits: int, group_size: int | None
) -> torch.Tensor:
    """codes (out, in) uint8, scales/zeros (out, groups) -> w (out, in) fp32 = (codes - zero) * scale."""
    out_features, in_features = codes.shape
    g = in_features if group_size is None else group_size
    u = codes.to(torch.float32).reshape(out_features, in_features // g, g)
    z = torch.full_like(scales, implicit_zero(bits), dtype=torch.float32) if zeros is None else zeros.float()
    return ((u - z[..., None]) * scales.to(torch.float32)[..., None]).reshape(out_features, in_features)


def pack_int4_reference(codes: torch.Tensor) -> torch.Tensor:
    """codes (..., n) uint8 in [0, 15], n even -> (..., n // 2) uint8: low nibble = even column."""
    c = codes.to(torch.uint8)
    return c[..., 0::2] | (c[..., 1::2] << 4)


def unpack_int4_reference(packed: torch.Tensor) -> torch.Tensor:
    """packed (..., m) uint8 -> codes (..., 2m) uint8 (inverse of :func:`pack_int4_reference`)."""
    lo = packed & 0x0F
    hi = packed >> 4
    return torch.stack((lo, hi), dim=-1).reshape(*packed.shape[:-1], packed.shape[-1] * 2)


# ---------------------------------------------------------------------------------------------------------------
# Pure-torch fallbacks (other devices, builds without native code) and native launches.
# ---------------------------------------------------------------------------------------------------------------


def _empty_quantized(w: torch.Tensor, group: int, symmetric: bool, scale_dtype) -> tuple:
    out_features, in_features = w.shape
    shape = (out_features, _checks.groups(in_features, group))
    codes = w.new_empty((out_features, in_features), dtype=torch.uint8)
    scales = w.new_empty(shape, dtype=scale_dtype)
    zeros = w.new_empty((0,) if symmetric else shape, dtype=torch.uint8)
    return codes, scales, zeros


def _quantize_fallback(op: str, w, bits, group, symmetric, scale_dtype) -> tuple:
    _checks.check_quantize_values(op, w, bits, group, symmetric, scale_dtype)
    codes, scales, zeros = quantize_reference(w, bits, group or None, symmetric, scale_dtype)
    if zeros is None:
        zeros = w.new_empty((0,), dtype=torch.uint8)
    return codes.contiguous(), scales.contiguous(), zeros.contiguous()


def _dequantize_fallback(codes, scales, zeros, bits, group, packed, dtype) -> torch.Tensor:
    u = unpack_int4_reference(codes) if packed else codes
    return dequantize_reference(u, scales, zeros, bits, group or None).to(dtype).contiguous()


def _cuda_status_tensor(device: torch.device) -> torch.Tensor:
    return torch.zeros(1, dtype=torch.int32, device=device)


def _raise_cuda_status(op: str, status: int) -> None:
    raise RuntimeError(f"{op}: the CUDA kernel rejected its input (tcompress status {status})")


# ---------------------------------------------------------------------------------------------------------------
# Native launches, through ``native`` (``_C`` for CPU tensors, ``_cuda`` for CUDA ones). The kernels refuse bad
# values (NaN, a scale overflow, a code above 15) with a status; the value checks then say what is wrong.
# ---------------------------------------------------------------------------------------------------------------


def _native_quantize(native, op: str, w, bits, group, symmetric, scale_dtype) -> tuple:
    codes, scales, zeros = _empty_quantized(w, group, symmetric, scale_dtype)
    if w.numel() == 0:
        return codes, scales, zeros
    src, rows, stride = _common.rows_of(w)
    args = (src.data_ptr(), _common.dtype_code(w.dtype), rows, w.shape[1], stride, bits, group, symmetric,
            codes.data_ptr(), scales.data_ptr(), _common.dtype_code(scale_dtype),
            0 if symmetric else zeros.data_ptr())  # fmt: skip
    if w.device.type == "cuda":
        status = _cuda_status_tensor(w.device)
        native.quantize(*args, status.data_ptr(), w.device.index, _common.cuda_stream_handle(w))
        code = int(status.item())
        if code:
            _checks.check_quantize_values(op, w, bits, group, symmetric, scale_dtype)
            _raise_cuda_status(op, code)
        return codes, scales, zeros
    try:
        native.quantize(*args, torch.get_num_threads())
    except ValueError:
        _checks.check_quantize_values(op, w, bits, group, symmetric, scale_dtype)  # says what is wrong with the values
        raise
    return codes, scales, zeros


def _native_pack(native, op: str, codes: torch.Tensor) -> torch.Tensor:
    n = codes.shape[-1]
    out = codes.new_empty((*codes.shape[:-1], n // 2))
    if out.numel() == 0:
        return out
    src, rows, stride = _common.rows_of(codes)
    args = (src.data_ptr(), out.data_ptr(), rows, n, stride, n // 2)
    if codes.device.type == "cuda":
        status = _cuda_status_tensor(codes.device)
        native.pack_int4(*args, status.data_ptr(), codes.device.index, _common.cuda_stream_handle(codes))
        code = int(status.item())
        if code:
            _checks.check_int4_values(op, codes)
            _raise_cuda_status(op, code)
        return out
    try:
        native.pack_int4(*args, torch.get_num_threads())
    except ValueError:
        _checks.check_int4_values(op, codes)
        raise
    return out


def _native_unpack(native, packed: torch.Tensor) -> torch.Tensor:
    n = packed.shape[-1] * 2
    out = packed.new_empty((*packed.shape[:-1], n))
    if out.numel() == 0:
        return out
    src, rows, stride = _common.rows_of(packed)
    _common.call_native(native.unpack_int4, (src.data_ptr(), out.data_ptr(), rows, n, stride, n), packed)
    return out


def _native_dequantize(native, codes, scales, zeros, bits, group, packed, dtype) -> torch.Tensor:
    in_features = codes.shape[1] * (2 if packed else 1)
    out = codes.new_empty((codes.shape[0], in_features), dtype=dtype)
    if out.numel() == 0:
        return out
    src, rows, stride = _common.rows_of(codes)
    scales = scales.contiguous()
    zeros = None if zeros is None else zeros.contiguous()
    fmt = 1 if packed else 0  # tc_codes_format: TC_CODES_INT4_PACKED / TC_CODES_UINT8
    args = (src.data_ptr(), fmt, rows, in_features, stride, scales.data_ptr(), _common.dtype_code(scales.dtype),
            0 if zeros is None else zeros.data_ptr(), bits, group, out.data_ptr(), _common.dtype_code(dtype),
            in_features)  # fmt: skip
    _common.call_native(native.dequantize, args, codes)
    return out


# ---------------------------------------------------------------------------------------------------------------
# The declarations (none differentiable).
# ---------------------------------------------------------------------------------------------------------------


def _check_pack(label, codes) -> None:
    _checks.check_pack_args(label, codes)


def _reference_pack(codes) -> torch.Tensor:
    _checks.check_int4_values(_checks.OP_PACK, codes)
    return pack_int4_reference(codes).contiguous()


QUANTIZE_WEIGHT = Op(
    OpDeclaration(
        name="quantize_weight",
        schema="(Tensor w, int bits, int group_size, bool symmetric, ScalarType scale_dtype) "
        "-> (Tensor, Tensor, Tensor)",
        check=lambda label, w, bits, group, symmetric, scale_dtype: _checks.check_quantize_args(
            label, w, bits, group, scale_dtype
        ),
        fake=lambda _, w, bits, group, symmetric, scale_dtype: _empty_quantized(w, group, symmetric, scale_dtype),
        reference=lambda *args: _quantize_fallback(_checks.OP_QUANTIZE, *args),
        launch=lambda native, _, *args: _native_quantize(native, _checks.OP_QUANTIZE, *args),
        differentiable=(),
    )
)
DEQUANTIZE = Op(
    OpDeclaration(
        name="dequantize",
        schema="(Tensor codes, Tensor scales, Tensor? zeros, int bits, int group_size, bool packed, "
        "ScalarType dtype) -> Tensor",
        check=_checks.check_dequantize_args,
        fake=lambda in_features, codes, *args: codes.new_empty((codes.shape[0], in_features), dtype=args[-1]),
        reference=_dequantize_fallback,
        launch=lambda native, _, *args: _native_dequantize(native, *args),
        differentiable=(),
    )
)
PACK_INT4 = Op(
    OpDeclaration(
        name="pack_int4",
        schema="(Tensor codes) -> Tensor",
        check=_check_pack,
        fake=lambda _, codes: codes.new_empty((*codes.shape[:-1], codes.shape[-1] // 2)),
        reference=_reference_pack,
        launch=lambda native, _, codes: _native_pack(native, _checks.OP_PACK, codes),
        differentiable=(),
    )
)
UNPACK_INT4 = Op(
    OpDeclaration(
        name="unpack_int4",
        schema="(Tensor packed) -> Tensor",
        check=_checks.check_unpack_args,
        fake=lambda _, packed: packed.new_empty((*packed.shape[:-1], packed.shape[-1] * 2)),
        reference=lambda packed: unpack_int4_reference(packed).contiguous(),
        launch=lambda native, _, packed: _native_unpack(native, packed),
        differentiable=(),
    )
)


# ---------------------------------------------------------------------------------------------------------------
# Public API.
# ---------------------------------------------------------------------------------------------------------------


def quantize(
    w: torch.Tensor,
    bits: int,
    group_size: int | None = None,
    symmetric: bool = True,
    scale_dtype: torch.dtype = torch.float32,
) -> QuantizedWeight:
    """w (out, in) float -> QuantizedWeight(codes (out, in) uint8, scales (out, groups), zeros (out, groups) or None).

    Round-to-nearest quantization in the format of this module (codes one per byte; pack 4-bit codes with
    :func:`pack_int4`). Bit-identical to :func:`quantize_reference` on every device and CPU instruction set.

    Args:
        w: float32, float16 or bfloat16, 2-D, finite; any layout (copied only when its rows cannot be addressed
            with one stride). Not differentiated (quantization has no useful gradient).
        bits: 4 or 8.
        group_size: columns per group, a positive divisor of in_features; None: one group per output row.
        symmetric: implicit zero point 2^(bits-1) (``zeros`` is None) or a stored uint8 zero point per group.
        scale_dtype: float32, float16 or bfloat16; codes are computed with the scale rounded to this dtype.

    Returns:
        QuantizedWeight on w's device.

    Raises:
        TypeError: w is not a float32/float16/bfloat16 tensor, scale_dtype is not one of those, group_size is
            not an int.
        ValueError: w is not 2-D or has no column, bits is not 4 or 8, group_size does not divide in_features,
            w holds NaN or Inf, or a group's scale overflows scale_dtype (e.g. float16 above 65504).
    """
    op = _checks.OP_QUANTIZE
    _common.check_float(op, "w", w)
    _checks.check_2d(op, "w", w, "(out_features, in_features)")
    group = _checks.group_arg(op, w.shape[1], group_size)
    codes, scales, zeros = QUANTIZE_WEIGHT.call(op, w.detach(), bits, group, bool(symmetric), scale_dtype)
    return QuantizedWeight(codes, scales, None if symmetric else zeros)


def dequantize(
    codes: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor | None,
    bits: int,
    group_size: int | None,
    dtype: torch.dtype = torch.float32,
    *,
    packed: bool = False,
) -> torch.Tensor:
    """codes (out, in) uint8 [or packed (out, in // 2)], scales/zeros (out, groups) -> w (out, in) in ``dtype``.

    ``w = (codes - zero) * scale`` in fp32 per group (zero: ``zeros``, or 2^(bits-1) when ``zeros`` is None), rounded
    once to ``dtype``; equal to ``dequantize_reference(...).to(dtype)``.

    The rule for packed weights is explicit: ``packed=False`` (default) reads one code per byte, as
    :func:`quantize` returns them; ``packed=True`` reads the int4 layout of :func:`pack_int4` (two codes per byte,
    low nibble = even column), needs ``bits=4``, and in_features is twice ``codes.shape[1]``. Codes are used as
    they are (``bits`` only sets the implicit zero point).

    Args:
        codes: uint8, 2-D, on CPU or CUDA (or any device, through the reference).
        scales: float32/float16/bfloat16 (out, groups) on codes' device.
        zeros: uint8 (out, groups), or None for symmetric codes.
        bits: 4 or 8.
        group_size: the group size the codes were made with; None: per channel.
        dtype: float32, float16 or bfloat16 result.
        packed: codes are packed int4 (see above).

    Raises:
        TypeError: a wrong dtype (codes/zeros not uint8, scales or ``dtype`` not a float type).
        ValueError: tensors not 2-D or on different devices, bits not 4/8 (or not 4 with ``packed``), group_size
            does not divide in_features, scales/zeros not of shape (out, groups).
    """
    op = _checks.OP_DEQUANTIZE
    _checks.check_uint8(op, "codes", codes)
    _checks.check_2d(op, "codes", codes, "(out_features, in_features)")
    group = _checks.group_arg(op, codes.shape[1] * (2 if packed else 1), group_size)
    return DEQUANTIZE.call(op, codes, scales, zeros, bits, group, bool(packed), dtype)


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """codes (..., n) uint8 in [0, 15], n even -> (..., n // 2) uint8: byte j = code 2j | code 2j+1 << 4.

    Raises:
        TypeError: codes is not uint8.
        ValueError: codes is 0-d, n is odd, or a code is above 15 (never silently truncated).
    """
    return PACK_INT4.call(_checks.OP_PACK, codes)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """packed (..., m) uint8 -> codes (..., 2m) uint8 in [0, 15] (the inverse of :func:`pack_int4`).

    Raises:
        TypeError: packed is not uint8.
        ValueError: packed is 0-d.
    """
    return UNPACK_INT4.call(_checks.OP_UNPACK, packed)
