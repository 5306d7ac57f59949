"""Moments: the float64 sums over paired rows (x, y) (a block's input and output hidden states at each position) and
the loss gradients at x, from which every fit, R², variance and covariance of the analyses is computed.

One object per (block, position part, split) in :class:`~tcompress.analysis.activations.BlockStatistics`; the
collector that fills them is :func:`~tcompress.analysis.activations.collect_block_statistics`.
"""

from __future__ import annotations

import dataclasses

import torch


@dataclasses.dataclass
class Moments:
    """Float64 sums over n paired rows (x_i, y_i) ∈ R^d × R^d, and optionally the gradients g_i at x_i.

    Attributes:
        count: n, the number of rows (tokens).
        sum_in: (d,) Σ x_i.
        sum_out: (d,) Σ y_i.
        in_in: (d, d) Σ x_iᵀ x_i.
        in_out: (d, d) Σ x_iᵀ y_i.
        out_sq: (d,) Σ y_i² per dimension (the diagonal of Σ y_iᵀ y_i).
        grad_count: rows whose gradient was added (equals ``count`` after a gradient pass; 0 without one).
        grad_sum: (d,) Σ g_i, or None when gradients were not collected.
        grad_grad: (d, d) Σ g_iᵀ g_i, or None.
    """

    count: int
    sum_in: torch.Tensor
    sum_out: torch.Tensor
    in_in: torch.Tensor
    in_out: torch.Tensor
    out_sq: torch.Tensor
    grad_count: int = 0
    grad_sum: torch.Tensor | None = None
    grad_grad: torch.Tensor | None = None

    @classmethod
    def zeros(cls, d: int, device: torch.device | str, gradients: bool = False) -> Moments:
        """Empty sums for rows of width ``d`` on ``device`` (with gradient sums when ``gradients``)."""

        def z(*shape):
            return torch.zeros(*shape, dtype=torch.float64, device=device)

        return cls(
            0, z(d), z(d), z(d, d), z(d, d), z(d), 0, z(d) if gradients else None, z(d, d) if gradients else None
        )

    @property
    def hidden_size(self) -> int:
        """d."""
        return self.sum_in.shape[0]

    def update(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Adds rows x, y: (n, d) each (any float dtype and device; cast to float64 on this object's device)."""
        x = x.detach().to(device=self.sum_in.device, dtype=torch.float64)
        y = y.detach().to(device=self.sum_in.device, dtype=torch.float64)
        self.count += x.shape[0]
        self.sum_in += x.sum(0)
        self.sum_out += y.sum(0)
        self.in_in.addmm_(x.T, x)
        self.in_out.addmm_(x.T, y)
        self.out_sq += (y * y).sum(0)

    def update_gradients(self, g: torch.Tensor) -> None:
        """Adds gradient rows g: (n, d)."""
        if self.grad_sum is None:
            raise ValueError("Moments.update_gradients: these moments were created without gradient sums")
        g = g.detach().to(device=self.sum_in.device, dtype=torch.float64)
        self.grad_count += g.shape[0]
        self.grad_sum += g.sum(0)
        self.grad_grad.addmm_(g.T, g)

    def to(self, device: torch.device | str) -> Moments:
        """A copy with every tensor on ``device``."""
        return dataclasses.replace(
            self, **{f: getattr(self, f).to(device) for f in _TENSOR_FIELDS if getattr(self, f) is not None}
        )

    def __add__(self, other: Moments) -> Moments:
        """The sums over both sets of rows (on this object's device)."""
        if not isinstance(other, Moments):
            return NotImplemented
        if other.hidden_size != self.hidden_size:
            raise ValueError(
                f"Moments: cannot add sums of width {other.hidden_size} to sums of width {self.hidden_size}"
            )
        other = other.to(self.sum_in.device)
        merged = {}
        for f in _TENSOR_FIELDS:
            a, b = getattr(self, f), getattr(other, f)
            merged[f] = None if a is None or b is None else a + b
        return Moments(count=self.count + other.count, grad_count=self.grad_count + other.grad_count, **merged)  # type: ignore[arg-type]

    # -- derived statistics (population normalisation: divided by n) -----------------------------------------

    def _need_rows(self, what: str) -> None:
        if self.count == 0:
            raise ValueError(f"Moments.{what}: no rows were accumulated")

    def mean_in(self) -> torch.Tensor:
        """(d,) mean of x."""
        self._need_rows("mean_in")
        return self.sum_in / self.count

    def mean_out(self) -> torch.Tensor:
        """(d,) mean of y."""
        self._need_rows("mean_out")
        return self.sum_out / self.count

    def cov_in(self) -> torch.Tensor:
        """(d, d) covariance of x: E[xᵀx] - μ_xᵀμ_x (divided by n)."""
        mu = self.mean_in()
        return self.in_in / self.count - torch.outer(mu, mu)

    def cross_cov(self) -> torch.Tensor:
        """(d, d) cross-covariance E[xᵀy] - μ_xᵀμ_y."""
        return self.in_out / self.count - torch.outer(self.mean_in(), self.mean_out())

    def var_out(self) -> torch.Tensor:
        """(d,) per-dimension variance of y."""
        mu = self.mean_out()
        return (self.out_sq / self.count - mu * mu).clamp_min(0.0)

    def grad_second_moment(self) -> torch.Tensor:
        """(d, d) E[gᵀg], the uncentred second moment of the loss gradient (what "predictive directions" use)."""
        if self.grad_grad is None or self.grad_count == 0:
            raise ValueError("Moments.grad_second_moment: no gradients were collected (use gradients=True)")
        return self.grad_grad / self.grad_count

    def residual_target(self) -> Moments:
        """The same sums with y replaced by the residual update y - x (the block's contribution to the stream)."""
        diag_in_out = torch.diagonal(self.in_out)
        diag_in_in = torch.diagonal(self.in_in)
        return dataclasses.replace(
            self,
            sum_out=self.sum_out - self.sum_in,
            in_out=self.in_out - self.in_in,
            out_sq=self.out_sq - 2 * diag_in_out + diag_in_in,
        )


_TENSOR_FIELDS = ("sum_in", "sum_out", "in_in", "in_out", "out_sq", "grad_sum", "grad_grad")
