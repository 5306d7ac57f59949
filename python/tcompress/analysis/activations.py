"""Streaming activation statistics of a model's blocks: the input every other analysis reads.

:func:`collect_block_statistics` runs a model over calibration windows with hooks on its decoder layers (found through
:mod:`tcompress.models`) and accumulates, per captured block l, for the pairs (x, y) = (h_l, h_{l+1}) of the block's
input and output hidden states at each position:

- the token count, ``Σx``, ``Σy``, ``ΣxᵀX`` (d, d), ``ΣxᵀY`` (d, d) and ``Σy²`` (d,) (the diagonal of ``ΣyᵀY``,
  all that a per-dimension error or variance needs);
- with ``gradients=True``, ``Σg`` and ``ΣgᵀG`` (d, d) of g = dL/dh_l, the gradient of the next-token loss at the
  block's input.

Everything is summed in float64, so memory is O(d²) per block whatever the number of tokens (Mistral 7B: d = 4096,
two (d, d) float64 matrices = 256 MiB per block and position part and split; ``stats_device="cpu"`` keeps them in host
memory). A model split over devices with accelerate's ``device_map`` works: each block's sums live on the device its
hidden states arrive on unless ``stats_device`` says otherwise.

Held-out split: whole windows. A seeded permutation of the window indices puts ``round(holdout · num_windows)`` of
them (at least one when ``holdout > 0``) in the ``"heldout"`` split and the rest in ``"train"``; every R² and error
figure of the analyses is computed on the held-out split with maps fitted on the train split. Whole windows, not
random tokens, because the tokens of one window share context and would leak between the splits.

Position sets. In Llama-family models the first position of every window carries a few huge hidden-state components
(an attention sink) that can hold > 95% of the total variance, inflating pooled R² towards 1 and making the top
principal direction a single outlier; some later tokens carry massive activations too
(:mod:`tcompress.analysis.massive_tokens`). So position 0, the massive tokens at positions ≥ 1 (when ``exclude``
marks them) and the other tokens are accumulated apart, and every statistic is available for

- ``"no_outliers"``: positions ≥ 1 that are not massive at that block (the headline set when ``exclude`` is given);
- ``"no_first"``: positions 1..T-1 (the headline set otherwise);
- ``"all"``: positions 0..T-1.

The first-position sums are kept on ``first_position_device`` (host memory by default) since only the ``"all"``
figures need them; the massive tokens are few, so their rows themselves are kept there (float64) and summed when a
set that includes them is asked for — O(rows · d) instead of two more (d, d) matrices per block and split.

Gradient convention: the loss of one window is the mean cross-entropy of its T-1 next-token predictions, and a batch's
loss is the sum over its windows, so g does not depend on the batch size. The last position of a window predicts
nothing, so its gradient is zero in every block; it is counted like the others.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .. import models
from .massive_tokens import MassiveTokens
from .moments import Moments

POSITION_SETS = ("no_outliers", "no_first", "all")
SPLITS = ("train", "heldout")
# How position sets are stored: "first" (position 0) and "rest" (positions ≥ 1 not marked massive) as sums, the
# massive tokens as rows (MassiveRows). "no_outliers" = rest, "no_first" = rest + massive, "all" = + first.
_PARTS = ("first", "rest")


@dataclasses.dataclass
class MassiveRows:
    """The rows (x, y) and gradients g of the massive tokens of one block and split, summed on demand.

    Attributes:
        x, y: lists of (n_i, d) float64 rows; g: lists of (m_i, d) float64 gradient rows.
    """

    x: list[torch.Tensor] = dataclasses.field(default_factory=list)
    y: list[torch.Tensor] = dataclasses.field(default_factory=list)
    g: list[torch.Tensor] = dataclasses.field(default_factory=list)

    @property
    def count(self) -> int:
        return sum(r.shape[0] for r in self.x)

    def moments(self, d: int, device: torch.device | str, gradients: bool) -> Moments:
        """The rows' sums as :class:`Moments` of width ``d`` on ``device``."""
        sums = Moments.zeros(d, device, gradients)
        for x, y in zip(self.x, self.y):
            sums.update(x, y)
        for g in self.g:
            sums.update_gradients(g)
        return sums


@dataclasses.dataclass
class BlockStatistics:
    """What :func:`collect_block_statistics` accumulated; read it through :meth:`moments`.

    Attributes:
        layers: the captured block indices (0-based, in forward order).
        hidden_size: d.
        num_windows: windows seen; window_length: tokens per window (T).
        heldout_windows: indices (into the windows given) of the held-out windows, sorted.
        holdout: the held-out fraction asked for; seed: the permutation's seed.
        gradients: whether dL/dh sums were collected.
        default_positions: the position set headline numbers use (``"no_outliers"`` when massive tokens were
            excluded, else ``"no_first"``).
        parts: ``{(layer, part, split): Moments}`` with part ``"first"`` (position 0) or ``"rest"`` (positions ≥ 1
            not marked massive).
        massive: the massive-token marks the collection used, or None (then ``"no_outliers"`` is not available).
        massive_rows: ``{(layer, split): MassiveRows}`` of the marked tokens.
    """

    layers: tuple[int, ...]
    hidden_size: int
    num_windows: int
    window_length: int
    heldout_windows: tuple[int, ...]
    holdout: float
    seed: int
    gradients: bool
    default_positions: str = "no_first"
    parts: dict[tuple[int, str, str], Moments] = dataclasses.field(default_factory=dict, repr=False)
    massive: MassiveTokens | None = dataclasses.field(default=None, repr=False)
    massive_rows: dict[tuple[int, str], MassiveRows] = dataclasses.field(default_factory=dict, repr=False)
    _massive_sums: dict[tuple[int, str], Moments] = dataclasses.field(default_factory=dict, repr=False)

    @property
    def position_sets(self) -> tuple[str, ...]:
        """The position sets these statistics can give (``"no_outliers"`` only when massive tokens were marked)."""
        return POSITION_SETS if self.massive is not None else tuple(p for p in POSITION_SETS if p != "no_outliers")

    def moments(self, layer: int, positions: str | None = None, split: str = "train") -> Moments:
        """The sums of block ``layer`` over a position set (``"no_outliers"``, ``"no_first"``, ``"all"``; None = the
        default) and split.

        Raises:
            ValueError: a layer that was not captured, an unknown or unavailable position set or split, or an empty
                split.
        """
        positions = self.default_positions if positions is None else positions
        if positions not in POSITION_SETS:
            raise ValueError(f"BlockStatistics.moments: positions must be one of {POSITION_SETS}; got {positions!r}")
        if positions not in self.position_sets:
            raise ValueError(
                "BlockStatistics.moments: 'no_outliers' needs statistics collected with massive tokens marked "
                "(collect_block_statistics(..., exclude=find_massive_tokens(model, windows)))"
            )
        if split not in SPLITS:
            raise ValueError(f"BlockStatistics.moments: split must be one of {SPLITS}; got {split!r}")
        if layer not in self.layers:
            raise ValueError(f"BlockStatistics.moments: block {layer} was not captured; captured: {list(self.layers)}")
        rest = self.parts.get((layer, "rest", split))
        if rest is None or rest.count == 0:
            raise ValueError(f"BlockStatistics.moments: the {split} split is empty (holdout={self.holdout})")
        if positions == "no_outliers":
            return rest
        with_massive = rest + self._massive(layer, split) if self.massive is not None else rest
        if positions == "no_first":
            return with_massive
        return with_massive + self.parts[(layer, "first", split)]

    def _massive(self, layer: int, split: str) -> Moments:
        """The massive tokens' sums of one block and split (summed from their rows once, then kept)."""
        key = (layer, split)
        if key not in self._massive_sums:
            first = self.parts[(layer, "first", split)]
            rows = self.massive_rows.get(key, MassiveRows())
            self._massive_sums[key] = rows.moments(self.hidden_size, first.sum_in.device, first.grad_sum is not None)
        return self._massive_sums[key]

    def tokens(self, positions: str | None = None, split: str = "train") -> int:
        """Tokens per block (the first captured block's: massive tokens differ by block) in a position set and split."""
        return self.moments(self.layers[0], positions, split).count

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly summary (the settings, token counts and the massive tokens left out; not the matrices)."""
        counts = {
            f"{p}/{s}": self.tokens(p, s)
            for p in self.position_sets
            for s in SPLITS
            if s == "train" or self.heldout_windows
        }
        return {
            "layers": list(self.layers),
            "hidden_size": self.hidden_size,
            "num_windows": self.num_windows,
            "window_length": self.window_length,
            "heldout_windows": list(self.heldout_windows),
            "holdout": self.holdout,
            "seed": self.seed,
            "gradients": self.gradients,
            "default_positions": self.default_positions,
            "tokens_per_block": counts,
            "massive_tokens": None if self.massive is None else self._massive_summary(),
        }

    def _massive_summary(self) -> dict[str, Any]:
        """The marks of the captured blocks, with how many of each block's massive tokens fell in each split."""
        summary = self.massive.to_dict()
        summary["blocks"] = [b for b in summary["blocks"] if b["layer"] in self.layers]
        for b in summary["blocks"]:
            for split in SPLITS:
                b[f"{split}_count"] = self.massive_rows.get((b["layer"], split), MassiveRows()).count
        return summary


def split_windows(num_windows: int, holdout: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """(train indices, held-out indices), each sorted: a seeded permutation, ``round(holdout · n)`` held out.

    At least one window is held out when ``holdout > 0``, and at least one is kept for training.

    Raises:
        ValueError: holdout outside [0, 1), or too few windows to hold any out and keep one.
    """
    if isinstance(holdout, bool) or not isinstance(holdout, (int, float)) or not 0.0 <= holdout < 1.0:
        raise ValueError(f"split_windows: holdout must be a fraction in [0, 1); got {holdout!r}")
    n_heldout = 0 if holdout == 0 else max(1, round(holdout * num_windows))
    if num_windows - n_heldout < 1:
        raise ValueError(
            f"split_windows: {num_windows} window(s) cannot give a held-out fraction of {holdout} and keep one for "
            "training; pass more windows or holdout=0"
        )
    order = torch.randperm(num_windows, generator=torch.Generator().manual_seed(int(seed))).tolist()
    return sorted(order[n_heldout:]), sorted(order[:n_heldout])


def _resolve_layers(layers: Sequence[int] | None, num_blocks: int) -> tuple[int, ...]:
    if layers is None:
        return tuple(range(num_blocks))
    if isinstance(layers, int) or not all(isinstance(i, int) and not isinstance(i, bool) for i in layers):
        raise ValueError(f"collect_block_statistics: layers must be a sequence of block indices; got {layers!r}")
    resolved = []
    for i in layers:
        if not -num_blocks <= i < num_blocks:
            raise ValueError(f"collect_block_statistics: block index {i} is out of range for {num_blocks} blocks")
        resolved.append(i % num_blocks)
    if not resolved:
        raise ValueError("collect_block_statistics: layers is empty; pass None for every block")
    return tuple(sorted(set(resolved)))


def _check_windows(model: nn.Module, windows: torch.Tensor) -> torch.Tensor:
    if not isinstance(windows, torch.Tensor) or windows.dim() != 2 or windows.dtype != torch.long:
        got = f"{tuple(windows.shape)} {windows.dtype}" if isinstance(windows, torch.Tensor) else type(windows).__name__
        raise ValueError(f"collect_block_statistics: windows must be a (num_windows, T) int64 tensor; got {got}")
    if windows.shape[0] < 1 or windows.shape[1] < 2:
        raise ValueError(f"collect_block_statistics: need ≥ 1 window of ≥ 2 tokens; got {tuple(windows.shape)}")
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    if isinstance(vocab, int) and (int(windows.min()) < 0 or int(windows.max()) >= vocab):
        raise ValueError(
            f"collect_block_statistics: token ids must lie in [0, {vocab}); got [{int(windows.min())}, "
            f"{int(windows.max())}]"
        )
    return windows


def _logits(output: Any) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    return output.logits if hasattr(output, "logits") else output[0]


def per_window_loss(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """logits (B, T, V), ids (B, T) -> scalar: Σ over windows of the mean next-token cross-entropy of 0..T-2."""
    log_probs = F.log_softmax(logits[:, :-1].float(), dim=-1)
    nll = -log_probs.gather(-1, ids[:, 1:, None].to(log_probs.device)).squeeze(-1)
    return nll.mean(dim=1).sum()


class _Collector:
    """The hooks of one collection run: they add each batch's block inputs/outputs (and gradients) to the sums."""

    def __init__(self, layers, gradients, stats_device, first_position_device, massive):
        self.layers = layers
        self.gradients = gradients
        self.stats_device = stats_device
        self.first_position_device = first_position_device
        self.split = "train"
        self.loss_scale = 1.0  # the backward pass's loss multiplier, divided out of every g (exactly: a power of two)
        self.parts: dict[tuple[int, str, str], Moments] = {}
        self.inputs: dict[int, torch.Tensor] = {}
        # (layer) -> (num_windows, T - 1) bool of the massive tokens at positions ≥ 1, and the batch's window indices.
        self.masks = {i: massive.mask(i)[:, 1:] for i in layers} if massive is not None else None
        self.batch: list[int] = []
        self.massive_rows: dict[tuple[int, str], MassiveRows] = {}

    def _part(self, layer: int, part: str, like: torch.Tensor) -> Moments:
        key = (layer, part, self.split)
        if key not in self.parts:
            device = self.first_position_device if part == "first" else (self.stats_device or like.device)
            for split in SPLITS:  # both splits at once, so they share a device and a width
                self.parts[(layer, part, split)] = Moments.zeros(like.shape[-1], device, self.gradients)
        return self.parts[key]

    def _split_rest(self, layer: int, batch: list[int], rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """rows (B, T, d) -> (positions ≥ 1 not marked massive (n, d), the marked ones (m, d) or None)."""
        rest = rows[:, 1:]
        if self.masks is None:
            return rest.reshape(-1, rows.shape[-1]), None
        marked = self.masks[layer][batch].to(rows.device)
        return rest[~marked], (rest[marked] if bool(marked.any()) else None)

    def _rows(self, layer: int, split: str) -> MassiveRows:
        return self.massive_rows.setdefault((layer, split), MassiveRows())

    def _keep(self, rows: torch.Tensor) -> torch.Tensor:
        return rows.detach().to(device=self.first_position_device, dtype=torch.float64)

    def pre_hook(self, layer: int):
        def hook(module, args, kwargs):
            hidden = models.block_input_hidden_states(args, kwargs)
            replaced = None
            if self.gradients and not hidden.requires_grad:
                # The parameters are frozen, so nothing upstream requires grad: a leaf that does still gets dL/dh.
                hidden = replaced = hidden.detach().requires_grad_(True)
            self.inputs[layer] = hidden
            if self.gradients:
                split, batch = self.split, self.batch
                hidden.register_hook(lambda g: self._add_gradients(layer, split, batch, g))
            if replaced is None:
                return None
            if args and isinstance(args[0], torch.Tensor):
                return (replaced, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": replaced}

        return hook

    def _add_gradients(self, layer: int, split: str, batch: list[int], g: torch.Tensor) -> None:
        if self.loss_scale != 1.0:
            g = g.to(torch.float64) / self.loss_scale
        self.parts[(layer, "first", split)].update_gradients(g[:, 0])
        rest, marked = self._split_rest(layer, batch, g)
        self.parts[(layer, "rest", split)].update_gradients(rest)
        if marked is not None:
            self._rows(layer, split).g.append(self._keep(marked))

    def post_hook(self, layer: int):
        def hook(module, args, kwargs, output):
            x = self.inputs.pop(layer)
            y = models.block_hidden_states(output)
            self._part(layer, "first", x).update(x[:, 0], y[:, 0])
            x_rest, x_marked = self._split_rest(layer, self.batch, x)
            y_rest, y_marked = self._split_rest(layer, self.batch, y)
            self._part(layer, "rest", x).update(x_rest, y_rest)
            if x_marked is not None:
                rows = self._rows(layer, self.split)
                rows.x.append(self._keep(x_marked))
                rows.y.append(self._keep(y_marked))

        return hook


def collect_block_statistics(
    model: nn.Module,
    windows: torch.Tensor,
    *,
    layers: Sequence[int] | None = None,
    gradients: bool = False,
    holdout: float = 0.1,
    seed: int = 0,
    batch_size: int = 1,
    stats_device: torch.device | str | None = None,
    first_position_device: torch.device | str = "cpu",
    exclude: MassiveTokens | None = None,
) -> BlockStatistics:
    """Streams float64 sums of every captured block's input/output hidden states (and loss gradients) over windows.

    ``windows`` (num_windows, T) int64 -> :class:`BlockStatistics` holding, per block, position part and split, a
    :class:`Moments`. The model runs in eval mode (its flags are restored) without a KV cache; with ``gradients`` it
    runs with autograd and backpropagates the loss described in the module docstring (run fp32 models for
    meaningful gradients) with every parameter frozen for the pass (``requires_grad`` restored afterwards), so no
    parameter gradient is computed and the ``.grad`` fields are left as they were. A model that accelerate
    dispatched with offload works (the ids go to the embedding's execution device).

    Args:
        model: a causal LM of a family :mod:`tcompress.models` supports (may be split over devices).
        windows: token ids, e.g. :func:`tcompress.data.calibration_windows`.
        layers: block indices to capture (negative counts from the end); None = every block.
        gradients: also accumulate dL/dh at each captured block's input.
        holdout: fraction of whole windows kept apart as the ``"heldout"`` split (see :func:`split_windows`).
        seed: seed of the held-out permutation.
        batch_size: windows per forward pass (each batch is all-train or all-held-out).
        stats_device: where the sums live; None = the device each block's hidden states arrive on.
        first_position_device: where the position-0 sums and the massive tokens' rows live.
        exclude: massive-token marks of these windows (:func:`tcompress.analysis.massive_tokens.find_massive_tokens`,
            covering the captured blocks): the marked tokens are kept apart, which makes ``"no_outliers"`` available
            and the default position set. None: no token is marked.

    Raises:
        ValueError: windows that are not (N, T) int64 ids in the vocabulary, bad layers, holdout or batch size, or
            marks of other windows or blocks.
    """
    spec = models.architecture(model)
    blocks = spec.blocks(model)
    layer_ids = _resolve_layers(layers, len(blocks))
    windows = _check_windows(model, windows)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"collect_block_statistics: batch_size must be a positive int; got {batch_size!r}")
    if exclude is not None:
        _check_exclude(exclude, windows, layer_ids)
    train, heldout = split_windows(windows.shape[0], holdout, seed)
    collector = _Collector(layer_ids, gradients, stats_device, first_position_device, exclude)
    handles = []
    for i in layer_ids:
        handles.append(blocks[i].register_forward_pre_hook(collector.pre_hook(i), with_kwargs=True))
        handles.append(blocks[i].register_forward_hook(collector.post_hook(i), with_kwargs=True))
    # Where the ids go: the embedding's execution device (its weight sits on meta when accelerate offloads it).
    # dL/dh needs no parameter gradient: frozen parameters give the backward pass nothing to accumulate (no second
    # copy of the model in .grad) and stop it at the first captured block's input.
    requires_grad = [
        (m, n, p.requires_grad)
        for m in model.modules()
        for n, p in m._parameters.items()
        if p is not None and gradients
    ]
    if gradients and any(p.dtype == torch.float16 for p in model.parameters()):
        # fp16's smallest normal is 6e-5: per-token gradients of a mean over T-1 tokens fall below it (99.7% of
        # SmolLM2's at block 29 with T = 256). Scaling the loss by 2^⌈log2(T-1)⌉ makes it a per-token sum, exactly
        # undone in float64 when each g is added.
        collector.loss_scale = float(2 ** math.ceil(math.log2(max(windows.shape[1] - 1, 1))))
    try:
        for m, n, _ in requires_grad:
            m._parameters[n].requires_grad_(False)
        with models.plain_forwards(model) as forward:
            for split, indices in (("train", train), ("heldout", heldout)):
                collector.split = split
                for start in range(0, len(indices), batch_size):
                    collector.batch = indices[start : start + batch_size]
                    ids = windows[collector.batch]
                    if gradients:
                        with torch.enable_grad():
                            loss = per_window_loss(_logits(forward(ids)), ids)
                            (loss * collector.loss_scale if collector.loss_scale != 1.0 else loss).backward()
                    else:
                        with torch.no_grad():
                            forward(ids)
    finally:
        for h in handles:
            h.remove()
        for m, n, flag in requires_grad:
            # Looked up again: accelerate's offload hooks replace a module's Parameter objects at every forward.
            m._parameters[n].requires_grad_(flag)
    d = next(iter(collector.parts.values())).hidden_size
    return BlockStatistics(
        layers=layer_ids,
        hidden_size=d,
        num_windows=windows.shape[0],
        window_length=windows.shape[1],
        heldout_windows=tuple(heldout),
        holdout=float(holdout),
        seed=int(seed),
        gradients=bool(gradients),
        default_positions="no_first" if exclude is None else "no_outliers",
        parts=collector.parts,
        massive=exclude,
        massive_rows=collector.massive_rows,
    )


def _check_exclude(exclude: MassiveTokens, windows: torch.Tensor, layers: tuple[int, ...]) -> None:
    if not isinstance(exclude, MassiveTokens):
        raise ValueError(
            f"collect_block_statistics: exclude must be MassiveTokens (find_massive_tokens) or None; "
            f"got {type(exclude).__name__}"
        )
    if exclude.shape != tuple(windows.shape):
        raise ValueError(
            f"collect_block_statistics: exclude marks {exclude.shape[0]} windows of {exclude.shape[1]} tokens; the "
            f"windows given are {tuple(windows.shape)} (mark the same windows)"
        )
    missing = [i for i in layers if i not in exclude.layers]
    if missing:
        raise ValueError(f"collect_block_statistics: exclude does not mark blocks {missing}; it marks {exclude.layers}")


def explained_variance_fraction(cov: torch.Tensor, k: int) -> float:
    """Fraction of the total variance (trace of ``cov`` (d, d)) held by its top ``k`` principal directions."""
    if not 0 <= k <= cov.shape[0]:
        raise ValueError(f"explained_variance_fraction: k must be in [0, {cov.shape[0]}]; got {k}")
    eig = torch.linalg.eigvalsh(cov).clamp_min(0).flip(0)
    total = float(eig.sum())
    return math.nan if total == 0 else float(eig[:k].sum()) / total
