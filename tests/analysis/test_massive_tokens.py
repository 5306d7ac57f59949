"""Massive-activation tokens and the "no_outliers" position set: a token planted with a huge embedding (like SmolLM2's
massive "9" tokens) at positions > 0 destroys the "no_first" R² and k(90%); "no_outliers" recovers the clean
model's figures; the bookkeeping adds up to the other sets exactly; every consumer leaves out the same tokens."""

from __future__ import annotations

import pytest
import torch
from model_factories import tiny_llama
from tcompress.analysis.activations import collect_block_statistics
from tcompress.analysis.geometry import activation_geometry
from tcompress.analysis.linearity import block_linearity, conditional_linearity
from tcompress.analysis.massive_tokens import find_massive_tokens
from tcompress.analysis.subspace_projection import SubspaceProjection, projection_perplexity

MASSIVE_ID = 7
# (window, position) of the planted token; window 5 is in the held-out split of 20 windows with holdout 0.2, seed 0.
PLANTED = ((0, 3), (5, 9), (11, 1))


def _windows() -> tuple[torch.Tensor, torch.Tensor]:
    """(clean, planted) (20, 32) ids: random ids ≥ 10, and the same with MASSIVE_ID at PLANTED."""
    clean = torch.randint(10, 500, (20, 32), generator=torch.Generator().manual_seed(0))
    planted = clean.clone()
    for w, p in PLANTED:
        planted[w, p] = MASSIVE_ID
    return clean, planted


def _massive_model() -> torch.nn.Module:
    """tiny_llama whose MASSIVE_ID embedding is 3000x larger: a token whose hidden state dwarfs all others."""
    model = tiny_llama()
    with torch.no_grad():
        model.model.embed_tokens.weight[MASSIVE_ID] *= 3000
    return model


def _figures(model, windows):
    marks = find_massive_tokens(model, windows)
    stats = collect_block_statistics(model, windows, holdout=0.2, exclude=marks)
    lin = block_linearity(stats, ridge=1e-6)
    geo, _ = activation_geometry(stats, positions=stats.position_sets)
    r2 = {(b.layer, p): b.r2[p]["output"].pooled for b in lin.blocks for p in stats.position_sets}
    k = {(g.layer, g.positions): g.k for g in geo.layers}
    return marks, stats, r2, k


def test_planted_massive_tokens_destroy_no_first_and_no_outliers_recovers():
    clean, planted = _windows()
    _, clean_stats, clean_r2, clean_k = _figures(tiny_llama(), clean)
    marks, stats, r2, k = _figures(_massive_model(), planted)
    assert 5 in stats.heldout_windows and 0 not in stats.heldout_windows
    for layer in (0, 1):
        # The planted tokens are found at every block, and only they.
        assert sorted(map(tuple, marks.mask(layer).nonzero().tolist())) == sorted(PLANTED)
        # Destroyed: one held-out massive token makes the pooled R² ≈ 1 and one direction holds 90% of the variance.
        assert r2[(layer, "no_first")] > 0.999 and clean_r2[(layer, "no_first")] < 0.9
        assert k[(layer, "no_first")] <= 2 and clean_k[(layer, "no_first")] > 20
        # Recovered: "no_outliers" gives the clean model's figures (the planted positions differ, so not exactly).
        assert r2[(layer, "no_outliers")] == pytest.approx(clean_r2[(layer, "no_first")], abs=0.02)
        assert abs(k[(layer, "no_outliers")] - clean_k[(layer, "no_first")]) <= 3
    # With nothing massive the marks are empty and "no_outliers" is "no_first".
    assert clean_stats.to_dict()["massive_tokens"]["blocks"][0]["count"] == 0
    assert clean_r2[(1, "no_outliers")] == clean_r2[(1, "no_first")]


def test_the_excluded_tokens_are_recorded():
    _, planted = _windows()
    model = _massive_model()
    marks = find_massive_tokens(model, planted)
    stats = collect_block_statistics(model, planted, holdout=0.2, exclude=marks)
    summary = stats.to_dict()
    assert summary["default_positions"] == "no_outliers"
    block = summary["massive_tokens"]["blocks"][1]
    assert block["count"] == 3 and block["train_count"] == 2 and block["heldout_count"] == 1
    assert {(t["window"], t["position"]) for t in block["tokens"]} == set(PLANTED)
    assert all(t["norm"] > block["threshold"] > 10 * block["median_norm"] * 0.999 for t in block["tokens"])
    assert summary["tokens_per_block"]["no_first/train"] - summary["tokens_per_block"]["no_outliers/train"] == 2


@pytest.mark.parametrize("gradients", [False, True])
def test_the_sets_add_up_to_a_collection_without_marks(gradients):
    _, planted = _windows()
    model = _massive_model()
    marks = find_massive_tokens(model, planted, layers=[1])
    with_marks = collect_block_statistics(model, planted, layers=[1], holdout=0.2, exclude=marks, gradients=gradients)
    without = collect_block_statistics(model, planted, layers=[1], holdout=0.2, gradients=gradients)
    assert without.position_sets == ("no_first", "all") and without.default_positions == "no_first"
    for positions in ("no_first", "all"):
        for split in ("train", "heldout"):
            a, b = with_marks.moments(1, positions, split), without.moments(1, positions, split)
            assert a.count == b.count
            torch.testing.assert_close(a.in_in, b.in_in, rtol=1e-9, atol=1e-6)
            torch.testing.assert_close(a.in_out, b.in_out, rtol=1e-9, atol=1e-6)
            if gradients:
                assert a.grad_count == b.grad_count
                torch.testing.assert_close(a.grad_grad, b.grad_grad, rtol=1e-9, atol=1e-12)


def test_conditional_linearity_leaves_out_the_same_tokens_after_the_shift():
    _, planted = _windows()
    model = _massive_model()
    marks = find_massive_tokens(model, planted)
    result = conditional_linearity(model, planted, [(0, 1)], holdout=0.2, exclude=marks)
    pair = result.pairs[0]
    assert pair.positions == "no_outliers"
    # The clean "no_outliers" R² is the one of the statistics without the planted tokens, not the inflated ≈ 1.
    assert pair.clean["output"].pooled < 0.95 and pair.shifted_refit["output"].pooled < 0.999


def test_the_projection_passes_massive_tokens_through_unchanged():
    torch.manual_seed(0)
    hidden = torch.randn(2, 6, 8)
    hidden[1, 4] *= 1000
    basis = torch.linalg.qr(torch.randn(8, 3))[0]
    hook = SubspaceProjection(torch.zeros(8), basis, skip_first=True, norm_threshold=100.0)
    out = hook.project(hidden)
    torch.testing.assert_close(out[1, 4], hidden[1, 4])
    torch.testing.assert_close(out[:, 0], hidden[:, 0])
    torch.testing.assert_close(out[0, 2], (hidden[0, 2] @ basis) @ basis.T)
    assert hook.unprojected_massive == 1
    kept = sum(float((hidden[b, t] @ basis).pow(2).sum()) for b in range(2) for t in range(1, 6) if (b, t) != (1, 4))
    total = sum(float(hidden[b, t].pow(2).sum()) for b in range(2) for t in range(1, 6) if (b, t) != (1, 4))
    assert hook.retained_variance == pytest.approx(kept / total, rel=1e-6)


def test_errors_name_what_was_expected():
    _, planted = _windows()
    model = tiny_llama()
    with pytest.raises(ValueError, match="factor must be a number > 1"):
        find_massive_tokens(model, planted, factor=1.0)
    with pytest.raises(ValueError, match=r"windows must be \(num_windows, T ≥ 2\)"):
        find_massive_tokens(model, planted[:, :1])
    marks = find_massive_tokens(model, planted, layers=[1])
    with pytest.raises(ValueError, match="mark the same windows"):
        collect_block_statistics(model, planted[:10], layers=[1], exclude=marks)
    with pytest.raises(ValueError, match=r"does not mark blocks \[0\]"):
        collect_block_statistics(model, planted, layers=[0, 1], exclude=marks)
    with pytest.raises(ValueError, match="first_windows: n must be"):
        marks.first_windows(21)
    stats = collect_block_statistics(model, planted, layers=[1], holdout=0.2)
    with pytest.raises(ValueError, match="'no_outliers' needs statistics collected with massive tokens marked"):
        stats.moments(1, "no_outliers")
    basis = torch.linalg.qr(torch.randn(64, 3))[0]
    for positions, threshold in (("no_outliers", None), ("no_first", 5.0)):
        with pytest.raises(ValueError, match="a norm_threshold goes with positions='no_outliers'"):
            projection_perplexity(
                model,
                lambda m: None,
                layer=1,
                mean=torch.zeros(64),
                basis=basis,
                basis_name="variance",
                positions=positions,
                baseline_ppl=1.0,
                norm_threshold=threshold,
            )


def test_a_token_is_massive_by_its_input_or_its_output():
    from tcompress.analysis.massive_tokens import MassiveTokens

    inputs = torch.ones(2, 5)
    outputs = torch.ones(2, 5)
    inputs[0, 2] = 11.0  # massive input, ordinary output
    outputs[1, 3] = 11.0  # ordinary input, massive output: the block that writes a massive activation
    inputs[1, 0] = outputs[0, 0] = 50.0  # position 0 has its own part: never marked
    inputs[0, 4] = 9.0  # below 10x the median
    marks = MassiveTokens(10.0, (0,), {0: inputs}, {0: outputs}, {0: 1.0}, {0: 1.0})
    assert sorted(map(tuple, marks.mask(0).nonzero().tolist())) == [(0, 2), (1, 3)]
    listed = marks.to_dict()["blocks"][0]
    assert listed["count"] == 2 and listed["threshold"] == listed["output_threshold"] == 10.0
    assert {(t["window"], t["position"], t["norm"], t["output_norm"]) for t in listed["tokens"]} == {
        (0, 2, 11.0, 1.0),
        (1, 3, 1.0, 11.0),
    }
