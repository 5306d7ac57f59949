"""tcompress.ops.quantize / dequantize / pack_int4 / unpack_int4: the native kernels bit for bit against the
pure-torch references under every supported ISA, real model shapes and awkward ones, pack/unpack properties,
opcheck, torch.compile, bad input (each a clear error), the native argument re-checks, memory safety, CUDA."""

from __future__ import annotations

import functools
import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tcompress import _native
from tcompress.ops import (
    QuantizedWeight,
    dequantize,
    dequantize_reference,
    pack_int4,
    pack_int4_reference,
    quantize,
    quantize_reference,
    unpack_int4,
    unpack_int4_reference,
)

SCALE_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
W_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def awkward_weight(rows: int, cols: int, dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.Tensor:
    """Fresh random weights with the rows that break quantizers mixed in: per-row magnitudes over six decades,
    one row of zeros, one with a single outlier, all-positive and all-negative rows, exact rounding ties."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=gen) * torch.exp(torch.empty(rows, 1).uniform_(-7, 7, generator=gen))
    special = [
        torch.zeros(cols),
        torch.randn(cols, generator=gen).index_fill_(0, torch.tensor([cols // 2]), 300.0),
        torch.rand(cols, generator=gen) + 0.25,
        -torch.rand(cols, generator=gen) - 0.25,
        # Multiples of 0.5 up to 7: with bits=4 symmetric the scale is exactly 1, so w / s hits .5 ties.
        (torch.randint(-14, 15, (cols,), generator=gen).float() / 2).index_fill_(0, torch.tensor([0]), 7.0),
    ]
    for i, row in enumerate(special[: max(rows - 1, 0)]):
        w[1 + i] = row
    return w.to(dtype)


def assert_same_quantization(got: QuantizedWeight, want: QuantizedWeight) -> None:
    assert got.codes.dtype == torch.uint8 and got.scales.dtype == want.scales.dtype
    assert torch.equal(got.codes, want.codes), f"{int((got.codes != want.codes).sum())} codes differ"
    assert torch.equal(got.scales, want.scales), f"{int((got.scales != want.scales).sum())} scales differ"
    if want.zeros is None:
        assert got.zeros is None
    else:
        assert torch.equal(got.zeros, want.zeros), f"{int((got.zeros != want.zeros).sum())} zeros differ"


@functools.cache
def reference_case(rows, cols, wdt, bits, group, symmetric, sdt, seed):
    """(w, quantize_reference(w, ...)): computed once and shared by the ISA variants."""
    w = awkward_weight(rows, cols, W_DTYPES[wdt], seed)
    return w, quantize_reference(w, bits, group, symmetric, SCALE_DTYPES[sdt])


# ------------------------------------------------------------------------------------------------------------
# Bit-exact against the reference.
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("wdt", ["fp32", "bf16"])
@pytest.mark.parametrize("sdt", list(SCALE_DTYPES))
@pytest.mark.parametrize("group", [None, 32, 64, 128])
@pytest.mark.parametrize("symmetric", [True, False], ids=["sym", "asym"])
@pytest.mark.parametrize("bits", [4, 8])
def test_matches_reference_every_combination_and_isa(isa, bits, symmetric, group, sdt, wdt):
    # 1152 columns: 9 groups of 128, per-channel rows of 1152 (72 AVX-512 vectors); 13 rows (odd).
    w, want = reference_case(13, 1152, wdt, bits, group, symmetric, sdt, seed=bits + 2 * symmetric)
    got = quantize(w, bits, group, symmetric, SCALE_DTYPES[sdt])
    assert_same_quantization(got, want)
    for dtype in (torch.float32, torch.bfloat16):
        deq = dequantize(got.codes, got.scales, got.zeros, bits, group, dtype)
        assert deq.dtype == dtype and torch.equal(deq, dequantize_reference(*want, bits, group).to(dtype))
    if bits == 4:
        packed = pack_int4(got.codes)
        assert torch.equal(packed, pack_int4_reference(want.codes))
        deq = dequantize(packed, got.scales, got.zeros, 4, group, torch.float16, packed=True)
        assert torch.equal(deq, dequantize_reference(*want, 4, group).to(torch.float16))


MODEL_SHAPES = [(576, 1536), (768, 3072), (1536, 576), (4096, 256)]


@pytest.mark.parametrize("symmetric", [True, False], ids=["sym", "asym"])
@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("shape", MODEL_SHAPES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_real_model_shapes(isa, shape, bits, symmetric):
    group = 64 if bits == 4 else None  # 576 = 9 * 64: every shape takes groups of 64
    w, want = reference_case(*shape, "bf16" if bits == 8 else "fp32", bits, group, symmetric, "fp16", seed=1)
    got = quantize(w, bits, group, symmetric, torch.float16)
    assert_same_quantization(got, want)
    codes = pack_int4(got.codes) if bits == 4 else got.codes
    deq = dequantize(codes, got.scales, got.zeros, bits, group, torch.bfloat16, packed=bits == 4)
    assert torch.equal(deq, dequantize_reference(*want, bits, group).to(torch.bfloat16))


AWKWARD = [
    # (rows, cols, group): odd row counts, one row, in not a multiple of 16 or 64, odd and tiny groups.
    (1, 172, None),
    (3, 172, 4),
    (5, 86, 43),
    (7, 200, 40),
    (9, 24, 8),
    (2, 2, None),
    (1, 1, None),
    (11, 3, 1),
    (4, 1000, 200),
    (17, 4352, 136),
]


@pytest.mark.parametrize("wdt", ["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("case", AWKWARD, ids=lambda c: f"{c[0]}x{c[1]}g{c[2]}")
def test_awkward_shapes(isa, case, wdt):
    rows, cols, group = case
    for bits, symmetric, sdt in itertools.product((4, 8), (True, False), ("fp32", "bf16")):
        w, want = reference_case(rows, cols, wdt, bits, group, symmetric, sdt, seed=cols)
        got = quantize(w, bits, group, symmetric, SCALE_DTYPES[sdt])
        assert_same_quantization(got, want)
        ref = dequantize_reference(*want, bits, group)
        assert torch.equal(dequantize(got.codes, got.scales, got.zeros, bits, group), ref)
        if bits == 4 and cols % 2 == 0:
            packed = pack_int4(got.codes)
            assert torch.equal(unpack_int4(packed), got.codes)
            assert torch.equal(dequantize(packed, got.scales, got.zeros, 4, group, packed=True), ref)


def test_all_zero_rows_and_scales_that_round_to_zero(isa):
    w = torch.zeros(3, 64)
    w[1, 5] = 1e-45  # the smallest subnormal: its fp16/bf16 scale rounds to 0 and becomes 1
    w[2] = torch.linspace(-1e-6, 3e-6, 64)
    for bits, symmetric, sdt in itertools.product((4, 8), (True, False), SCALE_DTYPES.values()):
        got = quantize(w, bits, 32, symmetric, sdt)
        assert_same_quantization(got, quantize_reference(w, bits, 32, symmetric, sdt))
        assert got.scales[0].eq(1).all(), "an all-zero group gets scale 1"
        assert torch.equal(dequantize(*got, bits, 32)[0], torch.zeros(64))


@pytest.mark.parametrize("make", ["row_slice", "transposed", "strided_rows"])
def test_non_contiguous_weights(isa, make):
    base = awkward_weight(24, 2 * 768, seed=5)
    w = {
        "row_slice": lambda: base[:, 768:],  # rows 1536 apart: read in place
        "transposed": lambda: awkward_weight(768, 24, seed=6).t(),  # inner stride != 1: copied
        "strided_rows": lambda: base[::5, 100:868],
    }[make]()
    for symmetric in (True, False):
        got = quantize(w, 4, 64, symmetric)
        assert_same_quantization(got, quantize_reference(w.contiguous(), 4, 64, symmetric))
    codes = got.codes.t().contiguous().t()  # column-major codes: copied before packing
    assert torch.equal(pack_int4(codes), pack_int4_reference(got.codes))
    assert torch.equal(dequantize(codes, got.scales, got.zeros, 4, 64), dequantize_reference(*got, 4, 64))
    assert torch.equal(base, awkward_weight(24, 2 * 768, seed=5)), "the input must not be modified"


def test_thread_count_does_not_change_the_result(isa):
    w = awkward_weight(64, 3072, seed=3)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = quantize(w, 4, 128, False, torch.bfloat16)
        torch.set_num_threads(max(2, before))
        many = quantize(w, 4, 128, False, torch.bfloat16)
    finally:
        torch.set_num_threads(before)
    assert_same_quantization(one, many)


def test_round_trip_error_is_within_a_step():
    w = awkward_weight(32, 512, seed=9)
    for bits, symmetric in itertools.product((4, 8), (True, False)):
        q = quantize(w, bits, 64, symmetric)
        err = (dequantize(*q, bits, 64) - w).abs().reshape(32, 8, 64)
        # Half a step; asymmetric codes may lose another half step at the ends to the rounded zero point.
        steps = 0.5 if symmetric else 1.0
        assert (err <= q.scales[..., None] * steps * (1 + 1e-5)).all(), (bits, symmetric)


def test_empty_weight_and_shapes():
    q = quantize(torch.empty(0, 64), 4, 32, False)
    assert q.codes.shape == (0, 64) and q.scales.shape == (0, 2) and q.zeros.shape == (0, 2)
    assert dequantize(*q, 4, 32).shape == (0, 64)
    assert pack_int4(torch.empty(0, 8, dtype=torch.uint8)).shape == (0, 4)
    assert pack_int4(torch.empty(5, 0, dtype=torch.uint8)).shape == (5, 0)
    assert unpack_int4(torch.empty(2, 0, 3, dtype=torch.uint8)).shape == (2, 0, 6)


# ------------------------------------------------------------------------------------------------------------
# Pack / unpack.
# ------------------------------------------------------------------------------------------------------------


def test_pack_unpack_every_length_up_to_300(isa):
    gen = torch.Generator().manual_seed(4)
    for n in range(0, 302, 2):  # every vector tail of the SIMD loops (32 and 64 codes per step)
        codes = torch.randint(0, 16, (3, n), dtype=torch.uint8, generator=gen)
        packed = pack_int4(codes)
        assert torch.equal(packed, pack_int4_reference(codes)), n
        assert torch.equal(unpack_int4(packed), codes), n


@settings(max_examples=60, deadline=None)
@given(
    shape=st.lists(st.integers(0, 5), min_size=0, max_size=2),
    half=st.integers(0, 200),
    seed=st.integers(0, 2**31 - 1),
)
def test_unpack_pack_round_trip_property(shape, half, seed):
    gen = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 16, (*shape, 2 * half), dtype=torch.uint8, generator=gen)
    packed_bytes = torch.randint(0, 256, (*shape, half), dtype=torch.uint8, generator=gen)
    for isa in _native.supported_isas() or [None]:
        if isa is not None:
            _native.set_isa(isa)
        packed = pack_int4(codes)
        assert packed.shape == (*shape, half) and torch.equal(packed, pack_int4_reference(codes))
        assert torch.equal(unpack_int4(packed), codes)
        assert torch.equal(pack_int4(unpack_int4(packed_bytes)), packed_bytes)
        assert torch.equal(unpack_int4(packed_bytes), unpack_int4_reference(packed_bytes))
    if _native.supported_isas():
        _native.set_isa(_native._C.best_isa())


def test_pack_of_views(isa):
    base = torch.randint(0, 16, (6, 100), dtype=torch.uint8)
    for view in (base[:, 10:74], base[::2, :64], base[:, :64].t().contiguous().t(), base[2]):
        assert torch.equal(pack_int4(view), pack_int4_reference(view))
        assert torch.equal(unpack_int4(pack_int4(view)), view)


# ------------------------------------------------------------------------------------------------------------
# opcheck, torch.compile, meta.
# ------------------------------------------------------------------------------------------------------------


def test_opcheck_every_op():
    w = awkward_weight(6, 128, seed=7)
    ops = torch.ops.tcompress
    for symmetric, sdt in ((True, torch.float16), (False, torch.bfloat16)):
        torch.library.opcheck(ops.quantize_weight.default, (w, 4, 32, symmetric, sdt))
        torch.library.opcheck(ops.quantize_weight.default, (w.to(torch.bfloat16), 8, 0, symmetric, torch.float32))
    q = quantize(w, 4, 32, False)
    packed = pack_int4(q.codes)
    torch.library.opcheck(ops.dequantize.default, (q.codes, q.scales, q.zeros, 4, 32, False, torch.float32))
    torch.library.opcheck(ops.dequantize.default, (packed, q.scales, None, 4, 32, True, torch.bfloat16))
    torch.library.opcheck(ops.pack_int4.default, (q.codes,))
    torch.library.opcheck(ops.unpack_int4.default, (packed,))


def test_torch_compile_fullgraph_quantize_pack_dequantize():
    def f(w):
        q = quantize(w * 2.0, 4, 64, symmetric=False, scale_dtype=torch.float16)
        packed = pack_int4(q.codes)
        return dequantize(packed, q.scales, q.zeros, 4, 64, torch.float32, packed=True) + 1.0

    def g(w):
        q = quantize(w, 8, None)
        return dequantize(q.codes, q.scales, q.zeros, 8, None, torch.bfloat16)

    w = awkward_weight(16, 256, seed=12)
    assert torch.equal(torch.compile(f, fullgraph=True)(w), f(w))
    assert torch.equal(torch.compile(g, fullgraph=True)(w), g(w))


def test_meta_tensors_give_shapes():
    w = torch.empty(8, 256, device="meta")
    q = quantize(w, 4, 64, False, torch.bfloat16)
    assert q.codes.shape == (8, 256) and q.scales.shape == (8, 4) and q.scales.dtype == torch.bfloat16
    assert q.zeros.shape == (8, 4) and q.codes.device.type == "meta"
    assert pack_int4(q.codes).shape == (8, 128)
    assert dequantize(pack_int4(q.codes), q.scales, q.zeros, 4, 64, packed=True).shape == (8, 256)


def test_pure_torch_fallback_without_the_native_module(monkeypatch):
    w = awkward_weight(5, 96, seed=2)
    native = quantize(w, 4, 32, False)
    monkeypatch.setattr(_native, "_C", None)
    monkeypatch.setattr(_native, "_warned", set())
    with pytest.warns(RuntimeWarning, match="pure-torch references"):
        fallback = quantize(w, 4, 32, False)
    assert_same_quantization(fallback, native)
    assert torch.equal(dequantize(*fallback, 4, 32), dequantize_reference(*native, 4, 32))
    assert torch.equal(unpack_int4(pack_int4(native.codes)), native.codes)
    with pytest.raises(ValueError, match=r"w holds NaN or Inf \(1 non-finite value\)"):
        quantize(w.index_fill(1, torch.tensor([3]), float("nan"))[:1], 4)
    with pytest.raises(ValueError, match="1 code above 15"):
        pack_int4(torch.tensor([1, 16], dtype=torch.uint8))


# ------------------------------------------------------------------------------------------------------------
# Bad input: each a clear error naming the op, the argument, what was expected and what was given.
# ------------------------------------------------------------------------------------------------------------


def test_nan_and_inf_in_w_are_named_and_counted(isa):
    w = torch.randn(4, 64)
    w[0, 1] = float("nan")
    w[2, 3] = float("inf")
    w[3, 63] = float("-inf")
    for symmetric, dtype in ((True, torch.float32), (False, torch.bfloat16), (True, torch.float16)):
        with pytest.raises(ValueError, match=r"tcompress.ops.quantize: w holds NaN or Inf \(3 non-finite values\)"):
            quantize(w.to(dtype), 4, 32, symmetric)


def test_scale_overflowing_its_dtype(isa):
    w = torch.full((2, 8), 1.0e6)
    with pytest.raises(ValueError, match=r"too large for torch.float16 scales: group 0 of row 0 .*needs scale 142857"):
        quantize(w, 4, None, True, torch.float16)
    assert quantize(w, 4, None, True, torch.bfloat16).scales.isfinite().all()
    with pytest.raises(ValueError, match="range max - min overflows float32"):
        quantize(torch.tensor([[3e38, -3e38]]), 8, None, False)


@pytest.mark.parametrize(
    "call, exc, message",
    [
        (lambda: quantize([[1.0]], 4), TypeError, r"quantize: w must be a torch.Tensor; got list"),
        (
            lambda: quantize(torch.ones(2, 4, dtype=torch.float64), 4),
            TypeError,
            r"w must have dtype float32, float16 or bfloat16; got torch.float64",
        ),
        (lambda: quantize(torch.ones(2, 4, dtype=torch.int8), 4), TypeError, r"got torch.int8"),
        (
            lambda: quantize(torch.ones(8), 4),
            ValueError,
            r"w must be 2-D \(out_features, in_features\); got shape \(8,\)",
        ),
        (lambda: quantize(torch.ones(2, 3, 4), 4), ValueError, r"got shape \(2, 3, 4\)"),
        (lambda: quantize(torch.ones(2, 0), 4), ValueError, r"at least one column .*got shape \(2, 0\)"),
        (lambda: quantize(torch.ones(2, 8), 3), ValueError, r"bits must be 4 or 8; got 3"),
        (lambda: quantize(torch.ones(2, 8), True), ValueError, r"bits must be 4 or 8; got True"),
        (
            lambda: quantize(torch.ones(4, 576), 4, 128),
            ValueError,
            r"quantize: group_size 128 does not divide in_features 576",
        ),
        (
            lambda: quantize(torch.ones(4, 576), 4, 48 * 5),
            ValueError,
            r"group_size 240 does not divide in_features 576",
        ),
        (
            lambda: quantize(torch.ones(4, 576), 4, 0),
            ValueError,
            r"group_size must be a positive divisor of in_features 576 .*got 0",
        ),
        (lambda: quantize(torch.ones(4, 576), 4, -64), ValueError, r"got -64"),
        (lambda: quantize(torch.ones(4, 576), 4, 64.0), TypeError, r"group_size must be an int or None .*got float"),
        (
            lambda: quantize(torch.ones(4, 64), 4, 32, True, torch.float64),
            TypeError,
            r"scale_dtype must be torch.float32, torch.float16 or torch.bfloat16; got torch.float64",
        ),
        (
            lambda: pack_int4(torch.ones(2, 8, dtype=torch.int32)),
            TypeError,
            r"pack_int4: codes must have dtype torch.uint8; got torch.int32",
        ),
        (
            lambda: pack_int4(torch.ones(2, 7, dtype=torch.uint8)),
            ValueError,
            r"pack_int4: codes must have an even last dimension .*got shape \(2, 7\)",
        ),
        (lambda: pack_int4(torch.tensor(3, dtype=torch.uint8)), ValueError, r"at least one dimension"),
        (
            lambda: pack_int4(torch.tensor([[1, 16, 200, 15]], dtype=torch.uint8)),
            ValueError,
            r"pack_int4: codes must be int4 values in \[0, 15\]; got 2 codes above 15 \(largest 200\)",
        ),
        (
            lambda: unpack_int4(torch.ones(2, 8)),
            TypeError,
            r"unpack_int4: packed must have dtype torch.uint8; got torch.float32",
        ),
        (lambda: unpack_int4(torch.tensor(3, dtype=torch.uint8)), ValueError, r"at least one dimension"),
    ],
)
def test_bad_input_quantize_and_pack(call, exc, message):
    with pytest.raises(exc, match=message):
        call()


def _q():
    return quantize(torch.randn(4, 64), 4, 32, False)


@pytest.mark.parametrize(
    "call, exc, message",
    [
        (
            lambda q: dequantize(q.codes.int(), q.scales, q.zeros, 4, 32),
            TypeError,
            r"dequantize: codes must have dtype torch.uint8; got torch.int32",
        ),
        (
            lambda q: dequantize(q.codes[0], q.scales, q.zeros, 4, 32),
            ValueError,
            r"codes must be 2-D .*got shape \(64,\)",
        ),
        (
            lambda q: dequantize(q.codes, q.scales.double(), q.zeros, 4, 32),
            TypeError,
            r"scales must have dtype float32, float16 or bfloat16; got torch.float64",
        ),
        (
            lambda q: dequantize(q.codes, q.scales, q.zeros.float(), 4, 32),
            TypeError,
            r"zeros must have dtype torch.uint8; got torch.float32",
        ),
        (
            lambda q: dequantize(q.codes, q.scales, q.zeros, 4, 16),
            ValueError,
            r"scales must have shape \(4, 4\) \(out_features, groups\) for codes of shape \(4, 64\) "
            r".*group_size 16; got \(4, 2\)",
        ),
        (
            lambda q: dequantize(q.codes, q.scales, q.zeros[:, :1], 4, 32),
            ValueError,
            r"zeros must have shape \(4, 2\) .*got \(4, 1\)",
        ),
        (
            lambda q: dequantize(q.codes, q.scales, q.zeros, 4, 24),
            ValueError,
            r"group_size 24 does not divide in_features 64",
        ),
        (lambda q: dequantize(q.codes, q.scales, q.zeros, 5, 32), ValueError, r"bits must be 4 or 8; got 5"),
        (
            lambda q: dequantize(q.codes, q.scales, q.zeros, 8, 32, packed=True),
            ValueError,
            r"packed codes hold int4 values, so bits must be 4; got bits=8",
        ),
        (
            lambda q: dequantize(q.codes, q.scales, q.zeros, 4, 32, packed=True),
            ValueError,
            r"scales must have shape \(4, 4\) .*\(packed, in_features 128\)",
        ),
        (
            lambda q: dequantize(q.codes, q.scales, q.zeros, 4, 32, torch.int8),
            TypeError,
            r"dtype must be torch.float32, torch.float16 or torch.bfloat16; got torch.int8",
        ),
        (
            lambda q: dequantize(q.codes, q.scales.to("meta"), q.zeros, 4, 32),
            ValueError,
            r"scales must be on codes' device cpu; got meta",
        ),
    ],
)
def test_bad_input_dequantize(call, exc, message):
    with pytest.raises(exc, match=message):
        call(_q())


def test_native_code_rechecks_its_arguments():
    C = _native._C
    if C is None:
        pytest.skip("tcompress._C is not built")
    w = torch.randn(4, 64)
    codes = torch.empty(4, 64, dtype=torch.uint8)
    scales = torch.empty(4, 2)
    zeros = torch.empty(4, 2, dtype=torch.uint8)
    wp, cp, sp, zp = w.data_ptr(), codes.data_ptr(), scales.data_ptr(), zeros.data_ptr()

    def q(**kw):
        args = dict(w=wp, w_dtype=0, out_features=4, in_features=64, w_row_stride=64, bits=4, group_size=32,
                    symmetric=False, codes=cp, scales=sp, scale_dtype=0, zeros=zp, num_threads=1)  # fmt: skip
        args.update(kw)
        C.quantize(**args)

    q()  # valid
    for kw, message in [
        (dict(bits=5), "unsupported size"),
        (dict(group_size=24), "unsupported size"),
        (dict(group_size=-32), "unsupported size"),
        (dict(in_features=0), "unsupported size"),
        (dict(out_features=-1), "unsupported size"),
        (dict(w_dtype=7), "dtype"),
        (dict(scale_dtype=3), "dtype"),
        (dict(w=0), "null"),
        (dict(zeros=0), "null"),
        (dict(symmetric=True), "invalid argument"),  # zeros given for symmetric codes
        (dict(w_row_stride=32), "row stride"),
        (dict(codes=wp + 16), "invalid argument"),  # codes overlap w
        (dict(zeros=cp + 8), "invalid argument"),  # zeros overlap codes
    ]:
        with pytest.raises(ValueError, match=message):
            q(**kw)
    w[1, 1] = float("nan")
    with pytest.raises(ValueError, match=r"NaN or Inf \(status 10\)"):
        q()
    bad = torch.tensor([[1, 2, 3, 16]], dtype=torch.uint8)
    packed = torch.empty(1, 2, dtype=torch.uint8)
    with pytest.raises(ValueError, match="invalid argument"):
        C.pack_int4(bad.data_ptr(), packed.data_ptr(), 1, 4, 4, 2, 1)  # a code above 15
    with pytest.raises(ValueError, match="unsupported size"):
        C.pack_int4(bad.data_ptr(), packed.data_ptr(), 1, 3, 4, 2, 1)  # odd n
    with pytest.raises(ValueError, match="invalid argument"):
        C.unpack_int4(bad.data_ptr() + 1, bad.data_ptr(), 1, 2, 1, 2, 1)  # codes overlap packed
    out = torch.empty(4, 64)
    with pytest.raises(ValueError, match="invalid argument"):  # packed codes need bits == 4
        C.dequantize(cp, 1, 4, 64, 32, sp, 0, zp, 8, 32, out.data_ptr(), 0, 64, 1)
    with pytest.raises(ValueError, match="dtype"):
        C.dequantize(cp, 2, 4, 64, 64, sp, 0, zp, 4, 32, out.data_ptr(), 0, 64, 1)
    with pytest.raises(ValueError, match="null"):
        C.dequantize(cp, 0, 4, 64, 64, 0, 0, zp, 4, 32, out.data_ptr(), 0, 64, 1)
    with pytest.raises(ValueError, match="invalid argument"):
        C.dequantize(cp, 0, 4, 64, 64, sp, 0, zp, 4, 32, sp, 0, 64, 1)  # out overlaps scales


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_no_access_past_the_end_of_any_array(isa, dtype):
    from guarded_memory import guarded_tensor

    C = _native._C
    code = {torch.float32: 0, torch.bfloat16: 2}[dtype]
    for rows, cols, group in ((1, 1, 0), (3, 31, 0), (2, 34, 17), (3, 70, 35), (1, 130, 0), (2, 96, 32)):
        groups = 1 if group == 0 else cols // group
        w = guarded_tensor((rows, cols), dtype)
        w.copy_(awkward_weight(rows, cols, dtype, seed=cols))
        codes = guarded_tensor((rows, cols), torch.uint8)
        scales = guarded_tensor((rows, groups), torch.float32)
        zeros = guarded_tensor((rows, groups), torch.uint8)
        C.quantize(w.data_ptr(), code, rows, cols, cols, 4, group, False, codes.data_ptr(), scales.data_ptr(), 0,
                   zeros.data_ptr(), 1)  # fmt: skip
        want = quantize_reference(w, 4, group or None, False)
        assert_same_quantization(QuantizedWeight(codes, scales, zeros), want)
        out = guarded_tensor((rows, cols), dtype)
        C.dequantize(codes.data_ptr(), 0, rows, cols, cols, scales.data_ptr(), 0, zeros.data_ptr(), 4, group,
                     out.data_ptr(), code, cols, 1)  # fmt: skip
        assert torch.equal(out, dequantize_reference(*want, 4, group or None).to(dtype))
        if cols % 2 == 0:
            packed = guarded_tensor((rows, cols // 2), torch.uint8)
            C.pack_int4(codes.data_ptr(), packed.data_ptr(), rows, cols, cols, cols // 2, 1)
            assert torch.equal(packed, pack_int4_reference(want.codes))
            back = guarded_tensor((rows, cols), torch.uint8)
            C.unpack_int4(packed.data_ptr(), back.data_ptr(), rows, cols, cols // 2, cols, 1)
            assert torch.equal(back, want.codes)
            C.dequantize(packed.data_ptr(), 1, rows, cols, cols // 2, scales.data_ptr(), 0, zeros.data_ptr(), 4,
                         group, out.data_ptr(), code, cols, 1)  # fmt: skip
            assert torch.equal(out, dequantize_reference(*want, 4, group or None).to(dtype))


# ------------------------------------------------------------------------------------------------------------
# CUDA (skipped where no device is present).
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("wdt", ["fp32", "bf16", "fp16"])
@pytest.mark.parametrize("sdt", list(SCALE_DTYPES))
@pytest.mark.parametrize("group", [None, 32, 128])
@pytest.mark.parametrize("symmetric", [True, False], ids=["sym", "asym"])
@pytest.mark.parametrize("bits", [4, 8])
def test_cuda_matches_reference(cuda_device, bits, symmetric, group, sdt, wdt):
    w, want = reference_case(37, 1536, wdt, bits, group, symmetric, sdt, seed=3)
    got = quantize(w.to(cuda_device), bits, group, symmetric, SCALE_DTYPES[sdt])
    assert got.codes.device.type == "cuda"
    assert_same_quantization(QuantizedWeight(*(t.cpu() if t is not None else None for t in got)), want)
    ref = dequantize_reference(*want, bits, group)
    assert torch.equal(dequantize(*got, bits, group, torch.bfloat16).cpu(), ref.to(torch.bfloat16))
    if bits == 4:
        packed = pack_int4(got.codes)
        assert torch.equal(packed.cpu(), pack_int4_reference(want.codes))
        assert torch.equal(unpack_int4(packed).cpu(), want.codes)
        assert torch.equal(dequantize(packed, got.scales, got.zeros, 4, group, packed=True).cpu(), ref)


def test_cuda_awkward_shapes_strides_and_errors(cuda_device):
    for rows, cols, group in AWKWARD:
        w, want = reference_case(rows, cols, "fp32", 4, group, False, "fp16", seed=cols)
        got = quantize(w.to(cuda_device), 4, group, False, torch.float16)
        assert_same_quantization(QuantizedWeight(*(t.cpu() for t in got)), want)
    base = awkward_weight(16, 2048, seed=8).to(cuda_device)
    got = quantize(base[:, 1024:], 4, 64)
    assert_same_quantization(QuantizedWeight(got.codes.cpu(), got.scales.cpu(), None),
                             quantize_reference(base[:, 1024:].cpu(), 4, 64))  # fmt: skip
    bad = base.clone()
    bad[3, 7] = float("nan")
    with pytest.raises(ValueError, match=r"w holds NaN or Inf \(1 non-finite value\)"):
        quantize(bad, 4, 64)
    with pytest.raises(ValueError, match="1 code above 15"):
        pack_int4(torch.tensor([[0, 16]], dtype=torch.uint8, device=cuda_device))
    with pytest.raises(ValueError, match="too large for torch.float16 scales"):
        quantize(torch.full((2, 8), 1e6, device=cuda_device), 4, None, True, torch.float16)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        q = quantize(base, 8, 128, False, torch.bfloat16)
        deq = dequantize(*q, 8, 128)
    stream.synchronize()
    assert torch.equal(
        deq.cpu(), dequantize_reference(*quantize_reference(base.cpu(), 8, 128, False, torch.bfloat16), 8, 128)
    )
