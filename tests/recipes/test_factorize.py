"""Spectral compression: rank arithmetic, exactness at full rank, whitening, end to end on tiny models, bad configs."""

from __future__ import annotations

import math

import pytest
import torch
from tcompress import models
from tcompress.analysis.projection_inputs import InputMoment, collect_input_moments
from tcompress.nn import LowRankLinear, QuantLinear
from tcompress.recipes import FactorizeConfig, compress_, factorize_
from tcompress.recipes.factorize import input_scaling, rank_for, truncated_svd


def _ids(model, n=4, length=32, seed=0):
    return torch.randint(0, model.config.vocab_size, (n, length), generator=torch.Generator().manual_seed(seed))


# -- rank arithmetic ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "out_features, in_features, ratio, expected",
    [(576, 576, 0.5, 144), (1536, 576, 0.8, 335), (64, 64, 1.0, 32), (172, 64, 0.4, 18), (8, 8, 0.01, 1)],
)
def test_param_ratio_rank(out_features, in_features, ratio, expected):
    r = rank_for(out_features, in_features, param_ratio=ratio)
    assert r == expected
    assert r * (out_features + in_features) <= max(ratio * out_features * in_features, out_features + in_features)


def test_energy_rank_is_the_smallest_reaching_the_fraction():
    s = torch.tensor([4.0, 2.0, 1.0, 1.0])  # squared: 16, 4, 1, 1 of 22
    assert rank_for(4, 4, energy=16 / 22, singular_values=s) == 1
    assert rank_for(4, 4, energy=0.8, singular_values=s) == 2
    assert rank_for(4, 4, energy=21 / 22, singular_values=s) == 3
    assert rank_for(4, 4, energy=1.0, singular_values=s) == 4


def test_explicit_rank_is_capped_at_full_rank():
    assert rank_for(10, 6, rank=100) == 6


def test_truncated_svd_energy_and_exactness_at_full_rank():
    w = torch.randn(24, 16, generator=torch.Generator().manual_seed(1))
    f = truncated_svd(w, rank=16)
    torch.testing.assert_close(f.a @ f.b, w.double(), rtol=1e-10, atol=1e-10)
    assert f.energy_kept == pytest.approx(1.0)
    f4 = truncated_svd(w, rank=4)
    s = torch.linalg.svdvals(w.double())
    assert f4.energy_kept == pytest.approx(float((s[:4] ** 2).sum() / (s**2).sum()))
    # Eckart-Young: the truncation error is the discarded singular values.
    assert float(torch.linalg.norm(w.double() - f4.a @ f4.b)) == pytest.approx(float(s[4:].norm()), rel=1e-9)


@pytest.mark.parametrize("method", ["svd-llm", "asvd"])
def test_whitened_svd_is_exact_at_full_rank(method):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(200, 16, generator=gen, dtype=torch.float64)
    moment = InputMoment(x.T @ x, 200)
    w = torch.randn(12, 16, generator=gen)
    f = truncated_svd(w, rank=12, scaling=input_scaling(moment, method))
    torch.testing.assert_close(f.a @ f.b, w.double(), rtol=1e-8, atol=1e-8)


def test_whitening_reduces_output_error_on_correlated_inputs():
    gen = torch.Generator().manual_seed(3)
    # Strongly correlated, anisotropic inputs: a few directions carry almost all the variance.
    mixing = torch.randn(32, 32, generator=gen, dtype=torch.float64) * torch.logspace(0, -3, 32, dtype=torch.float64)
    x = torch.randn(2000, 32, generator=gen, dtype=torch.float64) @ mixing.T
    moment = InputMoment(x.T @ x, x.shape[0])
    w = torch.randn(48, 32, generator=gen, dtype=torch.float64)

    def output_error(f):
        return math.sqrt(moment.output_sq_norm(f.a @ f.b - w) / moment.output_sq_norm(w))

    plain = output_error(truncated_svd(w, rank=8))
    svd_llm = output_error(truncated_svd(w, rank=8, scaling=input_scaling(moment, "svd-llm")))
    asvd = output_error(truncated_svd(w, rank=8, scaling=input_scaling(moment, "asvd")))
    assert svd_llm < 0.5 * plain
    assert asvd < plain
    assert svd_llm <= asvd + 1e-12  # SVD-LLM is the optimum in output space


def test_svd_llm_damps_a_singular_moment_and_says_so():
    x = torch.randn(100, 8, dtype=torch.float64)
    x[:, 3] = 0.0  # a dead input channel: XᵀX is singular
    _, _, damping = input_scaling(InputMoment(x.T @ x, 100), "svd-llm")
    assert damping > 0
    _, _, none = input_scaling(InputMoment(torch.eye(8, dtype=torch.float64), 1), "svd-llm")
    assert none == 0.0


def test_svd_llm_rejects_a_nan_moment():
    with pytest.raises(ValueError, match="NaN"):
        input_scaling(InputMoment(torch.full((4, 4), float("nan"), dtype=torch.float64), 1), "svd-llm")


# -- end to end ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["tiny_gpt2", "tiny_mistral"])
def test_full_rank_factorization_keeps_the_logits(family, request):
    model = request.getfixturevalue(family)
    ids = _ids(model)
    with torch.no_grad():
        before = model(ids).logits
    compress_(model, FactorizeConfig(rank=10_000))
    swapped = [m for _, m in models.architecture(model).iter_projections(model)]
    assert swapped and all(isinstance(m, LowRankLinear) for m in swapped)
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, before, rtol=1e-4, atol=1e-4)
    assert model.tcompress_config[-1]["kind"] == "factorize"


@pytest.mark.parametrize("family", ["gpt2", "mistral"])
@pytest.mark.parametrize("whiten", [None, "svd-llm", "asvd"])
def test_factorized_model_matches_its_effective_weights(family, whiten):
    """The factorized model equals the original with each W replaced by A·B (Conv1D orientation included)."""
    from model_factories import FACTORIES

    model, reference = FACTORIES[family](), FACTORIES[family]()  # two identical fresh copies (same seed)
    moments = collect_input_moments(model, _ids(model, seed=1))
    report = factorize_(model, FactorizeConfig(param_ratio=0.5, whiten=whiten), moments)
    assert 0.4 < report["params_kept_fraction"] <= 0.5
    arch = models.architecture(model)
    with torch.no_grad():
        for (name, ref_module), (_, module) in zip(arch.iter_projections(reference), arch.iter_projections(model)):
            models.projection_weight(ref_module).copy_(module.effective_weight())
            assert report["modules"][name]["rank"] == module.rank
    ids = _ids(model, seed=2)
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, reference(ids).logits, rtol=1e-4, atol=1e-4)


def test_quantized_factors_are_a_quantlinear_pair(tiny_mistral):
    compress_(tiny_mistral, FactorizeConfig(rank=8, factor_bits=4, factor_group_size=4))
    layer = tiny_mistral.model.layers[0].self_attn.q_proj
    assert isinstance(layer, LowRankLinear) and isinstance(layer.in_proj, QuantLinear)
    assert isinstance(layer.out_proj, QuantLinear) and layer.rank == 8
    with torch.no_grad():
        assert torch.isfinite(tiny_mistral(_ids(tiny_mistral)).logits).all()


def test_factorize_leaves_the_model_untouched_on_error(tiny_mistral):
    before = [type(m) for _, m in models.architecture(tiny_mistral).iter_projections(tiny_mistral)]
    with pytest.raises(ValueError, match="does not divide"):
        compress_(tiny_mistral, FactorizeConfig(rank=6, factor_bits=4, factor_group_size=4))
    after = [type(m) for _, m in models.architecture(tiny_mistral).iter_projections(tiny_mistral)]
    assert before == after


# -- bad configs -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({}, "exactly one of rank, energy, param_ratio; got none"),
        ({"rank": 4, "param_ratio": 0.5}, "got rank, param_ratio"),
        ({"param_ratio": 0.0}, r"param_ratio must be a number in \(0, 1\]"),
        ({"param_ratio": 1.5}, r"param_ratio must be a number in \(0, 1\]"),
        ({"energy": -0.1}, r"energy must be a number in \(0, 1\]"),
        ({"rank": 0}, "rank must be an int"),
        ({"rank": 4, "whiten": "pca"}, "whiten must be None or one of svd-llm, asvd"),
        ({"rank": 4, "damping": 0.0}, "damping must be in"),
        ({"rank": 4, "factor_bits": 3}, "bits must be 4 or 8"),
    ],
)
def test_bad_configs_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FactorizeConfig(**kwargs)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"rank": 2.5}, r"rank must be an int or None; got 2\.5"),
        ({"rank": True}, "rank must be an int or None; got True"),
        ({"rank": 4, "factor_symmetric": "yes"}, "factor_symmetric must be True or False; got 'yes'"),
        ({"rank": 4, "include": [1]}, r"include must be a sequence of strings; got \[1\]"),
        ({"param_ratio": "0.5"}, "param_ratio must be a number or None; got '0.5'"),
    ],
)
def test_config_fields_of_the_wrong_type_raise(kwargs, match):
    with pytest.raises(TypeError, match=match):
        FactorizeConfig(**kwargs)


def test_whitening_through_compress_asks_for_moments(tiny_mistral):
    with pytest.raises(ValueError, match="needs calibration moments"):
        compress_(tiny_mistral, FactorizeConfig(rank=4, whiten="svd-llm"))


def test_whitening_without_a_moment_for_a_module_raises(tiny_mistral):
    moments = collect_input_moments(tiny_mistral, _ids(tiny_mistral), names=["model.layers.0.self_attn.q_proj"])
    with pytest.raises(ValueError, match="no calibration moment for"):
        factorize_(tiny_mistral, FactorizeConfig(rank=4, whiten="svd-llm"), moments)


def test_factorizing_twice_raises(tiny_mistral):
    compress_(tiny_mistral, FactorizeConfig(rank=4))
    with pytest.raises(ValueError, match="no longer dense"):
        compress_(tiny_mistral, FactorizeConfig(rank=4))


def test_selection_that_matches_nothing_raises(tiny_gpt2):
    with pytest.raises(ValueError, match="select no projection"):
        compress_(tiny_gpt2, FactorizeConfig(rank=4, include=("nothing.*",)))


def test_config_round_trips_through_a_dict():
    from tcompress.recipes import config_from_dict

    config = FactorizeConfig(param_ratio=0.6, whiten="asvd", exclude=("*.o_proj",))
    assert config_from_dict(config.to_dict()) == config


def test_a_whitening_factor_on_another_device_is_refused():
    """The class of bug where moments were moved to the host and met GPU weights: caught by a device check (here a
    factor on ``meta`` against a CPU weight; no GPU needed)."""
    w = torch.randn(8, 6, dtype=torch.float64)
    scaling = (torch.eye(6, device="meta"), None, 0.0)
    with pytest.raises(ValueError, match="whitening factor is on meta but the weight is on cpu"):
        truncated_svd(w, rank=2, scaling=scaling)
    from tcompress.recipes.factorize import svd_of

    with pytest.raises(ValueError, match="whitening factor is on meta"):
        svd_of(w, scaling)


def test_moments_stay_on_the_device_their_inputs_arrive_on(tiny_mistral):
    """Nothing moves the sums to the host (the old ``.cpu()``), so whitening is built where the weights are."""
    from tcompress.analysis.projection_inputs import input_keys, stream_input_moments

    ids = _ids(tiny_mistral)
    groups = list(stream_input_moments(tiny_mistral, ids, max_bytes=1))
    assert [g for g, _ in groups] == [[i] for i in range(tiny_mistral.config.num_hidden_layers)]
    keys = input_keys(tiny_mistral)
    for _, moments in groups:
        for name, moment in moments.items():
            weight = models.projection_weight(tiny_mistral.get_submodule(name))
            assert moment.xtx.device == weight.device
        by_key = {}
        for name, moment in moments.items():  # q/k/v and gate/up share one object, not copies
            assert by_key.setdefault(keys[name], moment) is moment
        assert len({id(m) for m in moments.values()}) == 4
