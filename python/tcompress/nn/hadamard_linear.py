"""HadamardLinear: a floating-point linear layer that applies the orthonormal Hadamard transform to its input first.

A rotation recipe multiplies a weight by H offline (W <- W H, in float64) and leaves the matching transform of the
input to run time, ``y = (x H) (W H)^T = x W^T``: the product is unchanged, but the layer's input is spread evenly
over its features, which is what low-bit activation and weight quantization want. Quantizing a HadamardLinear gives
a :class:`~tcompress.nn.QuantLinear` with ``online_hadamard=True``.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import ops
from ..hadamard_constructions import factor_size


def check_hadamard_size(n: int, label: str) -> None:
    """Raises ValueError naming ``label`` when ``n`` input features have no Hadamard construction."""
    try:
        factor_size(n)
    except ValueError as exc:
        raise ValueError(f"{label}: an online Hadamard transform needs in_features = K * 2^m; {exc}") from None


class HadamardLinear(nn.Linear):
    """x (..., in_features) -> (..., out_features): ``hadamard_transform(x) @ W^T + b`` (W already holds the H).

    Build it with :meth:`from_linear`, which folds H into the weight so the layer computes what the original did.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, **kwargs):
        check_hadamard_size(in_features, "HadamardLinear")
        super().__init__(in_features, out_features, bias=bias, **kwargs)

    @classmethod
    def from_linear(cls, weight: torch.Tensor, bias: torch.Tensor | None, name: str = "") -> HadamardLinear:
        """weight (out, in), bias (out,) or None -> a HadamardLinear computing the same map (W H fused offline).

        Raises:
            ValueError: ``in`` has no Hadamard construction (e.g. 172: the message lists the supported factors).
        """
        out_features, in_features = weight.shape
        check_hadamard_size(in_features, f"module {name!r}" if name else "HadamardLinear")
        new = cls(in_features, out_features, bias=bias is not None, dtype=weight.dtype, device=weight.device)
        with torch.no_grad():
            # W H row by row with the fast transform (O(out·in·log in)), not a dense product with an (in, in) H:
            # at Mistral's 14336 that would be a 1.6 GB float64 matrix and ~3 TFLOP per layer.
            new.weight.copy_(ops.hadamard_reference(weight.detach().to(torch.float64)).to(weight.dtype))
            if bias is not None:
                new.bias.copy_(bias.detach())
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(ops.hadamard_transform(x))
