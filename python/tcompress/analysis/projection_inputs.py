"""The second moment XᵀX of every block projection's input over calibration windows, in float64.

Collected with forward pre-hooks on the projection modules that :mod:`tcompress.models` lists, so the same code
serves GPT-2 (``Conv1D``) and the Llama-style families. Whitened SVD (:mod:`tcompress.recipes.factorize`) and the
output errors of the reconstruction-wall experiment read these moments: for any weight error D (out, in) the output
error over the calibration tokens is ||X·Dᵀ||_F² = tr(D·XᵀX·Dᵀ), so X itself never has to be kept.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from .. import models


@dataclass
class InputMoment:
    """The calibration inputs of one projection, summarized.

    Attributes:
        xtx: (in, in) float64, Σ over calibration tokens of xᵀx.
        tokens: the number of token rows summed.
    """

    xtx: torch.Tensor
    tokens: int

    @property
    def second_moment(self) -> torch.Tensor:
        """(in, in) float64: XᵀX / n, the uncentred covariance."""
        return self.xtx / max(self.tokens, 1)

    def output_sq_norm(self, weight_error: torch.Tensor) -> float:
        """weight_error (out, in) -> ||X·Dᵀ||_F² = tr(D·XᵀX·Dᵀ) over the calibration tokens (float64 arithmetic)."""
        d = weight_error.detach().to(torch.float64)
        return float(((d @ self.xtx) * d).sum())


def collect_input_moments(
    model: nn.Module,
    windows: torch.Tensor,
    *,
    names: Iterable[str] | None = None,
    batch_size: int = 8,
) -> dict[str, InputMoment]:
    """windows (n, L) int64 -> {projection name: InputMoment} for every block projection (or those in ``names``).

    Runs the model on each batch of windows under ``torch.inference_mode`` in eval mode (training flags restored)
    with one forward pre-hook per projection; the hooks are removed even when the forward fails. Every token
    position of every window counts as one row of X.

    Raises:
        ValueError: windows not a 2-D integer tensor, a ``names`` entry that is no projection of the model, or a
            non-positive batch size.
    """
    if not isinstance(windows, torch.Tensor) or windows.dim() != 2 or windows.dtype not in (torch.int64, torch.int32):
        got = f"{windows.dim()}-D {windows.dtype}" if isinstance(windows, torch.Tensor) else type(windows).__name__
        raise ValueError(f"collect_input_moments: windows must be a 2-D int64 tensor (n, length); got {got}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"collect_input_moments: batch_size must be a positive int; got {batch_size!r}")
    projections = dict(models.architecture(model).iter_projections(model))
    if names is not None:
        names = list(names)
        unknown = [n for n in names if n not in projections]
        if unknown:
            raise ValueError(
                f"collect_input_moments: {unknown[:3]} are not block projections of this model "
                f"(e.g. {next(iter(projections))!r})"
            )
        projections = {n: projections[n] for n in names}
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}

    def hook_for(name: str):
        def hook(module, args):
            x = args[0].detach().reshape(-1, args[0].shape[-1]).to(torch.float64)
            if name in sums:
                sums[name].addmm_(x.T, x)
            else:
                sums[name] = x.T @ x
            counts[name] = counts.get(name, 0) + x.shape[0]

        return hook

    handles = [module.register_forward_pre_hook(hook_for(name)) for name, module in projections.items()]
    training = [(m, m.training) for m in model.modules()]
    device = next(model.parameters()).device
    kwargs = {"use_cache": False} if hasattr(getattr(model, "config", None), "use_cache") else {}
    try:
        model.eval()
        with torch.inference_mode():
            for start in range(0, windows.shape[0], batch_size):
                model(windows[start : start + batch_size].long().to(device), **kwargs)
    finally:
        for handle in handles:
            handle.remove()
        for module, flag in training:
            module.training = flag
    return {name: InputMoment(sums[name].cpu(), counts[name]) for name in projections if name in sums}
