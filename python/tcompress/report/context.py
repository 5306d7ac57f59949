"""What every report step shares: the model, its evaluation and calibration windows, the baseline perplexity, the
massive-token marks of the calibration windows and the block statistics (computed once, on first use, reused by the
steps that need them; the statistics are released once none of the steps still to run needs them:
:data:`STEPS_USING_BLOCK_STATISTICS`)."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from .. import data, evaluate, models
from .budgets import Budget

#: The report steps that read :meth:`ReportContext.block_statistics` (the geometry step collects its own, with
#: gradients). After the last of these in a run, :meth:`ReportContext.release_block_statistics` frees them.
STEPS_USING_BLOCK_STATISTICS = frozenset({"linearity", "substitution"})
#: A token is massive at a block when its input or output norm exceeds this many times the block's median
#: (:mod:`tcompress.analysis.massive_tokens`).
MASSIVE_FACTOR = 10.0


def token_fingerprint(ids: torch.Tensor) -> str:
    """(n, L) int64 -> the first 16 hex digits of the SHA-256 of the token ids: the tokens a number was measured on."""
    return hashlib.sha256(ids.to(torch.int64).contiguous().cpu().numpy().tobytes()).hexdigest()[:16]


def weight_fingerprint(model: nn.Module) -> str:
    """The first 16 hex digits of the SHA-256 of the token-embedding table: which weights a number was measured on."""
    embeddings = models.architecture(model).embeddings(model)
    with models.materialized(embeddings):  # an offloaded table sits on meta until loaded
        table = embeddings.weight.detach().float().contiguous().cpu()
    return hashlib.sha256(table.numpy().tobytes()).hexdigest()[:16]


def source_windows(source: data.TextSource, tokenizer: Any, length: int, max_tokens: int | None) -> torch.Tensor:
    """(n, length) adjacent windows of a text: TinyStories-like document sources get BOS first in each window (their
    models were trained on BOS-started stories); running texts (WikiText-2, files) are cut as they are."""
    bos = bool(source.documents) and getattr(tokenizer, "bos_token_id", None) is not None
    return data.token_windows(source.text, tokenizer, length, max_tokens=max_tokens, bos=bos)


@dataclass
class ReportContext:
    """The model and data of one report run.

    Attributes:
        model: the causal LM (eval mode); steps work on copies and leave it unchanged.
        tokenizer: its tokenizer.
        model_name: what the user asked for (``"smollm2-135m"``, a path, a hub id).
        budget: the :class:`Budget` in force.
        eval_source, eval_windows: the evaluation text and its (n, L) windows.
        calib_source, calib_windows: the calibration text and its (n, L) windows.
        log: prints one progress line.
    """

    model: nn.Module
    tokenizer: Any
    model_name: str
    budget: Budget
    eval_source: data.TextSource
    eval_windows: torch.Tensor
    calib_source: data.TextSource
    calib_windows: torch.Tensor
    log: Callable[[str], None] = print
    _baseline: evaluate.PerplexityResult | None = field(default=None, repr=False)
    _block_stats: Any = field(default=None, repr=False)
    _massive: Any = field(default=None, repr=False)
    _replay: Any = field(default=None, repr=False)
    evaluations: int = 0

    @property
    def arch(self) -> models.ArchSpec:
        return models.architecture(self.model)

    @property
    def num_blocks(self) -> int:
        return len(self.arch.blocks(self.model))

    @property
    def hidden_size(self) -> int:
        return int(self.arch.embeddings(self.model).weight.shape[1])

    def measure(self, model: nn.Module) -> evaluate.PerplexityResult:
        """Perplexity of ``model`` (this model, whose number is measured once, or a modified copy) on the
        evaluation windows."""
        if model is self.model:
            return self.baseline()
        return self.measure_modified(model)

    def measure_modified(self, model: nn.Module) -> evaluate.PerplexityResult:
        """Perplexity on the evaluation windows, always measured: for this model while a step has changed it in
        place (a block substituted, a projection hook installed)."""
        self.evaluations += 1
        return evaluate.perplexity(model, self.eval_windows, progress=False)

    def measure_from(self, model: nn.Module, first_changed: int) -> evaluate.PerplexityResult:
        """Perplexity on the evaluation windows of this model changed only at or after block ``first_changed`` (a
        substituted last block, a projection hooked on block l): blocks 0..first_changed-1 are replayed from their
        outputs recorded once on these windows (:class:`tcompress.models.PrefixReplay`; the same logits to the bit,
        at 1 − first_changed/L of the blocks' cost). One recording is kept at a time; an offloaded model, or a change
        at block 0, is evaluated in full."""
        if first_changed <= 0 or models.is_offloaded(model):
            return self.measure_modified(model)
        if self._replay is None or self._replay.layer != first_changed:
            self._replay = None  # the previous recording goes before the next is made
            replay = models.PrefixReplay(model, first_changed)
            replay.record(self.eval_windows, batch_size=1)  # as measure_modified batches them
            self._replay = replay
        with self._replay.replaying():
            return self.measure_modified(model)

    def baseline(self) -> evaluate.PerplexityResult:
        """The unmodified model's perplexity on the evaluation windows (measured once)."""
        if self._baseline is None:
            self.evaluations += 1
            self._baseline = evaluate.perplexity(self.model, self.eval_windows, progress=False)
        return self._baseline

    def release_replay(self) -> None:
        """Drops the recorded prefix states of :meth:`measure_from` (host memory: one (tokens, d) tensor in the
        model's dtype, 2.3 GB for Mistral-7B on the whole WikiText-2 test text), so they do not outlive the step
        that made them."""
        self._replay = None

    def massive_tokens(self):
        """The massive tokens of every block over the calibration windows
        (:func:`tcompress.analysis.massive_tokens.find_massive_tokens` with :data:`MASSIVE_FACTOR`; one no-grad
        forward, computed once): the tokens every ``"no_outliers"`` statistic of the report leaves out."""
        if self._massive is None:
            from ..analysis.massive_tokens import find_massive_tokens

            start = time.perf_counter()
            self._massive = find_massive_tokens(self.model, self.calib_windows, factor=MASSIVE_FACTOR, batch_size=4)
            counts = [int(self._massive.mask(i).sum()) for i in self._massive.layers]
            self.log(
                f"  massive tokens (input or output norm > {MASSIVE_FACTOR:g}x the block's median) per block: {counts} "
                f"in {time.perf_counter() - start:.0f} s"
            )
        return self._massive

    def block_statistics(self):
        """Float64 input/output moments of every block over the calibration windows, 10% held out, massive tokens
        marked (computed once; no gradients): what block linearity, conditional linearity and substitution fits
        share."""
        if self._block_stats is None:
            from ..analysis.activations import collect_block_statistics

            massive = self.massive_tokens()
            start = time.perf_counter()
            self._block_stats = collect_block_statistics(
                self.model, self.calib_windows, holdout=0.1, seed=0, batch_size=4, exclude=massive
            )
            self.log(f"  block statistics of {self.num_blocks} blocks in {time.perf_counter() - start:.0f} s")
        return self._block_stats

    def release_block_statistics(self) -> int:
        """Drops the block statistics (their float64 matrices: 2·d² per block, position part and split, on the
        device each block computes on), so later steps get that memory back; returns the bytes released (0 when none
        were held). :meth:`block_statistics` computes them again if a step asks afterwards."""
        stats, self._block_stats = self._block_stats, None
        if stats is None:
            return 0
        released = sum(
            t.numel() * t.element_size()
            for moments in stats.parts.values()
            for t in vars(moments).values()
            if isinstance(t, torch.Tensor)
        )
        del stats
        self.log(f"  released the block statistics ({released / 2**20:.0f} MiB)")
        return released

    def describe(self) -> dict[str, Any]:
        """The model's and the data's identities, for results.json."""
        params = sum(p.numel() for p in self.model.parameters())  # shapes only: fine on meta (offloaded)
        config = getattr(self.model, "config", None)
        return {
            "model": {
                "name": self.model_name,
                "class": type(self.model).__name__,
                "family": self.arch.family,
                "num_blocks": self.num_blocks,
                "hidden_size": self.hidden_size,
                "parameters": params,
                "dtype": str(next(self.model.parameters()).dtype).replace("torch.", ""),
                # Where it computes: an offloaded model's first parameter may sit on meta.
                "device": str(models.execution_device(self.model)),
                "offloaded": models.is_offloaded(self.model),
                "hub_commit": getattr(config, "_commit_hash", None),
                "embedding_sha256_16": weight_fingerprint(self.model),
            },
            "data": {
                "evaluation": {
                    "name": self.eval_source.name,
                    "label": self.eval_source.label,
                    "windows": list(self.eval_windows.shape),
                    "tokens": int(self.eval_windows.numel()),
                    "token_sha256_16": token_fingerprint(self.eval_windows),
                },
                "calibration": {
                    "name": self.calib_source.name,
                    "label": self.calib_source.label,
                    "windows": list(self.calib_windows.shape),
                    "tokens": int(self.calib_windows.numel()),
                    "token_sha256_16": token_fingerprint(self.calib_windows),
                    "overlaps_evaluation": self.calib_source.text == self.eval_source.text,
                },
            },
        }
