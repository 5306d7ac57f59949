"""ScaleFreeRMSNorm: the norm a rotated model keeps once every norm's scale (and bias) was fused into the projections
that read it. It has no parameters, so it commutes with any orthogonal rotation of its input: rms(x Q) = rms(x)."""

from __future__ import annotations

import torch
from torch import nn


class ScaleFreeRMSNorm(nn.Module):
    """x (..., dim) -> (..., dim): ``x / sqrt(mean(x^2) + eps)``, computed in fp32, returned in x's dtype.

    Args:
        dim: the normalized size (checked against the input, and recorded so a saved model can rebuild it).
        eps: added to the mean square, as the norm it replaces did (LayerNorm's ``eps``, RMSNorm's
            ``variance_epsilon``).
    """

    def __init__(self, dim: int, eps: float):
        super().__init__()
        if not isinstance(dim, int) or dim <= 0:
            raise ValueError(f"ScaleFreeRMSNorm: dim must be a positive int; got {dim!r}")
        if not (isinstance(eps, (int, float)) and eps >= 0):
            raise ValueError(f"ScaleFreeRMSNorm: eps must be a non-negative float; got {eps!r}")
        self.dim = dim
        self.eps = float(eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.dim:
            raise ValueError(f"ScaleFreeRMSNorm: expected inputs (..., {self.dim}); got shape {tuple(x.shape)}")
        xf = x.to(torch.float32)
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, eps={self.eps}"
