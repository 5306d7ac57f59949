"""tcompress.ops.exit_gate: the native one-pass kernels against the pure-torch reference (softmax, max / top-2 /
entropy, compare, nonzero) under every supported ISA, at the real vocabularies (512, 32000, 49152, 50257); ties,
-inf entries, rows without a softmax (NaN, +inf, all -inf: errors naming the row), fp16/bf16 logits, row strides
and other layouts, thread splits of one row, opcheck, torch.compile, bad inputs and the native re-checks."""

from __future__ import annotations

import pytest
import torch
from tcompress import _native
from tcompress.ops import exit_gate, exit_gate_reference
from tcompress.ops.exit_gate import CRITERIA

VOCABS = (512, 32000, 49152, 50257)
# Confidence agreement with the softmax reference: the polynomial exp and fp32 sums in another order. The scalar
# fallback sums a 50k vocabulary sequentially in one fp32 lane (error ~ sqrt(n) eps ~ 1e-5 typical, measured up to
# 6e-5 relative); the vector ISAs spread it over 8 or 16 lanes and land within 2e-5.
ATOL, RTOL = 3e-5, 1e-4


def logits_of(rows: int, vocab: int, dtype=torch.float32, scale: float = 3.0, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed + vocab)
    return (torch.randn(rows, vocab, generator=gen) * scale).to(dtype)


def assert_matches_reference(logits: torch.Tensor, criterion: str, threshold: float | None = None):
    want_conf = exit_gate_reference(logits, 0.5, criterion).confidence
    if threshold is None:
        threshold = float(want_conf.median())  # some rows exit, some continue
    got = exit_gate(logits, threshold, criterion)
    want = exit_gate_reference(logits, threshold, criterion)
    torch.testing.assert_close(got.confidence, want.confidence, atol=ATOL, rtol=RTOL)
    # The decision may differ only where the two confidences straddle the threshold within the tolerance.
    clear = (want.confidence - threshold).abs() > ATOL + RTOL * abs(threshold)
    assert torch.equal(got.exit_mask[clear], want.exit_mask[clear])
    assert torch.equal(got.exit_index, got.exit_mask.nonzero().flatten())
    assert torch.equal(got.continue_index, (~got.exit_mask).nonzero().flatten())
    assert got.confidence.dtype == torch.float32 and got.exit_mask.dtype == torch.bool
    assert got.exit_index.dtype == torch.int64 and got.continue_index.dtype == torch.int64
    return got


@pytest.mark.parametrize("vocab", VOCABS)
@pytest.mark.parametrize("criterion", CRITERIA)
def test_matches_reference(isa, criterion, vocab):
    got = assert_matches_reference(logits_of(7, vocab), criterion)
    assert 0 < got.exit_mask.sum() < 7


@pytest.mark.parametrize("rows", (1, 2, 3, 64))
@pytest.mark.parametrize("criterion", CRITERIA)
def test_row_counts_and_thread_splits(isa, criterion, rows):
    # One row is split between threads (partial statistics merged); many rows run one per thread.
    logits = logits_of(rows, 50257, seed=rows)
    for threads in (1, 2, 3):
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            assert_matches_reference(logits, criterion, threshold=0.01)
        finally:
            torch.set_num_threads(previous)


@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float16))
@pytest.mark.parametrize("criterion", CRITERIA)
def test_half_precision_logits(isa, criterion, dtype):
    assert_matches_reference(logits_of(5, 49152, dtype), criterion)


@pytest.mark.parametrize("scale", (0.01, 30.0))
@pytest.mark.parametrize("criterion", CRITERIA)
def test_flat_and_peaked_rows(isa, criterion, scale):
    # Near-uniform rows (max_prob ~ 1/vocab, entropy ~ log vocab) and one-hot-like rows (max_prob ~ 1).
    assert_matches_reference(logits_of(4, 32000, scale=scale), criterion)


@pytest.mark.parametrize("vocab", (1, 2, 3, 15, 17, 1023, 1025))
@pytest.mark.parametrize("criterion", CRITERIA)
def test_short_and_awkward_rows(isa, criterion, vocab):
    # Shorter than a vector, vector tails, chunk tails.
    assert_matches_reference(logits_of(3, vocab), criterion)


def test_vocab_of_one_is_certain(isa):
    x = torch.tensor([[2.5], [-1.0]])
    assert exit_gate(x, 0.5, "max_prob").confidence.tolist() == [1.0, 1.0]
    assert exit_gate(x, 0.5, "margin").confidence.tolist() == [1.0, 1.0]
    assert exit_gate(x, 0.5, "entropy").confidence.tolist() == [0.0, 0.0]


@pytest.mark.parametrize("positions", [(3, 4), (5, 40000), (0, 50256), (1023, 1024)])
def test_ties_for_the_maximum(isa, positions):
    # Ties inside a vector, across chunks and across thread ranges: the margin is exactly 0 and the argmax is
    # the first index, as torch.argmax.
    x = logits_of(2, 50257)
    x[:, list(positions)] = 50.0
    got = exit_gate(x, 1e-3, "margin")
    assert got.confidence.tolist() == [0.0, 0.0]
    assert got.exit_mask.tolist() == [False, False]
    assert_matches_reference(x, "max_prob")
    _, _, argmax = torch.ops.tcompress.exit_gate_stats(x, 0.5, "max_prob")
    assert argmax.tolist() == [positions[0]] * 2


@pytest.mark.parametrize("criterion", CRITERIA)
def test_negative_infinity_entries_are_probability_zero(isa, criterion):
    x = logits_of(6, 32000)
    gen = torch.Generator().manual_seed(1)
    x[torch.rand(x.shape, generator=gen) < 0.6] = float("-inf")
    x[1, :] = float("-inf")
    x[1, 777] = 0.5  # one finite entry: certain
    x[2, :20000] = float("-inf")  # whole chunks of -inf before the first finite one
    got = assert_matches_reference(x, criterion)
    assert got.confidence[1].item() == (0.0 if criterion == "entropy" else 1.0)


@pytest.mark.parametrize(
    ("value", "words"), [(float("nan"), "holds NaN"), (float("inf"), "holds \\+inf")], ids=["nan", "posinf"]
)
@pytest.mark.parametrize("rows", (1, 6))
def test_non_finite_row_is_an_error_naming_the_first_row(isa, value, words, rows):
    x = logits_of(rows, 50257)
    bad = rows - 1
    x[bad, 45000] = value  # in the second thread range of a split row
    if rows > 2:
        x[bad - 2 :, 100] = value
        bad -= 2
    for fn in (exit_gate, exit_gate_reference):
        with pytest.raises(ValueError, match=f"row {bad} {words}"):
            fn(x, 0.5, "max_prob")


def test_row_of_only_negative_infinity_is_an_error(isa):
    x = logits_of(4, 512)
    x[2] = float("-inf")
    for fn in (exit_gate, exit_gate_reference):
        with pytest.raises(ValueError, match="row 2 is all -inf"):
            fn(x, 0.5, "entropy")


def test_layouts(isa):
    wide = logits_of(9, 40000)
    for view in (wide[:, :32000], wide[::2, 100:32100], wide[:, :32000].t().contiguous().t(), wide.t()[:512].t()):
        assert_matches_reference(view, "max_prob")


def test_every_isa_agrees():
    x = logits_of(5, 49152, torch.bfloat16)
    original = _native.get_isa()
    results = {}
    try:
        for name in _native.supported_isas():
            _native.set_isa(name)
            results[name] = exit_gate(x, 0.5, "entropy").confidence
    finally:
        _native.set_isa(original)
    first = next(iter(results.values()))
    for conf in results.values():
        torch.testing.assert_close(conf, first, atol=ATOL, rtol=RTOL)


def test_threshold_directions():
    x = logits_of(4, 512)
    conf = exit_gate(x, 0.0, "max_prob").confidence
    assert exit_gate(x, 0.0, "max_prob").exit_mask.all()
    assert not exit_gate(x, float("inf"), "max_prob").exit_mask.any()
    assert not exit_gate(x, 0.0, "entropy").exit_mask.any()  # entropy >= 0 is never < 0
    assert exit_gate(x, float("inf"), "entropy").exit_mask.all()
    exact = float(conf[0])
    assert exit_gate(x, exact, "max_prob").exit_mask[0]  # >= at equality


def test_zero_rows():
    got = exit_gate(torch.empty(0, 100), 0.5, "margin")
    assert got.confidence.shape == (0,) and got.exit_index.shape == (0,) and got.continue_index.shape == (0,)


# ---------------------------------------------------------------------------------------------------------------
# Bad inputs.
# ---------------------------------------------------------------------------------------------------------------


def test_bad_inputs():
    x = logits_of(2, 64)
    with pytest.raises(ValueError, match="2-D .*for one row pass logits\\[None\\]"):
        exit_gate(x[0], 0.5)
    with pytest.raises(ValueError, match="2-D"):
        exit_gate(x[None], 0.5)
    with pytest.raises(ValueError, match="at least 1 entry"):
        exit_gate(torch.empty(3, 0), 0.5)
    with pytest.raises(TypeError, match="dtype float32, float16 or bfloat16; got torch.int64"):
        exit_gate(x.long(), 0.5)
    with pytest.raises(TypeError, match="must be a torch.Tensor"):
        exit_gate(x.tolist(), 0.5)
    with pytest.raises(ValueError, match="criterion must be one of max_prob, margin, entropy; got 'top1'"):
        exit_gate(x, 0.5, "top1")
    with pytest.raises(ValueError, match="threshold must be a number; got NaN"):
        exit_gate(x, float("nan"))
    with pytest.raises(TypeError, match="threshold must be a Python float; got Tensor"):
        exit_gate(x, torch.tensor(0.5))


def test_native_rechecks_its_arguments():
    C = _native._C
    x = logits_of(4, 64)
    conf = torch.empty(4)
    mask = torch.empty(4, dtype=torch.bool)
    good = dict(logits=x.data_ptr(), dtype=0, rows=4, vocab=64, row_stride=64, criterion=0, threshold=0.5,
                confidence=conf.data_ptr(), exit_mask=mask.data_ptr(), argmax=0, num_threads=1)  # fmt: skip
    C.exit_gate(**good)
    for change, words in [
        ({"row_stride": 63}, "row stride"),
        ({"vocab": 0}, "unsupported size"),
        ({"criterion": 3}, "invalid argument"),
        ({"threshold": float("nan")}, "invalid argument"),
        ({"dtype": 7}, "dtype code"),
        ({"confidence": 0}, "null"),
    ]:
        with pytest.raises(ValueError, match=words):
            C.exit_gate(**{**good, **change})


# ---------------------------------------------------------------------------------------------------------------
# torch.library: opcheck, torch.compile.
# ---------------------------------------------------------------------------------------------------------------


def test_opcheck():
    for dtype in (torch.float32, torch.bfloat16):
        for criterion in CRITERIA:
            torch.library.opcheck(
                torch.ops.tcompress.exit_gate_stats.default, (logits_of(5, 1000, dtype), 0.3, criterion)
            )


def test_torch_compile_fullgraph():
    x = logits_of(6, 2048)

    @torch.compile(fullgraph=True, backend="aot_eager")
    def stats(logits):
        return torch.ops.tcompress.exit_gate_stats(logits, 0.05, "max_prob")

    conf, mask, _ = stats(x)
    want = exit_gate(x, 0.05, "max_prob")
    assert torch.equal(conf, want.confidence) and torch.equal(mask, want.exit_mask)

    # The whole gate, compaction included, traces once data-dependent output shapes may be captured.
    with torch._dynamo.config.patch(capture_dynamic_output_shape_ops=True):
        gate = torch.compile(exit_gate, fullgraph=True, backend="aot_eager")(x, 0.05, "max_prob")
    assert torch.equal(gate.exit_index, want.exit_index) and torch.equal(gate.continue_index, want.continue_index)


# ---------------------------------------------------------------------------------------------------------------
# CUDA (skips without a device; never ran in this project so far).
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", (torch.float32, torch.bfloat16))
@pytest.mark.parametrize("criterion", CRITERIA)
def test_cuda_matches_reference(cuda_device, criterion, dtype):
    x = logits_of(33, 50257, dtype)
    x[3, :100] = float("-inf")
    x[4, [7, 9000]] = 60.0  # a tie
    threshold = float(exit_gate_reference(x, 0.5, criterion).confidence.median())
    got = exit_gate(x.to(cuda_device), threshold, criterion)
    want = exit_gate_reference(x, threshold, criterion)
    torch.testing.assert_close(got.confidence.cpu(), want.confidence, atol=1e-5, rtol=1e-4)
    _, _, argmax = torch.ops.tcompress.exit_gate_stats(x.to(cuda_device), threshold, criterion)
    assert torch.equal(argmax.cpu(), x.float().argmax(dim=-1))


def test_cuda_bad_row_is_an_error(cuda_device):
    x = logits_of(8, 4096).to(cuda_device)
    x[5, 17] = float("nan")
    x[6] = float("-inf")
    with pytest.raises(ValueError, match="row 5 holds NaN"):
        exit_gate(x, 0.5)


@pytest.mark.parametrize(
    "layout",
    [
        lambda base: base[:1].expand(4, 100),  # every row the same memory
        lambda base: base.flatten()[:100].as_strided((4, 50), (10, 1)),  # rows overlapping
        lambda base: base[:, ::2],  # a column stride of 2
        lambda base: base.t().contiguous().t(),  # transposed storage
    ],
)
def test_any_layout_is_accepted_and_equals_the_reference(isa, layout):
    # Before: expanded or overlapping rows raised "invalid row stride (rows would overlap)".
    base = logits_of(4, 100)
    logits = layout(base)
    for criterion in CRITERIA:
        got = exit_gate(logits, 0.05, criterion)
        want = exit_gate_reference(logits.contiguous(), 0.05, criterion)
        torch.testing.assert_close(got.confidence, want.confidence, rtol=1e-5, atol=1e-6)
        assert torch.equal(got.exit_mask, want.exit_mask)


def test_meta_logits_are_a_clear_error():
    with pytest.raises(ValueError, match="logits is on the meta device"):
        exit_gate(torch.empty(2, 5, device="meta"), 0.5)
