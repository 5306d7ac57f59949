"""The projection intervention of finding 1: evaluate a model with the residual stream entering one block replaced by
its projection onto a k-dimensional subspace, h -> μ + B Bᵀ (h - μ).

B is U_k (the top-variance directions, which keep ≥ 90% of the variance by construction) or G_k (the top gradient
directions of the same dimension), from :func:`tcompress.analysis.geometry.layer_geometry`. The hook also measures,
on the evaluation tokens themselves (held out from the calibration windows the bases came from), the share of the
variance about μ that the projection keeps: Σ||Bᵀ(h - μ)||² / Σ||h - μ||².

With ``skip_first`` (the ``"no_first"`` position set, whose statistics exclude the attention-sink position), the
first position of every window is passed through unchanged and left out of the retained-variance sums. With a
``norm_threshold`` as well (the ``"no_outliers"`` set), so is every token whose block input is massive by the rule of
:mod:`tcompress.analysis.massive_tokens` — its norm above the input threshold measured on the calibration windows the
bases came from — so the bases are only applied to the kind of inputs they were computed from; how many tokens were
passed through is recorded. (The rule's output side cannot be applied before the block runs; a token massive only by
its output has an ordinary input, which the bases do describe.)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from .. import evaluate, models


@dataclasses.dataclass(frozen=True)
class ProjectionResult:
    """What evaluating with one projected layer measured.

    Attributes:
        layer: the block whose input was projected.
        positions: the position set the bases come from (``"no_first"`` leaves position 0 of each window unchanged,
            ``"no_outliers"`` also the massive tokens).
        basis: ``"variance"``, ``"gradient"`` or ``"unembedding"``.
        k: the subspace dimension.
        retained_variance: Σ||Bᵀ(h - μ)||² / Σ||h - μ||² over the projected evaluation tokens.
        ppl: perplexity with the projection.
        baseline_ppl: perplexity of the unmodified model on the same windows.
        tokens: predicted tokens.
        unprojected_massive: evaluation tokens at positions ≥ 1 passed through unchanged as massive.
        norm_threshold: the massive-token norm threshold in force (None: none).
    """

    layer: int
    positions: str
    basis: str
    k: int
    retained_variance: float
    ppl: float
    baseline_ppl: float
    tokens: int
    unprojected_massive: int = 0
    norm_threshold: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The fields as a JSON-serializable dict."""
        return dataclasses.asdict(self)


class SubspaceProjection:
    """A forward pre-hook: block input h (B, T, d) -> μ + B Bᵀ (h - μ), summing retained variance as it goes.

    Runs on the device the block's input arrives on (for a model that accelerate dispatched, the previous block's
    execution device); μ and B move there on first use.

    Args:
        mean: (d,) μ.
        basis: (d, k) orthonormal columns B.
        skip_first: leave position 0 of every window unchanged (and out of the sums).
        norm_threshold: also leave unchanged (and out of the sums) every token whose input norm exceeds it.
    """

    def __init__(
        self, mean: torch.Tensor, basis: torch.Tensor, skip_first: bool, norm_threshold: float | None = None
    ) -> None:
        if not isinstance(basis, torch.Tensor) or basis.dim() != 2 or not 1 <= basis.shape[1] <= basis.shape[0]:
            got = tuple(basis.shape) if isinstance(basis, torch.Tensor) else type(basis).__name__
            raise ValueError(f"SubspaceProjection: basis must be (d, k) with 1 ≤ k ≤ d; got {got}")
        if not isinstance(mean, torch.Tensor) or mean.shape != (basis.shape[0],):
            got = tuple(mean.shape) if isinstance(mean, torch.Tensor) else type(mean).__name__
            raise ValueError(f"SubspaceProjection: mean must be ({basis.shape[0]},) to match the basis; got {got}")
        gram = basis.double().T @ basis.double()
        if not torch.allclose(gram, torch.eye(basis.shape[1], dtype=torch.float64, device=gram.device), atol=1e-6):
            raise ValueError("SubspaceProjection: basis must have orthonormal columns (BᵀB = I)")
        self.mean = mean.detach().double()
        self.basis = basis.detach().double()
        self.skip_first = bool(skip_first)
        if norm_threshold is not None and not norm_threshold > 0:
            raise ValueError(
                f"SubspaceProjection: norm_threshold must be a positive number or None; got {norm_threshold!r}"
            )
        self.norm_threshold = None if norm_threshold is None else float(norm_threshold)
        self.kept = 0.0
        self.total = 0.0
        self.unprojected_massive = 0

    @property
    def retained_variance(self) -> float:
        """Σ||Bᵀ(h - μ)||² / Σ||h - μ||² over the tokens projected so far (NaN before any)."""
        return self.kept / self.total if self.total > 0 else float("nan")

    def project(self, hidden: torch.Tensor) -> torch.Tensor:
        """(B, T, d) -> (B, T, d) projected (in float64, returned in the input's dtype)."""
        if hidden.shape[-1] != self.basis.shape[0]:
            raise ValueError(
                f"SubspaceProjection: hidden states of width {hidden.shape[-1]} do not match the basis's "
                f"d = {self.basis.shape[0]}"
            )
        if self.basis.device != hidden.device:
            # Moved once and kept: the block's input arrives on the block's execution device at every forward.
            self.mean, self.basis = self.mean.to(hidden.device), self.basis.to(hidden.device)
        mean, basis = self.mean, self.basis
        part = hidden[:, 1:] if self.skip_first else hidden
        centred = part.double() - mean
        coords = centred @ basis
        projected = mean + coords @ basis.T
        if self.norm_threshold is not None:
            # Massive tokens keep their own hidden state (and stay out of the sums), as in the statistics.
            massive = part.float().norm(dim=-1) > self.norm_threshold
            self.unprojected_massive += int(massive.sum())
            keep = ~massive[..., None]
            coords, centred = coords * keep, centred * keep
            projected = torch.where(keep, projected, part.double())
        self.kept += float(coords.pow(2).sum())
        self.total += float(centred.pow(2).sum())
        projected = projected.to(hidden.dtype)
        if self.skip_first:
            projected = torch.cat((hidden[:, :1], projected), dim=1)
        return projected

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict):
        hidden = models.block_input_hidden_states(args, kwargs)
        projected = self.project(hidden)
        if args and args[0] is hidden:
            return (projected, *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": projected}


@contextmanager
def projected_layer(
    model: nn.Module,
    layer: int,
    mean: torch.Tensor,
    basis: torch.Tensor,
    *,
    skip_first: bool,
    norm_threshold: float | None = None,
) -> Iterator[SubspaceProjection]:
    """Within the block, block ``layer``'s input is projected (see :class:`SubspaceProjection`); the hook is removed
    on exit, also on errors.

    Raises:
        ValueError: a layer index outside the model's blocks, or a bad mean/basis.
    """
    blocks = models.architecture(model).blocks(model)
    if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < len(blocks):
        raise ValueError(f"projected_layer: layer must be a block index in [0, {len(blocks)}); got {layer!r}")
    hook = SubspaceProjection(mean, basis, skip_first, norm_threshold)
    handle = blocks[layer].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        yield hook
    finally:
        handle.remove()


def projection_perplexity(
    model: nn.Module,
    measure: Callable[[nn.Module], evaluate.PerplexityResult],
    *,
    layer: int,
    mean: torch.Tensor,
    basis: torch.Tensor,
    basis_name: str,
    positions: str,
    baseline_ppl: float,
    norm_threshold: float | None = None,
) -> ProjectionResult:
    """Perplexity, as ``measure(model)`` computes it, with block ``layer``'s input projected onto ``basis`` (d, k).

    ``measure`` is e.g. ``lambda m: evaluate.perplexity(m, windows, progress=False)`` or
    :func:`tcompress.evaluate.perplexity_of_texts` over held-out texts. ``positions == "no_first"`` leaves the first
    position of each window unprojected; ``"no_outliers"`` also every token whose block input norm exceeds
    ``norm_threshold`` (:meth:`tcompress.analysis.massive_tokens.MassiveTokens.threshold` of this block on the
    calibration windows; required for that set, refused for the others). ``baseline_ppl`` is the unmodified model's
    perplexity under the same ``measure`` (measured once by the caller), recorded for comparison.

    Raises:
        ValueError: an unknown position set, a norm threshold missing for ``"no_outliers"`` or given for another
            set, or as :func:`projected_layer`.
    """
    if positions not in ("no_outliers", "no_first", "all"):
        raise ValueError(
            f"projection_perplexity: positions must be 'no_outliers', 'no_first' or 'all'; got {positions!r}"
        )
    if (norm_threshold is None) == (positions == "no_outliers"):
        raise ValueError(
            "projection_perplexity: a norm_threshold goes with positions='no_outliers' and only with it; got "
            f"positions={positions!r}, norm_threshold={norm_threshold!r}"
        )
    skip_first = positions != "all"
    with projected_layer(model, layer, mean, basis, skip_first=skip_first, norm_threshold=norm_threshold) as hook:
        result = measure(model)
    return ProjectionResult(
        layer=int(layer),
        positions=positions,
        basis=str(basis_name),
        k=int(basis.shape[1]),
        retained_variance=hook.retained_variance,
        ppl=result.ppl,
        baseline_ppl=float(baseline_ppl),
        tokens=result.tokens,
        unprojected_massive=hook.unprojected_massive,
        norm_threshold=norm_threshold,
    )
