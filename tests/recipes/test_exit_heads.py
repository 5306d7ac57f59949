"""Exit heads: logit lens equals the model's own readout, tuned heads start as the lens, train (KL falls), low-rank
parameter cost, save/load round trip and its errors."""

from __future__ import annotations

import json

import pytest
import torch
from model_factories import tiny_gpt2, tiny_llama, tiny_mistral
from tcompress.models import block_outputs, block_stepper
from tcompress.nn.exit_head import AffineTranslator
from tcompress.recipes.exit_heads import (
    build_exit_heads,
    head_parameter_report,
    load_exit_heads,
    save_exit_heads,
    train_exit_heads,
)

FACTORIES = [tiny_llama, tiny_mistral, tiny_gpt2]


def _deeper(factory):
    """The tiny model with 4 blocks, so there are several head depths."""
    model = factory()
    cfg = model.config
    cfg_dict = cfg.to_dict()
    key = "n_layer" if "n_layer" in cfg_dict else "num_hidden_layers"
    cfg_dict[key] = 4
    torch.manual_seed(1)
    return type(model)(type(cfg).from_dict(cfg_dict)).eval()


@pytest.mark.parametrize("factory", FACTORIES, ids=lambda f: f.__name__)
def test_logit_lens_is_the_models_own_readout(factory):
    model = factory()
    ids = torch.randint(0, 512, (2, 9))
    hidden, logits = block_outputs(model, ids)
    assert len(hidden) == 2
    stepper = block_stepper(model)
    # The final norm + head over the last block's output are the model's logits ...
    torch.testing.assert_close(stepper.logits(hidden[-1]), logits, rtol=1e-5, atol=1e-5)
    # ... and the lens at depth 1 applies exactly them to the first block's output.
    lens = build_exit_heads(model, kind="lens")
    torch.testing.assert_close(lens.logits(1, hidden[0]), stepper.logits(hidden[0]), rtol=0, atol=0)
    assert lens.parameter_count() == 0 and len(lens.state_dict()) == 0


@pytest.mark.parametrize("factory", FACTORIES, ids=lambda f: f.__name__)
def test_untrained_tuned_heads_equal_the_logit_lens(factory):
    model = _deeper(factory)
    ids = torch.randint(0, 512, (1, 7))
    hidden, _ = block_outputs(model, ids)
    lens = build_exit_heads(model, kind="lens")
    tuned = build_exit_heads(model, kind="tuned", rank=8)
    assert lens.depths == tuned.depths == (1, 2, 3)
    for k in lens.depths:
        torch.testing.assert_close(tuned.logits(k, hidden[k - 1]), lens.logits(k, hidden[k - 1]))


def test_translator_parameter_cost_full_and_low_rank():
    assert AffineTranslator(64).parameter_count() == 64 * 64 + 64
    assert AffineTranslator(64, rank=8).parameter_count() == 2 * 64 * 8 + 64
    model = _deeper(tiny_llama)
    heads = build_exit_heads(model, [1, 3], rank=4)
    report = head_parameter_report(heads, model)
    assert report["head_parameters"] == 2 * (2 * 64 * 4 + 64)
    assert 0 < report["fraction_of_model"] < 1


def test_training_lowers_kl_and_leaves_the_model_alone():
    model = _deeper(tiny_llama)
    before = {n: p.clone() for n, p in model.named_parameters()}
    heads = build_exit_heads(model, [1, 2], kind="tuned")
    windows = torch.randint(0, 512, (4, 32))
    record = train_exit_heads(heads, model, windows, steps=40, tokens_per_step=32, lr=1e-2, progress=False)
    assert record["tokens"] == 40 * 32
    for k in ("1", "2"):
        assert record["kl_last"][k] < record["kl_first"][k]
    for n, p in model.named_parameters():
        assert torch.equal(p, before[n]), n
        assert p.requires_grad
        assert p.grad is None


def test_save_load_round_trip(tmp_path):
    model = _deeper(tiny_mistral)
    heads = build_exit_heads(model, [1, 3], rank=8)
    with torch.no_grad():
        for p in heads.parameters():
            p.normal_()
    save_exit_heads(heads, tmp_path / "h", extra={"note": "test"})
    loaded = load_exit_heads(tmp_path / "h", model)
    assert loaded.config() == heads.config()
    h = torch.randn(3, 64)
    torch.testing.assert_close(loaded.logits(3, h), heads.logits(3, h), rtol=0, atol=0)
    config = json.loads((tmp_path / "h" / "exit_heads.json").read_text())
    assert config["parameters"] == heads.parameter_count() and config["extra"] == {"note": "test"}


def test_bad_inputs_are_clear_errors(tmp_path):
    model = _deeper(tiny_llama)
    with pytest.raises(ValueError, match=r"depths must lie in \[1, 3\]"):
        build_exit_heads(model, [4])
    with pytest.raises(ValueError, match="kind must be one of"):
        build_exit_heads(model, [1], kind="magic")
    with pytest.raises(ValueError, match="rank must be None or an int"):
        AffineTranslator(64, rank=65)
    with pytest.raises(ValueError, match="rank applies to tuned heads only"):
        build_exit_heads(model, [1], kind="lens", rank=4)
    with pytest.raises(ValueError, match="nothing to train"):
        train_exit_heads(build_exit_heads(model, kind="lens"), model, torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="steps must be a positive int"):
        train_exit_heads(build_exit_heads(model), model, torch.zeros(1, 4, dtype=torch.long), steps=0)
    with pytest.raises(KeyError, match="no head at depth 2"):
        build_exit_heads(model, [1]).logits(2, torch.randn(1, 64))
    with pytest.raises(FileNotFoundError, match="exit_heads.json"):
        load_exit_heads(tmp_path / "nothing", model)
    heads = build_exit_heads(model, [1, 2], rank=4)
    save_exit_heads(heads, tmp_path / "h")
    # Heads saved for a wider model do not fit.
    config = json.loads((tmp_path / "h" / "exit_heads.json").read_text())
    (tmp_path / "h" / "exit_heads.json").write_text(json.dumps({**config, "hidden_size": 128}))
    with pytest.raises(ValueError, match="hidden size 128"):
        load_exit_heads(tmp_path / "h", model)
    (tmp_path / "h" / "exit_heads.json").write_text(json.dumps({**config, "rank": 5}))
    with pytest.raises(ValueError, match="do not match the config"):
        load_exit_heads(tmp_path / "h", model)
    (tmp_path / "h" / "exit_heads.json").write_text(json.dumps({**config, "version": 99}))
    with pytest.raises(ValueError, match="version 99"):
        load_exit_heads(tmp_path / "h", model)
    (tmp_path / "h" / "exit_heads.json").write_text(json.dumps(config))
    (tmp_path / "h" / "exit_heads.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(ValueError, match="cannot read"):
        load_exit_heads(tmp_path / "h", model)


def test_heads_of_an_offloaded_model_live_on_the_execution_device():
    # accelerate's cpu_offload keeps every weight on `meta` until its hook loads it: the heads must not follow the
    # head's weight there, and the early-exit paths must run through the hooks.
    from accelerate import cpu_offload
    from tcompress.early_exit.policy import evaluate_exit_policy
    from tcompress.early_exit.runtime import EarlyExitLM

    model = _deeper(tiny_mistral)
    windows = torch.randint(0, 512, (3, 10))
    expected = evaluate_exit_policy(EarlyExitLM(model, build_exit_heads(model, [1, 2]), 0.003, [1, 2]), windows)
    assert 1 < len(expected.exit_counts) and 4 in expected.exit_counts  # some tokens exit, not all
    cpu_offload(model, execution_device=torch.device("cpu"))
    assert model.lm_head.weight.device.type == "meta"
    heads = build_exit_heads(model, [1, 2], kind="tuned")
    assert {p.device.type for p in heads.parameters()} == {"cpu"}
    runner = EarlyExitLM(model, heads, 0.003, [1, 2])
    result = evaluate_exit_policy(runner, windows)
    assert result.exit_counts == expected.exit_counts and result.ppl == pytest.approx(expected.ppl, rel=1e-6)
    assert len(runner.generate(windows[:1, :3], 4).depths) == 4
    # Training after an inference-mode pass (accelerate re-created the placeholders in it) restores requires_grad.
    train_exit_heads(heads, model, windows, steps=2, tokens_per_step=4, progress=False)
    assert all(p.requires_grad for p in model.parameters())
