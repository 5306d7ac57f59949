"""What a native batch-1 decode step reads from a Llama-family model: its geometry, its modules by role, its rotary
tables and its KV cache, or why it cannot have one.

The step (``csrc/cpu/decode_step.cpp``) reimplements transformers' Llama decoder layer (RMSNorm, q/k/v, rotary,
grouped-query attention with an optional sliding window, o, RMSNorm, SiLU-gated MLP); :func:`decoder_layout` accepts
a model only where that is what its modules compute, and names the first thing that differs otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .table import architecture, norm_parameters

_STEP_FAMILIES = ("llama", "mistral", "qwen2")


class UnsupportedDecoder(ValueError):
    """The model's forward is not what the native decode step computes; the message says where it differs."""


@dataclass
class DecoderLayout:
    """A Llama-family decoder's parts (the model's own modules and tensors, not copies) and geometry.

    Attributes:
        d, n_heads, n_kv_heads, head_dim, ffn, vocab: sizes; ``n_heads % n_kv_heads == 0``.
        eps: the RMSNorms' epsilon. attn_scale: the factor of q k^T. sliding_window: 0 for full attention.
        embed: (vocab, d) token embedding weight. final_norm: (d,) scale of the norm after the last block.
        blocks: per block, ``{"attn_norm": (d,), "mlp_norm": (d,), "q" ... "down": the projection modules}``.
        head: the output projection module.
        rotary: the model's rotary embedding module (see :meth:`rotary_tables`).
    """

    d: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ffn: int
    vocab: int
    eps: float
    attn_scale: float
    sliding_window: int
    embed: torch.Tensor
    final_norm: torch.Tensor
    blocks: list[dict]
    head: nn.Module
    rotary: nn.Module

    def rotary_tables(self, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin), each (length, head_dim) fp32 contiguous: the values the model's attention multiplies by at
        positions 0 .. length - 1 (scaling variants included, as its rotary module computes them)."""
        positions = torch.arange(length, device=self.embed.device)[None]
        probe = torch.zeros(1, dtype=torch.float32, device=self.embed.device)
        cos, sin = self.rotary(probe, positions)
        cos, sin = cos[0].to(torch.float32).contiguous(), sin[0].to(torch.float32).contiguous()
        if cos.shape != (length, self.head_dim):
            raise UnsupportedDecoder(
                f"the rotary embedding gives tables of shape {tuple(cos.shape)}; the native step rotates whole heads "
                f"and needs ({length}, {self.head_dim}) (partial rotary is not supported)"
            )
        return cos, sin


def _scale(norm: nn.Module, d: int, where: str, eps: set) -> torch.Tensor:
    """(d,) the RMSNorm's scale (ones for a scale-free norm); adds its epsilon to ``eps``."""
    try:
        weight, bias, epsilon = norm_parameters(norm)
    except TypeError as exc:
        raise UnsupportedDecoder(f"{where} is a {type(norm).__name__}, not an RMSNorm") from exc
    if bias is not None:
        raise UnsupportedDecoder(f"{where} has a bias; the native step's RMSNorm has none")
    eps.add(epsilon)
    return torch.ones(d, device=_norm_device(norm)) if weight is None else weight.detach()


def _norm_device(norm: nn.Module) -> torch.device:
    held = next(iter(norm.buffers()), None) or next(iter(norm.parameters()), None)
    return torch.device("cpu") if held is None else held.device


def decoder_layout(model: nn.Module) -> DecoderLayout:
    """The :class:`DecoderLayout` of a Llama/Mistral/Qwen2 causal LM.

    Raises:
        UnsupportedDecoder: another family, an activation other than SiLU, per-head q/k norms, a block whose
            attention or MLP was replaced (a substituted block), or a norm that is no RMSNorm.
        ValueError: the model is of no supported family at all (from :func:`architecture`).
    """
    spec = architecture(model)
    if spec.family not in _STEP_FAMILIES:
        raise UnsupportedDecoder(f"family {spec.family!r}: the native step runs {', '.join(_STEP_FAMILIES)} only")
    config = model.config
    if getattr(config, "hidden_act", "silu") != "silu":
        raise UnsupportedDecoder(f"hidden_act {config.hidden_act!r}: the native step's MLP is SiLU-gated")
    embed = spec.embeddings(model).weight.detach()
    vocab, d = embed.shape
    blocks, eps = [], set()
    for i, block in enumerate(spec.blocks(model)):
        where = f"block {i}"
        try:
            attn = block.get_submodule("self_attn")
            projections = spec.projections(block)
            norms = spec.block_norms(block)
        except AttributeError as exc:
            raise UnsupportedDecoder(f"{where} is a {type(block).__name__} without the decoder layer's parts") from exc
        if hasattr(attn, "q_norm") or hasattr(attn, "k_norm"):
            raise UnsupportedDecoder(f"{where} normalizes q and k per head; the native step does not")
        blocks.append(
            {
                "attn_norm": _scale(norms["attn"], d, f"{where}'s attention norm", eps),
                "mlp_norm": _scale(norms["mlp"], d, f"{where}'s MLP norm", eps),
                **projections,
            }
        )
    first_attn = spec.blocks(model)[0].get_submodule("self_attn")
    head_dim = int(getattr(first_attn, "head_dim", d // config.num_attention_heads))
    n_heads = int(config.num_attention_heads)
    n_kv_heads = int(getattr(config, "num_key_value_heads", None) or n_heads)
    window = getattr(config, "sliding_window", None) or 0
    if not getattr(config, "use_sliding_window", True):  # Qwen2 carries a window it does not use
        window = 0
    final_norm = _scale(spec.final_norm(model), d, "the final norm", eps)
    if len(eps) != 1:
        raise UnsupportedDecoder(f"the RMSNorms use different epsilons {sorted(eps)}; the native step takes one")
    rotary = model.get_submodule(spec.rotary_path) if spec.rotary_path else None
    if rotary is None:
        raise UnsupportedDecoder("the model has no shared rotary embedding module")
    return DecoderLayout(
        d=d,
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        head_dim=head_dim,
        ffn=int(config.intermediate_size),
        vocab=vocab,
        eps=eps.pop(),
        attn_scale=float(getattr(first_attn, "scaling", head_dim**-0.5)),
        sliding_window=int(window),
        embed=embed,
        final_norm=final_norm,
        blocks=blocks,
        head=spec.head(model),
        rotary=rotary,
    )


def cached_keys_values(cache, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(keys, values), each (batch, n_kv_heads, T, head_dim) with rotary applied, of one layer of a transformers
    ``DynamicCache`` (transformers >= 4.56 keeps them per layer object; older releases in lists)."""
    if hasattr(cache, "layers"):
        entry = cache.layers[layer]
        return entry.keys, entry.values
    return cache.key_cache[layer], cache.value_cache[layer]
