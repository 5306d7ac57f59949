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
