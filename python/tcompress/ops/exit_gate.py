"""Early-exit gate over logits in one pass over the vocabulary: per-row confidence, exit mask, compacted indices.

Criteria (``confidence`` is what the threshold is compared with, in float32):
- ``"max_prob"``: the softmax maximum; exit when confidence >= threshold.
- ``"margin"``: top-1 minus top-2 probability; exit when confidence >= threshold. The second probability counts
  ties: two equal maxima give a margin of 0. With a vocabulary of 1 the second probability is 0 (margin 1).
- ``"entropy"``: the softmax entropy in nats; exit when confidence < threshold.

Rows without a softmax are errors, never silent exits: a row holding NaN or +inf, or whose every entry is -inf,
raises ValueError naming the first such row. -inf entries (masked tokens) are probability 0.

The native kernels (CPU: AVX-512 / AVX2 / scalar, chosen at load; CUDA: one block per row) never materialise the
softmax: they keep the running maximum m, S = sum exp(l - m) and T = sum exp(l - m)(l - m), rescaled when m grows,
and the top-2 logits; max_prob = 1/S, margin = (1 - exp(l2 - m))/S, entropy = log S - T/S. exp is a polynomial
(relative error ~2e-7); the confidence agrees with the softmax reference to ~1e-6 relative.

Registered ops (namespace ``tcompress``; see :mod:`._op` for how every op is registered and called). They return
fixed-size tensors; the data-dependent compaction (``nonzero``) is done with torch ops
outside the custom op, so that ``torch.compile`` can trace it like any other ``nonzero``:

- ``exit_gate_stats(Tensor logits, float threshold, str criterion) -> (Tensor confidence, Tensor exit_mask,
  Tensor argmax)``
- ``exit_gate_head_stats(Tensor hidden, Tensor weight, Tensor? bias, float threshold, str criterion)
  -> (Tensor confidence, Tensor exit_mask, Tensor token)``
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from . import _common
from ._op import Op, OpDeclaration

CRITERIA = ("max_prob", "margin", "entropy")
_CRITERION_CODES = {name: code for code, name in enumerate(CRITERIA)}  # tc_exit_criterion
_OP = "tcompress.ops.exit_gate"
_HEAD_OP = "tcompress.ops.exit_gate_head"


class ExitGate(NamedTuple):
    """confidence (rows,) float32; exit_mask (rows,) bool; exit_index / continue_index (n,) int64, stable order."""

    confidence: torch.Tensor
    exit_mask: torch.Tensor
    exit_index: torch.Tensor
    continue_index: torch.Tensor


class ExitGateHead(NamedTuple):
    """The gate of one token's head logits, and the token an exit emits: token (1,) int64, the logits' argmax."""

    gate: ExitGate
    token: torch.Tensor


# ---------------------------------------------------------------------------------------------------------------
# Checks.
# ---------------------------------------------------------------------------------------------------------------


def _check_criterion(op: str, criterion: str) -> None:
    if criterion not in CRITERIA:
        raise ValueError(f"{op}: criterion must be one of {', '.join(CRITERIA)}; got {criterion!r}")


def _check_threshold(op: str, threshold: float) -> float:
    if isinstance(threshold, torch.Tensor) or not isinstance(threshold, (int, float)) or isinstance(threshold, bool):
        raise TypeError(f"{op}: threshold must be a Python float; got {type(threshold).__name__}")
    if math.isnan(threshold):
        raise ValueError(f"{op}: threshold must be a number; got NaN")
    return float(threshold)


def _check_logits(op: str, logits: torch.Tensor) -> None:
    _common.check_float(op, "logits", logits)
    if logits.dim() != 2:
        raise ValueError(
            f"{op}: logits must be 2-D (rows, vocab); got shape {tuple(logits.shape)}"
            + (" (for one row pass logits[None])" if logits.dim() == 1 else "")
        )
    if logits.shape[1] == 0:
        raise ValueError(f"{op}: logits must have a vocabulary of at least 1 entry; got shape {tuple(logits.shape)}")


def _check_has_values(op: str, name: str, t: torch.Tensor) -> None:
    """Raises ValueError for a tensor without data (the meta device): which rows exit depends on the values."""
    if t.device.type == "meta":
        raise ValueError(
            f"{op}: {name} is on the meta device (no values); the exit and continue indices depend on the values, so "
            "the gate needs a real tensor (for shapes alone, call torch.ops.tcompress.exit_gate_stats, which has a "
            "fake implementation)"
        )


def _bad_row_message(op: str, row: int, kind: str) -> str:
    return f"{op}: logits row {row} {kind} (the first such row; a row without a softmax is an error, not an exit)"


def _raise_on_bad_rows(logits: torch.Tensor) -> None:
    """ValueError naming the first row with NaN, +inf or only -inf (the words the native kernels use)."""
    nan = torch.isnan(logits).any(dim=-1)
    posinf = torch.isposinf(logits).any(dim=-1)
    all_neginf = torch.isneginf(logits).all(dim=-1)
    bad = (nan | posinf | all_neginf).nonzero().flatten()
    if bad.numel():
        row = int(bad[0])
        kind = "holds NaN" if nan[row] else "holds +inf" if posinf[row] else "is all -inf"
        raise ValueError(_bad_row_message("exit_gate", row, kind))


# ---------------------------------------------------------------------------------------------------------------
# Pure-torch reference: softmax, max / top-2 / entropy, compare, nonzero.
# ---------------------------------------------------------------------------------------------------------------


def _reference_stats(logits: torch.Tensor, threshold: float, criterion: str):
    """logits (rows, vocab) -> confidence (rows,) fp32, exit_mask (rows,) bool, argmax (rows,) int64."""
    _raise_on_bad_rows(logits)
    x = logits.to(torch.float32)
    p = torch.softmax(x, dim=-1)
    if criterion == "max_prob":
        confidence = p.amax(dim=-1)
    elif criterion == "margin":
        if x.shape[-1] == 1:
            confidence = p[:, 0].clone()
        else:
            top2 = p.topk(2, dim=-1).values
            confidence = top2[:, 0] - top2[:, 1]
    else:
        logp = torch.log_softmax(x, dim=-1)
        confidence = -(torch.where(p > 0, p * logp, torch.zeros_like(p))).sum(dim=-1)
    mask = confidence < threshold if criterion == "entropy" else confidence >= threshold
    return confidence, mask, x.argmax(dim=-1)


def exit_gate_reference(logits: torch.Tensor, threshold: float, criterion: str = "max_prob") -> ExitGate:
    """logits (rows, vocab) -> :class:`ExitGate`, with softmax, max/topk/entropy, compare and nonzero in torch."""
    _check_criterion("exit_gate_reference", criterion)
    _check_logits("exit_gate_reference", logits)
    threshold = _check_threshold("exit_gate_reference", threshold)
    confidence, mask, _ = _reference_stats(logits, threshold, criterion)
    return ExitGate(confidence, mask, mask.nonzero().flatten(), (~mask).nonzero().flatten())


def _head_reference_logits(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    logits = hidden.reshape(1, -1).to(torch.float32) @ weight.to(torch.float32).t()
    return logits if bias is None else logits + bias.to(torch.float32)


# ---------------------------------------------------------------------------------------------------------------
# Native launches, through ``native`` (``_C`` for CPU tensors, ``_cuda`` for CUDA ones).
# ---------------------------------------------------------------------------------------------------------------


def _launch(native, logits: torch.Tensor, threshold: float, criterion: str):
    rows, vocab = logits.shape
    # Rows the kernel can address with one stride are read in place; other layouts (expanded or overlapping rows,
    # a transposed view) are copied, as every other op does.
    logits, _, row_stride = _common.rows_of(logits)
    device = logits.device
    confidence = torch.empty(rows, dtype=torch.float32, device=device)
    mask = torch.empty(rows, dtype=torch.bool, device=device)
    argmax = torch.empty(rows, dtype=torch.int64, device=device)
    if rows == 0:
        return confidence, mask, argmax
    args = (logits.data_ptr(), _common.dtype_code(logits.dtype), rows, vocab, row_stride, _CRITERION_CODES[criterion],
            threshold, confidence.data_ptr(), mask.data_ptr(), argmax.data_ptr())  # fmt: skip
    if device.type == "cpu":
        native.exit_gate(*args, torch.get_num_threads())
        return confidence, mask, argmax
    bad = torch.full((1,), torch.iinfo(torch.int64).max, dtype=torch.int64, device=device)
    native.exit_gate(*args, bad.data_ptr(), device.index, _common.cuda_stream_handle(logits))
    code = int(bad.item())  # a synchronization: a bad row must raise here, not exit silently later
    if code != torch.iinfo(torch.int64).max:
        kind = {1: "holds NaN", 2: "holds +inf", 3: "is all -inf"}.get(code % 4, "has no softmax")
        raise ValueError(_bad_row_message("exit_gate", code // 4, kind))
    return confidence, mask, argmax


def _launch_head(native, hidden: torch.Tensor, weight: torch.Tensor, bias, threshold: float, criterion: str):
    vocab, d = weight.shape
    if hidden.device.type != "cpu":
        # CUDA: the logits are materialised, then gated by the exit_gate kernel.
        return _launch(native, _head_reference_logits(hidden, weight, bias), threshold, criterion)
    h = hidden.reshape(-1).to(torch.float32).contiguous()
    weight, _, weight_row_stride = _common.rows_of(weight)  # expanded / overlapping rows are copied
    b = None if bias is None else bias.to(torch.float32).contiguous()
    confidence = torch.empty(1, dtype=torch.float32)
    mask = torch.empty(1, dtype=torch.bool)
    token = torch.empty(1, dtype=torch.int64)
    native.exit_gate_head(h.data_ptr(), weight.data_ptr(), _common.dtype_code(weight.dtype), vocab, d,
                          weight_row_stride, 0 if b is None else b.data_ptr(),
                          _CRITERION_CODES[criterion], threshold, confidence.data_ptr(), mask.data_ptr(),
                          token.data_ptr(), torch.get_num_threads())  # fmt: skip
    return confidence, mask, token


# ---------------------------------------------------------------------------------------------------------------
# The declarations. They return fixed-size tensors (compile-friendly); the public functions compact.
# ---------------------------------------------------------------------------------------------------------------


def _check_gate(label, logits, threshold, criterion) -> None:
    _check_criterion(label, criterion)
    _check_logits(label, logits)
    _check_threshold(label, threshold)


def _check_head(label, hidden, weight, bias, threshold, criterion) -> None:
    _check_criterion(label, criterion)
    _check_threshold(label, threshold)
    _common.check_float(label, "hidden", hidden)
    _common.check_float(label, "head_weight", weight)
    if weight.dim() != 2 or weight.shape[0] == 0 or weight.shape[1] == 0:
        raise ValueError(f"{label}: head_weight must be 2-D (vocab, d) and non-empty; got {tuple(weight.shape)}")
    d = weight.shape[1]
    if hidden.shape not in ((d,), (1, d)):
        raise ValueError(f"{label}: hidden must have shape ({d},) or (1, {d}) (batch 1); got {tuple(hidden.shape)}")
    if hidden.device != weight.device:
        raise ValueError(f"{label}: hidden is on {hidden.device} but head_weight is on {weight.device}")
    if bias is not None:
        _common.check_float(label, "head_bias", bias)
        if bias.shape != (weight.shape[0],) or bias.device != weight.device:
            raise ValueError(
                f"{label}: head_bias must have shape ({weight.shape[0]},) on {weight.device}; "
                f"got {tuple(bias.shape)} on {bias.device}"
            )


def _empty_stats(like: torch.Tensor, rows: int):
    return (like.new_empty(rows, dtype=torch.float32), like.new_empty(rows, dtype=torch.bool),
            like.new_empty(rows, dtype=torch.int64))  # fmt: skip


EXIT_GATE = Op(
    OpDeclaration(
        name="exit_gate_stats",
        schema="(Tensor logits, float threshold, str criterion) -> (Tensor, Tensor, Tensor)",
        check=_check_gate,
        fake=lambda _, logits, threshold, criterion: _empty_stats(logits, logits.shape[0]),
        reference=_reference_stats,
        launch=lambda native, _, *args: _launch(native, *args),
        differentiable=(),
    )
)
EXIT_GATE_HEAD = Op(
    OpDeclaration(
        name="exit_gate_head_stats",
        schema="(Tensor hidden, Tensor weight, Tensor? bias, float threshold, str criterion) "
        "-> (Tensor, Tensor, Tensor)",
        check=_check_head,
        fake=lambda _, hidden, weight, *args: _empty_stats(weight, 1),
        reference=lambda hidden, weight, bias, threshold, criterion: _reference_stats(
            _head_reference_logits(hidden, weight, bias), threshold, criterion
        ),
        launch=lambda native, _, *args: _launch_head(native, *args),
        differentiable=(),
    )
)


# ---------------------------------------------------------------------------------------------------------------
# Public API.
# ---------------------------------------------------------------------------------------------------------------


def _compact(confidence: torch.Tensor, mask: torch.Tensor) -> ExitGate:
    # torch's nonzero is stable (row order) and, measured in bench/bench_exit_gate.py, costs a few microseconds
    # at 1..512 rows, so the compaction stays outside the custom op (fixed output sizes, compile-friendly).
    return ExitGate(confidence, mask, mask.nonzero().flatten(), (~mask).nonzero().flatten())


def exit_gate(logits: torch.Tensor, threshold: float, criterion: str = "max_prob") -> ExitGate:
    """logits (rows, vocab) -> :class:`ExitGate` (see the module docstring for the criteria).

    Args:
        logits: float32, float16 or bfloat16, 2-D (rows, vocab), on CPU or CUDA; rows that are a slice of a wider
            buffer are read in place; other layouts (expanded, overlapping or transposed rows) are copied.
        threshold: a finite or infinite Python float (NaN is rejected).
        criterion: ``"max_prob"``, ``"margin"`` or ``"entropy"``.

    Raises:
        TypeError: logits is not a float tensor, or threshold is not a Python number.
        ValueError: logits is not 2-D or has an empty vocabulary or is on the meta device, the criterion is unknown,
            the threshold is NaN, or a row holds NaN or +inf or only -inf (the message names the first such row).
    """
    if isinstance(logits, torch.Tensor):
        _check_has_values(_OP, "logits", logits)
    confidence, mask, _ = EXIT_GATE.call(_OP, logits, threshold, criterion)
    return _compact(confidence, mask)


def exit_gate_head(
    hidden: torch.Tensor,
    head_weight: torch.Tensor,
    threshold: float,
    criterion: str = "max_prob",
    head_bias: torch.Tensor | None = None,
) -> ExitGateHead:
    """hidden (d,) or (1, d), head_weight (vocab, d) -> :class:`ExitGateHead`: the gate of ``hidden @ W^T (+ b)``.

    For batch-1 decoding: on CPU the head GEMV and the gate run together, the logits being consumed chunk by chunk
    into the online statistics and never stored (threads split the vocabulary and merge their statistics). On CUDA
    the logits are computed with torch and gated by the exit_gate kernel. Apply the final norm to ``hidden`` first.

    Args:
        hidden: float tensor of d elements (converted to float32).
        head_weight: (vocab, d) float32, float16 or bfloat16 on hidden's device.
        threshold, criterion: as in :func:`exit_gate`.
        head_bias: optional (vocab,) float tensor.

    Returns:
        ``ExitGateHead(gate, token)``: gate over one row, token (1,) int64 the first argmax of the logits.
    """
    if isinstance(hidden, torch.Tensor):
        _check_has_values(_HEAD_OP, "hidden", hidden)
    confidence, mask, token = EXIT_GATE_HEAD.call(_HEAD_OP, hidden, head_weight, head_bias, threshold, criterion)
    return ExitGateHead(_compact(confidence, mask), token)
