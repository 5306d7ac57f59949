"""Fused linear block substitution: ``y = x + ((x - mu) @ U) @ V + b`` in one pass over the rows.

STUB CONTRACT (pre-wired): the public signatures below are fixed; the native kernels and the ``torch.library``
registration replace the reference-only implementation.

Shapes: x (..., d); U (d, r); V (r, d); b (d,); mu (d,). Factors float32/bfloat16, or int8 with per-column scales:
``U_deq = U * u_scale[None, :]`` (u_scale (r,)), ``V_deq = V * v_scale[None, :]`` (v_scale (d,)).
"""

from __future__ import annotations

import torch


def linear_block_reference(
    x: torch.Tensor,
    U: torch.Tensor,
    V: torch.Tensor,
    b: torch.Tensor,
    mu: torch.Tensor,
    u_scale: torch.Tensor | None = None,
    v_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """x (..., d) -> (..., d) in x's dtype: ``x + ((x - mu) @ U) @ V + b`` computed in fp32."""
    u = U.to(torch.float32) if u_scale is None else U.to(torch.float32) * u_scale.to(torch.float32)[None, :]
    v = V.to(torch.float32) if v_scale is None else V.to(torch.float32) * v_scale.to(torch.float32)[None, :]
    xf = x.to(torch.float32)
    y = xf + ((xf - mu.to(torch.float32)) @ u) @ v + b.to(torch.float32)
    return y.to(x.dtype)


def linear_block(
    x: torch.Tensor,
    U: torch.Tensor,
    V: torch.Tensor,
    b: torch.Tensor,
    mu: torch.Tensor,
    u_scale: torch.Tensor | None = None,
    v_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """x (..., d) -> (..., d): ``x + ((x - mu) @ U) @ V + b``; see the module docstring for the factor formats."""
    return linear_block_reference(x, U, V, b, mu, u_scale, v_scale)
