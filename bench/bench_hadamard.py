"""Hadamard transform, rows = 4096, at real model widths: tcompress vs the pure-torch FWHT, the dense matmul
x @ H, and a copy of the same bytes into a preallocated buffer (``out.copy_(x)``: clone would time page faults).

Run: ``pytest bench/bench_hadamard.py --benchmark-only`` (add ``-k cuda`` / ``-k cpu``). Each tcompress case
records in extra_info the achieved GB/s (bytes read + written / time), its speedup over the pure-torch FWHT and
its fraction of copy bandwidth, all measured in the same process.
"""

from __future__ import annotations

import pytest
import tcompress
import torch
from conftest import best_seconds, devices, timed
from tcompress.ops import hadamard_reference, hadamard_transform

ROWS = 4096
SIZES = (576, 768, 3072, 4096, 11008, 14336, 16384)
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
DENSE_MAX_N = 4096  # beyond this the O(n^2) matmul baseline takes minutes on 2 cores (and H alone is > 256 MB)


def _make(device: str, dtype: torch.dtype, n: int):
    gen = torch.Generator().manual_seed(n)
    x = torch.randn(ROWS, n, generator=gen).to(dtype=dtype, device=device)
    return x, torch.empty_like(x)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("n", SIZES)
def test_tcompress(benchmark, record, device, dtype, n):
    x, out = _make(device, DTYPES[dtype], n)
    benchmark.group = f"hadamard {device} {dtype} n={n}"
    kernel = timed(device, lambda: hadamard_transform(x, out=out))
    benchmark(kernel)
    t_kernel = benchmark.stats.stats.min
    t_copy = best_seconds(timed(device, lambda: out.copy_(x)), repeat=20)
    t_fwht = best_seconds(timed(device, lambda: hadamard_reference(x)), repeat=1, warmup=0)
    nbytes = 2 * x.numel() * x.element_size()
    record(
        benchmark,
        device=device,
        dtype=dtype,
        n=n,
        k=tcompress.hadamard.constructions.factor_size(n)[0],
        isa=tcompress.get_isa() if device == "cpu" else "cuda",
        kernel_ms=t_kernel * 1e3,
        copy_ms=t_copy * 1e3,
        torch_fwht_ms=t_fwht * 1e3,
        gb_per_s=nbytes / t_kernel / 1e9,
        copy_gb_per_s=nbytes / t_copy / 1e9,
        frac_of_copy=t_copy / t_kernel,
        speedup_vs_fwht=t_fwht / t_kernel,
    )


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("n", SIZES)
def test_copy(benchmark, device, dtype, n):
    x, out = _make(device, DTYPES[dtype], n)
    benchmark.group = f"hadamard {device} {dtype} n={n}"
    benchmark(timed(device, lambda: out.copy_(x)))
    benchmark.extra_info["gb_per_s"] = 2 * x.numel() * x.element_size() / benchmark.stats.stats.min / 1e9


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("n", SIZES)
def test_torch_fwht(benchmark, device, dtype, n):
    x, _ = _make(device, DTYPES[dtype], n)
    benchmark.group = f"hadamard {device} {dtype} n={n}"
    benchmark.pedantic(timed(device, lambda: hadamard_reference(x)), rounds=2, iterations=1)


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("n", SIZES)
def test_dense_matmul(benchmark, device, dtype, n):
    if device == "cpu" and n > DENSE_MAX_N:
        pytest.skip(f"dense {n}x{n} matmul on CPU: {2 * ROWS * n * n / 1e9:.0f} GFLOP, not run")
    x, _ = _make(device, DTYPES[dtype], n)
    h = tcompress.hadamard_matrix(n, DTYPES[dtype], normalized=True, device=device)
    benchmark.group = f"hadamard {device} {dtype} n={n}"
    benchmark.pedantic(timed(device, lambda: x @ h), rounds=3, iterations=1, warmup_rounds=1)
