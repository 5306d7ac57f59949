"""spectral_sweep: the streamed, truncate-in-place sweep equals factorizing a fresh copy at every ratio, and leaves
the live model as it was."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from tcompress import models
from tcompress.analysis.projection_inputs import collect_input_moments
from tcompress.recipes.factorize import FactorizeConfig, factorize_
from tcompress.recipes.spectral_sweep import spectral_sweep


def _ids(model, n=4, length=24):
    return torch.randint(0, model.config.vocab_size, (n, length), generator=torch.Generator().manual_seed(0))


def _loss(model, ids) -> float:
    with torch.no_grad():
        logits = model(ids).logits
    return float(torch.nn.functional.cross_entropy(logits[:, :-1].flatten(0, 1), ids[:, 1:].flatten()))


@pytest.mark.parametrize("family", ["tiny_gpt2", "tiny_mistral"])
@pytest.mark.parametrize("max_bytes", [1, 1 << 40])  # one block per group, and everything in one group
def test_sweep_equals_factorizing_copies(family, max_bytes, request):
    model = request.getfixturevalue(family)
    ids = _ids(model)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    seen = []

    def measure(m):
        seen.append(m)
        return _loss(m, ids)

    ratios, methods = (0.5, 0.8), (None, "svd-llm")
    result = spectral_sweep(model, ids, ratios=ratios, methods=methods, measure=measure, max_moment_bytes=max_bytes)
    assert all(m is model for m in seen)  # no copies
    assert len(seen) == 1 + len(ratios) * len(methods)
    assert model.state_dict().keys() == before.keys()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert all(type(m).__name__ in ("Linear", "Conv1D") for _, m in models.architecture(model).iter_projections(model))
    assert _loss(model, ids) == pytest.approx(result.baseline_perplexity, rel=1e-6)

    moments = collect_input_moments(model, ids)
    arch = models.architecture(model)
    assert [(p.method, p.param_ratio) for p in result.points] == [(m or "plain", r) for m in methods for r in ratios]
    for point in result.points:
        reference = copy.deepcopy(model)
        whiten = None if point.method == "plain" else point.method
        report = factorize_(reference, FactorizeConfig(param_ratio=point.param_ratio, whiten=whiten), moments)
        assert point.params_kept_fraction == pytest.approx(report["params_kept_fraction"])
        assert point.perplexity == pytest.approx(_loss(reference, ids), rel=1e-5)
        assert point.perplexity != pytest.approx(result.baseline_perplexity, rel=1e-6)  # really measured factorized
        w_err = w_sq = 0.0
        for name, module in arch.iter_projections(reference):
            w = models.projection_weight(model.get_submodule(name)).double()
            w_err += float(((module.effective_weight().detach().double() - w) ** 2).sum())
            w_sq += float((w**2).sum())
        assert point.weight_rel_error == pytest.approx(math.sqrt(w_err / w_sq), rel=1e-6)


def test_a_failing_measurement_still_restores_the_model(tiny_mistral):
    ids = _ids(tiny_mistral)
    calls = []

    def measure(m):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return _loss(m, ids)

    reference = _loss(tiny_mistral, ids)
    with pytest.raises(RuntimeError, match="boom"):
        spectral_sweep(tiny_mistral, ids, ratios=(0.5,), methods=(None,), measure=measure)
    assert _loss(tiny_mistral, ids) == reference
    arch = models.architecture(tiny_mistral)
    assert all(isinstance(m, torch.nn.Linear) for _, m in arch.iter_projections(tiny_mistral))


def test_bad_arguments_raise_before_any_work(tiny_mistral):
    ids = _ids(tiny_mistral)
    with pytest.raises(ValueError, match="unknown method"):
        spectral_sweep(tiny_mistral, ids, methods=("pca",))
    with pytest.raises(ValueError, match="param_ratio"):
        spectral_sweep(tiny_mistral, ids, ratios=(1.5,))
