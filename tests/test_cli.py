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


def test_missing_model_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["perplexity", str(tmp_path / "nothing-here")])
    assert exc.value.code == 2 and capsys.readouterr().err.startswith("tcompress: error:")
