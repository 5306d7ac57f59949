"""The report's compression steps: baseline perplexity, the spectral sweep, W8/W4 with and without rotation, and the
reconstruction wall. Each step takes the :class:`~tcompress.report.context.ReportContext` and returns a
JSON-serializable dict. Variants are made on the live model and undone (no copies of the model): when a step
ends, the model computes what it did before."""

from __future__ import annotations

import time
from typing import Any

from .. import models
from ..recipes import QuantizeConfig, RotateConfig, compress_
from ..recipes.live_edit import restoring
from ..recipes.reconstruction_wall import reconstruction_wall
from ..recipes.spectral_sweep import spectral_sweep
from .context import ReportContext

#: The weight/activation settings a budget can name (``Budget.quant_configs``).
QUANT_CONFIGS: dict[str, QuantizeConfig] = {
    "W8": QuantizeConfig(bits=8, group_size=None),
    "W8A8": QuantizeConfig(bits=8, group_size=None, act_bits=8),
    "W4 g64": QuantizeConfig(bits=4, group_size=64),
    "W4": QuantizeConfig(bits=4, group_size=None),
    "W4A8": QuantizeConfig(bits=4, group_size=None, act_bits=8),
    "W4A4": QuantizeConfig(bits=4, group_size=None, act_bits=4),
}

#: QuaRot-style rotation as the README's tables use it: random Hadamard residual rotation and an online Hadamard
#: before every down-projection.
ROTATION = RotateConfig(seed=0, online_hadamard=True)


def baseline(ctx: ReportContext) -> dict[str, Any]:
    """The unmodified model's perplexity on the evaluation windows."""
    result = ctx.baseline()
    ctx.log(f"  baseline perplexity {result.ppl:.4f} over {result.tokens} tokens")
    return result.to_dict()


def spectral(ctx: ReportContext) -> dict[str, Any]:
    """Truncated SVD of every projection at each kept-parameter ratio, plain and whitened: perplexity against the
    parameters kept (the paper's spectral-compression experiment)."""
    methods = [None if m == "plain" else m for m in ctx.budget.spectral_methods]

    def on_point(p):
        ctx.log(f"  {p.method} at {p.params_kept_fraction:.3f} of the parameters: perplexity {p.perplexity:.4f}")

    result = spectral_sweep(
        ctx.model,
        ctx.calib_windows,
        ratios=ctx.budget.spectral_ratios,
        methods=methods,
        measure=ctx.measure_modified,
        baseline=ctx.baseline().ppl,
        on_point=on_point,
    )
    return result.to_dict()


def _fits(model, config: QuantizeConfig) -> str | None:
    """Why ``config`` cannot quantize ``model`` (a group size that does not divide some in_features), or None."""
    if config.group_size is None:
        return None
    for name, module in models.architecture(model).iter_projections(model):
        in_features = models.projection_weight(module).shape[1]
        if in_features % config.group_size:
            return f"n/a: group size {config.group_size} does not divide in_features {in_features} of {name}"
    return None


def quantization(ctx: ReportContext) -> dict[str, Any]:
    """Perplexity of each weight/activation setting without and with rotation (and of the rotated fp32 model, which
    must equal the baseline: the rotation is an exact reparametrization).

    No model copies: each setting quantizes the live model and is undone (the dense projections are kept aside, not
    copied); the rotation is fused into the live weights once, with one host copy of the model to restore them.
    """
    model = ctx.model
    labels = ["fp32", *ctx.budget.quant_configs]
    rows: dict[tuple[str, bool], dict[str, Any]] = {}

    def run(label: str, rotated: bool, why_not: str | None) -> None:
        config = None if label == "fp32" else QUANT_CONFIGS[label]
        row: dict[str, Any] = {"setting": label, "rotated": rotated, "config": config and config.to_dict()}
        rows[(label, rotated)] = row
        reason = why_not or (config and _fits(model, config))
        if reason:
            row.update(ppl=None, note=reason)
            ctx.log(f"  {label}{' rotated' if rotated else ''}: {reason}")
            return
        start = time.perf_counter()
        with restoring(model, weights=False):  # module swaps only: the dense projections come back untouched
            if config is not None:
                compress_(model, config)
            result = ctx.measure_modified(model)
        row.update(ppl=result.ppl, tokens=result.tokens, seconds=time.perf_counter() - start)
        ctx.log(f"  {label}{' rotated' if rotated else ''}: perplexity {result.ppl:.4f}")

    ctx.baseline()  # measured on the unmodified model before anything changes it
    for label in labels[1:]:
        run(label, False, None)
    with restoring(model, weights=True):
        try:
            compress_(model, ROTATION)
            failed = None
        except (ValueError, NotImplementedError) as exc:  # e.g. a hidden size with no Hadamard construction
            failed = f"rotation failed: {exc}"
        for label in labels:
            run(label, True, failed)
    ordered = [rows[(label, rotated)] for label in labels for rotated in (False, True) if (label, rotated) in rows]
    return {"baseline_ppl": ctx.baseline().ppl, "rotation": ROTATION.to_dict(), "rows": ordered}


def _wall_group_size(model) -> int | None:
    """The paper-style 64 columns per scale, or the largest smaller power of two, that divides every projection's
    in_features; else None (per row).

    Q(A)·Q(B) needs no more: its factors take ragged groups, so any rank fits a group size (rank 2 fits direct
    int4's bits for every projection of at least 8 x 8)."""
    in_features = {models.projection_weight(m).shape[1] for _, m in models.architecture(model).iter_projections(model)}
    for g in (64, 32, 16, 8):
        if all(i % g == 0 for i in in_features):
            return g
    return None


def wall(ctx: ReportContext) -> dict[str, Any]:
    """The reconstruction wall at equal bits: Q(W) vs Q(A)·Q(B), and Q(W − AB) + AB vs direct int5, without and
    (per budget) with rotation."""
    group_size = _wall_group_size(ctx.model)
    runs, skipped = [], []
    for rotate in ctx.budget.wall_rotations:
        if rotate and models.is_offloaded(ctx.model):
            skipped.append({"rotated": True, "note": "not run: the rotation cannot rewrite offloaded weights"})
            ctx.log("  rotated: not run (the model has offloaded weights, which the rotation cannot rewrite)")
            continue
        start = time.perf_counter()
        result = reconstruction_wall(
            ctx.model,
            ctx.calib_windows,
            group_size=group_size,
            rotate=rotate,
            measure=ctx.measure_modified,
            baseline=ctx.baseline().ppl,
        ).to_dict()
        result["rotated"] = rotate
        result["seconds"] = time.perf_counter() - start
        for v in result["variants"]:
            ctx.log(
                f"  {'rotated ' if rotate else ''}{v['variant']}: {v['bits_per_weight']:.3f} bits/weight, "
                f"output error {v['output_rel_error']:.4f}, perplexity {v['perplexity']:.4f}"
            )
        runs.append(result)
    return {"group_size": group_size, "runs": runs, **({"skipped": skipped} if skipped else {})}
