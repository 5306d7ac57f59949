"""Integer matmul with dynamically quantized activations: W8A8, W4A8 (and A4) ``y = Q(x) @ dequant(W)^T + bias``.

Activations are quantized per token (row), symmetric, to ``act_bits`` bits: ``s_x = max|x_row| / (2^(b-1) - 1)``,
codes ``clamp(round(x / s_x), -(2^(b-1) - 1), 2^(b-1) - 1)`` as int8 (a row of zeros gets scale 1 and codes 0).
The weight format is that of :mod:`tcompress.ops.quantize` (unsigned codes, ``(u - z) * s`` per group, int4 packed).

STUB CONTRACT (pre-wired): the public signatures below are fixed; the native kernels and the ``torch.library``
registration replace the reference-only implementation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .quantize import dequantize_reference, unpack_int4_reference


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

    Args as :func:`tcompress.ops.qlinear`, plus ``act_bits`` (8 or 4).
    """
    return qlinear_a8_reference(x, qweight, scales, zeros, bits, group_size, act_bits, bias)
