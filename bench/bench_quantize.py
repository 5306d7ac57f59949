"""Quantization kernels at real weight shapes: pack_int4, unpack_int4, dequantize (int4 packed and int8) and
quantize, against their pure-torch references and a copy of the same number of bytes.

Run: ``pytest bench/bench_quantize.py --benchmark-only`` (add ``-k cuda`` / ``-k cpu`` / ``-k pack`` ...). Each case
records in extra_info the achieved GB/s (bytes read + written / min time), the speedup over the pure-torch
reference and the fraction of copy bandwidth (copy time / kernel time, the copy being ``dst.copy_(src)`` of a
uint8 buffer holding half those bytes, so that it too reads and writes them once), all measured in one process.

The ops allocate their outputs, and on CPU a fresh multi-megabyte tensor is fresh pages that the kernel's first
writes fault in (at 4096 x 4096 that costs more than the kernel). So on CPU each case also times the native
kernel alone, called through ``tcompress._C`` into outputs allocated once (``native_ms``, ``native_frac_of_copy``).
"""

from __future__ import annotations

import pytest
import tcompress
import torch
from conftest import best_seconds, devices, timed
from tcompress import _native
from tcompress.ops import (
    dequantize,
    dequantize_reference,
    pack_int4,
    pack_int4_reference,
    quantize,
    quantize_reference,
    unpack_int4,
    unpack_int4_reference,
)

# (out_features, in_features): SmolLM2-135M MLP up, GPT-2 124M MLP up, Mistral-7B attention projection.
SHAPES = {"smollm2_mlp": (1536, 576), "gpt2_mlp": (3072, 768), "mistral_qkvo": (4096, 4096)}
GROUP = 64
OPS = ("pack_int4", "unpack_int4", "dequantize_int4_bf16", "dequantize_int8_fp32", "quantize_int4_fp32")


def _case(op: str, device: str, shape):
    """(op call, reference, native kernel into preallocated outputs or None, bytes read + written)."""
    gen = torch.Generator().manual_seed(shape[0])
    w = torch.randn(*shape, generator=gen).to(device)
    out_f, in_f = shape
    groups = in_f // GROUP
    C = _native._C if device == "cpu" else None
    threads = torch.get_num_threads()
    if op == "quantize_int4_fp32":
        nbytes = w.numel() * 4 + w.numel() + 2 * out_f * groups * 4
        q = quantize(w, 4, GROUP, False)
        native = C and (
            lambda: C.quantize(
                w.data_ptr(),
                0,
                out_f,
                in_f,
                in_f,
                4,
                GROUP,
                False,
                q.codes.data_ptr(),
                q.scales.data_ptr(),
                0,
                q.zeros.data_ptr(),
                threads,
            )  # fmt: skip
        )
        return (lambda: quantize(w, 4, GROUP, False)), (lambda: quantize_reference(w, 4, GROUP, False)), native, nbytes
    bits = 8 if op == "dequantize_int8_fp32" else 4
    q = quantize(w, bits, GROUP, False)
    packed = pack_int4(q.codes) if bits == 4 else None
    codes_out = torch.empty_like(q.codes)
    if op == "pack_int4":
        native = C and (
            lambda: C.pack_int4(q.codes.data_ptr(), packed.data_ptr(), out_f, in_f, in_f, in_f // 2, threads)
        )
        return (lambda: pack_int4(q.codes)), (lambda: pack_int4_reference(q.codes)), native, q.codes.numel() * 3 // 2
    if op == "unpack_int4":
        native = C and (
            lambda: C.unpack_int4(packed.data_ptr(), codes_out.data_ptr(), out_f, in_f, in_f // 2, in_f, threads)
        )
        return (lambda: unpack_int4(packed)), (lambda: unpack_int4_reference(packed)), native, q.codes.numel() * 3 // 2
    side = out_f * groups * (4 + 1)  # fp32 scales + uint8 zeros
    dtype = torch.bfloat16 if bits == 4 else torch.float32
    out = torch.empty(shape, dtype=dtype, device=device)
    codes = packed if bits == 4 else q.codes
    native = C and (
        lambda: C.dequantize(
            codes.data_ptr(),
            int(bits == 4),
            out_f,
            in_f,
            codes.shape[1],
            q.scales.data_ptr(),
            0,
            q.zeros.data_ptr(),
            bits,
            GROUP,
            out.data_ptr(),
            2 if bits == 4 else 0,
            in_f,
            threads,
        )  # fmt: skip
    )
    nbytes = codes.numel() + side + w.numel() * out.element_size()
    return (
        (lambda: dequantize(codes, q.scales, q.zeros, bits, GROUP, dtype, packed=bits == 4)),
        (lambda: dequantize_reference(q.codes, q.scales, q.zeros, bits, GROUP).to(dtype)),
        native,
        nbytes,
    )


@pytest.mark.parametrize("device", devices())
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("op", OPS)
def test_tcompress(benchmark, record, device, op, shape):
    kernel, reference, native, nbytes = _case(op, device, SHAPES[shape])
    benchmark.group = f"quant {device} {op} {shape}"
    benchmark(timed(device, kernel))
    t_kernel = benchmark.stats.stats.min
    src = torch.empty(nbytes // 2, dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    t_copy = best_seconds(timed(device, lambda: dst.copy_(src)), repeat=20)
    t_ref = best_seconds(timed(device, reference), repeat=3)
    t_native = best_seconds(native, repeat=20) if native else float("nan")
    record(
        benchmark,
        device=device,
        op=op,
        shape=f"{SHAPES[shape][0]}x{SHAPES[shape][1]}",
        isa=tcompress.get_isa() if device == "cpu" else "cuda",
        kernel_ms=t_kernel * 1e3,
        copy_ms=t_copy * 1e3,
        torch_ref_ms=t_ref * 1e3,
        gb_per_s=nbytes / t_kernel / 1e9,
        copy_gb_per_s=nbytes / t_copy / 1e9,
        frac_of_copy=t_copy / t_kernel,
        native_ms=t_native * 1e3,
        native_frac_of_copy=t_copy / t_native,
        speedup_vs_ref=t_ref / t_kernel,
    )
