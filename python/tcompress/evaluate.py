"""Perplexity, and the distance of a (compressed) model's predictions from a reference model's.

The standard protocol: every window is evaluated on its own; in a window of L tokens the tokens 1..L-1 are predicted
(token 0 only conditions), and perplexity is exp of the mean negative log-likelihood over all predicted tokens of all
windows. NLL is computed from fp32 log-probabilities (upcast from bf16/fp16 logits) and summed in fp64, so the total
over hundreds of thousands of tokens does not drift.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .data import TextSource, _bos_id, token_windows
from .models import architecture
from .models.table import context_length


@dataclass(frozen=True)
class PerplexityResult:
    """What :func:`perplexity` and :func:`perplexity_of_texts` measured.

    Attributes:
        ppl: exp(nll_mean).
        nll_mean: mean negative log-likelihood per predicted token, in nats.
        tokens: the number of predicted tokens.
        windows: the number of windows (or texts) evaluated.
        seconds: wall-clock time of the evaluation.
    """

    ppl: float
    nll_mean: float
    tokens: int
    windows: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-serializable dict."""
        return asdict(self)


@dataclass(frozen=True)
class ComparisonResult:
    """What :func:`compare` measured.

    Attributes:
        kl_mean: mean KL(reference ‖ model) per predicted position, in nats.
        top1_agreement: the fraction of positions where both models' most likely next token is the same.
        ppl: the model's perplexity on the same windows.
        reference_ppl: the reference model's perplexity on the same windows.
        tokens: the number of predicted positions compared.
        windows: the number of windows evaluated.
        seconds: wall-clock time of the evaluation.
    """

    kl_mean: float
    top1_agreement: float
    ppl: float
    reference_ppl: float
    tokens: int
    windows: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-serializable dict."""
        return asdict(self)


def _device(model: nn.Module) -> torch.device:
    """Where the token ids go: the input embedding's execution device (accelerate may keep an offloaded embedding on
    ``meta`` and load it onto that device for each forward)."""
    from .models.offload import execution_device

    get = getattr(model, "get_input_embeddings", None)
    embedding = get() if callable(get) else None
    if isinstance(embedding, nn.Module):
        return execution_device(embedding)
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _vocab_size(model: nn.Module) -> int | None:
    get = getattr(model, "get_input_embeddings", None)
    emb = get() if callable(get) else None
    return emb.num_embeddings if isinstance(emb, nn.Embedding) else None


def _check_windows(who: str, model: nn.Module, windows: torch.Tensor, max_tokens: int | None) -> torch.Tensor:
    if not isinstance(windows, torch.Tensor) or windows.dim() != 2 or windows.dtype not in (torch.int64, torch.int32):
        what = f"a {windows.dim()}-D {windows.dtype} tensor" if isinstance(windows, torch.Tensor) else type(windows)
        raise ValueError(f"{who}: windows must be a 2-D int64 tensor (num_windows, length); got {what}")
    if windows.shape[1] < 2 or windows.shape[0] < 1:
        raise ValueError(f"{who}: need at least one window of ≥ 2 tokens; got shape {tuple(windows.shape)}")
    if max_tokens is not None:
        keep = max_tokens // windows.shape[1]
        if keep < 1:
            raise ValueError(f"{who}: max_tokens={max_tokens} is less than one window of {windows.shape[1]} tokens")
        windows = windows[:keep]
    context = context_length(model)
    if context is not None and windows.shape[1] > context:
        raise ValueError(
            f"{who}: windows of {windows.shape[1]} tokens are longer than this model's context of {context} tokens"
        )
    vocab = _vocab_size(model)
    low, high = int(windows.min()), int(windows.max())
    if low < 0 or (vocab is not None and high >= vocab):
        raise ValueError(
            f"{who}: token ids must lie in [0, {vocab}) for this model's vocabulary; got ids in [{low}, {high}] "
            "(windows from another tokenizer?)"
        )
    return windows.long()


def _logits(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    # A Hugging Face model would otherwise build a KV cache that nothing reads.
    kwargs = {"use_cache": False} if hasattr(getattr(model, "config", None), "use_cache") else {}
    out = model(ids, **kwargs)
    if isinstance(out, torch.Tensor):
        return out
    return out.logits if hasattr(out, "logits") else out[0]


def _log_probs(logits: torch.Tensor) -> torch.Tensor:
    """(B, L, V) logits -> (B, L-1, V) fp32 log-probabilities of the positions that have a next token."""
    return F.log_softmax(logits[:, :-1].float(), dim=-1)


def _nll_sum(log_probs: torch.Tensor, ids: torch.Tensor) -> float:
    """Sum over positions of -log p(next token), accumulated in fp64."""
    picked = log_probs.gather(-1, ids[:, 1:, None]).squeeze(-1)
    return -float(picked.double().sum())


class _EvalMode:
    """Puts a model in eval mode (no dropout) for the duration and restores its training flags afterwards."""

    def __init__(self, *models: nn.Module) -> None:
        self.models = models
        self.flags: list[list[tuple[nn.Module, bool]]] = []

    def __enter__(self) -> None:
        for model in self.models:
            self.flags.append([(m, m.training) for m in model.modules()])
            model.eval()

    def __exit__(self, *exc: object) -> None:
        for flags in self.flags:
            for module, training in flags:
                module.training = training


def _batches(windows: torch.Tensor, batch_size: int, progress: bool, desc: str):
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"{desc}: batch_size must be a positive int; got {batch_size!r}")
    starts = range(0, windows.shape[0], batch_size)
    for start in tqdm(starts, desc=desc, unit="batch", disable=not progress):
        yield windows[start : start + batch_size]


def perplexity(
    model: nn.Module,
    windows: torch.Tensor,
    *,
    batch_size: int = 1,
    progress: bool = True,
    max_tokens: int | None = None,
) -> PerplexityResult:
    """Perplexity of ``model`` over ``windows`` (num_windows, L): exp of the mean NLL of tokens 1..L-1 of each window.

    Runs under ``torch.inference_mode`` on the model's device, in eval mode (the model's flags are restored).

    Args:
        model: a causal LM returning logits (B, L, vocab) (a Hugging Face model or anything with the same output).
        windows: int64 token ids, e.g. from :func:`tcompress.data.token_windows`.
        batch_size: windows per forward pass.
        progress: show a tqdm progress bar.
        max_tokens: the token budget: only the first ``max_tokens // L`` windows are evaluated.

    Raises:
        ValueError: windows of the wrong shape or dtype, ids outside the vocabulary, a budget below one window.
    """
    windows = _check_windows("perplexity", model, windows, max_tokens)
    device = _device(model)
    nll, tokens = 0.0, 0
    start = time.perf_counter()
    with torch.inference_mode(), _EvalMode(model):
        for batch in _batches(windows, batch_size, progress, "perplexity"):
            ids = batch.to(device)
            nll += _nll_sum(_log_probs(_logits(model, ids)), ids)
            tokens += ids.shape[0] * (ids.shape[1] - 1)
    return _result(nll, tokens, windows.shape[0], time.perf_counter() - start)


def _result(nll: float, tokens: int, windows: int, seconds: float) -> PerplexityResult:
    mean = nll / tokens if tokens else math.nan
    return PerplexityResult(ppl=math.exp(mean), nll_mean=mean, tokens=tokens, windows=windows, seconds=seconds)


def perplexity_of_texts(
    model: nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    *,
    bos: bool = True,
    max_length: int = 512,
    progress: bool = False,
) -> PerplexityResult:
    """Perplexity over separate texts, each evaluated on its own, NLL pooled over all predicted tokens.

    The TinyStories protocol: each text is tokenized alone, BOS is put first (``bos``), the sequence is cut to
    ``max_length`` tokens (BOS included), and tokens 1..n-1 of each are predicted. stories260K in fp32 on the ten
    shared stories: 3,211 predicted tokens, perplexity 3.351.

    Raises:
        ValueError: no texts, or no text with two tokens or more.
    """
    if isinstance(texts, str) or len(texts) == 0:
        raise ValueError(f"perplexity_of_texts: texts must be a non-empty sequence of strings; got {texts!r:.60}")
    if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 2:
        raise ValueError(f"perplexity_of_texts: max_length must be an int ≥ 2; got {max_length!r}")
    prefix = [_bos_id(tokenizer, "perplexity_of_texts")] if bos else []
    sequences = [prefix + tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    sequences = [seq[:max_length] for seq in sequences if len(seq) >= 2]
    if not sequences:
        raise ValueError("perplexity_of_texts: no text has the two tokens needed to predict one")
    device = _device(model)
    nll, tokens = 0.0, 0
    start = time.perf_counter()
    with torch.inference_mode(), _EvalMode(model):
        for seq in tqdm(sequences, desc="perplexity", unit="text", disable=not progress):
            ids = _check_windows("perplexity_of_texts", model, torch.tensor([seq]), None).to(device)
            nll += _nll_sum(_log_probs(_logits(model, ids)), ids)
            tokens += ids.shape[1] - 1
    return _result(nll, tokens, len(sequences), time.perf_counter() - start)


def compare(
    model: nn.Module,
    reference: nn.Module,
    windows: torch.Tensor,
    *,
    batch_size: int = 1,
    progress: bool = True,
    max_tokens: int | None = None,
) -> ComparisonResult:
    """How far ``model``'s next-token distributions are from ``reference``'s over ``windows`` (num_windows, L).

    Per predicted position (0..L-2 of each window): KL(reference ‖ model) = Σ_v p_ref (log p_ref − log p_model), in
    nats, summed over the vocabulary in fp32 and over positions in fp64; and whether both argmaxes agree. The two
    models may sit on different devices; both need the same vocabulary.

    Raises:
        ValueError: as for :func:`perplexity`, or models whose vocabularies differ.
    """
    windows = _check_windows("compare", model, windows, max_tokens)
    _check_windows("compare (reference)", reference, windows, None)
    device, ref_device = _device(model), _device(reference)
    kl = nll = ref_nll = 0.0
    agree = tokens = 0
    start = time.perf_counter()
    with torch.inference_mode(), _EvalMode(model, reference):
        for batch in _batches(windows, batch_size, progress, "compare"):
            ids = batch.to(device)
            log_p = _log_probs(_logits(model, ids))
            log_r = _log_probs(_logits(reference, batch.to(ref_device))).to(device)
            if log_p.shape != log_r.shape:
                raise ValueError(
                    f"compare: model and reference must predict over one vocabulary; got logits {tuple(log_p.shape)} "
                    f"and {tuple(log_r.shape)}"
                )
            kl += float(F.kl_div(log_p, log_r, log_target=True, reduction="none").sum(-1).double().sum())
            agree += int((log_p.argmax(-1) == log_r.argmax(-1)).sum())
            nll += _nll_sum(log_p, ids)
            ref_nll += _nll_sum(log_r, ids)
            tokens += ids.shape[0] * (ids.shape[1] - 1)
    seconds = time.perf_counter() - start
    return ComparisonResult(
        kl_mean=kl / tokens,
        top1_agreement=agree / tokens,
        ppl=math.exp(nll / tokens),
        reference_ppl=math.exp(ref_nll / tokens),
        tokens=tokens,
        windows=windows.shape[0],
        seconds=seconds,
    )


def eval_windows(
    model: nn.Module,
    tokenizer: Any,
    text: str | TextSource,
    length: int | None = None,
    max_tokens: int | None = None,
) -> torch.Tensor:
    """(num_windows, length) non-overlapping windows of ``text`` at the model's standard evaluation length.

    ``length`` defaults to ``architecture(model).eval_length(model)`` (1024 for GPT-2, 2048 for Llama-style models,
    capped by the model's context); see :func:`tcompress.data.token_windows` for the rest.
    """
    if isinstance(text, TextSource):
        text = text.text
    if length is None:
        length = architecture(model).eval_length(model)
    return token_windows(text, tokenizer, length, max_tokens=max_tokens)
