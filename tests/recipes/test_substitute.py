"""substitute_: layers replaced by fitted linear maps drop into every family, keep generation with a KV cache right,
count parameters as the paper does, fit clean vs sequential, reject bad configs with clear messages, and work on a
model that accelerate dispatched with disk offload (the map on the layer's execution device, the model whole again
after measure_substitution)."""

from __future__ import annotations

import pytest
import torch
from model_factories import FACTORIES
from tcompress import evaluate, models
from tcompress.analysis.activations import collect_block_statistics
from tcompress.analysis.linearity import fit_affine
from tcompress.nn import LinearBlock
from tcompress.recipes import SubstituteConfig, SubstitutedBlock, compress_, substitute_
from tcompress.recipes.substitute import measure_substitution


def _windows(n=8, t=24, seed=0):
    return torch.randint(3, 500, (n, t), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("family", ["gpt2", "llama", "mistral"])
def test_dense_substitution_equals_the_fitted_map(family):
    model = FACTORIES[family]()
    windows = _windows()
    stats = collect_block_statistics(model, windows, layers=[1], holdout=0.0)
    report = substitute_(model, windows, SubstituteConfig(blocks=(-1,), rank=None, ridge=1e-6))
    block = model.get_submodule(f"{'transformer.h' if family == 'gpt2' else 'model.layers'}.1")
    assert isinstance(block, SubstitutedBlock) and isinstance(block.linear_block, LinearBlock)
    A, b = fit_affine(stats.moments(1, "all"), target="residual", ridge=1e-6).output_map()
    seen = {}
    block.register_forward_hook(lambda m, args, out: seen.update(x=args[0], y=out))
    with torch.no_grad():
        model(windows[:2], use_cache=False)
    torch.testing.assert_close(seen["y"], (seen["x"].double() @ A + b).float(), rtol=1e-4, atol=1e-4)
    layer = report.layers[0]
    assert layer.layer == 1 and layer.map_parameters == 64 * 64 + 64
    assert layer.block_parameters == sum(
        p.numel()
        for p in FACTORIES[family]()
        .get_submodule(f"{'transformer.h' if family == 'gpt2' else 'model.layers'}.1")
        .parameters()
    )
    assert report.compression_ratio == pytest.approx(layer.block_parameters / layer.map_parameters)
    assert model.tcompress_config[-1]["kind"] == "substitute"


@pytest.mark.parametrize("quantize", [None, "int8"])
def test_low_rank_parameters_and_full_rank_matches_dense(quantize):
    windows = _windows()
    low = FACTORIES["llama"]()
    report = substitute_(low, windows, SubstituteConfig(blocks=(0,), rank=8, quantize=quantize))
    reused = FACTORIES["llama"]()
    stats = collect_block_statistics(reused, windows, holdout=0.0)
    substitute_(reused, windows, SubstituteConfig(blocks=(0,), rank=8, quantize=quantize), statistics=stats)
    with torch.no_grad():
        torch.testing.assert_close(reused(windows).logits, low(windows).logits)
    extra = 8 + 64 if quantize else 0
    assert report.layers[0].map_parameters == 2 * 64 * 8 + 2 * 64 + extra
    full, dense = FACTORIES["llama"](), FACTORIES["llama"]()
    substitute_(full, windows, SubstituteConfig(blocks=(0,), rank=64))
    substitute_(dense, windows, SubstituteConfig(blocks=(0,)))
    with torch.no_grad():
        torch.testing.assert_close(full(windows).logits, dense(windows).logits, rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("block", [0, -1])
def test_generation_with_cache_matches_without(family, block):
    model = FACTORIES[family]()
    substitute_(model, _windows(), SubstituteConfig(blocks=(block,), rank=16))
    prompt = _windows(n=1, t=5, seed=1)
    kwargs = dict(max_new_tokens=6, do_sample=False, pad_token_id=0)
    with torch.no_grad():
        cached = model.generate(prompt, use_cache=True, **kwargs)
        uncached = model.generate(prompt, use_cache=False, **kwargs)
    assert torch.equal(cached, uncached)


def test_sequential_fits_on_shifted_inputs():
    windows = _windows()
    clean, sequential = FACTORIES["mistral"](), FACTORIES["mistral"]()
    substitute_(clean, windows, SubstituteConfig(blocks=(0, 1), rank=16, fit="clean"))
    report = substitute_(sequential, windows, SubstituteConfig(blocks=(1, 0), rank=16, fit="sequential"))
    assert [layer.layer for layer in report.layers] == [0, 1]
    b0c, b0s = clean.model.layers[0].linear_block, sequential.model.layers[0].linear_block
    torch.testing.assert_close(b0c.U, b0s.U)  # block 0 sees the same inputs either way
    # block 1's inputs changed, but not their mean: a least-squares map with a bias reproduces its fit data's mean
    b1c, b1s = clean.model.layers[1].linear_block, sequential.model.layers[1].linear_block
    torch.testing.assert_close(b1c.mu, b1s.mu)
    assert not torch.allclose(b1c.U @ b1c.V, b1s.U @ b1s.V, rtol=1e-3, atol=1e-5)


def test_bad_configs_and_rollback():
    model = FACTORIES["llama"]()
    with pytest.raises(ValueError, match="rank must be a positive int or None"):
        SubstituteConfig(rank=0)
    with pytest.raises(ValueError, match="fit must be one of"):
        SubstituteConfig(fit="greedy")
    with pytest.raises(ValueError, match="quantize='int8' applies to low-rank"):
        SubstituteConfig(quantize="int8")
    with pytest.raises(ValueError, match="positions must be one of"):
        SubstituteConfig(positions="first")
    with pytest.raises(ValueError, match="non-empty sequence of block indices"):
        SubstituteConfig(blocks=())
    with pytest.raises(ValueError, match="out of range for 2 blocks"):
        substitute_(model, _windows(), SubstituteConfig(blocks=(2,)))
    with pytest.raises(ValueError, match="name the same block twice"):
        substitute_(model, _windows(), SubstituteConfig(blocks=(1, -1)))
    with pytest.raises(ValueError, match="exceeds the hidden size d = 64"):
        substitute_(model, _windows(), SubstituteConfig(rank=65))
    with pytest.raises(ValueError, match="needs calibration windows"):
        compress_(model, SubstituteConfig())
    with pytest.raises(ValueError, match="singular"):  # block 1's fit fails after block 0 was replaced
        substitute_(model, _windows(n=1, t=4), SubstituteConfig(blocks=(0, 1), ridge=0.0, fit="sequential"))
    assert not any(isinstance(b, SubstitutedBlock) for b in model.model.layers)
    partial = collect_block_statistics(model, _windows(), layers=[0])
    with pytest.raises(ValueError, match=r"do not cover blocks \[1\]"):
        substitute_(model, _windows(), SubstituteConfig(blocks=(1,), rank=4), statistics=partial)
    substitute_(model, _windows(), SubstituteConfig(blocks=(1,), rank=4))
    with pytest.raises(ValueError, match=r"blocks \[1\] are already substituted"):
        substitute_(model, _windows(), SubstituteConfig(blocks=(1,), rank=4))


def test_measure_substitution_measures_then_restores_the_model():
    from tcompress import evaluate
    from tcompress.recipes.substitute import measure_substitution

    model = FACTORIES["llama"]()
    windows = _windows()
    before = [id(b) for b in model.model.layers]
    model.tcompress_config = [{"kind": "earlier"}]
    baseline = evaluate.perplexity(model, windows).ppl
    seen = []

    def measure(m):
        seen.append(type(m.model.layers[1]).__name__)
        return evaluate.perplexity(m, windows)

    row = measure_substitution(model, windows, SubstituteConfig(blocks=(-1,), rank=8), measure, baseline)
    assert seen == ["SubstitutedBlock"]  # measured while substituted
    assert [id(b) for b in model.model.layers] == before and model.tcompress_config == [{"kind": "earlier"}]
    assert evaluate.perplexity(model, windows).ppl == pytest.approx(baseline)
    assert row["blocks"] == [1] and row["rank"] == 8 and row["ppl_change"] == pytest.approx(row["ppl"] - baseline)
    assert row["ppl_change_relative"] == pytest.approx(row["ppl"] / baseline - 1)


def test_measure_substitution_restores_the_model_when_measuring_fails():
    from tcompress.recipes.substitute import measure_substitution

    model = FACTORIES["llama"]()
    before = [id(b) for b in model.model.layers]

    def broken(m):
        raise RuntimeError("measure failed")

    with pytest.raises(RuntimeError, match="measure failed"):
        measure_substitution(model, _windows(), SubstituteConfig(blocks=(-1,), rank=8), broken, 1.0)
    assert [id(b) for b in model.model.layers] == before


# -- a model that accelerate dispatched with offload (tests/offload_models.py) ------------------------------------


@pytest.fixture(scope="module", params=["gpt2", "mistral"])
def pair(request, tmp_path_factory):
    pytest.importorskip("accelerate")
    from offload_models import offloaded_pair

    return offloaded_pair(request.param, tmp_path_factory.mktemp(f"offload-{request.param}"))


def _measure(windows):
    return lambda model: evaluate.perplexity(model, windows, progress=False)


@pytest.mark.parametrize("config", [SubstituteConfig(blocks=(-1,), rank=8), SubstituteConfig(blocks=(0, 1), rank=None)])
def test_measure_substitution_matches_and_puts_the_offloaded_block_back(pair, config):
    measure = _measure(pair.windows)
    baseline = measure(pair.plain).ppl
    assert measure(pair.model).ppl == pytest.approx(baseline, rel=1e-6)
    blocks = models.architecture(pair.model).blocks(pair.model)
    originals = list(blocks)
    row = measure_substitution(pair.model, pair.windows, config, measure, baseline)
    reference = measure_substitution(pair.plain, pair.windows, config, measure, baseline)
    assert row["ppl"] == pytest.approx(reference["ppl"], rel=1e-5)
    assert row["compression_ratio"] == reference["compression_ratio"]
    assert all(a is b for a, b in zip(blocks, originals))
    assert measure(pair.model).ppl == pytest.approx(baseline, rel=1e-6)


def test_substituted_map_lives_on_the_execution_device_and_keeps_the_hooks(pair):
    spec = models.architecture(pair.model)
    name = f"{spec.blocks_path}.1"
    original, plain_original = pair.model.get_submodule(name), pair.plain.get_submodule(name)
    try:
        substitute_(pair.model, pair.windows, SubstituteConfig(blocks=(1,), rank=4))
        substituted = pair.model.get_submodule(name)
        assert isinstance(substituted, SubstitutedBlock)
        assert models.is_offloaded(substituted)  # offloaded like the block it replaced
        assert models.execution_device(substituted) == torch.device("cpu")
        with models.materialized(substituted):
            assert substituted.linear_block.U.device.type == "cpu"
            assert substituted.linear_block.U.dtype == torch.float32
        assert substituted.linear_block.U.device.type == "meta"
        plain_substituted = substitute_(pair.plain, pair.windows, SubstituteConfig(blocks=(1,), rank=4))
        assert plain_substituted.compression_ratio > 1
        ppl = _measure(pair.windows)
        assert ppl(pair.model).ppl == pytest.approx(ppl(pair.plain).ppl, rel=1e-5)
    finally:
        models.set_module(pair.model, name, original)
        models.set_module(pair.plain, name, plain_original)
        pair.model.tcompress_config = pair.plain.tcompress_config = []
