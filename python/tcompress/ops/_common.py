"""Checks and layout helpers shared by every op: what Python verifies before native code sees a pointer.

Messages always name the op, the argument, what was expected and what was given.
"""

from __future__ import annotations

import torch

from .. import _native

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

# Element-type codes of csrc/include/tcompress/status.h (tc_dtype).
_DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}


def dtype_code(dtype: torch.dtype) -> int:
    """The native element-type code of a floating dtype (fp32 0, fp16 1, bf16 2)."""
    return _DTYPE_CODES[dtype]


def check_float(op: str, name: str, t: torch.Tensor) -> None:
    """Raises TypeError unless ``t`` is a float32/float16/bfloat16 tensor."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor; got {type(t).__name__}")
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{op}: {name} must have dtype float32, float16 or bfloat16; got {t.dtype}")


def check_at_least_1d(op: str, name: str, t: torch.Tensor) -> None:
    """Raises ValueError for a 0-d tensor (the ops work along the last dimension)."""
    if t.dim() == 0:
        raise ValueError(f"{op}: {name} must have at least one dimension (..., n); got a 0-d tensor")


def check_like(op: str, name: str, t: torch.Tensor, ref_name: str, ref: torch.Tensor) -> None:
    """Raises unless ``t`` has the same shape, dtype and device as ``ref`` (the rules for ``out=``)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{op}: {name} must be a torch.Tensor; got {type(t).__name__}")
    if t.device != ref.device:
        raise ValueError(f"{op}: {name} must be on {ref_name}'s device {ref.device}; got {t.device}")
    if t.dtype != ref.dtype:
        raise TypeError(f"{op}: {name} must have {ref_name}'s dtype {ref.dtype}; got {t.dtype}")
    if t.shape != ref.shape:
        raise ValueError(f"{op}: {name} must have {ref_name}'s shape {tuple(ref.shape)}; got {tuple(t.shape)}")


def check_finite_scale(op: str, scale: float) -> float:
    """Returns ``scale`` as a Python float, or raises ValueError unless it is a finite float32 value."""
    value = float(scale)
    if not abs(value) <= torch.finfo(torch.float32).max:  # also catches NaN
        raise ValueError(f"{op}: scale must be a finite number within float32 range (|scale| <= 3.4e38); got {scale!r}")
    return value


def row_layout(t: torch.Tensor) -> tuple[int, int] | None:
    """``(rows, row_stride)`` when ``t`` (..., n) is a set of rows with unit inner stride and one row stride.

    That is the layout the native kernels take without a copy: a contiguous tensor, or a slice of rows out of
    a wider buffer. Returns None for anything else (transposed, expanded, or rows that would overlap).
    """
    n = t.shape[-1]
    rows = t.numel() // n if n else 0
    if n > 1 and t.stride(-1) != 1:
        return None  # a column of a matrix, an expanded scalar ...: the kernel reads n contiguous elements
    if rows <= 1:
        return rows, n
    # Collapse the leading dimensions into one: each stride must be the next one times its size.
    stride = None
    for size, st in reversed(list(zip(t.shape[:-1], t.stride()[:-1]))):
        if size == 1:
            continue
        if stride is None:
            stride, expected = st, st * size
        elif st != expected:
            return None
        else:
            expected = st * size
    if stride is None or stride < n:
        return None
    return rows, stride


def rows_of(t: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    """t (..., n) -> (tensor to pass, rows, row stride): t itself when its rows share one stride, else a contiguous
    copy."""
    layout = row_layout(t)
    if layout is None:
        t = t.contiguous()
        layout = (t.numel() // t.shape[-1], t.shape[-1])
    return t, layout[0], layout[1]


def elements_overlap(t: torch.Tensor) -> bool:
    """True unless every element of ``t`` provably has its own memory.

    Dimensions sorted by stride, each stride must step over everything the smaller ones span: ``stride_i >
    Σ_{j<i} (size_j - 1)·stride_j``. That holds for every contiguous tensor, slice, transpose and permutation; a
    stride-0 (expanded) dimension or rows closer than their length fail it, and so would an exotic interleaving that
    happens not to overlap (refused too: safe, never wrong).
    """
    reach = 0
    for stride, size in sorted((st, s) for s, st in zip(t.shape, t.stride()) if s > 1):
        if stride <= reach:
            return True
        reach += (size - 1) * stride
    return False


def check_writable(op: str, name: str, t: torch.Tensor) -> None:
    """Raises ValueError when elements of ``t`` may share memory (an expanded dimension, overlapping rows): a
    kernel writing into it would give undefined contents."""
    for dim, (size, stride) in enumerate(zip(t.shape, t.stride())):
        if size > 1 and stride == 0:
            raise ValueError(
                f"{op}: {name} cannot be written: its dimension {dim} (size {size}) has stride 0, so its elements "
                f"share memory (an expanded tensor); got shape {tuple(t.shape)}, strides {tuple(t.stride())}. "
                "Pass a tensor with its own memory (e.g. .clone())"
            )
    if elements_overlap(t):
        raise ValueError(
            f"{op}: {name} cannot be written: its elements overlap in memory (e.g. rows closer together than their "
            f"length); got shape {tuple(t.shape)}, strides {tuple(t.stride())}. Pass a tensor with its own memory "
            "(e.g. .clone())"
        )


def same_memory(a: torch.Tensor, b: torch.Tensor) -> bool:
    """True when ``a`` and ``b`` are views of exactly the same elements in the same layout."""
    return a.data_ptr() == b.data_ptr() and a.shape == b.shape and a.stride() == b.stride()


def byte_span(t: torch.Tensor) -> tuple[int, int]:
    """Half-open byte range [first, last) of the memory a tensor with non-negative strides can touch."""
    first = t.data_ptr()
    last = first + (sum((s - 1) * st for s, st in zip(t.shape, t.stride())) + 1) * t.element_size()
    return first, last


def overlaps(a: torch.Tensor, b: torch.Tensor) -> bool:
    """True when the memory spans of ``a`` and ``b`` intersect (a conservative test)."""
    if a.numel() == 0 or b.numel() == 0 or a.device != b.device:
        return False
    a0, a1 = byte_span(a)
    b0, b1 = byte_span(b)
    return a0 < b1 and b0 < a1


def cuda_stream_handle(t: torch.Tensor) -> int:
    """The raw ``cudaStream_t`` of the current stream on ``t``'s device, as an integer."""
    return int(torch.cuda.current_stream(t.device).cuda_stream)


def call_native(entry, args: tuple, on: torch.Tensor) -> None:
    """Calls a native entry point with the tail its device needs: the thread count on CPU (torch's, so
    ``torch.set_num_threads`` governs the kernels too), the device index and current stream on CUDA."""
    if on.device.type == "cpu":
        entry(*args, torch.get_num_threads())
    else:
        entry(*args, on.device.index, cuda_stream_handle(on))


def native_module(t: torch.Tensor, op: str):
    """The native module that runs ``op`` on ``t``'s device (``_C`` on CPU, ``_cuda`` on CUDA), or None when there is
    none (a build without it, a CUDA module that cannot run: the caller falls back to its pure-torch reference)."""
    if t.device.type == "cpu":
        return _native.cpu_native()
    return _native._cuda if native_cuda_ready(op) else None


def direct_launch_ok(x: torch.Tensor, *differentiable: torch.Tensor) -> bool:
    """True for a plain eager call that needs no autograd graph: the op's kernel can be launched without going
    through the dispatcher, whose few microseconds per call are most of a batch-1 call at small sizes."""
    if torch.compiler.is_compiling() or type(x) is not torch.Tensor or x.device.type not in ("cpu", "cuda"):
        return False
    return not (torch.is_grad_enabled() and any(t.requires_grad for t in (x, *differentiable)))


def native_cuda_ready(op: str) -> bool:
    """True when the CUDA module can run; otherwise warns once that ``op`` uses its pure-torch reference."""
    if _native.cuda_available():
        return True
    _native.warn_once(
        f"{op}-no-cuda",
        f"{op}: the tcompress CUDA kernels cannot run ({_native.cuda_status()}); using the pure-torch reference",
    )
    return False
