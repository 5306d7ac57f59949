"""A quick end-to-end check of the installed kernels at the sizes real models use, under every CPU kernel variant
this machine supports (and on CUDA when a device is present), against the pure-torch references, with a rough speed
comparison: the Hadamard transform, and the packed int4/int8 matmul (decode and prefill). Run by
``tcompress selfcheck`` (and ``tcompress`` alone).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch

from . import _native
from .ops.hadamard import hadamard_reference, hadamard_transform
from .ops.qlinear import qlinear, qlinear_reference
from .ops.quantize import pack_int4, quantize

# Hidden and MLP widths: GPT-2 (768, 3072), SmolLM2-135M (576, 1536), Mistral 7B (4096, 14336),
# Llama-2 7B/13B (11008, 13824), Qwen2 7B (18944).
MODEL_SIZES = (576, 768, 1536, 3072, 4096, 11008, 13824, 14336, 18944)

# Relative error bounds (max |kernel - reference| / max |reference|) per dtype.
TOLERANCE = {torch.float32: 1e-5, torch.float16: 2e-3, torch.bfloat16: 1e-2}

# Projections (in -> out): SmolLM2-135M and GPT-2 MLPs; Mistral 7B's up-projection (decode only: the reference is slow).
QLINEAR_SHAPES = ((576, 1536), (1536, 576), (768, 3072), (3072, 768))
QLINEAR_LARGE = (4096, 14336)
# (label, bits, group_size, symmetric)
QLINEAR_FORMATS = (("int4 g64", 4, 64, True), ("int8 asym", 8, None, False))
# A matmul sums thousands of products in another order than the reference: looser than an exact transform.
QLINEAR_TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 1e-2}


@dataclass
class CheckResult:
    kernel: str
    device: str
    isa: str | None
    dtype: str
    shape: str
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
        "hadamard",
        str(device),
        isa,
        str(dtype).replace("torch.", ""),
        f"{rows}x{n}",
        err,
        kernel_ms,
        reference_ms,
        err <= TOLERANCE[dtype],
    )


def _packed_weights(k: int, n: int, bits: int, group_size: int | None, symmetric: bool, device: torch.device):
    gen = torch.Generator().manual_seed(k * 7 + n)
    w = (torch.randn(n, k, generator=gen) * 0.02).to(device)
    q = quantize(w, bits, group_size, symmetric)
    return (pack_int4(q.codes) if bits == 4 else q.codes), q.scales, q.zeros


def _check_qlinear(
    label: str, m: int, packed, k: int, bits: int, group_size, dtype: torch.dtype, device: torch.device, isa
) -> CheckResult:
    qweight, scales, zeros = packed
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(m + k)).to(dtype=dtype, device=device)
    want = qlinear_reference(x.float(), qweight, scales, zeros, bits, group_size)
    got = qlinear(x, qweight, scales, zeros, bits, group_size).float()
    err = ((got - want).abs().max() / want.abs().max()).item()
    kernel_ms = _time_ms(lambda: qlinear(x, qweight, scales, zeros, bits, group_size), device)
    reference_ms = _time_ms(lambda: qlinear_reference(x, qweight, scales, zeros, bits, group_size), device, repeat=1)
    return CheckResult(
        f"qlinear {label}",
        str(device),
        isa,
        str(dtype).replace("torch.", ""),
        f"{m}x{k}->{qweight.shape[0]}",
        err,
        kernel_ms,
        reference_ms,
        err <= QLINEAR_TOLERANCE[dtype],
    )


def _qlinear_checks(device: torch.device, isa, rows: int):
    """Yields the packed-matmul checks for one (device, ISA): decode (M = 1) and prefill (M = rows) paths."""
    for label, bits, group_size, symmetric in QLINEAR_FORMATS:
        for k, n in QLINEAR_SHAPES:
            packed = _packed_weights(k, n, bits, group_size, symmetric, device)
            for dtype in QLINEAR_TOLERANCE:
                for m in sorted({1, rows}):
                    yield _check_qlinear(label, m, packed, k, bits, group_size, dtype, device, isa)
    k, n = QLINEAR_LARGE
    packed = _packed_weights(k, n, 4, 64, True, device)
    yield _check_qlinear("int4 g64", 1, packed, k, 4, 64, torch.float32, device, isa)


def run_selfcheck(rows: int = 256, sizes=MODEL_SIZES, log: Callable[[str], None] = print) -> list[CheckResult]:
    """Checks every (device, ISA, dtype, size); logs a table and returns the results."""
    results: list[CheckResult] = []
    if _native.cpu_native() is None:
        # The ops would fall back to the very references they are checked against: nothing would be tested.
        log(f"self-check FAILED: the native CPU module tcompress._C is not available ({_native.C_IMPORT_ERROR})")
        return [CheckResult("-", "cpu", None, "-", "-", float("nan"), 0.0, 0.0, False)]
    original = _native.get_isa()
    targets = [(torch.device("cpu"), isa) for isa in (_native.supported_isas() or [None])]
    if _native.cuda_available() and torch.cuda.is_available():
        targets.append((torch.device("cuda"), None))
    log(
        f"Self-check of the native kernels against their pure-torch references ({rows} rows; relative error = "
        "max |kernel - reference| / max |reference|)"
    )
    log(
        f"{'kernel':17} {'device':6} {'isa':7} {'dtype':9} {'shape':>17} {'rel.err':>9} {'kernel ms':>10} "
        f"{'torch ms':>9} {'speedup':>8}"
    )

    def report(r: CheckResult) -> None:
        results.append(r)
        log(
            f"{r.kernel:17} {r.device:6} {str(r.isa or '-'):7} {r.dtype:9} {r.shape:>17} {r.rel_error:9.1e} "
            f"{r.kernel_ms:10.3f} {r.reference_ms:9.2f} {r.reference_ms / r.kernel_ms:7.1f}x"
            + ("" if r.ok else "   FAIL")
        )

    try:
        for device, isa in targets:
            if isa is not None:
                _native.set_isa(isa)
            for dtype in TOLERANCE:
                for n in sizes:
                    report(_check_one(n, dtype, device, rows, isa))
            for r in _qlinear_checks(device, isa, rows):
                report(r)
    finally:
        if original is not None:
            _native.set_isa(original)
    failed = [r for r in results if not r.ok]
    log(
        f"self-check: {len(results) - len(failed)}/{len(results)} passed"
        + ("" if not failed else f"; FAILED: {[asdict(r) for r in failed]}")
    )
    return results
