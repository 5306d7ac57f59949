"""QuaRot-style rotation: fuse every norm's scale into the projections it feeds, then rotate the residual stream by a
randomized Hadamard matrix Q, and optionally transform the down-projection's input online.

``compress_(model, RotateConfig(seed=0), QuantizeConfig(bits=4, group_size=64))``. In float arithmetic the rotated
model computes the same function as the original (the tests check logits); what changes is how the numbers are
spread: a residual direction that carried an outlier is smeared over all d coordinates, which is what round-to-nearest
quantization of weights and activations wants. Steps, all in float64 and all on the model in place:

1. LayerNorm families (GPT-2): make the residual stream mean-free by centring everything that writes it (token and
   position embeddings, the o/down projections and their biases). A LayerNorm then equals an RMSNorm with the same
   scale and bias, since mean(h) = 0 for every residual h — the construction SliceGPT uses.
2. Fuse each norm's scale g (and bias b) into its readers: W <- W diag(g), c <- c + W b; the head is untied from the
   embedding first. Each norm becomes a parameter-free :class:`~tcompress.nn.ScaleFreeRMSNorm`, which commutes with
   any orthogonal Q.
3. Rotate: the residual h becomes h Q. Embedding rows E <- E Q (and learned positions), writers W <- Q^T W with bias
   b <- b Q, readers (norm consumers and the head) W <- W Q.
4. ``online_hadamard``: each down-projection becomes a :class:`~tcompress.nn.HadamardLinear` (W <- W H offline, x <- x H
   at run time with the Hadamard op), which quantization turns into a QuantLinear with ``online_hadamard=True``.

Which modules play which part comes from :mod:`tcompress.models` (norm consumers, residual writers, position
embeddings, the down role); nothing here names a module.
"""

from __future__ import annotations

import dataclasses
import numbers

import torch
from torch import nn

from .. import models
from ..hadamard import random_hadamard
from ..hadamard.constructions import factor_size
from ..nn import HadamardLinear, QuantLinear, ScaleFreeRMSNorm
from ..nn.hadamard_linear import FLOAT64_SLICE_ELEMENTS, check_hadamard_size
from .config import RecipeConfig


@dataclasses.dataclass
class RotateConfig(RecipeConfig):
    """Rotate the residual stream by Q = D·H/sqrt(d) (D a seeded ±1 diagonal), fusing norms first.

    Attributes:
        seed: seeds the random signs of Q (:func:`tcompress.random_hadamard`).
        online_hadamard: also rotate each down-projection's input at run time (H fused into its weight offline).
        rotate_residual: False skips the residual rotation Q and only fuses the norms (and, for GPT-2, centres the
            residual writers): the ablation that separates what norm fusion does to quantization from what Q does.
    """

    kind = "rotate"
    version = 1

    seed: int = 0
    online_hadamard: bool = False
    rotate_residual: bool = True

    def __post_init__(self):
        if isinstance(self.seed, bool) or not isinstance(self.seed, numbers.Integral):
            raise TypeError(f"RotateConfig: seed must be an int; got {self.seed!r}")
        if not isinstance(self.online_hadamard, bool):
            raise TypeError(f"RotateConfig: online_hadamard must be True or False; got {self.online_hadamard!r}")
        if not isinstance(self.rotate_residual, bool):
            raise TypeError(f"RotateConfig: rotate_residual must be True or False; got {self.rotate_residual!r}")

    def apply_(self, model: nn.Module) -> dict:
        """Rotates ``model`` in place; returns ``{"dim": d, "online_hadamard": [names]}``.

        Everything that can fail is checked before the first weight changes, so an error leaves the model untouched.

        Raises:
            ValueError: the model was already rotated or quantized, or d (or, with ``online_hadamard``, the
                down-projection's input size) has no Hadamard construction.
            NotImplementedError: some weights are offloaded by accelerate (kept on ``meta`` until a hook loads
                them): the rotation rewrites weights in place, which an offload store does not keep.
        """
        if models.is_offloaded(model):
            raise NotImplementedError(
                "RotateConfig: the model has weights offloaded by accelerate (device_map with CPU/disk offload); the "
                "rotation rewrites every weight in place and cannot write into the offload store: load the model "
                "onto devices that hold it (more GPU memory, or device='cpu') to rotate it"
            )
        arch = models.architecture(model)
        d = arch.embeddings(model).weight.shape[1]
        _check_rotatable(model, arch, d, self.online_hadamard)
        q = random_hadamard(d, int(self.seed), torch.float64, device=arch.embeddings(model).weight.device)
        with torch.no_grad():
            # Untie first: centring the embedding rows must not centre the head's rows, which read an un-centred norm
            # output.
            arch.untie_head_(model)
            if arch.norm_type == "layernorm":
                _center_residual_writers_(model, arch)
            _fuse_norms_(model, arch)
            if self.rotate_residual:
                _rotate_residual_(model, arch, q)
            online = _online_hadamard_(model, arch) if self.online_hadamard else []
        return {"dim": d, "online_hadamard": online}


def _check_rotatable(model: nn.Module, arch: models.ArchSpec, d: int, online: bool) -> None:
    for name, module in arch.iter_projections(model):
        if isinstance(module, (QuantLinear, HadamardLinear)):
            raise ValueError(
                f"RotateConfig: {name!r} is already a {type(module).__name__}; rotate the floating-point model, "
                "before quantizing it (compress_(model, RotateConfig(...), QuantizeConfig(...)))"
            )
    for name, norm, _ in arch.iter_norms(model):
        if isinstance(norm, ScaleFreeRMSNorm):
            raise ValueError(f"RotateConfig: this model was already rotated ({name!r} is a ScaleFreeRMSNorm)")
        models.norm_parameters(norm)  # a clear TypeError for a norm the table does not know
    try:
        factor_size(d)
    except ValueError as exc:
        raise ValueError(f"RotateConfig: the residual width d={d} has no Hadamard construction: {exc}") from None
    if online:
        for name, module in arch.iter_roles(model, arch.online_hadamard_roles):
            check_hadamard_size(
                models.projection_weight(module).shape[1], f"RotateConfig(online_hadamard=True): {name!r}"
            )


# float64 elements per slice of a large table: 32 MiB. Mistral-7B's embedding and head (32000 × 4096) whole in float64,
# plus fn's result, would be 2 GB of temporaries each (3.2 GB at SmolLM2's vocabulary of 49,152).
_SLICE_ELEMENTS = FLOAT64_SLICE_ELEMENTS


def _update_(weight: torch.Tensor, fn, independent_dim: int | None = None) -> None:
    """weight <- fn(weight in float64), cast back; works through the transposed views of Conv1D weights.

    Args:
        weight: any tensor (a parameter's data or a transposed view of it).
        fn: maps a float64 tensor to one of the same shape.
        independent_dim: a dimension along which ``fn`` treats slices independently (a row-wise ``w @ q`` or
            ``e - e.mean(1)``: 0; a column-wise ``q.T @ w``: 1). The tensor is then updated slice by slice, so the
            float64 temporaries are one slice, not the whole table. None: updated whole.
    """
    size = weight.shape[independent_dim] if independent_dim is not None else 0
    step = max(1, _SLICE_ELEMENTS // max(1, weight.numel() // max(1, size)))
    if independent_dim is None or step >= size:
        weight.copy_(fn(weight.detach().to(torch.float64)).to(weight.dtype))
        return
    for start in range(0, size, step):
        part = weight.narrow(independent_dim, start, min(step, size - start))
        part.copy_(fn(part.detach().to(torch.float64)).to(weight.dtype))


def _matvec64(weight: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """(out, in) @ (in,) -> (out,) in float64, a slice of rows at a time (no float64 copy of a whole head)."""
    step = max(1, _SLICE_ELEMENTS // max(1, weight.shape[1]))
    return torch.cat([part.detach().to(torch.float64) @ v for part in weight.split(step, dim=0)])


def _writers(model: nn.Module, arch: models.ArchSpec) -> list[nn.Module]:
    return [m for _, m in arch.iter_roles(model, arch.residual_writer_roles)]


def _embedding_tables(model: nn.Module, arch: models.ArchSpec) -> list[torch.Tensor]:
    tables = [arch.embeddings(model).weight]
    positions = arch.position_embeddings(model)
    if positions is not None:
        tables.append(positions.weight)
    return tables


def _center_residual_writers_(model: nn.Module, arch: models.ArchSpec) -> None:
    """Subtracts the mean over d from everything added to the residual stream, so every residual is mean-free."""
    for table in _embedding_tables(model, arch):
        _update_(table, lambda e: e - e.mean(dim=1, keepdim=True), independent_dim=0)
    for module in _writers(model, arch):
        _update_(models.projection_weight(module), lambda w: w - w.mean(dim=0, keepdim=True), independent_dim=1)
        if module.bias is not None:
            _update_(module.bias, lambda b: b - b.mean())


def _fuse_norms_(model: nn.Module, arch: models.ArchSpec) -> None:
    """Folds each norm's scale and bias into its readers and swaps the norm for a parameter-free RMSNorm."""
    for name, norm, readers in list(arch.iter_norms(model)):
        scale, bias, eps = models.norm_parameters(norm)
        for _, reader in readers:
            weight = models.projection_weight(reader)
            if bias is not None:
                shift = _matvec64(weight, bias.detach().to(torch.float64))
                if reader.bias is None:
                    reader.bias = nn.Parameter(shift.to(weight.dtype))
                else:
                    _update_(reader.bias, lambda c, s=shift: c + s)
            if scale is not None:
                gain = scale.detach().to(torch.float64)
                _update_(weight, lambda w, g=gain: w * g[None, :], independent_dim=0)
        models.set_module(model, name, ScaleFreeRMSNorm(models.projection_weight(readers[0][1]).shape[1], eps))


def _rotate_residual_(model: nn.Module, arch: models.ArchSpec, q: torch.Tensor) -> None:
    for table in _embedding_tables(model, arch):
        _update_(table, lambda e: e @ q, independent_dim=0)
    for module in _writers(model, arch):
        _update_(models.projection_weight(module), lambda w: q.T @ w, independent_dim=1)
        if module.bias is not None:
            _update_(module.bias, lambda b: b @ q)
    for _, _, readers in arch.iter_norms(model):
        for _, reader in readers:
            _update_(models.projection_weight(reader), lambda w: w @ q, independent_dim=0)


def _online_hadamard_(model: nn.Module, arch: models.ArchSpec) -> list[str]:
    names = []
    for name, module in list(arch.iter_roles(model, arch.online_hadamard_roles)):
        weight = models.projection_weight(module)
        models.set_module(model, name, HadamardLinear.from_linear(weight, module.bias, name=name, in_place=True))
        names.append(name)
    return names
