"""Batched teacher-forced early exit equals the token-by-token batch-1 loop: per-row exit decisions, emitted logits,
the skipped blocks' propagated keys/values, and every measurement built on them (evaluate_exit_policy,
threshold_sweep, token_stats, kl_sensitivity), on tiny random GPT-2 / Mistral / Llama models and on stories260K.

The reference is the loop the library used before batching: :meth:`EarlyExitLM.step` (the batch-1 generation path,
which really skips blocks and fills their caches with ``fill_kv``) one window and one token at a time. Thresholds
come from the gate's own confidences (quantiles), and every test checks that some but not all tokens exit, so that
it cannot pass with a gate that never or always fires.
"""

from __future__ import annotations

import math
from collections import Counter

import pytest
import torch
import torch.nn.functional as F
from model_factories import deeper, tiny_gpt2, tiny_llama, tiny_mistral
from tcompress.analysis.tokens import TokenStats, kl_sensitivity, token_stats
from tcompress.data import tinystories_texts, token_windows
from tcompress.early_exit.policy import evaluate_exit_policy, policy_logits, threshold_sweep
from tcompress.early_exit.runtime import EarlyExitLM
from tcompress.models import block_outputs
from tcompress.ops import exit_gate
from tcompress.recipes.exit_heads import build_exit_heads

FACTORIES = [tiny_gpt2, tiny_mistral, tiny_llama]


def _tiny_setup(factory):
    """(model, tuned heads with random translators at depths 1..3, (5, 12) windows)."""
    model = deeper(factory)
    heads = build_exit_heads(model, [1, 2, 3])
    with torch.no_grad():
        for p in heads.parameters():
            p.normal_(0, 0.05)
    torch.manual_seed(5)
    return model, heads, torch.randint(0, 512, (5, 12))


def _stories_setup(stories260k):
    """(model, logit-lens heads at depths 1..4, (6, 32) windows of TinyStories)."""
    model, tokenizer = stories260k
    try:
        text = "\n".join(tinystories_texts())
    except FileNotFoundError as err:
        pytest.skip(f"asset missing: {err}")
    windows = token_windows(text, tokenizer, 32, bos=True)[:6]
    return model, build_exit_heads(model, [1, 2, 3, 4], kind="lens"), windows


@torch.no_grad()
def _confidence_quantile(model, heads, windows, depth, q, criterion="max_prob"):
    """The q-quantile of the gate's confidence at ``depth`` over the full model's hidden states."""
    hidden, _ = block_outputs(model, windows)
    logits = heads.logits(depth, hidden[depth - 1]).flatten(0, 1)
    return float(exit_gate(logits.float(), 0.0, criterion).confidence.quantile(q))


# ---------------------------------------------------------------------------------------------------------------
# The batch-1 reference: the library's former loop, one window and one token at a time through EarlyExitLM.step.
# ---------------------------------------------------------------------------------------------------------------


def _reference_policy(runner, ids, forced=None, prompt_length=0):
    """ids (1, L) -> ((L, vocab) emitted logits, [depth] * L) through EarlyExitLM.step."""
    cache = runner.new_cache()
    rows, depths = [], []
    for t in range(ids.shape[1]):
        force = None if forced is None else int(forced[t])
        if t < prompt_length:
            force = runner.stepper.num_blocks
        logits, depth = runner.step(ids[:, t : t + 1], cache, force_depth=force)
        rows.append(logits[0])
        depths.append(depth)
    return torch.stack(rows), depths


@torch.no_grad()
def _reference_evaluate(runner, windows, forced_depths=None):
    """What evaluate_exit_policy measured at batch 1, plus the per-token depths (n, L-1) and KL."""
    nll = nll_full = 0.0
    kls, agree, depths = [], 0, []
    for w in range(windows.shape[0]):
        ids = windows[w : w + 1]
        emitted, d = _reference_policy(runner, ids, None if forced_depths is None else forced_depths[w])
        full = runner.model(ids, use_cache=False).logits[0]
        log_p = F.log_softmax(emitted[:-1].float(), dim=-1)
        log_r = F.log_softmax(full[:-1].float(), dim=-1)
        target = ids[0, 1:, None]
        nll -= float(log_p.gather(-1, target).double().sum())
        nll_full -= float(log_r.gather(-1, target).double().sum())
        kls.append(F.kl_div(log_p, log_r, log_target=True, reduction="none").sum(-1))
        agree += int((log_p.argmax(-1) == log_r.argmax(-1)).sum())
        depths.append(d[:-1])
    tokens = windows.shape[0] * (windows.shape[1] - 1)
    flat = [d for row in depths for d in row]
    return {
        "ppl": math.exp(nll / tokens),
        "ppl_full": math.exp(nll_full / tokens),
        "agreement": agree / tokens,
        "kl_mean": float(torch.cat(kls).double().sum()) / tokens,
        "mean_depth": sum(flat) / tokens,
        "exit_counts": dict(sorted(Counter(flat).items())),
        "depths": depths,
        "kl": torch.stack(kls),
        "tokens": tokens,
    }


def _assert_some_but_not_all_exit(depths, num_blocks):
    flat = torch.as_tensor(depths).flatten()
    exited = int((flat < num_blocks).sum())
    assert 0 < exited < flat.numel(), f"{exited} of {flat.numel()} tokens exit: the comparison would be vacuous"


def _assert_policy_matches(runner, windows, forced=None, prompt_length=0):
    """policy_logits on all windows at once against the reference per window: logits close, depths equal."""
    emitted, depths = policy_logits(runner, windows, forced, prompt_length)
    assert emitted.shape == (*windows.shape, runner.stepper.head.out_features) and depths.shape == windows.shape
    for w in range(windows.shape[0]):
        ref_logits, ref_depths = _reference_policy(
            runner, windows[w : w + 1], None if forced is None else forced[w], prompt_length
        )
        assert depths[w].tolist() == ref_depths, f"window {w}"
        torch.testing.assert_close(emitted[w], ref_logits, rtol=1e-5, atol=1e-5)
    return depths


def _assert_eval_matches(result, reference):
    assert result.tokens == reference["tokens"]
    assert result.exit_counts == reference["exit_counts"]
    assert result.mean_depth == reference["mean_depth"]
    assert result.agreement == reference["agreement"]
    assert result.ppl == pytest.approx(reference["ppl"], rel=1e-5)
    assert result.ppl_full == pytest.approx(reference["ppl_full"], rel=1e-5)
    assert result.kl_mean == pytest.approx(reference["kl_mean"], rel=1e-4, abs=1e-7)


# ---------------------------------------------------------------------------------------------------------------
# policy_logits: gated, forced and prompt policies.
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("factory", "criterion"),
    [(f, "max_prob") for f in FACTORIES] + [(tiny_llama, "margin"), (tiny_llama, "entropy")],
    ids=lambda x: getattr(x, "__name__", x),
)
def test_gated_policy_equals_token_by_token(factory, criterion):
    model, heads, windows = _tiny_setup(factory)
    threshold = _confidence_quantile(model, heads, windows, 1, 0.5, criterion)
    runner = EarlyExitLM(model, heads, threshold, [1, 3], criterion)
    depths = _assert_policy_matches(runner, windows)
    _assert_some_but_not_all_exit(depths, 4)
    assert {1, 4} <= set(depths.flatten().tolist())  # the first checkpoint and the full depth both occur


@pytest.mark.parametrize("factory", FACTORIES, ids=lambda f: f.__name__)
def test_forced_prompt_and_all_exiting_policies_equal_token_by_token(factory):
    model, heads, windows = _tiny_setup(factory)
    forced = torch.tensor([1, 2, 3, 4])[torch.randint(0, 4, windows.shape, generator=torch.Generator().manual_seed(1))]
    runner = EarlyExitLM(model, heads, 2.0, [])
    _assert_policy_matches(runner, windows, forced)
    # A prompt that runs every block, then the gate.
    threshold = _confidence_quantile(model, heads, windows, 2, 0.5)
    depths = _assert_policy_matches(EarlyExitLM(model, heads, threshold, [2]), windows, prompt_length=4)
    assert (depths[:, :4] == 4).all()
    _assert_some_but_not_all_exit(depths[:, 4:], 4)
    # Every row exits at the first checkpoint: the remaining blocks only fill keys/values.
    depths = _assert_policy_matches(EarlyExitLM(model, heads, 0.0, [1, 2]), windows)
    assert (depths == 1).all()


# ---------------------------------------------------------------------------------------------------------------
# evaluate_exit_policy / threshold_sweep.
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("factory", FACTORIES, ids=lambda f: f.__name__)
def test_sweep_in_batches_equals_batch_one(factory):
    model, heads, windows = _tiny_setup(factory)
    thresholds = [_confidence_quantile(model, heads, windows, 1, q) for q in (0.3, 0.7)]
    for batch_size in (2, 8):  # a ragged last batch, and one batch larger than the windows
        sweep = threshold_sweep(model, heads, windows, thresholds, [1, 3], batch_size=batch_size)
        for threshold, result in zip(thresholds, sweep):
            reference = _reference_evaluate(EarlyExitLM(model, heads, threshold, [1, 3]), windows)
            _assert_some_but_not_all_exit(reference["depths"], 4)
            _assert_eval_matches(result, reference)
    assert sweep[0].mean_depth < sweep[1].mean_depth


def test_sweep_on_stories260k_equals_batch_one(stories260k):
    model, heads, windows = _stories_setup(stories260k)
    thresholds = [_confidence_quantile(model, heads, windows, 2, q) for q in (0.4, 0.8)]
    sweep = threshold_sweep(model, heads, windows, thresholds, [2, 3, 4], batch_size=4)
    for threshold, result in zip(thresholds, sweep):
        reference = _reference_evaluate(EarlyExitLM(model, heads, threshold, [2, 3, 4]), windows)
        _assert_some_but_not_all_exit(reference["depths"], 5)
        _assert_eval_matches(result, reference)


# ---------------------------------------------------------------------------------------------------------------
# token_stats / kl_sensitivity.
# ---------------------------------------------------------------------------------------------------------------


def _check_difficulty_in_batches(model, heads, windows, num_blocks):
    stats = token_stats(model, heads, windows, batch_size=4)
    single = token_stats(model, heads, windows, batch_size=1)
    assert torch.equal(stats.agree, single.agree)
    torch.testing.assert_close(stats.kl, single.kl, rtol=1e-4, atol=1e-6)
    # τ: the median KL of the tokens whose head agrees with the final argmax, so that some but not all are easy.
    tau = float(single.kl[single.agree].median())
    exits = single.exit_depths(tau)
    _assert_some_but_not_all_exit(exits, num_blocks)
    batched = kl_sensitivity(model, heads, windows, single, tau, batch_size=4)
    one = kl_sensitivity(model, heads, windows, single, tau, batch_size=1)
    assert batched.easy_tokens == one.easy_tokens and batched.mean_depth == one.mean_depth
    for name in ("ppl_full", "ppl_skipped", "actual_kl_easy", "actual_kl_other", "predicted_kl_easy"):
        assert getattr(batched, name) == pytest.approx(getattr(one, name), rel=1e-4, abs=1e-7), name
    # And against the token-by-token reference of the same forced policy (the last position runs every block).
    forced = torch.cat([exits.view(windows.shape[0], -1), torch.full((windows.shape[0], 1), num_blocks)], 1)
    reference = _reference_evaluate(EarlyExitLM(model, heads, 2.0, []), windows, forced)
    assert batched.ppl_skipped == pytest.approx(reference["ppl"], rel=1e-5)
    assert batched.ppl_full == pytest.approx(reference["ppl_full"], rel=1e-5)
    assert batched.mean_depth == reference["mean_depth"]
    easy = exits < num_blocks
    assert batched.actual_kl_easy == pytest.approx(float(reference["kl"].flatten()[easy].double().mean()), rel=1e-4)
    # evaluate_exit_policy with the same forced depths measures the same policy.
    forced_eval = evaluate_exit_policy(EarlyExitLM(model, heads, 2.0, []), windows, forced_depths=forced, batch_size=3)
    _assert_eval_matches(forced_eval, reference)
    assert forced_eval.threshold is None


@pytest.mark.parametrize("factory", FACTORIES, ids=lambda f: f.__name__)
def test_difficulty_and_sensitivity_in_batches_equal_batch_one(factory):
    model, heads, windows = _tiny_setup(factory)
    _check_difficulty_in_batches(model, heads, windows, 4)


def test_difficulty_and_sensitivity_on_stories260k_in_batches(stories260k):
    model, heads, windows = _stories_setup(stories260k)
    _check_difficulty_in_batches(model, heads, windows, 5)


def test_batch_size_errors():
    model, heads, windows = _tiny_setup(tiny_llama)
    with pytest.raises(ValueError, match="token_stats: batch_size must be a positive int"):
        token_stats(model, heads, windows, batch_size=0)
    stats = TokenStats([1, 2, 3], 4, torch.zeros(55, 3), torch.ones(55, 3, dtype=torch.bool), 12)
    with pytest.raises(ValueError, match="kl_sensitivity: batch_size must be a positive int"):
        kl_sensitivity(model, heads, windows, stats, 0.1, batch_size=True)
    with pytest.raises(ValueError, match="threshold_sweep|evaluate_exit_policy: batch_size"):
        threshold_sweep(model, heads, windows, [0.5], [1], batch_size=-1)
