"""Adaptive-depth inference: generation that really skips the blocks after a confident exit head, and the
teacher-forced evaluation of the same policy.

Per generated token, :class:`EarlyExitLM` runs the blocks in order; after each checkpoint depth it reads the exit head
there and asks :func:`tcompress.ops.exit_gate` whether the head is confident. If it is, the token is emitted from that
head and the remaining blocks are skipped. Later tokens still attend to this token in the skipped blocks, so their
keys and values are filled by running only those blocks' attention norm and K/V projections on the exited hidden state
(CALM's state propagation); the cache is the standard ``transformers`` ``DynamicCache``.

The teacher-forced evaluation (:func:`policy_logits`, :func:`evaluate_exit_policy`, :func:`threshold_sweep`) steps
a batch of windows position by position, each row with its own exit decision: a row that has exited keeps its exit
hidden state through the remaining blocks, whose caches thus receive the same propagated keys/values.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..models import block_stepper, execution_device
from ..nn.exit_head import ExitHeads
from ..ops import exit_gate, exit_gate_head
from ..ops.exit_gate import CRITERIA


@dataclass(frozen=True)
class GenerationResult:
    """What :meth:`EarlyExitLM.generate` produced.

    Attributes:
        tokens: (1, prompt + new) int64: the prompt followed by the generated tokens.
        depths: blocks run for each generated token (the first comes from the full-depth prefill).
        seconds: wall-clock time of prefill and decoding.
    """

    tokens: torch.Tensor
    depths: list[int]
    seconds: float


class EarlyExitLM:
    """A causal LM that exits early per token: ``generate`` at batch 1, ``prefill`` at any batch.

    Args:
        model: a Llama-family (Llama, Mistral, Qwen2) or GPT-2 causal LM, in eval mode.
        heads: exit heads around ``model`` (:func:`tcompress.recipes.exit_heads.build_exit_heads`), with a head at
            every checkpoint depth.
        threshold: the gate's threshold (see :func:`tcompress.ops.exit_gate`; > 1 with ``"max_prob"`` never exits).
        check_layers: the checkpoint depths (blocks run before the gate is asked), a subset of ``heads.depths``.
        criterion: the gate's criterion: ``"max_prob"``, ``"margin"`` or ``"entropy"``.

    Raises:
        ValueError: a checkpoint without a head, an unknown criterion, or a model of no supported family.
        NotImplementedError: a family without block stepping (see :func:`tcompress.models.block_stepper`).
    """

    def __init__(
        self,
        model: nn.Module,
        heads: ExitHeads,
        threshold: float,
        check_layers: list[int] | tuple[int, ...],
        criterion: str = "max_prob",
    ) -> None:
        self.stepper = block_stepper(model)
        self.model = model
        self.heads = heads
        if criterion not in CRITERIA:
            raise ValueError(f"EarlyExitLM: criterion must be one of {', '.join(CRITERIA)}; got {criterion!r}")
        missing = [k for k in check_layers if k not in heads.depths]
        if missing:
            raise ValueError(
                f"EarlyExitLM: check_layers {missing} have no exit head; heads exist at depths {list(heads.depths)}"
            )
        self.threshold = float(threshold)
        self.criterion = criterion
        self.check_layers = tuple(sorted(int(k) for k in check_layers))
        # One flag per block, so the per-block loop does no set lookups or sorting.
        self._check_after = [(i + 1) in self.check_layers for i in range(self.stepper.num_blocks)]

    def new_cache(self):
        """An empty ``DynamicCache`` for this model."""
        return self.stepper.new_cache()

    @torch.inference_mode()
    def prefill(self, ids: torch.Tensor, cache) -> torch.Tensor:
        """ids (B, T) -> (B, vocab) logits of the last position, running every block (prompts are never cut short)."""
        start = cache.get_seq_length()
        position_ids = torch.arange(start, start + ids.shape[1], device=ids.device).expand(ids.shape[0], -1)
        h = self.stepper.embed(ids, position_ids)
        ctx = self.stepper.context(h, position_ids, cache)
        for i in range(self.stepper.num_blocks):
            h = self.stepper.run_block(i, h, ctx, cache)
        return self.stepper.logits(h[:, -1])

    def _confident(self, head_input: torch.Tensor) -> bool:
        """head_input (1, d) -> whether the gate lets the token exit.

        A plain linear head goes through :func:`tcompress.ops.exit_gate_head`, which consumes the logits as the head
        GEMV produces them (never stored); the logits are then computed only for a token that exits. Other heads
        (e.g. quantized) are evaluated first and gated with :func:`tcompress.ops.exit_gate`.
        """
        head = self.heads.head
        # A head whose weight accelerate has offloaded (on `meta` until its hook loads it) goes through the module.
        if type(head) is nn.Linear and head.weight.device == head_input.device:
            gate, _ = exit_gate_head(head_input[0], head.weight, self.threshold, self.criterion, head_bias=head.bias)
            return bool(gate.exit_mask[0])
        logits = head(head_input)
        return bool(exit_gate(logits.float(), self.threshold, self.criterion).exit_mask[0])

    @torch.inference_mode()
    def step(self, token: torch.Tensor, cache, force_depth: int | None = None) -> tuple[torch.Tensor, int]:
        """token (1, 1) -> ((1, vocab) logits, depth): one token through the blocks with the exit policy.

        ``force_depth`` exits at that depth whatever the gate says (an oracle policy, for analysis); it must have a
        head, or equal the number of blocks (no exit).
        """
        stepper = self.stepper
        position = cache.get_seq_length()
        position_ids = torch.full((1, 1), position, dtype=torch.long, device=token.device)
        h = stepper.embed(token, position_ids)
        ctx = stepper.context(h, position_ids, cache)
        num_blocks = stepper.num_blocks
        for i in range(num_blocks):
            h = stepper.run_block(i, h, ctx, cache)
            depth = i + 1
            if depth == num_blocks:
                break
            if force_depth is not None:
                if depth != force_depth:
                    continue
                logits = self.heads.logits(depth, h[:, -1])
            elif self._check_after[i]:
                head_input = self.heads.head_input(depth, h[:, -1])
                if not self._confident(head_input):
                    continue
                logits = self.heads.head(head_input)
            else:
                continue
            for j in range(depth, num_blocks):
                stepper.fill_kv(j, h, ctx, cache)
            return logits, depth
        return stepper.logits(h[:, -1]), num_blocks

    @torch.inference_mode()
    def generate(
        self,
        prompt: torch.Tensor,
        max_new_tokens: int,
        *,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
        eos_token_id: int | None = None,
    ) -> GenerationResult:
        """prompt (1, T) -> :class:`GenerationResult`: greedy (or sampled) decoding of ``max_new_tokens`` tokens.

        Raises:
            ValueError: a prompt that is not (1, T) integer ids, or a non-positive ``max_new_tokens``.
        """
        _check_prompt("EarlyExitLM.generate", prompt, max_new_tokens)
        start = time.perf_counter()
        cache = self.new_cache()
        logits = self.prefill(prompt, cache)
        tokens = [prompt]
        depths = [self.stepper.num_blocks]
        for n in range(max_new_tokens):
            token = _next_token(logits, do_sample, temperature, top_k, generator)
            tokens.append(token)
            if n == max_new_tokens - 1 or (eos_token_id is not None and int(token) == eos_token_id):
                break
            logits, depth = self.step(token, cache)
            depths.append(depth)
        return GenerationResult(torch.cat(tokens, dim=1), depths, time.perf_counter() - start)


def _check_prompt(who: str, prompt: torch.Tensor, max_new_tokens: int) -> None:
    if not isinstance(prompt, torch.Tensor) or prompt.dim() != 2 or prompt.shape[0] != 1 or prompt.shape[1] < 1:
        what = f"shape {tuple(prompt.shape)}" if isinstance(prompt, torch.Tensor) else type(prompt).__name__
        raise ValueError(f"{who}: prompt must be (1, T) int64 token ids with T >= 1 (batch 1); got {what}")
    if prompt.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"{who}: prompt must hold integer token ids; got {prompt.dtype}")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"{who}: max_new_tokens must be a positive int; got {max_new_tokens!r}")


def _next_token(
    logits: torch.Tensor, do_sample: bool, temperature: float, top_k: int | None, generator: torch.Generator | None
) -> torch.Tensor:
    """(1, vocab) logits -> (1, 1) int64: the argmax, or a sample at ``temperature`` from the ``top_k`` best."""
    if not do_sample:
        return logits.argmax(dim=-1, keepdim=True)
    scores = logits.float() / max(temperature, 1e-6)
    if top_k is not None:
        kth = scores.topk(min(top_k, scores.shape[-1]), dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < kth, -math.inf)
    return torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=generator)


@torch.inference_mode()
def full_model_generate(model: nn.Module, prompt: torch.Tensor, max_new_tokens: int) -> GenerationResult:
    """prompt (1, T) -> greedy decoding with the plain model loop: ``model(token, past_key_values=cache)`` per token.

    The baseline :class:`EarlyExitLM` is timed against (same prompt, same cache type, batch 1).
    """
    _check_prompt("full_model_generate", prompt, max_new_tokens)
    from transformers import DynamicCache

    start = time.perf_counter()
    cache = DynamicCache(config=model.config)
    logits = model(prompt, past_key_values=cache, use_cache=True).logits[:, -1]
    tokens = [prompt]
    for n in range(max_new_tokens):
        token = logits.argmax(dim=-1, keepdim=True)
        tokens.append(token)
        if n == max_new_tokens - 1:
            break
        logits = model(token, past_key_values=cache, use_cache=True).logits[:, -1]
    num_blocks = block_stepper(model).num_blocks
    return GenerationResult(torch.cat(tokens, dim=1), [num_blocks] * max_new_tokens, time.perf_counter() - start)


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
