"""Benchmark helpers: a plain min-of-N timer for baselines measured inside a benchmark, and a Markdown summary
of every benchmark's extra_info printed at the end of the run (what bench/README.md records)."""

from __future__ import annotations

import time
from typing import Callable

import pytest
import tcompress
import torch

ROWS: list[dict] = []


def best_seconds(fn: Callable[[], object], repeat: int = 5, warmup: int = 1) -> float:
    """Minimum wall time of ``fn`` over ``repeat`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def kernel_seconds(benchmark, fn: Callable[[], object], rounds: int) -> float:
    """Times ``fn`` with pytest-benchmark and returns the minimum (one call timed here when benchmarks are off, so a
    ``--benchmark-disable`` smoke run still computes every ratio)."""
    benchmark.pedantic(fn, rounds=rounds, warmup_rounds=2)
    if benchmark.stats is None:
        return best_seconds(fn, repeat=1, warmup=0)
    return benchmark.stats.stats.min


def devices() -> list[str]:
    """The devices to benchmark on: CPU, and CUDA when the tcompress kernels can run there."""
    found = ["cpu"]
    if tcompress.cuda_available() and torch.cuda.is_available():
        found.append("cuda")
    return found


def sync(device: str) -> None:
    """Waits for queued CUDA work, so a timer around a launch measures the kernel."""
    if device == "cuda":
        torch.cuda.synchronize()


def timed(device: str, fn: Callable[[], object]) -> Callable[[], None]:
    """``fn`` followed by a device synchronisation: what a benchmark should time."""

    def run():
        fn()
        sync(device)

    return run


@pytest.fixture
def record():
    """record(benchmark, **fields): stores fields in extra_info and in the end-of-run table."""

    def _record(benchmark, **fields):
        benchmark.extra_info.update(fields)
        ROWS.append(dict(fields))

    return _record


def pytest_terminal_summary(terminalreporter):
    if not ROWS:
        return
    d = tcompress.info()
    terminalreporter.write_sep("=", "tcompress benchmark summary (Markdown)")
    terminalreporter.write_line(
        f"machine: {d['cpu']}, {torch.get_num_threads()} threads, ISA {d['isa']}, torch {d['torch']}"
    )
    keys: list[str] = []
    for row in ROWS:
        keys += [k for k in row if k not in keys]
    terminalreporter.write_line("| " + " | ".join(keys) + " |")
    terminalreporter.write_line("|" + "---|" * len(keys))
    for row in ROWS:
        cells = []
        for k in keys:
            v = row.get(k, "")
            cells.append(f"{v:.3g}" if isinstance(v, float) else str(v))
        terminalreporter.write_line("| " + " | ".join(cells) + " |")
