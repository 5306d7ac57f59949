"""Integer activations, the first step of the integer qlinear kernels (``act_bits`` 8 or 4 in
:func:`tcompress.ops.qlinear`), and the exact int32 group accumulators of the second, exposed for testing.

Activations are quantized per token (row), symmetric, to ``act_bits`` bits: ``s_x = max|x_row| / (2^(b-1) - 1)``,
codes ``clamp(round(x / s_x), -(2^(b-1) - 1), 2^(b-1) - 1)`` as int8 (a row of zeros gets scale 1 and codes 0);
or per group (``act_granularity="per_group"``): the same within each group of ``group_size`` columns of a row, one
scale per (row, group) (llama.cpp's Q8_0 activations with groups of 32).
"""

from __future__ import annotations

import torch

from .. import _native
from . import _common
from ._qlinear_checks import check_act_bits, check_weights
from .quantize import implicit_zero, unpack_int4_reference


def quantize_activations_reference(
    x: torch.Tensor, act_bits: int, group_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """x (..., K) float -> (codes (..., K) int8, scales (..., G) float32): symmetric quantization per token (G = 1,
    ``group_size`` None) or per group of ``group_size`` columns (G = K / group_size)."""
    qmax = 2 ** (act_bits - 1) - 1
    xf = x.to(torch.float32)
    k = xf.shape[-1]
    xg = xf.reshape(*xf.shape[:-1], k // (group_size or k), group_size or k)
    amax = xg.abs().amax(dim=-1, keepdim=True)
    scales = torch.where(amax > 0, amax / qmax, torch.ones_like(amax))
    codes = torch.clamp(torch.round(xg / scales), -qmax, qmax).to(torch.int8)
    return codes.reshape(xf.shape), scales.squeeze(-1)


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
    check_act_bits(op, act_bits, 1, None)
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
    # The weight checks of qlinear, with unit scales of the shape the weight implies.
    two_d = isinstance(qweight, torch.Tensor) and qweight.dim() == 2
    k_weight = qweight.shape[1] * (2 if bits == 4 else 1) if two_d else 0
    groups = k_weight // group_size if isinstance(group_size, int) and group_size > 0 else 1
    scales = torch.ones((qweight.shape[0], groups)) if two_d else torch.ones(1)
    k, n = check_weights(op, torch.device("cpu"), qweight, scales, zeros, bits, group_size, None, 8)
    if codes.shape[-1] != k:
        raise ValueError(f"{op}: codes have inner size {codes.shape[-1]} but the weight expects in_features {k}")
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
