"""tcompress.generate: the same tokens as transformers' generate (greedy, and sampled with the same seed) on plain
and compressed models, EOS handling, timings, errors."""

from __future__ import annotations

import pytest
import tcompress
import torch
from model_factories import deeper, tiny_gpt2, tiny_llama, tiny_mistral
from tcompress.early_exit.runtime import EarlyExitLM
from tcompress.recipes import QuantizeConfig, RotateConfig, compress_
from tcompress.recipes.exit_heads import build_exit_heads

FACTORIES = [tiny_llama, tiny_mistral, tiny_gpt2]


def _hf(model, ids, n, **kwargs):
    with torch.inference_mode():
        return model.generate(ids, max_new_tokens=n, min_new_tokens=n, pad_token_id=0, **kwargs)


def _peaked(model):
    """Scales the head so the random model's distributions are peaked enough for greedy ties to be impossible."""
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(4.0)
    return model


@pytest.mark.parametrize("factory", FACTORIES, ids=lambda f: f.__name__)
def test_greedy_equals_transformers_generate(factory):
    model = _peaked(factory())
    ids = torch.randint(3, 500, (2, 6), generator=torch.Generator().manual_seed(1))
    ours = tcompress.generate(model, ids, 10)
    assert ours.shape == (2, 16) and torch.equal(ours[:, :6], ids)
    assert torch.equal(ours, _hf(model, ids, 10, do_sample=False))


@pytest.mark.parametrize(
    "configs",
    [
        (QuantizeConfig(bits=4, group_size=None),),
        (QuantizeConfig(bits=8, group_size=None, act_bits=8),),
        (RotateConfig(online_hadamard=True), QuantizeConfig(bits=4, group_size=None)),
    ],
    ids=["w4", "w8a8", "rotated-w4-online"],
)
def test_greedy_equals_transformers_generate_on_compressed_models(configs):
    model = _peaked(tiny_llama())
    compress_(model, *configs)
    ids = torch.randint(3, 500, (1, 5), generator=torch.Generator().manual_seed(2))
    assert torch.equal(tcompress.generate(model, ids, 8), _hf(model, ids, 8, do_sample=False))


@pytest.mark.parametrize(
    "settings",
    [dict(temperature=0.7), dict(top_k=5), dict(top_p=0.8), dict(temperature=1.3, top_k=20, top_p=0.9)],
    ids=["temperature", "top_k", "top_p", "all"],
)
def test_sampling_equals_transformers_with_the_same_seed(settings):
    model = tiny_llama()
    ids = torch.randint(3, 500, (2, 4), generator=torch.Generator().manual_seed(3))
    # transformers applies the model's generation_config defaults (e.g. top_k 50) unless told otherwise; its
    # "no top-k" is 0.
    hf_settings = dict(temperature=1.0, top_k=0, top_p=None) | settings
    torch.manual_seed(7)
    ours = tcompress.generate(model, ids, 12, do_sample=True, **settings)
    torch.manual_seed(7)
    theirs = _hf(model, ids, 12, do_sample=True, **hf_settings)
    assert torch.equal(ours, theirs)
    torch.manual_seed(8)
    assert not torch.equal(tcompress.generate(model, ids, 12, do_sample=True, **settings), ours)  # it does sample


def test_eos_stops_every_row_and_pads_finished_rows():
    model = _peaked(tiny_llama())
    ids = torch.randint(3, 500, (2, 5), generator=torch.Generator().manual_seed(4))
    free = tcompress.generate(model, ids, 12)
    eos = int(free[0, 8])  # row 0 produces it as its 4th new token
    out = tcompress.generate(model, ids, 12, eos_token_id=eos)
    row1 = free[1, 5:].tolist()
    stop = 4 if eos not in row1 else max(4, row1.index(eos) + 1)
    assert out.shape[1] == 5 + (stop if eos in row1 else 12)
    assert (out[0, 9:] == eos).all()


def test_stats_are_filled():
    stats = tcompress.DecodeStats()
    out = tcompress.generate(tiny_llama(), torch.randint(3, 500, (1, 7)), 5, stats=stats)
    assert out.shape == (1, 12)
    assert (stats.prompt_tokens, stats.new_tokens) == (7, 5)
    assert stats.prefill_seconds > 0 and stats.decode_seconds > 0
    assert stats.decode_tokens_per_second == pytest.approx(4 / stats.decode_seconds)


def test_early_exit_model_decodes_through_its_own_loop():
    model = deeper(tiny_llama)
    heads = build_exit_heads(model, [1, 2])
    runner = EarlyExitLM(model, heads, 2.0, [1, 2])  # never exits: the full model's tokens
    ids = torch.randint(3, 500, (1, 5))
    assert torch.equal(tcompress.generate(runner, ids, 6), tcompress.generate(model, ids, 6))
    with pytest.raises(ValueError, match="EarlyExitLM samples with temperature and top_k only"):
        tcompress.generate(runner, ids, 6, do_sample=True, top_p=0.5)


@pytest.mark.parametrize(
    ("args", "kwargs", "match"),
    [
        ((torch.ones(5, dtype=torch.int64), 3), {}, r"input_ids must be \(batch, T\) token ids .* got shape \(5,\)"),
        ((torch.ones(1, 5), 3), {}, "input_ids must hold integer token ids; got torch.float32"),
        ((torch.ones(1, 5, dtype=torch.int64), 0), {}, "max_new_tokens must be a positive int; got 0"),
        ((torch.ones(1, 5, dtype=torch.int64), 3), {"temperature": 0}, "temperature must be a positive number"),
        ((torch.ones(1, 5, dtype=torch.int64), 3), {"top_k": 0}, "top_k must be a positive int or None; got 0"),
        ((torch.ones(1, 5, dtype=torch.int64), 3), {"top_p": 1.5}, r"top_p must be in \(0, 1\] or None; got 1.5"),
    ],
)
def test_bad_arguments_are_clear_errors(args, kwargs, match):
    with pytest.raises(ValueError, match="tcompress.generate: " + match):
        tcompress.generate(tiny_llama(), *args, **kwargs)
