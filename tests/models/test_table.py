"""tcompress.models architecture table: every family's parts on tiny random models, the Conv1D orientation,
projection names, tying, evaluation lengths, unsupported models and set_module."""

from __future__ import annotations

import pytest
import torch
from model_factories import FACTORIES, tiny_gpt2, tiny_llama, tiny_mistral
from tcompress.models import ARCHITECTURES, architecture, projection_weight, set_module
from torch import nn
from transformers import BertConfig, BertForMaskedLM, LlamaConfig, LlamaModel
from transformers.pytorch_utils import Conv1D

ROLES = {
    "gpt2": ["qkv", "o", "up", "down"],
    "llama": ["q", "k", "v", "o", "gate", "up", "down"],
    "mistral": ["q", "k", "v", "o", "gate", "up", "down"],
    "qwen2": ["q", "k", "v", "o", "gate", "up", "down"],
}


@pytest.fixture(params=sorted(FACTORIES))
def family_model(request):
    return request.param, FACTORIES[request.param]()


def test_every_family_is_in_the_table():
    assert sorted(spec.family for spec in ARCHITECTURES) == sorted(FACTORIES)


def test_parts(family_model):
    family, model = family_model
    spec = architecture(model)
    assert spec.family == family
    blocks = spec.blocks(model)
    assert isinstance(blocks, nn.ModuleList) and len(blocks) == 2
    emb = spec.embeddings(model)
    assert isinstance(emb, nn.Embedding) and emb is model.get_input_embeddings()
    assert emb.weight.shape == (512, 64)
    head = spec.head(model)
    assert isinstance(head, nn.Linear) and head is model.get_output_embeddings()
    assert head.out_features == 512
    pos = spec.position_embeddings(model)
    if family == "gpt2":
        assert pos is model.transformer.wpe and pos.weight.shape == (128, 64)
        assert isinstance(spec.final_norm(model), nn.LayerNorm)
    else:
        assert pos is None
        assert spec.final_norm(model) is model.model.norm
    norms = spec.block_norms(blocks[1])
    assert list(norms) == ["attn", "mlp"]
    assert all(n in dict(blocks[1].named_modules()).values() for n in norms.values())
    assert list(spec.projections(blocks[0])) == ROLES[family]
    for role, proj in spec.projections(blocks[0]).items():
        assert isinstance(proj, Conv1D if family == "gpt2" else nn.Linear), role


def test_iter_projections_names_match_named_modules(family_model):
    family, model = family_model
    spec = architecture(model)
    named = dict(model.named_modules())
    found = list(spec.iter_projections(model))
    assert len(found) == 2 * len(ROLES[family])
    for name, module in found:
        assert named[name] is module
    names = [name for name, _ in found]
    assert names[0] == ("transformer.h.0.attn.c_attn" if family == "gpt2" else "model.layers.0.self_attn.q_proj")
    # Only block projections: not the embeddings, not the head.
    assert all(".h." in n or ".layers." in n for n in names)
    assert spec.head(model) not in [m for _, m in found]


def test_projection_weight_is_linear_oriented_view(family_model):
    family, model = family_model
    spec = architecture(model)
    torch.manual_seed(1)
    for name, module in spec.iter_projections(model):
        w = spec.projection_weight(module)
        x = torch.randn(3, w.shape[1])
        want = module(x)
        got = x @ w.T + (module.bias if module.bias is not None else 0)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=name)
        assert w.data_ptr() == module.weight.data_ptr(), "a view, not a copy"


def test_gpt2_conv1d_orientation(tiny_gpt2):
    spec = architecture(tiny_gpt2)
    block = spec.blocks(tiny_gpt2)[0]
    proj = spec.projections(block)
    assert proj["qkv"].weight.shape == (64, 192)  # Conv1D stores (in, out)
    assert spec.projection_weight(proj["qkv"]).shape == (192, 64)
    assert spec.projection_weight(proj["up"]).shape == (256, 64)
    assert spec.projection_weight(proj["down"]).shape == (64, 256)


def test_projection_weight_rejects_other_modules():
    with pytest.raises(TypeError, match="nn.Linear or a transformers Conv1D; got Identity"):
        projection_weight(nn.Identity())


def test_is_tied():
    assert architecture(tiny_gpt2()).is_tied(tiny_gpt2())
    assert architecture(tiny_llama()).is_tied(tiny_llama())
    untied = tiny_llama(tie_word_embeddings=False)
    assert not architecture(untied).is_tied(untied)
    mistral = tiny_mistral()
    assert not architecture(mistral).is_tied(mistral)


def test_eval_length_capped_by_context(tiny_gpt2, tiny_mistral):
    assert architecture(tiny_gpt2).eval_length(tiny_gpt2) == 128
    tiny_gpt2.config.n_positions = 4096
    assert architecture(tiny_gpt2).eval_length(tiny_gpt2) == 1024
    assert architecture(tiny_mistral).eval_length(tiny_mistral) == 256
    tiny_mistral.config.max_position_embeddings = 32768
    assert architecture(tiny_mistral).eval_length(tiny_mistral) == 2048


def test_unsupported_architecture_names_model_and_families():
    bert = BertForMaskedLM(
        BertConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    )
    with pytest.raises(ValueError, match=r"BertForMaskedLM \(model_type 'bert'\).*gpt2 \(GPT2LMHeadModel\).*mistral"):
        architecture(bert)
    with pytest.raises(ValueError, match=r"unsupported architecture: Linear \(model_type None\)"):
        architecture(nn.Linear(2, 2))


def test_bare_backbone_is_rejected():
    config = LlamaConfig(
        vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2
    )
    with pytest.raises(ValueError, match="LlamaModel .* no 'model.layers'.* LlamaForCausalLM"):
        architecture(LlamaModel(config))


def test_set_module(tiny_mistral):
    name = "model.layers.1.mlp.down_proj"
    old = dict(tiny_mistral.named_modules())[name]
    new = nn.Linear(172, 64, bias=False)
    assert set_module(tiny_mistral, name, new) is old
    assert dict(tiny_mistral.named_modules())[name] is new
    assert architecture(tiny_mistral).projections(tiny_mistral.model.layers[1])["down"] is new
    # A whole block, addressed through the ModuleList index.
    block = nn.Identity()
    set_module(tiny_mistral, "model.layers.0", block)
    assert tiny_mistral.model.layers[0] is block


def test_set_module_errors(tiny_gpt2):
    before = dict(tiny_gpt2.named_modules())
    with pytest.raises(AttributeError, match="GPT2LMHeadModel has no submodule 'transformer.h.0.attn.nope'"):
        set_module(tiny_gpt2, "transformer.h.0.attn.nope", nn.Identity())
    with pytest.raises(AttributeError, match="no submodule 'transformer.h.7.attn'"):
        set_module(tiny_gpt2, "transformer.h.7.attn", nn.Identity())
    with pytest.raises(TypeError, match="got Tensor"):
        set_module(tiny_gpt2, "transformer.h.0.attn.c_attn", torch.zeros(2))
    with pytest.raises(ValueError, match="model itself"):
        set_module(tiny_gpt2, "", nn.Identity())
    assert dict(tiny_gpt2.named_modules()) == before
