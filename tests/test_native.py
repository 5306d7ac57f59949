"""The compiled modules, capability flags and CPU kernel-variant selection (TCOMPRESS_ISA)."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest
import tcompress
from tcompress import _native


def run_python(code: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if k != "TCOMPRESS_ISA"}
    full_env.update(env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env, timeout=120)


def test_cpu_module_is_built_with_the_scalar_variant():
    assert _native._C is not None, _native.C_IMPORT_ERROR
    assert "scalar" in _native.built_isas() and "scalar" in _native.supported_isas()
    assert _native._C.best_isa() == _native.supported_isas()[-1]


def test_cuda_module_reports_its_state_without_failing():
    status = _native.cuda_status()
    assert isinstance(status, str) and status
    if _native.cuda_built() and not _native.cuda_available():
        assert "no CUDA device" in status or "driver" in status.lower()
    assert tcompress.cuda_available() == _native.cuda_available()


@pytest.mark.parametrize("name", _native.supported_isas())
def test_forcing_a_supported_isa_through_the_environment(name):
    result = run_python("import tcompress; print(tcompress.get_isa())", TCOMPRESS_ISA=name)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == name


# Import works with a bad TCOMPRESS_ISA (so the CLI and info() can report it); every kernel call raises it.
_KERNEL_CALL = "import tcompress, torch; tcompress.ops.hadamard_transform(torch.randn(2, 8))"


def test_forcing_an_unknown_isa_is_a_clear_error():
    result = run_python(_KERNEL_CALL, TCOMPRESS_ISA="sse9")
    assert result.returncode != 0
    assert "IsaEnvironmentError" in result.stderr
    assert "TCOMPRESS_ISA='sse9'" in result.stderr and "scalar, avx2, avx512" in result.stderr
    reported = run_python("import tcompress; print(tcompress.info()['isa_error'])", TCOMPRESS_ISA="sse9")
    assert reported.returncode == 0 and "TCOMPRESS_ISA='sse9'" in reported.stdout


def test_forcing_an_unsupported_isa_is_a_clear_error():
    missing = [name for name in _native.ISA_NAMES if name not in _native.supported_isas()]
    if not missing:
        pytest.skip("this machine supports every variant; the unknown-name case is tested above")
    result = run_python(_KERNEL_CALL, TCOMPRESS_ISA=missing[0])
    assert result.returncode != 0 and "is not available" in result.stderr
    # Never a silent downgrade: asking which variant runs raises too.
    asked = run_python("import tcompress; tcompress.get_isa()", TCOMPRESS_ISA=missing[0])
    assert asked.returncode != 0 and "is not available" in asked.stderr


@pytest.mark.parametrize("command", [["info"], ["perplexity", "stories260k"]])
def test_the_cli_reports_a_bad_isa_in_one_line(command):
    code = f"import sys; from tcompress.cli import main; sys.exit(main({command!r}))"
    result = run_python(code, TCOMPRESS_ISA="sse9")
    assert result.returncode == 2
    assert result.stderr.startswith("tcompress: error: TCOMPRESS_ISA='sse9' cannot be honoured")
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_set_isa_rejects_bad_names_and_keeps_the_current_one():
    before = tcompress.get_isa()
    with pytest.raises(ValueError, match="expected one of scalar, avx2, avx512"):
        tcompress.set_isa("neon")
    assert tcompress.get_isa() == before


def test_info_describes_the_install():
    d = tcompress.info()
    assert d["version"] == tcompress.__version__
    assert d["isa"] in d["isas_supported"]
    assert set(d["isas_supported"]) <= set(d["isas_built"])
    assert isinstance(d["cuda_built"], bool) and isinstance(d["cuda_available"], bool)
    assert d["torch"]


def test_an_install_without_the_cuda_module_says_why_and_still_works(tmp_path):
    # What a TCOMPRESS_CUDA=OFF build (or one on a machine without nvcc) installs: everything but _cuda.
    package = pathlib.Path(tcompress.__file__).parent
    shutil.copytree(package, tmp_path / "tcompress", ignore=shutil.ignore_patterns("_cuda*", "__pycache__"))
    code = (
        "import torch, tcompress\n"
        "from tcompress.ops import hadamard_transform\n"
        "d = tcompress.info()\n"
        "assert not d['cuda_built'] and not tcompress.cuda_available(), d\n"
        "print(d['cuda_status'])\n"
        "print(tuple(hadamard_transform(torch.randn(2, 768)).shape))\n"
    )
    result = run_python(code, PYTHONPATH=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "built with TCOMPRESS_CUDA=OFF or without nvcc" in result.stdout
    assert "(2, 768)" in result.stdout


def test_selfcheck_fails_without_the_native_cpu_module(tmp_path):
    # Without _C the ops fall back to the references the self-check compares against: that must not pass.
    package = pathlib.Path(tcompress.__file__).parent
    shutil.copytree(package, tmp_path / "tcompress", ignore=shutil.ignore_patterns("_C.*", "__pycache__"))
    result = run_python(
        "import sys, tcompress.cli; sys.exit(tcompress.cli.main(['selfcheck', '--rows', '2']))",
        PYTHONPATH=str(tmp_path),
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "tcompress._C is not available" in result.stdout
