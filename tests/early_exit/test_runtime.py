"""EarlyExitLM: exact with a gate that never fires, complete caches when it always fires, K/V fill equal to what the
skipped block itself would cache, teacher-forced evaluation equal to evaluate.perplexity without exits."""

from __future__ import annotations

import pytest
import torch
from model_factories import deeper, tiny_gpt2, tiny_llama, tiny_mistral
from tcompress.early_exit.policy import evaluate_exit_policy, policy_logits, threshold_sweep
from tcompress.early_exit.runtime import EarlyExitLM, full_model_generate
from tcompress.evaluate import perplexity
from tcompress.models import block_stepper, cache_kwargs
from tcompress.recipes.exit_heads import build_exit_heads

FACTORIES = [tiny_llama, tiny_mistral, tiny_gpt2]
NEVER = 2.0  # max_prob never reaches 2
ALWAYS = 0.0  # max_prob is always >= 0


def _trained_like(heads):
    """Heads with random (non-zero) translators, so head outputs differ from the lens."""
    with torch.no_grad():
        for p in heads.parameters():
            p.normal_(0, 0.05)
    return heads


@pytest.mark.parametrize("factory", FACTORIES, ids=lambda f: f.__name__)
def test_never_exiting_reproduces_the_full_model(factory):
    model = deeper(factory)
    heads = _trained_like(build_exit_heads(model, [1, 2, 3]))
    prompt = torch.randint(3, 512, (1, 5))
    runner = EarlyExitLM(model, heads, NEVER, [1, 2, 3])
    ours = runner.generate(prompt, 12)
    plain = full_model_generate(model, prompt, 12)
    assert torch.equal(ours.tokens, plain.tokens)
    assert ours.depths == [4] * 12
    # Logits at every generated position agree with one full forward pass over the whole sequence.
    emitted, depths = policy_logits(runner, ours.tokens)
    with torch.no_grad():
        full = model(ours.tokens, use_cache=False).logits
    torch.testing.assert_close(emitted, full, rtol=1e-5, atol=1e-5)
    assert depths.tolist() == [[4] * ours.tokens.shape[1]]


@pytest.mark.parametrize("factory", FACTORIES, ids=lambda f: f.__name__)
def test_always_exiting_fills_the_skipped_caches(factory):
    model = deeper(factory)
    heads = _trained_like(build_exit_heads(model, [1, 2, 3]))
    prompt = torch.randint(3, 512, (1, 4))
    runner = EarlyExitLM(model, heads, ALWAYS, [2, 3])
    cache = runner.new_cache()
    logits = runner.prefill(prompt, cache)
    token = logits.argmax(-1, keepdim=True)
    for _ in range(6):
        logits, depth = runner.step(token, cache)
        assert depth == 2
        token = logits.argmax(-1, keepdim=True)
    lengths = [layer.keys.shape[-2] for layer in cache.layers]
    assert lengths == [4 + 6] * 4
    out = runner.generate(prompt, 8)
    assert out.tokens.shape == (1, 12) and out.depths == [4] + [2] * 7
    # Teacher-forcing the generated text through the same policy emits the same tokens: generation and evaluation
    # build the same caches.
    emitted, _ = policy_logits(runner, out.tokens[:, :-1], prompt_length=prompt.shape[1])
    assert torch.equal(emitted[0, prompt.shape[1] - 1 :].argmax(-1), out.tokens[0, prompt.shape[1] :])


@pytest.mark.parametrize("factory", FACTORIES, ids=lambda f: f.__name__)
def test_kv_fill_equals_what_the_block_itself_caches(factory):
    model = deeper(factory)
    stepper = block_stepper(model)
    prefix = torch.randint(3, 512, (1, 3))
    h_new = torch.randn(1, 2, 64)
    for i in range(stepper.num_blocks):
        caches = []
        for _ in range(2):
            cache = stepper.new_cache()
            with torch.no_grad():
                model(prefix, use_cache=True, **cache_kwargs(type(model).forward, cache))
            caches.append(cache)
        position_ids = torch.arange(3, 5)[None]
        with torch.no_grad():
            ctx = stepper.context(h_new, position_ids, caches[0])
            stepper.run_block(i, h_new, ctx, caches[0])  # the block's own write
            stepper.fill_kv(i, h_new, ctx, caches[1])  # only its K/V projections
        for a, b in (
            (caches[0].layers[i].keys, caches[1].layers[i].keys),
            (caches[0].layers[i].values, caches[1].layers[i].values),
        ):
            assert a.shape == b.shape == (1, a.shape[1], 5, a.shape[-1])
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("factory", FACTORIES, ids=lambda f: f.__name__)
def test_teacher_forced_without_exits_equals_perplexity(factory):
    model = deeper(factory, layers=3)
    heads = build_exit_heads(model, kind="lens")
    windows = torch.randint(0, 512, (2, 12))
    result = evaluate_exit_policy(EarlyExitLM(model, heads, NEVER, [1, 2]), windows)
    reference = perplexity(model, windows, progress=False)
    assert result.tokens == reference.tokens
    assert result.ppl == pytest.approx(reference.ppl, rel=1e-5)
    assert result.ppl_full == pytest.approx(reference.ppl, rel=1e-5)
    assert result.agreement == 1.0 and result.kl_mean == pytest.approx(0, abs=1e-5)
    assert result.mean_depth == 3 and result.exit_counts == {3: 22}


def test_threshold_sweep_goes_from_shallow_to_full_depth():
    model = deeper(tiny_llama)
    heads = _trained_like(build_exit_heads(model, [1, 2, 3]))
    windows = torch.randint(0, 512, (1, 10))
    sweep = threshold_sweep(model, heads, windows, [ALWAYS, NEVER], [1, 3])
    assert sweep[0].mean_depth == 1 and sweep[0].exit_counts == {1: 9}
    assert sweep[1].mean_depth == 4 and sweep[1].agreement == 1.0
    assert sweep[0].ppl_full == pytest.approx(sweep[1].ppl_full)
    assert sweep[0].to_dict()["exit_counts"] == {"1": 9}


def test_batched_prefill_and_sampling():
    model = deeper(tiny_mistral)
    heads = build_exit_heads(model, [2])
    runner = EarlyExitLM(model, heads, 0.5, [2])
    ids = torch.randint(3, 512, (3, 6))
    logits = runner.prefill(ids, runner.new_cache())
    with torch.no_grad():
        torch.testing.assert_close(logits, model(ids).logits[:, -1], rtol=1e-5, atol=1e-5)
    prompt = ids[:1]
    a = runner.generate(prompt, 6, do_sample=True, top_k=20, generator=torch.Generator().manual_seed(3))
    b = runner.generate(prompt, 6, do_sample=True, top_k=20, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.tokens, b.tokens) and a.tokens.shape == (1, 12)


def test_bad_inputs_are_clear_errors():
    model = deeper(tiny_llama)
    heads = build_exit_heads(model, [1, 2])
    with pytest.raises(ValueError, match=r"check_layers \[3\] have no exit head"):
        EarlyExitLM(model, heads, 0.9, [1, 3])
    with pytest.raises(ValueError, match="criterion must be one of"):
        EarlyExitLM(model, heads, 0.9, [1], criterion="vibes")
    runner = EarlyExitLM(model, heads, 0.9, [1])
    with pytest.raises(ValueError, match=r"prompt must be \(1, T\)"):
        runner.generate(torch.zeros(2, 3, dtype=torch.long), 4)
    with pytest.raises(ValueError, match="integer token ids"):
        runner.generate(torch.zeros(1, 3), 4)
    with pytest.raises(ValueError, match="max_new_tokens must be a positive int"):
        runner.generate(torch.zeros(1, 3, dtype=torch.long), 0)
    with pytest.raises(ValueError, match="windows must be"):
        evaluate_exit_policy(runner, torch.zeros(4, dtype=torch.long))
    windows = torch.zeros(2, 5, dtype=torch.long)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        evaluate_exit_policy(runner, windows, batch_size=0)
    with pytest.raises(ValueError, match=r"forced_depths must have the shape of windows \(2, 5\)"):
        evaluate_exit_policy(runner, windows, forced_depths=torch.ones(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"forced_depths must be head depths \[1, 2\] or the full depth 4; got \[3\]"):
        policy_logits(runner, windows, torch.full((2, 5), 3))
    with pytest.raises(ValueError, match=r"ids must be \(B, L\) token ids"):
        policy_logits(runner, torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match="integer token ids"):
        policy_logits(runner, torch.zeros(2, 5))
    with pytest.raises(ValueError, match="unsupported architecture"):
        EarlyExitLM(torch.nn.Linear(2, 2), heads, 0.9, [1])
