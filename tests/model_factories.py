"""Tiny random causal LMs built from configs (no downloads), one per supported family, seeded.

Sizes are small enough that building one takes milliseconds, but keep the real layouts: GPT-2's fused qkv ``Conv1D``
projections and learned positions; Mistral's and Llama's grouped-query attention (4 heads, 2 KV heads) and gated MLP.
"""

from __future__ import annotations

import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

VOCAB = 512
HIDDEN = 64
# Token ids of the configs stay inside the small vocabulary (GPT-2's default 50256 would not).
_SPECIAL = {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": None}


def _llama_style_kwargs() -> dict:
    return dict(
        vocab_size=VOCAB,
        hidden_size=HIDDEN,
        intermediate_size=172,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        **_SPECIAL,
    )


def tiny_gpt2(seed: int = 0) -> GPT2LMHeadModel:
    """GPT2LMHeadModel: 2 layers, d=64, 4 heads, vocab 512, 128 positions, tied head; eval mode."""
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=VOCAB, n_embd=HIDDEN, n_layer=2, n_head=4, n_positions=128, **_SPECIAL)
    return GPT2LMHeadModel(config).eval()


def tiny_mistral(seed: int = 0) -> MistralForCausalLM:
    """MistralForCausalLM: 2 layers, d=64, 4 heads / 2 KV heads, MLP 172, vocab 512, untied head; eval mode."""
    torch.manual_seed(seed)
    return MistralForCausalLM(MistralConfig(**_llama_style_kwargs())).eval()


def tiny_llama(seed: int = 0, tie_word_embeddings: bool = True) -> LlamaForCausalLM:
    """LlamaForCausalLM: 2 layers, d=64, 4 heads / 2 KV heads, MLP 172, vocab 512, tied head (like stories260K)."""
    torch.manual_seed(seed)
    config = LlamaConfig(**_llama_style_kwargs(), tie_word_embeddings=tie_word_embeddings)
    return LlamaForCausalLM(config).eval()


def tiny_qwen2(seed: int = 0) -> Qwen2ForCausalLM:
    """Qwen2ForCausalLM: the Llama layout with q/k/v biases; 2 layers, d=64, vocab 512; eval mode."""
    torch.manual_seed(seed)
    return Qwen2ForCausalLM(Qwen2Config(**_llama_style_kwargs())).eval()


FACTORIES = {"gpt2": tiny_gpt2, "llama": tiny_llama, "mistral": tiny_mistral, "qwen2": tiny_qwen2}


class ByteTokenizer:
    """A stand-in tokenizer for offline tests: UTF-8 bytes as token ids (0..255, inside the tiny models' vocab).

    Implements the part of the Hugging Face tokenizer interface tcompress uses: ``__call__`` returning
    ``{"input_ids": [...]}`` and ``bos_token_id``.
    """

    bos_token_id = 1

    def __call__(self, text: str, add_special_tokens: bool = True, **kwargs) -> dict:
        ids = list(text.encode("utf-8"))
        return {"input_ids": ([self.bos_token_id] if add_special_tokens else []) + ids}


def deeper(factory, layers: int = 4) -> torch.nn.Module:
    """``factory``'s model rebuilt with ``layers`` blocks (seed 2), in eval mode."""
    model = factory()
    cfg_dict = model.config.to_dict()
    cfg_dict["n_layer" if "n_layer" in cfg_dict else "num_hidden_layers"] = layers
    torch.manual_seed(2)
    return type(model)(type(model.config).from_dict(cfg_dict)).eval()
