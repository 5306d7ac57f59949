"""compress_ with QuantizeConfig on tiny random GPT-2 / Mistral / Llama models and the real stories260K."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from tcompress import models
from tcompress.nn import QuantLinear, QuantSpec
from tcompress.ops import dequantize_reference, quantize_reference
from tcompress.recipes import QuantizeConfig, compress_, config_from_dict


def _tokens(model, n=24, batch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, model.config.vocab_size, (batch, n), generator=g)


def _fake_quantize_(model, config):
    """The same quantization applied as dequantized fp32 weights (the oracle of the packed kernels)."""
    spec = QuantSpec.of(config)
    arch = models.architecture(model)
    with torch.no_grad():
        for _, module in arch.iter_projections(model):
            w = models.projection_weight(module)
            q = quantize_reference(w, spec.bits, spec.group_size, spec.symmetric, spec.torch_scale_dtype)
            wq = dequantize_reference(*q, spec.bits, spec.group_size)
            w.copy_(wq)  # projection_weight is a view (transposed for Conv1D), so this writes the module's weight
    return model


@pytest.mark.parametrize("family", ["tiny_gpt2", "tiny_mistral", "tiny_llama"])
@pytest.mark.parametrize(
    "config",
    [
        QuantizeConfig(bits=8, group_size=None),
        QuantizeConfig(bits=4, group_size=4),
        QuantizeConfig(bits=4, group_size=4, symmetric=False, scale_dtype="bfloat16"),
    ],
    ids=["w8", "w4g4", "w4g4-asym-bf16"],
)
def test_packed_model_equals_fake_quantized_model(family, config, request):
    model = request.getfixturevalue(family)
    fake = _fake_quantize_(copy.deepcopy(model), config)
    compress_(model, config)
    arch = models.architecture(model)
    projections = list(arch.iter_projections(model))
    assert projections and all(isinstance(m, QuantLinear) for _, m in projections)
    assert not isinstance(arch.head(model), QuantLinear)
    ids = _tokens(model)
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, fake(ids).logits, rtol=1e-4, atol=1e-4)
    assert model.tcompress_config == [config.to_dict()]


def test_include_exclude_patterns(tiny_mistral):
    compress_(tiny_mistral, QuantizeConfig(bits=8, group_size=None, include=("*.mlp.*",), exclude=("*.down_proj",)))
    kinds = {name: type(m).__name__ for name, m in models.architecture(tiny_mistral).iter_projections(tiny_mistral)}
    assert all((k == "QuantLinear") == (".mlp." in n and not n.endswith("down_proj")) for n, k in kinds.items())


def test_patterns_that_select_nothing(tiny_mistral):
    with pytest.raises(ValueError, match="select no projection"):
        compress_(tiny_mistral, QuantizeConfig(include=("nothing.*",)))


def test_group_size_error_names_module_and_leaves_model_untouched(tiny_llama):
    before = {k: v.clone() for k, v in tiny_llama.state_dict().items()}
    with pytest.raises(ValueError, match=r"cannot quantize module '.*': group_size 48 does not divide its in_features"):
        compress_(tiny_llama, QuantizeConfig(bits=4, group_size=48))
    assert not any(isinstance(m, QuantLinear) for m in tiny_llama.modules())
    assert all(torch.equal(before[k], v) for k, v in tiny_llama.state_dict().items())


def test_nan_weight_is_named_and_nothing_changes(tiny_mistral):
    name, module = list(models.architecture(tiny_mistral).iter_projections(tiny_mistral))[3]
    with torch.no_grad():
        module.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match=rf"'{name}': its weight holds NaN or Inf \(1 non-finite"):
        compress_(tiny_mistral, QuantizeConfig(bits=8, group_size=None))
    assert not any(isinstance(m, QuantLinear) for m in tiny_mistral.modules())


def test_quantize_head_unties_it(tiny_gpt2):
    arch = models.architecture(tiny_gpt2)
    assert arch.is_tied(tiny_gpt2)
    emb = arch.embeddings(tiny_gpt2).weight.detach().clone()
    compress_(tiny_gpt2, QuantizeConfig(bits=8, group_size=None, quantize_head=True))
    assert isinstance(arch.head(tiny_gpt2), QuantLinear)
    assert torch.equal(arch.embeddings(tiny_gpt2).weight, emb)
    assert tiny_gpt2.config.tie_word_embeddings is False
    with torch.no_grad():
        assert torch.isfinite(tiny_gpt2(_tokens(tiny_gpt2)).logits).all()


def test_not_a_config():
    with pytest.raises(TypeError, match="expected recipe configs"):
        compress_(torch.nn.Linear(2, 2), {"bits": 4})


def test_unsupported_architecture_is_a_clear_error():
    with pytest.raises(ValueError, match="supported"):
        compress_(torch.nn.Sequential(torch.nn.Linear(4, 4)), QuantizeConfig(bits=8, group_size=None))


def test_config_round_trips_through_dict():
    c = QuantizeConfig(bits=4, group_size=64, symmetric=False, include=("*.mlp.*",))
    assert config_from_dict(c.to_dict()) == c
    with pytest.warns(UserWarning, match="unknown keys"):
        assert config_from_dict({**c.to_dict(), "future_knob": 1}) == c


def test_stories260k_w8_barely_moves_the_logits(stories260k):
    model, _ = stories260k
    ids = _tokens(model, n=64, batch=1)
    with torch.no_grad():
        ref = model(ids).logits
        compress_(model, QuantizeConfig(bits=8, group_size=None))
        got = model(ids).logits
    kl = F.kl_div(got.log_softmax(-1), ref.log_softmax(-1), log_target=True, reduction="batchmean")
    assert kl < 1e-3 * ids.shape[1]


def test_a_failure_while_quantizing_leaves_the_model_untouched(tiny_llama):
    # The last projection's scale overflows float16 only once its group is quantized, after every check passed.
    name, module = list(models.architecture(tiny_llama).iter_projections(tiny_llama))[-1]
    with torch.no_grad():
        module.weight[0, 0] = 1e6
    with pytest.raises(ValueError, match="NaN or Inf|overflow|float16"):
        compress_(tiny_llama, QuantizeConfig(bits=4, group_size=None, scale_dtype="float16"))
    assert not any(isinstance(m, QuantLinear) for m in tiny_llama.modules())
    assert not getattr(tiny_llama, "tcompress_config", [])


def test_exclude_applies_to_the_head(tiny_gpt2):
    compress_(tiny_gpt2, QuantizeConfig(bits=8, group_size=None, quantize_head=True, exclude=("lm_head",)))
    assert not isinstance(models.architecture(tiny_gpt2).head(tiny_gpt2), QuantLinear)


def test_quantizing_twice_is_a_clear_error(tiny_mistral):
    compress_(tiny_mistral, QuantizeConfig(bits=8, group_size=None))
    with pytest.raises(ValueError, match="already quantized"):
        compress_(tiny_mistral, QuantizeConfig(bits=4, group_size=None))


def test_casting_the_model_keeps_the_scales_as_quantized(tiny_mistral):
    compress_(tiny_mistral, QuantizeConfig(bits=4, group_size=None))
    q = next(m for m in tiny_mistral.modules() if isinstance(m, QuantLinear))
    scales = q.scales.clone()
    tiny_mistral.to(torch.bfloat16)
    assert q.scales.dtype == torch.float32 and torch.equal(q.scales, scales)
    assert next(tiny_mistral.parameters()).dtype == torch.bfloat16
    with torch.no_grad():
        assert tiny_mistral(_tokens(tiny_mistral)).logits.dtype == torch.bfloat16


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"symmetric": "yes"}, "symmetric must be True or False; got 'yes'"),
        ({"bits": True}, "bits must be an int; got True"),
        ({"group_size": 64.0}, r"group_size must be an int or None; got 64\.0"),
        ({"quantize_head": 1}, "quantize_head must be True or False; got 1"),
        ({"act_bits": "8"}, "act_bits must be an int or None; got '8'"),
        ({"scale_dtype": torch.float16}, "scale_dtype must be a string"),
    ],
)
def test_every_config_field_is_type_checked(kwargs, match):
    # Before: QuantizeConfig(symmetric="yes") was accepted and written into the recipe JSON.
    with pytest.raises(TypeError, match=match):
        QuantizeConfig(**kwargs)


def test_a_recipe_that_is_not_a_dict_is_a_clear_error():
    from tcompress.recipes import config_from_dict

    with pytest.raises(ValueError, match="a recipe config must be a dict"):
        config_from_dict("abc")
    with pytest.raises(ValueError, match="unknown recipe kind 'evil'"):
        config_from_dict({"kind": "evil"})
