"""Massive-activation tokens: the (window, position) pairs whose block input is far larger than the rest, which the
``"no_outliers"`` position set of :mod:`tcompress.analysis.activations` leaves out of the sums.

Why. Llama-family models write a few hidden states with norms 10–200× the median, not only at the first position (an
attention sink) but on some later tokens too (SmolLM2-135M: a repeated "9" token at window position 1 with norm ≈
26,000 at block 11's output against a median ≈ 136). Three such tokens among 16k calibration tokens decide a block's
covariance: they drive block 11's held-out R² from ≈ 0.94 to −0.06 and collapse k(90%) at block 12 from ≈ 190 to 17,
so a statistic over all positions describes those tokens, not the model.

The rule, fixed before anything is fitted: at block l, a token at position t ≥ 1 is massive when the norm of its block
input ||h_l|| exceeds ``factor`` (10 by default) times the median of ||h_l|| over every position ≥ 1 of every window,
or the norm of its block output ||h_{l+1}|| exceeds ``factor`` times the median of that (train and held-out alike: a
threshold, not a fit). The output side matters for the block that writes a massive activation: its inputs are
ordinary, its outputs are not, and those few rows decide its fit (SmolLM2-135M's block 11: held-out output R² −1.18
over positions ≥ 1 with its 3 massive outputs in, 0.94 without). Position 0 has its own part in the statistics and is
never marked here. The norms come from one cheap pass (a no-grad forward over the windows, norms only), so the
thresholds are known before the sums are accumulated; its cost is one forward over the calibration windows.

Consistency. The marks are a property of (window, position) in the unmodified model: any later pass over the same
windows (conditional linearity's shifted pass, sequential substitution fits) leaves out the same tokens, so the
statistics it compares stay over the same token set. An intervention evaluated on other text
(:mod:`tcompress.analysis.subspace_projection`) applies the same rule with the calibration threshold.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .. import models

#: How many times the median block-input norm a token's must exceed to be massive.
DEFAULT_FACTOR = 10.0
#: How many of a block's massive tokens results.json lists (largest norms first); the count is always complete.
LISTED_TOKENS = 16


@dataclasses.dataclass
class MassiveTokens:
    """Which tokens of some windows are massive at each block, with the norms that decided it.

    Attributes:
        factor: the threshold as a multiple of the median norm.
        layers: the blocks measured (0-based).
        norms: ``{layer: (num_windows, T) float32}`` the norm of each token's block input.
        output_norms: ``{layer: (num_windows, T) float32}`` the norm of each token's block output.
        medians, output_medians: ``{layer: median norm over positions ≥ 1}`` of the inputs / outputs.
    """

    factor: float
    layers: tuple[int, ...]
    norms: dict[int, torch.Tensor] = dataclasses.field(repr=False)
    output_norms: dict[int, torch.Tensor] = dataclasses.field(repr=False)
    medians: dict[int, float]
    output_medians: dict[int, float]

    @property
    def shape(self) -> tuple[int, int]:
        """(num_windows, T) of the windows measured."""
        return tuple(self.norms[self.layers[0]].shape)

    def threshold(self, layer: int) -> float:
        """The norm above which a token's input to block ``layer`` is massive."""
        return self.factor * self.medians[self._check(layer)]

    def output_threshold(self, layer: int) -> float:
        """The norm above which a token's output of block ``layer`` is massive."""
        return self.factor * self.output_medians[self._check(layer)]

    def mask(self, layer: int) -> torch.Tensor:
        """(num_windows, T) bool: the massive tokens at block ``layer``, by input or output (never position 0)."""
        marked = (self.norms[self._check(layer)] > self.threshold(layer)) | (
            self.output_norms[layer] > self.output_threshold(layer)
        )
        marked[:, 0] = False
        return marked

    def first_windows(self, n: int) -> MassiveTokens:
        """The marks of the first ``n`` windows (the same thresholds: they are the rule, not a statistic of these)."""
        if not 1 <= n <= self.shape[0]:
            raise ValueError(f"MassiveTokens.first_windows: n must be in [1, {self.shape[0]}]; got {n}")
        return dataclasses.replace(
            self,
            norms={k: v[:n] for k, v in self.norms.items()},
            output_norms={k: v[:n] for k, v in self.output_norms.items()},
        )

    def _check(self, layer: int) -> int:
        if layer not in self.norms:
            raise ValueError(f"MassiveTokens: block {layer} was not measured; measured: {list(self.layers)}")
        return layer

    def to_dict(self) -> dict[str, Any]:
        """Per block: medians, thresholds, how many tokens are massive, and the largest by output norm (window,
        position, input norm, output norm)."""
        blocks = []
        for layer in self.layers:
            mask, norms, out = self.mask(layer), self.norms[layer], self.output_norms[layer]
            where = mask.nonzero().tolist()
            where.sort(key=lambda wp: -float(max(norms[wp[0], wp[1]], out[wp[0], wp[1]])))
            blocks.append(
                {
                    "layer": layer,
                    "median_norm": self.medians[layer],
                    "threshold": self.threshold(layer),
                    "median_output_norm": self.output_medians[layer],
                    "output_threshold": self.output_threshold(layer),
                    "count": len(where),
                    "max_norm": float(norms[:, 1:].max()),
                    "max_output_norm": float(out[:, 1:].max()),
                    "tokens": [
                        {"window": w, "position": p, "norm": float(norms[w, p]), "output_norm": float(out[w, p])}
                        for w, p in where[:LISTED_TOKENS]
                    ],
                }
            )
        return {"factor": self.factor, "windows": list(self.shape), "blocks": blocks}


def find_massive_tokens(
    model: nn.Module,
    windows: torch.Tensor,
    *,
    layers: Sequence[int] | None = None,
    factor: float = DEFAULT_FACTOR,
    batch_size: int = 1,
) -> MassiveTokens:
    """``windows`` (num_windows, T) int64 -> the massive tokens at each block (see the module docstring).

    One no-grad forward pass without a KV cache, in eval mode (flags restored), keeping only two (num_windows, T)
    float32 norms per block (input and output): memory O(num_windows · T · blocks), whatever the width. Works on a
    model split over devices.

    Raises:
        ValueError: a factor that is not a number > 1, windows of fewer than two positions, bad layers or batch size.
    """
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor > 1:
        raise ValueError(f"find_massive_tokens: factor must be a number > 1; got {factor!r}")
    if not isinstance(windows, torch.Tensor) or windows.dim() != 2 or windows.shape[1] < 2:
        got = tuple(windows.shape) if isinstance(windows, torch.Tensor) else type(windows).__name__
        raise ValueError(f"find_massive_tokens: windows must be (num_windows, T ≥ 2) token ids; got {got}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"find_massive_tokens: batch_size must be a positive int; got {batch_size!r}")
    spec = models.architecture(model)
    blocks = spec.blocks(model)
    if layers is None:
        layer_ids = tuple(range(len(blocks)))
    else:
        if not all(isinstance(i, int) and not isinstance(i, bool) and -len(blocks) <= i < len(blocks) for i in layers):
            raise ValueError(
                f"find_massive_tokens: layers must be block indices of {len(blocks)} blocks; got {layers!r}"
            )
        layer_ids = tuple(sorted({i % len(blocks) for i in layers}))
    norms: dict[int, list[torch.Tensor]] = {i: [] for i in layer_ids}
    output_norms: dict[int, list[torch.Tensor]] = {i: [] for i in layer_ids}

    def hook_for(layer: int):
        def hook(module, args, kwargs, output):
            hidden = models.block_input_hidden_states(args, kwargs)
            norms[layer].append(hidden.detach().float().norm(dim=-1).cpu())
            output_norms[layer].append(models.block_hidden_states(output).detach().float().norm(dim=-1).cpu())

        return hook

    handles = [blocks[i].register_forward_hook(hook_for(i), with_kwargs=True) for i in layer_ids]
    try:
        with models.plain_forwards(model) as forward, torch.no_grad():
            for start in range(0, windows.shape[0], batch_size):
                forward(windows[start : start + batch_size])
    finally:
        for h in handles:
            h.remove()
    inputs = {i: torch.cat(v) for i, v in norms.items()}
    outputs = {i: torch.cat(v) for i, v in output_norms.items()}
    medians = {i: float(v[:, 1:].median()) for i, v in inputs.items()}
    output_medians = {i: float(v[:, 1:].median()) for i, v in outputs.items()}
    return MassiveTokens(float(factor), layer_ids, inputs, outputs, medians, output_medians)
