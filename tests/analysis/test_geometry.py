"""Activation geometry math on synthetic moments whose answers are known, and against direct sample statistics."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from tcompress.analysis import geometry, head_gram


def _orthonormal(d: int, k: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(d, k, generator=gen, dtype=torch.float64))[0]


def _random_cov(d: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(d, 2 * d, generator=gen, dtype=torch.float64)
    return a @ a.T / (2 * d)


class FakeMoments:
    """Moments from a sample of hidden states h (n, d) and gradients g (n, d) (population normalisation)."""

    def __init__(self, h: torch.Tensor, g: torch.Tensor | None = None) -> None:
        self.h, self.g, self.count = h.double(), None if g is None else g.double(), h.shape[0]

    def mean_in(self):
        return self.h.mean(0)

    def cov_in(self):
        c = self.h - self.h.mean(0)
        return c.T @ c / self.count

    def grad_second_moment(self):
        if self.g is None:
            raise ValueError("no gradients")
        return self.g.T @ self.g / self.count


# -- principal directions and k(q) ------------------------------------------------------------------------------


def test_principal_directions_recover_a_known_spectrum():
    q = _orthonormal(6, 6, 0)
    spectrum = torch.tensor([1.0, 5.0, 0.5, 3.0, 0.1, 2.0], dtype=torch.float64)
    values, vectors = geometry.principal_directions(q @ torch.diag(spectrum) @ q.T)
    assert torch.allclose(values, spectrum.sort(descending=True).values, atol=1e-12)
    top = q[:, 1]  # eigenvalue 5
    assert abs(float(vectors[:, 0] @ top)) == pytest.approx(1.0, abs=1e-12)


def test_components_for_fraction_on_a_known_spectrum():
    values = torch.tensor([50.0, 30.0, 10.0, 6.0, 4.0])  # cumulative 0.5, 0.8, 0.9, 0.96, 1.0
    assert geometry.components_for_fraction(values, 0.9) == 3
    assert geometry.components_for_fraction(values, 0.5) == 1
    assert geometry.components_for_fraction(values, 0.81) == 3
    assert geometry.components_for_fraction(values, 0.95) == 4
    assert geometry.components_for_fraction(values, 1.0) == 5


@pytest.mark.parametrize("fraction", [0.0, 1.5, -0.1, True])
def test_components_for_fraction_rejects_bad_fractions(fraction):
    with pytest.raises(ValueError, match="fraction must lie in"):
        geometry.components_for_fraction(torch.ones(3), fraction)


def test_components_for_fraction_rejects_zero_variance():
    with pytest.raises(ValueError, match="sum to zero"):
        geometry.components_for_fraction(torch.zeros(3))


def test_principal_directions_rejects_bad_matrices():
    with pytest.raises(ValueError, match="square"):
        geometry.principal_directions(torch.ones(3, 4))
    with pytest.raises(ValueError, match="NaN"):
        geometry.principal_directions(torch.full((3, 3), math.nan))
    with pytest.raises(ValueError, match="floating-point"):
        geometry.principal_directions(torch.ones(3, 3, dtype=torch.long))


# -- overlap ----------------------------------------------------------------------------------------------------


def test_overlap_of_identical_subspaces_is_one_whatever_the_basis():
    u = _orthonormal(10, 4, 1)
    rotation = _orthonormal(4, 4, 2)
    assert geometry.subspace_overlap(u, u @ rotation) == pytest.approx(1.0, abs=1e-12)


def test_overlap_of_orthogonal_subspaces_is_zero_and_of_random_ones_about_k_over_d():
    q = _orthonormal(12, 12, 3)
    assert geometry.subspace_overlap(q[:, :3], q[:, 3:6]) == pytest.approx(0.0, abs=1e-12)
    d, k = 400, 20
    overlaps = [geometry.subspace_overlap(_orthonormal(d, k, s), _orthonormal(d, k, s + 100)) for s in range(5)]
    assert np.mean(overlaps) == pytest.approx(k / d, rel=0.2)


def test_overlap_rejects_non_orthonormal_or_mismatched_bases():
    with pytest.raises(ValueError, match="orthonormal"):
        geometry.subspace_overlap(torch.ones(5, 2), _orthonormal(5, 2, 0))
    with pytest.raises(ValueError, match="equal size"):
        geometry.subspace_overlap(_orthonormal(5, 2, 0), _orthonormal(5, 3, 1))
    with pytest.raises(ValueError, match="expected d = 5"):
        geometry.subspace_overlap(_orthonormal(5, 2, 0), _orthonormal(6, 2, 1))


# -- CCA ----------------------------------------------------------------------------------------------------------


def test_cca_of_identical_subspaces_is_all_ones():
    cov = _random_cov(8, 4)
    u = _orthonormal(8, 3, 5)
    cc = geometry.canonical_correlations(cov, u, u @ _orthonormal(3, 3, 6))
    assert torch.allclose(cc, torch.ones(3, dtype=torch.float64), atol=1e-8)


def test_cca_of_orthogonal_principal_subspaces_is_all_zeros():
    cov = _random_cov(8, 7)
    vectors = geometry.principal_directions(cov)[1]
    cc = geometry.canonical_correlations(cov, vectors[:, :3], vectors[:, 3:6])
    assert torch.allclose(cc, torch.zeros(3, dtype=torch.float64), atol=1e-8)


def _sample_cca(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Textbook sample CCA: whiten each block with its own covariance (Cholesky), SVD of the cross term."""
    x, y = x - x.mean(0), y - y.mean(0)
    n = x.shape[0]
    sxx, syy, sxy = x.T @ x / n, y.T @ y / n, x.T @ y / n
    lx, ly = np.linalg.cholesky(sxx), np.linalg.cholesky(syy)
    m = np.linalg.solve(lx, sxy) @ np.linalg.inv(ly).T
    return np.linalg.svd(m, compute_uv=False)


def test_cca_from_the_covariance_matches_a_direct_sample_cca():
    gen = torch.Generator().manual_seed(8)
    d, k, n = 10, 4, 500
    h = torch.randn(n, d, generator=gen, dtype=torch.float64) @ torch.randn(d, d, generator=gen, dtype=torch.float64)
    u, g = _orthonormal(d, k, 9), _orthonormal(d, k, 10)
    moments = FakeMoments(h)
    ours = geometry.canonical_correlations(moments.cov_in(), u, g).numpy()
    direct = _sample_cca((h @ u).numpy(), (h @ g).numpy())
    np.testing.assert_allclose(ours, direct, atol=1e-10)
    assert ours.min() > 0.01  # a non-trivial case: neither all ones nor all zeros
    assert ours.max() < 0.999


def test_cca_of_a_direction_without_variance_is_zero():
    cov = torch.diag(torch.tensor([3.0, 2.0, 0.0, 1.0], dtype=torch.float64))
    e = torch.eye(4, dtype=torch.float64)
    cc = geometry.canonical_correlations(cov, e[:, [0, 2]], e[:, [0, 2]])
    assert cc.tolist() == pytest.approx([1.0, 0.0], abs=1e-12)


# -- retained variance and unembedding directions ---------------------------------------------------------------


def test_variance_fraction_in_the_top_principal_directions_is_their_eigenvalue_share():
    cov = _random_cov(9, 11)
    values, vectors = geometry.principal_directions(cov)
    share = geometry.variance_fraction_in(cov, vectors[:, :4])
    assert share == pytest.approx(float(values[:4].sum() / values.sum()), rel=1e-12)
    with pytest.raises(ValueError, match="zero trace"):
        geometry.variance_fraction_in(torch.zeros(9, 9), vectors[:, :4])


def test_unembedding_directions_are_the_pulled_back_logit_principal_directions():
    gen = torch.Generator().manual_seed(12)
    d, vocab = 6, 40
    cov = _random_cov(d, 13)
    w = torch.randn(vocab, d, generator=gen, dtype=torch.float64)
    values, directions = geometry.unembedding_directions(cov, w)
    assert torch.allclose(directions.T @ directions, torch.eye(d, dtype=torch.float64), atol=1e-10)
    logit_values, logit_vectors = torch.linalg.eigh(w @ cov @ w.T)
    assert torch.allclose(values, logit_values.flip(0)[:d], rtol=1e-8, atol=1e-8)
    for k in (1, 2, 4):
        pulled = torch.linalg.qr(w.T @ logit_vectors.flip(1)[:, :k])[0]
        assert geometry.subspace_overlap(directions[:, :k], pulled) == pytest.approx(1.0, abs=1e-8)
    with pytest.raises(ValueError, match=r"head_weight must be \(vocab, 6\)"):
        geometry.unembedding_directions(cov, torch.ones(vocab, d + 1))


def test_unembedding_directions_from_a_precomputed_head_gram(monkeypatch):
    gen = torch.Generator().manual_seed(15)
    d, vocab = 6, 40
    cov = _random_cov(d, 16)
    w = torch.randn(vocab, d, generator=gen, dtype=torch.float32)
    gamma = torch.rand(d, generator=gen) + 0.5
    folded = w.double() * gamma.double()
    # Rows a block at a time (3 rows per block here) give the gram of the whole folded weight.
    monkeypatch.setattr(head_gram, "_GRAM_CHUNK_ELEMENTS", 3 * d)
    gram = geometry.HeadGram.of(w, gamma)
    assert gram.hidden_size == d and gram.basis.dtype == torch.float64
    values, vectors = torch.linalg.eigh(folded.T @ folded)
    torch.testing.assert_close(gram.singular, values.sqrt(), rtol=1e-10, atol=0)
    expected = geometry.unembedding_directions(cov, folded)
    got = geometry.unembedding_directions(cov, gram=gram)
    torch.testing.assert_close(got[0], expected[0], rtol=1e-9, atol=1e-12)
    for k in (1, 3, 6):
        assert geometry.subspace_overlap(got[1][:, :k], expected[1][:, :k]) == pytest.approx(1.0, abs=1e-9)
    with pytest.raises(ValueError, match="exactly one of head_weight and gram"):
        geometry.unembedding_directions(cov)
    with pytest.raises(ValueError, match="exactly one of head_weight and gram"):
        geometry.unembedding_directions(cov, folded, gram=gram)
    with pytest.raises(ValueError, match="head gram is for d = 6; the covariance has d = 5"):
        geometry.unembedding_directions(_random_cov(5, 1), gram=gram)
    with pytest.raises(ValueError, match=r"scale must be \(6,\)"):
        geometry.HeadGram.of(w, gamma[:5])
    with pytest.raises(ValueError, match=r"non-empty \(vocab, d\) floating tensor; got \(40, 6\) torch.int64"):
        geometry.HeadGram.of(w.long())


# -- one layer, end to end --------------------------------------------------------------------------------------


def test_layer_geometry_when_gradients_live_in_the_low_variance_directions():
    # h varies mostly along e0..e2; the gradient only along e5..e7: the variance subspace predicts nothing.
    gen = torch.Generator().manual_seed(14)
    n, d = 4000, 8
    scales = torch.tensor([10.0, 8.0, 6.0, 0.3, 0.3, 0.2, 0.2, 0.2], dtype=torch.float64)
    h = torch.randn(n, d, generator=gen, dtype=torch.float64) * scales + 5.0
    g = torch.zeros(n, d, dtype=torch.float64)
    g[:, 5:] = torch.randn(n, 3, generator=gen, dtype=torch.float64) * torch.tensor([3.0, 2.0, 1.0])
    result, bases = geometry.layer_geometry(FakeMoments(h, g), layer=2, positions="no_first")
    assert result.k == 3
    assert result.gradient.overlap == pytest.approx(0.0, abs=1e-3)
    assert result.gradient.uncorrelated_fraction == 1.0
    assert result.gradient_share_in_variance_subspace < 1e-3
    assert result.gradient.variance_in_predictive < 0.01
    assert bases.variance.shape == (d, 3) and bases.gradient.shape == (d, 3)
    assert torch.allclose(bases.mean, h.mean(0))
    # ... and where the gradient lives in the high-variance directions, everything agrees.
    g_aligned = torch.zeros(n, d, dtype=torch.float64)
    g_aligned[:, :3] = torch.randn(n, 3, generator=gen, dtype=torch.float64)
    aligned, _ = geometry.layer_geometry(FakeMoments(h, g_aligned), layer=2, positions="all")
    assert aligned.gradient.overlap == pytest.approx(1.0, abs=1e-3)
    assert aligned.gradient.mean_canonical_correlation == pytest.approx(1.0, abs=1e-3)
    assert aligned.gradient.uncorrelated_fraction == 0.0
    json.dumps(aligned.to_dict())


def test_layer_geometry_without_gradient_sums_says_so():
    h = torch.randn(100, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="no gradients"):
        geometry.layer_geometry(FakeMoments(h), layer=0, positions="all")
    result, bases = geometry.layer_geometry(FakeMoments(h), layer=0, positions="all", gradients=False)
    assert result.gradient is None and bases.gradient is None


# -- the null of unrelated subspaces ------------------------------------------------------------------------------


def _decaying_cov(d: int, seed: int) -> torch.Tensor:
    """Σ with a 1/i spectrum in a random basis: a few directions dominate, as in a residual stream."""
    q = _orthonormal(d, d, seed)
    return q @ torch.diag(torch.arange(1, d + 1, dtype=torch.float64).reciprocal()) @ q.T


def test_null_of_random_subspaces_sits_where_the_statistics_say():
    d = 120
    cov = _decaying_cov(d, 20)
    values, vectors = geometry.principal_directions(cov)
    k = geometry.components_for_fraction(values, 0.9)
    u = vectors[:, :k]
    null = geometry.random_subspace_null(cov, u, draws=8, seed=0)
    assert null.draws == 8 and null.seed == 0
    # The overlap of a random subspace with a fixed one has expectation k/d.
    assert abs(null.overlap - k / d) < 4 * null.overlap_std / math.sqrt(8) + 1e-3
    # Unrelated subspaces are far from uncorrelated under a dominated Σ: U_k holds the directions any x = Rᵀh sees.
    assert 0.5 < null.mean_canonical_correlation < 0.95 and null.uncorrelated_fraction < 0.5
    assert 0 < null.mean_canonical_correlation_std < 0.05 and null.uncorrelated_fraction_std > 0
    # Another unrelated subspace, drawn apart from the null's draws, lands within the null's spread ...
    for seed in (101, 102, 103):
        other = geometry.compare_subspaces("gradient", cov, u, _orthonormal(d, k, seed))
        assert abs(other.mean_canonical_correlation - null.mean_canonical_correlation) <= 3 * (
            null.mean_canonical_correlation_std
        )
        assert abs(other.overlap - null.overlap) <= 3 * null.overlap_std
    # ... while a planted predictive subspace equal to U_k (rotated) is far outside it, on both statistics.
    same = geometry.compare_subspaces("gradient", cov, u, u @ _orthonormal(k, k, 7))
    assert same.mean_canonical_correlation > null.mean_canonical_correlation + 10 * null.mean_canonical_correlation_std
    assert same.overlap > null.overlap + 10 * null.overlap_std
    # Seeded: the same seed gives the same null, another seed another one.
    assert geometry.random_subspace_null(cov, u, draws=8, seed=0) == null
    assert geometry.random_subspace_null(cov, u, draws=8, seed=1) != null


def test_null_of_isotropic_covariance_is_the_principal_angles_of_random_subspaces():
    # Under Σ = I the canonical correlations are the cosines of the principal angles, so Σ cos² = k·overlap.
    d, k = 60, 12
    null = geometry.random_subspace_null(torch.eye(d, dtype=torch.float64), _orthonormal(d, k, 3), draws=4, seed=5)
    generator = torch.Generator().manual_seed(5)
    u = _orthonormal(d, k, 3)
    overlaps = []
    for _ in range(4):
        r = torch.linalg.qr(torch.randn(d, k, generator=generator, dtype=torch.float64))[0]
        cosines = geometry.canonical_correlations(torch.eye(d, dtype=torch.float64), u, r)
        assert float(cosines.pow(2).sum()) / k == pytest.approx(geometry.subspace_overlap(u, r), rel=1e-9)
        overlaps.append(geometry.subspace_overlap(u, r))
    assert null.overlap == pytest.approx(float(np.mean(overlaps)), rel=1e-9)
    assert null.overlap_std == pytest.approx(float(np.std(overlaps, ddof=1)), rel=1e-9)


def test_layer_geometry_records_the_null_next_to_the_measured_comparison():
    gen = torch.Generator().manual_seed(21)
    n, d = 3000, 10
    h = torch.randn(n, d, generator=gen, dtype=torch.float64) * torch.linspace(3.0, 0.2, d, dtype=torch.float64)
    g = torch.randn(n, d, generator=gen, dtype=torch.float64)
    result, _ = geometry.layer_geometry(FakeMoments(h, g), layer=1, positions="all", null_draws=4, null_seed=2)
    assert result.null == geometry.random_subspace_null(
        FakeMoments(h).cov_in(), _principal(FakeMoments(h).cov_in(), result.k), draws=4, seed=2
    )
    assert json.loads(json.dumps(result.to_dict()))["null"]["draws"] == 4
    skipped, _ = geometry.layer_geometry(FakeMoments(h, g), layer=1, positions="all", null_draws=0)
    assert skipped.null is None


def _principal(cov: torch.Tensor, k: int) -> torch.Tensor:
    return geometry.principal_directions(cov)[1][:, :k]


@pytest.mark.parametrize("draws", [1, 0, True, 2.0])
def test_null_rejects_draws_that_give_no_spread(draws):
    with pytest.raises(ValueError, match="draws must be an int ≥ 2"):
        geometry.random_subspace_null(torch.eye(4, dtype=torch.float64), _orthonormal(4, 2, 0), draws=draws)
    if draws in (1, True):
        with pytest.raises(ValueError, match="draws must be an int ≥ 2"):
            geometry.layer_geometry(
                FakeMoments(torch.randn(50, 4)), layer=0, positions="all", null_draws=draws, gradients=False
            )


def test_null_rejects_a_covariance_without_variance():
    with pytest.raises(ValueError, match="zero trace"):
        geometry.random_subspace_null(torch.zeros(4, 4, dtype=torch.float64), _orthonormal(4, 2, 0))
