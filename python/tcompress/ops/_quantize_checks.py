"""Argument and value checks of the quantization ops (:mod:`tcompress.ops.quantize`).

The metadata checks run in the public wrappers, the op bodies and the fake implementations, so they also run
while torch.compile traces and never look at values. What only the values can tell (NaN/Inf in w, a scale that
overflows its dtype, a code above 15 handed to pack_int4) is found by the native kernels, which never trust their
caller; the op then explains the failure with the ``check_*_values`` functions, which the pure-torch fallback runs
up front. Messages name the op, the argument, what was expected and what was given.
"""

from __future__ import annotations

import torch

from . import _common

SCALE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

OP_QUANTIZE = "tcompress.ops.quantize"
OP_DEQUANTIZE = "tcompress.ops.dequantize"
OP_PACK = "tcompress.ops.pack_int4"
OP_UNPACK = "tcompress.ops.unpack_int4"


def check_tensor(op: str, name: str, t) -> None:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor; got {type(t).__name__}")


def check_uint8(op: str, name: str, t) -> None:
    check_tensor(op, name, t)
    if t.dtype != torch.uint8:
        raise TypeError(f"{op}: {name} must have dtype torch.uint8; got {t.dtype}")


def check_2d(op: str, name: str, t: torch.Tensor, what: str) -> None:
    if t.dim() != 2:
        raise ValueError(f"{op}: {name} must be 2-D {what}; got shape {tuple(t.shape)}")


def check_bits(op: str, bits) -> None:
    if isinstance(bits, bool) or bits not in (4, 8):
        raise ValueError(f"{op}: bits must be 4 or 8; got {bits!r}")


def group_arg(op: str, in_features: int, group_size) -> int:
    """``group_size`` (None = per channel) -> the ops' integer argument (0 = per channel), checked."""
    if group_size is None:
        return 0
    if isinstance(group_size, bool) or not isinstance(group_size, int):
        raise TypeError(f"{op}: group_size must be an int or None (per channel); got {type(group_size).__name__}")
    if group_size <= 0:
        raise ValueError(
            f"{op}: group_size must be a positive divisor of in_features {in_features} (or None: per channel); "
            f"got {group_size}"
        )
    check_group_divides(op, in_features, group_size)
    return group_size


def check_group_divides(op: str, in_features: int, group: int) -> None:
    if group < 0:
        raise ValueError(f"{op}: group_size must be positive (0 or None: per channel); got {group}")
    if group > 0 and in_features % group != 0:
        raise ValueError(f"{op}: group_size {group} does not divide in_features {in_features}")


def groups(in_features: int, group: int) -> int:
    return 1 if group == 0 else in_features // group


def check_quantize_args(op: str, w, bits, group: int, scale_dtype) -> None:
    _common.check_float(op, "w", w)
    check_2d(op, "w", w, "(out_features, in_features)")
    if w.shape[1] < 1:
        raise ValueError(f"{op}: w must have at least one column (in_features >= 1); got shape {tuple(w.shape)}")
    check_bits(op, bits)
    check_group_divides(op, w.shape[1], group)
    if scale_dtype not in SCALE_DTYPES:
        raise TypeError(f"{op}: scale_dtype must be torch.float32, torch.float16 or torch.bfloat16; got {scale_dtype}")


def check_dequantize_args(op: str, codes, scales, zeros, bits, group: int, packed: bool, dtype) -> int:
    """Returns in_features."""
    check_uint8(op, "codes", codes)
    what = "packed int4 codes (out_features, in_features // 2)" if packed else "codes (out_features, in_features)"
    check_2d(op, "codes", codes, what)
    _common.check_float(op, "scales", scales)
    check_2d(op, "scales", scales, "(out_features, groups)")
    if zeros is not None:
        check_uint8(op, "zeros", zeros)
    for name, t in (("scales", scales), ("zeros", zeros)):
        if t is not None and t.device != codes.device:
            raise ValueError(f"{op}: {name} must be on codes' device {codes.device}; got {t.device}")
    check_bits(op, bits)
    if packed and bits != 4:
        raise ValueError(f"{op}: packed codes hold int4 values, so bits must be 4; got bits={bits}")
    in_features = codes.shape[1] * (2 if packed else 1)
    if in_features < 1:
        raise ValueError(f"{op}: codes must have at least one column; got shape {tuple(codes.shape)}")
    check_group_divides(op, in_features, group)
    expected = (codes.shape[0], groups(in_features, group))
    for name, t in (("scales", scales), ("zeros", zeros)):
        if t is not None and tuple(t.shape) != expected:
            raise ValueError(
                f"{op}: {name} must have shape {expected} (out_features, groups) for codes of shape "
                f"{tuple(codes.shape)} ({'packed, ' if packed else ''}in_features {in_features}) with group_size "
                f"{group or 'None (per channel)'}; got {tuple(t.shape)}"
            )
    if dtype not in _common.FLOAT_DTYPES:
        raise TypeError(f"{op}: dtype must be torch.float32, torch.float16 or torch.bfloat16; got {dtype}")
    return in_features


def check_pack_args(op: str, codes) -> None:
    check_uint8(op, "codes", codes)
    _common.check_at_least_1d(op, "codes", codes)
    if codes.shape[-1] % 2 != 0:
        raise ValueError(
            f"{op}: codes must have an even last dimension (two int4 codes per byte); got shape {tuple(codes.shape)}"
        )


def check_unpack_args(op: str, packed) -> None:
    check_uint8(op, "packed", packed)
    _common.check_at_least_1d(op, "packed", packed)


def _true_divide(x: torch.Tensor, divisor: int) -> torch.Tensor:
    # The scale division of quantize_reference: an IEEE fp32 division on every device (see quantize._true_divide).
    return x / torch.full_like(x, divisor)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def check_quantize_values(op: str, w: torch.Tensor, bits: int, group: int, symmetric: bool, scale_dtype) -> None:
    """Raises ValueError when w holds NaN/Inf or a group's scale overflows ``scale_dtype``."""
    bad = int((~torch.isfinite(w)).sum())
    if bad:
        raise ValueError(
            f"{op}: w holds NaN or Inf ({_plural(bad, 'non-finite value')}); quantization needs finite weights"
        )
    if w.numel() == 0:
        return
    out_features, in_features = w.shape
    g = in_features if group == 0 else group
    wg = w.detach().to(torch.float32).reshape(out_features, in_features // g, g)
    if symmetric:
        wanted = _true_divide(wg.abs().amax(dim=-1), (1 << (bits - 1)) - 1)
    else:
        wanted = _true_divide(wg.amax(dim=-1).clamp(min=0) - wg.amin(dim=-1).clamp(max=0), (1 << bits) - 1)
    overflow = ~torch.isfinite(wanted.to(scale_dtype))
    count = int(overflow.sum())
    if count:
        row, grp = (int(i) for i in overflow.nonzero()[0])
        value = float(wanted[row, grp])
        where = f"group {grp} of row {row} ({_plural(count, 'group')} in all)"
        if value == float("inf"):
            raise ValueError(f"{op}: w's range max - min overflows float32 in {where}; rescale w")
        raise ValueError(
            f"{op}: w's values are too large for {scale_dtype} scales: {where} needs scale {value:.6g}, above the "
            f"largest {scale_dtype} {torch.finfo(scale_dtype).max:.6g}; use scale_dtype=torch.float32 or "
            "torch.bfloat16, or rescale w"
        )


def check_int4_values(op: str, codes: torch.Tensor) -> None:
    """Raises ValueError when a code is above 15 (not an int4 value)."""
    count = int((codes > 15).sum())
    if count:
        raise ValueError(
            f"{op}: codes must be int4 values in [0, 15]; got {_plural(count, 'code')} above 15 "
            f"(largest {int(codes.max())})"
        )
