"""Decoder-layer calling conventions across transformers releases: the KV cache's keyword, no deprecation warnings."""

from __future__ import annotations

import inspect
import warnings

import pytest
import torch
from model_factories import tiny_gpt2, tiny_llama, tiny_mistral
from tcompress.early_exit import full_model_generate
from tcompress.models import block_stepper, cache_kwargs

FACTORIES = {"gpt2": tiny_gpt2, "mistral": tiny_mistral, "llama": tiny_llama}


def test_cache_kwargs_follows_the_signature():
    def new_style(hidden_states, cache=None, use_cache=False): ...

    def old_style(hidden_states, past_key_values=None, use_cache=False): ...

    sentinel = object()
    assert cache_kwargs(new_style, sentinel) == {"cache": sentinel}
    assert cache_kwargs(old_style, sentinel) == {"past_key_values": sentinel}


@pytest.mark.parametrize("family", sorted(FACTORIES))
def test_the_installed_transformers_gets_the_keyword_its_layers_take(family):
    model = FACTORIES[family]()
    for fn in (type(model).forward, type(block_stepper(model).blocks[0]).forward):
        (name,) = cache_kwargs(fn, None)
        assert name in inspect.signature(fn).parameters


@pytest.mark.parametrize("family", sorted(FACTORIES))
def test_stepping_and_generation_raise_no_deprecation_warning(family):
    # transformers 5.2x renamed past_key_values to cache and warns (FutureWarning) that the old name goes in 5.40: the
    # block stepping and the plain generation loop must use the name the installed release takes.
    model = FACTORIES[family]()
    prompt = torch.randint(0, 512, (1, 5), generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        stepper = block_stepper(model)
        cache = stepper.new_cache()
        with torch.no_grad():
            h = stepper.embed(prompt, torch.arange(5)[None])
            ctx = stepper.context(h, torch.arange(5)[None], cache)
            for i in range(len(stepper.blocks)):
                h = stepper.run_block(i, h, ctx, cache)
            full_model_generate(model, prompt, 3)
    assert cache.get_seq_length() == 5
