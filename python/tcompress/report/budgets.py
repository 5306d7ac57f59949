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
from typing import Any

BUDGET_NAMES = ("quick", "standard", "full")


@dataclasses.dataclass(frozen=True)
class Budget:
    """The sizes of one report run.

    Attributes:
        name: ``"quick"``, ``"standard"`` or ``"full"``.
        eval_tokens: evaluation tokens (None = the whole text), in windows of the model's evaluation length.
        calib_windows, calib_length: calibration windows (seeded random offsets) and their length.
        spectral_ratios: fractions of the projections' parameters the spectral sweep keeps.
        spectral_methods: ``"plain"`` SVD and/or whitening methods (``"svd-llm"``, ``"asvd"``).
        quant_configs: names from :data:`tcompress.report.steps_compression.QUANT_CONFIGS`, each run without and
            with rotation.
        wall_rotations: the reconstruction wall without (False) and/or with (True) rotation.
        conditional_pairs: how many (upstream, downstream) block pairs conditional linearity measures.
        substitution_ranks: last-block map ranks as fractions of d (None = a dense map).
        substitution_int8: also the d/4 map with int8 factors.
        multi_block_counts: how many last blocks are replaced together (clean fits, rank d/4).
        multi_block_sequential: also the sequential fit of each multi-block replacement.
        geometry_layers: blocks whose input geometry is measured, evenly spaced, first and last included.
        geometry_windows: calibration windows (with gradients) for the geometry.
        projection_positions: position sets whose subspaces get the projection-perplexity intervention.
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
        substitution_int8=False,
        multi_block_counts=(2, 4),
        multi_block_sequential=False,
        geometry_layers=3,
        geometry_windows=16,
        projection_positions=("no_first",),
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
        substitution_int8=True,
        multi_block_counts=(2, 4),
        multi_block_sequential=True,
        geometry_layers=6,
        geometry_windows=64,
        projection_positions=("no_first",),
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
        substitution_int8=True,
        multi_block_counts=(2, 3, 4, 8),
        multi_block_sequential=True,
        geometry_layers=12,
        geometry_windows=128,
        projection_positions=("no_first", "all"),
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
