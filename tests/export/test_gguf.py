"""export_gguf: Llama-family models written as GGUF and read back by transformers compute what the same weights,
rounded by gguf's own Q8_0 / Q4_0 code, compute; tokenizers survive; what GGUF cannot carry is refused clearly."""

from __future__ import annotations

import copy
import warnings

import gguf
import numpy as np
import pytest
import torch
from model_factories import VOCAB, ByteTokenizer, tiny_gpt2, tiny_llama, tiny_mistral, tiny_qwen2
from tcompress import QuantizeConfig, RotateConfig, compress_, load, models
from tcompress.export import export_gguf
from tcompress.export.gguf import rope_permute
from tcompress.nn import HadamardLinear, QuantLinear, ScaleFreeRMSNorm
from transformers import AutoModelForCausalLM, AutoTokenizer, GPT2TokenizerFast, LlamaConfig, LlamaForCausalLM
from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

FACTORIES = {"llama": tiny_llama, "mistral": tiny_mistral, "qwen2": tiny_qwen2}
# The reference holds exactly the weights transformers reads back (gguf's quantize -> dequantize of the same fp32
# values, or their fp16 rounding), in the same transformers class: only fp32 summation order can differ, and
# measured differences are 0. 1e-6 of the logit scale would still catch one misplaced row.
TIGHT = 1e-6
# Against the unrounded float model the GGUF's rounding shows: Q8_0 keeps 8 bits per 32-value block (measured
# 0.5-0.7% of the logit scale on the tiny random models, 1.1% on stories260K), Q4_0 4 bits (measured 9-21% on the tiny
# models, 29% on stories260K). The bounds are 2-4x
# those; a permutation or layout error moves logits by the order of the logits themselves.
LOOSE = {"Q8_0": 0.04, "Q4_0": 0.6}
TEXTS = ["Once upon a time, there was a little girl named Lily.", 'Tom said: "I can\'t find 123 red balls!"\nThe end.']


def _ids(vocab: int = VOCAB) -> torch.Tensor:
    return torch.randint(0, vocab, (2, 12), generator=torch.Generator().manual_seed(0))


def _reload(path):
    return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name).eval()


def _relative(expected: torch.nn.Module, got: torch.nn.Module, ids: torch.Tensor) -> float:
    with torch.no_grad():
        a, b = expected(ids).logits, got(ids).logits
    return ((a - b).abs().max() / a.abs().max()).item()


def _dense_weights(model) -> dict[str, torch.Tensor]:
    """state-dict name -> fp32 tensor as transformers names it: QuantLinears dequantized, parameter-free norms ones."""
    weights = {k: v.float() for k, v in model.state_dict().items()}
    for name, module in model.named_modules():
        if isinstance(module, QuantLinear):
            weights[f"{name}.weight"] = module.dequantized_weight()
            for buffer in ("qweight", "scales", "zeros"):
                weights.pop(f"{name}.{buffer}", None)
        elif isinstance(module, ScaleFreeRMSNorm):
            weights[f"{name}.weight"] = torch.ones(module.dim)
    return weights


def _gguf_rounded(weight: torch.Tensor, qtype: str) -> torch.Tensor:
    array = weight.numpy()
    if array.ndim == 1:
        return weight
    kind = gguf.GGMLQuantizationType[qtype]
    if array.shape[-1] % gguf.GGML_QUANT_SIZES[kind][0]:
        return torch.from_numpy(array.astype(np.float16).astype(np.float32))
    return torch.from_numpy(gguf.quants.dequantize(gguf.quants.quantize(array, kind), kind)).reshape(weight.shape)


def _reference(reloaded, source, qtype: str):
    """The reloaded model's class with the source's weights rounded by gguf itself."""
    weights = _dense_weights(source)
    reference = copy.deepcopy(reloaded)
    state = {}
    for key in reference.state_dict():
        value = weights.get(key)
        if value is None and key == "lm_head.weight":  # tied: the embedding is the head
            value = weights["model.embed_tokens.weight"]
        state[key] = _gguf_rounded(value, qtype)
    reference.load_state_dict(state)
    return reference


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_0"])
@pytest.mark.parametrize("family", sorted(FACTORIES))
def test_float_model_round_trip(family, qtype, tmp_path):
    model = FACTORIES[family]()
    reloaded = _reload(export_gguf(model, tmp_path / "m.gguf", qtype=qtype))
    ids = _ids()
    assert _relative(_reference(reloaded, model, qtype), reloaded, ids) < TIGHT
    assert _relative(model, reloaded, ids) < LOOSE[qtype]
    assert reloaded.config.tie_word_embeddings == model.config.tie_word_embeddings


@pytest.mark.parametrize(
    "configs",
    [
        [RotateConfig(seed=0)],
        [QuantizeConfig(bits=8, group_size=None)],
        [RotateConfig(seed=0), QuantizeConfig(bits=4, group_size=32, exclude=("*down_proj",))],
    ],
    ids=["rotated", "w8", "rotated-w4-g32"],
)
def test_compressed_model_round_trip(configs, tmp_path):
    model = compress_(tiny_llama(), *configs)
    reloaded = _reload(export_gguf(model, tmp_path / "m.gguf", qtype="Q8_0"))
    assert _relative(_reference(reloaded, model, "Q8_0"), reloaded, _ids()) < TIGHT
    assert _relative(model, reloaded, _ids()) < LOOSE["Q8_0"]


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_0"])
def test_stories260k_round_trip_with_its_tokenizer(stories260k_dir, qtype, tmp_path):
    model, tokenizer = load(stories260k_dir)
    path = export_gguf(model, tmp_path / "stories.gguf", tokenizer=tokenizer, qtype=qtype)
    reloaded = _reload(path)
    ids = _ids(model.config.vocab_size)
    assert _relative(_reference(reloaded, model, qtype), reloaded, ids) < TIGHT
    assert _relative(model, reloaded, ids) < LOOSE[qtype]
    rebuilt = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    # Texts that do not start with a space: transformers rebuilds SentencePiece tokenizers with Metaspace, which
    # splits a leading space differently from stories260K's normalizer (llama.cpp follows the original).
    for text in TEXTS:
        assert rebuilt(text)["input_ids"] == tokenizer(text)["input_ids"]
        assert rebuilt.decode(rebuilt(text)["input_ids"], skip_special_tokens=True) == text


def test_byte_level_tokenizer_round_trip(data_dir, tmp_path):
    if not (data_dir / "tokenizers" / "gpt2").is_dir():
        pytest.skip(f"asset missing: {data_dir / 'tokenizers' / 'gpt2'} (the GPT-2 tokenizer)")
    tokenizer = GPT2TokenizerFast.from_pretrained(data_dir / "tokenizers" / "gpt2")
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    model = LlamaForCausalLM(config).eval()
    path = export_gguf(model, tmp_path / "m.gguf", tokenizer=tokenizer)
    # Only the tokenizer is read back: transformers parses GGUF metadata in Python, ~5 s per model load at 50k tokens.
    rebuilt = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    for text in [*TEXTS, "  leading spaces and\ttabs"]:
        assert rebuilt(text)["input_ids"] == tokenizer(text)["input_ids"]


@pytest.mark.parametrize("heads,kv_heads", [(4, 4), (4, 2), (8, 1)])
def test_rope_permutation_is_what_transformers_undoes(heads, kv_heads):
    head_dim, width = 8, 16
    weight = np.random.default_rng(heads + kv_heads).standard_normal((kv_heads * head_dim, width))
    processor = LlamaTensorProcessor(config={"num_attention_heads": heads, "num_key_value_heads": kv_heads})
    assert np.array_equal(processor._reverse_permute_weights(rope_permute(weight, kv_heads), heads, kv_heads), weight)


def test_mistral_sliding_window_is_reported(tmp_path):
    model = tiny_mistral()
    model.config.sliding_window = 16
    with pytest.warns(UserWarning, match="sliding window of 16 tokens"):
        export_gguf(model, tmp_path / "m.gguf")


def test_tokenless_file_states_it_has_no_tokenizer(tmp_path):
    path = export_gguf(tiny_llama(), tmp_path / "m.gguf")
    reader = gguf.GGUFReader(str(path))
    field = reader.fields["tokenizer.ggml.model"]
    assert bytes(field.parts[field.data[0]]).decode() == "none"


# -- refusals ---------------------------------------------------------------------------------------------------------


def _refused(model, tmp_path, match: str, error=ValueError, **kwargs):
    with pytest.raises(error, match=match):
        export_gguf(model, tmp_path / "m.gguf", **kwargs)
    assert not list(tmp_path.iterdir()), "a refused export must leave nothing behind"


def test_refuses_an_unknown_qtype(tmp_path):
    _refused(tiny_llama(), tmp_path, "qtype must be one of Q8_0, Q4_0; got 'Q5_K'", qtype="Q5_K")


def test_refuses_gpt2(tmp_path):
    _refused(tiny_gpt2(), tmp_path, "gpt2 family is not supported.*llama, mistral, qwen2")


def test_refuses_activation_quantization(tmp_path):
    model = compress_(tiny_llama(), QuantizeConfig(bits=8, group_size=None, act_bits=8))
    _refused(model, tmp_path, "'model.layers.0.self_attn.q_proj' quantizes its activations \\(act_bits=8\\)")


def test_refuses_an_online_hadamard(tmp_path):
    model = tiny_llama()
    name = "model.layers.1.self_attn.o_proj"
    linear = model.get_submodule(name)
    models.set_module(model, name, HadamardLinear.from_linear(linear.weight, linear.bias, name=name))
    _refused(model, tmp_path, f"'{name}'.*online Hadamard")


def test_refuses_a_rotated_gpt2(tmp_path):
    _refused(compress_(tiny_gpt2(), RotateConfig(seed=0)), tmp_path, "LayerNorms into RMSNorms")


def test_refuses_a_scaled_rope(tmp_path):
    model = tiny_llama()
    model.config.rope_parameters = {"rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}
    _refused(model, tmp_path, "rope_type 'linear'.*only the default rope")


def test_refuses_a_tokenizer_that_is_not_a_hugging_face_one(tmp_path):
    _refused(tiny_llama(), tmp_path, "Hugging Face fast tokenizer.*ByteTokenizer", TypeError, tokenizer=ByteTokenizer())


def test_refuses_a_tokenizer_larger_than_the_vocabulary(stories260k_dir, tmp_path):
    _, tokenizer = load(stories260k_dir)
    model = tiny_llama()
    model.resize_token_embeddings(256)
    _refused(model, tmp_path, "token id 511, but the model's vocabulary has 256 rows", tokenizer=tokenizer)


def test_existing_file_needs_overwrite(tmp_path):
    path = export_gguf(tiny_llama(), tmp_path / "m.gguf")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export_gguf(tiny_llama(), path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        export_gguf(tiny_llama(), path, qtype="Q4_0", overwrite=True)
    assert [p.name for p in tmp_path.iterdir()] == ["m.gguf"]
