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
from ..hadamard.constructions import factor_size

# float64 elements per slice when a weight is transformed offline a slice of rows at a time (32 MiB): the rotation
# recipe uses the same bound for its tables.
FLOAT64_SLICE_ELEMENTS = 1 << 22


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
    def from_linear(
        cls, weight: torch.Tensor, bias: torch.Tensor | None, name: str = "", *, in_place: bool = False
    ) -> HadamardLinear:
        """weight (out, in), bias (out,) or None -> a HadamardLinear computing the same map (W H fused offline).

        Args:
            in_place: fuse H into ``weight`` itself and let the new layer share it (and ``bias``): no second copy of
                the weight (Mistral-7B's down projections are 3.8 GB in bf16), but ``weight`` no longer holds W. The
                rotation recipe uses it on a model it rewrites anyway. Ignored for a non-contiguous ``weight`` (the
                transposed view of a Conv1D weight), which is copied. False: a new weight, ``weight`` untouched.

        Raises:
            ValueError: ``in`` has no Hadamard construction (e.g. 172: the message lists the supported factors).
        """
        out_features, in_features = weight.shape
        check_hadamard_size(in_features, f"module {name!r}" if name else "HadamardLinear")
        # Built on meta: the parameters are assigned below, so nn.Linear's random initialisation is never paid for.
        new = cls(in_features, out_features, bias=bias is not None, dtype=weight.dtype, device="meta")
        with torch.no_grad():
            # A transposed view (GPT-2's Conv1D) is not shared: the layer's weight must be contiguous (serialization).
            in_place = in_place and weight.is_contiguous()
            target = weight.detach() if in_place else torch.empty_like(weight, memory_format=torch.contiguous_format)
            # W H row by row with the fast transform (O(out·in·log in)), not a dense product with an (in, in) H (at
            # Mistral's 14336 a 1.6 GB float64 matrix and ~3 TFLOP per layer), a slice of rows at a time (rows
            # transform independently): float64 temporaries of ~32 MiB, not ~1 GB for Mistral-7B's down_proj.
            step = max(1, FLOAT64_SLICE_ELEMENTS // in_features)
            for part, out in zip(weight.detach().split(step), target.split(step)):
                out.copy_(ops.hadamard_reference(part.to(torch.float64)).to(weight.dtype))
            new.weight = nn.Parameter(target, requires_grad=weight.requires_grad)
            if bias is not None:
                new.bias = nn.Parameter(bias.detach() if in_place else bias.detach().clone(), bias.requires_grad)
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(ops.hadamard_transform(x))


def matmul_input(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """x (..., in) -> (..., in): the input as ``module``'s matrix product sees it — after the online Hadamard transform
    for a :class:`HadamardLinear` or a QuantLinear with ``online_hadamard``, ``x`` itself for any other layer (what a
    per-token activation quantizer would see)."""
    if isinstance(module, HadamardLinear) or getattr(module, "online_hadamard", False) is True:
        return ops.hadamard_transform(x)
    return x
