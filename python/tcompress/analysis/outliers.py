"""Outlier statistics of weights and activations, and per-layer weight quantization error: the measurements that say
why a rotation helps (or does not help) round-to-nearest quantization.

A quantizer with one scale per row (a weight's output channel, an activation's token) loses precision in proportion
to how far that row's largest entry sits above its typical one, so the numbers here are

- ``max_over_rms``: max|x| / rms(x) over the whole tensor (a Gaussian of this size gives about 4 to 5);
- ``row_max_over_rms``: the same ratio per row, averaged over rows (what per-channel / per-token quantization sees);
- ``kurtosis``: E[(x - mean)^4] / var^2 (3 for a Gaussian; heavy tails give more);
- ``relative_error``: ||W - Q(W)||_F / ||W||_F for a weight quantizer Q.

Every result is a dataclass with ``to_dict`` (JSON-serializable), so reports can store them.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from .. import models
from ..nn import QuantLinear, QuantSpec, fake_quantize, matmul_input


@dataclasses.dataclass
class TensorStats:
    """Outlier statistics of one tensor (a weight, or a projection's inputs pooled over tokens)."""

    name: str
    numel: int
    rows: int
    max_over_rms: float
    row_max_over_rms: float
    kurtosis: float

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class LayerQuantError:
    """Relative Frobenius error of one projection's weight under a weight quantizer."""

    name: str
    bits: int
    group_size: int | None
    relative_error: float

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class StatsSummary:
    """Means (and maxima) of a list of :class:`TensorStats` or :class:`LayerQuantError`, for one table row."""

    count: int
    mean: dict[str, float]
    max: dict[str, float]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class _Moments:
    """Running sums over rows of a (rows, n) tensor, in float64: enough for max/RMS and kurtosis without storing."""

    def __init__(self):
        self.n = 0
        self.rows = 0
        self.s1 = self.s2 = self.s3 = self.s4 = 0.0
        self.amax = 0.0
        self.row_ratio_sum = 0.0

    def add(self, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).to(torch.float64)
        self.n += x.numel()
        self.rows += x.shape[0]
        self.s1 += float(x.sum())
        x2 = x * x
        self.s2 += float(x2.sum())
        self.s3 += float((x2 * x).sum())
        self.s4 += float((x2 * x2).sum())
        self.amax = max(self.amax, float(x.abs().max()))
        row_rms = x2.mean(dim=1).sqrt()
        ratio = torch.where(row_rms > 0, x.abs().amax(dim=1) / row_rms.clamp_min(1e-300), torch.zeros_like(row_rms))
        self.row_ratio_sum += float(ratio.sum())

    def stats(self, name: str) -> TensorStats:
        n = max(self.n, 1)
        m1, m2, m3, m4 = self.s1 / n, self.s2 / n, self.s3 / n, self.s4 / n
        var = m2 - m1 * m1
        central4 = m4 - 4 * m1 * m3 + 6 * m1 * m1 * m2 - 3 * m1**4
        rms = math.sqrt(m2)
        return TensorStats(
            name=name,
            numel=self.n,
            rows=self.rows,
            max_over_rms=self.amax / rms if rms > 0 else 0.0,
            row_max_over_rms=self.row_ratio_sum / max(self.rows, 1),
            kurtosis=central4 / (var * var) if var > 0 else 0.0,
        )


def tensor_stats(name: str, x: torch.Tensor) -> TensorStats:
    """x (rows, n) (or (..., n), rows pooled) -> its :class:`TensorStats`."""
    moments = _Moments()
    moments.add(x)
    return moments.stats(name)


def effective_weight(module: nn.Module) -> torch.Tensor:
    """(out, in) fp32: the weight a projection multiplies its (transformed, for online-Hadamard layers) input by."""
    if isinstance(module, QuantLinear):
        return module.dequantized_weight()
    return models.projection_weight(module).detach().to(torch.float32)


def weight_stats(model: nn.Module) -> list[TensorStats]:
    """One :class:`TensorStats` per projection in the blocks (rows = output channels), in forward order."""
    arch = models.architecture(model)
    return [tensor_stats(name, effective_weight(m)) for name, m in arch.iter_projections(model)]


@torch.no_grad()
def activation_stats(model: nn.Module, windows: torch.Tensor) -> list[TensorStats]:
    """windows (batch, length) token ids -> one :class:`TensorStats` per projection input (rows = tokens).

    The statistics are of what a per-token activation quantizer would see: the input after the online Hadamard
    transform for layers that apply one.
    """
    arch = models.architecture(model)
    moments: dict[str, _Moments] = {}
    handles = []
    for name, module in arch.iter_projections(model):
        moments[name] = _Moments()

        def hook(mod, args, name=name):
            x = args[0]
            moments[name].add(matmul_input(mod, x))

        handles.append(module.register_forward_pre_hook(hook))
    try:
        for row in windows:
            model(row[None])
    finally:
        for handle in handles:
            handle.remove()
    return [m.stats(name) for name, m in moments.items()]


def weight_quantization_error(model: nn.Module, config) -> list[LayerQuantError]:
    """Relative error of round-to-nearest quantization (``config``: a QuantSpec or QuantizeConfig) per projection."""
    spec = QuantSpec.of(config)
    arch = models.architecture(model)
    errors = []
    for name, module in arch.iter_projections(model):
        w = effective_weight(module)
        wq = fake_quantize(w, spec.bits, spec.group_size, symmetric=spec.symmetric, scale_dtype=spec.torch_scale_dtype)
        rel = float((w - wq).norm() / w.norm()) if float(w.norm()) > 0 else 0.0
        errors.append(LayerQuantError(name, spec.bits, spec.group_size, rel))
    return errors


def summarize(items: list) -> StatsSummary:
    """Means and maxima of the float fields of a list of TensorStats / LayerQuantError (an empty list -> zeros)."""
    if not items:
        return StatsSummary(0, {}, {})
    fields = [f.name for f in dataclasses.fields(items[0]) if isinstance(getattr(items[0], f.name), float)]
    mean = {f: sum(getattr(i, f) for i in items) / len(items) for f in fields}
    top = {f: max(getattr(i, f) for i in items) for f in fields}
    return StatsSummary(len(items), mean, top)
