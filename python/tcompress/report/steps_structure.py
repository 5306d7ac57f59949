"""The report's structural steps: the block-linearity curve and conditional linearity, single- and multi-block
linear substitution, and activation geometry (variance vs gradient subspaces, the projection intervention).
Each takes the :class:`~tcompress.report.context.ReportContext` and returns a JSON-serializable dict; the model is
left as it was (substituted blocks are put back)."""

from __future__ import annotations

import time
from typing import Any

import torch

from ..analysis.activations import collect_block_statistics
from ..analysis.geometry import activation_geometry
from ..analysis.linearity import block_linearity, conditional_linearity
from ..analysis.subspace_projection import projection_perplexity
from ..recipes import SubstituteConfig
from ..recipes.substitute import measure_substitution
from .budgets import spaced_layers
from .context import ReportContext

RIDGE = 1e-6
#: How many leading eigenvalues of each spectrum results.json keeps (the plots show the first 64).
SPECTRUM_LENGTH = 128


def _conditional_pairs(num_blocks: int, count: int) -> list[tuple[int, int]]:
    """(upstream k, downstream k + 1) pairs, the last pair first (the paper's headline block), then spread out."""
    last = num_blocks - 1
    candidates = [last - 1, last // 2, 0, last - 2, last // 4, (3 * last) // 4]
    pairs: list[tuple[int, int]] = []
    for k in candidates:
        if 0 <= k < last and (k, k + 1) not in pairs:
            pairs.append((k, k + 1))
    return sorted(pairs[:count])


def linearity(ctx: ReportContext) -> dict[str, Any]:
    """Held-out R² of a ridge affine fit per block (output and residual-update targets), then conditional linearity:
    a block's fit when the block before it is replaced by its own linear map."""
    stats = ctx.block_statistics()
    curve = block_linearity(stats, ridge=RIDGE)
    for block in curve.blocks:
        r2, first = block.r2[curve.default_positions], block.r2["no_first"]
        ctx.log(
            f"  block {block.layer} ({curve.default_positions}): R² output {r2['output'].pooled:.4f}, residual update "
            f"{r2['residual'].pooled:.4f} (no_first: {first['output'].pooled:.4f}, {first['residual'].pooled:.4f})"
        )
    pairs = _conditional_pairs(ctx.num_blocks, ctx.budget.conditional_pairs)
    if not pairs:  # a one-block model has no upstream block to replace
        ctx.log("  conditional linearity: not measured (it needs two blocks)")
        conditional = {"pairs": [], "note": "not measured: a one-block model has no upstream block to replace"}
        return {"ridge": RIDGE, "curve": curve.to_dict(), "conditional": conditional, "conditional_seconds": 0.0}
    start = time.perf_counter()
    conditional = conditional_linearity(
        ctx.model, ctx.calib_windows, pairs, clean_stats=stats, ridge=RIDGE, batch_size=4
    )
    for pair in conditional.pairs:
        ctx.log(
            f"  block {pair.layer} after block {pair.upstream} is replaced: R² output "
            f"{pair.clean['output'].pooled:.4f} -> {pair.shifted_clean_fit['output'].pooled:.4f} (clean fit), "
            f"{pair.shifted_refit['output'].pooled:.4f} (refitted)"
        )
    return {
        "ridge": RIDGE,
        "curve": curve.to_dict(),
        "conditional": conditional.to_dict(),
        "conditional_seconds": time.perf_counter() - start,
    }


def _substitute_and_measure(ctx: ReportContext, config: SubstituteConfig) -> dict[str, Any]:
    first_changed = min(i % ctx.num_blocks for i in config.blocks)
    row = measure_substitution(
        ctx.model,
        ctx.calib_windows,
        config,
        lambda model: ctx.measure_from(model, first_changed),
        ctx.baseline().ppl,
        batch_size=4,
        statistics=ctx.block_statistics() if config.fit == "clean" else None,
    )
    rank = "dense" if config.rank is None else f"rank {config.rank}"
    ctx.log(
        f"  blocks {row['blocks']} {rank} {config.fit} on {config.positions}{' int8' if config.quantize else ''}: "
        f"{row['compression_ratio']:.1f}x, perplexity {row['ppl']:.4f} ({row['ppl_change']:+.4f})"
    )
    return row


def substitution(ctx: ReportContext) -> dict[str, Any]:
    """The last block replaced by a linear map at several ranks (and dense), then the last 2, 4, ... blocks; every
    map fitted on the budget's first position set, the single-block maps also on the others."""
    d, budget = ctx.hidden_size, ctx.budget
    quarter = max(1, round(d / 4))
    headline, *others = budget.substitution_positions
    configs = []
    for positions in (headline, *others):
        configs += [
            SubstituteConfig(
                blocks=(-1,), rank=None if f is None else max(1, round(f * d)), ridge=RIDGE, positions=positions
            )
            for f in budget.substitution_ranks
        ]
    if budget.substitution_int8:
        configs.append(SubstituteConfig(blocks=(-1,), rank=quarter, quantize="int8", ridge=RIDGE, positions=headline))
    fits = ("clean", "sequential") if budget.multi_block_sequential else ("clean",)
    for count in budget.multi_block_counts:
        if count > ctx.num_blocks:
            continue
        for fit in fits:
            blocks = tuple(range(-count, 0))
            configs.append(SubstituteConfig(blocks=blocks, rank=quarter, fit=fit, ridge=RIDGE, positions=headline))
    rows = [_substitute_and_measure(ctx, config) for config in configs]
    return {"baseline_ppl": ctx.baseline().ppl, "hidden_size": d, "headline_positions": headline, "rows": rows}


def _spectrum(matrix: torch.Tensor) -> list[float]:
    """(d, d) symmetric PSD -> its leading eigenvalues as fractions of the trace, descending."""
    values = torch.linalg.eigvalsh(matrix.double()).flip(0).clamp_min(0)
    return [float(v) for v in (values / values.sum())[:SPECTRUM_LENGTH]]


def geometry(ctx: ReportContext) -> dict[str, Any]:
    """At evenly spaced blocks: k(90%) of the input variance, its overlap and CCA with the top-k gradient and
    unembedding directions, both spectra, and perplexity with the block input projected onto each subspace."""
    budget = ctx.budget
    layers = spaced_layers(budget.geometry_layers, ctx.num_blocks)
    windows = ctx.calib_windows[: budget.geometry_windows]
    start = time.perf_counter()
    massive = ctx.massive_tokens().first_windows(windows.shape[0])
    stats = collect_block_statistics(
        ctx.model, windows, layers=layers, gradients=True, holdout=0.1, seed=0, exclude=massive
    )
    ctx.log(f"  statistics with gradients of blocks {layers} in {time.perf_counter() - start:.0f} s")
    report, bases = activation_geometry(stats, model=ctx.model, positions=stats.position_sets)
    default_positions = stats.default_positions
    spectra = {}
    for layer in layers:
        moments = stats.moments(layer)
        spectra[str(layer)] = {
            "variance": _spectrum(moments.cov_in()),
            "gradient": _spectrum(moments.grad_second_moment()),
        }
    # The (d, d) float64 sums are done with (the bases are on the CPU); free them before the evaluations below.
    stats = moments = None
    baseline = ctx.baseline().ppl
    projections = []
    for layer in layers:
        for positions in budget.projection_positions:
            layer_bases = bases[(layer, positions)]
            for basis_name in ("variance", "gradient"):
                result = projection_perplexity(
                    ctx.model,
                    lambda model, layer=layer: ctx.measure_from(model, layer),
                    layer=layer,
                    mean=layer_bases.mean,
                    basis=getattr(layer_bases, basis_name),
                    basis_name=basis_name,
                    positions=positions,
                    baseline_ppl=baseline,
                    norm_threshold=massive.threshold(layer) if positions == "no_outliers" else None,
                )
                projections.append(result.to_dict())
                ctx.log(
                    f"  block {layer} input ({positions}) onto the top-{result.k} {basis_name} directions: perplexity "
                    f"{result.ppl:.4f} (baseline {baseline:.4f})"
                )
    for g in report.layers:
        if g.positions == default_positions and g.gradient is not None:
            ctx.log(
                f"  block {g.layer}: k(90%) = {g.k}/{g.hidden_size}, overlap with gradient subspace "
                f"{g.gradient.overlap:.3f} (random {g.gradient.random_overlap:.3f}), canonical correlations < 0.5: "
                f"{g.gradient.uncorrelated_fraction:.3f}"
            )
    return {
        "layers": layers,
        "calibration_windows": list(windows.shape),
        "geometry": report.to_dict(),
        "spectra": spectra,
        "projections": projections,
        "baseline_ppl": baseline,
    }
