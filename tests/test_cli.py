"""The ``tcompress`` command: info, selfcheck and the default job."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from tcompress import cli


def test_info_text(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("tcompress ") and "CPU kernels" in out and "CUDA kernels" in out and "torch" in out


def test_info_json(capsys):
    assert cli.main(["info", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert {"version", "isa", "isas_supported", "cuda_built", "cuda_available", "torch"} <= set(d)


def test_selfcheck_passes(capsys):
    assert cli.main(["selfcheck", "--rows", "4"]) == 0
    out = capsys.readouterr().out
    assert "self-check:" in out and "FAIL" not in out


def test_console_script_is_installed():
    exe = shutil.which("tcompress")
    if exe is None:
        pytest.skip("the tcompress console script is not on PATH (package not installed with pip)")
    result = subprocess.run([exe, "info"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "tcompress" in result.stdout


def test_module_entry_point():
    result = subprocess.run(
        [sys.executable, "-m", "tcompress.cli", "info", "--json"], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["version"]


@pytest.mark.parametrize("rows", ["0", "-1", "many"])
def test_selfcheck_rejects_bad_row_counts(rows, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["selfcheck", "--rows", rows])
    assert exc.value.code == 2
    assert "expected a positive integer" in capsys.readouterr().err


def test_unknown_command_is_a_usage_error():
    with pytest.raises(SystemExit) as exc:
        cli.main(["frobnicate"])
    assert exc.value.code == 2


def test_perplexity_command_reproduces_stories260k(stories260k_dir, capsys):
    assert cli.main(["perplexity", str(stories260k_dir), "--text", "tinystories"]) == 0
    out = capsys.readouterr().out
    assert "perplexity 3.351" in out and "3211 predicted tokens" in out


def test_quantize_command_saves_a_loadable_folder(stories260k_dir, tmp_path, capsys):
    import tcompress

    out_dir = tmp_path / "w8"
    args = ["quantize", str(stories260k_dir), "--out", str(out_dir), "--bits", "8", "--group-size", "none"]
    assert cli.main([*args, "--eval-tokens", "1024"]) == 0
    out = capsys.readouterr().out
    assert "quantized 35 projections" in out and "perplexity on" in out and "->" in out
    model, _ = tcompress.load(out_dir)
    assert model.tcompress_config[0]["bits"] == 8
    with pytest.raises(SystemExit) as exc:  # the folder exists now
        cli.main(args)
    assert exc.value.code == 2 and "overwrite" in capsys.readouterr().err


def test_quantize_command_reports_a_group_size_that_does_not_divide(stories260k_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["quantize", str(stories260k_dir), "--out", str(tmp_path / "x"), "--group-size", "48"])
    assert exc.value.code == 2
    assert "group_size 48 does not divide its in_features 64" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_generate_command_prints_the_text_and_the_decode_speed(stories260k_dir, stories260k, tmp_path, capsys):
    import re

    import tcompress

    argv = ["generate", str(stories260k_dir), "--prompt", "Once upon a time", "--max-new-tokens", "8", "--ignore-eos"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    model, tokenizer = stories260k
    ids = tokenizer("Once upon a time", return_tensors="pt").input_ids
    assert out.startswith(tokenizer.decode(tcompress.generate(model, ids, 8)[0]))
    assert re.search(r"\(as loaded, float32, \d+ threads\): prompt \d+ tokens in [0-9.]+ ms", out)
    assert re.search(r"generated 8 tokens, decode [0-9.]+ tok/s \(modules runtime: block 0's q projection is", out)
    assert cli.main([*argv, "--bits", "4", "--group-size", "none"]) == 0
    out = capsys.readouterr().out
    assert "(W4 per-channel, int8 head, float32" in out and "tok/s (native runtime)" in out
    assert cli.main([*argv, "--bits", "4", "--group-size", "none", "--runtime", "modules"]) == 0
    assert "tok/s (modules runtime: asked for)" in capsys.readouterr().out
    integer = ["--bits", "4", "--group-size", "4", "--act-bits", "8", "--act-granularity", "per_group"]
    assert cli.main([*argv, *integer]) == 0
    out = capsys.readouterr().out
    assert "(W4A8 per group g4, int8 head, float32" in out and "tok/s (native runtime)" in out
    with pytest.raises(SystemExit) as exc:
        cli.main([*argv, "--act-bits", "8"])
    assert exc.value.code == 2 and "--act-bits quantizes the inputs" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        cli.main([*argv, "--bits", "4", "--act-granularity", "per_group"])
    assert exc.value.code == 2 and "--act-granularity per_group sets the scales" in capsys.readouterr().err
    folder = tmp_path / "w8"
    quantize = ["quantize", str(stories260k_dir), "--out", str(folder), "--bits", "8", "--group-size", "none"]
    assert cli.main(quantize) == 0
    with pytest.raises(SystemExit) as exc:
        cli.main(["generate", str(folder), "--bits", "4"])
    assert exc.value.code == 2 and "is already compressed" in capsys.readouterr().err


def test_missing_model_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["perplexity", str(tmp_path / "nothing-here")])
    assert exc.value.code == 2 and capsys.readouterr().err.startswith("tcompress: error:")


def test_perplexity_command_in_bfloat16(stories260k_dir, capsys):
    import re

    assert cli.main(["perplexity", str(stories260k_dir), "--text", "tinystories", "--dtype", "bf16"]) == 0
    out = capsys.readouterr().out
    assert "(bfloat16)" in out and "3211 predicted tokens" in out
    ppl = float(re.search(r"perplexity ([0-9.]+)", out).group(1))
    assert ppl == pytest.approx(3.351, rel=0.03)  # bf16 rounding moves it a little, not a lot


@pytest.mark.parametrize("command", ["perplexity", "quantize", "report", "export", "generate"])
@pytest.mark.parametrize("given, expected", [("bfloat16", "bfloat16"), ("bf16", "bfloat16"), ("FP16", "float16")])
def test_every_loading_command_takes_a_dtype(command, given, expected):
    argv = {
        "generate": ["generate", "m"],
        "perplexity": ["perplexity", "m"],
        "quantize": ["quantize", "m", "--out", "x"],
        "report": ["report", "m"],
        "export": ["export", "x", "--format", "gguf"],
    }[command]
    parser = cli.build_parser()
    assert parser.parse_args(argv).dtype == "float32"
    assert parser.parse_args([*argv, "--dtype", given]).dtype == expected


@pytest.mark.parametrize("command", [["perplexity", "m"], ["report"], ["export", "x", "--format", "gguf"]])
def test_a_bad_dtype_is_a_usage_error(command, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main([*command, "--dtype", "fp8"])
    assert exc.value.code == 2
    assert "argument --dtype: expected float32, bfloat16 or float16 (or fp32, bf16, fp16); got 'fp8'" in (
        capsys.readouterr().err
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["perplexity", "m"],
        ["quantize", "m", "--out", "x"],
        ["export", "x", "--format", "gguf", "--model", "m"],
    ],
)
def test_the_dtype_reaches_load(argv, monkeypatch, capsys):
    import tcompress.loading

    seen = {}

    def fake_load(name, **kwargs):
        seen.update(kwargs, name=name)
        raise FileNotFoundError("stop here")

    monkeypatch.setattr(tcompress.loading, "load", fake_load)
    with pytest.raises(SystemExit) as exc:
        cli.main([*argv, "--dtype", "bf16"])
    assert exc.value.code == 2 and "stop here" in capsys.readouterr().err
    assert seen == {"name": "m", "dtype": "bfloat16"}


def test_report_passes_dtype_and_budget_overrides(monkeypatch):
    import tcompress.report

    seen = {}

    def fake_run_report(model, **kwargs):
        seen.update(kwargs)
        return {"steps": {}}

    monkeypatch.setattr(tcompress.report, "run_report", fake_run_report)
    argv = ["report", "m", "--dtype", "bf16", "--no-tf32", "--eval-tokens", "all", "--calib-windows", "8"]
    argv += ["--calib-length", "64", "--geometry-layers", "2", "--geometry-windows", "4", "--exit-windows", "3"]
    argv += ["--exit-train-steps", "5", "--speed-tokens", "0"]
    assert cli.main(argv) == 0
    assert seen["dtype"] == "bfloat16" and seen["tf32"] is False
    assert {k: seen[k] for k in ("eval_tokens", "calib_windows", "calib_length", "speed_tokens")} == {
        "eval_tokens": "all",
        "calib_windows": 8,
        "calib_length": 64,
        "speed_tokens": 0,
    }
    assert (seen["geometry_layers"], seen["geometry_windows"], seen["exit_windows"], seen["exit_train_steps"]) == (
        2,
        4,
        3,
        5,
    )
    assert cli.main(["report", "m"]) == 0  # without the flags: the budget's own sizes, fp32, TF32 allowed
    assert seen["eval_tokens"] is None and seen["calib_windows"] is None and seen["dtype"] == "float32" and seen["tf32"]


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--eval-tokens", "most", "argument --eval-tokens: expected a positive integer or 'all'; got 'most'"),
        ("--eval-tokens", "0", "argument --eval-tokens: expected a positive integer or 'all'; got '0'"),
        ("--calib-windows", "1", "argument --calib-windows: expected an integer ≥ 2; got 1"),
        ("--calib-length", "x", "argument --calib-length: expected an integer ≥ 2; got 'x'"),
        ("--geometry-windows", "1", "argument --geometry-windows: expected an integer ≥ 2; got 1"),
        ("--exit-windows", "0", "argument --exit-windows: expected a positive integer; got 0"),
        ("--speed-tokens", "-1", "argument --speed-tokens: expected an integer ≥ 0; got -1"),
    ],
)
def test_report_refuses_bad_budget_overrides(flag, value, message, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["report", "m", flag, value])
    assert exc.value.code == 2 and message in capsys.readouterr().err
