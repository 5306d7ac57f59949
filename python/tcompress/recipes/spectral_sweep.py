"""Spectral compression sweep: perplexity and reconstruction error against the fraction of parameters kept, for
plain and activation-whitened truncated SVD (:mod:`tcompress.recipes.factorize`) of every block projection.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Callable, Sequence

import torch

from .. import models
from ..analysis.projection_inputs import collect_input_moments
from .factorize import WHITEN_METHODS, FactorizeConfig, factorize_


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


#: The most memory the sweep spends keeping each projection's SVD for the next ratio (else it recomputes).
SVD_CACHE_BYTES = 4 << 30


def spectral_sweep(
    model: torch.nn.Module,
    calibration: torch.Tensor,
    *,
    ratios: Sequence[float] = (0.9, 0.8, 0.6, 0.4),
    methods: Sequence[str | None] = (None, "svd-llm"),
    measure: Callable[[torch.nn.Module], object] | None = None,
    on_point: Callable[[SweepPoint], None] | None = None,
) -> SweepResult:
    """Factorizes copies of ``model`` at each ratio with each method and measures them (``model`` is not changed).

    Args:
        model: a model of a family :mod:`tcompress.models` knows.
        calibration: (n, L) int64 windows: the inputs' second moments (for whitening and the output errors).
        ratios: fractions of parameters to keep, each in (0, 1].
        methods: None (plain SVD) and/or whitening methods (``"svd-llm"``, ``"asvd"``).
        measure: model -> a number or an object with ``ppl``; called on the original and each factorized model.
        on_point: called with each point as soon as it is measured (progress printing).

    Raises:
        ValueError: a ratio outside (0, 1] or an unknown method (before any work is done).
    """
    for method in methods:
        if method is not None and method not in WHITEN_METHODS:
            raise ValueError(f"spectral_sweep: unknown method {method!r}; expected None or one of {WHITEN_METHODS}")
    configs = [(m, FactorizeConfig(param_ratio=r, whiten=m)) for m in methods for r in ratios]  # validates ratios
    moments = collect_input_moments(model, calibration)
    arch = models.architecture(model)
    originals = {n: models.projection_weight(m).detach().to(torch.float64) for n, m in arch.iter_projections(model)}
    baseline = _ppl(measure(model)) if measure is not None else None
    points = []
    # One SVD per projection and method, truncated at every ratio — while it fits: U, s, Vᵀ (and S, S⁻¹ when
    # whitened) in float64 take about 3x the projections' float64 size (~3 GB for SmolLM2, far more for a 7B model).
    weights = sum(w.numel() for w in originals.values())
    cache_ok = len(ratios) > 1 and 3 * 8 * weights <= SVD_CACHE_BYTES
    svd_cache: dict = {}
    for i, (method, config) in enumerate(configs):
        if i and method != configs[i - 1][0]:
            svd_cache.clear()  # keyed by method: the previous method's entries will not be asked for again
        candidate = copy.deepcopy(model)
        report = factorize_(candidate, config, moments, svd_cache=svd_cache if cache_ok else None)
        w_err = w_sq = o_err = o_sq = 0.0
        for name, module in arch.iter_projections(candidate):
            w = originals[name]
            error = module.effective_weight().double() - w
            w_err += float((error**2).sum())
            w_sq += float((w**2).sum())
            o_err += moments[name].output_sq_norm(error)
            o_sq += moments[name].output_sq_norm(w)
        energies = [r["energy_kept"] for r in report["modules"].values()]
        point = SweepPoint(
            method=method or "plain",
            param_ratio=config.param_ratio,
            params_kept_fraction=report["params_kept_fraction"],
            weight_rel_error=math.sqrt(w_err / w_sq),
            output_rel_error=math.sqrt(o_err / o_sq),
            energy_kept_mean=sum(energies) / len(energies),
            perplexity=_ppl(measure(candidate)) if measure is not None else None,
        )
        del candidate
        points.append(point)
        if on_point is not None:
            on_point(point)
    tokens = next(iter(moments.values())).tokens if moments else 0
    return SweepResult(tokens, baseline, points)


def _ppl(value) -> float:
    return float(getattr(value, "ppl", value))
