"""What this install is and can do: version, CPU kernel variant, CUDA status, torch version."""

from __future__ import annotations

import platform
from typing import Any

import torch

from . import _native

# The CPU features worth showing (all of them are in info()["cpu_features"]).
_SHOWN_FEATURES = (
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "avx_vnni",
    "amx_int8",
    "amx_bf16",
)


def info() -> dict[str, Any]:
    """A JSON-serializable description of this install and machine."""
    from . import __version__

    c = _native._C
    d: dict[str, Any] = {
        "version": __version__,
        "native_cpu": c is not None,
        "native_cpu_error": _native.C_IMPORT_ERROR,
        "isa": None if _native.ISA_ENVIRONMENT_ERROR else _native.get_isa(),
        "isa_error": _native.ISA_ENVIRONMENT_ERROR,
        "isa_best": c.best_isa() if c is not None else None,
        "isas_built": _native.built_isas(),
        "isas_supported": _native.supported_isas(),
        "cpu_features": dict(c.cpu_features()) if c is not None else {},
        "openmp_threads": c.max_threads() if c is not None else None,
        "torch_threads": torch.get_num_threads(),
        "cuda_built": _native.cuda_built(),
        "cuda_available": _native.cuda_available(),
        "cuda_status": _native.cuda_status(),
        "cuda_runtime_version": _native._cuda.runtime_version() if _native._cuda is not None else None,
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu": platform.processor() or platform.machine(),
    }
    if torch.cuda.is_available():
        d["cuda_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return d


def format_info(d: dict[str, Any]) -> str:
    """The human-readable form of :func:`info`'s dictionary."""
    features = [f for f in _SHOWN_FEATURES if d["cpu_features"].get(f)]
    runtime = d["cuda_runtime_version"]
    lines = [
        f"tcompress {d['version']}",
        f"  CPU kernels   : {d['isa'] or 'unavailable (' + str(d.get('isa_error') or d['native_cpu_error']) + ')'}"
        + (f" (best supported: {d['isa_best']})" if d["isa_best"] and d["isa_best"] != d["isa"] else ""),
        f"  ISAs built    : {', '.join(d['isas_built']) or '-'}; "
        f"supported here: {', '.join(d['isas_supported']) or '-'}",
        f"  CPU features  : {', '.join(features) or 'none of interest'}",
        f"  threads       : {d['openmp_threads']} (OpenMP), {d['torch_threads']} (torch)",
        f"  CUDA kernels  : {'built' if d['cuda_built'] else 'not built'}"
        + (f" for runtime {runtime // 1000}.{runtime % 1000 // 10}" if runtime else "")
        + f"; device: {'yes' if d['cuda_available'] else 'no'} ({d['cuda_status']})",
        f"  torch         : {d['torch']} (CUDA {d['torch_cuda'] or 'none'}), Python {d['python']}, {d['machine']}",
    ]
    for i, name in enumerate(d.get("cuda_devices", [])):
        lines.append(f"  cuda:{i}        : {name}")
    return "\n".join(lines)
