"""The architecture table: where each supported family keeps its blocks, norms, embeddings, head and projections.

This is the only place in tcompress that knows architecture names (``transformer.h``, ``model.layers``, ``ln_f``,
``Conv1D`` ...). Recipes and analyses ask :func:`architecture` for an :class:`ArchSpec` and go through its methods.

Projection roles (the keys of :meth:`ArchSpec.projections`), shared across families where the math is the same:

==========  =====================================  =====================================================
role        llama / mistral / qwen2                gpt2
==========  =====================================  =====================================================
``q``       ``self_attn.q_proj``                   (fused into ``qkv``)
``k``       ``self_attn.k_proj``                   (fused into ``qkv``)
``v``       ``self_attn.v_proj``                   (fused into ``qkv``)
``qkv``     --                                     ``attn.c_attn``: (3·d, d), rows q | k | v
``o``       ``self_attn.o_proj``                   ``attn.c_proj``: attention output, writes the residual
``gate``    ``mlp.gate_proj``                      --
``up``      ``mlp.up_proj``                        ``mlp.c_fc``: d -> 4·d
``down``    ``mlp.down_proj``                      ``mlp.c_proj``: 4·d -> d, writes the residual
==========  =====================================  =====================================================

So ``o`` and ``down`` are the two projections that write the residual stream in every family
(:attr:`ArchSpec.residual_writer_roles`), and the projections that read a normalized residual are listed by
:attr:`ArchSpec.norm_consumers` (the head reads the final norm). ``down`` is the projection whose input a rotation
recipe may transform online (:attr:`ArchSpec.online_hadamard_roles`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from .offload import inherit_placement_


@dataclass(frozen=True)
class ArchSpec:
    """Where one architecture family keeps its parts, as dotted paths relative to the model or to a block.

    Attributes:
        family: the family name (``"gpt2"``, ``"llama"``, ``"mistral"``, ``"qwen2"``).
        model_types: the ``config.model_type`` values this spec serves.
        class_names: the causal-LM class names this spec serves (used when the model has no ``config.model_type``).
        blocks_path: the ``nn.ModuleList`` of transformer blocks.
        embeddings_path: the token embedding.
        position_embeddings_path: the learned position embedding, or None (rotary positions live inside attention).
        final_norm_path: the norm applied after the last block.
        head_path: the output projection to vocabulary logits.
        norm_type: ``"layernorm"`` (mean-centred, with bias) or ``"rmsnorm"`` (scale only).
        block_norm_paths: (role, path in the block) of each norm inside a block, in forward order.
        projection_paths: (role, path in the block) of each linear projection inside a block, in forward order.
        norm_consumers: (norm role, projection roles that read that norm's output), e.g. for folding a norm's scale
            into the projections that follow it.
        transposed_weights: True where projections are ``transformers`` ``Conv1D`` (weight stored (in, out)).
        default_eval_length: the usual perplexity window for the family (capped by the model's context length).
        residual_writer_roles: projection roles whose output is added to the residual stream.
        online_hadamard_roles: projection roles whose input (inside the block, not the residual stream) may be
            rotated at run time by an online Hadamard transform.
        rotary_path: the rotary position-embedding module (called once per forward, shared by all blocks), or None.
        step_style: how a block is called and where it keeps K/V (``"llama"`` or ``"gpt2"``); see
            :mod:`tcompress.models.stepping`.
    """

    family: str
    model_types: tuple[str, ...]
    class_names: tuple[str, ...]
    blocks_path: str
    embeddings_path: str
    position_embeddings_path: str | None
    final_norm_path: str
    head_path: str
    norm_type: str
    block_norm_paths: tuple[tuple[str, str], ...]
    projection_paths: tuple[tuple[str, str], ...]
    norm_consumers: tuple[tuple[str, tuple[str, ...]], ...]
    transposed_weights: bool
    default_eval_length: int
    residual_writer_roles: tuple[str, ...] = ("o", "down")
    online_hadamard_roles: tuple[str, ...] = ("down",)
    rotary_path: str | None = None
    step_style: str = "llama"

    # -- whole-model parts ------------------------------------------------------------------------------------

    def blocks(self, model: nn.Module) -> nn.ModuleList:
        """The transformer blocks, in forward order (the model's own ``ModuleList``, not a copy)."""
        return model.get_submodule(self.blocks_path)

    def embeddings(self, model: nn.Module) -> nn.Embedding:
        """The token embedding: (vocab, d)."""
        return model.get_submodule(self.embeddings_path)

    def position_embeddings(self, model: nn.Module) -> nn.Embedding | None:
        """The learned position embedding (n_positions, d), or None for families with rotary positions."""
        if self.position_embeddings_path is None:
            return None
        return model.get_submodule(self.position_embeddings_path)

    def final_norm(self, model: nn.Module) -> nn.Module:
        """The norm after the last block (``LayerNorm`` for gpt2, an RMSNorm otherwise)."""
        return model.get_submodule(self.final_norm_path)

    def head(self, model: nn.Module) -> nn.Linear:
        """The output projection: (..., d) -> (..., vocab). Shares its weight with the embedding when tied."""
        return model.get_submodule(self.head_path)

    def is_tied(self, model: nn.Module) -> bool:
        """Whether the head and the token embedding share one weight tensor.

        Decided from the tensors themselves, not ``config.tie_word_embeddings``: what matters to a recipe that edits
        the head is whether the embedding changes with it.
        """
        head_w, emb_w = self.head(model).weight, self.embeddings(model).weight
        if head_w is emb_w:
            return True
        return head_w.shape == emb_w.shape and head_w.device == emb_w.device and head_w.data_ptr() == emb_w.data_ptr()

    def untie_head_(self, model: nn.Module) -> nn.Module:
        """Gives the head a weight of its own (a copy) when it shares the embedding's; returns the head.

        Also sets ``config.tie_word_embeddings = False`` so that a saved and reloaded model is not re-tied.
        """
        head = self.head(model)
        if self.is_tied(model):
            head.weight = nn.Parameter(head.weight.detach().clone(), requires_grad=head.weight.requires_grad)
        if getattr(model, "config", None) is not None:
            model.config.tie_word_embeddings = False
        return head

    def eval_length(self, model: nn.Module) -> int:
        """The standard perplexity window: the family's usual length, never more than the model's context length.

        1024 for gpt2 and 2048 for the Llama-style families (the lengths the papers report), so stories260K (context
        512) gets 512.
        """
        context = context_length(model)
        return self.default_eval_length if context is None else min(self.default_eval_length, context)

    # -- per-block parts --------------------------------------------------------------------------------------

    def block_norms(self, block: nn.Module) -> dict[str, nn.Module]:
        """The norms inside one block by role: ``{"attn": before attention, "mlp": before the MLP}``."""
        return {role: block.get_submodule(path) for role, path in self.block_norm_paths}

    def projections(self, block: nn.Module) -> dict[str, nn.Module]:
        """The linear projections inside one block by role, in forward order (see the module docstring for roles).

        Returns whatever module sits in each slot, so after a recipe swapped one it is the replacement.
        """
        return {role: block.get_submodule(path) for role, path in self.projection_paths}

    def iter_projections(self, model: nn.Module) -> Iterator[tuple[str, nn.Module]]:
        """Yields (qualified name as in ``model.named_modules()``, module) for every projection in every block.

        Block by block, in forward order within a block; embeddings and the head are not included.
        """
        for i, block in enumerate(self.blocks(model)):
            for role, module in self.projections(block).items():
                yield f"{self.blocks_path}.{i}.{dict(self.projection_paths)[role]}", module

    def iter_roles(self, model: nn.Module, roles: tuple[str, ...]) -> Iterator[tuple[str, nn.Module]]:
        """Yields (qualified name, module) of the projections with one of ``roles``, block by block."""
        paths = dict(self.projection_paths)
        for i, block in enumerate(self.blocks(model)):
            for role in roles:
                yield f"{self.blocks_path}.{i}.{paths[role]}", block.get_submodule(paths[role])

    def iter_norms(self, model: nn.Module) -> Iterator[tuple[str, nn.Module, list[tuple[str, nn.Module]]]]:
        """Yields (norm name, norm module, [(name, module) of each projection that reads the norm's output]).

        Every norm of every block, then the final norm, whose reader is the head.
        """
        paths = dict(self.projection_paths)
        consumers = dict(self.norm_consumers)
        for i, block in enumerate(self.blocks(model)):
            prefix = f"{self.blocks_path}.{i}."
            for role, path in self.block_norm_paths:
                readers = [(prefix + paths[r], block.get_submodule(paths[r])) for r in consumers[role]]
                yield prefix + path, block.get_submodule(path), readers
        yield self.final_norm_path, self.final_norm(model), [(self.head_path, self.head(model))]

    def projection_weight(self, module: nn.Module) -> torch.Tensor:
        """(out_features, in_features): a projection's weight in ``nn.Linear`` orientation, as a view (no copy).

        For ``nn.Linear`` this is the weight parameter itself; for ``Conv1D`` (weight stored (in, out)) it is the
        transposed view ``weight.t()``, which is not contiguous. Either way it shares storage with the model, so an
        in-place write changes the model; ``.clone()`` it for an independent copy. ``x @ W.T + bias`` equals the
        module's output for both.

        Raises:
            TypeError: the module is neither ``nn.Linear`` nor ``Conv1D`` (e.g. already replaced by a recipe).
        """
        return projection_weight(module)


def projection_weight(module: nn.Module) -> torch.Tensor:
    """(out_features, in_features) weight of an ``nn.Linear`` or ``Conv1D``; see :meth:`ArchSpec.projection_weight`."""
    if isinstance(module, nn.Linear):
        return module.weight
    # Imported here so that `import tcompress` does not pay for importing transformers.
    from transformers.pytorch_utils import Conv1D

    if isinstance(module, Conv1D):
        return module.weight.t()
    raise TypeError(f"projection_weight: expected an nn.Linear or a transformers Conv1D; got {type(module).__name__}")


def norm_parameters(module: nn.Module) -> tuple[torch.Tensor | None, torch.Tensor | None, float]:
    """(scale (d,) or None, bias (d,) or None, eps) of a LayerNorm, a transformers RMSNorm or a ScaleFreeRMSNorm.

    Raises:
        TypeError: the module is no norm this table knows.
    """
    if isinstance(module, nn.LayerNorm):
        return module.weight, module.bias, float(module.eps)
    for eps_name in ("variance_epsilon", "eps"):  # LlamaRMSNorm and its copies / ScaleFreeRMSNorm
        if type(module).__name__.endswith("RMSNorm") and hasattr(module, eps_name):
            return getattr(module, "weight", None), getattr(module, "bias", None), float(getattr(module, eps_name))
    raise TypeError(f"norm_parameters: expected a LayerNorm or an RMSNorm; got {type(module).__name__}")


def context_length(model: nn.Module) -> int | None:
    """The longest sequence the model's positions cover (from its config), or None when the config does not say."""
    config = getattr(model, "config", None)
    # GPT2Config maps max_position_embeddings to n_positions; n_ctx is the even older name.
    for key in ("max_position_embeddings", "n_positions", "n_ctx"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


_LLAMA_LAYOUT = dict(
    blocks_path="model.layers",
    embeddings_path="model.embed_tokens",
    position_embeddings_path=None,
    final_norm_path="model.norm",
    head_path="lm_head",
    norm_type="rmsnorm",
    block_norm_paths=(("attn", "input_layernorm"), ("mlp", "post_attention_layernorm")),
    projection_paths=(
        ("q", "self_attn.q_proj"),
        ("k", "self_attn.k_proj"),
        ("v", "self_attn.v_proj"),
        ("o", "self_attn.o_proj"),
        ("gate", "mlp.gate_proj"),
        ("up", "mlp.up_proj"),
        ("down", "mlp.down_proj"),
    ),
    norm_consumers=(("attn", ("q", "k", "v")), ("mlp", ("gate", "up"))),
    transposed_weights=False,
    default_eval_length=2048,
    rotary_path="model.rotary_emb",
)

#: Every supported family. Llama, Mistral and Qwen2 share one module layout (Qwen2 adds biases to q/k/v, which
#: ``nn.Linear`` carries); they are separate entries so that ``family`` names what the model is.
ARCHITECTURES: tuple[ArchSpec, ...] = (
    ArchSpec(
        family="gpt2",
        model_types=("gpt2",),
        class_names=("GPT2LMHeadModel",),
        blocks_path="transformer.h",
        embeddings_path="transformer.wte",
        position_embeddings_path="transformer.wpe",
        final_norm_path="transformer.ln_f",
        head_path="lm_head",
        norm_type="layernorm",
        block_norm_paths=(("attn", "ln_1"), ("mlp", "ln_2")),
        projection_paths=(("qkv", "attn.c_attn"), ("o", "attn.c_proj"), ("up", "mlp.c_fc"), ("down", "mlp.c_proj")),
        norm_consumers=(("attn", ("qkv",)), ("mlp", ("up",))),
        transposed_weights=True,
        default_eval_length=1024,
        step_style="gpt2",
    ),
    ArchSpec(family="llama", model_types=("llama",), class_names=("LlamaForCausalLM",), **_LLAMA_LAYOUT),
    ArchSpec(family="mistral", model_types=("mistral",), class_names=("MistralForCausalLM",), **_LLAMA_LAYOUT),
    ArchSpec(family="qwen2", model_types=("qwen2",), class_names=("Qwen2ForCausalLM",), **_LLAMA_LAYOUT),
)


def supported_families() -> str:
    """The supported families and their classes, for messages: ``"gpt2 (GPT2LMHeadModel), llama (...), ..."``."""
    return ", ".join(f"{spec.family} ({', '.join(spec.class_names)})" for spec in ARCHITECTURES)


def architecture(model: nn.Module) -> ArchSpec:
    """The :class:`ArchSpec` of a model, chosen by ``model.config.model_type`` (else by class name).

    Raises:
        ValueError: the model is of no supported family, or its modules are not where the family keeps them (e.g. a
            bare ``LlamaModel`` without the causal-LM head); the message names the model and the supported families.
    """
    cls = type(model).__name__
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    spec = next((s for s in ARCHITECTURES if model_type in s.model_types), None)
    if spec is None:
        spec = next((s for s in ARCHITECTURES if cls in s.class_names), None)
    if spec is None:
        raise ValueError(
            f"unsupported architecture: {cls} (model_type {model_type!r}); supported families: {supported_families()}"
        )
    paths = [spec.blocks_path, spec.embeddings_path, spec.final_norm_path, spec.head_path]
    missing = [p for p in paths if not _has_submodule(model, p)]
    if missing:
        raise ValueError(
            f"{cls} (model_type {model_type!r}) looks like the {spec.family} family but has no "
            f"{', '.join(repr(p) for p in missing)}; expected a causal-LM model such as {spec.class_names[0]}"
        )
    return spec


def _has_submodule(model: nn.Module, path: str) -> bool:
    try:
        model.get_submodule(path)
    except AttributeError:
        return False
    return True


def set_module(model: nn.Module, name: str, new_module: nn.Module) -> nn.Module:
    """Replaces the submodule at qualified ``name`` (as in ``model.named_modules()``) and returns the old one.

    On a model that accelerate dispatched (``load(..., device_map=...)``), the new module is made to run where the old
    one ran: it gets an accelerate hook on the old module's execution device and, when the old module was offloaded
    (weights on ``meta``), its tensors are offloaded to host memory and loaded for each forward (read them inside
    :func:`tcompress.models.materialized`); see :func:`tcompress.models.offload.inherit_placement_`. A module that
    already carries hooks (an original put back) is installed as it is, and the old module keeps its hooks, so
    putting it back restores the model. Without accelerate hooks the module is installed as given.

    Raises:
        TypeError: ``new_module`` is not an ``nn.Module``.
        AttributeError: there is no submodule called ``name`` (nothing is changed).
        ValueError: on a dispatched model, ``new_module`` has tensors on ``meta`` (nothing is changed).
    """
    if not isinstance(new_module, nn.Module):
        raise TypeError(f"set_module: new_module must be an nn.Module; got {type(new_module).__name__}")
    if not name:
        raise ValueError("set_module: name must name a submodule; got '' (the model itself)")
    parent_name, _, child = name.rpartition(".")
    try:
        parent = model.get_submodule(parent_name)
        old = parent.get_submodule(child)
    except AttributeError:
        raise AttributeError(f"set_module: {type(model).__name__} has no submodule {name!r}") from None
    parts = parent_name.split(".") if parent_name else []
    ancestors = [model.get_submodule(".".join(parts[:i])) for i in range(len(parts) + 1)]
    inherit_placement_(new_module, old, ancestors)
    setattr(parent, child, new_module)
    return old
