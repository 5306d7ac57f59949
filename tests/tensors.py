"""Tensor helpers shared by the kernel and module tests: seeded random inputs and the error measure they compare by."""

from __future__ import annotations

import torch


def randn(*shape: int, dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
    """A standard-normal tensor of ``shape`` from its own seeded generator (never the global one), in ``dtype``."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype)


def rel_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """max |got - want| / max |want|, in float64 (the max-norm relative error the tolerances are stated in)."""
    got, want = got.double(), want.double()
    return ((got - want).abs().max() / want.abs().max().clamp_min(1e-30)).item()
