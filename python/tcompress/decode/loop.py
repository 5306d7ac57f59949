"""Token generation on any model tcompress loads or compresses: ``tcompress.generate(model, input_ids, n)``.

The loop is the plain one (prefill the prompt into a KV cache, then one forward per new token, computing only the
last position's logits), with the token choice of transformers' ``generate``: greedy argmax, or sampling from the
softmax of the logits in float32 after temperature, top-k and top-p filtering in that order, drawn with
``torch.multinomial``. So greedy decoding gives the same tokens as ``model.generate(..., do_sample=False)``, and
sampling the same tokens as ``model.generate(..., do_sample=True)`` with the same settings and the same global seed.
An :class:`~tcompress.early_exit.EarlyExitLM` decodes through its own loop (blocks skipped per token).

Two runtimes run the forwards after the prompt's. ``"native"`` (:class:`~tcompress.decode.native.NativeDecoder`):
one native call per token for a batch-1 Llama-family or GPT-2 model whose block projections are all QuantLinears (W8,
W4, W4A8, online Hadamard on o/down ...), the prompt prefilled by the model's own forward. ``"modules"``: the model's
own forward per token (any model: fp32, substituted blocks, batches). ``"auto"`` takes the native one wherever it
applies and says why not otherwise (:attr:`DecodeStats.runtime_note`). The modules loop leaves out what makes
``model.generate`` slower per token at batch 1: no logits-processor pipeline, stopping-criteria objects,
attention-mask bookkeeping or per-step output objects.
"""

from __future__ import annotations

import dataclasses
import math
import time

import torch
from torch import nn

from ..early_exit import EarlyExitLM
from ..models import UnsupportedDecoder, cache_kwargs
from .native import NativeDecoder

RUNTIMES = ("auto", "native", "modules")


@dataclasses.dataclass
class DecodeStats:
    """Timings of one :func:`generate` call (filled in when passed as ``stats=``).

    ``prefill_seconds`` covers the prompt's forward and the first new token; ``decode_seconds`` the forwards of the
    other new tokens (one each), which is what a decode speed divides by (as llama.cpp's "eval time" does).
    ``runtime`` is the one that ran (``"native"``, ``"modules"`` or ``"early_exit"``); ``runtime_note`` why the
    native one did not, when it did not.
    """

    prompt_tokens: int = 0
    new_tokens: int = 0
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0
    runtime: str = ""
    runtime_note: str = ""

    @property
    def prefill_tokens_per_second(self) -> float:
        return self.prompt_tokens / self.prefill_seconds if self.prefill_seconds else math.nan

    @property
    def decode_tokens_per_second(self) -> float:
        steps = self.new_tokens - 1
        return steps / self.decode_seconds if steps > 0 and self.decode_seconds else math.nan


def _check(input_ids, max_new_tokens, temperature, top_k, top_p, runtime) -> None:
    who = "tcompress.generate"
    if runtime not in RUNTIMES:
        raise ValueError(f"{who}: runtime must be one of {', '.join(map(repr, RUNTIMES))}; got {runtime!r}")
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.shape[1] < 1:
        what = f"shape {tuple(input_ids.shape)}" if isinstance(input_ids, torch.Tensor) else type(input_ids).__name__
        raise ValueError(f"{who}: input_ids must be (batch, T) token ids with T >= 1; got {what}")
    if input_ids.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"{who}: input_ids must hold integer token ids; got {input_ids.dtype}")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"{who}: max_new_tokens must be a positive int; got {max_new_tokens!r}")
    if not (isinstance(temperature, (int, float)) and temperature > 0):
        raise ValueError(f"{who}: temperature must be a positive number; got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"{who}: top_k must be a positive int or None; got {top_k!r}")
    if top_p is not None and not (isinstance(top_p, (int, float)) and 0 < top_p <= 1):
        raise ValueError(f"{who}: top_p must be in (0, 1] or None; got {top_p!r}")


def next_tokens(
    logits: torch.Tensor,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """logits (batch, vocab) -> (batch,) int64: the argmax, or a sample as transformers draws it (see the module)."""
    scores = logits.to(torch.float32)
    if not do_sample:
        return scores.argmax(dim=-1)
    if temperature != 1.0:
        scores = scores / temperature
    if top_k is not None and top_k < scores.shape[-1]:
        kth = torch.topk(scores, top_k).values[..., -1:]
        scores = scores.masked_fill(scores < kth, -math.inf)
    if top_p is not None and top_p < 1.0:
        ascending, order = torch.sort(scores, descending=False)
        cumulative = ascending.softmax(dim=-1).cumsum(dim=-1)
        drop = cumulative <= 1 - top_p
        drop[..., -1:] = False  # keep at least the most likely token
        scores = scores.masked_fill(drop.scatter(1, order, drop), -math.inf)
    return torch.multinomial(scores.softmax(dim=-1), num_samples=1, generator=generator).squeeze(1)


@torch.inference_mode()
def generate(
    model: nn.Module,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    *,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_token_id: int | None = None,
    generator: torch.Generator | None = None,
    stats: DecodeStats | None = None,
    runtime: str = "auto",
) -> torch.Tensor:
    """input_ids (batch, T) -> (batch, T + new) int64: the prompt followed by up to ``max_new_tokens`` tokens.

    Args:
        model: a causal LM (transformers, as ``tcompress.load`` returns it, compressed or not) or an
            :class:`~tcompress.early_exit.EarlyExitLM` (batch 1).
        input_ids: prompts of one length (no padding), on the model's input device.
        max_new_tokens: tokens to generate; fewer when every row has produced ``eos_token_id``.
        do_sample, temperature, top_k, top_p: as in transformers' ``generate`` (greedy by default; no filter when
            top_k / top_p is None).
        eos_token_id: stop when every row has produced it (rows that finished earlier continue with it).
        generator: the random generator of the sampling (default: torch's global one, as transformers uses).
        stats: a :class:`DecodeStats` to fill with the timings.
        runtime: ``"auto"`` (default), ``"native"`` or ``"modules"`` (see the module).

    Raises:
        ValueError: input_ids not (batch, T) integer ids, max_new_tokens not a positive int, a bad sampling
            setting or runtime.
        UnsupportedDecoder: ``runtime="native"`` on a model the native step does not run (the message says why).
    """
    _check(input_ids, max_new_tokens, temperature, top_k, top_p, runtime)
    stats = DecodeStats() if stats is None else stats
    if isinstance(model, EarlyExitLM):
        if top_p is not None:
            raise ValueError("tcompress.generate: an EarlyExitLM samples with temperature and top_k only; got top_p")
        start = time.perf_counter()
        result = model.generate(input_ids, max_new_tokens, do_sample=do_sample, temperature=temperature,
                                top_k=top_k, generator=generator, eos_token_id=eos_token_id)  # fmt: skip
        stats.prompt_tokens, stats.new_tokens = input_ids.shape[1], result.tokens.shape[1] - input_ids.shape[1]
        stats.decode_seconds = time.perf_counter() - start
        stats.runtime, stats.runtime_note = "early_exit", "an EarlyExitLM decodes through its own loop"
        return result.tokens
    from transformers import DynamicCache

    native = _native_decoder(model, input_ids, max_new_tokens, runtime, stats)
    choose = dict(do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator)
    cache = DynamicCache(config=model.config)
    call = {**cache_kwargs(type(model).forward, cache), "use_cache": True}
    start = time.perf_counter()
    logits = model(input_ids, logits_to_keep=1, **call).logits[:, -1]
    tokens = [input_ids, next_tokens(logits, **choose)[:, None]]
    if native is not None:
        native.load_cache(cache, input_ids.shape[1])
        del cache, call
    prefilled = time.perf_counter()
    finished = None if eos_token_id is None else tokens[-1][:, 0] == eos_token_id
    while len(tokens) - 1 < max_new_tokens and not (finished is not None and bool(finished.all())):
        if native is not None:
            logits = native.logits(int(tokens[-1]), input_ids.shape[1] + len(tokens) - 2)
        else:
            logits = model(tokens[-1], logits_to_keep=1, **call).logits[:, -1]
        token = next_tokens(logits, **choose)
        if finished is not None:
            token = token.masked_fill(finished, eos_token_id)
            finished |= token == eos_token_id
        tokens.append(token[:, None])
    end = time.perf_counter()
    stats.prompt_tokens, stats.new_tokens = input_ids.shape[1], len(tokens) - 1
    stats.prefill_seconds, stats.decode_seconds = prefilled - start, end - prefilled
    return torch.cat(tokens, dim=1)


def _native_decoder(model, input_ids, max_new_tokens, runtime, stats) -> NativeDecoder | None:
    """The native decoder for this call, or None for the modules loop (``stats`` records which and why)."""
    stats.runtime, stats.runtime_note = "modules", ""
    if runtime == "modules":
        stats.runtime_note = "asked for"
        return None
    try:
        if input_ids.shape[0] != 1:
            raise UnsupportedDecoder(f"the native step decodes one sequence; got a batch of {input_ids.shape[0]}")
        decoder = NativeDecoder(model, input_ids.shape[1] + max_new_tokens)
        decoder.check_prompt(input_ids.shape[1])  # before the prefill, so that "auto" can still fall back
    except UnsupportedDecoder as exc:
        if runtime == "native":
            raise UnsupportedDecoder(f"tcompress.generate(runtime='native'): {exc}") from exc
        stats.runtime_note = str(exc)
        return None
    stats.runtime = "native"
    return decoder
