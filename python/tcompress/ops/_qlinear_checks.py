"""Checks of the qlinear family's arguments (weights in the format of :mod:`tcompress.ops.quantize`, float or
integer activations), shared by :mod:`.qlinear` and :mod:`.int8_activations`. Messages name the op, the argument,
what was expected and what was given.
"""

from __future__ import annotations

import torch

from . import _common
from .quantize import SCALE_DTYPES

# Columns per group up to which the int32 accumulators of the integer kernels are exact: 255 * 128 * 65536 < 2^31.
MAX_GROUP = 65536
ACT_BITS = (4, 8)


def group_or_none(group_size: int | None) -> int | None:
    """The schema's per-channel spellings (0, -1) as None."""
    return None if group_size is None or group_size in (0, -1) else group_size


def check_x(op: str, x: torch.Tensor, k: int, device: torch.device) -> None:
    """Raises unless x is a floating tensor (..., k) on ``device``."""
    _common.check_float(op, "x", x)
    _common.check_at_least_1d(op, "x", x)
    if x.device != device:
        raise ValueError(f"{op}: the weights are on {device} but x is on {x.device}")
    if x.shape[-1] != k:
        raise ValueError(f"{op}: x has inner size {x.shape[-1]} but the weight expects in_features {k}")


ACT_GRANULARITIES = ("per_token", "per_group")


def check_act_granularity(op: str, act_granularity: str, act_bits: int | None) -> None:
    """Raises unless ``act_granularity`` is "per_token" (one activation scale per row) or "per_group" (one per row
    and weight group), the latter with integer activations (``act_bits`` not None)."""
    if not isinstance(act_granularity, str) or act_granularity not in ACT_GRANULARITIES:
        raise ValueError(
            f"{op}: act_granularity must be 'per_token' (one activation scale per row) or 'per_group' (one per row "
            f"and weight group); got {act_granularity!r}"
        )
    if act_granularity == "per_group" and act_bits is None:
        raise ValueError(f"{op}: act_granularity 'per_group' needs integer activations (act_bits 8 or 4); got "
                         "act_bits None")  # fmt: skip


def check_act_bits(op: str, act_bits: int, k: int, group_size: int | None) -> None:
    """Raises unless ``act_bits`` is 8 or 4 and a group's columns keep the int32 accumulators exact."""
    if isinstance(act_bits, bool) or act_bits not in ACT_BITS:
        raise ValueError(f"{op}: act_bits must be 8 or 4 (per-token activation codes); got {act_bits!r}")
    columns = k if group_size is None else group_size
    if columns > MAX_GROUP:
        what = f"group_size {group_size}" if group_size is not None else f"in_features {k} (one group per channel)"
        raise ValueError(
            f"{op}: a group of at most {MAX_GROUP} columns keeps the int32 accumulators exact; got {what}. "
            "Use a smaller group_size"
        )


def check_weights(
    op: str,
    device: torch.device,
    qweight: torch.Tensor,
    scales: torch.Tensor,
    zeros: torch.Tensor | None,
    bits: int,
    group_size: int | None,
    bias: torch.Tensor | None,
    act_bits: int | None = None,
    x: torch.Tensor | None = None,
) -> tuple[int, int]:
    """Validates the weight operands of a qlinear on ``device``; returns (in_features K, out_features N).

    ``group_size`` is None (one group per output channel) or a positive divisor of K; ``act_bits`` None (float
    activations), 8 or 4. ``x``, when given, must have K columns (checked as soon as K is known: a wrong x is the
    likelier mistake than wrong scales).
    """
    if isinstance(bits, bool) or bits not in (4, 8):
        raise ValueError(f"{op}: bits must be 4 or 8; got {bits!r}")
    for name, t in (("qweight", qweight), ("scales", scales), ("zeros", zeros), ("bias", bias)):
        if t is None:
            continue
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{op}: {name} must be a torch.Tensor; got {type(t).__name__}")
        if t.device != device:
            raise ValueError(f"{op}: {name} must be on x's device {device}; got {t.device}")
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
    if x is not None and x.shape[-1] != k:
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
    if act_bits is not None:
        check_act_bits(op, act_bits, k, group_size)
    return k, n


def check_call(op, x, qweight, scales, zeros, bits, group_size, bias, act_bits=None) -> tuple[int, int]:
    """Validates a whole qlinear call (x first, as its errors are the likeliest); returns (K, N)."""
    _common.check_float(op, "x", x)
    _common.check_at_least_1d(op, "x", x)
    return check_weights(op, x.device, qweight, scales, zeros, bits, group_size, bias, act_bits, x)
