"""Matrix multiplication with packed int4/int8 weights: ``y = x @ dequant(W)^T + bias``.

Weight format: see :mod:`tcompress.ops.quantize` (unsigned codes, ``(u - z) * s`` per group, int4 packed two per
byte with the even column in the low nibble).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .quantize import dequantize_reference, unpack_int4_reference


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


# Public op (native kernels + torch.library registration): to be implemented.
def qlinear(x, qweight, scales, zeros, bits, group_size, bias=None):  # pragma: no cover
    raise NotImplementedError
