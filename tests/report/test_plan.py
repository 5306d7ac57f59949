"""tcompress report --plan: shapes from a config alone, the paper's models within their memory targets, and clear
verdicts when a step would not fit."""

from __future__ import annotations

import pytest
from tcompress.report.budgets import budget
from tcompress.report.plan import GIB, ModelShape, plan_report, plan_steps
from transformers import GPT2Config, MistralConfig

MISTRAL_7B = MistralConfig(
    hidden_size=4096,
    intermediate_size=14336,
    num_attention_heads=32,
    num_key_value_heads=8,
    num_hidden_layers=32,
    vocab_size=32000,
    max_position_embeddings=32768,
)
GPT2_XL = GPT2Config(n_embd=1600, n_layer=48, n_head=25)


@pytest.mark.parametrize("family", ["tiny_gpt2", "tiny_mistral"])
def test_shape_counts_the_parameters(family, request):
    model = request.getfixturevalue(family)
    shape = ModelShape.from_config(model.config)
    assert shape.params == pytest.approx(sum(p.numel() for p in model.parameters()), rel=0.02)


def test_real_configs_have_the_known_sizes():
    assert ModelShape.from_config(MISTRAL_7B).params == pytest.approx(7.24e9, rel=0.01)
    assert ModelShape.from_config(GPT2_XL).params == pytest.approx(1.56e9, rel=0.01)


def test_the_paper_protocol_fits_its_targets():
    """The issue's targets: Mistral-7B, full budget, bf16 on one 80 GB GPU: every step ≤ 70 GB device, ≤ 64 GB host;
    GPT-2 XL ≤ 20 GB device."""
    full = budget("full")
    mistral = plan_steps(ModelShape.from_config(MISTRAL_7B), full, dtype="bfloat16", device="cuda")
    assert {p.step for p in mistral} == {
        "baseline", "spectral", "quantization", "wall", "linearity", "substitution", "geometry", "early-exit"
    }  # fmt: skip
    assert all(p.device_bytes <= 70e9 and p.host_bytes <= 64e9 for p in mistral), [
        (p.step, p.device_bytes / 1e9, p.host_bytes / 1e9) for p in mistral
    ]
    gpt2 = plan_steps(ModelShape.from_config(GPT2_XL), full, dtype="bfloat16", device="cuda")
    assert all(p.device_bytes <= 20e9 for p in gpt2)
    # The weights alone: bf16 Mistral-7B is 14.5 GB, and every step holds at least them.
    assert all(p.device_bytes >= 7.2e9 * 2 for p in mistral)


def test_fp32_doubles_the_weights_term():
    shape = ModelShape.from_config(MISTRAL_7B)
    bf16 = plan_steps(shape, budget("quick"), dtype="bfloat16", device="cuda")[0]
    fp32 = plan_steps(shape, budget("quick"), dtype="float32", device="cuda")[0]
    assert fp32.terms["weights"] == 2 * bf16.terms["weights"]


def test_a_step_that_does_not_fit_says_why():
    plans = plan_steps(
        ModelShape.from_config(MISTRAL_7B),
        budget("full"),
        dtype="bfloat16",
        device="cuda",
        device_memory=24 * GIB,
        host_memory=16 * GIB,
    )
    by_step = {p.step: p for p in plans}
    assert by_step["baseline"].fits
    assert not by_step["spectral"].fits and "on cuda" in by_step["spectral"].why
    assert not by_step["wall"].fits and "host memory" in by_step["wall"].why and "largest term" in by_step["wall"].why


def test_a_folder_with_only_a_config_is_planned(tmp_path):
    MISTRAL_7B.save_pretrained(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]
    text, plans = plan_report(str(tmp_path), budget("full"), dtype="bfloat16", device="cuda", host_memory=64 * GIB)
    assert "mistral, 32 blocks, d 4096" in text and len(plans) == 8
    assert "would not fit" not in text


def test_bad_dtype_and_model_type_raise():
    with pytest.raises(ValueError, match="dtype must be one of"):
        plan_steps(ModelShape.from_config(GPT2_XL), budget("quick"), dtype="int8")
    with pytest.raises(ValueError, match="unsupported model type 'bert'"):
        ModelShape.from_config(type("C", (), {"model_type": "bert"})())


def test_cli_plan_prints_every_step_and_flags_what_does_not_fit(tmp_path, capsys):
    from tcompress.cli import main

    MISTRAL_7B.save_pretrained(tmp_path)
    args = ["report", str(tmp_path), "--plan", "--budget", "full", "--device", "cuda", "--dtype", "bfloat16"]
    assert main([*args, "--device-memory", "80", "--host-memory", "64"]) == 0
    out = capsys.readouterr().out
    assert all(step in out for step in ("spectral", "wall", "geometry", "early-exit")) and "NO" not in out
    assert main([*args, "--device-memory", "16", "--host-memory", "64", "--calib-windows", "16"]) == 1
    out = capsys.readouterr().out
    assert "16 x 2048 calibration tokens" in out and "spectral would not fit: needs" in out
