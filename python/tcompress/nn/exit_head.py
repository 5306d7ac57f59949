"""Exit heads: next-token logits read off an intermediate residual stream.

- Logit lens: the model's own final norm and head applied to the hidden state of any layer.
- Tuned lens: per layer an affine translator ``h -> h + A·h + b`` (A and b start at zero, so an untrained translator
  is the logit lens) before the final norm and head. ``A`` is full (d×d) or low rank (``A = P·Q``, rank r) to keep
  the heads small.

The norm and head are the model's own modules, handed in by whoever builds the heads (``recipes/exit_heads.py`` asks
``models/`` for them); they are held without being registered, so ``state_dict()`` holds the translators only and
saving the heads never copies the model's head.
"""

from __future__ import annotations

import torch
from torch import nn


class AffineTranslator(nn.Module):
    """h: (..., d) -> (..., d): ``h + h·Aᵀ + b``, with A (d, d) or ``A = P·Q`` (P (d, r), Q (r, d)); zero at init.

    In the low-rank form P is initialised small and random and Q at zero, so the product starts at zero yet both
    factors receive gradient from the first step.
    """

    def __init__(self, hidden_size: int, rank: int | None = None, *, seed: int = 0) -> None:
        super().__init__()
        if isinstance(hidden_size, bool) or not isinstance(hidden_size, int) or hidden_size < 1:
            raise ValueError(f"AffineTranslator: hidden_size must be a positive int; got {hidden_size!r}")
        if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= hidden_size):
            raise ValueError(f"AffineTranslator: rank must be None or an int in [1, {hidden_size}]; got {rank!r}")
        self.hidden_size = hidden_size
        self.rank = rank
        self.bias = nn.Parameter(torch.zeros(hidden_size))
        if rank is None:
            self.weight = nn.Parameter(torch.zeros(hidden_size, hidden_size))
        else:
            gen = torch.Generator().manual_seed(seed)
            self.down = nn.Parameter(torch.zeros(rank, hidden_size))  # Q: d -> r
            self.up = nn.Parameter(torch.randn(hidden_size, rank, generator=gen) / hidden_size**0.5)  # P: r -> d

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = h.to(self.bias.dtype)
        if self.rank is None:
            delta = nn.functional.linear(x, self.weight, self.bias)
        else:
            delta = nn.functional.linear(nn.functional.linear(x, self.down), self.up, self.bias)
        return (x + delta).to(h.dtype)

    def parameter_count(self) -> int:
        """The number of parameters: d² + d (full) or 2·d·r + d (low rank)."""
        return sum(p.numel() for p in self.parameters())


class ExitHeads(nn.Module):
    """Exit heads at chosen depths: ``logits(depth, h)`` with h (..., d) -> (..., vocab).

    ``depth`` counts blocks: the head at depth k reads the residual stream after k blocks (1 <= k < num_blocks; the
    full depth is the model itself). ``kind`` is ``"lens"`` (no translators) or ``"tuned"`` (one
    :class:`AffineTranslator` per depth, float32).

    Args:
        depths: the depths that have a head, strictly increasing.
        final_norm: the model's final norm (held, not registered).
        head: the model's output projection (held, not registered).
        hidden_size: d.
        kind: ``"lens"`` or ``"tuned"``.
        rank: the translators' rank (None: full d×d); only for ``"tuned"``.
    """

    KINDS = ("lens", "tuned")

    def __init__(
        self,
        depths: list[int] | tuple[int, ...],
        final_norm: nn.Module,
        head: nn.Module,
        hidden_size: int,
        kind: str = "tuned",
        rank: int | None = None,
    ) -> None:
        super().__init__()
        if kind not in self.KINDS:
            raise ValueError(f"ExitHeads: kind must be one of {', '.join(self.KINDS)}; got {kind!r}")
        depths = tuple(int(k) for k in depths)
        if not depths or any(k < 1 for k in depths) or list(depths) != sorted(set(depths)):
            raise ValueError(f"ExitHeads: depths must be strictly increasing ints >= 1; got {depths!r}")
        if kind == "lens" and rank is not None:
            raise ValueError(f"ExitHeads: rank applies to tuned heads only; got kind='lens' with rank={rank}")
        self.depths = depths
        self.kind = kind
        self.rank = rank
        self.hidden_size = hidden_size
        self._readout = (final_norm, head)  # a tuple, so nn.Module does not register (and save) the model's parts
        self.translators = nn.ModuleDict(
            {str(k): AffineTranslator(hidden_size, rank, seed=k) for k in depths} if kind == "tuned" else {}
        )

    def translate(self, depth: int, h: torch.Tensor) -> torch.Tensor:
        """h (..., d) -> (..., d): the translator at ``depth`` (identity for the logit lens)."""
        if depth not in self.depths:
            raise KeyError(f"ExitHeads: no head at depth {depth}; heads at depths {list(self.depths)}")
        return self.translators[str(depth)](h) if self.kind == "tuned" else h

    @property
    def head(self) -> nn.Module:
        """The model's output projection the heads read out through."""
        return self._readout[1]

    def head_input(self, depth: int, h: torch.Tensor) -> torch.Tensor:
        """h (..., d) -> (..., d): what the head multiplies: the translator, then the model's final norm."""
        norm, head = self._readout
        x = self.translate(depth, h)
        # The model may run in bf16 while the translators are fp32: read out in the model's dtype.
        return norm(x.to(head.weight.dtype))

    def logits(self, depth: int, h: torch.Tensor) -> torch.Tensor:
        """h (..., d) -> (..., vocab): translator, then the model's final norm and head."""
        return self.head(self.head_input(depth, h))

    def forward(self, depth: int, h: torch.Tensor) -> torch.Tensor:
        return self.logits(depth, h)

    def parameter_count(self) -> int:
        """Parameters the heads add to the model (the translators; the norm and head are the model's own)."""
        return sum(p.numel() for p in self.translators.parameters())

    def config(self) -> dict:
        """What rebuilds the heads around a model: depths, kind, rank, hidden size."""
        return {"depths": list(self.depths), "kind": self.kind, "rank": self.rank, "hidden_size": self.hidden_size}
