"""Replaying an unchanged prefix of blocks: evaluate a model changed only from block ``l`` on without running blocks
0..l-1 again.

Many measurements change one late part of a model and evaluate the whole of it many times over the same windows: the
last block replaced by a linear map at six ranks, the input of block l projected onto two subspaces. Blocks 0..l-1
then compute the same hidden states every time. :class:`PrefixReplay` records the hidden states entering block l once
per batch of windows (a forward that stops at block l, so recording costs l/L of an evaluation) and, inside
:meth:`PrefixReplay.replaying`, stands in for blocks 0..l-1: every one but the last passes its input through untouched
(no work), the last looks the batch up and returns the recorded block-l input. The embeddings, the head and every
block from l on run as usual, so a forward gives the logits of the unreplayed model to the bit (the same kernels on
the same inputs), for any change made at or after block l — including hooks on block l itself.

How a batch is found: by a BLAKE2 digest of the hidden states entering block 0 (the embeddings of its token ids and
positions), recorded with the block-l input. A batch that was not recorded (other windows, another batch size) raises
instead of being computed wrongly. Memory: one (B, T, d) tensor per recorded batch, kept on ``storage`` (host memory
by default) in the model's dtype: 16,384 tokens of SmolLM2-135M (d 576, fp32) is 38 MB; of Mistral-7B (d 4096,
bf16) 134 MB.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from .calling import block_input_hidden_states, decoder_layer_output
from .forwards import plain_forwards
from .offload import is_offloaded
from .table import architecture, set_module


class _Stop(Exception):
    """Raised by the recording hook once block l's input is in hand: nothing after it needs to run."""


def _digest(hidden: torch.Tensor) -> str:
    """(B, T, d) -> a digest of its shape, dtype and bytes."""
    data = hidden.detach().contiguous().cpu()
    head = f"{tuple(data.shape)}:{data.dtype}:".encode()
    return hashlib.blake2b(head + data.view(torch.uint8).numpy().tobytes(), digest_size=16).hexdigest()


class _PassThrough(nn.Module):
    """Stands in for a block of the replayed prefix: returns its input unchanged (as a decoder layer returns)."""

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        return decoder_layer_output(hidden_states)


class _Replay(nn.Module):
    """Stands in for the last block of the prefix: returns the recorded input of block l for this batch."""

    def __init__(self, recorded: dict[str, torch.Tensor]):
        super().__init__()
        self.recorded = recorded

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        key = _digest(hidden_states)
        if key not in self.recorded:
            raise RuntimeError(
                "PrefixReplay: this batch was not recorded (other windows or another batch size than "
                "PrefixReplay.record saw); record it first or evaluate without replaying"
            )
        return decoder_layer_output(self.recorded[key].to(device=hidden_states.device))


class PrefixReplay:
    """The hidden states entering block ``layer`` of ``model``, recorded per batch, to stand in for blocks
    0..layer-1 (see the module docstring).

    Args:
        model: a causal LM of a family :mod:`tcompress.models` supports, not offloaded.
        layer: the first block that runs (1 ≤ layer < number of blocks).
        storage: where the recorded hidden states are kept.

    Raises:
        ValueError: a layer out of range, or a model whose weights accelerate offloads.
    """

    def __init__(self, model: nn.Module, layer: int, storage: torch.device | str = "cpu"):
        spec = architecture(model)
        num_blocks = len(spec.blocks(model))
        if isinstance(layer, bool) or not isinstance(layer, int) or not 1 <= layer < num_blocks:
            raise ValueError(f"PrefixReplay: layer must be a block index in [1, {num_blocks}); got {layer!r}")
        if is_offloaded(model):
            raise ValueError("PrefixReplay: the model's weights are offloaded; evaluate it without replaying")
        self.model, self.layer, self.storage = model, layer, storage
        self.recorded: dict[str, torch.Tensor] = {}

    @property
    def nbytes(self) -> int:
        """Bytes held by the recorded hidden states."""
        return sum(t.numel() * t.element_size() for t in self.recorded.values())

    def record(self, windows: torch.Tensor, batch_size: int = 1) -> None:
        """Runs blocks 0..layer-1 on ``windows`` (N, T) int64 in batches of ``batch_size`` (as the evaluation will
        batch them) and keeps each batch's block-``layer`` input, as it arrives, before any hook on that block. Those
        blocks must be the unmodified ones; whatever is changed at or after block ``layer`` may already be in place."""
        if not isinstance(windows, torch.Tensor) or windows.dim() != 2:
            got = tuple(windows.shape) if isinstance(windows, torch.Tensor) else type(windows).__name__
            raise ValueError(f"PrefixReplay.record: windows must be (num_windows, T) token ids; got {got}")
        spec = architecture(self.model)
        blocks = spec.blocks(self.model)
        captured: dict[str, Any] = {}

        def first(module, args, kwargs):
            captured["key"] = _digest(block_input_hidden_states(args, kwargs))

        def last(module, args, kwargs):
            captured["hidden"] = block_input_hidden_states(args, kwargs).detach().to(self.storage)
            raise _Stop

        # Both run before any hook already on these blocks (prepend): a projection hooked on block l must not change
        # what is recorded as block l's input.
        handles = [
            blocks[0].register_forward_pre_hook(first, with_kwargs=True, prepend=True),
            blocks[self.layer].register_forward_pre_hook(last, with_kwargs=True, prepend=True),
        ]
        try:
            # no_grad, not inference_mode: the recorded tensors may meet autograd later.
            with plain_forwards(self.model) as forward, torch.no_grad():
                for start in range(0, windows.shape[0], batch_size):
                    try:
                        forward(windows[start : start + batch_size])
                    except _Stop:
                        pass
                    self.recorded[captured["key"]] = captured["hidden"]
        finally:
            for h in handles:
                h.remove()

    @contextmanager
    def replaying(self) -> Iterator[None]:
        """Within the block, blocks 0..layer-1 are stood in for by the recorded states; put back on exit, also on
        errors."""
        spec = architecture(self.model)
        replaced: list[tuple[str, nn.Module]] = []
        try:
            for i in range(self.layer):
                stand_in = _Replay(self.recorded) if i == self.layer - 1 else _PassThrough()
                name = f"{spec.blocks_path}.{i}"
                replaced.append((name, set_module(self.model, name, stand_in)))
            yield
        finally:
            for name, block in reversed(replaced):
                set_module(self.model, name, block)
