"""LinearBlock: a fitted affine map that stands in for a whole decoder block, ``h -> h + (h - mu) U V + b``
(low-rank residual update, run by the fused :func:`tcompress.ops.linear_block`) or ``h -> h A + b`` (dense).

Storage: everything is a buffer, not a parameter. The map is fitted in closed form (least squares on calibration
activations, ``recipes/substitute.py``) and never trained, and int8 factors cannot be parameters anyway; buffers keep
the module out of optimizers and still travel with ``.to(device)`` and ``state_dict``.

State-dict keys (stable; a substituted model saves and loads with them):

- low-rank: ``U`` (d, r), ``V`` (r, d), ``b`` (d,), ``mu`` (d,), plus ``u_scale`` (r,) and ``v_scale`` (d,) fp32 when
  the factors are int8 (``U_deq = U * u_scale[None, :]``, ``V_deq = V * v_scale[None, :]``, symmetric per column);
- dense: ``weight`` (d, d) holding ``A^T`` (so the forward is ``F.linear(h, weight, b)``), ``b`` (d,).

``.to(dtype)``: floating factors, ``b`` and ``mu`` follow the dtype like any module's floating buffers; int8 codes
stay int8 (``nn.Module`` never casts integer tensors) and their fp32 scales are kept as they are (the codes were
rounded against those scales; re-rounding them would add error silently, as in QuantLinear).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import ops
from ._prepared import PreparedOperands

_QUANTIZE_MODES = (None, "int8")


def _quantize_columns_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """w (k, n) float -> (codes (k, n) int8, scales (n,) fp32): symmetric per column, codes in [-127, 127]."""
    w = w.detach().to(torch.float32)
    scale = w.abs().amax(dim=0) / 127.0
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero column: any scale, codes 0
    codes = torch.round(w / scale[None, :]).clamp_(-127, 127).to(torch.int8)
    return codes, scale


class LinearBlock(PreparedOperands, nn.Module):
    """h: (..., d) -> (..., d). Low-rank ``h + (h - mu) @ U @ V + b`` or dense ``h @ A + b``; output in h's dtype.

    Build with :meth:`from_factors` or :meth:`from_dense`; ``LinearBlock(d, rank, quantize)`` makes an empty module
    of the right shapes (zeros; an identity map for low rank) for ``load_state_dict``.

    Attributes:
        d: hidden size.
        rank: r for the low-rank form, None for the dense form.
        quantize: None or "int8" (low-rank factors only).

    A low-rank forward checks only h: the factors are checked and laid out once (see :class:`PreparedOperands`).
    """

    _operand_buffers = ("U", "V", "b", "mu", "u_scale", "v_scale")

    def __init__(self, d: int, rank: int | None, quantize: str | None = None, dtype: torch.dtype = torch.float32):
        super().__init__()
        if isinstance(d, bool) or not isinstance(d, int) or d <= 0:
            raise ValueError(f"LinearBlock: d must be a positive int; got {d!r}")
        if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank <= 0):
            raise ValueError(f"LinearBlock: rank must be a positive int (low-rank) or None (dense); got {rank!r}")
        if quantize not in _QUANTIZE_MODES:
            raise ValueError(f"LinearBlock: quantize must be None or 'int8'; got {quantize!r}")
        if rank is None and quantize is not None:
            raise ValueError("LinearBlock: quantize='int8' applies to low-rank factors only; the dense form is float")
        self.d, self.rank, self.quantize = d, rank, quantize
        if rank is None:
            self.register_buffer("weight", torch.zeros(d, d, dtype=dtype))
        else:
            factor_dtype = torch.int8 if quantize == "int8" else dtype
            self.register_buffer("U", torch.zeros(d, rank, dtype=factor_dtype))
            self.register_buffer("V", torch.zeros(rank, d, dtype=factor_dtype))
            self.register_buffer("mu", torch.zeros(d, dtype=dtype))
            if quantize == "int8":
                self.register_buffer("u_scale", torch.ones(rank, dtype=torch.float32))
                self.register_buffer("v_scale", torch.ones(d, dtype=torch.float32))
        self.register_buffer("b", torch.zeros(d, dtype=dtype))

    # -----------------------------------------------------------------------------------------------------------
    # Constructors.
    # -----------------------------------------------------------------------------------------------------------

    @classmethod
    def from_factors(
        cls,
        U: torch.Tensor,
        V: torch.Tensor,
        b: torch.Tensor,
        mu: torch.Tensor,
        quantize: str | None = None,
    ) -> LinearBlock:
        """Low-rank block from U (d, r), V (r, d), b (d,), mu (d,): ``h -> h + (h - mu) @ U @ V + b``.

        Float factors keep their dtype (float32/bfloat16/float16); ``quantize="int8"`` stores symmetric per-column
        int8 codes with fp32 scales. b and mu keep U's floating dtype (fp32 when quantizing). Tensors are copied.

        Raises:
            TypeError: a non-floating tensor. ValueError: inconsistent shapes (the message names them), bad quantize.
        """
        for name, t in (("U", U), ("V", V), ("b", b), ("mu", mu)):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"LinearBlock.from_factors: {name} must be a torch.Tensor; got {type(t).__name__}")
            if not t.is_floating_point():
                raise TypeError(f"LinearBlock.from_factors: {name} must be a floating tensor; got {t.dtype}")
        if U.dim() != 2 or V.dim() != 2:
            raise ValueError(
                f"LinearBlock.from_factors: U must be (d, r) and V (r, d); got U {tuple(U.shape)}, V {tuple(V.shape)}"
            )
        d, r = U.shape
        if tuple(V.shape) != (r, d):
            raise ValueError(
                f"LinearBlock.from_factors: V must have shape (r, d) = ({r}, {d}) to match U {tuple(U.shape)}; "
                f"got {tuple(V.shape)}"
            )
        for name, t in (("b", b), ("mu", mu)):
            if tuple(t.shape) != (d,):
                raise ValueError(
                    f"LinearBlock.from_factors: {name} must have shape (d,) = ({d},); got {tuple(t.shape)}"
                )
        if quantize not in _QUANTIZE_MODES:
            raise ValueError(f"LinearBlock.from_factors: quantize must be None or 'int8'; got {quantize!r}")
        dtype = torch.float32 if quantize == "int8" else U.dtype
        new = cls(d, r, quantize, dtype=dtype).to(U.device)
        with torch.no_grad():
            if quantize == "int8":
                u_codes, u_scale = _quantize_columns_int8(U)
                v_codes, v_scale = _quantize_columns_int8(V)
                new.U.copy_(u_codes)
                new.V.copy_(v_codes)
                new.u_scale.copy_(u_scale)
                new.v_scale.copy_(v_scale)
            else:
                new.U.copy_(U.detach())
                new.V.copy_(V.detach().to(dtype))
            new.b.copy_(b.detach().to(dtype))
            new.mu.copy_(mu.detach().to(dtype))
        return new

    @classmethod
    def from_dense(cls, A: torch.Tensor, b: torch.Tensor) -> LinearBlock:
        """Dense block from A (d, d), b (d,): ``h -> h @ A + b`` (A includes the identity of the residual path).

        Raises:
            TypeError: a non-floating tensor. ValueError: A not square, or b not (d,).
        """
        for name, t in (("A", A), ("b", b)):
            if not isinstance(t, torch.Tensor):
                raise TypeError(f"LinearBlock.from_dense: {name} must be a torch.Tensor; got {type(t).__name__}")
            if not t.is_floating_point():
                raise TypeError(f"LinearBlock.from_dense: {name} must be a floating tensor; got {t.dtype}")
        if A.dim() != 2 or A.shape[0] != A.shape[1]:
            raise ValueError(f"LinearBlock.from_dense: A must be square (d, d); got {tuple(A.shape)}")
        d = A.shape[0]
        if tuple(b.shape) != (d,):
            raise ValueError(f"LinearBlock.from_dense: b must have shape (d,) = ({d},); got {tuple(b.shape)}")
        new = cls(d, None, dtype=A.dtype).to(A.device)
        with torch.no_grad():
            new.weight.copy_(A.detach().t())
            new.b.copy_(b.detach().to(A.dtype))
        return new

    # -----------------------------------------------------------------------------------------------------------
    # Module behaviour.
    # -----------------------------------------------------------------------------------------------------------

    def _apply(self, fn, recurse=True):
        # .to(dtype) must not re-round the int8 scales (see the module docstring); they only follow the device.
        kept = {n: self._buffers.pop(n) for n in ("u_scale", "v_scale") if self._buffers.get(n) is not None}
        try:
            super()._apply(fn, recurse)
        finally:
            device = self.b.device
            for n, t in kept.items():
                self._buffers[n] = t.to(device)
        return self

    def num_parameters(self) -> int:
        """Elements stored for the map: low-rank d*r + r*d + 2d (b, mu), plus r + d scales when int8; dense d*d + d."""
        return sum(t.numel() for t in self._buffers.values() if t is not None)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """h: (..., d) -> (..., d) in h's dtype."""
        if h.shape[-1:] != (self.d,):
            raise ValueError(f"LinearBlock: h must have last dimension d = {self.d}; got shape {tuple(h.shape)}")
        if self.rank is None:
            return F.linear(h, self.weight.to(h.dtype), self.b.to(h.dtype))
        return self.prepared()(h)

    def _prepare(self, U, V, b, mu, u_scale, v_scale) -> ops.PreparedLinearBlock:
        return ops.PreparedLinearBlock(U, V, b, mu, u_scale, v_scale)

    def extra_repr(self) -> str:
        if self.rank is None:
            return f"d={self.d}, dense, dtype={self.b.dtype}"
        return f"d={self.d}, rank={self.rank}, factors={self.quantize or self.U.dtype}"
