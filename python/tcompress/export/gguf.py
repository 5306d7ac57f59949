"""``export_gguf(model, path, qtype="Q8_0")``: a Llama-family model as a GGUF file (llama.cpp's format), written
with the ``gguf`` package; transformers reads it back with ``from_pretrained(folder, gguf_file=name)``.

What is written:

- Weights: the model's floating-point weights, quantized by ``gguf.quants.quantize`` to ``qtype`` (Q8_0: blocks of
  32 with an fp16 scale ``max|x| / 127``; Q4_0: blocks of 32, scale ``-max/8`` of the signed extreme). A tcompress
  QuantLinear contributes its dequantized weight (``dequantized_weight()``), so a W8 or W4 model is quantized a
  second time, on GGUF's own grid: the file holds GGUF's rounding of tcompress's rounded weights, not tcompress's
  codes (the two grids differ: per-channel or group scales against GGUF's 32-column blocks and fp16 scales). Matrices
  whose rows are not a whole number of blocks stay F16 (as llama.cpp's converter does); norms and biases F32.
- llama.cpp's row order for ``attn_q`` / ``attn_k``: llama.cpp applies rotary embeddings to interleaved pairs where
  transformers rotates the two halves of each head, so (as its converter does) the rows of each head are permuted
  from ``[first half | second half]`` to alternating pairs; transformers undoes this on load. Qwen2 uses the halves
  convention in llama.cpp too, and is written unpermuted.
- Hyperparameters: context length, widths, block count, head counts, head dim, rope theta, RMSNorm eps, vocabulary
  size, special token ids. A rotated model is expressible: its parameter-free norms are RMSNorms with weight = 1 and
  its untied head is written as ``output.weight``.
- Tokenizer: with ``tokenizer=`` a Hugging Face fast tokenizer of one of the two kinds llama.cpp and transformers both
  rebuild from GGUF metadata: SentencePiece-style BPE with byte fallback (Llama, Mistral, stories260K: model
  ``"llama"`` with tokens, scores = minus the merge rank, token types and merges) or byte-level BPE with GPT-2's
  pre-tokenization (model ``"gpt2"``, pre ``"gpt-2"``). transformers' rebuild of a SentencePiece tokenizer splits
  text that starts with a space differently from the original (it uses ``Metaspace``, not the original's
  normalizer); llama.cpp follows the original. Without a tokenizer, ``tokenizer.ggml.model`` is ``"none"``: the
  tokenizer must come from the original checkpoint.

Mistral is written as llama.cpp writes it, as the ``llama`` architecture (transformers then rebuilds a
``LlamaForCausalLM``): the same computation, except that a sliding attention window is not stored (a warning says so
when the window is shorter than the context). GPT-2 is refused: transformers' GGUF reader does not rebuild its
vocabulary size or position count from the metadata.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .. import __version__
from ..nn import QuantLinear
from . import _common

FORMAT = "GGUF"
QTYPES = ("Q8_0", "Q4_0")
# tcompress family -> (gguf architecture name, q/k rows permuted to llama.cpp's interleaved rotary pairs)
_ARCHS = {"llama": ("llama", True), "mistral": ("llama", True), "qwen2": ("qwen2", False)}
_SPM_BYTE_TOKEN = "<0x{:02X}>"


def _gguf():
    import gguf

    return gguf


def rope_permute(weight: np.ndarray, heads: int) -> np.ndarray:
    """weight (heads * head_dim, ...) -> the same rows in llama.cpp's order: per head, row ``i`` of the first half and
    row ``i`` of the second half become rows ``2i`` and ``2i + 1``."""
    head_dim = weight.shape[0] // heads
    return weight.reshape(heads, 2, head_dim // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape).copy()


def _check_config(model: nn.Module, family: str) -> dict:
    """The hyperparameters transformers and llama.cpp read back, after refusing what they would read back wrong."""
    config = model.config
    # transformers 5 keeps rope settings in rope_parameters (rope_scaling is its old name); 4.x in rope_theta and
    # rope_scaling (None for the default rope).
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    theta = rope.get("rope_theta", getattr(config, "rope_theta", None))
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type != "default":
        raise ValueError(
            f"{FORMAT} export: the model scales its rotary embedding (rope_type {rope_type!r}); transformers' GGUF "
            "reader rebuilds only the default rope (rope_type 'default')"
        )
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    if family == "qwen2" and head_dim * heads != config.hidden_size:
        raise ValueError(
            f"{FORMAT} export: head_dim {head_dim} x {heads} heads != hidden_size {config.hidden_size}; transformers "
            "rebuilds a qwen2 config with head_dim = hidden_size / heads"
        )
    for flag in ("attention_bias", "mlp_bias"):
        if family != "qwen2" and getattr(config, flag, False):
            raise ValueError(
                f"{FORMAT} export: the model has {flag}=True; transformers rebuilds a {family} config from GGUF "
                f"without biases (expected {flag}=False)"
            )
    if family == "qwen2" and getattr(config, "use_sliding_window", False):
        raise ValueError(f"{FORMAT} export: qwen2 with use_sliding_window=True has no GGUF form transformers reads")
    window = getattr(config, "sliding_window", None)
    if family == "mistral" and window is not None and window < config.max_position_embeddings:
        warnings.warn(
            f"{FORMAT} export: the model attends within a sliding window of {window} tokens, which GGUF's llama "
            f"architecture does not store; the exported model attends over its whole context "
            f"({config.max_position_embeddings}), the same for sequences up to {window} tokens",
            stacklevel=3,
        )
    return {"head_dim": head_dim, "rope_theta": float(theta)}


# -- tokenizer ------------------------------------------------------------------------------------------------------


def _token_ids(tokenizer, config) -> dict[str, int]:
    ids = {}
    for name in ("bos", "eos", "unk", "pad"):
        value = getattr(tokenizer, f"{name}_token_id", None) if tokenizer is not None else None
        if value is None:
            value = getattr(config, f"{name}_token_id", None)
        if isinstance(value, int):
            ids[name] = value
    return ids


def _tokenizer_metadata(tokenizer, vocab_size: int) -> dict:
    """The ``tokenizer.ggml.*`` fields of a Hugging Face fast tokenizer (see the module docstring)."""
    gguf = _gguf()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise TypeError(
            f"{FORMAT} export: expected a Hugging Face fast tokenizer (with a backend_tokenizer); got "
            f"{type(tokenizer).__name__}"
        )
    spec = json.loads(backend.to_str())
    bpe = spec.get("model") or {}
    pre = spec.get("pre_tokenizer") or {}
    if bpe.get("type") != "BPE":
        raise ValueError(
            f"{FORMAT} export: the tokenizer is a {bpe.get('type')} model; expected BPE (SentencePiece-style with "
            "byte fallback, or byte-level). Export with tokenizer=None and load the tokenizer from the original model"
        )
    byte_level = pre.get("type") == "ByteLevel" and pre.get("use_regex", True) and not pre.get("add_prefix_space")
    if bpe.get("byte_fallback"):
        model_name = "llama"
    elif byte_level:
        model_name = "gpt2"
    else:
        raise ValueError(
            f"{FORMAT} export: the tokenizer's pre-tokenizer ({pre.get('type')}) is neither SentencePiece-style "
            "BPE with byte fallback nor GPT-2's byte-level splitting, the two kinds GGUF readers rebuild; export "
            "with tokenizer=None and load the tokenizer from the original model"
        )
    vocab = dict(bpe["vocab"])
    for added in spec.get("added_tokens", []):
        vocab.setdefault(added["content"], added["id"])
    if max(vocab.values()) >= vocab_size:
        raise ValueError(
            f"{FORMAT} export: the tokenizer has token id {max(vocab.values())}, but the model's vocabulary has "
            f"{vocab_size} rows; expected a tokenizer whose ids fit the embedding"
        )
    tokens = [f"[PAD{i}]" for i in range(vocab_size)]
    types = [gguf.TokenType.UNUSED] * vocab_size
    for token, index in vocab.items():
        tokens[index] = token
        types[index] = gguf.TokenType.NORMAL
    byte_tokens = {_SPM_BYTE_TOKEN.format(b) for b in range(256)} if model_name == "llama" else set()
    for index, token in enumerate(tokens):
        if token in byte_tokens:
            types[index] = gguf.TokenType.BYTE
    for added in spec.get("added_tokens", []):
        types[added["id"]] = gguf.TokenType.CONTROL if added.get("special") else gguf.TokenType.USER_DEFINED
    if bpe.get("unk_token") in vocab:
        types[vocab[bpe["unk_token"]]] = gguf.TokenType.UNKNOWN
    merges = [m if isinstance(m, str) else " ".join(m) for m in bpe.get("merges", [])]
    fields = {"model": model_name, "tokens": tokens, "types": types, "merges": merges}
    if model_name == "llama":
        # llama.cpp's SentencePiece tokenizer merges the adjacent pair whose merged token scores highest, so a token
        # scores minus the rank of the merge that makes it: merges then happen in the order the BPE model learned.
        rank: dict[str, int] = {}
        for i, merge in enumerate(merges):
            rank.setdefault(merge.replace(" ", ""), i)
        fields["scores"] = [-float(rank[t]) if t in rank else 0.0 for t in tokens]
    else:
        fields["pre"] = "gpt-2"
    probe = tokenizer("a")["input_ids"]
    fields["add_bos"] = bool(probe) and probe[0] == getattr(tokenizer, "bos_token_id", None)
    fields["add_eos"] = len(probe) > 1 and probe[-1] == getattr(tokenizer, "eos_token_id", None)
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, str):
        fields["chat_template"] = template
    return fields


def _write_tokenizer(writer, fields: dict | None, ids: dict[str, int]) -> None:
    if fields is None:
        writer.add_tokenizer_model("none")
    else:
        writer.add_tokenizer_model(fields["model"])
        if "pre" in fields:
            writer.add_tokenizer_pre(fields["pre"])
        writer.add_token_list(fields["tokens"])
        writer.add_token_types(fields["types"])
        if "scores" in fields:
            writer.add_token_scores(fields["scores"])
        if fields["merges"]:
            writer.add_token_merges(fields["merges"])
        writer.add_add_bos_token(fields["add_bos"])
        writer.add_add_eos_token(fields["add_eos"])
        if "chat_template" in fields:
            writer.add_chat_template(fields["chat_template"])
    adders = {
        "bos": writer.add_bos_token_id,
        "eos": writer.add_eos_token_id,
        "unk": writer.add_unk_token_id,
        "pad": writer.add_pad_token_id,
    }
    for name, value in ids.items():
        adders[name](value)


# -- weights --------------------------------------------------------------------------------------------------------


def _encode(array: np.ndarray, qtype) -> tuple[np.ndarray, object]:
    """(data, raw dtype or None): a matrix in ``qtype`` when its rows are whole blocks, else F16; vectors F32."""
    gguf = _gguf()
    if array.ndim == 1:
        return array.astype(np.float32), None
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    if array.shape[-1] % block:
        return array.astype(np.float16), None
    return gguf.quants.quantize(array.astype(np.float32), qtype), qtype


def export_gguf(model: nn.Module, path, *, tokenizer=None, qtype: str = "Q8_0", overwrite: bool = False) -> Path:
    """Writes ``model`` as one GGUF file with its matrices in ``qtype``; returns the file's path.

    Load it with ``AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name)`` (transformers dequantizes
    every tensor to float) or with llama.cpp. The file is written beside ``path`` and renamed into place.

    Args:
        model: a llama, mistral or qwen2 causal LM: floating point, rotated (``RotateConfig`` without
            ``online_hadamard``) and/or weight-quantized by tcompress (its weights are dequantized and re-quantized
            to ``qtype``; see the module docstring).
        path: the ``.gguf`` file to create.
        tokenizer: a Hugging Face fast tokenizer whose vocabulary is stored in the file (see the module docstring);
            None stores none.
        qtype: ``"Q8_0"`` or ``"Q4_0"``.
        overwrite: replace an existing file.

    Raises:
        ValueError: an unknown ``qtype``; GPT-2 or another family GGUF cannot carry here; activation quantization
            (``act_bits``), which GGUF does not describe; a scaled rope, biases or head sizes transformers would
            read back differently; a tokenizer kind GGUF readers cannot rebuild, or one larger than the vocabulary;
            and everything :func:`tcompress.export._common.check_exportable` refuses.
        TypeError: a tokenizer that is not a Hugging Face fast tokenizer.
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    gguf = _gguf()
    path = Path(path)
    if qtype not in QTYPES:
        raise ValueError(f"{FORMAT} export: qtype must be one of {', '.join(QTYPES)}; got {qtype!r}")
    arch = _common.check_exportable(model, FORMAT)
    if arch.family not in _ARCHS:
        raise ValueError(
            f"{FORMAT} export: the {arch.family} family is not supported (transformers' GGUF reader does not rebuild "
            f"its configuration); supported families: {', '.join(_ARCHS)}"
        )
    for name, module in model.named_modules():
        if isinstance(module, QuantLinear) and module.act_bits is not None:
            raise ValueError(
                f"{FORMAT} export: {name!r} quantizes its activations (act_bits={module.act_bits}), which GGUF does "
                "not describe; expected weight-only quantization (act_bits=None)"
            )
    gguf_arch, permuted = _ARCHS[arch.family]
    eps = _common.rms_norm_eps(model, arch, FORMAT)
    hyper = _check_config(model, arch.family)
    config = model.config
    fields = None if tokenizer is None else _tokenizer_metadata(tokenizer, config.vocab_size)

    entries = _common.export_tensors(model, arch)
    _common.check_tensors_fit(model, _common.export_config(model, arch), {e.name: e.shape for e in entries}, FORMAT)
    arch_id = next(key for key, value in gguf.MODEL_ARCH_NAMES.items() if value == gguf_arch)
    names = gguf.get_tensor_name_map(arch_id, config.num_hidden_layers)
    gguf_names = {}
    for entry in entries:
        module_name, _, leaf = entry.name.rpartition(".")
        base = names.get_name(module_name)
        if base is None:
            raise ValueError(f"{FORMAT} export: tensor {entry.name!r} has no GGUF name in the {gguf_arch} architecture")
        gguf_names[entry.name] = f"{base}.{leaf}"
    paths = dict(arch.projection_paths)
    heads = {paths["q"]: config.num_attention_heads, paths["k"]: config.num_key_value_heads}

    _common.check_target(path, overwrite, FORMAT, directory=False)
    qt = gguf.GGMLQuantizationType[qtype]
    with _common.atomic_file(path) as tmp:
        # Encoded tensors spool to a temporary file (not memory) until the header, which lists them all, is written.
        writer = gguf.GGUFWriter(str(tmp), gguf_arch, use_temp_file=True)
        source = Path(str(getattr(config, "_name_or_path", "") or "")).name
        # Not the bare family name: transformers would then look for a "mistral" GGUF architecture gguf lacks.
        writer.add_name(f"tcompress export of {source}" if source else "tcompress export")
        writer.add_description(f"tcompress {__version__}: {json.dumps(list(getattr(model, 'tcompress_config', [])))}")
        writer.add_context_length(config.max_position_embeddings)
        writer.add_embedding_length(config.hidden_size)
        writer.add_block_count(config.num_hidden_layers)
        writer.add_feed_forward_length(config.intermediate_size)
        writer.add_head_count(config.num_attention_heads)
        writer.add_head_count_kv(config.num_key_value_heads)
        writer.add_rope_dimension_count(hyper["head_dim"])
        if hyper["head_dim"] * config.num_attention_heads != config.hidden_size:
            writer.add_key_length(hyper["head_dim"])
            writer.add_value_length(hyper["head_dim"])
        writer.add_rope_freq_base(hyper["rope_theta"])
        writer.add_layer_norm_rms_eps(eps)
        writer.add_vocab_size(config.vocab_size)
        writer.add_file_type(gguf.LlamaFileType[f"MOSTLY_{qtype}"])
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        _write_tokenizer(writer, fields, _token_ids(tokenizer, config))
        for entry in entries:
            array = entry.load().to(torch.float32).numpy()
            # "model.layers.3.self_attn.q_proj.weight" -> "self_attn.q_proj": the module's path inside its block.
            module_name = entry.name.rpartition(".")[0]
            in_block = module_name.startswith(f"{arch.blocks_path}.")
            role = module_name[len(arch.blocks_path) + 1 :].partition(".")[2] if in_block else None
            if permuted and role in heads and array.ndim == 2:
                array = rope_permute(array, heads[role])
            data, raw = _encode(array, qt)
            writer.add_tensor(gguf_names[entry.name], data, raw_dtype=raw)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return path
