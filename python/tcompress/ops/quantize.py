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
"""

from __future__ import annotations

from typing import NamedTuple

import torch

SCALE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


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
        scale = (wg.abs().amax(dim=-1) / qmax).to(scale_dtype).to(torch.float32)
        scale = torch.where(scale == 0, torch.ones_like(scale), scale)
        q = torch.round(wg / scale[..., None]).clamp(-qmax - 1, qmax) + implicit_zero(bits)
        zeros = None
    else:
        qmax = (1 << bits) - 1
        lo = wg.amin(dim=-1).clamp(max=0)
        hi = wg.amax(dim=-1).clamp(min=0)
        scale = ((hi - lo) / qmax).to(scale_dtype).to(torch.float32)
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


# Public ops (native kernels + torch.library registration): to be implemented.
def quantize(w, bits, group_size=None, symmetric=True, scale_dtype=torch.float32):  # pragma: no cover
    raise NotImplementedError


def dequantize(codes, scales, zeros, bits, group_size):  # pragma: no cover
    raise NotImplementedError


def pack_int4(codes):  # pragma: no cover
    raise NotImplementedError


def unpack_int4(packed):  # pragma: no cover
    raise NotImplementedError
