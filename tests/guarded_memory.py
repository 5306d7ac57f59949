"""Tensors that end exactly where an inaccessible (PROT_NONE) page begins: any kernel read or write past their
last element faults at once instead of silently touching a neighbour. Linux/macOS only."""

from __future__ import annotations

import ctypes
import ctypes.util
import mmap

import torch

_PROT_NONE = 0
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.mprotect.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)


def guarded_tensor(shape, dtype: torch.dtype) -> torch.Tensor:
    """A contiguous tensor of ``shape`` whose last byte is followed by an inaccessible page (kept alive by it)."""
    numel = 1
    for s in shape:
        numel *= s
    nbytes = numel * torch.empty((), dtype=dtype).element_size()
    page = mmap.PAGESIZE
    data_pages = max(1, -(-nbytes // page))
    region = mmap.mmap(-1, (data_pages + 1) * page)
    base = ctypes.addressof(ctypes.c_char.from_buffer(region))
    if _libc.mprotect(base + data_pages * page, page, _PROT_NONE) != 0:
        raise OSError(ctypes.get_errno(), "mprotect failed")
    offset = data_pages * page - nbytes
    t = torch.frombuffer(region, dtype=torch.uint8, count=nbytes, offset=offset).view(dtype).view(shape)
    t._guard_region = region  # the mapping must outlive the tensor
    return t
