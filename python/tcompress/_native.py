"""Guarded import of the compiled modules, and the capability flags derived from them.

``tcompress._C`` (CPU kernels) is always built; ``tcompress._cuda`` only when the build found a CUDA compiler.
Either may be missing (an unusual build, a broken install): the ops then fall back to their pure-torch
references, and :func:`tcompress.info` says why. ``TCOMPRESS_ISA=scalar|avx2|avx512`` forces a CPU kernel
variant at import; asking for one this build or CPU lacks is an error, never a silent downgrade: ``import tcompress``
still works (so the CLI can say so in one line, and ``tcompress.info()`` can report it), but every CPU kernel call and
:func:`get_isa` raise it until the variable is fixed.
"""

from __future__ import annotations

import importlib.util
import os
import warnings
from types import ModuleType

ISA_NAMES = ("scalar", "avx2", "avx512")

_C: ModuleType | None
_cuda: ModuleType | None

try:
    from . import _C  # type: ignore[attr-defined,no-redef]

    C_IMPORT_ERROR: str | None = None
except ImportError as exc:  # pragma: no cover - only in broken or partial installs
    _C = None
    C_IMPORT_ERROR = f"{type(exc).__name__}: {exc}"

CUDA_IMPORT_ERROR: str | None = None
if importlib.util.find_spec(f"{__package__}._cuda") is None:
    # Not an error: the build skipped it. (Importing it anyway would report a confusing "circular import".)
    _cuda = None
    CUDA_IMPORT_ERROR = "this install has no tcompress._cuda: built with TCOMPRESS_CUDA=OFF or without nvcc"
else:
    try:
        from . import _cuda  # type: ignore[attr-defined,no-redef]
    except ImportError as exc:
        _cuda = None
        CUDA_IMPORT_ERROR = f"{type(exc).__name__}: {exc}"

_warned: set = set()


def warn_once(key: str, message: str) -> None:
    """Emits ``message`` as a RuntimeWarning the first time ``key`` is seen in this process."""
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


class IsaEnvironmentError(RuntimeError):
    """``TCOMPRESS_ISA`` names a CPU kernel variant that is unknown, or that this build or CPU cannot run."""


# Why TCOMPRESS_ISA could not be honoured at import, or None (unset, or honoured).
ISA_ENVIRONMENT_ERROR: str | None = None


def check_isa_environment() -> None:
    """Raises :class:`IsaEnvironmentError` when ``TCOMPRESS_ISA`` could not be honoured at import."""
    if ISA_ENVIRONMENT_ERROR is not None:
        raise IsaEnvironmentError(ISA_ENVIRONMENT_ERROR)


def cpu_native() -> ModuleType | None:
    """The CPU extension module, or None (with a one-time warning) when it failed to import.

    Raises:
        IsaEnvironmentError: ``TCOMPRESS_ISA`` names a variant this build or CPU cannot run (never a silent
            downgrade to another variant).
    """
    check_isa_environment()
    if _C is None:
        warn_once("no-_C", f"tcompress._C is not available ({C_IMPORT_ERROR}); using the pure-torch references")
    return _C


def cuda_built() -> bool:
    """True when this install contains the CUDA extension module."""
    return _cuda is not None


def cuda_available() -> bool:
    """True when the CUDA module is built *and* a CUDA device is usable from it."""
    return _cuda is not None and _cuda.device_count() > 0


def cuda_status() -> str:
    """``"ok"``, or why the CUDA kernels cannot run (not built, no device, no driver ...)."""
    if _cuda is None:
        return f"not built ({CUDA_IMPORT_ERROR})"
    return _cuda.status()


def built_isas() -> list:
    """CPU kernel variants compiled into this build, e.g. ``["scalar", "avx2", "avx512"]``."""
    return list(_C.built_isas()) if _C is not None else []


def supported_isas() -> list:
    """CPU kernel variants this build contains *and* this CPU can run."""
    return list(_C.supported_isas()) if _C is not None else []


def get_isa() -> str | None:
    """The CPU kernel variant in use, or None when the native module is missing.

    Raises:
        IsaEnvironmentError: ``TCOMPRESS_ISA`` could not be honoured (see :func:`check_isa_environment`).
    """
    check_isa_environment()
    return _C.get_isa() if _C is not None else None


def set_isa(name: str) -> None:
    """Uses another CPU kernel variant for every later call (process-wide).

    Args:
        name: ``"scalar"``, ``"avx2"`` or ``"avx512"``.

    Raises:
        ValueError: ``name`` is not one of those.
        RuntimeError: the native module is missing, or this build/CPU cannot run that variant.
    """
    if name not in ISA_NAMES:
        raise ValueError(f"unknown instruction set {name!r}: expected one of {', '.join(ISA_NAMES)}")
    if _C is None:
        raise RuntimeError(f"cannot select ISA {name!r}: tcompress._C is not available ({C_IMPORT_ERROR})")
    _C.set_isa(name)


def _apply_isa_from_environment() -> None:
    global ISA_ENVIRONMENT_ERROR
    forced = os.environ.get("TCOMPRESS_ISA", "").strip().lower()
    if not forced:
        return
    try:
        set_isa(forced)
    except (ValueError, RuntimeError) as exc:
        ISA_ENVIRONMENT_ERROR = (
            f"TCOMPRESS_ISA={forced!r} cannot be honoured: {exc}. Unset it, or set it to one of the variants this "
            f"machine runs: {', '.join(supported_isas()) or 'none (tcompress._C is missing)'}"
        )


_apply_isa_from_environment()
