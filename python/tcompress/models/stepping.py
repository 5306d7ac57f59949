"""Running a causal LM one block at a time: embeddings, position state, attention mask, one decoder block, and the
keys/values one block would write for a given hidden state.

Whole-model wrappers that decide per token how many blocks to run (``early_exit/runtime.py``) walk the blocks through
a :class:`BlockStepper` and never name a module. Written against the ``transformers`` 5.x decoder-layer API: a block is
called as ``block(h, attention_mask=..., position_embeddings=..., cache=cache, use_cache=True)`` and writes
its keys/values with ``cache.update(k, v, layer_idx)`` (Llama/Mistral/Qwen2 rotate K before caching; GPT-2 has learned
positions and no rotation).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .calling import cache_kwargs, parameter_name
from .table import ArchSpec, architecture


@dataclass
class StepContext:
    """What every block of one forward step shares.

    Attributes:
        position_ids: (B, T) absolute positions of the step's tokens.
        rotary: (cos, sin), each (B, T, head_dim), for rotary families; None for GPT-2.
        mask: the attention mask the blocks expect (None where attention may use its causal fast path).
    """

    position_ids: torch.Tensor
    rotary: tuple[torch.Tensor, torch.Tensor] | None
    mask: Any


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class BlockStepper:
    """One model's blocks, callable one at a time against a ``transformers`` cache.

    Build with :func:`block_stepper`. Every method takes hidden states ``h: (B, T, d)``; ``i`` is a block index
    (0-based, forward order).
    """

    def __init__(self, model: nn.Module, spec: ArchSpec) -> None:
        self.model = model
        self.spec = spec
        self.config = model.config
        self.blocks = list(spec.blocks(model))
        self.final_norm = spec.final_norm(model)
        self.head = spec.head(model)
        self._embed = spec.embeddings(model)
        self._positions = spec.position_embeddings(model)
        self._rotary = model.get_submodule(spec.rotary_path) if spec.rotary_path else None
        # Imported here so that `import tcompress` does not pay for importing transformers.
        from transformers.masking_utils import create_causal_mask

        self._create_causal_mask: Callable[..., Any] = create_causal_mask

    @property
    def num_blocks(self) -> int:
        """The number of decoder blocks."""
        return len(self.blocks)

    def new_cache(self):
        """An empty ``transformers`` ``DynamicCache`` laid out for this model (sliding layers where it has them)."""
        from transformers import DynamicCache

        return DynamicCache(config=self.config)

    def embed(self, ids: torch.Tensor, position_ids: torch.Tensor) -> torch.Tensor:
        """ids (B, T), position_ids (B, T) -> (B, T, d): the input of block 0."""
        h = self._embed(ids)
        if self._positions is not None:
            h = h + self._positions(position_ids)
        return h

    def context(self, h: torch.Tensor, position_ids: torch.Tensor, cache) -> StepContext:
        """The position state and attention mask for a step whose tokens sit at ``position_ids`` after ``cache``.

        Call before the step's first block writes to the cache (the mask covers the cached length plus T).
        """
        rotary = self._rotary(h, position_ids=position_ids) if self._rotary is not None else None
        embeds = parameter_name(self._create_causal_mask, "inputs_embeds", "input_embeds")  # renamed in 5.x
        mask = self._create_causal_mask(
            config=self.config,
            **{embeds: h},
            attention_mask=None,
            position_ids=position_ids,
            **cache_kwargs(self._create_causal_mask, cache),
        )
        return StepContext(position_ids, rotary, mask)

    def run_block(self, i: int, h: torch.Tensor, ctx: StepContext, cache) -> torch.Tensor:
        """h (B, T, d) -> (B, T, d): block ``i`` on the step's tokens; it appends their keys/values to ``cache``."""
        kwargs = {"position_embeddings": ctx.rotary, "position_ids": ctx.position_ids} if ctx.rotary else {}
        block = self.blocks[i]
        kwargs.update(cache_kwargs(type(block).forward, cache))
        out = block(h, attention_mask=ctx.mask, use_cache=True, **kwargs)
        return out[0] if isinstance(out, tuple) else out

    def kv_states(self, i: int, h: torch.Tensor, ctx: StepContext) -> tuple[torch.Tensor, torch.Tensor]:
        """h (B, T, d) -> (keys, values), each (B, kv_heads, T, head_dim): what block ``i`` would cache for input h.

        Runs only that block's attention norm and K/V projections (and the rotation of K), not the block.
        """
        block = self.blocks[i]
        if self.spec.step_style == "gpt2":
            attn = block.attn
            _, k, v = attn.c_attn(block.ln_1(h)).split(attn.split_size, dim=2)
            head_dim = attn.head_dim
        else:
            attn = block.self_attn
            x = block.input_layernorm(h)
            k, v = attn.k_proj(x), attn.v_proj(x)
            head_dim = attn.head_dim
        shape = (*h.shape[:-1], -1, head_dim)
        k, v = k.view(shape).transpose(1, 2), v.view(shape).transpose(1, 2)
        if ctx.rotary is not None:
            cos, sin = (t.unsqueeze(1) for t in ctx.rotary)
            k = k * cos + _rotate_half(k) * sin
        return k, v

    def fill_kv(self, i: int, h: torch.Tensor, ctx: StepContext, cache) -> None:
        """Appends to block ``i``'s cache layer the keys/values it would compute from input ``h`` (B, T, d).

        The state propagation of CALM: a token that exited before block ``i`` still leaves keys and values there,
        computed from its exited hidden state, so later tokens attend over a complete cache.
        """
        k, v = self.kv_states(i, h, ctx)
        cache.update(k, v, i)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        """h (..., d) -> (..., vocab): the model's own final norm and head."""
        return self.head(self.final_norm(h))


def block_stepper(model: nn.Module) -> BlockStepper:
    """A :class:`BlockStepper` for ``model``.

    Raises:
        ValueError: the model is of no supported family (see :func:`tcompress.models.architecture`).
        NotImplementedError: the family has no stepping support; the message names the families that have it.
    """
    spec = architecture(model)
    if spec.step_style not in ("llama", "gpt2"):
        raise NotImplementedError(f"block stepping supports gpt2 and the llama family; got {spec.family}")
    return BlockStepper(model, spec)


def block_outputs(model: nn.Module, ids: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """ids (B, T) -> (hidden, logits): every block's output hidden state (B, T, d), in order, and the final logits.

    One ordinary forward pass of the model (no cache), with a forward hook on each block; ``hidden[k]`` is the
    residual stream after ``k + 1`` blocks (before the final norm).
    """
    spec = architecture(model)
    hidden: list[torch.Tensor] = []

    def keep(_module, _inputs, output):
        hidden.append(output[0] if isinstance(output, tuple) else output)

    handles = [block.register_forward_hook(keep) for block in spec.blocks(model)]
    try:
        out = model(ids, use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return hidden, out.logits
