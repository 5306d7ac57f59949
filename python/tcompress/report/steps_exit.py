"""The report's early-exit step: exit heads (logit lens and trained translators), easy-token curves, the KL
sensitivity check (with its null of random tokens), the teacher-forced threshold sweep, and real batch-1 decoding
speed of :class:`EarlyExitLM`."""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import nn

from ..analysis.tokens import TokenStats, kl_sensitivity, summarize, token_stats
from ..early_exit import EarlyExitLM, full_model_generate, threshold_sweep
from ..nn.exit_head import ExitHeads
from ..recipes.exit_heads import build_exit_heads, head_parameter_report, train_exit_heads
from .budgets import depth_blocks
from .context import ReportContext, source_windows

#: The τ (nats) of the KL-sensitivity check: a token is judged easy at a depth whose head is within τ of the final
#: distribution.
SENSITIVITY_TAU = 0.1
#: The seed of the KL-sensitivity check's null: as many tokens drawn at random, exiting at the easy tokens' depths.
SENSITIVITY_NULL_SEED = 0
#: The gate threshold decoding speed is measured at.
SPEED_THRESHOLD = 0.9
#: Windows per step of the token-difficulty forwards, the KL-sensitivity check and the teacher-forced sweep (results
#: do not depend on it beyond fp32 rounding; memory grows with it: two (batch, length, vocab) logit tensors).
BATCH_SIZE = 8
#: A threshold the max-probability gate can never pass: EarlyExitLM's own loop with every check and no exit.
NEVER = 2.0


def first_windows(stats: TokenStats, n: int) -> TokenStats:
    """The token statistics of the first ``n`` windows (positions are stored window after window)."""
    rows = n * (stats.window_length - 1)
    return TokenStats(stats.depths, stats.num_blocks, stats.kl[:rows], stats.agree[:rows], stats.window_length)


def decoding_speed(
    model: nn.Module,
    heads: ExitHeads,
    prompt: torch.Tensor,
    new_tokens: int,
    repeats: int,
    threshold: float,
    check_layers: list[int],
) -> dict[str, Any]:
    """Tokens/s of batch-1 greedy decoding: the plain model loop, EarlyExitLM at ``threshold``, and EarlyExitLM that
    never exits, run alternately ``repeats`` times (best of each), so machine noise hits all three alike."""
    runners = {
        "full_model_loop": lambda: full_model_generate(model, prompt, new_tokens),
        "early_exit": lambda: EarlyExitLM(model, heads, threshold, check_layers).generate(prompt, new_tokens),
        "early_exit_never": lambda: EarlyExitLM(model, heads, NEVER, check_layers).generate(prompt, new_tokens),
    }
    seconds: dict[str, list[float]] = {k: [] for k in runners}
    outputs = {}
    for _ in range(repeats):
        for name, run in runners.items():
            outputs[name] = run()
            seconds[name].append(outputs[name].seconds)
    best = {k: min(v) for k, v in seconds.items()}
    depths = outputs["early_exit"].depths
    return {
        "new_tokens": new_tokens,
        "repeats": repeats,
        "threshold": threshold,
        "check_layers": check_layers,
        "seconds": seconds,
        "tokens_per_s": {k: new_tokens / v for k, v in best.items()},
        "speedup_vs_full_loop": best["full_model_loop"] / best["early_exit"],
        "speedup_vs_never_exit": best["early_exit_never"] / best["early_exit"],
        "mean_depth_generated": sum(depths[1:]) / max(len(depths) - 1, 1),
        "same_tokens_as_full": bool(torch.equal(outputs["early_exit"].tokens, outputs["full_model_loop"].tokens)),
    }


def early_exit(ctx: ReportContext) -> dict[str, Any]:
    """Trains exit heads on the calibration windows, measures token difficulty on evaluation text, checks what
    skipping really costs, sweeps the gate threshold and times decoding."""
    budget, model = ctx.budget, ctx.model
    depths = depth_blocks(budget.exit_depths, ctx.num_blocks)
    length = min(budget.exit_length, ctx.eval_windows.shape[1])
    windows = source_windows(ctx.eval_source, ctx.tokenizer, length, max_tokens=None)[: budget.exit_windows]
    lens = build_exit_heads(model, depths, kind="lens")
    tuned = build_exit_heads(model, depths, kind="tuned")
    start = time.perf_counter()
    training = train_exit_heads(
        tuned,
        model,
        ctx.calib_windows,
        steps=budget.exit_train_steps,
        tokens_per_step=budget.exit_tokens_per_step,
        progress=False,
    )
    ctx.log(f"  trained heads at depths {depths} in {time.perf_counter() - start:.0f} s")
    result: dict[str, Any] = {
        "depths": depths,
        "num_blocks": ctx.num_blocks,
        "windows": list(windows.shape),
        "training": training,
        "head_cost": head_parameter_report(tuned, model),
    }
    sweep_windows = windows[: budget.sweep_windows]
    for kind, heads in (("lens", lens), ("tuned", tuned)):
        stats = token_stats(model, heads, windows, batch_size=BATCH_SIZE)
        summary = summarize(stats, kind, budget.exit_taus).to_dict()
        result[f"difficulty_{kind}"] = summary
        result[f"sensitivity_{kind}"] = kl_sensitivity(
            model,
            heads,
            sweep_windows,
            first_windows(stats, sweep_windows.shape[0]),
            SENSITIVITY_TAU,
            batch_size=BATCH_SIZE,
            seed=SENSITIVITY_NULL_SEED,
        ).to_dict()
        result[f"sweep_{kind}"] = [
            r.to_dict()
            for r in threshold_sweep(
                model, heads, sweep_windows, list(budget.exit_thresholds), depths, batch_size=BATCH_SIZE
            )
        ]
        tau = f"{max(budget.exit_taus):g}"
        ctx.log(
            f"  {kind}: strict easy fraction (τ = {tau}) by 50% depth {summary['exit_by_50pct'][tau]:.3f}, "
            f"by 75% {summary['exit_by_75pct'][tau]:.3f}"
        )
    if budget.speed_tokens > 0:
        prompt = windows[:1, :16]
        result["speed"] = decoding_speed(
            model, tuned, prompt, budget.speed_tokens, budget.speed_repeats, SPEED_THRESHOLD, depths
        )
        s = result["speed"]
        ctx.log(
            f"  decoding: {s['speedup_vs_full_loop']:.2f}x the plain loop at threshold {SPEED_THRESHOLD} "
            f"(mean depth {s['mean_depth_generated']:.1f} of {ctx.num_blocks})"
        )
    return result
