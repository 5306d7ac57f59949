"""Block linearity (findings 2 and 4): how well a closed-form affine map h_l -> h_{l+1} predicts each block.

Per block, from the float64 sums of :mod:`tcompress.analysis.activations`: an affine least-squares fit with bias and
a ridge term, for two targets, ``"output"`` (y = h_{l+1}) and ``"residual"`` (y = h_{l+1} - h_l, the block's update
of the residual stream), fitted on the train windows and scored on the held-out windows by

- pooled R² = 1 - Σ_j SSE_j / Σ_j SST_j (SST around the per-dimension held-out mean), and
- per-dimension R² = mean over dimensions of 1 - SSE_j / SST_j (dimensions with zero held-out variance skipped).

Pooled R² weights dimensions by their variance, so a few massive dimensions decide it; the per-dimension average
weights every dimension the same. Both are reported, for every position set the statistics hold (``"no_outliers"``
is the headline when massive tokens were marked, else ``"no_first"``; see :mod:`tcompress.analysis.activations`).

Fit: with C_xx, C_xy the (population) covariances of the train rows and μ their means,
A = (C_xx + λ I)⁻¹ C_xy, b = μ_y - μ_x A, where λ = ``ridge`` · tr(C_xx) / d (relative to the mean eigenvalue, so one
setting serves every scale). Errors on the held-out rows are computed exactly from their sums:
SSE_j / n = Var(y_j) - 2 (Aᵀ C_xy)_jj + (Aᵀ C_xx A)_jj + (μ_y - μ_x A - b)_j².

Conditional linearity (finding 2): :func:`conditional_linearity` replaces an upstream block k by its fitted map and
scores block l > k on the inputs it then sees, with the map fitted on clean inputs and with one refitted on the shifted
inputs.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .. import models
from .activations import BlockStatistics, Moments, collect_block_statistics
from .massive_tokens import MassiveTokens

TARGETS = ("output", "residual")


@dataclasses.dataclass
class AffineFit:
    """A fitted affine map of a block's input x (..., d) to its target: target ≈ x @ A + b.

    Attributes:
        A: (d, d) float64. b: (d,) float64.
        target: ``"output"`` (predicts h_{l+1}) or ``"residual"`` (predicts h_{l+1} - h_l).
        mean_in: (d,) the mean input of the fit's rows (the centre for low-rank forms).
        ridge: the relative ridge the fit used; tokens: the rows it was fitted on.
    """

    A: torch.Tensor
    b: torch.Tensor
    target: str
    mean_in: torch.Tensor
    ridge: float
    tokens: int

    def output_map(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(A_out (d, d), b (d,)) with h_{l+1} ≈ h_l @ A_out + b, whatever the target (residual: A_out = I + A)."""
        if self.target == "output":
            return self.A, self.b
        return self.A + torch.eye(self.A.shape[0], dtype=self.A.dtype, device=self.A.device), self.b

    def predict_output(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., d) -> predicted h_{l+1} (..., d) in x's dtype (computed in float32 or better)."""
        A, b = self.output_map()
        work = torch.float64 if x.dtype == torch.float64 else torch.float32
        y = x.to(work) @ A.to(device=x.device, dtype=work) + b.to(device=x.device, dtype=work)
        return y.to(x.dtype)


def _target_moments(moments: Moments, target: str) -> Moments:
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}; got {target!r}")
    return moments if target == "output" else moments.residual_target()


def _check_ridge(ridge: float, who: str) -> None:
    if isinstance(ridge, bool) or not isinstance(ridge, (int, float)) or not ridge >= 0:
        raise ValueError(f"{who}: ridge must be a non-negative number (relative to tr(C_xx)/d); got {ridge!r}")


def ridge_covariance(moments: Moments, ridge: float) -> torch.Tensor:
    """(d, d) C_xx + λ I with λ = ridge · tr(C_xx) / d."""
    _check_ridge(ridge, "ridge_covariance")
    cov = moments.cov_in()
    d = cov.shape[0]
    lam = ridge * float(torch.diagonal(cov).sum()) / d
    return cov + lam * torch.eye(d, dtype=cov.dtype, device=cov.device)


def fit_affine(moments: Moments, *, target: str = "output", ridge: float = 1e-6) -> AffineFit:
    """Closed-form float64 ridge least squares of the target on x with a bias, from sums (see the module docstring).

    Raises:
        ValueError: an unknown target, a negative ridge, no rows, or a singular system (ridge=0 with fewer
            independent rows than dimensions: pass ridge > 0).
    """
    _check_ridge(ridge, "fit_affine")
    t = _target_moments(moments, target)
    system = ridge_covariance(t, ridge)
    # Cholesky both solves and detects a covariance that is singular to working precision (rank-deficient rows).
    factor, info = torch.linalg.cholesky_ex(system)
    eig = torch.linalg.eigvalsh(system) if int(info) == 0 and ridge == 0 else None
    if int(info) != 0 or (eig is not None and float(eig[0]) <= eig.shape[0] * 1e-13 * float(eig[-1])):
        raise ValueError(
            f"fit_affine: the input covariance is singular ({t.count} rows, d = {t.hidden_size}); use ridge > 0"
        )
    A = torch.cholesky_solve(t.cross_cov(), factor)
    b = t.mean_out() - t.mean_in() @ A
    return AffineFit(A=A, b=b, target=target, mean_in=t.mean_in(), ridge=float(ridge), tokens=t.count)


def reduced_rank_factors(fit: AffineFit, moments: Moments, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(U (d, r), V (r, d)), float64: the rank-r map U·V closest to ``fit.A`` in the metric of the inputs.

    Reduced-rank regression: among rank-r maps B, U·V minimises E‖(x - μ)(A - B)‖² + λ‖A - B‖²_F, i.e.
    ‖S^{1/2}(A - B)‖²_F with S = C_xx + λI the ridge covariance of ``moments`` (the fit's train rows). With the SVD
    S^{1/2} A = P Σ Qᵀ, U = S^{-1/2} P_r Σ_r and V = Q_rᵀ. So directions are kept by the prediction error they remove
    over the data, not by the size of A alone.

    Raises:
        ValueError: rank outside [1, d].
    """
    d = fit.A.shape[0]
    if isinstance(rank, bool) or not isinstance(rank, int) or not 1 <= rank <= d:
        raise ValueError(f"reduced_rank_factors: rank must be an int in [1, {d}]; got {rank!r}")
    system = ridge_covariance(moments, fit.ridge)
    eigvals, eigvecs = torch.linalg.eigh(system)
    eigvals = eigvals.clamp_min(torch.finfo(eigvals.dtype).tiny)
    root = (eigvecs * eigvals.sqrt()) @ eigvecs.T
    inv_root = (eigvecs * eigvals.rsqrt()) @ eigvecs.T
    P, sigma, Qt = torch.linalg.svd(root @ fit.A.to(root.device))
    U = inv_root @ (P[:, :rank] * sigma[:rank])
    V = Qt[:rank]
    return U, V


@dataclasses.dataclass(frozen=True)
class R2Score:
    """Held-out R² of one fit. pooled: 1 - ΣSSE/ΣSST; per_dim: mean_j (1 - SSE_j/SST_j) over ``dims`` dimensions."""

    pooled: float
    per_dim: float
    dims: int
    tokens: int


def r2_score(fit: AffineFit, moments: Moments) -> R2Score:
    """Scores ``fit`` on the rows summed in ``moments`` (normally the held-out split), for the fit's own target.

    Raises:
        ValueError: no rows, or widths that differ.
    """
    if moments.hidden_size != fit.A.shape[0]:
        raise ValueError(f"r2_score: the fit is for d = {fit.A.shape[0]}; the sums have d = {moments.hidden_size}")
    t = _target_moments(moments, fit.target)
    A = fit.A.to(t.in_in.device)
    b = fit.b.to(t.in_in.device)
    cov, cross = t.cov_in(), t.cross_cov()
    var = t.var_out()
    offset = t.mean_out() - t.mean_in() @ A - b
    sse = (var - 2 * (A * cross).sum(0) + (A * (cov @ A)).sum(0) + offset * offset).clamp_min(0.0)
    keep = var > 0
    total = float(var.sum())
    pooled = float("nan") if total == 0 else 1.0 - float(sse.sum()) / total
    per_dim = float((1.0 - sse[keep] / var[keep]).mean()) if bool(keep.any()) else float("nan")
    return R2Score(pooled=pooled, per_dim=per_dim, dims=int(keep.sum()), tokens=t.count)


@dataclasses.dataclass
class BlockLinearity:
    """One block's held-out R², per position set and target: ``r2[positions][target] -> R2Score``."""

    layer: int
    r2: dict[str, dict[str, R2Score]]


@dataclasses.dataclass
class LinearityResult:
    """The per-block R² curve over depth (finding 4), with the settings that produced it."""

    blocks: list[BlockLinearity]
    ridge: float
    default_positions: str
    statistics: dict[str, Any]

    def curve(self, target: str = "output", positions: str | None = None, kind: str = "pooled") -> list[float]:
        """R² per block in depth order for one target, position set (None = default) and kind (pooled/per_dim)."""
        positions = self.default_positions if positions is None else positions
        return [getattr(b.r2[positions][target], kind) for b in self.blocks]

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly."""
        return dataclasses.asdict(self)


def block_linearity(stats: BlockStatistics, *, ridge: float = 1e-6) -> LinearityResult:
    """Held-out R² of every captured block, for both targets and both position sets.

    Each position set is fitted on its own train rows and scored on its own held-out rows.

    Raises:
        ValueError: ``stats`` has no held-out windows (collect with holdout > 0).
    """
    _check_ridge(ridge, "block_linearity")
    if not stats.heldout_windows:
        raise ValueError("block_linearity: the statistics have no held-out windows; collect them with holdout > 0")
    blocks = []
    for layer in stats.layers:
        r2: dict[str, dict[str, R2Score]] = {}
        for positions in stats.position_sets:
            train, heldout = stats.moments(layer, positions, "train"), stats.moments(layer, positions, "heldout")
            r2[positions] = {t: r2_score(fit_affine(train, target=t, ridge=ridge), heldout) for t in TARGETS}
        blocks.append(BlockLinearity(layer=layer, r2=r2))
    return LinearityResult(blocks, float(ridge), stats.default_positions, stats.to_dict())


class replaced_by_map:
    """Context manager: while active, block ``layer``'s output is replaced by ``fit.predict_output(its input)``.

    The block still runs (its output is discarded); this is a measurement tool, not a compression. For a lasting
    replacement use :mod:`tcompress.recipes.substitute`.
    """

    def __init__(self, model: nn.Module, layer: int, fit: AffineFit):
        self.block = models.architecture(model).blocks(model)[layer]
        self.fit = fit
        self.handle = None

    def _hook(self, module, args, kwargs, output):
        x = models.block_input_hidden_states(args, kwargs)
        return models.block_output_like(output, self.fit.predict_output(x))

    def __enter__(self) -> replaced_by_map:
        self.handle = self.block.register_forward_hook(self._hook, with_kwargs=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle.remove()


@dataclasses.dataclass
class ConditionalLinearity:
    """Block l's held-out R² when upstream block k is replaced by its fitted map (finding 2), per target.

    ``clean``: l's map fitted and scored on the original model's inputs; ``shifted_clean_fit``: that map scored on
    the inputs l sees after k was replaced; ``shifted_refit``: a map refitted on the shifted train inputs and scored
    on the shifted held-out inputs.
    """

    upstream: int
    layer: int
    positions: str
    clean: dict[str, R2Score]
    shifted_clean_fit: dict[str, R2Score]
    shifted_refit: dict[str, R2Score]


@dataclasses.dataclass
class ConditionalResult:
    """All measured (k, l) pairs, with settings."""

    pairs: list[ConditionalLinearity]
    ridge: float
    replacement_positions: str
    statistics: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly."""
        return dataclasses.asdict(self)


def conditional_linearity(
    model: nn.Module,
    windows: torch.Tensor,
    pairs: Sequence[tuple[int, int]],
    *,
    clean_stats: BlockStatistics | None = None,
    ridge: float = 1e-6,
    positions: str | None = None,
    replacement_positions: str = "all",
    holdout: float = 0.1,
    seed: int = 0,
    batch_size: int = 1,
    stats_device: torch.device | str | None = None,
    exclude: MassiveTokens | None = None,
) -> ConditionalResult:
    """For each (k, l) with k < l: replace block k by its clean output-target fit and re-measure block l.

    The replacement map of k is fitted on the clean train rows of ``replacement_positions`` (``"all"`` by default,
    since the map then runs on every position, the first included); block l is scored on ``positions`` (None = the
    statistics' default). ``clean_stats`` (collected on the same windows) saves the clean pass; it must cover every k
    and l, and its holdout, seed and massive-token marks then replace ``holdout``, ``seed`` and ``exclude``. The
    shifted pass leaves out the same (window, position) tokens as the clean one, so both R² are over one token set.

    Raises:
        ValueError: a pair that is not k < l, indices out of range, or clean_stats that do not match.
    """
    _check_ridge(ridge, "conditional_linearity")
    num_blocks = len(models.architecture(model).blocks(model))
    norm_pairs = []
    for pair in pairs:
        if len(pair) != 2:
            raise ValueError(f"conditional_linearity: pairs must be (k, l) with k < l; got {pair!r}")
        k, layer = (int(i) % num_blocks if -num_blocks <= int(i) < num_blocks else None for i in pair)
        if k is None or layer is None or not k < layer:
            raise ValueError(f"conditional_linearity: pairs must be (k, l) with 0 ≤ k < l < {num_blocks}; got {pair!r}")
        norm_pairs.append((k, layer))
    if not norm_pairs:
        raise ValueError("conditional_linearity: no (k, l) pairs given")
    needed = sorted({i for p in norm_pairs for i in p})
    if clean_stats is None:
        clean_stats = collect_block_statistics(
            model,
            windows,
            layers=needed,
            holdout=holdout,
            seed=seed,
            batch_size=batch_size,
            stats_device=stats_device,
            exclude=exclude,
        )
    missing = [i for i in needed if i not in clean_stats.layers]
    if missing or clean_stats.num_windows != windows.shape[0] or clean_stats.window_length != windows.shape[1]:
        raise ValueError(
            f"conditional_linearity: clean_stats must come from the same windows and cover blocks {needed}; "
            f"missing {missing}, windows {clean_stats.num_windows}x{clean_stats.window_length} vs "
            f"{tuple(windows.shape)}"
        )
    # The shifted pass reuses the clean pass's split, so both score the same held-out windows.
    kwargs = dict(
        holdout=clean_stats.holdout,
        seed=clean_stats.seed,
        batch_size=batch_size,
        stats_device=stats_device,
        exclude=clean_stats.massive,
    )
    positions = clean_stats.default_positions if positions is None else positions
    results = []
    for k, layer in norm_pairs:
        replacement = fit_affine(clean_stats.moments(k, replacement_positions), target="output", ridge=ridge)
        with replaced_by_map(model, k, replacement):
            shifted = collect_block_statistics(model, windows, layers=[layer], **kwargs)
        clean_train = clean_stats.moments(layer, positions)
        clean_held = clean_stats.moments(layer, positions, "heldout")
        sh_train, sh_held = shifted.moments(layer, positions), shifted.moments(layer, positions, "heldout")
        clean, moved, refit = {}, {}, {}
        for t in TARGETS:
            clean_fit = fit_affine(clean_train, target=t, ridge=ridge)
            clean[t] = r2_score(clean_fit, clean_held)
            moved[t] = r2_score(clean_fit, sh_held)
            refit[t] = r2_score(fit_affine(sh_train, target=t, ridge=ridge), sh_held)
        results.append(ConditionalLinearity(k, layer, positions, clean, moved, refit))
    return ConditionalResult(results, float(ridge), replacement_positions, clean_stats.to_dict())


def write_json(result: Any, path: str | os.PathLike) -> None:
    """Writes ``result.to_dict()`` (or a plain dict) as indented JSON."""
    data = result.to_dict() if hasattr(result, "to_dict") else result
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
