"""Teacher-forced evaluation of an early-exit policy (:class:`~tcompress.early_exit.runtime.EarlyExitLM`): the
policy's perplexity, agreement and KL against the full model, its mean depth, and the threshold sweep.

:func:`policy_logits` steps a batch of windows position by position, each row with its own exit decision: a row that
has exited keeps its exit hidden state through the remaining blocks, whose caches thus receive the same propagated
keys/values as in generation.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..models import execution_device
from ..nn.exit_head import ExitHeads
from ..ops import exit_gate
from .runtime import EarlyExitLM


@dataclass
class ExitEvalResult:
    """Teacher-forced measurement of an exit policy over windows (:func:`evaluate_exit_policy`).

    Attributes:
        threshold: the gate threshold (None for a forced-depth policy).
        check_layers: the checkpoint depths.
        ppl: perplexity of the emitted distributions.
        ppl_full: perplexity of the full model on the same tokens.
        agreement: fraction of positions whose emitted argmax equals the full model's.
        kl_mean: mean KL(p_full ‖ p_emitted) per position, nats.
        mean_depth: mean blocks run per token (exited tokens count their exit depth).
        depth_fraction: mean_depth / num_blocks.
        exit_counts: {depth: tokens that stopped there} (the full depth included).
        tokens: predicted positions.
    """

    threshold: float | None
    check_layers: list[int]
    ppl: float
    ppl_full: float
    agreement: float
    kl_mean: float
    mean_depth: float
    depth_fraction: float
    exit_counts: dict[int, int] = field(default_factory=dict)
    tokens: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-serializable dict."""
        d = asdict(self)
        d["exit_counts"] = {str(k): v for k, v in self.exit_counts.items()}
        return d


def _check_batch_size(who: str, batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"{who}: batch_size must be a positive int (windows per step); got {batch_size!r}")


def _check_forced(runner: EarlyExitLM, forced_depths: torch.Tensor | None, shape: torch.Size) -> torch.Tensor | None:
    """forced_depths (B, L) -> the same as int64 on the CPU (exit decisions are made on the host), checked."""
    if forced_depths is None:
        return None
    forced = torch.as_tensor(forced_depths).long().cpu()
    if forced.shape != shape:
        raise ValueError(
            f"policy_logits: forced_depths must have the shape of ids {tuple(shape)}; got {tuple(forced.shape)}"
        )
    allowed = {*runner.heads.depths, runner.stepper.num_blocks}
    bad = sorted(set(forced.unique().tolist()) - allowed)
    if bad:
        raise ValueError(
            f"policy_logits: forced_depths must be head depths {list(runner.heads.depths)} or the full depth "
            f"{runner.stepper.num_blocks}; got {bad}"
        )
    return forced


def _step_rows(
    runner: EarlyExitLM, tokens: torch.Tensor, position: int, cache, force: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """tokens (B, 1) at ``position`` -> ((B, vocab) emitted logits, (B,) int64 CPU depths): one step of B rows.

    Block i runs on all B rows at once. A row that has exited keeps its exit hidden state as the input of every later
    block, so the keys/values the block caches for that row are exactly CALM's fill (what
    :meth:`BlockStepper.fill_kv` computes from that state), and the block's output for the row is discarded. Once
    every row has exited, the remaining blocks only fill keys/values. ``force`` (B,) replaces the gate by an exit
    depth per row.
    """
    stepper, heads = runner.stepper, runner.heads
    rows, num_blocks = tokens.shape[0], stepper.num_blocks
    position_ids = torch.full((rows, 1), position, dtype=torch.long, device=tokens.device)
    h = stepper.embed(tokens, position_ids)
    ctx = stepper.context(h, position_ids, cache)
    depths = torch.full((rows,), num_blocks, dtype=torch.long)
    running = torch.ones(rows, dtype=torch.bool)
    emitted: torch.Tensor | None = None

    def emit(index: torch.Tensor, logits: torch.Tensor, depth: int) -> None:
        nonlocal emitted
        if emitted is None:
            emitted = logits.new_empty(rows, logits.shape[-1])
        emitted[index.to(emitted.device)] = logits.to(emitted.device)
        depths[index] = depth
        running[index] = False

    for i in range(num_blocks):
        if not running.any():
            stepper.fill_kv(i, h, ctx, cache)
            continue
        h_new = stepper.run_block(i, h, ctx, cache)
        h = h_new if running.all() else torch.where(running.to(h_new.device)[:, None, None], h_new, h.to(h_new.device))
        depth = i + 1
        if depth == num_blocks:
            break
        if force is not None:
            index = (running & (force == depth)).nonzero()[:, 0]
            if index.numel():
                emit(index, heads.logits(depth, h[index.to(h.device), -1]), depth)
        elif runner._check_after[i]:
            index = running.nonzero()[:, 0]
            logits = heads.head(heads.head_input(depth, h[index.to(h.device), -1]))
            confident = exit_gate(logits.float(), runner.threshold, runner.criterion).exit_mask.cpu()
            if confident.any():
                emit(index[confident], logits[confident.to(logits.device)], depth)
    if running.any():
        index = running.nonzero()[:, 0]
        emit(index, stepper.logits(h[index.to(h.device), -1]), num_blocks)
    assert emitted is not None  # every row either exited or ran the last block
    return emitted, depths


@torch.inference_mode()
def policy_logits(
    runner: EarlyExitLM, ids: torch.Tensor, forced_depths: torch.Tensor | None = None, prompt_length: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """ids (B, L) -> ((B, L, vocab) emitted logits, (B, L) int64 depths): the policy run on B texts, position by
    position, all rows in one step.

    Position t of every row is fed the true token t (teacher forcing) and attends over the cache the policy built
    for 0..t-1, so the skipped blocks' propagated keys/values affect later tokens exactly as in generation. Each row
    makes its own exit decision; per row the result is that of :meth:`EarlyExitLM.step` token by token, up to the
    rounding of batched GEMMs. (The gate reads the head's logits in the model's dtype, where ``step``'s fused
    head-and-gate of a plain linear head accumulates in fp32; in an fp32 model the two differ by rounding only.)

    Args:
        runner: the policy.
        ids: (B, L) integer token ids, on the model's input device.
        forced_depths: (B, L) exit depths (each a head depth or the number of blocks) replacing the gate.
        prompt_length: the first ``prompt_length`` positions run every block, as the prompt does in
            :meth:`EarlyExitLM.generate`.

    Raises:
        ValueError: ids that are not (B, L) integer ids, or forced depths of another shape or without a head.
    """
    if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.shape[0] < 1 or ids.shape[1] < 1:
        what = f"shape {tuple(ids.shape)}" if isinstance(ids, torch.Tensor) else type(ids).__name__
        raise ValueError(f"policy_logits: ids must be (B, L) token ids with B, L >= 1; got {what}")
    if ids.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"policy_logits: ids must hold integer token ids; got {ids.dtype}")
    forced = _check_forced(runner, forced_depths, ids.shape)
    rows, length = ids.shape
    full_depth = torch.full((rows,), runner.stepper.num_blocks, dtype=torch.long)
    cache = runner.new_cache()
    emitted: torch.Tensor | None = None
    depths = torch.empty(rows, length, dtype=torch.long)
    for t in range(length):
        force = forced[:, t] if forced is not None else full_depth if t < prompt_length else None
        logits, depths[:, t] = _step_rows(runner, ids[:, t : t + 1], t, cache, force)
        if emitted is None:
            emitted = logits.new_empty(rows, length, logits.shape[-1])
        emitted[:, t] = logits
    assert emitted is not None
    return emitted, depths


@dataclass
class PolicyTokens:
    """Per predicted position of B windows under an exit policy (:func:`policy_tokens`): (B, L-1) CPU tensors.

    Attributes:
        nll: float32 next-token NLL of the emitted distribution.
        nll_full: float32 next-token NLL of the full model.
        kl: float32 KL(p_full ‖ p_emitted), nats.
        agree: bool, the emitted argmax equals the full model's.
        depths: int64 blocks run.
    """

    nll: torch.Tensor
    nll_full: torch.Tensor
    kl: torch.Tensor
    agree: torch.Tensor
    depths: torch.Tensor


@torch.inference_mode()
def policy_tokens(runner: EarlyExitLM, ids: torch.Tensor, forced_depths: torch.Tensor | None = None) -> PolicyTokens:
    """ids (B, L) -> :class:`PolicyTokens`: :func:`policy_logits` against one full forward of the model.

    Positions 0..L-2 predict tokens 1..L-1. The log-softmaxes are taken one window at a time, so the peak memory is
    the two (B, L, vocab) logit tensors plus a few (L, vocab) ones.
    """
    emitted, depths = policy_logits(runner, ids, forced_depths)
    full = runner.model(ids, use_cache=False).logits
    columns: dict[str, list[torch.Tensor]] = {"nll": [], "nll_full": [], "kl": [], "agree": []}
    for b in range(ids.shape[0]):
        log_p = F.log_softmax(emitted[b, :-1].float(), dim=-1)
        log_r = F.log_softmax(full[b, :-1].to(log_p.device).float(), dim=-1)
        target = ids[b, 1:, None].to(log_p.device).long()
        columns["nll"].append(-log_p.gather(-1, target)[:, 0].cpu())
        columns["nll_full"].append(-log_r.gather(-1, target)[:, 0].cpu())
        columns["kl"].append(F.kl_div(log_p, log_r, log_target=True, reduction="none").sum(-1).cpu())
        columns["agree"].append((log_p.argmax(-1) == log_r.argmax(-1)).cpu())
    return PolicyTokens(**{k: torch.stack(v) for k, v in columns.items()}, depths=depths[:, :-1])


@torch.inference_mode()
def evaluate_exit_policy(
    runner: EarlyExitLM,
    windows: torch.Tensor,
    *,
    forced_depths: torch.Tensor | None = None,
    batch_size: int = 8,
    progress: bool = False,
) -> ExitEvalResult:
    """Teacher-forced perplexity, top-1 agreement with the full model, KL and mean depth of ``runner``'s policy.

    Tokens 1..L-1 of each window are predicted, as in :func:`tcompress.evaluate.perplexity` (with a gate that never
    fires the two agree to fp32 rounding). ``batch_size`` windows step together (:func:`policy_logits`); the result
    does not depend on it beyond rounding. ``forced_depths`` (n, L) exits each position at a given depth instead.

    Raises:
        ValueError: windows that are not (n, L) integer ids with L >= 2, forced depths of another shape, or a
            batch size that is not a positive int.
    """
    if not isinstance(windows, torch.Tensor) or windows.dim() != 2 or windows.shape[1] < 2:
        raise ValueError(f"evaluate_exit_policy: windows must be (n, L >= 2) int64 ids; got {windows!r:.80}")
    _check_batch_size("evaluate_exit_policy", batch_size)
    if forced_depths is not None and tuple(forced_depths.shape) != tuple(windows.shape):
        raise ValueError(
            f"evaluate_exit_policy: forced_depths must have the shape of windows {tuple(windows.shape)}; got "
            f"{tuple(forced_depths.shape)}"
        )
    device = execution_device(runner.model.get_input_embeddings())
    nll = nll_full = kl = 0.0
    agree = tokens = depth_sum = 0
    counts: Counter[int] = Counter()
    starts = range(0, windows.shape[0], batch_size)
    for start in tqdm(starts, desc="exit policy", unit="batch", disable=not progress):
        ids = windows[start : start + batch_size].long().to(device)
        forced = None if forced_depths is None else forced_depths[start : start + batch_size]
        result = policy_tokens(runner, ids, forced)
        nll += float(result.nll.double().sum())
        nll_full += float(result.nll_full.double().sum())
        kl += float(result.kl.double().sum())
        agree += int(result.agree.sum())
        tokens += result.depths.numel()
        depth_sum += int(result.depths.sum())
        counts.update(result.depths.flatten().tolist())
    mean_depth = depth_sum / tokens
    return ExitEvalResult(
        threshold=None if forced_depths is not None else runner.threshold,
        check_layers=list(runner.check_layers),
        ppl=math.exp(nll / tokens),
        ppl_full=math.exp(nll_full / tokens),
        agreement=agree / tokens,
        kl_mean=kl / tokens,
        mean_depth=mean_depth,
        depth_fraction=mean_depth / runner.stepper.num_blocks,
        exit_counts=dict(sorted(counts.items())),
        tokens=tokens,
    )


def threshold_sweep(
    model: nn.Module,
    heads: ExitHeads,
    windows: torch.Tensor,
    thresholds: list[float],
    check_layers: list[int],
    criterion: str = "max_prob",
    progress: bool = False,
    batch_size: int = 8,
) -> list[ExitEvalResult]:
    """One :func:`evaluate_exit_policy` per threshold (``batch_size`` windows per step): the speed/quality curve
    (mean depth vs perplexity)."""
    return [
        evaluate_exit_policy(
            EarlyExitLM(model, heads, t, check_layers, criterion), windows, batch_size=batch_size, progress=progress
        )
        for t in thresholds
    ]
