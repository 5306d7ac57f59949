"""The native decode runtime: each new token of a Llama-family or GPT-2 model whose block projections are all
:class:`~tcompress.nn.QuantLinear` runs in one native call (``csrc/cpu/decode_step.cpp``: every block, the final norm
and, when it is packed too, the head), against a static KV cache.

Why: at batch 1 a token costs ~7 projections per block, and through the modules every one of them pays Python,
``nn.Module`` and transformers' attention bookkeeping on top of its kernel (bench/README.md: most of a SmolLM2
decode step). One call per token leaves only the kernels and a few short loops.
"""

from __future__ import annotations

import torch
from torch import nn

from .. import _native
from ..hadamard import base_hadamard, factor_size
from ..models import UnsupportedDecoder, cached_keys_values, decoder_layout
from ..nn import QuantLinear

# The step's projection slots; a slot a family does not have is None (GPT-2: q holds the fused qkv, no gate).
_SLOTS = ("q", "k", "v", "o", "gate", "up", "down")
_SHARED_INPUT = ("q", "k", "v", "qkv", "gate", "up")  # read one normed input together (one parallel region)


class NativeDecoder:
    """Batch-1 decoding of one model on the native step, with a KV cache of ``max_len`` positions (fp32).

    Holds every tensor whose address the native plan keeps (the model's own packed buffers are referenced, not
    copied), so the model must not be changed while a decoder is alive. Cheap to build: pointers, the rotary
    tables and the cache. One decoder serves one thread at a time (its cache and scratch are shared by its calls).

    Projections may hold online Hadamard transforms (a rotated model) on the inputs of o, down and the head.

    Raises:
        UnsupportedDecoder: the model is not one the step computes (see :func:`tcompress.models.decoder_layout`), a
            block projection is not a QuantLinear (e.g. an ``nn.Linear``), an online Hadamard sits on an input that
            q/k/v or gate/up share, the model is not fp32 on the CPU, or the native module is missing. The message
            names the first such part.
    """

    def __init__(self, model: nn.Module, max_len: int):
        layout = decoder_layout(model)
        native = _native.cpu_native()
        if native is None or not hasattr(native, "DecodePlan"):
            raise UnsupportedDecoder("the tcompress._C module with the decode step is not available")
        if layout.embed.device.type != "cpu" or layout.embed.dtype != torch.float32:
            raise UnsupportedDecoder(
                f"the native step runs fp32 models on the CPU; this one's embedding is {layout.embed.dtype} on "
                f"{layout.embed.device}"
            )
        self._keep = []
        dtype_codes = {torch.float32: native.FLOAT32, torch.float16: native.FLOAT16, torch.bfloat16: native.BFLOAT16}

        def pointer(t: torch.Tensor) -> int:
            if t.device.type != "cpu":  # e.g. an accelerate-offloaded weight on "meta" until a hook loads it
                raise UnsupportedDecoder(f"a {tuple(t.shape)} tensor of the model is on {t.device}, not the CPU")
            t = t.detach().contiguous()
            self._keep.append(t)
            return t.data_ptr()

        def vector(t: torch.Tensor, where: str) -> int:
            if t.dtype != torch.float32 or t.device.type != "cpu":
                raise UnsupportedDecoder(f"{where} is {t.dtype} on {t.device}; the native step reads fp32 on the CPU")
            return pointer(t)

        def packed(module: nn.Module, where: str, shared_input: bool = False) -> tuple:
            if not isinstance(module, QuantLinear):
                raise UnsupportedDecoder(
                    f"{where} is {type(module).__name__}; the native step runs packed projections (QuantLinear) only"
                )
            try:
                module.prepared()  # the op's own checks of every buffer's dtype and shape (cached by the module)
            except (TypeError, ValueError) as exc:
                raise UnsupportedDecoder(f"{where}'s buffers are not a valid packed weight: {exc}") from exc
            if module.online_hadamard and shared_input:
                raise UnsupportedDecoder(
                    f"{where} transforms an input it shares with other projections online (a Hadamard); the native "
                    "step transforms only the inputs of o, down and the head"
                )
            spec, bias = module.spec, module.bias
            hadamard = (False, 0, 1, 1.0)
            if module.online_hadamard:  # as QuantLinear.forward: ops.hadamard_transform(x), scale 1/sqrt(n)
                k, _ = factor_size(module.in_features)
                base = pointer(torch.from_numpy(base_hadamard(k).astype("float32"))) if k > 1 else 0
                hadamard = (True, base, k, module.in_features**-0.5)
            return (pointer(module.qweight), module.in_features, module.out_features, spec.bits,
                    pointer(module.scales), dtype_codes[module.scales.dtype],
                    0 if module.zeros is None else pointer(module.zeros), spec.group_size or 0,
                    0 if bias is None else pointer(bias), dtype_codes[bias.dtype] if bias is not None else 0,
                    module.act_bits or 0, module.act_granularity == "per_group", *hadamard)  # fmt: skip

        if layout.positions is not None and max_len > layout.positions.shape[0]:
            raise UnsupportedDecoder(
                f"{max_len} positions exceed the {layout.positions.shape[0]} the model's learned positions cover"
            )
        fused_qkv = "qkv" in layout.blocks[0]
        gated = layout.mlp == "silu_gated"
        shared = {"up": gated}  # a plain MLP's up reads its norm's output alone

        def slot(block: dict, role: str, where: str):
            source = "qkv" if role == "q" and fused_qkv else role
            if source not in block or (role == "gate" and not gated):
                return None
            return packed(block[source], f"{where}'s {source} projection", shared.get(source, source in _SHARED_INPUT))

        def optional(t: torch.Tensor | None, where: str) -> int:
            return 0 if t is None else vector(t, where)

        n_layers = len(layout.blocks)
        cache_shape = (n_layers, layout.n_kv_heads, max_len, layout.head_dim)
        self._keys, self._values = torch.zeros(cache_shape), torch.zeros(cache_shape)
        layers = []
        for i, block in enumerate(layout.blocks):
            where = f"block {i}"
            norms = (vector(block["attn_norm"], f"{where}'s attention norm"),
                     vector(block["mlp_norm"], f"{where}'s MLP norm"),
                     optional(block["attn_norm_bias"], f"{where}'s attention norm bias"),
                     optional(block["mlp_norm_bias"], f"{where}'s MLP norm bias"))  # fmt: skip
            projections = tuple(slot(block, role, where) for role in _SLOTS)
            layers.append((*norms, *projections, self._keys[i].data_ptr(), self._values[i].data_ptr()))
        head = layout.head
        native_head = isinstance(head, QuantLinear)
        tables = layout.rotary_tables(max_len)
        cos, sin = (0, 0) if tables is None else (pointer(tables[0]), pointer(tables[1]))
        norm_type = native.DECODE_LAYERNORM if layout.norm == "layernorm" else native.DECODE_RMSNORM
        mlp_type = {"silu_gated": native.DECODE_MLP_SILU_GATED, "gelu_tanh": native.DECODE_MLP_GELU_TANH,
                    "gelu_erf": native.DECODE_MLP_GELU_ERF}[layout.mlp]  # fmt: skip
        plan_args = (
            layout.d, layout.n_heads, layout.n_kv_heads, layout.head_dim, layout.ffn, max_len, layout.vocab,
            layout.sliding_window, layout.eps, layout.attn_scale, fused_qkv, norm_type, mlp_type,
            vector(layout.embed, "the embedding"), optional(layout.positions, "the position embedding"), cos, sin,
            vector(layout.final_norm, "the final norm"), optional(layout.final_norm_bias, "the final norm bias"),
            layers, packed(head, "the head") if native_head else None,
        )  # fmt: skip
        try:
            self._plan = native.DecodePlan(*plan_args)
        except ValueError as exc:  # tc_decode_check: a shape or kind the step does not run, named with its layer
            raise UnsupportedDecoder(f"the native step refused the model: {exc}") from exc
        self.max_len, self.sliding_window = max_len, layout.sliding_window
        self._head = None if native_head else head
        self._out = torch.empty(1, self._plan.out_features)

    def check_prompt(self, length: int) -> None:
        """Raises unless a prompt of ``length`` tokens, prefilled by the model's own forward, can be taken over:
        UnsupportedDecoder when it fills the sliding window (transformers' cache then no longer holds every prompt
        position), ValueError when it does not fit this decoder's cache."""
        if self.sliding_window and length >= self.sliding_window:
            raise UnsupportedDecoder(
                f"the prompt ({length} tokens) fills the sliding window ({self.sliding_window}); the native step "
                "takes over from a cache that still holds every position"
            )
        if length > self.max_len:
            raise ValueError(f"NativeDecoder: a prompt of {length} positions does not fit a cache of {self.max_len}")

    def load_cache(self, cache, length: int) -> None:
        """Copies the first ``length`` positions of a transformers cache of the same model (batch 1) into this
        decoder's cache: the prompt's keys and values after a prefill through the model's own forward."""
        self.check_prompt(length)
        for i in range(self._keys.shape[0]):
            keys, values = cached_keys_values(cache, i)
            if keys.shape[2] < length:
                raise ValueError(f"NativeDecoder.load_cache: layer {i} of the cache holds {keys.shape[2]} positions, "
                                 f"not {length}")  # fmt: skip
            self._keys[i, :, :length] = keys[0, :, :length].to(torch.float32)
            self._values[i, :, :length] = values[0, :, :length].to(torch.float32)

    def logits(self, token: int, position: int) -> torch.Tensor:
        """(1, vocab) fp32 logits after ``token`` at ``position`` (positions before it must be in the cache).

        The tensor is overwritten by the next call when the head is native: use it before calling again.
        """
        self._plan.step(token, position, self._out.data_ptr(), torch.get_num_threads())
        return self._out if self._head is None else self._head(self._out)
