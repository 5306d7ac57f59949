"""The analyses on a model that accelerate dispatched with disk offload (later blocks, final norm and untied head on
``meta`` until a hook loads them) give the plain model's numbers: block statistics with and without gradients,
linearity and conditional linearity, geometry and the projection intervention, and the report context's fingerprint
and statistics release. (Substitution on the same harness: tests/recipes/test_substitute.py.)"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from offload_models import FAMILIES, offloaded_pair
from tcompress import evaluate
from tcompress.analysis.activations import collect_block_statistics
from tcompress.analysis.geometry import activation_geometry
from tcompress.analysis.head_gram import folded_head_weight
from tcompress.analysis.linearity import block_linearity, conditional_linearity
from tcompress.analysis.subspace_projection import projection_perplexity

pytest.importorskip("accelerate")


@pytest.fixture(scope="module", params=FAMILIES)
def pair(request, tmp_path_factory):
    return offloaded_pair(request.param, tmp_path_factory.mktemp(f"offload-{request.param}"))


def _flat(value, path="") -> dict:
    """A nested JSON-like value as {path: leaf}, so that pytest.approx can compare it."""
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _flat(item, f"{path}/{key}").items()}
    if isinstance(value, (list, tuple)):
        return {k: v for i, item in enumerate(value) for k, v in _flat(item, f"{path}[{i}]").items()}
    return {path: value}


def _assert_same(result: dict, reference: dict) -> None:
    flat, expected = _flat(result), _flat(reference)
    assert flat.keys() == expected.keys()
    numbers = {k: v for k, v in expected.items() if isinstance(v, float)}
    assert {k: flat[k] for k in numbers} == pytest.approx(numbers, rel=1e-6, abs=1e-9, nan_ok=True)
    assert {k: v for k, v in flat.items() if k not in numbers} == {
        k: v for k, v in expected.items() if k not in numbers
    }


def _measure(windows):
    return lambda model: evaluate.perplexity(model, windows, progress=False)


def _assert_same_statistics(a, b):
    assert a.layers == b.layers and a.heldout_windows == b.heldout_windows
    assert a.parts.keys() == b.parts.keys()
    for key, m in a.parts.items():
        other = b.parts[key]
        assert (m.count, m.grad_count) == (other.count, other.grad_count), key
        for field in ("sum_in", "sum_out", "in_in", "in_out", "out_sq", "grad_sum", "grad_grad"):
            x, y = getattr(m, field), getattr(other, field)
            assert (x is None) == (y is None), (key, field)
            if x is not None:
                torch.testing.assert_close(x, y, rtol=1e-9, atol=1e-12, msg=f"{key} {field}")


@pytest.mark.parametrize("gradients", [False, True])
def test_block_statistics_and_linearity_match_the_plain_model(pair, gradients):
    collect = dict(holdout=0.25, gradients=gradients, batch_size=2)
    stats = collect_block_statistics(pair.model, pair.windows, **collect)
    reference = collect_block_statistics(pair.plain, pair.windows, **collect)
    _assert_same_statistics(stats, reference)
    assert all(p.grad is None for p in pair.model.parameters())
    assert all(p.requires_grad for p in pair.model.parameters())  # restored after the frozen gradient pass
    _assert_same(block_linearity(stats).to_dict(), block_linearity(reference).to_dict())


def test_conditional_linearity_matches_the_plain_model(pair):
    result = conditional_linearity(pair.model, pair.windows, [(0, 1)], holdout=0.25).to_dict()
    reference = conditional_linearity(pair.plain, pair.windows, [(0, 1)], holdout=0.25).to_dict()
    _assert_same(result, reference)


def test_geometry_and_projection_match_the_plain_model(pair):
    collect = dict(holdout=0.25, gradients=True)
    stats = collect_block_statistics(pair.model, pair.windows, **collect)
    reference_stats = collect_block_statistics(pair.plain, pair.windows, **collect)
    torch.testing.assert_close(folded_head_weight(pair.model), folded_head_weight(pair.plain), rtol=0, atol=0)
    report, bases = activation_geometry(stats, model=pair.model)
    reference, reference_bases = activation_geometry(reference_stats, model=pair.plain)
    _assert_same(report.to_dict(), reference.to_dict())
    for key, b in bases.items():
        for field in dataclasses.fields(b):
            x, y = getattr(b, field.name), getattr(reference_bases[key], field.name)
            assert x.device.type == "cpu"
            torch.testing.assert_close(x, y, rtol=1e-9, atol=1e-9)
    measure = _measure(pair.windows)
    baseline = measure(pair.plain).ppl
    layer_bases = bases[(1, "no_first")]
    results = [
        projection_perplexity(
            model,
            measure,
            layer=1,
            mean=layer_bases.mean,
            basis=layer_bases.variance,
            basis_name="variance",
            positions="no_first",
            baseline_ppl=baseline,
        )
        for model in (pair.model, pair.plain)
    ]
    _assert_same(results[0].to_dict(), results[1].to_dict())
    assert measure(pair.model).ppl == pytest.approx(baseline, rel=1e-6)  # the hook is gone


def test_report_context_on_an_offloaded_model(pair):
    from tcompress import data
    from tcompress.report.budgets import budget
    from tcompress.report.context import STEPS_USING_BLOCK_STATISTICS, ReportContext, weight_fingerprint

    source = data.TextSource("test", "random ids", "random token ids")
    lines = []

    def context(model):
        return ReportContext(
            model, None, "tiny", budget("quick"), source, pair.windows, source, pair.windows, log=lines.append
        )

    ctx, reference = context(pair.model), context(pair.plain)
    assert weight_fingerprint(pair.model) == weight_fingerprint(pair.plain)
    described = ctx.describe()["model"]
    assert described["device"] == "cpu" and described["offloaded"] is True
    assert described["parameters"] == reference.describe()["model"]["parameters"]
    assert reference.describe()["model"]["offloaded"] is False
    assert STEPS_USING_BLOCK_STATISTICS == {"linearity", "substitution"}
    stats = ctx.block_statistics()
    assert ctx.block_statistics() is stats  # computed once
    d, blocks = ctx.hidden_size, ctx.num_blocks
    # 2 parts x 2 splits per block, each 2 (d, d) and 3 (d,) float64 tensors.
    assert ctx.release_block_statistics() == blocks * 4 * (2 * d * d + 3 * d) * 8
    assert "released the block statistics" in lines[-1]
    assert ctx.release_block_statistics() == 0
    assert ctx.block_statistics() is not stats  # asked again: computed again
