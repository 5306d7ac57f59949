"""tcompress.ops.exit_gate_head: the fused head GEMV + gate for batch 1 against exit_gate(hidden @ W^T + b) and
the argmax token, under every supported ISA, for fp32/bf16/fp16 heads, the SmolLM2 head shape and awkward
shapes, thread splits of the vocabulary; bad inputs, NaN weights, opcheck."""

from __future__ import annotations

import pytest
import torch
from tcompress.ops import exit_gate, exit_gate_head
from tcompress.ops.exit_gate import CRITERIA


def head(vocab: int, d: int, dtype=torch.float32, seed: int = 0):
    gen = torch.Generator().manual_seed(seed + vocab + d)
    hidden = torch.randn(d, generator=gen)
    weight = (torch.randn(vocab, d, generator=gen) * (4.0 / d**0.5)).to(dtype)
    bias = torch.randn(vocab, generator=gen) * 0.1
    return hidden, weight, bias


def logits_of(hidden, weight, bias=None):
    # float64 GEMV: the kernel's fp32 dot products in another order differ from torch's by rounding only.
    out = hidden.double()[None] @ weight.double().t()
    return (out if bias is None else out + bias.double()).float()


@pytest.mark.parametrize(("vocab", "d"), [(49152, 576), (1000, 67), (3, 5), (257, 16)])
@pytest.mark.parametrize("criterion", CRITERIA)
def test_matches_gate_of_the_logits(isa, criterion, vocab, d):
    hidden, weight, bias = head(vocab, d)
    for b in (None, bias):
        logits = logits_of(hidden, weight, b)
        want = exit_gate(logits, 0.2, criterion)
        got, token = exit_gate_head(hidden, weight, 0.2, criterion, head_bias=b)
        torch.testing.assert_close(got.confidence, want.confidence, atol=1e-5, rtol=1e-4)
        assert token.tolist() == [int(logits.argmax())]
        assert got.exit_index.tolist() == ([0] if got.exit_mask[0] else [])
        assert got.continue_index.tolist() == ([] if got.exit_mask[0] else [0])


@pytest.mark.parametrize("dtype", (torch.bfloat16, torch.float16))
def test_half_precision_head(isa, dtype):
    hidden, weight, _ = head(32000, 576, dtype)
    logits = logits_of(hidden, weight)
    got, token = exit_gate_head(hidden[None], weight, 0.5, "entropy")
    torch.testing.assert_close(got.confidence, exit_gate(logits, 0.5, "entropy").confidence, atol=1e-5, rtol=1e-4)
    assert token.item() == int(logits.argmax())


def test_thread_counts_agree(isa):
    hidden, weight, bias = head(50257, 64)
    results = []
    previous = torch.get_num_threads()
    try:
        for threads in (1, 2, 5):
            torch.set_num_threads(threads)
            results.append(exit_gate_head(hidden, weight, 0.1, "margin", head_bias=bias))
    finally:
        torch.set_num_threads(previous)
    for gate, token in results[1:]:
        torch.testing.assert_close(
            gate.confidence, results[0].gate.confidence, atol=1e-5, rtol=1e-4
        )  # fp32 sums split differently
        assert torch.equal(token, results[0].token)


def test_tie_gives_zero_margin_and_first_token(isa):
    hidden = torch.ones(8)
    weight = torch.zeros(3000, 8)
    weight[[10, 2900]] = 5.0  # equal logits 40 in different thread ranges
    got, token = exit_gate_head(hidden, weight, 0.5, "margin")
    assert got.confidence.tolist() == [0.0] and token.tolist() == [10]


def test_nan_weight_is_an_error(isa):
    hidden, weight, _ = head(5000, 32)
    weight[4000, 3] = float("nan")
    with pytest.raises(ValueError, match="row 0 holds NaN"):
        exit_gate_head(hidden, weight, 0.5)


def test_bad_inputs():
    hidden, weight, bias = head(100, 16)
    with pytest.raises(ValueError, match=r"hidden must have shape \(16,\) or \(1, 16\) \(batch 1\); got \(2, 16\)"):
        exit_gate_head(torch.stack([hidden, hidden]), weight, 0.5)
    with pytest.raises(ValueError, match="got \\(15,\\)"):
        exit_gate_head(hidden[:15], weight, 0.5)
    with pytest.raises(ValueError, match="head_weight must be 2-D"):
        exit_gate_head(hidden, weight[0], 0.5)
    with pytest.raises(ValueError, match=r"head_bias must have shape \(100,\)"):
        exit_gate_head(hidden, weight, 0.5, head_bias=bias[:99])
    with pytest.raises(TypeError, match="head_weight must have dtype"):
        exit_gate_head(hidden, weight.to(torch.int8), 0.5)
    with pytest.raises(ValueError, match="criterion must be one of"):
        exit_gate_head(hidden, weight, 0.5, "argmax")
    with pytest.raises(ValueError, match="threshold must be a number; got NaN"):
        exit_gate_head(hidden, weight, float("nan"))


def test_opcheck():
    hidden, weight, bias = head(700, 24)
    for b in (None, bias):
        torch.library.opcheck(torch.ops.tcompress.exit_gate_head_stats.default, (hidden, weight, b, 0.3, "max_prob"))
    torch.library.opcheck(
        torch.ops.tcompress.exit_gate_head_stats.default, (hidden, weight.bfloat16(), None, 0.3, "entropy")
    )


def test_an_expanded_head_weight_is_accepted(isa):
    # Before: "invalid row stride (rows would overlap)" for a weight whose rows share memory.
    hidden, weight = torch.randn(16), torch.randn(1, 16).expand(50, 16)
    got = exit_gate_head(hidden, weight, 0.05)
    want = exit_gate_head(hidden, weight.contiguous(), 0.05)
    torch.testing.assert_close(got.gate.confidence, want.gate.confidence)
    assert torch.equal(got.token, want.token)


def test_meta_hidden_is_a_clear_error():
    with pytest.raises(ValueError, match="hidden is on the meta device"):
        exit_gate_head(torch.empty(4, device="meta"), torch.empty(5, 4, device="meta"), 0.5)
