"""tcompress.evaluate: stories260K's TinyStories perplexity (the reference number), perplexity of tiny random
models against a hand computation with F.cross_entropy, compare() KL/agreement, token budgets and bad input."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from model_factories import ByteTokenizer, tiny_gpt2, tiny_mistral
from tcompress import data, evaluate


def _hand_nll(model, windows):
    """(sum of NLL, predicted tokens) with F.cross_entropy, one window at a time."""
    total, count = 0.0, 0
    with torch.no_grad():
        for row in windows:
            logits = model(row[None]).logits[0]
            total += F.cross_entropy(logits[:-1].double(), row[1:], reduction="sum").item()
            count += row.numel() - 1
    return total, count


def _windows(num, length, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randint(0, 512, (num, length), generator=gen)


def test_stories260k_tinystories_perplexity(stories260k, data_dir):
    if not (data_dir / data.TINYSTORIES_FILE).is_file():
        pytest.skip(f"asset missing: {data_dir / data.TINYSTORIES_FILE}")
    model, tokenizer = stories260k
    result = evaluate.perplexity_of_texts(model, tokenizer, data.tinystories_texts(), bos=True, max_length=512)
    assert result.tokens == 3211
    assert result.windows == 10
    assert result.ppl == pytest.approx(3.351, abs=1e-3)
    assert result.nll_mean == pytest.approx(math.log(result.ppl))


@pytest.mark.parametrize("factory", [tiny_gpt2, tiny_mistral], ids=["gpt2", "mistral"])
def test_perplexity_matches_cross_entropy(factory):
    model = factory()
    windows = _windows(5, 32)
    nll, count = _hand_nll(model, windows)
    for batch_size in (1, 2, 5):
        result = evaluate.perplexity(model, windows, batch_size=batch_size, progress=False)
        assert result.tokens == count == 5 * 31
        assert result.windows == 5
        assert result.nll_mean == pytest.approx(nll / count, rel=1e-6)
        assert result.ppl == pytest.approx(math.exp(nll / count), rel=1e-6)
    assert set(result.to_dict()) == {"ppl", "nll_mean", "tokens", "windows", "seconds"}


def test_perplexity_budget_and_progress(tiny_gpt2, capsys):
    windows = _windows(6, 16)
    result = evaluate.perplexity(tiny_gpt2, windows, max_tokens=50, progress=True)
    assert result.windows == 3 and result.tokens == 3 * 15
    assert result.ppl == pytest.approx(evaluate.perplexity(tiny_gpt2, windows[:3], progress=False).ppl)
    assert "perplexity" in capsys.readouterr().err


def test_perplexity_runs_in_eval_mode_and_restores_training(tiny_gpt2):
    windows = _windows(2, 16)
    want = evaluate.perplexity(tiny_gpt2, windows, progress=False).ppl
    tiny_gpt2.train()
    assert evaluate.perplexity(tiny_gpt2, windows, progress=False).ppl == want  # no dropout
    assert tiny_gpt2.training and tiny_gpt2.transformer.h[0].training


def test_perplexity_of_texts_matches_hand_computation(tiny_mistral):
    tok = ByteTokenizer()
    texts = ["hello there", "a", "", "x" * 40]
    result = evaluate.perplexity_of_texts(tiny_mistral, tok, texts, max_length=16)
    sequences = [[1, *b"hello there"], [1, *b"a"], [1, *(b"x" * 15)]]  # "" has no token to predict
    nll, count = 0.0, 0
    for seq in sequences:
        n, c = _hand_nll(tiny_mistral, torch.tensor([seq]))
        nll, count = nll + n, count + c
    assert result.tokens == count == 11 + 1 + 15
    assert result.windows == 3
    assert result.ppl == pytest.approx(math.exp(nll / count), rel=1e-6)
    no_bos = evaluate.perplexity_of_texts(tiny_mistral, tok, ["hello there"], bos=False)
    assert no_bos.tokens == 10


def test_compare_with_itself(tiny_mistral):
    windows = _windows(3, 24)
    result = evaluate.compare(tiny_mistral, tiny_mistral, windows, batch_size=2, progress=False)
    assert result.kl_mean == pytest.approx(0.0, abs=1e-7)
    assert result.top1_agreement == 1.0
    assert result.ppl == result.reference_ppl
    assert result.ppl == pytest.approx(evaluate.perplexity(tiny_mistral, windows, progress=False).ppl)
    assert result.tokens == 3 * 23 and result.windows == 3


def test_compare_matches_hand_kl():
    model, reference = tiny_mistral(seed=0), tiny_mistral(seed=1)
    windows = _windows(2, 20)
    result = evaluate.compare(model, reference, windows, progress=False, max_tokens=40)
    with torch.no_grad():
        log_p = model(windows).logits[:, :-1].double().log_softmax(-1)
        log_r = reference(windows).logits[:, :-1].double().log_softmax(-1)
    kl = (log_r.exp() * (log_r - log_p)).sum(-1)
    agree = (log_p.argmax(-1) == log_r.argmax(-1)).double()
    assert result.tokens == 2 * 19
    assert result.kl_mean == pytest.approx(kl.mean().item(), rel=1e-5)
    assert result.top1_agreement == pytest.approx(agree.mean().item())
    assert result.reference_ppl == pytest.approx(evaluate.perplexity(reference, windows, progress=False).ppl)
    assert result.kl_mean > 0
    assert set(result.to_dict()) >= {"kl_mean", "top1_agreement", "ppl", "reference_ppl"}


def test_eval_windows_uses_eval_length(tiny_gpt2):
    text = "The quick brown fox jumps over the lazy dog. " * 20
    windows = evaluate.eval_windows(tiny_gpt2, ByteTokenizer(), text)
    assert windows.shape == (len(text) // 128, 128)  # n_positions 128 caps GPT-2's 1024
    windows = evaluate.eval_windows(tiny_gpt2, ByteTokenizer(), data.TextSource("t", text, "t"), 64, max_tokens=300)
    assert windows.shape == (4, 64)


@pytest.mark.parametrize(
    "windows, kwargs, match",
    [
        (torch.zeros(16, dtype=torch.long), {}, "2-D int64 tensor .num_windows, length.; got a 1-D"),
        (torch.zeros(2, 8), {}, "got a 2-D torch.float32"),
        (torch.zeros(2, 1, dtype=torch.long), {}, "at least one window of ≥ 2 tokens; got shape .2, 1."),
        (torch.full((2, 8), 512), {}, r"ids must lie in \[0, 512\).*got ids in \[512, 512\]"),
        (torch.zeros(2, 8, dtype=torch.long), {"max_tokens": 7}, "max_tokens=7 is less than one window of 8"),
        (torch.zeros(2, 8, dtype=torch.long), {"batch_size": 0}, "batch_size must be a positive int"),
    ],
)
def test_perplexity_bad_input(tiny_gpt2, windows, kwargs, match):
    with pytest.raises(ValueError, match=match):
        evaluate.perplexity(tiny_gpt2, windows, progress=False, **kwargs)


def test_compare_needs_one_vocabulary(tiny_gpt2):
    from transformers import GPT2Config, GPT2LMHeadModel

    other = GPT2LMHeadModel(GPT2Config(vocab_size=600, n_embd=32, n_layer=1, n_head=2, n_positions=32)).eval()
    with pytest.raises(ValueError, match="one vocabulary; got logits .1, 7, 512. and .1, 7, 600."):
        evaluate.compare(tiny_gpt2, other, torch.zeros(1, 8, dtype=torch.long), progress=False)


def test_windows_longer_than_the_context_are_a_clear_error(tiny_gpt2):
    windows = torch.zeros(1, tiny_gpt2.config.n_positions + 1, dtype=torch.long)
    with pytest.raises(ValueError, match=r"windows of 129 tokens are longer than this model's context of 128"):
        evaluate.perplexity(tiny_gpt2, windows, progress=False)
