"""Linear block substitution (the paper's headline): replace whole decoder layers by fitted (low-rank) affine maps.

``substitute_(model, windows, SubstituteConfig(blocks=[-1], rank=r))`` fits, for each chosen block l, the residual
update Δ = h_{l+1} - h_l ≈ (h_l - μ)·M + c by float64 ridge least squares over calibration windows
(:mod:`tcompress.analysis.linearity`), and swaps the decoder layer for a :class:`SubstitutedBlock` around a
:class:`tcompress.nn.LinearBlock`:

- ``rank=r``: h -> h + (h - μ)·U·V + c, with U·V the rank-r reduced-rank regression of M (the SVD in the metric of
  the inputs, so the kept directions are those that remove the most prediction error over the data);
  2·d·r + 2·d parameters (plus r + d scales with ``quantize="int8"``);
- ``rank=None``: the dense map h -> h·(I + M) + (c - μ·M), d² + d parameters.

``fit="clean"`` fits every map on the original model's hidden states; ``fit="sequential"`` fits the blocks in depth
order, each on the inputs it sees after the earlier replacements (the upstream distribution it will actually get).
The compression ratio is (parameters of the replaced decoder layer) / (parameters of the map), as in the paper.

Which tokens a fit sees is ``positions``; at evaluation the map runs on every token (a compressed model has nothing
else to run them through), so a perplexity always includes what the map does to the tokens its fit left out.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable

import torch
from torch import nn

from .. import models
from ..analysis.activations import POSITION_SETS, BlockStatistics, collect_block_statistics
from ..analysis.linearity import fit_affine, reduced_rank_factors
from ..analysis.massive_tokens import find_massive_tokens
from ..nn import LinearBlock
from .config import RecipeConfig

FIT_MODES = ("clean", "sequential")


class SubstitutedBlock(nn.Module):
    """Stands in for a whole decoder layer: (hidden_states (B, T, d), *layer args) -> what the layer would return.

    Takes the arguments the model's layer loop passes (mask, positions, cache, ...) and ignores all but the hidden
    states and the KV cache, which it only keeps in step (see :func:`tcompress.models.advance_cache_`), so generation
    with ``use_cache`` sees the right positions.

    Attributes:
        linear_block: the map (a :class:`tcompress.nn.LinearBlock`).
        layer_idx: the replaced layer's index (the cache slot it keeps in step).
    """

    def __init__(self, linear_block: LinearBlock, layer_idx: int):
        super().__init__()
        self.linear_block = linear_block
        self.layer_idx = int(layer_idx)

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        """hidden_states (B, T, d) -> the layer loop's expected output, holding (B, T, d)."""
        models.advance_cache_(models.block_call_cache((hidden_states, *args), kwargs), self.layer_idx, hidden_states)
        return models.decoder_layer_output(self.linear_block(hidden_states))

    def extra_repr(self) -> str:
        return f"layer_idx={self.layer_idx}"


@dataclasses.dataclass
class SubstituteConfig(RecipeConfig):
    """Which decoder layers become linear maps, and how the maps are fitted.

    Attributes:
        blocks: block indices (negative count from the end: ``(-1,)`` is the last block).
        rank: the rank r of U·V, or None for the dense map.
        fit: ``"clean"`` (every map from the original model's hidden states) or ``"sequential"`` (each from the
            inputs it sees after the earlier replacements).
        quantize: None, or ``"int8"`` for the low-rank factors (symmetric, per-column scales).
        ridge: ridge relative to tr(C_xx)/d (see :func:`tcompress.analysis.linearity.fit_affine`).
        positions: the positions the fit uses: ``"all"`` (default: the map runs on every position, the first one
            included), ``"no_first"``, or ``"no_outliers"`` (positions ≥ 1 without the massive tokens of
            :mod:`tcompress.analysis.massive_tokens`, marked once on the unmodified model, so a sequential fit
            leaves out the same tokens at every block). Whatever the fit saw, the map then runs on every token.
    """

    kind = "substitute"
    version = 1

    blocks: tuple[int, ...] = (-1,)
    rank: int | None = None
    fit: str = "clean"
    quantize: str | None = None
    ridge: float = 1e-6
    positions: str = "all"

    def __post_init__(self):
        blocks = (self.blocks,) if isinstance(self.blocks, int) else tuple(self.blocks)
        if not blocks or not all(isinstance(i, int) and not isinstance(i, bool) for i in blocks):
            raise ValueError(
                f"SubstituteConfig: blocks must be a non-empty sequence of block indices; got {self.blocks!r}"
            )
        self.blocks = blocks
        if self.rank is not None and (isinstance(self.rank, bool) or not isinstance(self.rank, int) or self.rank < 1):
            raise ValueError(f"SubstituteConfig: rank must be a positive int or None (dense); got {self.rank!r}")
        if self.fit not in FIT_MODES:
            raise ValueError(f"SubstituteConfig: fit must be one of {FIT_MODES}; got {self.fit!r}")
        if self.quantize not in (None, "int8"):
            raise ValueError(f"SubstituteConfig: quantize must be None or 'int8'; got {self.quantize!r}")
        if self.quantize is not None and self.rank is None:
            raise ValueError("SubstituteConfig: quantize='int8' applies to low-rank maps; give a rank")
        if isinstance(self.ridge, bool) or not isinstance(self.ridge, (int, float)) or not self.ridge >= 0:
            raise ValueError(f"SubstituteConfig: ridge must be a non-negative number; got {self.ridge!r}")
        if self.positions not in POSITION_SETS:
            raise ValueError(f"SubstituteConfig: positions must be one of {POSITION_SETS}; got {self.positions!r}")

    def apply_(self, model: nn.Module, windows: torch.Tensor | None = None, **kwargs: Any) -> SubstitutionReport:
        """Substitutes in place; see :func:`substitute_`. Needs calibration ``windows``.

        Raises:
            ValueError: no windows (``compress_(model, SubstituteConfig(...))`` has none to give: call
                ``substitute_(model, windows, config)``).
        """
        if windows is None:
            raise ValueError(
                "SubstituteConfig needs calibration windows to fit its maps; call "
                "tcompress.recipes.substitute_(model, windows, config) instead of compress_(model, config)"
            )
        return substitute_(model, windows, self, **kwargs)


@dataclasses.dataclass
class SubstitutedLayer:
    """One replaced layer: its index, the map's rank (None = dense), parameter counts and their ratio."""

    layer: int
    rank: int | None
    block_parameters: int
    map_parameters: int
    compression_ratio: float
    fit_tokens: int


@dataclasses.dataclass
class SubstitutionReport:
    """What :func:`substitute_` did: per layer, and in total (replaced-layer parameters / map parameters)."""

    config: dict[str, Any]
    layers: list[SubstitutedLayer]
    block_parameters: int
    map_parameters: int
    compression_ratio: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly."""
        return dataclasses.asdict(self)


def block_parameters(block: nn.Module) -> int:
    """Elements of a decoder layer's parameters (each shared tensor counted once)."""
    seen = {}
    for p in block.parameters():
        seen[id(p)] = p.numel()
    return sum(seen.values())


def _resolve_blocks(config: SubstituteConfig, blocks: nn.ModuleList) -> list[int]:
    n = len(blocks)
    resolved = []
    for i in config.blocks:
        if not -n <= i < n:
            raise ValueError(f"substitute_: block index {i} is out of range for {n} blocks")
        resolved.append(i % n)
    if len(set(resolved)) != len(resolved):
        raise ValueError(f"substitute_: blocks {list(config.blocks)} name the same block twice (of {n})")
    already = [i for i in resolved if isinstance(blocks[i], SubstitutedBlock)]
    if already:
        raise ValueError(f"substitute_: blocks {already} are already substituted")
    return sorted(resolved)


def _block_dtype(block: nn.Module) -> torch.dtype:
    """The dtype of a decoder layer's floating parameters (known even when they are offloaded to ``meta``)."""
    return next((p.dtype for p in block.parameters() if p.is_floating_point()), torch.float32)


def _fit_map(moments, config: SubstituteConfig, device: torch.device, dtype: torch.dtype) -> LinearBlock:
    fit = fit_affine(moments, target="residual", ridge=config.ridge)
    if config.rank is None:
        A, b = fit.output_map()
        return LinearBlock.from_dense(A.to(device=device, dtype=dtype), b.to(device=device, dtype=dtype))
    U, V = reduced_rank_factors(fit, moments, config.rank)
    # With centred inputs the intercept of the residual fit is the mean update itself.
    c = fit.b + fit.mean_in @ fit.A
    cast = dict(device=device, dtype=dtype)
    return LinearBlock.from_factors(
        U.to(**cast), V.to(**cast), c.to(**cast), fit.mean_in.to(**cast), quantize=config.quantize
    )


def substitute_(
    model: nn.Module,
    windows: torch.Tensor,
    config: SubstituteConfig,
    *,
    batch_size: int = 1,
    stats_device: torch.device | str | None = None,
    statistics: BlockStatistics | None = None,
) -> SubstitutionReport:
    """Replaces ``config.blocks`` of ``model`` in place by fitted linear maps; returns what it did.

    ``windows`` (num_windows, T) int64 calibration token ids; every window is used for fitting (no held-out split:
    evaluate the result with :func:`tcompress.evaluate.perplexity` on other text). With ``fit="clean"``,
    ``statistics`` collected earlier on the unmodified model (covering the blocks) can stand in for the clean pass;
    their train split is used (with ``fit="sequential"`` only their massive-token marks are). The config is
    appended to ``model.tcompress_config``. If anything fails, layers already replaced by this call are put back.

    Each map is built on its layer's execution device in the layer's dtype, so a model that accelerate dispatched
    (offloaded layers' weights on ``meta``) works: :func:`tcompress.models.set_module` gives the map the layer's
    placement (offloaded to host memory when the layer was), and the replaced layer keeps its hooks for being put back.

    Raises:
        ValueError: bad block indices (out of range, repeated, already substituted), a rank above d, bad windows.
        TypeError: ``config`` is not a :class:`SubstituteConfig`.
    """
    if not isinstance(config, SubstituteConfig):
        raise TypeError(f"substitute_: expected a SubstituteConfig; got {type(config).__name__}")
    spec = models.architecture(model)
    blocks = spec.blocks(model)
    indices = _resolve_blocks(config, blocks)
    d = spec.embeddings(model).weight.shape[1]
    if config.rank is not None and config.rank > d:
        raise ValueError(f"substitute_: rank {config.rank} exceeds the hidden size d = {d}")
    collect = dict(holdout=0.0, batch_size=batch_size, stats_device=stats_device)
    if config.positions == "no_outliers" and (statistics is None or config.fit == "sequential"):
        # Marked once, on the unmodified model: every later pass leaves out the same (window, position) tokens.
        marks = statistics.massive if statistics is not None else None
        collect["exclude"] = marks or find_massive_tokens(model, windows, layers=indices, batch_size=batch_size)
    clean = None
    if config.fit == "clean":
        if statistics is not None:
            missing = [i for i in indices if i not in statistics.layers]
            if missing:
                raise ValueError(f"substitute_: the statistics given do not cover blocks {missing}")
            clean = statistics
        else:
            clean = collect_block_statistics(model, windows, layers=indices, **collect)
    replaced: list[tuple[str, nn.Module]] = []
    layers = []
    try:
        for i in indices:
            stats = clean or collect_block_statistics(model, windows, layers=[i], **collect)
            moments = stats.moments(i, config.positions)
            # Where the layer computes, not where its parameters sit: an offloaded layer's are on meta.
            linear_block = _fit_map(moments, config, models.execution_device(blocks[i]), _block_dtype(blocks[i]))
            params = block_parameters(blocks[i])
            name = f"{spec.blocks_path}.{i}"
            replaced.append((name, models.set_module(model, name, SubstitutedBlock(linear_block, i))))
            mapped = linear_block.num_parameters()
            layers.append(SubstitutedLayer(i, config.rank, params, mapped, params / mapped, moments.count))
    except BaseException:
        for name, old in reversed(replaced):
            models.set_module(model, name, old)
        raise
    recorded = list(getattr(model, "tcompress_config", []))
    recorded.append(config.to_dict())
    model.tcompress_config = recorded
    total_block = sum(layer.block_parameters for layer in layers)
    total_map = sum(layer.map_parameters for layer in layers)
    return SubstitutionReport(config.to_dict(), layers, total_block, total_map, total_block / total_map)


def measure_substitution(
    model: nn.Module,
    windows: torch.Tensor,
    config: SubstituteConfig,
    measure: Callable[[nn.Module], Any],
    baseline_ppl: float,
    *,
    batch_size: int = 1,
    statistics: BlockStatistics | None = None,
) -> dict[str, Any]:
    """Substitutes ``config.blocks`` in place, measures, and puts the original blocks (and recorded recipe) back.

    ``measure`` is model -> perplexity (a number or an object with ``ppl``); ``statistics`` serve as in
    :func:`substitute_`. Returns one JSON-ready row: the blocks, rank, fit, the fit's position set, factor type,
    compression ratio, parameter counts, perplexity and its change (absolute and relative to ``baseline_ppl``), and
    seconds.
    """
    spec = models.architecture(model)
    blocks = spec.blocks(model)
    originals = {i % len(blocks): blocks[i % len(blocks)] for i in config.blocks}
    recorded = list(getattr(model, "tcompress_config", []))
    start = time.perf_counter()
    try:
        report = substitute_(model, windows, config, batch_size=batch_size, statistics=statistics)
        value = _ppl(measure(model))
    finally:
        for i, block in originals.items():
            models.set_module(model, f"{spec.blocks_path}.{i}", block)
        model.tcompress_config = recorded
    return {
        "blocks": [layer.layer for layer in report.layers],
        "rank": config.rank,
        "fit": config.fit,
        "positions": config.positions,
        "quantize": config.quantize,
        "compression_ratio": report.compression_ratio,
        "block_parameters": report.block_parameters,
        "map_parameters": report.map_parameters,
        "ppl": value,
        "ppl_change": value - baseline_ppl,
        "ppl_change_relative": value / baseline_ppl - 1,
        "seconds": time.perf_counter() - start,
    }


def _ppl(value: Any) -> float:
    return float(getattr(value, "ppl", value))
