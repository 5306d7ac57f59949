"""Spectral compression sweep: perplexity and reconstruction error against the fraction of parameters kept, for
plain and activation-whitened truncated SVD (:mod:`tcompress.recipes.factorize`) of every block projection.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import torch

from .. import models
from ..analysis.projection_inputs import DEFAULT_GROUP_BYTES, InputMoment, stream_input_moments
from ..nn.low_rank_linear import LowRankLinear
from .factorize import WHITEN_METHODS, FactorizeConfig, input_scaling, rank_for, svd_of, truncated_svd


@dataclasses.dataclass
class SweepPoint:
    """One (method, ratio) point.

    Attributes:
        method: ``"plain"``, ``"svd-llm"`` or ``"asvd"``.
        param_ratio: the requested fraction of each projection's parameters.
        params_kept_fraction: Σ r·(out+in) / Σ out·in actually kept (ranks are whole numbers).
        weight_rel_error: sqrt(Σ ||W − AB||² / Σ ||W||²) over projections.
        output_rel_error: sqrt(Σ ||X(W − AB)ᵀ||² / Σ ||XWᵀ||²) over projections, on the calibration inputs.
        energy_kept_mean: the mean over projections of the kept fraction of squared singular values (of W·S when
            whitened).
        perplexity: of the factorized model, when a ``measure`` was given.
    """

    method: str
    param_ratio: float
    params_kept_fraction: float
    weight_rel_error: float
    output_rel_error: float
    energy_kept_mean: float
    perplexity: float | None = None


@dataclasses.dataclass
class SweepResult:
    """The sweep: settings, the unfactorized model's perplexity, and the points in run order."""

    calibration_tokens: int
    baseline_perplexity: float | None
    points: list[SweepPoint]

    def to_dict(self) -> dict:
        return {
            "calibration_tokens": self.calibration_tokens,
            "baseline_perplexity": self.baseline_perplexity,
            "points": [dataclasses.asdict(p) for p in self.points],
        }


def spectral_sweep(
    model: torch.nn.Module,
    calibration: torch.Tensor,
    *,
    ratios: Sequence[float] = (0.9, 0.8, 0.6, 0.4),
    methods: Sequence[str | None] = (None, "svd-llm"),
    measure: Callable[[torch.nn.Module], object] | None = None,
    on_point: Callable[[SweepPoint], None] | None = None,
    baseline: float | None = None,
    max_moment_bytes: int = DEFAULT_GROUP_BYTES,
    batch_size: int = 8,
) -> SweepResult:
    """Factorizes ``model`` at each ratio with each method and measures it; the model is put back as it was.

    Memory is O(a few blocks) beyond the model: per method, the input moments stream one group of blocks at a time
    (:func:`~tcompress.analysis.projection_inputs.stream_input_moments`, ≤ ``max_moment_bytes``), each projection's
    SVD is taken once (float64, on the weight's device), the errors at every ratio are computed from it while the
    group's moments are in hand, and the factors are kept at the largest ratio's rank in the model's dtype. Then the
    factorized layers are swapped into the live model (the dense ones are kept aside, not copied) and truncated
    ratio by ratio, largest first — for factors ordered by singular value the truncation is the lower-rank SVD — with
    one ``measure`` per ratio. The dense layers go back at the end, also when a measurement fails.

    Args:
        model: a model of a family :mod:`tcompress.models` knows, with dense projections.
        calibration: (n, L) int64 windows: the inputs' second moments (for whitening and the output errors).
        ratios: fractions of parameters to keep, each in (0, 1].
        methods: None (plain SVD) and/or whitening methods (``"svd-llm"``, ``"asvd"``).
        measure: model -> a number or an object with ``ppl``; called on the original (unless ``baseline`` is given)
            and on each factorized model — always the same live object, so ``measure`` must not cache by identity.
        on_point: called with each point as soon as it is measured (progress printing).
        baseline: the unfactorized model's number when the caller already has it.
        max_moment_bytes: the budget of one group's float64 input moments.
        batch_size: calibration windows per forward pass.

    Returns:
        The points in (method, ratio) order as given.

    Raises:
        ValueError: a ratio outside (0, 1] or an unknown method (before any work is done).
    """
    for method in methods:
        if method is not None and method not in WHITEN_METHODS:
            raise ValueError(f"spectral_sweep: unknown method {method!r}; expected None or one of {WHITEN_METHODS}")
    for r in ratios:
        FactorizeConfig(param_ratio=r)  # validates the ratio before any work
    order = sorted(set(ratios), reverse=True)
    models.architecture(model)  # an unsupported model fails here, before any work
    if baseline is None and measure is not None:
        baseline = _ppl(measure(model))
    points: dict[tuple[str, float], SweepPoint] = {}
    tokens = 0
    output_norms: dict[str, float] = {}  # ||X·Wᵀ||² per projection, shared by the methods
    for method in methods:
        label = method or "plain"
        sums = {r: _Totals() for r in order}
        factored: dict[str, LowRankLinear] = {}
        for _, moments in stream_input_moments(model, calibration, max_bytes=max_moment_bytes, batch_size=batch_size):
            scalings: dict[int, tuple] = {}  # one whitening per input, shared by the projections that read it
            for name, moment in moments.items():
                tokens = moment.tokens
                module = model.get_submodule(name)
                with models.materialized(module):  # offloaded weights are read on their execution device
                    weight = models.projection_weight(module)
                    if method is not None and id(moment) not in scalings:
                        scalings = {id(moment): _scaling_on(moment, method, weight.device)}
                    factored[name] = _factor_and_measure(
                        weight, module, name, method and scalings[id(moment)], moment, order, sums, output_norms
                    )
            del moments, scalings
        originals = {name: models.set_module(model, name, module) for name, module in factored.items()}
        try:
            for ratio in order:
                for name, module in factored.items():
                    module.truncate_(sums[ratio].ranks[name])
                t = sums[ratio]
                point = SweepPoint(
                    method=label,
                    param_ratio=ratio,
                    params_kept_fraction=t.kept / t.total,
                    weight_rel_error=math.sqrt(t.w_err / t.w_sq),
                    output_rel_error=math.sqrt(t.o_err / t.o_sq),
                    energy_kept_mean=sum(t.energies) / len(t.energies),
                    perplexity=_ppl(measure(model)) if measure is not None else None,
                )
                points[(label, ratio)] = point
                if on_point is not None:
                    on_point(point)
        finally:
            for name, module in originals.items():
                models.set_module(model, name, module)
            del factored
    ordered = [points[(m or "plain", r)] for m in methods for r in ratios]
    return SweepResult(tokens, baseline, ordered)


@dataclasses.dataclass
class _Totals:
    """One ratio's sums over projections."""

    kept: int = 0
    total: int = 0
    w_err: float = 0.0
    w_sq: float = 0.0
    o_err: float = 0.0
    o_sq: float = 0.0
    energies: list = dataclasses.field(default_factory=list)
    ranks: dict = dataclasses.field(default_factory=dict)


def _scaling_on(moment, method: str, device: torch.device):
    """The whitening (S, S⁻¹, damping) of one input, computed on the weight's device."""
    if moment.device == device:
        on_device = moment
    elif moment.rows is not None:
        on_device = InputMoment(rows=moment.rows.to(device))
    else:
        on_device = InputMoment(moment.xtx.to(device), moment.tokens)
    return input_scaling(on_device, method, inverse=False)


def _factor_and_measure(weight, module, name, scaling, moment, order, sums, output_norms) -> LowRankLinear:
    """One projection: its SVD once, each ratio's rank, errors and energy added to ``sums``; returns the
    LowRankLinear at the largest ratio's rank, factors in the weight's dtype on its device."""
    w = weight.detach().to(torch.float64)
    out_features, in_features = w.shape
    decomposition = svd_of(w, scaling)
    w_sq = float((w**2).sum())
    if name not in output_norms:  # ||X·Wᵀ||² is the same for every method: one (out, in) x (in, in) product
        output_norms[name] = moment.output_sq_norm(w)
    o_sq = output_norms[name]
    s = decomposition[1]
    energy_total = float((s**2).sum())
    largest = truncated_svd(w, param_ratio=order[0], scaling=scaling, decomposition=decomposition)
    a_stored, b_stored = largest.a.to(weight.dtype), largest.b.to(weight.dtype)
    for ratio in order:
        rank = rank_for(out_features, in_features, param_ratio=ratio)
        # The stored (model-dtype) factors truncated, as the model will multiply by them.
        error = a_stored[:, :rank].double() @ b_stored[:rank].double() - w
        t = sums[ratio]
        t.ranks[name] = rank
        t.kept += rank * (out_features + in_features)
        t.total += out_features * in_features
        t.w_err += float((error**2).sum())
        t.w_sq += w_sq
        t.o_err += moment.output_sq_norm(error)
        t.o_sq += o_sq
        t.energies.append(float((s[:rank] ** 2).sum()) / energy_total if energy_total > 0 else 1.0)
        del error
    bias = getattr(module, "bias", None)
    return LowRankLinear.from_factors(a_stored, b_stored, None if bias is None else bias.detach())


def _ppl(value) -> float:
    return float(getattr(value, "ppl", value))
