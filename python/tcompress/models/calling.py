"""transformers' calling conventions for decoder layers, across the releases tcompress supports.

What a decoder layer is called with and returns changed between transformers 4.x and 5.x (a tuple vs the tensor, the
cache passed by keyword or position); code that intercepts or stands in for a layer (block stepping, substituted
blocks, statistics hooks) goes through these functions instead of assuming one release.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, Callable

import torch


def block_hidden_states(output: object) -> torch.Tensor:
    """(B, T, d): the hidden states a decoder layer returned.

    transformers 5.x decoder layers (``GPT2Block``, ``LlamaDecoderLayer``, ``MistralDecoderLayer``,
    ``Qwen2DecoderLayer``) return the tensor itself; older releases returned a tuple whose first item it is.
    """
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"block_hidden_states: expected a tensor or a tuple starting with one; got {type(output).__name__}")


def block_output_like(original: object, hidden: torch.Tensor) -> object:
    """What a decoder layer returns, with ``hidden`` (B, T, d) in place of its hidden states.

    ``original`` is an output of the same layer (or of any layer of the model), so the result keeps its shape: the
    tensor alone for transformers 5.x layers, ``(hidden, *rest)`` for the tuple convention of older releases.
    """
    if isinstance(original, torch.Tensor):
        return hidden
    if isinstance(original, tuple):
        return (hidden, *original[1:])
    raise TypeError(f"block_output_like: expected a tensor or a tuple; got {type(original).__name__}")


def block_input_hidden_states(args: tuple, kwargs: dict) -> torch.Tensor:
    """(B, T, d): the hidden states a decoder layer was called with (first positional argument, or by keyword).

    Every supported family's layer loop passes them positionally; ``hidden_states=`` is accepted too.
    """
    if args and isinstance(args[0], torch.Tensor):
        return args[0]
    hidden = kwargs.get("hidden_states")
    if isinstance(hidden, torch.Tensor):
        return hidden
    raise TypeError("block_input_hidden_states: the decoder layer was called without a hidden_states tensor")


def decoder_layer_output(hidden: torch.Tensor) -> object:
    """What a decoder layer of the installed transformers returns, built from its hidden states (B, T, d).

    transformers 5.x layers return the tensor; 4.x layers returned a tuple whose first item it was (the layer loop
    reads ``outputs[0]``). For a module that stands in for a whole decoder layer (a substituted block).
    """
    import transformers

    major = int(transformers.__version__.split(".")[0])
    return hidden if major >= 5 else (hidden,)


def block_call_cache(args: tuple, kwargs: dict) -> object | None:
    """The KV cache a decoder layer was called with, or None.

    Llama-style loops pass ``cache=`` (``past_key_values=`` before transformers 5.2x) by keyword; GPT-2's may pass it
    as the second positional argument. Any argument with the Cache interface (``update`` and ``get_seq_length``)
    counts.
    """
    candidates = [kwargs.get("cache"), kwargs.get("past_key_values"), kwargs.get("past_key_value"), *args[1:]]
    for value in candidates:
        if value is not None and hasattr(value, "update") and hasattr(value, "get_seq_length"):
            return value
    return None


def advance_cache_(cache: object, layer_idx: int, hidden: torch.Tensor) -> None:
    """Tells a KV cache that decoder layer ``layer_idx`` saw T more positions, for a layer that keeps no keys/values.

    A substituted block has no attention, but transformers reads the sequence length (hence the positions of the next
    tokens and the attention-mask sizes) from the cache of layer 0; if that layer never wrote to the cache, generation
    would restart positions at 0. So a one-element-per-position placeholder (B, 1, T, 1) is written instead.
    ``cache`` None (no cache in use) does nothing.
    """
    if cache is None:
        return
    if not hasattr(cache, "update"):
        raise TypeError(f"advance_cache_: expected a transformers Cache; got {type(cache).__name__}")
    placeholder = hidden.new_zeros(hidden.shape[0], 1, hidden.shape[1], 1)
    cache.update(placeholder, placeholder, layer_idx)


@functools.cache
def _first_taken(fn: Callable, names: tuple[str, ...]) -> str:
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):  # a builtin or C function: assume the older name
        return names[-1]
    return next((name for name in names if name in parameters), names[-1])


def parameter_name(fn: Callable, *names: str) -> str:
    """The first of ``names`` (newest first) that ``fn`` takes, else the last (the oldest): for arguments transformers
    renamed between releases. ``fn``: a model's or decoder layer's ``forward`` (pass the class's function,
    ``type(module).forward``, so the answer is cached per class) or a module-level function."""
    return _first_taken(getattr(fn, "__func__", fn), names)


def cache_kwargs(fn: Callable, cache: Any) -> dict[str, Any]:
    """``{name: cache}`` with the name ``fn`` takes its KV cache by: ``cache`` in current transformers (5.2x renamed it
    and warns that ``past_key_values`` goes away in 5.40), ``past_key_values`` before."""
    return {parameter_name(fn, "cache", "past_key_values"): cache}
