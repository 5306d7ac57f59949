"""Spectral compression: replace each block projection W (out, in) by a truncated SVD W ≈ A·B (a ``LowRankLinear``).

Plain: W = U·Σ·Vᵀ, keep the top r singular triplets, A = U_r·Σ_r^½ (out, r), B = Σ_r^½·V_rᵀ (r, in) (the singular
values are split evenly so that both factors have the same scale, which matters when they are quantized).

Whitened, so that the truncation minimises the error on the layer's *outputs* over calibration inputs X rather than on
the weight: factor W·S with S an invertible scaling of the input space, and undo it in B = Σ_r^½·V_rᵀ·S⁻¹.

- ``"svd-llm"`` (SVD-LLM): S = chol(XᵀX/n), lower triangular, so ||X·(W - A·B)ᵀ||_F = ||(W·S - U_r Σ_r V_rᵀ)||_F·√n
  and the truncation is optimal in output space. When XᵀX/n is not positive definite (a dead input channel,
  too few tokens), a relative diagonal damping λ·mean(diag)·I is added, starting at ``damping`` and multiplied by 10
  until the factorization succeeds (at most 1e-1); the value used is reported per module.
- ``"asvd"`` (ASVD): S = diag(s_j^α) with s_j the RMS of input channel j (ASVD uses the mean absolute value; the RMS
  comes from the same second moment and ranks channels alike), α = ``asvd_alpha`` (0.5 as in ASVD).

Rank: exactly one of ``rank`` (the same r for every module, capped at min(out, in)), ``param_ratio`` (r =
⌊ratio·out·in/(out+in)⌋, so the two factors keep that fraction of the parameters) or ``energy`` (the smallest r whose
squared singular values — of W, or of W·S when whitened — reach that fraction of the total).

``compress_(model, FactorizeConfig(param_ratio=0.6))`` does plain SVD; whitening needs calibration moments, so it goes
through ``factorize_(model, config, moments)`` with ``moments`` from
:func:`tcompress.analysis.projection_inputs.collect_input_moments`.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from .. import models
from ..nn import QuantSpec
from ..nn.low_rank_linear import LowRankLinear
from .config import RecipeConfig, select

WHITEN_METHODS = ("svd-llm", "asvd")
_MAX_DAMPING = 1e-1


@dataclasses.dataclass
class Factors:
    """One truncated factorization W ≈ A·B.

    Attributes:
        a: (out, rank) float64.
        b: (rank, in) float64.
        singular_values: all singular values of W (or of W·S when whitened), descending, float64.
        rank: the rank kept.
        energy_kept: Σ_{i<rank} σ_i² / Σ σ_i².
        damping: the relative diagonal damping SVD-LLM needed (0.0 when none, or not SVD-LLM).
    """

    a: torch.Tensor
    b: torch.Tensor
    singular_values: torch.Tensor
    rank: int
    energy_kept: float
    damping: float = 0.0


def check_rank_choice(rank=None, energy=None, param_ratio=None, who: str = "FactorizeConfig") -> None:
    """Raises ValueError unless exactly one of rank (int ≥ 1), energy (0, 1] or param_ratio (0, 1] is given."""
    given = [n for n, v in (("rank", rank), ("energy", energy), ("param_ratio", param_ratio)) if v is not None]
    if len(given) != 1:
        raise ValueError(
            f"{who}: give exactly one of rank, energy, param_ratio; got {', '.join(given) if given else 'none'}"
        )
    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
        raise ValueError(f"{who}: rank must be an int ≥ 1; got {rank!r}")
    for label, value in (("energy", energy), ("param_ratio", param_ratio)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0.0 < value <= 1.0):
            raise ValueError(f"{who}: {label} must be a number in (0, 1]; got {value!r}")


def rank_for(
    out_features: int,
    in_features: int,
    *,
    rank: int | None = None,
    energy: float | None = None,
    param_ratio: float | None = None,
    singular_values: torch.Tensor | None = None,
) -> int:
    """The rank to keep for an (out, in) weight under exactly one criterion (see the module docstring); ≥ 1.

    ``energy`` needs the ``singular_values``. The result never exceeds min(out, in).
    """
    check_rank_choice(rank, energy, param_ratio, "rank_for")
    full = min(out_features, in_features)
    if rank is not None:
        return min(rank, full)
    if param_ratio is not None:
        # A tiny epsilon so that a ratio whose product is an exact integer is not floored one below by rounding.
        return max(
            1, min(full, math.floor(param_ratio * out_features * in_features / (out_features + in_features) + 1e-9))
        )
    if singular_values is None:
        raise ValueError("rank_for: energy needs the singular values")
    sq = singular_values.detach().to(torch.float64) ** 2
    total = float(sq.sum())
    if total == 0.0:
        return 1
    cumulative = torch.cumsum(sq, 0) / total
    r = int(torch.searchsorted(cumulative, torch.tensor([energy - 1e-12], dtype=torch.float64)).item()) + 1
    return max(1, min(full, r))


def input_scaling(
    moment, method: str, *, asvd_alpha: float = 0.5, damping: float = 1e-6, inverse: bool = True
) -> tuple[torch.Tensor, torch.Tensor | None, float]:
    """XᵀX summary -> (S (in, in), S⁻¹ (in, in) or None, damping used), float64 on the moment's device, for
    ``method`` "svd-llm" (S lower triangular) or "asvd" (S diagonal).

    ``moment`` is an :class:`~tcompress.analysis.projection_inputs.InputMoment` (or anything with a
    ``second_moment`` (in, in) tensor). ``inverse=False`` leaves S⁻¹ out (None): :func:`truncated_svd` then solves
    with the triangular S instead, which saves an (in, in) float64 matrix (1.6 GB for Mistral-7B's down_proj).
    Memory beyond the moment: S (and a damped copy of XᵀX only when XᵀX itself is not positive definite).

    Raises:
        ValueError: an unknown method, or a moment that stays indefinite even at damping 1e-1 (NaN inputs, say).
    """
    if method == "asvd":
        sigma = moment.second_moment.to(torch.float64)
        n = sigma.shape[0]
        rms = torch.diagonal(sigma).clamp(min=0).sqrt()
        # A channel that never fired would make S singular: give it the smallest non-zero scale.
        floor = rms[rms > 0].min() if bool((rms > 0).any()) else torch.tensor(1.0, dtype=torch.float64)
        s = torch.where(rms > 0, rms, floor) ** asvd_alpha
        return torch.diag(s), torch.diag(1.0 / s) if inverse else None, 0.0
    if method != "svd-llm":
        raise ValueError(f"input_scaling: method must be one of {', '.join(WHITEN_METHODS)}; got {method!r}")
    # Cholesky of XᵀX itself, then S = chol(XᵀX)/√n = chol(XᵀX/n): no (in, in) copy of a held moment unless damping
    # is needed, and a moment that holds rows gets its XᵀX formed here, damped in place and dropped (not cached):
    # for Mistral-7B's down_proj input each avoided copy is 1.6 GB.
    rows = getattr(moment, "rows", None)
    if rows is not None:
        gram, per_token, owned = rows.T @ rows, 1.0 / max(moment.tokens, 1), True
    elif hasattr(moment, "xtx"):
        gram, per_token, owned = moment.xtx.to(torch.float64), 1.0 / max(moment.tokens, 1), False
    else:
        gram, per_token, owned = moment.second_moment.to(torch.float64), 1.0, False
    n = gram.shape[0]
    mean_diag = float(torch.diagonal(gram).mean())
    if not math.isfinite(mean_diag):
        raise ValueError("input_scaling: the calibration second moment holds NaN or Inf")
    lam = applied = 0.0
    while True:
        if lam > applied:
            if not owned:
                gram, owned = gram.clone(), True
            gram.diagonal().add_((lam - applied) * max(mean_diag, 1e-30))
            applied = lam
        chol, info = torch.linalg.cholesky_ex(gram)
        if int(info) == 0:
            break
        del chol
        lam = damping if lam == 0.0 else lam * 10
        if lam > _MAX_DAMPING:
            raise ValueError(
                f"input_scaling: the calibration second moment ({n} x {n}) is not positive definite even with a "
                f"diagonal damping of {_MAX_DAMPING} x its mean diagonal"
            )
    del gram
    chol.mul_(math.sqrt(per_token))
    if not inverse:
        return chol, None, lam
    eye = torch.eye(n, dtype=torch.float64, device=chol.device)
    return chol, torch.linalg.solve_triangular(chol, eye, upper=False), lam


def truncated_svd(
    weight: torch.Tensor,
    *,
    rank: int | None = None,
    energy: float | None = None,
    param_ratio: float | None = None,
    scaling: tuple[torch.Tensor, torch.Tensor, float] | None = None,
    decomposition: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
) -> Factors:
    """weight (out, in) -> :class:`Factors` with A (out, r), B (r, in), in float64.

    ``scaling`` is (S, S⁻¹ or None, damping) from :func:`input_scaling`: the SVD is taken of W·S and
    B = Σ_r^½·V_rᵀ·S⁻¹ (solved with the triangular S when S⁻¹ is None).
    ``decomposition`` is that SVD (U, s, Vᵀ) when the caller already has it (a sweep over ranks of one weight).
    """
    w = weight.detach().to(torch.float64)
    if scaling is not None:
        _check_same_device("truncated_svd", weight, scaling[0])
    if decomposition is None:
        decomposition = svd_of(w, scaling)
    u, s, vh = decomposition
    r = rank_for(*w.shape, rank=rank, energy=energy, param_ratio=param_ratio, singular_values=s)
    root = s[:r].sqrt()
    a = u[:, :r] * root
    b = root[:, None] * vh[:r]
    if scaling is not None:
        b = (
            b @ scaling[1]
            if scaling[1] is not None
            else torch.linalg.solve_triangular(scaling[0], b, upper=False, left=False)
        )
    total = float((s**2).sum())
    kept = float((s[:r] ** 2).sum()) / total if total > 0 else 1.0
    return Factors(a, b, s, r, kept, 0.0 if scaling is None else scaling[2])


def svd_of(
    weight: torch.Tensor, scaling: tuple[torch.Tensor, torch.Tensor, float] | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """weight (out, in) -> the thin SVD (U, s, Vᵀ) in float64 of W, or of W·S with ``scaling`` = (S, S⁻¹, damping)."""
    w = weight.detach().to(torch.float64)
    if scaling is not None:
        _check_same_device("svd_of", weight, scaling[0])
    return torch.linalg.svd(w if scaling is None else w @ scaling[0], full_matrices=False)


def _check_same_device(who: str, weight: torch.Tensor, factor: torch.Tensor) -> None:
    """Whitening factors must meet the weight on its device: a moment gathered on one device (or moved to the host)
    and a weight on another is the mistake this catches with a message instead of a kernel error."""
    if factor.device != weight.device:
        raise ValueError(
            f"{who}: the whitening factor is on {factor.device} but the weight is on {weight.device}; build the "
            "scaling from a moment on the weight's device (input_scaling(InputMoment(xtx.to(weight.device), n), ...))"
        )


@dataclasses.dataclass
class FactorizeConfig(RecipeConfig):
    """Truncated-SVD factorization of block projections into ``LowRankLinear`` (two linear maps).

    Attributes:
        rank / energy / param_ratio: exactly one: the rank rule (module docstring).
        whiten: None (plain SVD of W), ``"svd-llm"`` (Cholesky of XᵀX/n) or ``"asvd"`` (per-channel RMS^α).
        asvd_alpha: the exponent α of ASVD's scaling.
        damping: SVD-LLM's first relative diagonal damping when XᵀX/n is not positive definite.
        factor_bits: None keeps the factors in floating point; 4 or 8 stores each as a QuantLinear (RTN).
        factor_group_size: group size of quantized factors (must divide the rank and in_features); None = per channel.
        factor_symmetric, factor_scale_dtype: as in QuantizeConfig, for quantized factors.
        include / exclude: fnmatch patterns over module names selecting projections.
    """

    kind = "factorize"
    version = 1

    rank: int | None = None
    energy: float | None = None
    param_ratio: float | None = None
    whiten: str | None = None
    asvd_alpha: float = 0.5
    damping: float = 1e-6
    factor_bits: int | None = None
    factor_group_size: int | None = None
    factor_symmetric: bool = True
    factor_scale_dtype: str = "float32"
    include: tuple[str, ...] = ("*",)
    exclude: tuple[str, ...] = ()

    def __post_init__(self):
        check_rank_choice(self.rank, self.energy, self.param_ratio)
        if self.whiten is not None and self.whiten not in WHITEN_METHODS:
            raise ValueError(
                f"FactorizeConfig: whiten must be None or one of {', '.join(WHITEN_METHODS)}; got {self.whiten!r}"
            )
        if not (isinstance(self.damping, (int, float)) and 0 < self.damping <= _MAX_DAMPING):
            raise ValueError(f"FactorizeConfig: damping must be in (0, {_MAX_DAMPING}]; got {self.damping!r}")
        if not (isinstance(self.asvd_alpha, (int, float)) and self.asvd_alpha > 0):
            raise ValueError(f"FactorizeConfig: asvd_alpha must be a positive number; got {self.asvd_alpha!r}")
        if self.factor_bits is not None:
            self.quant_spec()  # QuantSpec's own messages for bits, group size, scale dtype
        for field in ("include", "exclude"):
            value = getattr(self, field)
            value = (value,) if isinstance(value, str) else tuple(value)
            if not all(isinstance(p, str) for p in value):
                raise TypeError(f"FactorizeConfig: {field} must be a sequence of fnmatch patterns; got {value!r}")
            setattr(self, field, value)

    def quant_spec(self) -> QuantSpec | None:
        """The QuantSpec of the factors, or None when they stay in floating point."""
        if self.factor_bits is None:
            return None
        return QuantSpec(self.factor_bits, self.factor_group_size, self.factor_symmetric, self.factor_scale_dtype)

    def apply_(self, model: torch.nn.Module) -> dict:
        """Plain-SVD factorization in place (used by ``compress_``); whitening needs :func:`factorize_`."""
        if self.whiten is not None:
            raise ValueError(
                f"FactorizeConfig(whiten={self.whiten!r}) needs calibration moments: call "
                "tcompress.recipes.factorize_(model, config, moments) with moments from "
                "tcompress.analysis.projection_inputs.collect_input_moments(model, windows)"
            )
        return _factorize(model, self, None, None)


def factorize_(
    model: torch.nn.Module, config: FactorizeConfig, moments: dict | None = None, *, svd_cache: dict | None = None
) -> dict:
    """Factorizes ``model``'s selected projections in place and records ``config`` in ``model.tcompress_config``.

    Args:
        model: a model of a family :mod:`tcompress.models` knows.
        config: the :class:`FactorizeConfig`.
        moments: {projection name: InputMoment}; required when ``config.whiten`` is set.
        svd_cache: a dict kept across calls on copies of one model (a sweep over ratios): each projection's SVD is
            computed once per whitening method and reused. Only valid while the weights and moments are the same.

    Returns:
        {"modules": {name: {"rank", "params_kept", "energy_kept", "damping"}}, "params_kept_fraction": float}.

    Raises:
        ValueError: whitening without moments (or without one for a selected module), no module selected, modules
            already replaced, a quantized-factor group size that does not divide a rank or in_features.
    """
    if not isinstance(config, FactorizeConfig):
        raise TypeError(f"factorize_: expected a FactorizeConfig; got {type(config).__name__}")
    report = _factorize(model, config, moments, svd_cache)
    model.tcompress_config = [*getattr(model, "tcompress_config", []), config.to_dict()]
    return report


def _factorize(model: torch.nn.Module, config: FactorizeConfig, moments: dict | None, svd_cache: dict | None) -> dict:
    arch = models.architecture(model)
    candidates = dict(arch.iter_projections(model))
    names = select(candidates, config.include, config.exclude)
    if not names:
        raise ValueError(
            f"FactorizeConfig: include={list(config.include)} exclude={list(config.exclude)} select no projection "
            f"of this {arch.family} model (e.g. {next(iter(candidates), 'none')!r})"
        )
    replaced = [n for n in names if not _is_dense_projection(candidates[n])]
    if replaced:
        raise ValueError(
            f"FactorizeConfig: {len(replaced)} selected module(s) are no longer dense nn.Linear/Conv1D "
            f"(e.g. {replaced[0]!r} is a {type(candidates[replaced[0]]).__name__}); factorize before quantizing"
        )
    if config.whiten is not None:
        missing = [n for n in names if moments is None or n not in moments]
        if missing:
            raise ValueError(
                f"FactorizeConfig(whiten={config.whiten!r}): no calibration moment for {len(missing)} module(s) "
                f"(e.g. {missing[0]!r}); collect them with collect_input_moments(model, windows)"
            )
    spec = config.quant_spec()
    replacements, report, kept, total = {}, {}, 0, 0
    # Everything is factorized before the first module is swapped, so an error leaves the model as it was.
    for name in names:
        module = candidates[name]
        weight = models.projection_weight(module)
        if not bool(torch.isfinite(weight).all()):
            raise ValueError(f"FactorizeConfig: module {name!r} has NaN or Inf in its weight")
        key = (name, config.whiten, config.asvd_alpha, config.damping)
        if svd_cache is not None and key in svd_cache:
            scaling, decomposition = svd_cache[key]
        else:
            scaling = None
            if config.whiten is not None:
                scaling = input_scaling(
                    moments[name], config.whiten, asvd_alpha=config.asvd_alpha, damping=config.damping
                )
            decomposition = svd_of(weight, scaling)
            if svd_cache is not None:
                svd_cache[key] = (scaling, decomposition)
        f = truncated_svd(
            weight,
            rank=config.rank,
            energy=config.energy,
            param_ratio=config.param_ratio,
            scaling=scaling,
            decomposition=decomposition,
        )
        dtype = weight.dtype if spec is None else torch.float32
        bias = getattr(module, "bias", None)
        replacements[name] = LowRankLinear.from_factors(
            f.a.to(dtype), f.b.to(dtype), None if bias is None else bias.detach(), spec, name=name
        )
        out_features, in_features = weight.shape
        report[name] = {
            "rank": f.rank,
            "params_kept": f.rank * (out_features + in_features),
            "energy_kept": f.energy_kept,
            "damping": f.damping,
        }
        kept += f.rank * (out_features + in_features)
        total += out_features * in_features
    for name, module in replacements.items():
        models.set_module(model, name, module)
    return {"modules": report, "params_kept_fraction": kept / total}


def _is_dense_projection(module: torch.nn.Module) -> bool:
    try:
        models.projection_weight(module)
    except TypeError:
        return False
    return True
