"""Block linearity: exact on affine data and blocks, below 1 on nonlinear ones, equal to torch.linalg.lstsq, reduced
rank optimal in the data metric, and conditional linearity measured on the shifted inputs."""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from model_factories import FACTORIES
from tcompress.analysis.activations import Moments, collect_block_statistics
from tcompress.analysis.linearity import (
    AffineFit,
    block_linearity,
    conditional_linearity,
    fit_affine,
    r2_score,
    reduced_rank_factors,
    replaced_by_map,
    write_json,
)


def _moments(x: torch.Tensor, y: torch.Tensor) -> Moments:
    m = Moments.zeros(x.shape[1], "cpu")
    m.update(x, y)
    return m


def _data(n, d, seed):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64) * torch.linspace(0.1, 3.0, d, dtype=torch.float64)
    A = torch.randn(d, d, generator=gen, dtype=torch.float64) / d**0.5
    b = torch.randn(d, generator=gen, dtype=torch.float64)
    return x, A, b


@settings(max_examples=15, deadline=None)
@given(d=st.integers(2, 12), seed=st.integers(0, 10_000), target=st.sampled_from(["output", "residual"]))
def test_exactly_affine_gets_r2_one(d, seed, target):
    x, A, b = _data(8 * d + 10, d, seed)
    y = x @ A + b
    fit = fit_affine(_moments(x[: 6 * d], y[: 6 * d]), target=target, ridge=0.0)
    score = r2_score(fit, _moments(x[6 * d :], y[6 * d :]))
    assert score.pooled == pytest.approx(1.0, abs=1e-9) and score.per_dim == pytest.approx(1.0, abs=1e-9)
    torch.testing.assert_close(fit.output_map()[0], A)
    torch.testing.assert_close(fit.output_map()[1], b)


def test_nonlinear_block_scores_below_one():
    x, A, b = _data(400, 6, 1)
    y = torch.tanh(3 * (x @ A + b))
    score = r2_score(fit_affine(_moments(x[:300], y[:300])), _moments(x[300:], y[300:]))
    assert 0.0 < score.pooled < 0.95 and score.per_dim < 0.95


def test_matches_lstsq_and_direct_r2():
    x, A, b = _data(60, 5, 2)
    y = x @ A + b + 0.3 * torch.randn(60, 5, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    fit = fit_affine(_moments(x[:40], y[:40]), ridge=0.0)
    design = torch.cat([x[:40], torch.ones(40, 1, dtype=torch.float64)], dim=1)
    solution = torch.linalg.lstsq(design, y[:40]).solution
    torch.testing.assert_close(fit.A, solution[:5])
    torch.testing.assert_close(fit.b, solution[5])
    pred = x[40:] @ fit.A + fit.b
    sse = ((y[40:] - pred) ** 2).sum(0)
    sst = ((y[40:] - y[40:].mean(0)) ** 2).sum(0)
    score = r2_score(fit, _moments(x[40:], y[40:]))
    assert score.pooled == pytest.approx(float(1 - sse.sum() / sst.sum()), abs=1e-10)
    assert score.per_dim == pytest.approx(float((1 - sse / sst).mean()), abs=1e-10)
    residual = r2_score(fit_affine(_moments(x[:40], y[:40]), target="residual", ridge=0.0), _moments(x[40:], y[40:]))
    dsse = ((y[40:] - x[40:] - (pred - x[40:])) ** 2).sum()
    dsst = (((y[40:] - x[40:]) - (y[40:] - x[40:]).mean(0)) ** 2).sum()
    assert residual.pooled == pytest.approx(float(1 - dsse / dsst), abs=1e-10)


def test_ridge_shrinks_and_singular_system_is_reported():
    x, A, b = _data(50, 4, 4)
    y = x @ A + b
    assert fit_affine(_moments(x, y), ridge=1.0).A.norm() < fit_affine(_moments(x, y), ridge=0.0).A.norm()
    x2 = torch.cat([x[:3], x[:3]], dim=0)  # 6 rows of rank 3 in d = 4
    with pytest.raises(ValueError, match="singular"):
        fit_affine(_moments(x2, x2 @ A), ridge=0.0)
    with pytest.raises(ValueError, match="ridge must be a non-negative"):
        fit_affine(_moments(x, y), ridge=-1.0)
    with pytest.raises(ValueError, match="target must be one of"):
        fit_affine(_moments(x, y), target="delta")


def test_reduced_rank_is_best_in_the_data_metric():
    x, A, b = _data(500, 8, 5)
    m = _moments(x, x + x @ A + b)
    fit = fit_affine(m, target="residual", ridge=0.0)
    U, V = reduced_rank_factors(fit, m, 8)
    torch.testing.assert_close(U @ V, fit.A)
    U, V = reduced_rank_factors(fit, m, 3)
    xc = x - x.mean(0)
    err_rrr = ((xc @ (fit.A - U @ V)) ** 2).sum()
    P, s, Qt = torch.linalg.svd(fit.A)
    err_plain = ((xc @ (fit.A - (P[:, :3] * s[:3]) @ Qt[:3])) ** 2).sum()
    assert err_rrr < err_plain
    with pytest.raises(ValueError, match=r"rank must be an int in \[1, 8\]"):
        reduced_rank_factors(fit, m, 9)


def test_model_block_replaced_by_affine_map_is_linear(tmp_path):
    model = FACTORIES["llama"]()
    windows = torch.randint(3, 500, (8, 16), generator=torch.Generator().manual_seed(0))
    gen = torch.Generator().manual_seed(1)
    affine = AffineFit(
        A=torch.eye(64, dtype=torch.float64) + 0.1 * torch.randn(64, 64, generator=gen, dtype=torch.float64),
        b=torch.randn(64, generator=gen, dtype=torch.float64),
        target="output",
        mean_in=torch.zeros(64, dtype=torch.float64),
        ridge=0.0,
        tokens=0,
    )
    with replaced_by_map(model, 1, affine):
        stats = collect_block_statistics(model, windows, holdout=0.25)
    result = block_linearity(stats, ridge=0.0)
    for positions in ("no_first", "all"):
        for target in ("output", "residual"):
            assert result.blocks[1].r2[positions][target].pooled == pytest.approx(1.0, abs=1e-6)
    assert result.blocks[0].r2["no_first"]["output"].pooled < 0.999999  # a random attention + MLP block is not
    assert len(result.curve("residual", "all", "per_dim")) == 2
    write_json(result, tmp_path / "lin.json")
    assert json.loads((tmp_path / "lin.json").read_text())["blocks"][1]["layer"] == 1


def test_conditional_linearity_on_tiny_model():
    model = FACTORIES["mistral"]()
    model.config.num_hidden_layers  # noqa: B018  (2 layers)
    windows = torch.randint(3, 500, (8, 16), generator=torch.Generator().manual_seed(0))
    stats = collect_block_statistics(model, windows, holdout=0.25)
    result = conditional_linearity(model, windows, [(0, 1)], clean_stats=stats, ridge=1e-6)
    pair = result.pairs[0]
    clean = block_linearity(stats).blocks[1].r2["no_first"]
    assert pair.clean["output"].pooled == pytest.approx(clean["output"].pooled)
    assert pair.shifted_refit["output"].pooled != pytest.approx(pair.clean["output"].pooled)
    assert pair.shifted_clean_fit["residual"].tokens == pair.clean["residual"].tokens
    again = conditional_linearity(model, windows, [(0, -1)], holdout=0.25)  # collects its own clean statistics
    assert again.pairs[0].shifted_refit["output"].pooled == pytest.approx(pair.shifted_refit["output"].pooled)
    with pytest.raises(ValueError, match="k < l"):
        conditional_linearity(model, windows, [(1, 0)], clean_stats=stats)
    with pytest.raises(ValueError, match="same windows"):
        conditional_linearity(model, windows[:4], [(0, 1)], clean_stats=stats)
    with pytest.raises(ValueError, match="no held-out windows"):
        block_linearity(collect_block_statistics(model, windows, holdout=0.0))
