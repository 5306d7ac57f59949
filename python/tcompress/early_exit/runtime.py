"""Adaptive-depth inference: generation that really skips the blocks after a confident exit head.

Per generated token, :class:`EarlyExitLM` runs the blocks in order; after each checkpoint depth it reads the exit head
there and asks :func:`tcompress.ops.exit_gate` whether the head is confident. If it is, the token is emitted from that
head and the remaining blocks are skipped. Later tokens still attend to this token in the skipped blocks, so their
keys and values are filled by running only those blocks' attention norm and K/V projections on the exited hidden state
(CALM's state propagation); the cache is the standard ``transformers`` ``DynamicCache``.

The teacher-forced evaluation of the same policy is :mod:`tcompress.early_exit.policy`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import nn

from ..models import block_stepper, cache_kwargs
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
    """prompt (1, T) -> greedy decoding with the plain model loop: ``model(token, cache=cache)`` per token.

    The baseline :class:`EarlyExitLM` is timed against (same prompt, same cache type, batch 1).
    """
    _check_prompt("full_model_generate", prompt, max_new_tokens)
    from transformers import DynamicCache

    start = time.perf_counter()
    cache = DynamicCache(config=model.config)
    cache_arg = cache_kwargs(type(model).forward, cache)
    logits = model(prompt, use_cache=True, **cache_arg).logits[:, -1]
    tokens = [prompt]
    for n in range(max_new_tokens):
        token = logits.argmax(dim=-1, keepdim=True)
        tokens.append(token)
        if n == max_new_tokens - 1:
            break
        logits = model(token, use_cache=True, **cache_arg).logits[:, -1]
    num_blocks = block_stepper(model).num_blocks
    return GenerationResult(torch.cat(tokens, dim=1), [num_blocks] * max_new_tokens, time.perf_counter() - start)
