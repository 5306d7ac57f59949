"""A quick end-to-end check of the installed kernels: the Hadamard transform at the sizes real models use,
under every CPU kernel variant this machine supports (and on CUDA when a device is present), against the
pure-torch reference, with a rough speed comparison. Run by ``tcompress selfcheck`` (and ``tcompress`` alone).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch

from . import _native
from .ops.hadamard import hadamard_reference, hadamard_transform

# Hidden and MLP widths: GPT-2 (768, 3072), SmolLM2-135M (576, 1536), Mistral 7B (4096, 14336),
# Llama-2 7B/13B (11008, 13824), Qwen2 7B (18944).
MODEL_SIZES = (576, 768, 1536, 3072, 4096, 11008, 13824, 14336, 18944)

# Relative error bounds (max |kernel - reference| / max |reference|) per dtype.
TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}


@dataclass
class CheckResult:
    device: str
    isa: str | None
    dtype: str
    n: int
    rel_error: float
    kernel_ms: float
    reference_ms: float
    ok: bool


def _time_ms(fn: Callable[[], torch.Tensor], device: torch.device, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return best * 1e3


def _check_one(n: int, dtype: torch.dtype, device: torch.device, rows: int, isa: str | None) -> CheckResult:
    gen = torch.Generator().manual_seed(n)
    x = torch.randn(rows, n, generator=gen).to(dtype=dtype, device=device)
    want = hadamard_reference(x.float())
    got = hadamard_transform(x).float()
    err = ((got - want).abs().max() / want.abs().max()).item()
    kernel_ms = _time_ms(lambda: hadamard_transform(x), device)
    reference_ms = _time_ms(lambda: hadamard_reference(x), device, repeat=1)
    return CheckResult(
        str(device), isa, str(dtype).replace("torch.", ""), n, err, kernel_ms, reference_ms, err <= TOLERANCE[dtype]
    )


def run_selfcheck(rows: int = 256, sizes=MODEL_SIZES, log: Callable[[str], None] = print) -> list[CheckResult]:
    """Checks every (device, ISA, dtype, size); logs a table and returns the results."""
    results: list[CheckResult] = []
    if _native.cpu_native() is None:
        # The ops would fall back to the very references they are checked against: nothing would be tested.
        log(f"self-check FAILED: the native CPU module tcompress._C is not available ({_native.C_IMPORT_ERROR})")
        return [CheckResult("cpu", None, "-", 0, float("nan"), 0.0, 0.0, False)]
    original = _native.get_isa()
    targets = [(torch.device("cpu"), isa) for isa in (_native.supported_isas() or [None])]
    if _native.cuda_available() and torch.cuda.is_available():
        targets.append((torch.device("cuda"), None))
    log(f"Hadamard transform self-check: {rows} rows per size, relative error vs the pure-torch reference")
    log(f"{'device':8} {'isa':7} {'dtype':9} {'n':>6} {'rel.err':>9} {'kernel ms':>10} {'torch ms':>9} {'speedup':>8}")
    try:
        for device, isa in targets:
            if isa is not None:
                _native.set_isa(isa)
            for dtype in TOLERANCE:
                for n in sizes:
                    r = _check_one(n, dtype, device, rows, isa)
                    results.append(r)
                    log(
                        f"{r.device:8} {str(r.isa or '-'):7} {r.dtype:9} {r.n:6d} {r.rel_error:9.1e} "
                        f"{r.kernel_ms:10.3f} {r.reference_ms:9.2f} {r.reference_ms / r.kernel_ms:7.1f}x"
                        + ("" if r.ok else "   FAIL")
                    )
    finally:
        if original is not None:
            _native.set_isa(original)
    failed = [r for r in results if not r.ok]
    log(
        f"self-check: {len(results) - len(failed)}/{len(results)} passed"
        + ("" if not failed else f"; FAILED: {[asdict(r) for r in failed]}")
    )
    return results
