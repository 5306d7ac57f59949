"""save_compressed / load_compressed round-trip factorized models (plain and quantized factors)."""

from __future__ import annotations

import json

import pytest
import torch
from tcompress.nn import LowRankLinear, QuantLinear
from tcompress.recipes import FactorizeConfig, QuantizeConfig, compress_, load_compressed, save_compressed


def _ids(model, seed=0):
    return torch.randint(0, model.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    "family, configs",
    [
        ("tiny_gpt2", (FactorizeConfig(param_ratio=0.5),)),
        ("tiny_mistral", (FactorizeConfig(rank=8, factor_bits=4, factor_group_size=4, factor_scale_dtype="float16"),)),
        (
            "tiny_llama",
            (
                FactorizeConfig(rank=8, factor_bits=8, include=("*.mlp.*",)),
                QuantizeConfig(bits=4, group_size=4, exclude=("*.mlp.*",)),
            ),
        ),
    ],
)
def test_factorized_reload_is_bit_identical(family, configs, request, tmp_path):
    model = request.getfixturevalue(family)
    compress_(model, *configs)
    loaded = load_compressed(save_compressed(model, tmp_path / "m"))
    ids = _ids(model)
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)
    kinds = [type(m).__name__ for m in model.modules() if isinstance(m, (LowRankLinear, QuantLinear))]
    assert [type(m).__name__ for m in loaded.modules() if isinstance(m, (LowRankLinear, QuantLinear))] == kinds
    assert "LowRankLinear" in kinds
    assert loaded.tcompress_config == [c.to_dict() for c in configs]


@pytest.fixture
def saved(tiny_mistral, tmp_path):
    compress_(tiny_mistral, FactorizeConfig(rank=8))
    return save_compressed(tiny_mistral, tmp_path / "m")


def _edit_record(saved, edit):
    path = saved / "tcompress.json"
    manifest = json.loads(path.read_text())
    edit(manifest["modules"]["model.layers.0.self_attn.q_proj"])
    path.write_text(json.dumps(manifest))


def test_a_record_with_the_wrong_rank_is_a_clear_error(saved):
    def edit(record):
        record["factors"]["in_proj"]["out_features"] = 6
        record["factors"]["out_proj"]["in_features"] = 6
        record["rank"] = 6

    _edit_record(saved, edit)
    with pytest.raises(ValueError, match=r"implies .*q_proj\.in_proj\.weight of shape \(6, 64\).* holds \(8, 64\)"):
        load_compressed(saved)


def test_inconsistent_record_is_a_clear_error(saved):
    _edit_record(saved, lambda record: record.update(rank=5))
    with pytest.raises(ValueError, match="record of module 'model.layers.0.self_attn.q_proj' is invalid"):
        load_compressed(saved)


def test_unknown_factor_type_is_a_clear_error(saved):
    _edit_record(saved, lambda record: record["factors"]["in_proj"].update(type="Conv2d"))
    with pytest.raises(ValueError, match=r"factors\.in_proj\.type must be Linear or QuantLinear; got 'Conv2d'"):
        load_compressed(saved)
