"""The early-exit gate: tcompress.ops.exit_gate against the pure-torch sequence (softmax, max / entropy, compare,
nonzero) and against a read of the same logits bytes, at vocabularies 32000 (Llama / Mistral), 49152 (SmolLM2) and
50257 (GPT-2) for 1, 64 and 512 rows; and, at batch 1, the gate (and the fused head GEMV + gate) as a fraction of
one SmolLM2-135M decoder block's time.

    python -m pytest bench/bench_exit_gate.py --benchmark-only          # -k rows / -k block

Each ``test_gate`` case records: the gate's time, the torch sequence's, the read's (``logits.sum()``: every byte read
once, next to no arithmetic), the speedup over torch, the fraction of read bandwidth (read time / gate time), and
the cost of the compaction (the two ``nonzero`` calls) against the custom op alone. Targets: >= 3x the torch
sequence and >= 50% of read bandwidth at 512 rows; the gate <= 5% of a decoder block at batch 1.
"""

from __future__ import annotations

import functools

import pytest
import torch
import torch.nn.functional as F
from conftest import best_seconds
from tcompress import _native, models
from tcompress.ops import exit_gate, exit_gate_head

VOCABS = (32000, 49152, 50257)
ROWS = (1, 64, 512)
THRESHOLD = {"max_prob": 0.02, "entropy": 6.0}  # mixes exits and continues on randn * 3 logits


@functools.cache
def _logits(rows: int, vocab: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(rows * 7 + vocab)
    return torch.randn(rows, vocab, generator=gen) * 3.0


def torch_sequence(logits: torch.Tensor, threshold: float, criterion: str):
    """The baseline: what a user writes without the kernel (the softmax is materialised)."""
    p = torch.softmax(logits, dim=-1)
    if criterion == "max_prob":
        confidence = p.amax(dim=-1)
        mask = confidence >= threshold
    else:
        confidence = -(p * torch.log_softmax(logits, dim=-1)).sum(dim=-1)
        mask = confidence < threshold
    return confidence, mask.nonzero().flatten(), (~mask).nonzero().flatten()


def _repeat(rows: int) -> int:
    return 20 if rows == 1 else 10 if rows == 64 else 5


@pytest.mark.parametrize("criterion", ("max_prob", "entropy"))
@pytest.mark.parametrize("rows", ROWS, ids=[f"rows{r}" for r in ROWS])
@pytest.mark.parametrize("vocab", VOCABS)
def test_gate(benchmark, record, vocab, rows, criterion):
    x = _logits(rows, vocab)
    t = THRESHOLD[criterion]
    benchmark.group = f"exit_gate cpu rows={rows} vocab={vocab}"
    benchmark.pedantic(lambda: exit_gate(x, t, criterion), rounds=_repeat(rows), warmup_rounds=2)
    t_gate = benchmark.stats.stats.min
    t_op = best_seconds(lambda: torch.ops.tcompress.exit_gate_stats(x, t, criterion), repeat=_repeat(rows))
    mask = torch.ops.tcompress.exit_gate_stats(x, t, criterion)[1]
    t_compact = best_seconds(lambda: (mask.nonzero().flatten(), (~mask).nonzero().flatten()), repeat=20)
    t_torch = best_seconds(lambda: torch_sequence(x, t, criterion), repeat=_repeat(rows))
    t_read = best_seconds(lambda: x.sum(), repeat=_repeat(rows))
    nbytes = x.numel() * x.element_size()
    record(
        benchmark,
        criterion=criterion,
        vocab=vocab,
        rows=rows,
        isa=_native.get_isa(),
        gate_us=t_gate * 1e6,
        op_us=t_op * 1e6,
        compact_us=t_compact * 1e6,
        torch_us=t_torch * 1e6,
        read_us=t_read * 1e6,
        gb_per_s=nbytes / t_gate / 1e9,
        x_vs_torch=t_torch / t_gate,
        frac_of_read=t_read / t_gate,
    )


# ---------------------------------------------------------------------------------------------------------------
# Batch 1: the gate against one SmolLM2-135M decoder block (d 576, 9 heads / 3 KV heads, MLP 1536, vocab 49152).
# ---------------------------------------------------------------------------------------------------------------

CACHE_TOKENS = 64


@functools.cache
def _smollm2_block():
    """(step, config): one decode step (batch 1, CACHE_TOKENS cached) of a 1-layer SmolLM2-shaped LlamaModel."""
    from transformers import DynamicCache, LlamaConfig, LlamaModel

    config = LlamaConfig(
        hidden_size=576,
        intermediate_size=1536,
        num_attention_heads=9,
        num_key_value_heads=3,
        num_hidden_layers=1,
        vocab_size=49152,
        max_position_embeddings=2048,
        rms_norm_eps=1e-5,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = LlamaModel(config).eval()
    cache = DynamicCache(config=config)
    cache_arg = models.cache_kwargs(type(model).forward, cache)  # cache= (past_key_values= before transformers 5.2x)
    with torch.inference_mode():
        model(input_ids=torch.randint(0, 49152, (1, CACHE_TOKENS)), use_cache=True, **cache_arg)
    token = torch.tensor([[17]])
    position = torch.tensor([[CACHE_TOKENS]])

    def step():
        with torch.inference_mode():
            cache.crop(-(cache.get_seq_length() - CACHE_TOKENS))  # a positive crop is refused by transformers 5
            model(input_ids=token, position_ids=position, use_cache=True, **cache_arg)

    return step, config


def test_block_fraction(benchmark, record):
    step, config = _smollm2_block()
    t_block = best_seconds(step, repeat=30, warmup=3)
    x = _logits(1, config.vocab_size)
    benchmark.group = "exit_gate vs SmolLM2 block, batch 1"
    benchmark.pedantic(lambda: exit_gate(x, 0.5, "max_prob"), rounds=50, warmup_rounds=5)
    t_gate = benchmark.stats.stats.min
    t_torch = best_seconds(lambda: torch_sequence(x, 0.5, "max_prob"), repeat=50)
    gen = torch.Generator().manual_seed(1)
    hidden = torch.randn(config.hidden_size, generator=gen)
    weight = torch.randn(config.vocab_size, config.hidden_size, generator=gen) * 0.05
    t_head_gate = best_seconds(lambda: exit_gate_head(hidden, weight, 0.5, "max_prob"), repeat=30, warmup=3)
    t_head = best_seconds(lambda: F.linear(hidden[None], weight), repeat=30, warmup=3)
    t_head_torch = best_seconds(
        lambda: torch_sequence(F.linear(hidden[None], weight), 0.5, "max_prob"), repeat=30, warmup=3
    )
    record(
        benchmark,
        criterion="max_prob",
        vocab=config.vocab_size,
        rows=1,
        isa=_native.get_isa(),
        block_us=t_block * 1e6,
        gate_us=t_gate * 1e6,
        torch_us=t_torch * 1e6,
        gate_frac_of_block=t_gate / t_block,
        torch_frac_of_block=t_torch / t_block,
        head_gemv_us=t_head * 1e6,
        fused_head_gate_us=t_head_gate * 1e6,
        head_then_torch_us=t_head_torch * 1e6,
        fused_vs_head_then_torch=t_head_torch / t_head_gate,
    )
