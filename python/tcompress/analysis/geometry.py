"""Activation geometry (finding 1, "variance is not importance"): do the directions that carry the variance of the
hidden states coincide with the directions the loss is sensitive to?

Everything here is a function of moment matrices, so it runs on the float64 sums of
:mod:`tcompress.analysis.activations` (any object with ``mean_in()``, ``cov_in()``, ``grad_second_moment()`` and
``count`` will do), at the residual stream entering a block ("layer l" = the input of block l):

- variance directions U: the principal directions of the hidden-state covariance Σ (eigenvectors, eigenvalues
  descending); k(q) = the fewest of them that hold a fraction q (0.9 by default) of the total variance tr Σ.
- gradient directions G: the principal directions of the uncentred second moment M = E[g gᵀ] of the per-token loss
  gradients g = dL/dh. Uncentred on purpose: a perturbation δ of h changes the loss by about g·δ, so E[(g·v)²] = vᵀMv
  is the loss sensitivity along v, mean included.
- unembedding directions (an alternative that needs no gradients): the principal directions of the logit-lens logits
  z = W h, pulled back to the residual stream. W (vocab, d) is the head weight with the final norm's scale folded in
  (W_U · diag(γ)); the per-token normalisation (RMS scaling, LayerNorm centring) is left out, so z is linear in h and
  Cov(z) = W Σ Wᵀ. Its top-k eigenvectors u_i pulled back, v_i = Wᵀ u_i, satisfy (WᵀW) Σ v_i = λ_i v_i; the
  directions are an orthonormal basis of span(v_1..v_k) (see :func:`unembedding_directions`).
- subspace overlap ||U_kᵀ G_k||²_F / k: 1 for the same subspace, 0 for orthogonal ones, k/d on average for random ones.
- CCA between the k-dimensional projections x = U_kᵀh and y = G_kᵀh, from Σ alone: Σxx = U_kᵀΣU_k,
  Σyy = G_kᵀΣG_k, Σxy = U_kᵀΣG_k; the canonical correlations are the singular values of Σxx^{-1/2} Σxy Σyy^{-1/2}.
  Reported: their mean and the "uncorrelated fraction", the share below 0.5.
- the null of unrelated subspaces (:func:`random_subspace_null`): the same overlap and CCA between U_k and seeded
  random k-dimensional subspaces (Haar: the Q of a Gaussian (d, k) matrix), under the same Σ, over several draws.
  CCA of unrelated subspaces is not near 0: a random k-dimensional x = Rᵀh picks up the dominant directions of Σ,
  which U_k holds, so its canonical correlations with U_kᵀh are high (e.g. a mean of ~0.75 with only ~20% below 0.5
  on a real model). "Uncorrelated" can therefore only mean "no more correlated than unrelated subspaces", and the
  null is what a predictive subspace is compared with; its spread (the standard deviation over draws) says how far
  from the null's mean a draw of an unrelated subspace lands.

Position sets: statistics are computed over the position sets of :mod:`tcompress.analysis.activations` (e.g.
``"no_first"``, positions 1..T-1 of each window: the first position of a Llama-family window is an attention sink whose
few huge components can hold > 95% of the variance, and ``"all"``); every result records which, and the report records
the statistics' default set as the one headline numbers use.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from typing import Any, Protocol

import torch

from .head_gram import RELATIVE_RANK_TOLERANCE as _RELATIVE_RANK_TOLERANCE
from .head_gram import HeadGram, folded_head_gram

UNCORRELATED_BELOW = 0.5
"""A canonical correlation below this counts as "uncorrelated" (the paper's threshold)."""
NULL_DRAWS = 8
"""Random subspaces per layer in the null of unrelated subspaces (:func:`random_subspace_null`)."""


class HiddenStateMoments(Protocol):
    """What the geometry reads from a block's statistics (:class:`tcompress.analysis.activations.Moments` has it)."""

    count: int

    def mean_in(self) -> torch.Tensor: ...

    def cov_in(self) -> torch.Tensor: ...

    def grad_second_moment(self) -> torch.Tensor: ...


# ---------------------------------------------------------------------------------------------------------------
# Matrix functions
# ---------------------------------------------------------------------------------------------------------------


def _check_square_symmetric(who: str, name: str, matrix: torch.Tensor) -> torch.Tensor:
    if not isinstance(matrix, torch.Tensor) or matrix.dim() != 2 or matrix.shape[0] != matrix.shape[1]:
        got = tuple(matrix.shape) if isinstance(matrix, torch.Tensor) else type(matrix).__name__
        raise ValueError(f"{who}: {name} must be a square (d, d) matrix; got {got}")
    if not matrix.dtype.is_floating_point:
        raise ValueError(f"{who}: {name} must be a floating-point matrix; got {matrix.dtype}")
    if not bool(torch.isfinite(matrix).all()):
        raise ValueError(f"{who}: {name} has NaN or infinite entries")
    matrix = matrix.double()
    return (matrix + matrix.T) / 2  # float64 sums are symmetric only up to rounding


def _check_basis(who: str, name: str, basis: torch.Tensor, d: int | None = None) -> torch.Tensor:
    if not isinstance(basis, torch.Tensor) or basis.dim() != 2 or basis.shape[1] < 1 or basis.shape[1] > basis.shape[0]:
        got = tuple(basis.shape) if isinstance(basis, torch.Tensor) else type(basis).__name__
        raise ValueError(f"{who}: {name} must be a (d, k) basis with 1 ≤ k ≤ d; got {got}")
    if d is not None and basis.shape[0] != d:
        raise ValueError(f"{who}: {name} has {basis.shape[0]} rows; expected d = {d}")
    basis = basis.double()
    gram = basis.T @ basis
    if not torch.allclose(gram, torch.eye(basis.shape[1], dtype=torch.float64, device=basis.device), atol=1e-6):
        raise ValueError(f"{who}: {name} must have orthonormal columns (BᵀB = I)")
    return basis


def principal_directions(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric PSD ``matrix`` (d, d) -> (eigenvalues (d,), directions (d, d)), eigenvalues descending.

    Column i of the directions is the i-th principal direction. Computed in float64; eigenvalues that rounding made
    slightly negative are clamped to 0.

    Raises:
        ValueError: not a square floating-point matrix, or NaN/inf entries.
    """
    matrix = _check_square_symmetric("principal_directions", "matrix", matrix)
    values, vectors = torch.linalg.eigh(matrix)
    return values.flip(0).clamp_min(0.0), vectors.flip(1)


def components_for_fraction(eigenvalues: torch.Tensor, fraction: float = 0.9) -> int:
    """Eigenvalues (d,), descending -> k: the fewest leading components whose sum reaches ``fraction`` of the total.

    Raises:
        ValueError: fraction outside (0, 1], eigenvalues not a non-empty 1-D tensor, or a total of zero.
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 < fraction <= 1.0:
        raise ValueError(f"components_for_fraction: fraction must lie in (0, 1]; got {fraction!r}")
    if not isinstance(eigenvalues, torch.Tensor) or eigenvalues.dim() != 1 or eigenvalues.numel() == 0:
        raise ValueError("components_for_fraction: eigenvalues must be a non-empty 1-D tensor")
    values = eigenvalues.double().clamp_min(0.0)
    total = float(values.sum())
    if total <= 0.0:
        raise ValueError("components_for_fraction: the eigenvalues sum to zero (no variance)")
    cumulative = torch.cumsum(values, 0) / total
    # A relative slack of 1e-12 so that fraction=1.0 is reached despite rounding in the cumulative sum.
    return min(int((cumulative < fraction - 1e-12).sum()) + 1, values.numel())


def subspace_overlap(u: torch.Tensor, g: torch.Tensor) -> float:
    """Orthonormal bases u, g: (d, k) each -> ||uᵀg||²_F / k in [0, 1] (1: same subspace, 0: orthogonal).

    Raises:
        ValueError: shapes differ, or a basis is not orthonormal.
    """
    u = _check_basis("subspace_overlap", "u", u)
    g = _check_basis("subspace_overlap", "g", g, u.shape[0])
    if g.shape[1] != u.shape[1]:
        raise ValueError(f"subspace_overlap: bases of equal size expected; got k = {u.shape[1]} and {g.shape[1]}")
    return float((u.T @ g).pow(2).sum()) / u.shape[1]


def _inverse_sqrt(matrix: torch.Tensor) -> torch.Tensor:
    """(k, k) PSD -> (k, r) W with Wᵀ·matrix·W = I_r over the r directions that have variance (a pseudo-whitening)."""
    values, vectors = torch.linalg.eigh(matrix)
    keep = values > _RELATIVE_RANK_TOLERANCE * max(float(values.max()), 0.0)
    return vectors[:, keep] / values[keep].sqrt()


def canonical_correlations(cov: torch.Tensor, u: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Canonical correlations between x = uᵀh and y = gᵀh for h with covariance ``cov`` (d, d): (k,), descending.

    u (d, k) and g (d, k') are orthonormal bases; min(k, k') correlations are returned, each in [0, 1]. They are the
    singular values of Σxx^{-1/2} Σxy Σyy^{-1/2}; a direction of x or y without variance correlates with nothing and
    contributes a 0. Identical subspaces give all ones; for u spanned by eigenvectors of ``cov``, a g orthogonal to u
    gives all zeros.

    Raises:
        ValueError: a bad covariance or basis.
    """
    cov = _check_square_symmetric("canonical_correlations", "cov", cov)
    u = _check_basis("canonical_correlations", "u", u, cov.shape[0])
    g = _check_basis("canonical_correlations", "g", g, cov.shape[0])
    if float(torch.diagonal(cov).sum()) <= 0.0:
        return torch.zeros(min(u.shape[1], g.shape[1]), dtype=torch.float64, device=cov.device)
    cov_u = cov @ u
    return _whitened_correlations(cov, cov_u, _inverse_sqrt(u.T @ cov_u), g)


def _whitened_correlations(cov: torch.Tensor, cov_u: torch.Tensor, wx: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Σ (d, d), Σu (d, k), u's whitening wx (k, r), g (d, k') -> the min(k, k') canonical correlations, descending.

    Split out of :func:`canonical_correlations` so that the null's draws share Σu and wx."""
    count = min(cov_u.shape[1], g.shape[1])
    cov_g = cov @ g
    wy = _inverse_sqrt(g.T @ cov_g)
    singular = torch.linalg.svdvals(wx.T @ (cov_u.T @ g) @ wy).clamp(0.0, 1.0)
    out = torch.zeros(count, dtype=torch.float64, device=cov.device)
    out[: min(count, singular.numel())] = singular[:count]
    return out


def variance_fraction_in(second_moment: torch.Tensor, basis: torch.Tensor) -> float:
    """tr(Bᵀ S B) / tr(S) for a PSD ``second_moment`` S (d, d) and an orthonormal ``basis`` B (d, k).

    With S the covariance of h (or its second moment about a mean μ), this is the share of the variance that the
    projection μ + BBᵀ(h - μ) keeps ("retained variance"); with S = E[ggᵀ], the share of the loss sensitivity.

    Raises:
        ValueError: a bad matrix or basis, or tr(S) = 0.
    """
    s = _check_square_symmetric("variance_fraction_in", "second_moment", second_moment)
    b = _check_basis("variance_fraction_in", "basis", basis, s.shape[0])
    total = float(torch.diagonal(s).sum())
    if total <= 0.0:
        raise ValueError("variance_fraction_in: the second moment has zero trace (nothing to retain)")
    return float(torch.diagonal(b.T @ s @ b).sum()) / total


def unembedding_directions(
    cov: torch.Tensor, head_weight: torch.Tensor | None = None, *, gram: HeadGram | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(eigenvalues (r,), directions (d, r)): the logit-lens principal directions pulled back to the residual stream.

    With W = ``head_weight`` (vocab, d) (the final norm's scale already folded in) and Σ = ``cov`` (d, d): the
    logits z = W h have covariance W Σ Wᵀ, whose eigenvalues λ_i (descending) are returned. Writing WᵀW = B S² Bᵀ
    (r = rank W), the logit-space eigenvectors are u_i ∝ W B S⁻¹ e_i with e_i the eigenvectors of S Bᵀ Σ B S, so the
    pulled-back directions Wᵀ u_i ∝ B S e_i. The leading k columns of the result are an orthonormal basis of the span
    of the top-k pulled-back directions (Gram-Schmidt in order, so nested in k).

    Give either ``head_weight`` or ``gram`` (B and S precomputed by :meth:`HeadGram.of`, e.g. once for all layers of a
    model). Computed in float64 on ``cov``'s device.

    Raises:
        ValueError: a bad covariance, neither or both of head_weight and gram, or a head whose width is not d.
    """
    cov = _check_square_symmetric("unembedding_directions", "cov", cov)
    d = cov.shape[0]
    if (head_weight is None) == (gram is None):
        raise ValueError("unembedding_directions: give exactly one of head_weight and gram")
    if gram is None:
        if not isinstance(head_weight, torch.Tensor) or head_weight.dim() != 2 or head_weight.shape[1] != d:
            got = tuple(head_weight.shape) if isinstance(head_weight, torch.Tensor) else type(head_weight).__name__
            raise ValueError(f"unembedding_directions: head_weight must be (vocab, {d}); got {got}")
        gram = HeadGram.of(head_weight.to(cov.device))
    if gram.hidden_size != d:
        raise ValueError(
            f"unembedding_directions: the head gram is for d = {gram.hidden_size}; the covariance has d = {d}"
        )
    b, s = gram.basis.to(cov.device), gram.singular.to(cov.device)
    inner = (s[:, None] * (b.T @ cov @ b)) * s[None, :]
    values, vectors = torch.linalg.eigh((inner + inner.T) / 2)
    values, vectors = values.flip(0).clamp_min(0.0), vectors.flip(1)
    pulled_back = b @ (s[:, None] * vectors)
    directions, _ = torch.linalg.qr(pulled_back)  # orthonormal, and span of the first k columns kept for every k
    return values, directions


# ---------------------------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SubspaceComparison:
    """The variance subspace U_k against one k-dimensional "predictive" subspace P_k at a layer.

    Attributes:
        kind: ``"gradient"`` or ``"unembedding"``.
        overlap: ||U_kᵀP_k||²_F / k.
        random_overlap: k / d, the expected overlap of two random k-dimensional subspaces (for scale).
        mean_canonical_correlation: mean of the k canonical correlations of U_kᵀh and P_kᵀh.
        uncorrelated_fraction: the share of canonical correlations below ``UNCORRELATED_BELOW`` (0.5).
        variance_in_predictive: tr(P_kᵀΣP_k) / tr Σ, the hidden-state variance the predictive subspace holds.
        canonical_correlations: the k correlations, descending.
    """

    kind: str
    overlap: float
    random_overlap: float
    mean_canonical_correlation: float
    uncorrelated_fraction: float
    variance_in_predictive: float
    canonical_correlations: tuple[float, ...]


@dataclasses.dataclass(frozen=True)
class RandomSubspaceNull:
    """U_k against ``draws`` seeded random k-dimensional subspaces under the same Σ: where unrelated subspaces land.

    Each statistic is the mean over the draws and its spread, the sample standard deviation over the draws (ddof 1).

    Attributes:
        draws: random subspaces drawn.
        seed: the seed of the torch.Generator (CPU) that drew them.
        mean_canonical_correlation, mean_canonical_correlation_std: of the per-draw mean canonical correlation.
        uncorrelated_fraction, uncorrelated_fraction_std: of the per-draw share of correlations below 0.5.
        overlap, overlap_std: of the per-draw ||U_kᵀR||²_F / k (its expectation is k/d).
    """

    draws: int
    seed: int
    mean_canonical_correlation: float
    mean_canonical_correlation_std: float
    uncorrelated_fraction: float
    uncorrelated_fraction_std: float
    overlap: float
    overlap_std: float


@dataclasses.dataclass(frozen=True)
class LayerGeometry:
    """The geometry of the residual stream entering one block, over one position set.

    Attributes:
        layer: the block index (its input hidden states).
        positions: the position set (e.g. ``"no_first"`` or ``"all"``).
        tokens: the tokens the statistics were computed over.
        hidden_size: d.
        variance_target: q, the fraction of variance k is chosen for (0.9).
        k: k(q), the number of principal directions for q of the variance.
        top_direction_share: the variance share of the first principal direction (near 1 = a massive-activation
            outlier).
        gradient_share_in_variance_subspace: tr(U_kᵀMU_k) / tr M, the share of the loss sensitivity E[ggᵀ] that lies
            in the variance subspace (None without gradients).
        gradient: U_k against the top-k gradient directions (None without gradients).
        unembedding: U_k against the top-k unembedding directions (None without a head weight).
        heldout_tokens: tokens of the held-out split (0 when none was given).
        heldout_retained_variance: {basis name: share of the held-out variance about the calibration mean μ that
            μ + BBᵀ(h - μ) keeps}, for the ``"variance"`` basis U_k and each predictive basis; empty without a
            held-out split.
        null: U_k against random k-dimensional subspaces under the same Σ (:class:`RandomSubspaceNull`), the scale
            the gradient and unembedding comparisons are read against; None when no draws were asked for.
    """

    layer: int
    positions: str
    tokens: int
    hidden_size: int
    variance_target: float
    k: int
    top_direction_share: float
    gradient_share_in_variance_subspace: float | None
    gradient: SubspaceComparison | None
    unembedding: SubspaceComparison | None
    heldout_tokens: int = 0
    heldout_retained_variance: dict[str, float] = dataclasses.field(default_factory=dict)
    null: RandomSubspaceNull | None = None

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-serializable dict."""
        return dataclasses.asdict(self)


def compare_subspaces(
    kind: str, cov: torch.Tensor, variance_basis: torch.Tensor, predictive_basis: torch.Tensor
) -> SubspaceComparison:
    """Σ (d, d), U_k (d, k), P_k (d, k) -> :class:`SubspaceComparison` (overlap, CCA, variance held by P_k)."""
    d, k = variance_basis.shape
    correlations = canonical_correlations(cov, variance_basis, predictive_basis)
    return SubspaceComparison(
        kind=kind,
        overlap=subspace_overlap(variance_basis, predictive_basis),
        random_overlap=k / d,
        mean_canonical_correlation=float(correlations.mean()),
        uncorrelated_fraction=float((correlations < UNCORRELATED_BELOW).double().mean()),
        variance_in_predictive=variance_fraction_in(cov, predictive_basis),
        canonical_correlations=tuple(float(c) for c in correlations),
    )


def random_subspace_null(
    cov: torch.Tensor, variance_basis: torch.Tensor, *, draws: int = NULL_DRAWS, seed: int = 0
) -> RandomSubspaceNull:
    """Σ (d, d), U_k (d, k) -> :class:`RandomSubspaceNull`: overlap and CCA of U_k with ``draws`` random
    k-dimensional subspaces R under Σ, measured as :func:`compare_subspaces` measures a predictive subspace.

    Each R is the Q of a (d, k) standard Gaussian matrix (a uniformly random subspace), drawn in float64 by a CPU
    ``torch.Generator`` seeded with ``seed`` (the draws do not depend on the device) and moved to Σ's device.

    Raises:
        ValueError: ``draws`` not an int ≥ 2 (a spread needs two draws), a bad covariance or basis.
    """
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 2:
        raise ValueError(f"random_subspace_null: draws must be an int ≥ 2 (a spread needs two); got {draws!r}")
    cov = _check_square_symmetric("random_subspace_null", "cov", cov)
    u = _check_basis("random_subspace_null", "variance_basis", variance_basis, cov.shape[0])
    d, k = u.shape
    if float(torch.diagonal(cov).sum()) <= 0.0:
        raise ValueError("random_subspace_null: the covariance has zero trace (no variance to correlate)")
    cov_u = cov @ u
    wx = _inverse_sqrt(u.T @ cov_u)
    generator = torch.Generator().manual_seed(seed)
    means, fractions, overlaps = [], [], []
    for _ in range(draws):
        gaussian = torch.randn(d, k, generator=generator, dtype=torch.float64)
        r = torch.linalg.qr(gaussian.to(cov.device))[0]
        correlations = _whitened_correlations(cov, cov_u, wx, r)
        means.append(float(correlations.mean()))
        fractions.append(float((correlations < UNCORRELATED_BELOW).double().mean()))
        overlaps.append(float((u.T @ r).pow(2).sum()) / k)

    def spread(values: list[float]) -> tuple[float, float]:
        t = torch.tensor(values, dtype=torch.float64)
        return float(t.mean()), float(t.std())

    (m, m_std), (f, f_std), (o, o_std) = spread(means), spread(fractions), spread(overlaps)
    return RandomSubspaceNull(draws, int(seed), m, m_std, f, f_std, o, o_std)


@dataclasses.dataclass(frozen=True)
class LayerBases:
    """The bases a layer's geometry was computed with, for the projection intervention.

    Attributes:
        mean: (d,) μ, the calibration mean of the hidden states.
        variance: (d, k) U_k, the top-k principal directions of Σ.
        gradient: (d, k) G_k, the top-k gradient directions, or None.
        unembedding: (d, k) the top-k unembedding directions, or None.
    """

    mean: torch.Tensor
    variance: torch.Tensor
    gradient: torch.Tensor | None
    unembedding: torch.Tensor | None


def layer_geometry(
    moments: HiddenStateMoments,
    *,
    layer: int,
    positions: str,
    variance_target: float = 0.9,
    gradients: bool = True,
    head_weight: torch.Tensor | None = None,
    heldout: HiddenStateMoments | None = None,
    head_gram: HeadGram | None = None,
    null_draws: int = NULL_DRAWS,
    null_seed: int = 0,
) -> tuple[LayerGeometry, LayerBases]:
    """One block's input statistics -> (:class:`LayerGeometry`, :class:`LayerBases`).

    The matrix work runs in float64 on the device the moments are on; the returned bases are on the CPU.

    Args:
        moments: the block's float64 sums for one position set (``mean_in``, ``cov_in``, ``grad_second_moment``).
        layer: the block index, recorded in the result.
        positions: the position set the moments cover, recorded in the result.
        variance_target: q for k(q).
        gradients: compare with the gradient directions (the moments must hold gradient sums).
        head_weight: (vocab, d) head weight with the final norm's scale folded in, for the unembedding directions;
            None skips them.
        heldout: the same block's sums over held-out windows, for the retained variance of each basis; None skips it.
        head_gram: the head's :class:`HeadGram` (:func:`folded_head_gram`), instead of ``head_weight``: computed once
            for all layers of a model.
        null_draws: random subspaces in the null of unrelated subspaces (:func:`random_subspace_null`); 0 skips it.
        null_seed: the null's seed.

    Raises:
        ValueError: as the matrix functions, moments without gradient sums when ``gradients``, or ``null_draws``
            neither 0 nor an int ≥ 2.
    """
    cov = moments.cov_in().double()
    device = cov.device
    values, vectors = principal_directions(cov)
    k = components_for_fraction(values, variance_target)
    u = vectors[:, :k]
    total = float(values.sum())
    gradient = unembedding = grad_share = None
    g = w = None
    if gradients:
        grad_moment = moments.grad_second_moment().double().to(device)
        g = principal_directions(grad_moment)[1][:, :k]
        gradient = compare_subspaces("gradient", cov, u, g)
        trace = float(torch.diagonal(grad_moment).sum())
        grad_share = variance_fraction_in(grad_moment, u) if trace > 0 else math.nan
    if head_weight is not None or head_gram is not None:
        if head_gram is None:
            head_gram = HeadGram.of(head_weight.to(device))
        w = unembedding_directions(cov, gram=head_gram)[1][:, :k]
        unembedding = compare_subspaces("unembedding", cov, u, w)
    null = None
    if null_draws != 0:
        null = random_subspace_null(cov, u, draws=null_draws, seed=null_seed)
    mean = moments.mean_in().double().to(device)
    retained: dict[str, float] = {}
    if heldout is not None and heldout.count > 0:
        offset = heldout.mean_in().double().to(device) - mean
        about_mean = heldout.cov_in().double().to(device) + torch.outer(offset, offset)  # E[(h-μ)(h-μ)ᵀ], held out
        for name, basis in (("variance", u), ("gradient", g), ("unembedding", w)):
            if basis is not None:
                retained[name] = variance_fraction_in(about_mean, basis)
    geometry = LayerGeometry(
        layer=int(layer),
        positions=str(positions),
        tokens=int(moments.count),
        hidden_size=cov.shape[0],
        variance_target=float(variance_target),
        k=k,
        top_direction_share=float(values[0]) / total if total > 0 else math.nan,
        gradient_share_in_variance_subspace=grad_share,
        gradient=gradient,
        unembedding=unembedding,
        heldout_tokens=int(heldout.count) if heldout is not None else 0,
        heldout_retained_variance=retained,
        null=null,
    )
    # On the CPU: a report keeps the bases of every layer and position set, which would add up on an accelerator.
    return geometry, LayerBases(*(None if t is None else t.cpu() for t in (mean, u, g, w)))


@dataclasses.dataclass(frozen=True)
class GeometryReport:
    """Per-layer geometry over several position sets, with the settings that produced it.

    Attributes:
        layers: one :class:`LayerGeometry` per (layer, position set), in layer order then position-set order.
        default_positions: the position set headline numbers use (the statistics' default; ``"no_first"`` for
            statistics that do not say).
        settings: free-form provenance (model, text, windows, seed ...), JSON-serializable.
    """

    layers: tuple[LayerGeometry, ...]
    default_positions: str
    settings: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The report as a JSON-serializable dict."""
        return {
            "default_positions": self.default_positions,
            "settings": self.settings,
            "layers": [g.to_dict() for g in self.layers],
        }

    def to_json(self, **kwargs: Any) -> str:
        """The report as JSON text (``kwargs`` go to :func:`json.dumps`)."""
        return json.dumps(self.to_dict(), **kwargs)

    def at(self, layer: int, positions: str | None = None) -> LayerGeometry:
        """The geometry of one layer and position set (None = the default).

        Raises:
            KeyError: that layer and position set were not analysed.
        """
        positions = self.default_positions if positions is None else positions
        for g in self.layers:
            if g.layer == layer and g.positions == positions:
                return g
        raise KeyError(f"GeometryReport.at: no layer {layer} over positions {positions!r}")


def activation_geometry(
    statistics: Any,
    *,
    model: torch.nn.Module | None = None,
    layers: Sequence[int] | None = None,
    positions: Sequence[str] = ("no_first", "all"),
    variance_target: float = 0.9,
    settings: dict[str, Any] | None = None,
    null_draws: int = NULL_DRAWS,
    null_seed: int = 0,
) -> tuple[GeometryReport, dict[tuple[int, str], LayerBases]]:
    """Block statistics -> (:class:`GeometryReport`, ``{(layer, positions): LayerBases}``).

    ``statistics`` is a :class:`tcompress.analysis.activations.BlockStatistics`: bases come from its ``"train"``
    split, retained variance is measured on its ``"heldout"`` split where it has one; gradient directions need
    ``gradients=True`` at collection. ``model`` gives the head for
    the unembedding directions (None skips them). ``layers`` defaults to every captured block. Every layer and
    position set gets the null of ``null_draws`` random subspaces (seed ``null_seed``; 0 draws skips it).

    Raises:
        ValueError: a layer that was not captured, an unknown position set, or the matrix functions' errors.
    """
    layers = tuple(statistics.layers) if layers is None else tuple(layers)
    # WᵀW and its eigendecomposition once for the model, not once per layer and position set.
    gram = folded_head_gram(model) if model is not None else None
    results, bases = [], {}
    for layer in layers:
        for p in positions:
            geometry, layer_bases = layer_geometry(
                statistics.moments(layer, p, "train"),
                layer=layer,
                positions=p,
                variance_target=variance_target,
                gradients=bool(statistics.gradients),
                head_gram=gram,
                heldout=statistics.moments(layer, p, "heldout") if statistics.heldout_windows else None,
                null_draws=null_draws,
                null_seed=null_seed,
            )
            results.append(geometry)
            bases[(layer, p)] = layer_bases
    default = getattr(statistics, "default_positions", "no_first")
    info = dict(statistics.to_dict()) if hasattr(statistics, "to_dict") else {}
    info.update(settings or {})
    return GeometryReport(tuple(results), default, info), bases
