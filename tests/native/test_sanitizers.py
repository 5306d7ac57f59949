"""Every CPU kernel family under AddressSanitizer + UndefinedBehaviorSanitizer (tests/native/sanitize_kernels.cpp):
hadamard, quantize/pack/unpack/dequantize, qlinear, qlinear_a8, linear_block and exit_gate, on every ISA variant this
CPU runs, with exact-size unaligned buffers, vector tails, odd rows, long strides, the GEMV and GEMM paths and 1 and 2
threads. Any out-of-bounds access or undefined behaviour aborts the driver with the sanitizer's report.

Building the kernels with the sanitizers takes a few minutes on 2 cores (``TCOMPRESS_SKIP_SANITIZERS=1`` skips it in
a local run; CI never sets it); the driver itself runs in under a minute.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import pytest
from tcompress import _native

HERE = pathlib.Path(__file__).parent
ISA_CODES = {"scalar": 0, "avx2": 1, "avx512": 2}


@pytest.fixture(scope="module")
def sanitized_driver(tmp_path_factory) -> pathlib.Path:
    if os.environ.get("TCOMPRESS_SKIP_SANITIZERS"):
        pytest.skip("TCOMPRESS_SKIP_SANITIZERS is set")
    if shutil.which("cmake") is None:
        pytest.skip("cmake is not installed")
    build = tmp_path_factory.mktemp("asan")
    configure = subprocess.run(
        ["cmake", "-S", str(HERE), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release", "-DTC_SANITIZE=ON"],
        capture_output=True,
        text=True,
    )
    assert configure.returncode == 0, configure.stdout + configure.stderr
    result = subprocess.run(
        ["cmake", "--build", str(build), "-j", "2", "--target", "sanitize_kernels"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return build / "sanitize_kernels"


def test_every_kernel_family_is_clean_under_asan_and_ubsan(sanitized_driver):
    isas = [str(ISA_CODES[name]) for name in _native.supported_isas() if name in ISA_CODES]
    env = {**os.environ, "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0", "UBSAN_OPTIONS": "print_stacktrace=1"}
    result = subprocess.run([str(sanitized_driver), *isas], capture_output=True, text=True, timeout=1800, env=env)
    report = result.stdout[-4000:] + result.stderr[-8000:]
    assert result.returncode == 0, report
    assert "ERROR: AddressSanitizer" not in result.stderr and "runtime error" not in result.stderr, report
    assert result.stdout.strip().endswith(" 0 failed"), report
    for name in _native.supported_isas():
        assert f"ISA {name}: " in result.stdout  # every variant this CPU runs was exercised
