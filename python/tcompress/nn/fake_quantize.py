"""Quantize-dequantize: the weights a quantized layer would multiply by, in float, for analyses that measure the
error of quantization (the reconstruction wall, per-layer outlier statistics) without packing anything.

It is the storage format of :mod:`tcompress.ops.quantize` (round to nearest, one scale per group, scales rounded to
their dtype), for any bit width 2..8, where :class:`~tcompress.nn.QuantLinear` stores only 4 and 8.
"""

from __future__ import annotations

import torch

from ..ops.quantize import dequantize_reference, quantize_reference


def fake_quantize(
    w: torch.Tensor,
    bits: int,
    group_size: int | None,
    *,
    symmetric: bool = True,
    scale_dtype: torch.dtype = torch.float16,
) -> torch.Tensor:
    """w (out, in) -> (out, in) fp32: round-to-nearest codes of ``bits`` bits (2..8), dequantized.

    Args:
        group_size: input columns per scale (must divide ``in``); None = one scale per output channel.
        symmetric: implicit zero point (True) or a stored per-group zero point.
        scale_dtype: the dtype scales are rounded to, as a quantized layer would store them.

    Raises:
        ValueError: ``bits`` outside 2..8 or ``w`` not 2-D.
    """
    if not isinstance(bits, int) or not 2 <= bits <= 8:
        raise ValueError(f"fake_quantize: bits must be an int in 2..8; got {bits!r}")
    if w.dim() != 2:
        raise ValueError(f"fake_quantize: w must be (out, in); got shape {tuple(w.shape)}")
    codes, scales, zeros = quantize_reference(w.detach().float(), bits, group_size, symmetric, scale_dtype)
    return dequantize_reference(codes, scales, zeros, bits, group_size)
