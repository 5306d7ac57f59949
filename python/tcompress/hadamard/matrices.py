"""Dense Hadamard matrices as torch tensors: references, and rotations to fuse into weights.

``hadamard_matrix(n)`` is the matrix the fast transform multiplies by (``x @ H * scale``), so
``hadamard_transform(x) == x @ hadamard_matrix(n, normalized=True)``. ``random_hadamard(n, seed)`` is the
randomized orthogonal rotation of QuaRot-style recipes, D·H/sqrt(n) with D a seeded random ±1 diagonal; applying
it to activations costs one elementwise multiply plus the fast transform (see :func:`random_hadamard_signs`).
"""

from __future__ import annotations

import math
import numbers
from typing import Optional, Union

import torch

from .constructions import hadamard_matrix_numpy

Device = Optional[Union[str, torch.device]]


def hadamard_matrix(
    n: int, dtype: torch.dtype = torch.float32, *, normalized: bool = False, device: Device = None
) -> torch.Tensor:
    """(n, n) Hadamard matrix kron(H_K, H_{2^m}) with entries ±1 (±1/sqrt(n) when ``normalized``).

    Raises:
        ValueError: n has no construction; the message lists the supported factors K.
    """
    h = torch.from_numpy(hadamard_matrix_numpy(n)).to(dtype=dtype, device=device)
    return h / math.sqrt(n) if normalized else h


def random_hadamard_signs(n: int, seed: int, dtype: torch.dtype = torch.float32, device: Device = None) -> torch.Tensor:
    """(n,) the ±1 diagonal D of :func:`random_hadamard`, drawn from a CPU generator seeded with ``seed``."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"random_hadamard_signs: seed must be an int; got {type(seed).__name__}")
    gen = torch.Generator().manual_seed(int(seed))
    bits = torch.randint(0, 2, (n,), generator=gen)
    return (bits * 2 - 1).to(dtype=dtype, device=device)


def random_hadamard(n: int, seed: int, dtype: torch.dtype = torch.float32, device: Device = None) -> torch.Tensor:
    """(n, n) orthogonal Q = D·H_n/sqrt(n), D = diag(random_hadamard_signs(n, seed)).

    ``x @ Q == hadamard_transform(x * random_hadamard_signs(n, seed))``, and Q·Qᵀ = I.
    """
    d = random_hadamard_signs(n, seed, torch.float64)
    q = d[:, None] * hadamard_matrix(n, torch.float64, normalized=True)
    return q.to(dtype=dtype, device=device)
