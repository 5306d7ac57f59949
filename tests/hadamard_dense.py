"""An independent dense reference for the Hadamard transform, for the tests.

It never runs a butterfly: the Sylvester entries come from the closed form H_{2^m}[b, d] = (-1)^popcount(b & d),
the K x K part from tcompress.hadamard.constructions.base_hadamard, and x @ kron(H_K, H_p) is computed in float64
as sum over a of H_K[a, c] * (X[a] @ H_p), with H_p generated in row chunks so that n = 16384 fits in memory.
"""

from __future__ import annotations

import torch
from tcompress.hadamard.constructions import base_hadamard, factor_size

_POPCOUNT_BYTE = torch.tensor([bin(i).count("1") for i in range(256)], dtype=torch.int64)


def sylvester_rows(b0: int, b1: int, p: int) -> torch.Tensor:
    """Rows b0..b1 of the p x p Sylvester matrix, float64."""
    b = torch.arange(b0, b1, dtype=torch.int64)[:, None]
    d = torch.arange(p, dtype=torch.int64)[None, :]
    v = b & d
    count = torch.zeros_like(v)
    while bool((v > 0).any()):
        count += _POPCOUNT_BYTE[v & 0xFF]
        v = v >> 8
    return 1.0 - 2.0 * (count & 1).to(torch.float64)


def dense_hadamard(x: torch.Tensor, transpose: bool = False, chunk: int = 1024) -> torch.Tensor:
    """x (rows, n) float64 -> x @ kron(H_K, H_p) (or its transpose), unscaled, float64."""
    rows, n = x.shape
    k, p = factor_size(n)
    hk = torch.from_numpy(base_hadamard(k).astype("float64"))
    if transpose:
        hk = hk.t()
    z = x.reshape(rows, k, p)
    zp = torch.zeros(rows, k, p, dtype=torch.float64)
    for b0 in range(0, p, chunk):
        b1 = min(p, b0 + chunk)
        zp += z[:, :, b0:b1] @ sylvester_rows(b0, b1, p)  # H_p is symmetric, so transposing changes nothing
    return torch.einsum("rap,ac->rcp", zp, hk).reshape(rows, n)
