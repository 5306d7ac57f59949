"""HeadGram: WᵀW of a head weight W (vocab, d), decomposed once, which the unembedding directions of every layer share;
and the model's head with the final norm's scale folded in, W = W_U · diag(γ), that the activation geometry reads. The
one part of the geometry that touches the model (through accelerate's hooks when the head is offloaded).
"""

from __future__ import annotations

import dataclasses

import torch

from .. import models

# Eigenvalues below this fraction of the largest are treated as zero (directions without variance; also used by the
# whitening in :mod:`tcompress.analysis.geometry`).
RELATIVE_RANK_TOLERANCE = 1e-10

# Elements of the head weight turned into float64 at a time when forming WᵀW (256 MiB of float64 per block of rows).
_GRAM_CHUNK_ELEMENTS = 1 << 25


@dataclasses.dataclass(frozen=True)
class HeadGram:
    """WᵀW = B diag(s²) Bᵀ for a head weight W (vocab, d), over the range of W: what the unembedding directions of
    every layer share, so it is computed once per model (:meth:`of`, :func:`folded_head_gram`).

    Attributes:
        basis: (d, r) B, orthonormal eigenvectors of WᵀW with nonzero eigenvalue (r = rank W), float64.
        singular: (r,) s, the matching singular values of W (square roots of the eigenvalues), float64.
    """

    basis: torch.Tensor
    singular: torch.Tensor

    @property
    def hidden_size(self) -> int:
        """d."""
        return self.basis.shape[0]

    @classmethod
    def of(cls, head_weight: torch.Tensor, scale: torch.Tensor | None = None) -> HeadGram:
        """W = ``head_weight`` (vocab, d) (times ``scale`` (d,) per column, if given) -> :class:`HeadGram` of W.

        Computed in float64 on the weight's device, a block of rows at a time (no float64 copy of W is made).

        Raises:
            ValueError: a weight that is not a non-empty 2-D floating tensor, or a scale that is not (d,).
        """
        if (
            not isinstance(head_weight, torch.Tensor)
            or head_weight.dim() != 2
            or head_weight.numel() == 0
            or not head_weight.dtype.is_floating_point
        ):
            got = (
                f"{tuple(head_weight.shape)} {head_weight.dtype}"
                if isinstance(head_weight, torch.Tensor)
                else type(head_weight).__name__
            )
            raise ValueError(f"HeadGram.of: head_weight must be a non-empty (vocab, d) floating tensor; got {got}")
        d = head_weight.shape[1]
        if scale is not None and (not isinstance(scale, torch.Tensor) or tuple(scale.shape) != (d,)):
            got = tuple(scale.shape) if isinstance(scale, torch.Tensor) else type(scale).__name__
            raise ValueError(f"HeadGram.of: scale must be ({d},) to match head_weight; got {got}")
        weight = head_weight.detach()
        factor = None if scale is None else scale.detach().to(device=weight.device, dtype=torch.float64)
        gram = torch.zeros(d, d, dtype=torch.float64, device=weight.device)
        rows = max(1, _GRAM_CHUNK_ELEMENTS // d)
        for start in range(0, weight.shape[0], rows):
            chunk = weight[start : start + rows].double()
            if factor is not None:
                chunk = chunk * factor[None, :]
            gram.addmm_(chunk.T, chunk)
        values, vectors = torch.linalg.eigh(gram)
        keep = values > RELATIVE_RANK_TOLERANCE * float(values.max())
        return cls(basis=vectors[:, keep], singular=values[keep].sqrt())


def folded_head_weight(model: torch.nn.Module) -> torch.Tensor:
    """(vocab, d): the model's head weight times the final norm's scale (W_U · diag(γ)), float64 on the CPU.

    The final norm's centring (LayerNorm) and per-token scaling are not folded (see the module docstring). Works on
    offloaded weights (read through :func:`tcompress.models.materialized`). For the unembedding directions,
    :func:`folded_head_gram` needs only a (d, d) float64 matrix, not this (vocab, d) copy.
    """
    spec = models.architecture(model)
    head, norm = spec.head(model), spec.final_norm(model)
    with models.materialized(head), models.materialized(norm):
        weight = head.weight.detach().double().cpu()
        gamma = getattr(norm, "weight", None)
        if gamma is not None:
            weight = weight * gamma.detach().double().cpu()[None, :]
    return weight


def folded_head_gram(model: torch.nn.Module) -> HeadGram:
    """:class:`HeadGram` of the folded head W_U · diag(γ) (see :func:`folded_head_weight`).

    Computed in float64 on the head's execution device (offloaded weights are read through
    :func:`tcompress.models.materialized`), a block of rows at a time, and left there.
    """
    spec = models.architecture(model)
    head, norm = spec.head(model), spec.final_norm(model)
    with models.materialized(head), models.materialized(norm):
        weight = head.weight
        gamma = getattr(norm, "weight", None)
        return HeadGram.of(weight, None if gamma is None else gamma.to(weight.device))
