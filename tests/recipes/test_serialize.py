"""save_compressed / load_compressed: bit-identical reloads, and clear errors for damaged folders."""

from __future__ import annotations

import json

import pytest
import torch
from tcompress.nn import QuantLinear
from tcompress.recipes import QuantizeConfig, compress_, load_compressed, read_manifest, save_compressed
from tcompress.recipes import serialize as serialize_module


def _ids(model, seed=0):
    return torch.randint(0, model.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    "family, config",
    [
        ("tiny_gpt2", QuantizeConfig(bits=4, group_size=32, symmetric=False)),
        ("tiny_mistral", QuantizeConfig(bits=8, group_size=None, scale_dtype="bfloat16")),
        ("tiny_llama", QuantizeConfig(bits=4, group_size=None, quantize_head=True)),
        ("tiny_llama", QuantizeConfig(bits=4, group_size=4, act_bits=8, act_granularity="per_group")),
    ],
)
def test_reload_is_bit_identical(family, config, request, tmp_path):
    model = request.getfixturevalue(family)
    compress_(model, config)
    path = save_compressed(model, tmp_path / "m")
    loaded = load_compressed(path)
    ids = _ids(model)
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)
    assert loaded.tcompress_config == [config.to_dict()]
    assert sum(isinstance(m, QuantLinear) for m in loaded.modules()) == sum(
        isinstance(m, QuantLinear) for m in model.modules()
    )
    manifest = read_manifest(path)
    assert manifest["recipe"] == [config.to_dict()]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temporary folder left behind


def test_uncompressed_model_round_trips(tiny_gpt2, tmp_path):
    save_compressed(tiny_gpt2, tmp_path / "m")
    loaded = load_compressed(tmp_path / "m")
    with torch.no_grad():
        assert torch.equal(loaded(_ids(tiny_gpt2)).logits, tiny_gpt2(_ids(tiny_gpt2)).logits)


@pytest.fixture
def saved(tiny_mistral, tmp_path):
    compress_(tiny_mistral, QuantizeConfig(bits=4, group_size=4))  # 4 divides 64 and the MLP width 172
    return save_compressed(tiny_mistral, tmp_path / "m")


def test_truncated_weights(saved):
    f = saved / "model.safetensors"
    f.write_bytes(f.read_bytes()[:-100])
    with pytest.raises(ValueError, match="truncated"):
        load_compressed(saved)


def test_tampered_weights(saved):
    f = saved / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[-10] ^= 0xFF
    f.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="SHA-256"):
        load_compressed(saved)


def test_module_record_that_does_not_match_the_tensors(saved):
    path = saved / "tcompress.json"
    manifest = json.loads(path.read_text())
    name = next(iter(manifest["modules"]))
    manifest["modules"][name]["spec"]["bits"] = 8  # int8 would need twice the packed bytes
    path.write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=rf"implies {name}\.qweight of shape \(64, 64\).* holds \(64, 32\)"):
        load_compressed(saved)


def test_not_a_saved_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="has no tcompress.json"):
        load_compressed(tmp_path)


def test_malformed_manifest(saved):
    (saved / "tcompress.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid UTF-8 JSON"):
        load_compressed(saved)


def test_existing_folder_needs_overwrite(tiny_mistral, saved):
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_compressed(tiny_mistral, saved)
    save_compressed(tiny_mistral, saved, overwrite=True)
    assert load_compressed(saved) is not None


def test_failed_save_leaves_nothing(tiny_mistral, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(serialize_module, "_sha256", broken)
    with pytest.raises(OSError, match="disk full"):
        save_compressed(tiny_mistral, tmp_path / "m")
    assert list(tmp_path.iterdir()) == []


def test_tcompress_load_reads_a_saved_folder_with_its_tokenizer(stories260k, tmp_path):
    import tcompress

    model, tokenizer = stories260k
    compress_(model, QuantizeConfig(bits=8, group_size=None))
    save_compressed(model, tmp_path / "s", tokenizer=tokenizer)
    loaded, loaded_tokenizer = tcompress.load(tmp_path / "s")
    ids = torch.tensor([tokenizer("Once upon a time").input_ids])
    assert loaded_tokenizer("Once upon a time").input_ids == ids[0].tolist()
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)
    assert isinstance(loaded.model.layers[0].mlp.down_proj, QuantLinear)


def test_the_checkpoint_loader_points_at_tcompress_load_for_a_saved_folder(tiny_mistral, tmp_path):
    # models.load knows checkpoints only (models/ sits below recipes/): it refuses a compressed folder by name.
    from tcompress import models

    save_compressed(compress_(tiny_mistral, QuantizeConfig(bits=8, group_size=None)), tmp_path / "s")
    with pytest.raises(ValueError, match=r"save_compressed.*tcompress\.load"):
        models.load(tmp_path / "s")


def test_bf16_model_round_trips_with_its_dtypes(tiny_gpt2, tmp_path):
    model = tiny_gpt2.to(torch.bfloat16)
    compress_(model, QuantizeConfig(bits=4, group_size=None))
    loaded = load_compressed(save_compressed(model, tmp_path / "m"))
    want = {k: v.dtype for k, v in model.state_dict().items()}
    assert {k: v.dtype for k, v in loaded.state_dict().items()} == want
    with torch.no_grad():
        assert torch.equal(loaded(_ids(model)).logits, model(_ids(model)).logits)


def test_manifest_without_checksums(saved):
    path = saved / "tcompress.json"
    manifest = json.loads(path.read_text())
    del manifest["files"]
    path.write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="records no size and checksum"):
        load_compressed(saved)


def test_per_group_activations_survive_a_reload(tiny_llama, tmp_path):
    compress_(tiny_llama, QuantizeConfig(bits=4, group_size=4, act_bits=8, act_granularity="per_group"))
    loaded = load_compressed(save_compressed(tiny_llama, tmp_path / "m"))
    layers = [m for m in loaded.modules() if isinstance(m, QuantLinear)]
    assert layers and all(m.act_granularity == "per_group" and m.act_bits == 8 for m in layers)


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        (dict(act_granularity="per_row", act_bits=8), "act_granularity must be 'per_token' .* or 'per_group'"),
        (dict(act_granularity="per_group"), "act_granularity 'per_group' needs integer activations"),
    ],
)
def test_bad_activation_granularity_is_a_clear_error(fields, match):
    with pytest.raises(ValueError, match=f"QuantizeConfig: {match}"):
        QuantizeConfig(bits=4, group_size=32, **fields)
