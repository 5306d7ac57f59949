"""RotateConfig: the rotated fp32 model computes what the original did; norms fused; errors leave the model as is."""

from __future__ import annotations

import copy

import pytest
import tcompress
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from model_factories import tiny_gpt2, tiny_llama, tiny_mistral
from tcompress import models
from tcompress.nn import HadamardLinear, QuantLinear, ScaleFreeRMSNorm
from tcompress.recipes import QuantizeConfig, RotateConfig, compress_, config_from_dict

FACTORIES = {"gpt2": tiny_gpt2, "mistral": tiny_mistral, "llama": tiny_llama}


def with_random_norms(model: torch.nn.Module, seed: int = 1) -> torch.nn.Module:
    """Random norm scales/biases and projection biases (fresh models have scale 1 and bias 0, which fuse trivially)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in model.named_parameters():
            if p.dim() == 1:
                p.add_(torch.randn(p.shape, generator=gen) * 0.5)
    return model


def ids(vocab: int = 512, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, (2, 24), generator=torch.Generator().manual_seed(seed))


def assert_same_logits(original, rotated, x):
    with torch.no_grad():
        ref, out = original(x).logits, rotated(x).logits
    scale = float(ref.abs().max())
    assert float((out - ref).abs().max()) <= 1e-4 * scale, (float((out - ref).abs().max()), scale)


@pytest.mark.parametrize("family", sorted(FACTORIES))
@pytest.mark.parametrize("online", [False, True])
def test_rotation_keeps_the_logits_of_tiny_models(family, online):
    original = with_random_norms(FACTORIES[family]())
    rotated = compress_(copy.deepcopy(original), RotateConfig(seed=0, online_hadamard=online))
    assert_same_logits(original, rotated, ids())
    # Something really changed: the embedding rows were rotated.
    arch = models.architecture(rotated)
    assert not torch.allclose(arch.embeddings(rotated).weight, arch.embeddings(original).weight)


@pytest.mark.parametrize("family", sorted(FACTORIES))
def test_norm_fusion_alone_keeps_the_logits_and_leaves_embeddings_unrotated(family):
    original = with_random_norms(FACTORIES[family]())
    fused = compress_(copy.deepcopy(original), RotateConfig(rotate_residual=False))
    assert_same_logits(original, fused, ids())
    arch = models.architecture(fused)
    assert all(isinstance(norm, ScaleFreeRMSNorm) for _, norm, _ in arch.iter_norms(fused))
    if family != "gpt2":  # GPT-2's embeddings are centred (mean-free rows), but not rotated
        assert torch.equal(arch.embeddings(fused).weight, arch.embeddings(original).weight)


@pytest.mark.parametrize("family", sorted(FACTORIES))
def test_rotation_in_slices_equals_the_rotation_whole(family, monkeypatch):
    # Large tables (Mistral-7B's embedding and head) are rotated a slice at a time to bound the float64 temporaries;
    # a slice of a few elements makes every tensor take that path here, which must give the same weights.
    original = with_random_norms(FACTORIES[family]())
    whole = compress_(copy.deepcopy(original), RotateConfig(seed=3))
    monkeypatch.setattr("tcompress.recipes.rotate._SLICE_ELEMENTS", 50)
    sliced = compress_(copy.deepcopy(original), RotateConfig(seed=3))
    expected = dict(whole.named_parameters())
    for name, p in sliced.named_parameters():
        assert torch.allclose(p, expected[name], rtol=0, atol=1e-6 * float(expected[name].abs().max())), name
    assert_same_logits(original, sliced, ids())


@pytest.mark.parametrize("online", [False, True])
def test_rotation_keeps_the_logits_of_stories260k(stories260k, online):
    model, tokenizer = stories260k
    original = copy.deepcopy(model)
    compress_(model, RotateConfig(seed=0, online_hadamard=online))
    x = tokenizer("Once upon a time there was a little girl who liked to play.", return_tensors="pt").input_ids
    assert_same_logits(original, model, x)


@settings(max_examples=5, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_rotation_keeps_logits_for_any_seed(seed):
    original = with_random_norms(tiny_gpt2(), seed=seed % 1000)
    rotated = compress_(copy.deepcopy(original), RotateConfig(seed=seed))
    assert_same_logits(original, rotated, ids(seed=seed % 7))


def test_norms_become_scale_free_and_the_head_is_untied():
    model = with_random_norms(tiny_gpt2())
    assert models.architecture(model).is_tied(model)
    compress_(model, RotateConfig())
    arch = models.architecture(model)
    norms = [norm for _, norm, _ in arch.iter_norms(model)]
    assert len(norms) == 5 and all(isinstance(n, ScaleFreeRMSNorm) for n in norms)
    assert not list(norms[0].parameters())
    assert not arch.is_tied(model) and model.config.tie_word_embeddings is False
    # GPT-2's final LayerNorm bias is folded into a new head bias.
    assert arch.head(model).bias is not None and float(arch.head(model).bias.abs().max()) > 0


def test_gpt2_writers_are_centred_before_rotation():
    model = with_random_norms(tiny_gpt2())
    wte_norm = models.architecture(model).embeddings(model).weight.detach().clone()
    compress_(model, RotateConfig())
    # Rotation keeps row norms; centring removed each row's mean, so the norms equal those of the centred rows.
    centred = wte_norm - wte_norm.mean(dim=1, keepdim=True)
    rotated = models.architecture(model).embeddings(model).weight.detach()
    torch.testing.assert_close(rotated.norm(dim=1), centred.norm(dim=1), rtol=1e-5, atol=1e-6)


def test_online_hadamard_swaps_only_the_down_projections():
    model = compress_(tiny_mistral(), RotateConfig(online_hadamard=True))
    arch = models.architecture(model)
    kinds = {name.rsplit(".", 1)[-1]: type(m) for name, m in arch.iter_projections(model)}
    assert kinds["down_proj"] is HadamardLinear and kinds["up_proj"] is torch.nn.Linear


@pytest.mark.parametrize("family", ["gpt2", "mistral"])
def test_rotation_composes_with_quantization(family):
    original = FACTORIES[family]()
    group = 64 if family == "gpt2" else None  # the tiny Mistral's MLP width 172 is no multiple of 64
    model = compress_(
        copy.deepcopy(original),
        RotateConfig(seed=0, online_hadamard=True),
        QuantizeConfig(bits=4, group_size=group, act_bits=8),
    )
    arch = models.architecture(model)
    downs = [m for n, m in arch.iter_projections(model) if n.endswith(("down_proj", "mlp.c_proj"))]
    assert all(isinstance(m, QuantLinear) and m.online_hadamard and m.act_bits == 8 for m in downs)
    assert [c["kind"] for c in model.tcompress_config] == ["rotate", "quantize"]
    x = ids()
    with torch.no_grad():
        ref, out = original(x).logits, model(x).logits
    # W4A8 of a random model is not exact, but it is the same model up to quantization noise.
    assert float((out - ref).abs().mean()) < 0.25 * float(ref.abs().mean()) + 1e-3


def test_the_issue_example_runs_on_gpt2():
    model = compress_(tiny_gpt2(), RotateConfig(seed=0), QuantizeConfig(bits=4, group_size=64))
    assert sum(isinstance(m, QuantLinear) for m in model.modules()) == 8


def test_rotating_a_quantized_model_is_refused_and_changes_nothing():
    model = compress_(tiny_gpt2(), QuantizeConfig(bits=8, group_size=None))
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match="rotate the floating-point model, before quantizing"):
        compress_(model, RotateConfig())
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


def test_rotating_twice_is_refused():
    model = compress_(tiny_llama(), RotateConfig())
    with pytest.raises(ValueError, match="already rotated"):
        compress_(model, RotateConfig(seed=1))


def test_online_hadamard_on_a_width_without_construction_is_a_clear_error():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=128, hidden_size=64, intermediate_size=90, num_hidden_layers=1, num_attention_heads=4,
        num_key_value_heads=2, bos_token_id=1, eos_token_id=2, pad_token_id=None,
    )  # fmt: skip
    model = LlamaForCausalLM(config).eval()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match=r"online_hadamard=True.*down_proj.*K \* 2\^m"):
        compress_(model, RotateConfig(online_hadamard=True))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    compress_(model, RotateConfig(online_hadamard=False))  # without the online transform it rotates fine


@pytest.mark.parametrize("bad", [{"seed": "0"}, {"seed": True}, {"online_hadamard": 1}, {"rotate_residual": "no"}])
def test_bad_config_values_are_refused(bad):
    with pytest.raises(TypeError, match="RotateConfig"):
        RotateConfig(**bad)


def test_config_round_trips_through_dict():
    config = RotateConfig(seed=7, online_hadamard=True, rotate_residual=False)
    assert config_from_dict(config.to_dict()) == config
    assert tcompress.RotateConfig is RotateConfig
