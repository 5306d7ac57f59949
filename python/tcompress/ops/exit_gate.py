"""Early-exit gate over logits in one pass over the vocabulary: per-row confidence, exit mask, compacted indices.

STUB CONTRACT (pre-wired): the public signatures below are fixed; the native kernels (online max / log-sum-exp,
never materialising the softmax) and the op registration replace the reference-only implementation.

Criteria (``confidence`` is what the threshold is compared with):
- ``"max_prob"``: the softmax maximum; exit when confidence >= threshold.
- ``"margin"``: top-1 minus top-2 probability; exit when confidence >= threshold.
- ``"entropy"``: the softmax entropy in nats; exit when confidence < threshold.
A row containing NaN is an error; -inf entries are probability 0.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

CRITERIA = ("max_prob", "margin", "entropy")


class ExitGate(NamedTuple):
    """confidence (rows,) float32; exit_mask (rows,) bool; exit_index / continue_index (n,) int64, stable order."""

    confidence: torch.Tensor
    exit_mask: torch.Tensor
    exit_index: torch.Tensor
    continue_index: torch.Tensor


def exit_gate_reference(logits: torch.Tensor, threshold: float, criterion: str = "max_prob") -> ExitGate:
    """logits (rows, vocab) -> :class:`ExitGate`, with softmax, max/topk/entropy, compare and nonzero in torch."""
    if criterion not in CRITERIA:
        raise ValueError(f"exit_gate: criterion must be one of {', '.join(CRITERIA)}; got {criterion!r}")
    if torch.isnan(logits).any():
        rows = torch.isnan(logits).any(dim=-1).nonzero().flatten().tolist()
        raise ValueError(f"exit_gate: logits contain NaN (rows {rows[:8]})")
    p = torch.softmax(logits.to(torch.float32), dim=-1)
    if criterion == "max_prob":
        confidence = p.amax(dim=-1)
        mask = confidence >= threshold
    elif criterion == "margin":
        top2 = p.topk(2, dim=-1).values
        confidence = top2[:, 0] - top2[:, 1]
        mask = confidence >= threshold
    else:
        logp = torch.log_softmax(logits.to(torch.float32), dim=-1)
        confidence = -(torch.where(p > 0, p * logp, torch.zeros_like(p))).sum(dim=-1)
        mask = confidence < threshold
    return ExitGate(confidence, mask, mask.nonzero().flatten(), (~mask).nonzero().flatten())


def exit_gate(logits: torch.Tensor, threshold: float, criterion: str = "max_prob") -> ExitGate:
    """logits (rows, vocab) -> :class:`ExitGate` (see the module docstring for the criteria)."""
    return exit_gate_reference(logits, threshold, criterion)
