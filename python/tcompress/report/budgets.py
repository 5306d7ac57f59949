"""How much work each ``tcompress report --budget`` does: token counts, layers, ranks and training steps.

Sizes are relative to the model (ranks as fractions of the hidden size d, layers as fractions of the depth) so one
budget serves GPT-2, SmolLM2 and Mistral alike.

- ``quick``: a smoke-sized run of every experiment; ≤ 15 minutes for SmolLM2-135M on a 2-core CPU. Numbers are
  noisy (4,096 evaluation tokens) but every finding gets a verdict.
- ``standard``: the budgets the README's result tables were measured with (16,384 evaluation tokens, 64 × 256
  calibration tokens, every block). Not yet run end to end; the experiment scripts behind those tables took about
  80 minutes together for SmolLM2-135M on a 2-core CPU.
- ``full``: the paper's protocol, for a GPU: the whole WikiText-2 test text, 128 × 2048 calibration tokens, every
  block, the paper's sweeps. Not yet run (no GPU so far).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

BUDGET_NAMES = ("quick", "standard", "full")


@dataclasses.dataclass(frozen=True)
class Budget:
    """The sizes of one report run.

    Attributes:
        name: ``"quick"``, ``"standard"`` or ``"full"``.
        eval_tokens: evaluation tokens (None = the whole text), in windows of the model's evaluation length.
        calib_windows, calib_length: calibration windows (non-overlapping, at seeded random places) and their length;
            a text holding fewer disjoint windows gives all it holds (recorded in results.json).
        spectral_ratios: fractions of the projections' parameters the spectral sweep keeps.
        spectral_methods: ``"plain"`` SVD and/or whitening methods (``"svd-llm"``, ``"asvd"``).
        quant_configs: names from :data:`tcompress.report.steps_compression.QUANT_CONFIGS`, each run without and
            with rotation.
        wall_rotations: the reconstruction wall without (False) and/or with (True) rotation.
        conditional_pairs: how many (upstream, downstream) block pairs conditional linearity measures.
        substitution_ranks: last-block map ranks as fractions of d (None = a dense map).
        substitution_positions: the position sets the maps are fitted on (:mod:`tcompress.analysis.activations`):
            every row is fitted on the first (the headline); the single-block rows are repeated for the others.
        substitution_int8: also the d/4 map with int8 factors.
        multi_block_counts: how many last blocks are replaced together (clean fits, rank d/4).
        multi_block_sequential: also the sequential fit of each multi-block replacement.
        geometry_layers: blocks whose input geometry is measured, evenly spaced, first and last included.
        geometry_windows: calibration windows (with gradients) for the geometry.
        projection_positions: position sets whose subspaces get the projection-perplexity intervention (the first
            is the headline).
        exit_depths: relative depths of the exit heads (rounded to blocks).
        exit_train_steps, exit_tokens_per_step: exit-head training budget.
        exit_windows, exit_length: windows the token-difficulty curves are measured on.
        exit_taus: KL thresholds (nats) of the easy-token curves.
        exit_thresholds: max-probability gate thresholds of the early-exit sweep.
        sweep_windows: windows of the teacher-forced sweep (of the exit windows).
        speed_tokens, speed_repeats: batch-1 greedy decoding measured for speed (0 tokens = skipped).
    """

    name: str
    eval_tokens: int | None
    calib_windows: int
    calib_length: int
    spectral_ratios: tuple[float, ...]
    spectral_methods: tuple[str, ...]
    quant_configs: tuple[str, ...]
    wall_rotations: tuple[bool, ...]
    conditional_pairs: int
    substitution_ranks: tuple[float | None, ...]
    substitution_positions: tuple[str, ...]
    substitution_int8: bool
    multi_block_counts: tuple[int, ...]
    multi_block_sequential: bool
    geometry_layers: int
    geometry_windows: int
    projection_positions: tuple[str, ...]
    exit_depths: tuple[float, ...]
    exit_train_steps: int
    exit_tokens_per_step: int
    exit_windows: int
    exit_length: int
    exit_taus: tuple[float, ...]
    exit_thresholds: tuple[float, ...]
    sweep_windows: int
    speed_tokens: int
    speed_repeats: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


BUDGETS: dict[str, Budget] = {
    "quick": Budget(
        name="quick",
        eval_tokens=4096,
        calib_windows=32,
        calib_length=256,
        spectral_ratios=(0.8, 0.5),
        spectral_methods=("plain", "svd-llm"),
        quant_configs=("W8", "W4 g64"),
        wall_rotations=(False,),
        conditional_pairs=2,
        substitution_ranks=(1 / 8, 1 / 4, None),
        substitution_positions=("no_outliers",),
        substitution_int8=False,
        multi_block_counts=(2, 4),
        multi_block_sequential=False,
        geometry_layers=3,
        geometry_windows=16,
        projection_positions=("no_outliers",),
        exit_depths=(0.5, 0.75, 0.9),
        exit_train_steps=60,
        exit_tokens_per_step=128,
        exit_windows=8,
        exit_length=128,
        exit_taus=(0.1, 0.5, 1.0),
        exit_thresholds=(0.5, 0.8, 0.9, 0.99),
        sweep_windows=4,
        speed_tokens=32,
        speed_repeats=2,
    ),
    "standard": Budget(
        name="standard",
        eval_tokens=16384,
        calib_windows=64,
        calib_length=256,
        spectral_ratios=(0.9, 0.8, 0.6, 0.4),
        spectral_methods=("plain", "svd-llm"),
        quant_configs=("W8", "W8A8", "W4 g64", "W4", "W4A8"),
        wall_rotations=(False, True),
        conditional_pairs=4,
        substitution_ranks=(1 / 16, 1 / 8, 1 / 4, 1 / 2, None),
        substitution_positions=("no_outliers", "all"),
        substitution_int8=True,
        multi_block_counts=(2, 4),
        multi_block_sequential=True,
        geometry_layers=6,
        geometry_windows=64,
        projection_positions=("no_outliers", "no_first"),
        exit_depths=(0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
        exit_train_steps=150,
        exit_tokens_per_step=128,
        exit_windows=16,
        exit_length=128,
        exit_taus=(0.05, 0.1, 0.25, 0.5, 1.0),
        exit_thresholds=(0.5, 0.7, 0.8, 0.9, 0.95, 0.99),
        sweep_windows=8,
        speed_tokens=128,
        speed_repeats=3,
    ),
    "full": Budget(
        name="full",
        eval_tokens=None,
        calib_windows=128,
        calib_length=2048,
        spectral_ratios=(0.9, 0.8, 0.7, 0.6, 0.5, 0.4),
        spectral_methods=("plain", "svd-llm", "asvd"),
        quant_configs=("W8", "W8A8", "W4 g64", "W4", "W4A8", "W4A4"),
        wall_rotations=(False, True),
        conditional_pairs=6,
        substitution_ranks=(1 / 32, 1 / 16, 1 / 8, 1 / 4, 1 / 2, None),
        substitution_positions=("no_outliers", "all"),
        substitution_int8=True,
        multi_block_counts=(2, 3, 4, 8),
        multi_block_sequential=True,
        geometry_layers=12,
        geometry_windows=128,
        projection_positions=("no_outliers", "no_first", "all"),
        exit_depths=(0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
        exit_train_steps=1000,
        exit_tokens_per_step=512,
        exit_windows=64,
        exit_length=512,
        exit_taus=(0.05, 0.1, 0.25, 0.5, 1.0),
        exit_thresholds=(0.5, 0.7, 0.8, 0.9, 0.95, 0.99),
        sweep_windows=16,
        speed_tokens=256,
        speed_repeats=3,
    ),
}


def budget(name: str) -> Budget:
    """The budget called ``name``.

    Raises:
        ValueError: an unknown name.
    """
    if name not in BUDGETS:
        raise ValueError(f"report: budget must be one of {', '.join(BUDGET_NAMES)}; got {name!r}")
    return BUDGETS[name]


def _count(low: int):
    """A validator of an int ≥ ``low``."""

    def check(value):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            return f"an int ≥ {low}"
        return None

    return check


def _eval_tokens(value):
    if value is None or _count(1)(value) is None:
        return None
    return "a positive int or None (the whole text)"


def _fractions(high: float, *, none: bool = False):
    """A validator of a non-empty sequence of numbers in (0, high] (None allowed where ``none``)."""

    def check(value):
        what = "a non-empty sequence of " + ("positive numbers" if high == math.inf else f"numbers in (0, {high:g}]")
        what += " or None" if none else ""
        if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list)) or not value:
            return what
        for v in value:
            if v is None and none:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= high:
                return what
        return None

    return check


def _names(allowed_from):
    """A validator of a non-empty sequence of names out of ``allowed_from()`` (a callable, so step modules that import
    this one can supply their tables)."""

    def check(value):
        allowed = allowed_from()
        what = f"a non-empty sequence of names out of {', '.join(allowed)}"
        if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list)) or not value:
            return what
        return None if all(v in allowed for v in value) else what

    return check


def _flags(value):
    if isinstance(value, (tuple, list)) and value and all(isinstance(v, bool) for v in value):
        return None
    return "a non-empty sequence of True/False"


def _flag(value):
    return None if isinstance(value, bool) else "True or False"


def _quant_config_names() -> tuple[str, ...]:
    from .steps_compression import QUANT_CONFIGS

    return tuple(QUANT_CONFIGS)


def _position_sets() -> tuple[str, ...]:
    from ..analysis.activations import POSITION_SETS

    return POSITION_SETS


def _counts(value):
    if isinstance(value, (tuple, list)) and value and all(_count(1)(v) is None for v in value):
        return None
    return "a non-empty sequence of ints ≥ 1"


#: How each overridable Budget field is checked: a function returning None for a good value, else what it expects.
_CHECKS = {
    "eval_tokens": _eval_tokens,
    # The held-out split of the block statistics needs one window apart and one to fit on.
    "calib_windows": _count(2),
    "calib_length": _count(2),
    "spectral_ratios": _fractions(1.0),
    "spectral_methods": _names(lambda: ("plain", "svd-llm", "asvd")),
    "quant_configs": _names(_quant_config_names),
    "wall_rotations": _flags,
    "conditional_pairs": _count(0),
    "substitution_ranks": _fractions(1.0, none=True),
    "substitution_positions": _names(_position_sets),
    "substitution_int8": _flag,
    "multi_block_counts": _counts,
    "multi_block_sequential": _flag,
    "geometry_layers": _count(1),
    "geometry_windows": _count(2),
    "projection_positions": _names(_position_sets),
    "exit_depths": _fractions(1.0),
    "exit_train_steps": _count(1),
    "exit_tokens_per_step": _count(1),
    "exit_windows": _count(1),
    "exit_length": _count(2),
    "exit_taus": _fractions(math.inf),
    "exit_thresholds": _fractions(1.0),
    "sweep_windows": _count(1),
    "speed_tokens": _count(0),
    "speed_repeats": _count(1),
}


def with_overrides(base: Budget, **overrides: Any) -> Budget:
    """``base`` with some sizes replaced, e.g. ``with_overrides(budget("quick"), eval_tokens=None, calib_windows=64)``.

    The name stays the base budget's (the overrides are recorded next to it in results.json). Sequences may be lists
    or tuples; they are stored as tuples.

    Args:
        base: the budget to start from.
        overrides: Budget field names (every field but ``name``) and their new values; ``eval_tokens=None`` means
            the whole evaluation text.

    Raises:
        ValueError: an unknown field name, or a value of the wrong kind or out of range (the message names the
            field, what it expects and what was given).
    """
    unknown = sorted(set(overrides) - set(_CHECKS))
    if unknown:
        raise ValueError(
            f"report: unknown budget override(s) {', '.join(unknown)}; expected some of {', '.join(_CHECKS)}"
        )
    changes = {}
    for name, value in overrides.items():
        expected = _CHECKS[name](value)
        if expected:
            raise ValueError(f"report: budget override {name} must be {expected}; got {value!r}")
        changes[name] = tuple(value) if isinstance(value, list) else value
    return dataclasses.replace(base, **changes)


def spaced_layers(count: int, num_blocks: int) -> list[int]:
    """``count`` block indices evenly spaced over ``num_blocks``, the first and the last included."""
    if count >= num_blocks:
        return list(range(num_blocks))
    if count <= 1:
        return [num_blocks - 1]
    step = (num_blocks - 1) / (count - 1)
    return sorted({round(i * step) for i in range(count)})


def depth_blocks(fractions: tuple[float, ...], num_blocks: int) -> list[int]:
    """Relative depths -> distinct block counts in [1, num_blocks - 1] (an exit after that many blocks)."""
    return sorted({min(max(round(f * num_blocks), 1), num_blocks - 1) for f in fractions})
