"""The projection intervention (h -> μ + BBᵀ(h - μ) at a block's input) and the geometry of real block statistics."""

from __future__ import annotations

import json

import pytest
import torch
from tcompress import data, evaluate, models
from tcompress.analysis.activations import collect_block_statistics
from tcompress.analysis.geometry import activation_geometry
from tcompress.analysis.subspace_projection import (
    SubspaceProjection,
    projected_layer,
    projection_perplexity,
)

FAMILIES = ["tiny_gpt2", "tiny_llama", "tiny_mistral"]


def _windows(n: int = 3, length: int = 24, seed: int = 0) -> torch.Tensor:
    return torch.randint(3, 256, (n, length), generator=torch.Generator().manual_seed(seed))


def _orthonormal(d: int, k: int, seed: int) -> torch.Tensor:
    return torch.linalg.qr(torch.randn(d, k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))[0]


class _Capture:
    """A pre-hook registered after the projection: it sees the block input the block actually receives."""

    def __init__(self) -> None:
        self.seen: list[torch.Tensor] = []

    def __call__(self, module, args, kwargs):
        self.seen.append(models.block_input_hidden_states(args, kwargs).detach().clone())


def _block_inputs(model, layer: int, ids: torch.Tensor) -> torch.Tensor:
    capture = _Capture()
    handle = models.architecture(model).blocks(model)[layer].register_forward_pre_hook(capture, with_kwargs=True)
    try:
        with torch.no_grad():
            model(ids)
    finally:
        handle.remove()
    return capture.seen[0]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("skip_first", [True, False])
def test_the_block_receives_the_projection_and_position_zero_is_kept_when_asked(family, skip_first, request):
    model = request.getfixturevalue(family)
    ids = _windows(2, 16)
    original = _block_inputs(model, 1, ids)
    d = original.shape[-1]
    mean, basis = torch.randn(d, dtype=torch.float64), _orthonormal(d, 5, 1)
    capture = _Capture()
    block = models.architecture(model).blocks(model)[1]
    with projected_layer(model, 1, mean, basis, skip_first=skip_first) as hook:
        handle = block.register_forward_pre_hook(capture, with_kwargs=True)
        try:
            with torch.no_grad():
                model(ids)
        finally:
            handle.remove()
    received = capture.seen[0].double()
    expected = mean + (original.double() - mean) @ basis @ basis.T
    first = 1 if skip_first else 0
    torch.testing.assert_close(received[:, first:], expected[:, first:], atol=1e-5, rtol=1e-5)
    if skip_first:
        torch.testing.assert_close(received[:, 0], original[:, 0].double())
    centred = original.double()[:, first:] - mean
    assert hook.retained_variance == pytest.approx(
        float((centred @ basis).pow(2).sum() / centred.pow(2).sum()), rel=1e-9
    )
    assert not block._forward_pre_hooks  # the hook is gone after the block


@pytest.mark.parametrize("family", FAMILIES)
def test_projecting_onto_the_whole_space_changes_nothing(family, request):
    model = request.getfixturevalue(family)
    windows = _windows()
    measure = lambda m: evaluate.perplexity(m, windows, progress=False)  # noqa: E731
    baseline = measure(model)
    d = models.architecture(model).embeddings(model).weight.shape[1]
    result = projection_perplexity(
        model,
        measure,
        layer=1,
        mean=torch.randn(d, dtype=torch.float64),
        basis=_orthonormal(d, d, 2),
        basis_name="variance",
        positions="all",
        baseline_ppl=baseline.ppl,
    )
    assert result.ppl == pytest.approx(baseline.ppl, rel=1e-5)
    assert result.retained_variance == pytest.approx(1.0, abs=1e-12)
    assert result.k == d and result.tokens == baseline.tokens
    json.dumps(result.to_dict())


def test_a_one_dimensional_projection_changes_the_predictions(tiny_llama):
    windows = _windows()
    measure = lambda m: evaluate.perplexity(m, windows, progress=False)  # noqa: E731
    baseline = measure(tiny_llama)
    result = projection_perplexity(
        tiny_llama,
        measure,
        layer=0,
        mean=torch.zeros(64, dtype=torch.float64),
        basis=_orthonormal(64, 1, 3),
        basis_name="gradient",
        positions="no_first",
        baseline_ppl=baseline.ppl,
    )
    assert result.ppl != pytest.approx(baseline.ppl, rel=1e-4)
    assert 0.0 < result.retained_variance < 0.2


def test_the_hook_is_removed_when_evaluation_fails(tiny_llama):
    block = models.architecture(tiny_llama).blocks(tiny_llama)[0]
    with pytest.raises(RuntimeError, match="boom"):
        with projected_layer(tiny_llama, 0, torch.zeros(64), _orthonormal(64, 2, 0), skip_first=True):
            raise RuntimeError("boom")
    assert not block._forward_pre_hooks


def test_bad_projection_arguments_are_clear_errors(tiny_llama):
    basis = _orthonormal(64, 4, 0)
    with pytest.raises(ValueError, match=r"layer must be a block index in \[0, 2\)"):
        with projected_layer(tiny_llama, 2, torch.zeros(64), basis, skip_first=True):
            pass
    with pytest.raises(ValueError, match="orthonormal"):
        SubspaceProjection(torch.zeros(64), torch.ones(64, 4), skip_first=True)
    with pytest.raises(ValueError, match=r"mean must be \(64,\)"):
        SubspaceProjection(torch.zeros(63), basis, skip_first=True)
    with pytest.raises(ValueError, match="do not match"):
        SubspaceProjection(torch.zeros(32), _orthonormal(32, 4, 0), skip_first=False).project(torch.zeros(1, 3, 64))
    with pytest.raises(ValueError, match="positions must be"):
        projection_perplexity(
            tiny_llama,
            lambda m: None,
            layer=0,
            mean=torch.zeros(64),
            basis=basis,
            basis_name="variance",
            positions="first",
            baseline_ppl=1.0,
        )


# -- the geometry of real block statistics ----------------------------------------------------------------------


def test_geometry_of_collected_statistics_covers_both_position_sets(tiny_mistral):
    windows = _windows(6, 32, 4)
    stats = collect_block_statistics(tiny_mistral, windows, layers=[0, 1], gradients=True, holdout=0.34, seed=0)
    report, bases = activation_geometry(stats, model=tiny_mistral, settings={"what": "test"})
    assert [(g.layer, g.positions) for g in report.layers] == [
        (0, "no_first"),
        (0, "all"),
        (1, "no_first"),
        (1, "all"),
    ]
    for g in report.layers:
        assert 1 <= g.k <= 64 and g.hidden_size == 64
        assert 0.0 <= g.gradient.overlap <= 1.0 and 0.0 <= g.unembedding.overlap <= 1.0
        assert len(g.gradient.canonical_correlations) == g.k
        assert set(g.heldout_retained_variance) == {"variance", "gradient", "unembedding"}
        assert g.heldout_tokens == stats.tokens(g.positions, "heldout")
        assert bases[(g.layer, g.positions)].variance.shape == (64, g.k)
    assert report.at(1).positions == "no_first" and report.at(1, "all").tokens == stats.tokens("all", "train")
    with pytest.raises(KeyError, match="no layer 5"):
        report.at(5)
    decoded = json.loads(report.to_json())
    assert decoded["settings"]["what"] == "test" and decoded["default_positions"] == "no_first"


def test_geometry_decomposes_the_head_gram_once_per_model(tiny_gpt2, monkeypatch):
    from tcompress.analysis import geometry, head_gram

    stats = collect_block_statistics(tiny_gpt2, _windows(4, 24, 5), gradients=True, holdout=0.25, seed=0)
    calls = []
    original = geometry.HeadGram.of.__func__

    def counting(cls, *args, **kwargs):
        calls.append(args[0].shape)
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(geometry.HeadGram, "of", classmethod(counting))
    report, _ = activation_geometry(stats, model=tiny_gpt2)
    assert len(report.layers) == 4 and calls == [(512, 64)]  # 2 layers x 2 position sets, one decomposition
    monkeypatch.undo()
    folded = head_gram.folded_head_weight(tiny_gpt2)
    for g in report.layers:
        moments = stats.moments(g.layer, g.positions, "train")
        per_layer, _ = geometry.layer_geometry(moments, layer=g.layer, positions=g.positions, head_weight=folded)
        assert per_layer.unembedding.overlap == pytest.approx(g.unembedding.overlap, rel=1e-9)


def test_geometry_on_statistics_held_on_a_cuda_device_matches_the_cpu(tiny_mistral, cuda_device):
    import dataclasses

    stats = collect_block_statistics(tiny_mistral, _windows(4, 24, 6), gradients=True, holdout=0.25, seed=0)
    on_device = dataclasses.replace(stats, parts={k: m.to(cuda_device) for k, m in stats.parts.items()})
    report, bases = activation_geometry(on_device, model=tiny_mistral)
    reference, _ = activation_geometry(stats, model=tiny_mistral)
    for g, r in zip(report.layers, reference.layers):
        assert g.k == r.k
        assert g.gradient.overlap == pytest.approx(r.gradient.overlap, rel=1e-6, abs=1e-9)
        assert g.unembedding.overlap == pytest.approx(r.unembedding.overlap, rel=1e-6, abs=1e-9)
    assert all(b.variance.device.type == "cpu" for b in bases.values())


def test_stories260k_variance_subspace_keeps_most_heldout_variance(stories260k):
    model, tok = stories260k
    stories = data.tinystories_texts()
    calibration = data.token_windows("\n\n".join(stories[:5]), tok, 128, bos=True)
    stats = collect_block_statistics(model, calibration, layers=[2, 4], gradients=True, holdout=0.2, seed=0)
    report, _ = activation_geometry(stats, model=model)
    for g in report.layers:
        assert g.k < g.hidden_size  # a trained model's variance is concentrated: fewer than d directions for 90%
        assert g.heldout_retained_variance["variance"] > 0.8
