"""LowRankLinear: a linear layer whose weight is a product of two thin maps, W ≈ A·B.

``B`` (rank, in) is ``in_proj`` and ``A`` (out, rank) is ``out_proj``; each is a bias-free ``nn.Linear`` or a
``QuantLinear`` (so "Q(A)·Q(B)" is a LowRankLinear with two quantized factors). Nothing here knows how the factors
were found: :mod:`tcompress.recipes.factorize` builds them from a truncated (optionally whitened) SVD.
"""

from __future__ import annotations

import torch
from torch import nn

from .quant_linear import QuantLinear, QuantSpec


def _check_factor_pair(a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None) -> None:
    if a.dim() != 2 or b.dim() != 2:
        raise ValueError(
            f"LowRankLinear: factors must be 2-D, A (out, rank) and B (rank, in); got A {tuple(a.shape)}, "
            f"B {tuple(b.shape)}"
        )
    if a.shape[1] != b.shape[0]:
        raise ValueError(
            f"LowRankLinear: A (out, rank) and B (rank, in) must share the rank; got A {tuple(a.shape)}, "
            f"B {tuple(b.shape)}"
        )
    if a.shape[1] < 1:
        raise ValueError(f"LowRankLinear: rank must be ≥ 1; got A {tuple(a.shape)}, B {tuple(b.shape)}")
    if bias is not None and tuple(bias.shape) != (a.shape[0],):
        raise ValueError(f"LowRankLinear: bias must have shape ({a.shape[0]},); got {tuple(bias.shape)}")


class LowRankLinear(nn.Module):
    """x (..., in_features) -> (..., out_features) = out_proj(in_proj(x)) + bias, i.e. x·Bᵀ·Aᵀ + bias.

    Submodules: ``in_proj`` (in_features -> rank, weight B (rank, in)) and ``out_proj`` (rank -> out_features,
    weight A (out, rank)), each a bias-free ``nn.Linear`` or ``QuantLinear``. Buffer ``bias`` (out,) when the
    replaced layer had one. Parameters stored: rank·(in + out) (+ out for the bias) instead of in·out.
    """

    def __init__(self, in_proj: nn.Module, out_proj: nn.Module, bias: torch.Tensor | None = None):
        super().__init__()
        for label, m in (("in_proj", in_proj), ("out_proj", out_proj)):
            if not isinstance(m, (nn.Linear, QuantLinear)):
                raise TypeError(f"LowRankLinear: {label} must be an nn.Linear or a QuantLinear; got {type(m).__name__}")
            if getattr(m, "bias", None) is not None:
                raise ValueError(f"LowRankLinear: {label} must have no bias (the layer keeps one bias of its own)")
        if in_proj.out_features != out_proj.in_features:
            raise ValueError(
                f"LowRankLinear: in_proj gives {in_proj.out_features} features but out_proj takes "
                f"{out_proj.in_features}; both are the rank"
            )
        self.in_features = in_proj.in_features
        self.out_features = out_proj.out_features
        self.rank = in_proj.out_features
        self.in_proj = in_proj
        self.out_proj = out_proj
        if bias is not None and tuple(bias.shape) != (self.out_features,):
            raise ValueError(f"LowRankLinear: bias must have shape ({self.out_features},); got {tuple(bias.shape)}")
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    @classmethod
    def from_factors(
        cls,
        a: torch.Tensor,
        b: torch.Tensor,
        bias: torch.Tensor | None = None,
        quant: QuantSpec | None = None,
        name: str = "",
    ) -> LowRankLinear:
        """A (out, rank), B (rank, in), bias (out,) or None -> a LowRankLinear computing x·(A·B)ᵀ + bias.

        With ``quant``, both factors are rounded to nearest into ``QuantLinear`` s (each factor's groups run along
        its own input: ``rank`` for A, ``in`` for B, so ``quant.group_size`` must divide both). The factors are
        stored in fp32 (the dtype of the tensors given, for plain factors).

        Raises:
            ValueError: mismatched shapes, rank 0, or (quantized) a group size that does not divide a factor's input.
        """
        _check_factor_pair(a, b, bias)
        a, b = a.detach(), b.detach()
        if quant is None:
            in_proj = nn.Linear(b.shape[1], b.shape[0], bias=False, device=b.device, dtype=b.dtype)
            out_proj = nn.Linear(a.shape[1], a.shape[0], bias=False, device=a.device, dtype=a.dtype)
            with torch.no_grad():
                in_proj.weight.copy_(b)
                out_proj.weight.copy_(a)
        else:
            label = f"{name}." if name else ""
            in_proj = QuantLinear.from_linear(_bare_linear(b), quant, name=f"{label}in_proj (B, rank x in)")
            out_proj = QuantLinear.from_linear(_bare_linear(a), quant, name=f"{label}out_proj (A, out x rank)")
        return cls(in_proj, out_proj, bias)

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(A (out, rank), B (rank, in)) in fp32 as this layer multiplies by them (dequantized when quantized)."""
        return _weight_of(self.out_proj), _weight_of(self.in_proj)

    def effective_weight(self) -> torch.Tensor:
        """(out, in) fp32: A·B, the dense weight this layer applies."""
        a, b = self.factors()
        return a @ b

    def truncate_(self, rank: int) -> LowRankLinear:
        """Keeps the first ``rank`` columns of A and rows of B (in place; returns self).

        For factors from a truncated SVD, ordered by singular value, this is exactly the rank-``rank`` truncation
        (a sweep over ranks factorizes once and truncates). Only floating-point factors can be truncated.

        Raises:
            ValueError: rank not in [1, current rank]; TypeError: quantized factors.
        """
        if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= self.rank:
            raise ValueError(f"LowRankLinear.truncate_: rank must be an int in [1, {self.rank}]; got {rank!r}")
        if not (isinstance(self.in_proj, nn.Linear) and isinstance(self.out_proj, nn.Linear)):
            raise TypeError("LowRankLinear.truncate_: quantized factors cannot be truncated; factorize again instead")
        if rank == self.rank:
            return self
        with torch.no_grad():
            b = self.in_proj.weight[:rank].clone()
            a = self.out_proj.weight[:, :rank].contiguous()
        self.in_proj = _bare_linear(b)
        self.out_proj = _bare_linear(a)
        self.rank = rank
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.out_proj(self.in_proj(x))
        return y if self.bias is None else y + self.bias.to(y.dtype)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}, "
            f"bias={self.bias is not None}"
        )


def _bare_linear(weight: torch.Tensor) -> nn.Linear:
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=False, device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        linear.weight.copy_(weight)
    return linear


def _weight_of(module: nn.Module) -> torch.Tensor:
    if isinstance(module, QuantLinear):
        return module.dequantized_weight()
    return module.weight.detach().float()
