"""export_compressed_tensors: tcompress-quantized models reloaded by transformers (with compressed-tensors) compute
what tcompress computes; the packing matches compressed-tensors' own; what engines cannot run is refused clearly."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from model_factories import VOCAB, tiny_gpt2, tiny_llama, tiny_mistral, tiny_qwen2
from tcompress import QuantizeConfig, RotateConfig, compress_, load, models
from tcompress.export import export_compressed_tensors
from tcompress.export.compressed_tensors import pack_codes
from tcompress.nn import HadamardLinear, LowRankLinear
from torch import nn

compressed_tensors = pytest.importorskip("compressed_tensors")

from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32  # noqa: E402
from compressed_tensors.quantization import QuantizationConfig  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer, CompressedTensorsConfig  # noqa: E402

# Both sides multiply by the same dequantized weights ((u - z) * s in fp32, bit for bit); what differs is only the
# fp32 summation order of tcompress's packed kernel and torch's dense matmul, ~1e-7 of the logit scale per layer
# (measured <= 3e-7 here). 1e-5 leaves room for other CPU kernel variants and still catches a wrong code or scale,
# which moves logits by ~1e-2 of their scale.
TIGHT = 1e-5
# tcompress's int4 groups need a divisor of in_features; the tiny models' MLP width (172) has none of 32 or 64, so
# grouped cases keep the down projection in floating point (and exercise the format's ignore list).
NOT_DOWN = ("*down_proj",)


def _ids(vocab: int = VOCAB) -> torch.Tensor:
    return torch.randint(0, vocab, (2, 12), generator=torch.Generator().manual_seed(0))


def _reload(directory, asymmetric: bool = False):
    # transformers 5.23 + compressed-tensors 0.20 build asymmetric zero points unpacked on their compressed load
    # path and reject the packed ones the format stores; dequantizing at load time reads them as written.
    if not asymmetric:
        return AutoModelForCausalLM.from_pretrained(directory).eval()
    with warnings.catch_warnings():
        # transformers warns that the file's quantization_config wins over the one passed: only `dequantize` is read.
        warnings.filterwarnings("ignore", message="You passed `quantization_config`", category=UserWarning)
        config = CompressedTensorsConfig(dequantize=True)
        return AutoModelForCausalLM.from_pretrained(directory, quantization_config=config).eval()


def _max_relative_diff(expected: torch.nn.Module, got: torch.nn.Module, ids: torch.Tensor) -> float:
    with torch.no_grad():
        a, b = expected(ids).logits, got(ids).logits
    return ((a - b).abs().max() / a.abs().max()).item()


ROUND_TRIPS = {
    "llama-w8-channel": (tiny_llama, [QuantizeConfig(bits=8, group_size=None)]),
    "llama-w4-g32": (tiny_llama, [QuantizeConfig(bits=4, group_size=32, exclude=NOT_DOWN)]),
    "llama-w4-g64": (tiny_llama, [QuantizeConfig(bits=4, group_size=64, exclude=NOT_DOWN)]),
    "llama-w4-channel": (tiny_llama, [QuantizeConfig(bits=4, group_size=None)]),
    "llama-rotated-w8": (tiny_llama, [RotateConfig(seed=0), QuantizeConfig(bits=8, group_size=None)]),
    "llama-rotated-w4-g32": (
        tiny_llama,
        [RotateConfig(seed=0), QuantizeConfig(bits=4, group_size=32, exclude=NOT_DOWN)],
    ),
    "mistral-rotated-w4-g64": (
        tiny_mistral,
        [RotateConfig(seed=0), QuantizeConfig(bits=4, group_size=64, exclude=NOT_DOWN)],
    ),
    "qwen2-w4-g32-biases": (tiny_qwen2, [QuantizeConfig(bits=4, group_size=32, exclude=NOT_DOWN)]),
    "llama-w8-head": (tiny_llama, [QuantizeConfig(bits=8, group_size=None, quantize_head=True)]),
    "llama-mixed-w8-attn-w4-mlp": (
        tiny_llama,
        [
            QuantizeConfig(bits=8, group_size=None, include=("*self_attn*",)),
            QuantizeConfig(bits=4, group_size=None, include=("*mlp*",)),
        ],
    ),
    "llama-w4-fp16-scales": (tiny_llama, [QuantizeConfig(bits=4, group_size=None, scale_dtype="float16")]),
}
ASYMMETRIC = {
    "llama-w4-channel-asym": (tiny_llama, [QuantizeConfig(bits=4, group_size=None, symmetric=False)]),
    "llama-rotated-w4-g32-asym": (
        tiny_llama,
        [RotateConfig(seed=0), QuantizeConfig(bits=4, group_size=32, symmetric=False, exclude=NOT_DOWN)],
    ),
    "mistral-w8-g32-asym": (tiny_mistral, [QuantizeConfig(bits=8, group_size=32, symmetric=False, exclude=NOT_DOWN)]),
}


@pytest.mark.parametrize("case", sorted(ROUND_TRIPS))
def test_symmetric_round_trip_matches_tcompress(case, tmp_path):
    factory, configs = ROUND_TRIPS[case]
    model = compress_(factory(), *configs)
    directory = export_compressed_tensors(model, tmp_path / "out")
    reloaded = _reload(directory)
    assert _max_relative_diff(model, reloaded, _ids()) < TIGHT


@pytest.mark.parametrize("case", sorted(ASYMMETRIC))
def test_asymmetric_round_trip_matches_tcompress(case, tmp_path):
    factory, configs = ASYMMETRIC[case]
    model = compress_(factory(), *configs)
    directory = export_compressed_tensors(model, tmp_path / "out")
    assert "weight_zero_point" in str(_tensor_names(directory))
    assert _max_relative_diff(model, _reload(directory, asymmetric=True), _ids()) < TIGHT


def _tensor_names(directory) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(directory / "model.safetensors"), framework="pt") as f:
        return list(f.keys())


def test_config_is_valid_and_says_what_was_done(tmp_path):
    model = compress_(tiny_llama(), RotateConfig(seed=0), QuantizeConfig(bits=4, group_size=32, exclude=NOT_DOWN))
    directory = export_compressed_tensors(model, tmp_path / "out")
    config = json.loads((directory / "config.json").read_text())
    quant = QuantizationConfig.model_validate(config["quantization_config"])
    assert quant.format == "pack-quantized" and quant.quant_method == "compressed-tensors"
    (group,) = quant.config_groups.values()
    assert (group.weights.num_bits, group.weights.group_size, group.weights.strategy) == (4, 32, "group")
    assert set(quant.ignore) == {"lm_head", "model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj"}
    # The rotation untied the head and made the norms parameter-free: the export states both as the class has them.
    assert config["tie_word_embeddings"] is False and config["architectures"] == ["LlamaForCausalLM"]
    reloaded = _reload(directory)
    assert torch.equal(reloaded.model.norm.weight, torch.ones(model.config.hidden_size))


def test_w8a8_declares_dynamic_per_token_activations(tmp_path):
    model = compress_(tiny_llama(), QuantizeConfig(bits=8, group_size=None, act_bits=8))
    directory = export_compressed_tensors(model, tmp_path / "out")
    quant = json.loads((directory / "config.json").read_text())["quantization_config"]
    assert quant["format"] == "int-quantized"
    (group,) = quant["config_groups"].values()
    assert group["input_activations"] == {
        "num_bits": 8,
        "type": "int",
        "symmetric": True,
        "strategy": "token",
        "dynamic": True,
    }
    reloaded = _reload(directory)
    scheme = reloaded.model.layers[0].mlp.up_proj.quantization_scheme.input_activations
    assert (scheme.num_bits, scheme.strategy, scheme.dynamic, scheme.symmetric) == (8, "token", True, True)
    # Whether an engine rounds activations as tcompress does is not visible through transformers: its reference
    # forward takes max|x|/127.5 as the per-token scale where tcompress (and vLLM's int8 kernels) take max|x|/127,
    # so the two roundings differ as much as either differs from none (measured: 7e-3 against 5e-3 of the logit
    # scale). The weights are tcompress's exactly: with activation quantization off on both sides, logits agree.
    for module in reloaded.modules():
        if hasattr(module, "quantization_scheme"):
            module.quantization_enabled = False
    for module in model.modules():
        if hasattr(module, "act_bits"):
            module.act_bits = None
    assert _max_relative_diff(model, reloaded, _ids()) < TIGHT


def test_stories260k_round_trips_with_its_tokenizer(stories260k_dir, tmp_path):
    model, tokenizer = load(stories260k_dir)
    compress_(model, RotateConfig(seed=0), QuantizeConfig(bits=4, group_size=32, exclude=NOT_DOWN))
    directory = export_compressed_tensors(model, tmp_path / "out", tokenizer=tokenizer)
    reloaded = _reload(directory)
    text = "Once upon a time, there was a little dog."
    assert AutoTokenizer.from_pretrained(directory)(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert _max_relative_diff(model, reloaded, _ids(model.config.vocab_size)) < TIGHT


def test_stories260k_w8_round_trip(stories260k_dir, tmp_path):
    model, _ = load(stories260k_dir)
    compress_(model, QuantizeConfig(bits=8, group_size=None))
    reloaded = _reload(export_compressed_tensors(model, tmp_path / "out"))
    assert _max_relative_diff(model, reloaded, _ids(model.config.vocab_size)) < TIGHT


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("columns", [8, 13, 64, 172])
def test_packing_matches_compressed_tensors(bits, columns):
    codes = torch.randint(
        0, 1 << bits, (5, columns), generator=torch.Generator().manual_seed(columns), dtype=torch.uint8
    )
    signed = (codes.to(torch.int16) - (1 << (bits - 1))).to(torch.int8)
    assert torch.equal(pack_codes(codes, bits), pack_to_int32(signed, bits))
    assert torch.equal(pack_codes(codes.T.contiguous(), bits).T, pack_to_int32(signed, bits, packed_dim=0))


# -- refusals ---------------------------------------------------------------------------------------------------------


def _refused(model, tmp_path, match: str):
    target = tmp_path / "out"
    with pytest.raises(ValueError, match=match):
        export_compressed_tensors(model, target)
    assert not target.exists() and not list(tmp_path.iterdir()), "a refused export must leave nothing behind"


def test_refuses_an_uncompressed_model(tmp_path):
    _refused(tiny_llama(), tmp_path, "no QuantLinear.*save_pretrained")


def test_refuses_an_online_hadamard(tmp_path):
    model = tiny_llama()
    name = "model.layers.0.self_attn.o_proj"
    linear = model.get_submodule(name)
    models.set_module(model, name, HadamardLinear.from_linear(linear.weight, linear.bias, name=name))
    _refused(model, tmp_path, f"'{name}'.*online Hadamard.*HadamardLinear")
    compress_(model, QuantizeConfig(bits=8, group_size=None))
    _refused(model, tmp_path, f"'{name}'.*online Hadamard.*QuantLinear")


def test_refuses_a_low_rank_layer(tmp_path):
    model = compress_(tiny_llama(), QuantizeConfig(bits=8, group_size=None, exclude=("*o_proj",)))
    name = "model.layers.1.self_attn.o_proj"
    low_rank = LowRankLinear(nn.Linear(64, 8, bias=False), nn.Linear(8, 64, bias=False))
    models.set_module(model, name, low_rank)
    _refused(model, tmp_path, f"'{name}' is a tcompress LowRankLinear")


@pytest.mark.parametrize("act_bits,bits,group_size", [(4, 4, None), (8, 4, None), (8, 8, 32)])
def test_refuses_activation_quantization_engines_cannot_run(act_bits, bits, group_size, tmp_path):
    config = QuantizeConfig(bits=bits, group_size=group_size, act_bits=act_bits, exclude=NOT_DOWN)
    model = compress_(tiny_llama(), config)
    _refused(model, tmp_path, f"act_bits={act_bits}.*W8A8")


def test_refuses_gpt2_conv1d_projections(tmp_path):
    _refused(compress_(tiny_gpt2(), QuantizeConfig(bits=8, group_size=None)), tmp_path, "Conv1D")


def test_refuses_a_rotated_layernorm_model(tmp_path):
    model = compress_(tiny_gpt2(), RotateConfig(seed=0), QuantizeConfig(bits=8, group_size=None))
    _refused(model, tmp_path, "LayerNorms into RMSNorms.*ScaleFreeRMSNorm")


def test_refuses_q_k_v_quantized_differently(tmp_path):
    model = compress_(tiny_llama(), QuantizeConfig(bits=8, group_size=None, include=("*q_proj",)))
    _refused(model, tmp_path, "q_proj: int8 per-channel symmetric.*k_proj: floating point.*fuses q/k/v")


def test_refuses_scales_the_model_dtype_would_round(tmp_path):
    model = compress_(tiny_llama(), QuantizeConfig(bits=8, group_size=None)).to(torch.bfloat16)
    _refused(model, tmp_path, "float32 scales .* not exact in the model's torch.bfloat16.*scale_dtype='bfloat16'")


def test_existing_folder_needs_overwrite(tmp_path):
    model = compress_(tiny_llama(), QuantizeConfig(bits=8, group_size=None))
    target = export_compressed_tensors(model, tmp_path / "out")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export_compressed_tensors(model, target)
    export_compressed_tensors(model, target, overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
