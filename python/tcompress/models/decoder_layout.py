"""What a native batch-1 decode step reads from a model: its geometry, its modules by role, its norms, its rotary
tables and its KV cache, or why it cannot have one.

The step (``csrc/cpu/decode_step.cpp``) reimplements transformers' pre-norm decoder layers: Llama / Mistral / Qwen2
(RMSNorm, q/k/v, rotary, grouped-query attention with an optional sliding window, o, SiLU-gated MLP) and GPT-2
(LayerNorm with bias, learned positions, fused q/k/v, multi-head attention, GELU MLP). :func:`decoder_layout` accepts
a model only where that is what its modules compute, and names the first thing that differs otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .table import architecture, norm_parameters

_STEP_FAMILIES = ("llama", "mistral", "qwen2", "gpt2")

# transformers' activation names -> the step's MLP kinds (gelu_new, gelu_fast and the pytorch tanh GELU are the same
# tanh approximation).
_GELU = {"gelu_new": "gelu_tanh", "gelu_fast": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu_erf"}


class UnsupportedDecoder(ValueError):
    """The model's forward is not what the native decode step computes; the message says where it differs."""


@dataclass
class DecoderLayout:
    """A decoder's parts (the model's own modules and tensors, not copies) and geometry.

    Attributes:
        d, n_heads, n_kv_heads, head_dim, ffn, vocab: sizes; ``n_heads % n_kv_heads == 0``.
        eps: the norms' epsilon. attn_scale: the factor of q k^T. sliding_window: 0 for full attention.
        norm: ``"rmsnorm"`` or ``"layernorm"``. mlp: ``"silu_gated"``, ``"gelu_tanh"`` or ``"gelu_erf"``.
        embed: (vocab, d) token embedding weight. positions: (n_positions, d) learned positions, or None.
        final_norm, final_norm_bias: (d,) scale and bias (None) of the norm after the last block.
        blocks: per block, ``{"attn_norm", "mlp_norm": (d,), "attn_norm_bias", "mlp_norm_bias": (d,) or None,
            and the projection modules by role}``: ``q k v o gate up down``, or ``qkv o up down`` for GPT-2.
        head: the output projection module.
        rotary: the model's rotary embedding module (see :meth:`rotary_tables`), or None (learned positions).
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
    norm: str
    mlp: str
    embed: torch.Tensor
    positions: torch.Tensor | None
    final_norm: torch.Tensor
    final_norm_bias: torch.Tensor | None
    blocks: list[dict]
    head: nn.Module
    rotary: nn.Module | None

    def rotary_tables(self, length: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(cos, sin), each (length, head_dim) fp32 contiguous: the values the model's attention multiplies by at
        positions 0 .. length - 1 (scaling variants included, as its rotary module computes them); None without
        rotary positions."""
        if self.rotary is None:
            return None
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


def _norm(norm: nn.Module, d: int, where: str, kinds: set, eps: set) -> tuple[torch.Tensor, torch.Tensor | None]:
    """((d,) scale, (d,) bias or None) of a norm (ones for a scale-free RMSNorm); adds its kind (``"layernorm"``
    or ``"rmsnorm"``: a rotated GPT-2 keeps scale-free RMSNorms in place of its LayerNorms) to ``kinds`` and its
    epsilon to ``eps``."""
    try:
        weight, bias, epsilon = norm_parameters(norm)
    except TypeError as exc:
        raise UnsupportedDecoder(f"{where} is a {type(norm).__name__}, not a norm the native step runs") from exc
    kind = "layernorm" if isinstance(norm, nn.LayerNorm) else "rmsnorm"
    if kind == "rmsnorm" and bias is not None:
        raise UnsupportedDecoder(f"{where} has a bias; the native step's RMSNorm has none")
    kinds.add(kind)
    eps.add(epsilon)
    if weight is None:
        held = next(iter(norm.buffers()), None)
        weight = torch.ones(d, device=held.device if held is not None else "cpu")
    return weight.detach(), None if bias is None else bias.detach()


_LENGTH_DEPENDENT_ROPE = ("dynamic", "longrope")


def _sliding_window(config, n_blocks: int) -> int:
    """The attention window every block uses (0: full attention), from ``config.layer_types`` where the config has
    them (Qwen2 slides only blocks >= max_window_layers), else from ``sliding_window``."""
    window = getattr(config, "sliding_window", None) or 0
    if not getattr(config, "use_sliding_window", True):  # Qwen2 without use_sliding_window carries an unused window
        window = 0
    kinds = set(getattr(config, "layer_types", None) or [])
    if kinds == {"full_attention"}:
        return 0
    if len(kinds) > 1:
        slid = sum(kind == "sliding_attention" for kind in config.layer_types)
        raise UnsupportedDecoder(
            f"{slid} of {n_blocks} blocks use a sliding window and the others full attention; the native step "
            "applies one window to every block"
        )
    return int(window)


def _mlp_kind(config) -> str:
    if hasattr(config, "activation_function"):  # GPT-2
        kind = _GELU.get(config.activation_function)
        if kind is None:
            raise UnsupportedDecoder(
                f"activation_function {config.activation_function!r}: the native step's GPT-2 MLP runs "
                f"{', '.join(_GELU)}"
            )
        return kind
    if getattr(config, "hidden_act", "silu") != "silu":
        raise UnsupportedDecoder(f"hidden_act {config.hidden_act!r}: the native step's Llama MLP is SiLU-gated")
    return "silu_gated"


def decoder_layout(model: nn.Module) -> DecoderLayout:
    """The :class:`DecoderLayout` of a Llama/Mistral/Qwen2 or GPT-2 causal LM.

    Raises:
        UnsupportedDecoder: an activation the step does not run, per-head q/k norms, attention scaled per layer
            (GPT-2's ``scale_attn_by_inverse_layer_idx``), a block whose attention or MLP was replaced (a substituted
            block), a norm of another kind, or norms with different epsilons.
        ValueError: the model is of no supported family at all (from :func:`architecture`).
    """
    spec = architecture(model)
    if spec.family not in _STEP_FAMILIES:
        raise UnsupportedDecoder(f"family {spec.family!r}: the native step runs {', '.join(_STEP_FAMILIES)} only")
    config = model.config
    mlp = _mlp_kind(config)
    attn_path = "attn" if spec.family == "gpt2" else "self_attn"
    embed = spec.embeddings(model).weight.detach()
    vocab, d = embed.shape
    blocks, kinds, eps, scales = [], set(), set(), set()
    for i, block in enumerate(spec.blocks(model)):
        where = f"block {i}"
        try:
            attn = block.get_submodule(attn_path)
            projections = spec.projections(block)
            norms = spec.block_norms(block)
        except AttributeError as exc:
            raise UnsupportedDecoder(f"{where} is a {type(block).__name__} without the decoder layer's parts") from exc
        if hasattr(attn, "q_norm") or hasattr(attn, "k_norm"):
            raise UnsupportedDecoder(f"{where} normalizes q and k per head; the native step does not")
        scales.add(float(getattr(attn, "scaling", attn.head_dim**-0.5)))
        attn_norm, attn_bias = _norm(norms["attn"], d, f"{where}'s attention norm", kinds, eps)
        mlp_norm, mlp_bias = _norm(norms["mlp"], d, f"{where}'s MLP norm", kinds, eps)
        blocks.append(dict(attn_norm=attn_norm, attn_norm_bias=attn_bias, mlp_norm=mlp_norm, mlp_norm_bias=mlp_bias,
                           **projections))  # fmt: skip
    if len(scales) != 1:
        raise UnsupportedDecoder(f"the blocks scale attention differently ({sorted(scales)}); the native step uses one")
    final_norm, final_bias = _norm(spec.final_norm(model), d, "the final norm", kinds, eps)
    if len(kinds) != 1:
        raise UnsupportedDecoder(f"the model mixes norm kinds ({', '.join(sorted(kinds))}); the native step runs one")
    if len(eps) != 1:
        raise UnsupportedDecoder(f"the norms use different epsilons {sorted(eps)}; the native step takes one")
    first_attn = spec.blocks(model)[0].get_submodule(attn_path)
    n_heads = int(config.num_attention_heads)
    head_dim = int(getattr(first_attn, "head_dim", d // n_heads))
    window = _sliding_window(config, len(blocks))
    positions = spec.position_embeddings(model)
    rotary = model.get_submodule(spec.rotary_path) if spec.rotary_path else None
    if rotary is None and positions is None:
        raise UnsupportedDecoder("the model has neither a shared rotary embedding nor learned positions")
    rope_type = getattr(rotary, "rope_type", "default")
    if rope_type in _LENGTH_DEPENDENT_ROPE:
        # Their frequencies depend on the current sequence length; one table for all positions would be wrong.
        raise UnsupportedDecoder(f"rope_type {rope_type!r} recomputes its frequencies per length; the native step "
                                 "uses one table")  # fmt: skip
    ffn = getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * d
    return DecoderLayout(
        d=d,
        n_heads=n_heads,
        n_kv_heads=int(getattr(config, "num_key_value_heads", None) or n_heads),
        head_dim=head_dim,
        ffn=int(ffn),
        vocab=vocab,
        eps=eps.pop(),
        attn_scale=scales.pop(),
        sliding_window=window,
        norm=kinds.pop(),
        mlp=mlp,
        embed=embed,
        positions=None if positions is None else positions.weight.detach(),
        final_norm=final_norm,
        final_norm_bias=final_bias,
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
