"""The second moment XᵀX of every block projection's input over calibration windows, in float64, one group of
blocks at a time.

Collected with forward pre-hooks on the projection modules that :mod:`tcompress.models` lists, so the same code
serves GPT-2 (``Conv1D``) and the Llama-style families. Whitened SVD (:mod:`tcompress.recipes.factorize`) and the
output errors of the spectral sweep and the reconstruction wall read these moments: for any weight error D (out, in)
the output error over the calibration tokens is ||X·Dᵀ||_F² = tr(D·XᵀX·Dᵀ), so X itself never has to be kept.

Keyed by input, not by projection: the projections that read one norm's output (q/k/v, gate/up; GPT-2's c_attn and
c_fc read one each) share a single :class:`InputMoment` object, keyed by that norm's qualified name; ``o`` and
``down`` each own theirs, keyed by the projection's name. So Mistral-7B holds 3·d² + f² float64 numbers per block
(2.2 GB), not 6·d² + f² with bit-identical copies.

Memory is O(a few blocks): :func:`stream_input_moments` yields the moments of one group of blocks at a time, sized
to ``max_bytes``; each group's forward passes stop after the group's last block (the layers above it, the final
norm and the head never run). The sums live on the device the block's inputs arrive on (a model split with
accelerate's ``device_map`` keeps each block's moments on that block's execution device), so whitening factors
built from them meet the weights on the same device.

Why float64: the sums run over up to 262k tokens (the full budget) of activations whose largest components reach 1e3
or more (attention sinks, massive activations); SVD-LLM takes a Cholesky factor of XᵀX/n, whose small eigenvalues a
float32 sum would lose. The activations are converted chunk by chunk (at most :data:`CHUNK_BYTES` of float64 at a
time), whatever the model's dtype.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import torch
from torch import nn

from .. import models

#: Default budget of one group's float64 sums (bytes): Mistral-7B's 2.2 GB per block makes every block a group of its
#: own; GPT-2's 89 MB per block puts its 12 blocks in one group.
DEFAULT_GROUP_BYTES = 2 << 30
#: The most float64 activation rows converted at once per hook (bytes), so a long batch never doubles in float64.
CHUNK_BYTES = 256 << 20


class InputMoment:
    """The calibration inputs of one projection (or of several that read the same tensor), summarized.

    Held as XᵀX (in, in) when there are at least as many token rows as input features, else as the rows X (n, in)
    themselves, which are then smaller and make output norms cheaper: ||X·Dᵀ||² costs n·out·in instead of in²·out
    (for Mistral-7B's down_proj at 2,048 calibration tokens: 0.24 instead of 1.7 TFLOP per norm). XᵀX is formed
    from the rows on first use (whitening needs it).

    Attributes:
        tokens: the number of token rows summed.
        rows: (n, in) float64 X, or None when only XᵀX is held.
    """

    def __init__(self, xtx: torch.Tensor | None = None, tokens: int = 0, *, rows: torch.Tensor | None = None):
        if (xtx is None) == (rows is None):
            raise ValueError("InputMoment: give exactly one of xtx (in, in) and rows (n, in)")
        self._xtx = xtx
        self.rows = rows
        self.tokens = int(tokens if rows is None else rows.shape[0])

    @property
    def xtx(self) -> torch.Tensor:
        """(in, in) float64, Σ over calibration tokens of xᵀx, on the device the inputs arrived on."""
        if self._xtx is None:
            self._xtx = self.rows.T @ self.rows
        return self._xtx

    @property
    def device(self) -> torch.device:
        return (self.rows if self.rows is not None else self._xtx).device

    @property
    def second_moment(self) -> torch.Tensor:
        """(in, in) float64: XᵀX / n, the uncentred covariance."""
        return self.xtx / max(self.tokens, 1)

    def output_sq_norm(self, weight_error: torch.Tensor) -> float:
        """weight_error (out, in) -> ||X·Dᵀ||_F² = tr(D·XᵀX·Dᵀ) over the calibration tokens (float64 arithmetic, on
        this moment's device), from the rows when they are held (fewer rows than features: cheaper)."""
        d = weight_error.detach().to(device=self.device, dtype=torch.float64)
        if self.rows is not None:
            return float((self.rows @ d.T).pow(2).sum())
        return float(((d @ self._xtx) * d).sum())

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self._xtx, self.rows) if t is not None)


def input_keys(model: nn.Module) -> dict[str, str]:
    """{projection name: input key} for every block projection, block by block in forward order.

    Projections that read one norm's output share the key of that norm (its qualified name); the others (``o``,
    ``down``) are keyed by their own name.
    """
    arch = models.architecture(model)
    keys: dict[str, str] = {}
    shared = {}
    for norm_name, _norm, readers in arch.iter_norms(model):
        for reader_name, _ in readers:
            shared[reader_name] = norm_name
    for name, _ in arch.iter_projections(model):
        keys[name] = shared.get(name, name)
    return keys


def block_of(name: str, model: nn.Module) -> int:
    """The block index of a projection's qualified name (``model.layers.3.mlp.down_proj`` -> 3)."""
    prefix = models.architecture(model).blocks_path + "."
    return int(name[len(prefix) :].split(".", 1)[0])


def moment_bytes_per_block(model: nn.Module) -> list[int]:
    """The bytes of each block's float64 input sums (Σ over its distinct inputs of 8·in²), block by block."""
    arch = models.architecture(model)
    projections = dict(arch.iter_projections(model))
    sizes = [0] * len(arch.blocks(model))
    seen = set()
    for name, key in input_keys(model).items():
        if key in seen:
            continue
        seen.add(key)
        in_features = _in_features(projections[name])
        sizes[block_of(name, model)] += 8 * in_features * in_features
    return sizes


def _in_features(module: nn.Module) -> int:
    for attr in ("in_features", "nx"):  # nn.Linear, our replacements / transformers Conv1D
        value = getattr(module, attr, None)
        if isinstance(value, int):
            return value
    return int(models.projection_weight(module).shape[1])


def block_groups(model: nn.Module, max_bytes: int, blocks: Iterable[int] | None = None) -> list[list[int]]:
    """Consecutive groups of the (selected) blocks whose input sums fit ``max_bytes`` each (at least one block)."""
    sizes = moment_bytes_per_block(model)
    wanted = sorted(set(range(len(sizes)) if blocks is None else blocks))
    groups: list[list[int]] = []
    used = 0
    for b in wanted:
        if groups and used + sizes[b] <= max_bytes:
            groups[-1].append(b)
            used += sizes[b]
        else:
            groups.append([b])
            used = sizes[b]
    return groups


class _StopForward(Exception):
    """Raised by a hook after the last block of a group: nothing above it needs to run."""


def _check_windows(who: str, windows, batch_size) -> None:
    if not isinstance(windows, torch.Tensor) or windows.dim() != 2 or windows.dtype not in (torch.int64, torch.int32):
        got = f"{windows.dim()}-D {windows.dtype}" if isinstance(windows, torch.Tensor) else type(windows).__name__
        raise ValueError(f"{who}: windows must be a 2-D int64 tensor (n, length); got {got}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"{who}: batch_size must be a positive int; got {batch_size!r}")


def _accumulate(
    sums: dict[str, torch.Tensor], rows: dict[str, list], counts: dict[str, int], key: str, x: torch.Tensor, total: int
) -> None:
    """Adds one batch of a projection's inputs: to XᵀX, or (fewer ``total`` rows than features) to the kept rows."""
    x = x.detach().reshape(-1, x.shape[-1])
    counts[key] = counts.get(key, 0) + x.shape[0]
    if total < x.shape[1]:
        rows.setdefault(key, []).append(x.to(torch.float64))
        return
    step = max(1, CHUNK_BYTES // (8 * x.shape[1]))
    for start in range(0, x.shape[0], step):
        chunk = x[start : start + step].to(torch.float64)
        if key in sums:
            sums[key].addmm_(chunk.T, chunk)
        else:
            sums[key] = chunk.T @ chunk


def _collect_group(
    model: nn.Module, windows: torch.Tensor, projections: dict[str, nn.Module], keys: dict[str, str], batch_size: int
) -> dict[str, InputMoment]:
    """The moments of ``projections`` (all within a few blocks) in forward passes that stop after their last block."""
    arch = models.architecture(model)
    blocks = arch.blocks(model)
    last = max(block_of(name, model) for name in projections)
    sums: dict[str, torch.Tensor] = {}
    kept: dict[str, list] = {}
    counts: dict[str, int] = {}
    total = windows.numel()
    handles = []
    hooked_keys = set()
    for name, module in projections.items():
        key = keys[name]
        if key in hooked_keys:
            continue  # the same tensor reaches this projection as the one already hooked for this key
        hooked_keys.add(key)
        handles.append(
            module.register_forward_pre_hook(
                lambda m, args, key=key: _accumulate(sums, kept, counts, key, args[0], total)
            )
        )

    def stop(module, args, output):
        raise _StopForward

    stops_early = last < len(blocks) - 1
    if stops_early:
        handles.append(blocks[last].register_forward_hook(stop))
    training = [(m, m.training) for m in model.modules()]
    device = models.execution_device(arch.embeddings(model))  # accelerate-offloaded: where its hook computes
    kwargs = {"use_cache": False} if hasattr(getattr(model, "config", None), "use_cache") else {}
    try:
        model.eval()
        with torch.inference_mode():
            for start in range(0, windows.shape[0], batch_size):
                try:
                    model(windows[start : start + batch_size].long().to(device), **kwargs)
                except _StopForward:
                    pass
    finally:
        for handle in handles:
            handle.remove()
        for module, flag in training:
            module.training = flag
    shared = {key: InputMoment(sums[key], counts[key]) for key in sums}
    shared.update({key: InputMoment(rows=torch.cat(chunks)) for key, chunks in kept.items()})
    return {name: shared[keys[name]] for name in projections if keys[name] in shared}


def stream_input_moments(
    model: nn.Module,
    windows: torch.Tensor,
    *,
    names: Iterable[str] | None = None,
    batch_size: int = 8,
    max_bytes: int = DEFAULT_GROUP_BYTES,
) -> Iterator[tuple[list[int], dict[str, InputMoment]]]:
    """windows (n, L) int64 -> yields (block indices, {projection name: InputMoment}) one group of blocks at a time.

    Each group holds consecutive blocks whose float64 sums fit ``max_bytes`` (a block larger than that is a group
    of its own); its moments are gathered in their own forward passes over all windows, which stop after the group's
    last block, and are released when the caller moves to the next group. Projections sharing an input share one
    :class:`InputMoment` object. The model must not be changed between groups if the moments are to describe the
    same model (callers that rewrite weights do so after the last group).

    Raises:
        ValueError: windows not a 2-D integer tensor, a ``names`` entry that is no projection of the model, or a
            non-positive batch size.
    """
    _check_windows("stream_input_moments", windows, batch_size)
    projections = dict(models.architecture(model).iter_projections(model))
    if names is not None:
        names = list(names)
        unknown = [n for n in names if n not in projections]
        if unknown:
            raise ValueError(
                f"input moments: {unknown[:3]} are not block projections of this model "
                f"(e.g. {next(iter(projections))!r})"
            )
        projections = {n: projections[n] for n in names}
    keys = input_keys(model)
    by_block: dict[int, dict[str, nn.Module]] = {}
    for name, module in projections.items():
        by_block.setdefault(block_of(name, model), {})[name] = module
    for group in block_groups(model, max_bytes, by_block):
        selected = {n: m for b in group for n, m in by_block[b].items()}
        yield group, _collect_group(model, windows, selected, keys, batch_size)


def collect_input_moments(
    model: nn.Module,
    windows: torch.Tensor,
    *,
    names: Iterable[str] | None = None,
    batch_size: int = 8,
) -> dict[str, InputMoment]:
    """windows (n, L) int64 -> {projection name: InputMoment} for every block projection (or those in ``names``).

    Everything at once, in one forward pass per batch: memory O(model) (Σ 8·in² per distinct input), fine for small
    models and for a few ``names``; whole-model sweeps at scale use :func:`stream_input_moments`. Runs under
    ``torch.inference_mode`` in eval mode (training flags restored); the hooks are removed even when the forward
    fails. Every token position of every window counts as one row of X.

    Raises:
        ValueError: windows not a 2-D integer tensor, a ``names`` entry that is no projection of the model, or a
            non-positive batch size.
    """
    _check_windows("collect_input_moments", windows, batch_size)
    moments: dict[str, InputMoment] = {}
    for _, group in stream_input_moments(model, windows, names=names, batch_size=batch_size, max_bytes=1 << 62):
        moments.update(group)
    return moments
