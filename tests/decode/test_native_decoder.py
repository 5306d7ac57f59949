"""The native decode step (csrc/cpu/decode_step.cpp through tcompress.decode.NativeDecoder): per-step logits equal to
the model's own forward with a KV cache, the same tokens as transformers' generate, the runtime choice and why a model
is refused, and the plan's own checks."""

from __future__ import annotations

import dataclasses
import re

import pytest
import tcompress
import torch
from model_factories import tiny_gpt2, tiny_llama, tiny_mistral, tiny_qwen2
from tcompress.decode import NativeDecoder
from tcompress.models import UnsupportedDecoder, cache_kwargs
from tcompress.recipes import QuantizeConfig, RotateConfig, compress_

W4 = QuantizeConfig(bits=4, group_size=4)  # 172, the tiny MLP width, is 4 · 43
W8 = QuantizeConfig(bits=8, group_size=None)
W4_ASYM = QuantizeConfig(bits=4, group_size=None, symmetric=False)
W4A8 = QuantizeConfig(bits=4, group_size=None, act_bits=8)
W4A8_GROUPS = QuantizeConfig(bits=4, group_size=4, act_bits=8, act_granularity="per_group")
ROTATE_ONLINE = RotateConfig(online_hadamard=True)  # down's input transformed online (172 = 4 · 43: K = 172)
HEAD_INT8 = QuantizeConfig(bits=8, group_size=None, include=("no projection",), quantize_head=True)


def _peaked_and_compressed(model, *configs):
    with torch.no_grad():  # peaked distributions, so that greedy ties between the two runtimes are impossible
        model.get_output_embeddings().weight.mul_(4.0)
    compress_(model, *configs)
    return model


def _compressed(factory, *configs, seed: int = 0):
    return _peaked_and_compressed(factory(seed), *configs)


def _windowed_mistral(*configs):
    """The tiny Mistral with a sliding window of 5 positions, peaked and compressed."""
    model = tiny_mistral()
    model.config.sliding_window = 5
    return _peaked_and_compressed(model, *configs)


def _module_logits(model, ids):
    """(steps, vocab): the model's own forward, one token at a time after the first, with a DynamicCache."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    call = {**cache_kwargs(type(model).forward, cache), "use_cache": True}
    out = [model(ids[:, :1], **call).logits[0, -1]]
    for t in range(1, ids.shape[1]):
        out.append(model(ids[:, t : t + 1], **call).logits[0, -1])
    return torch.stack(out)


@pytest.mark.parametrize("factory", [tiny_llama, tiny_mistral, tiny_qwen2, tiny_gpt2], ids=lambda f: f.__name__)
@pytest.mark.parametrize(
    "configs",
    [(W4,), (W8,), (W4_ASYM,), (W4A8,), (W4A8_GROUPS,), (W4, HEAD_INT8), (ROTATE_ONLINE, W4)],
    ids=["w4g4", "w8", "w4-asym", "w4a8", "w4a8-per-group", "w4+int8-head", "rotated-online-hadamard-w4"],
)
@torch.inference_mode()
def test_each_step_gives_the_modules_logits(factory, configs):
    model = _compressed(factory, *configs)
    ids = torch.randint(3, 500, (1, 12), generator=torch.Generator().manual_seed(5))
    expected = _module_logits(model, ids)
    decoder = NativeDecoder(model, max_len=12)
    got = torch.stack([decoder.logits(int(t), p)[0].clone() for p, t in enumerate(ids[0])])
    scale = expected.abs().max()
    assert (got - expected).abs().max() <= 2e-5 * scale + 1e-5, float((got - expected).abs().max())


@pytest.mark.parametrize("factory", [tiny_llama, tiny_mistral, tiny_qwen2, tiny_gpt2], ids=lambda f: f.__name__)
def test_generate_native_equals_transformers_generate(factory):
    model = _compressed(factory, W4, HEAD_INT8)
    ids = torch.randint(3, 500, (1, 6), generator=torch.Generator().manual_seed(6))
    stats = tcompress.DecodeStats()
    ours = tcompress.generate(model, ids, 20, stats=stats)
    assert (stats.runtime, stats.runtime_note) == ("native", "")
    with torch.inference_mode():
        theirs = model.generate(ids, max_new_tokens=20, min_new_tokens=20, do_sample=False, pad_token_id=0)
    assert torch.equal(ours, theirs)
    assert torch.equal(tcompress.generate(model, ids, 20, runtime="modules"), theirs)


def test_sampling_native_equals_modules_with_the_same_seed():
    model = _compressed(tiny_llama, W4)
    ids = torch.randint(3, 500, (1, 4), generator=torch.Generator().manual_seed(3))
    settings = dict(do_sample=True, temperature=0.9, top_k=40, top_p=0.95)
    torch.manual_seed(11)
    native = tcompress.generate(model, ids, 16, runtime="native", **settings)
    torch.manual_seed(11)
    assert torch.equal(native, tcompress.generate(model, ids, 16, runtime="modules", **settings))


def test_sliding_window_attends_to_the_last_window_positions():
    model = _windowed_mistral(W8)
    ids = torch.randint(3, 500, (1, 14), generator=torch.Generator().manual_seed(8))
    decoder = NativeDecoder(model, max_len=14)
    assert decoder.sliding_window == 5
    with torch.inference_mode():
        expected = model(ids).logits[0]  # the full forward applies the window through its mask
        got = torch.stack([decoder.logits(int(t), p)[0].clone() for p, t in enumerate(ids[0])])
    assert (got - expected).abs().max() <= 2e-5 * expected.abs().max() + 1e-5
    # A prompt that fills the window goes through the modules.
    stats = tcompress.DecodeStats()
    tcompress.generate(model, ids[:, :6], 3, stats=stats)
    assert stats.runtime == "modules" and "fills the sliding window (5)" in stats.runtime_note


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (tiny_llama, r"block 0's q projection is Linear; the native step runs packed projections \(QuantLinear\)"),
        (lambda: _gpt2_with(W4, activation_function="relu"), r"activation_function 'relu': the native step's GPT-2"),
        (
            lambda: _gpt2_with(W4, scale_attn_by_inverse_layer_idx=True),
            r"the blocks scale attention differently \(\[0.125, 0.25\]\)",
        ),
        (
            lambda: _with_online_hadamard_on_q(_compressed(tiny_llama, W4)),
            r"block 1's q projection transforms an input it shares with other projections online",
        ),
        (
            lambda: _compressed(tiny_llama, W4).to(torch.bfloat16),
            r"the native step runs fp32 models on the CPU; .* torch.bfloat16",
        ),
    ],
    ids=["fp32", "gpt2-relu", "gpt2-scaled-per-layer", "online-hadamard-on-q", "bf16"],
)
def test_unsupported_models_decode_on_their_modules_and_say_why(make, reason):
    model = make()
    ids = torch.randint(3, 500, (1, 4))
    stats = tcompress.DecodeStats()
    out = tcompress.generate(model, ids, 3, stats=stats)
    assert out.shape == (1, 7) and stats.runtime == "modules"
    assert re.search(reason, stats.runtime_note), stats.runtime_note
    with pytest.raises(UnsupportedDecoder, match=r"tcompress.generate\(runtime='native'\): " + reason):
        tcompress.generate(model, ids, 3, runtime="native")


def _gpt2_with(*configs, **settings):
    from transformers import GPT2LMHeadModel

    config = tiny_gpt2().config
    for name, value in settings.items():
        setattr(config, name, value)
    torch.manual_seed(0)
    model = GPT2LMHeadModel(config).eval()
    compress_(model, *configs)
    return model


def test_gpt2_positions_beyond_the_learned_ones_are_refused():
    with pytest.raises(UnsupportedDecoder, match="129 positions exceed the 128 the model's learned positions cover"):
        NativeDecoder(_compressed(tiny_gpt2, W4), max_len=129)


def _with_online_hadamard_on_q(model):
    model.model.layers[1].self_attn.q_proj.online_hadamard = True  # no recipe does this; the step must refuse it
    return model


def test_rotated_model_decodes_natively_with_the_modules_tokens():
    model = _compressed(tiny_llama, ROTATE_ONLINE, W4, HEAD_INT8)
    ids = torch.randint(3, 500, (1, 5), generator=torch.Generator().manual_seed(9))
    stats = tcompress.DecodeStats()
    native = tcompress.generate(model, ids, 16, stats=stats)
    assert stats.runtime == "native"
    assert torch.equal(native, tcompress.generate(model, ids, 16, runtime="modules"))


def test_a_batch_decodes_on_the_modules():
    model = _compressed(tiny_llama, W4)
    stats = tcompress.DecodeStats()
    tcompress.generate(model, torch.randint(3, 500, (2, 4)), 3, stats=stats)
    assert stats.runtime == "modules" and "decodes one sequence; got a batch of 2" in stats.runtime_note


def test_bad_runtime_is_a_clear_error():
    with pytest.raises(ValueError, match="runtime must be one of 'auto', 'native', 'modules'; got 'fast'"):
        tcompress.generate(tiny_llama(), torch.ones(1, 3, dtype=torch.int64), 2, runtime="fast")


def test_step_refuses_positions_past_the_cache_and_tokens_outside_the_vocabulary():
    decoder = NativeDecoder(_compressed(tiny_llama, W4), max_len=4)
    with pytest.raises(ValueError, match=r"DecodePlan.step\(token=5, pos=4; vocab 512, max_len 4\): invalid argument"):
        decoder.logits(5, 4)
    with pytest.raises(ValueError, match=r"DecodePlan.step\(token=512, pos=0; vocab 512, max_len 4\)"):
        decoder.logits(512, 0)


def test_plan_checks_every_projection_shape_once():
    from tcompress import _native

    native = _native.cpu_native()
    d, f = 8, 16
    keep = [torch.zeros(n) for n in (64 * d, 4 * 4, 4 * 4, d, 128)]
    embed, cos, sin, norm, cache = (t.data_ptr() for t in keep)
    qw, scales = torch.zeros(64, 4, dtype=torch.uint8), torch.ones(64, 1)

    def linear(k, n):
        return (qw.data_ptr(), k, n, 4, scales.data_ptr(), native.FLOAT32, 0, 0, 0, 0, 0, False, False, 0, 1, 1.0)

    good = (norm, norm, 0, 0, linear(d, 8), linear(d, 4), linear(d, 4), linear(8, d), linear(d, f), linear(d, f),
            linear(f, d), cache, cache)  # fmt: skip
    silu = native.DECODE_MLP_SILU_GATED
    args = (d, 2, 1, 4, f, 4, 64, 0, 1e-6, 0.5, False, native.DECODE_RMSNORM, silu, embed, 0, cos, sin, norm, 0)
    native.DecodePlan(*args, [good, good], None)
    bad = (*good[:8], linear(d, f + 1), *good[9:])
    with pytest.raises(ValueError, match=r"DecodePlan\(layers=2, d=8, heads=2/1, .*\) at layer 1: unsupported size"):
        native.DecodePlan(*args, [good, bad], None)
    with pytest.raises(ValueError, match=r"DecodePlan\(layers=1, .*\): invalid argument"):  # an unknown MLP kind
        native.DecodePlan(*args[:12], 7, *args[13:], [good], None)
    rotated_o = (*linear(8, d)[:12], True, 0, 3, 1.0)  # an online Hadamard of size 8 with k = 3: no such transform
    with pytest.raises(ValueError, match=r"at layer 0: unsupported size"):
        native.DecodePlan(*args, [(*good[:7], rotated_o, *good[8:])], None)


def test_a_weight_off_the_cpu_is_refused_not_read():
    model = _compressed(tiny_llama, W4)
    model.model.layers[1].mlp.up_proj.to("meta")  # as accelerate's offload leaves a weight until a hook loads it
    with pytest.raises(UnsupportedDecoder, match=r"a \(172, 32\) tensor of the model is on meta, not the CPU"):
        NativeDecoder(model, max_len=4)


@pytest.mark.parametrize(
    "configs",
    [
        (QuantizeConfig(bits=4, group_size=32), HEAD_INT8),
        # The integer decode path at the widths of its row kernel (K multiples of 64, groups of 32).
        (QuantizeConfig(bits=4, group_size=32, act_bits=8, act_granularity="per_group"),
         dataclasses.replace(HEAD_INT8, act_bits=8)),
    ],
    ids=["w4g32+int8-head", "w4a8g32-per-group+w8a8-head"],
)  # fmt: skip
def test_parallel_regions_give_the_modules_logits(configs):
    """Widths at which the projections split their rows over two threads (q/k/v, gate/up and the head each above the
    one-thread threshold of 2^18 weights) and the attention runs its heads in parallel (from position 63 on)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=512, hidden_size=512, intermediate_size=1024, num_hidden_layers=2,
                         num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=128)  # fmt: skip
    model = LlamaForCausalLM(config).eval()
    compress_(model, *configs)
    ids = torch.randint(3, 500, (1, 76), generator=torch.Generator().manual_seed(10))
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch.inference_mode():
            expected = _module_logits(model, ids)
            decoder = NativeDecoder(model, max_len=76)
            got = torch.stack([decoder.logits(int(t), p)[0].clone() for p, t in enumerate(ids[0])])
    finally:
        torch.set_num_threads(threads)
    error = (got - expected).abs().amax(-1) / expected.abs().max()
    if configs[0].act_granularity == "per_group":
        # Integer activations round: where the step's norm or attention and torch's differ in the last bit, a code can
        # land one off (with per-group scales the codes are larger, so this happens at a few positions, and a value
        # row in the cache carries it on). Most positions agree to fp32 rounding, none is off by more than a code.
        assert error.median() <= 2e-5 and error.max() <= 2e-2, (float(error.median()), float(error.max()))
    else:
        assert error.max() <= 2e-5 + 1e-5 / expected.abs().max()


def test_decoding_past_a_sliding_window_after_a_prefill_equals_transformers():
    model = _windowed_mistral(W4)
    ids = torch.randint(3, 500, (1, 4), generator=torch.Generator().manual_seed(12))
    stats = tcompress.DecodeStats()
    ours = tcompress.generate(model, ids, 12, stats=stats)
    assert stats.runtime == "native"
    with torch.inference_mode():
        theirs = model.generate(ids, max_new_tokens=12, min_new_tokens=12, do_sample=False, pad_token_id=0)
    assert torch.equal(ours, theirs)


def _qwen2_sliding(max_window_layers: int):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    settings = tiny_qwen2().config.to_dict() | dict(use_sliding_window=True, sliding_window=5,
                                                    max_window_layers=max_window_layers, layer_types=None)  # fmt: skip
    torch.manual_seed(0)
    return _peaked_and_compressed(Qwen2ForCausalLM(Qwen2Config(**settings)).eval(), W4)


def test_qwen2_slides_only_the_blocks_its_layer_types_say():
    full = _qwen2_sliding(max_window_layers=2)  # blocks >= 2 slide: none of the 2
    assert NativeDecoder(full, max_len=16).sliding_window == 0
    ids = torch.randint(3, 500, (1, 8), generator=torch.Generator().manual_seed(13))  # longer than the window
    stats = tcompress.DecodeStats()
    ours = tcompress.generate(full, ids, 8, stats=stats)
    assert stats.runtime == "native" and torch.equal(ours, tcompress.generate(full, ids, 8, runtime="modules"))
    with pytest.raises(UnsupportedDecoder, match="1 of 2 blocks use a sliding window and the others full attention"):
        NativeDecoder(_qwen2_sliding(max_window_layers=1), max_len=16)


def test_length_dependent_rope_and_invalid_buffers_are_refused():
    model = _compressed(tiny_llama, W4)
    model.model.rotary_emb.rope_type = "dynamic"
    with pytest.raises(UnsupportedDecoder, match="rope_type 'dynamic' recomputes its frequencies per length"):
        NativeDecoder(model, max_len=8)
    model = _compressed(tiny_llama, W4)
    model.model.layers[0].self_attn.k_proj.qweight = torch.zeros(3, 3, dtype=torch.uint8)
    with pytest.raises(UnsupportedDecoder, match="block 0's k projection's buffers are not a valid packed weight"):
        NativeDecoder(model, max_len=8)
