"""Token difficulty: KL/agreement per token and depth, easy-fraction curves (loose and strict), exit fractions,
and the KL-sensitivity check that really skips blocks."""

from __future__ import annotations

import json
import math

import pytest
import torch
from model_factories import tiny_llama
from tcompress.analysis.tokens import TokenStats, kl_sensitivity, summarize, token_stats
from tcompress.early_exit import EarlyExitLM
from tcompress.recipes.exit_heads import build_exit_heads


def _four_blocks():
    model = tiny_llama()
    cfg = model.config.to_dict()
    cfg["num_hidden_layers"] = 4
    torch.manual_seed(3)
    return type(model)(type(model.config).from_dict(cfg)).eval()


def test_easy_and_strict_exit_depths_by_hand():
    # 3 tokens, heads at depths 1, 2, 3 of a 4-block model.
    kl = torch.tensor([[0.01, 0.5, 0.01], [0.5, 0.01, 0.01], [0.5, 0.5, 0.5]])
    agree = torch.tensor([[True, True, True], [True, True, False], [True, True, True]])
    stats = TokenStats([1, 2, 3], 4, kl, agree, window_length=4)
    assert stats.easy(0.1).tolist() == [[True, False, True], [False, True, False], [False, False, False]]
    assert stats.easy(0.1, strict=True).tolist() == [[False, False, True], [False, False, False], [False] * 3]
    assert stats.exit_depths(0.1).tolist() == [1, 2, 4]
    assert stats.exit_depths(0.1, strict=True).tolist() == [3, 4, 4]
    summary = summarize(stats, "lens", taus=(0.1, 1.0))
    assert summary.easy_fraction["0.1"] == pytest.approx({"1": 1 / 3, "2": 1 / 3, "3": 1 / 3})
    assert summary.exit_by_50pct_loose["0.1"] == pytest.approx(2 / 3)
    assert summary.exit_by_50pct["0.1"] == 0.0
    assert summary.exit_by_75pct["0.1"] == pytest.approx(1 / 3)
    # With τ = 1 only agreement matters: token 2 disagrees at depth 3, so strictly it never exits.
    assert summary.exit_by_50pct["1"] == pytest.approx(2 / 3)
    json.dumps(summary.to_dict())


def test_token_stats_shapes_and_final_depth_consistency():
    model = _four_blocks()
    heads = build_exit_heads(model, kind="lens")
    windows = torch.randint(0, 512, (2, 9))
    stats = token_stats(model, heads, windows)
    assert stats.kl.shape == stats.agree.shape == (16, 3)
    assert (stats.kl >= 0).all()
    summary = summarize(stats, "lens")
    assert summary.tokens == 16 and summary.depths == [1, 2, 3]
    for tau in summary.easy_fraction:
        for k in summary.depths:
            assert summary.easy_fraction_strict[tau][str(k)] <= summary.easy_fraction[tau][str(k)]


def test_kl_sensitivity_skips_for_real():
    model = _four_blocks()
    heads = build_exit_heads(model, kind="lens")
    windows = torch.randint(0, 512, (2, 9))
    stats = token_stats(model, heads, windows)
    # τ large and agreement forced: every token judged easy at depth 1.
    stats_all_easy = TokenStats(stats.depths, 4, stats.kl, torch.ones_like(stats.agree), 9)
    result = kl_sensitivity(model, heads, windows, stats_all_easy, tau=1e9)
    assert result.easy_tokens == 16 and result.other_tokens == 0 and result.mean_depth == 1
    # The first position of each window has no earlier token whose cache skipping could change: its actual KL is the
    # judged KL; overall both are positive.
    assert result.actual_kl_easy > 0 and result.predicted_kl_easy > 0
    # τ = 0 judges nothing easy: the policy is the full model.
    none = kl_sensitivity(model, heads, windows, stats, tau=0.0)
    assert none.easy_tokens == 0 and none.mean_depth == 4
    assert none.actual_kl_other == pytest.approx(0, abs=1e-5) and none.ppl_skipped == pytest.approx(none.ppl_full)
    with pytest.raises(ValueError, match="compute stats on the same windows"):
        kl_sensitivity(model, heads, windows[:1], stats, tau=0.1)
    with pytest.raises(ValueError, match="windows must be"):
        token_stats(model, heads, torch.zeros(5, dtype=torch.long))


def test_kl_sensitivity_null_skips_as_many_random_tokens_at_the_same_depths(monkeypatch):
    from tcompress.analysis import tokens

    model = _four_blocks()
    heads = build_exit_heads(model, kind="lens")
    windows = torch.randint(0, 512, (2, 9), generator=torch.Generator().manual_seed(4))
    stats = token_stats(model, heads, windows)
    # Agreement forced and τ between KL quantiles: some tokens, not all, judged easy at depths 1..3.
    stats = TokenStats(stats.depths, 4, stats.kl, torch.ones_like(stats.agree), 9)
    tau = float(stats.kl.flatten().quantile(0.3))
    judged = stats.exit_depths(tau)
    assert 0 < int((judged < 4).sum()) < 16
    passes = []
    original = tokens._skip_for_real
    monkeypatch.setattr(tokens, "_skip_for_real", lambda *a: passes.append(a[2].clone()) or original(*a))
    result = kl_sensitivity(model, heads, windows, stats, tau=tau, seed=7)
    assert result.random_tokens == result.easy_tokens == int((judged < 4).sum()) and result.random_seed == 7
    assert len(passes) == 2
    easy_pass, null_pass = (p.flatten() for p in passes)
    assert torch.equal(easy_pass, judged)
    # The null: as many exiting tokens, the same multiset of depths, drawn at positions of their own (seeded).
    assert int((null_pass < 4).sum()) == result.easy_tokens
    assert sorted(null_pass[null_pass < 4].tolist()) == sorted(judged[judged < 4].tolist())
    assert not torch.equal(null_pass, easy_pass)
    assert torch.equal(null_pass, tokens._random_null_depths(judged, 4, 7))
    # Its numbers are the skipping policy's on exactly those tokens.
    kl, change, *_ = original(
        EarlyExitLM(model, heads, threshold=2.0, check_layers=[]), windows, null_pass.view(2, 8), 4, 8, False
    )
    assert result.loss_change_random == pytest.approx(float(change[null_pass < 4].double().mean()), rel=1e-6)
    assert result.actual_kl_random == pytest.approx(float(kl[null_pass < 4].double().mean()), rel=1e-6)
    assert result.actual_kl_random > 0
    fields = result.to_dict()
    assert {"random_tokens", "random_seed", "actual_kl_random", "loss_change_random", "loss_change_easy"} <= set(fields)
    json.dumps(fields)
    # Nothing easy: no null pass, and the null's numbers say so (NaN, 0 tokens).
    passes.clear()
    none = kl_sensitivity(model, heads, windows, stats, tau=0.0)
    assert len(passes) == 1 and none.random_tokens == 0 and math.isnan(none.loss_change_random)
