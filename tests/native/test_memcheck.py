"""The CPU kernels under valgrind memcheck: no access outside any allocation, ours (scratch rows, the scaled
k x k block) or the caller's. Valgrind cannot run AVX-512, so this covers the scalar and AVX2 variants; the
guard-page test in tests/ops/test_hadamard.py covers the caller's buffers under every variant."""

from __future__ import annotations

import pathlib
import shutil
import subprocess

import pytest
from tcompress import _native

HERE = pathlib.Path(__file__).parent
ISA_CODES = {"scalar": 0, "avx2": 1}


@pytest.fixture(scope="module")
def memcheck_driver(tmp_path_factory) -> pathlib.Path:
    for tool in ("cmake", "valgrind"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed")
    build = tmp_path_factory.mktemp("native")
    configure = subprocess.run(
        ["cmake", "-S", str(HERE), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release"], capture_output=True, text=True
    )
    assert configure.returncode == 0, configure.stdout + configure.stderr
    result = subprocess.run(["cmake", "--build", str(build), "-j", "2"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    return build / "hadamard_memcheck"


@pytest.mark.parametrize("isa", [name for name in ISA_CODES if name in _native.supported_isas()])
def test_no_invalid_memory_access(memcheck_driver, isa):
    result = subprocess.run(
        ["valgrind", "-q", "--error-exitcode=99", str(memcheck_driver), str(ISA_CODES[isa]), "4096"],
        capture_output=True,
        text=True,
        timeout=600,
        env={"OMP_NUM_THREADS": "2"},
    )
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    assert "0 failed" in result.stdout
