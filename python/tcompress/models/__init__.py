"""Architecture table and model loading: the only part of tcompress that knows architecture names.

- :func:`architecture` -> :class:`ArchSpec`: where a model keeps its blocks, norms, embeddings, head and
  projections (roles ``q k v o gate up down`` for Llama-style models, ``qkv o up down`` for GPT-2);
- :func:`load`: a causal LM and its tokenizer from a hub id, a directory, a ``.gguf`` file, or the named real models
  ``"smollm2-135m"`` and ``"stories260k"``;
- :func:`set_module`: replace a submodule by its qualified name (offload-aware);
- :func:`decoder_layout`: a Llama-family decoder's parts as the native decode step reads them;
- :class:`PrefixReplay`: evaluate a model changed only from block l on without running blocks 0..l-1 again;
- :mod:`tcompress.models.calling`: what decoder layers take and return across transformers releases;
- :func:`materialized`, :func:`execution_device`, :func:`is_offloaded`: models that accelerate dispatched with
  offload (weights on ``meta`` until a hook loads them), see :mod:`tcompress.models.offload`.
"""

from __future__ import annotations

from .calling import (
    advance_cache_,
    block_call_cache,
    block_hidden_states,
    block_input_hidden_states,
    block_output_like,
    cache_kwargs,
    decoder_layer_output,
)
from .decoder_layout import DecoderLayout, UnsupportedDecoder, cached_keys_values, decoder_layout
from .forwards import plain_forwards
from .load import ModelSource, load, pretrained_dtype_kwargs, resolve_dtype, resolve_model
from .offload import execution_device, is_offloaded, materialized
from .prefix_replay import PrefixReplay
from .stepping import BlockStepper, StepContext, block_outputs, block_stepper
from .table import (
    ARCHITECTURES,
    ArchSpec,
    architecture,
    norm_parameters,
    projection_weight,
    set_module,
    supported_families,
)

__all__ = [
    "ARCHITECTURES",
    "ArchSpec",
    "BlockStepper",
    "DecoderLayout",
    "ModelSource",
    "PrefixReplay",
    "UnsupportedDecoder",
    "advance_cache_",
    "architecture",
    "block_call_cache",
    "block_hidden_states",
    "block_input_hidden_states",
    "block_output_like",
    "block_outputs",
    "block_stepper",
    "cache_kwargs",
    "cached_keys_values",
    "decoder_layout",
    "decoder_layer_output",
    "execution_device",
    "is_offloaded",
    "load",
    "materialized",
    "norm_parameters",
    "plain_forwards",
    "pretrained_dtype_kwargs",
    "projection_weight",
    "resolve_dtype",
    "resolve_model",
    "set_module",
    "StepContext",
    "supported_families",
]
