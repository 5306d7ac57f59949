"""Shared fixtures: run kernel tests under every CPU kernel variant this machine supports; skip CUDA tests
where no device is present; locate the shared assets (``$TCOMPRESS_DATA_DIR``)."""

from __future__ import annotations

import os
import pathlib

import pytest
import tcompress
import torch
from tcompress import _native


def pytest_report_header(config):
    d = tcompress.info()
    return (
        f"tcompress {d['version']}: ISA {d['isa']} (supported: {', '.join(d['isas_supported'])}), "
        f"CUDA {'available' if d['cuda_available'] else 'unavailable: ' + d['cuda_status']}, torch {d['torch']}"
    )


@pytest.fixture(params=_native.supported_isas() or ["none"])
def isa(request):
    """Runs the test once per supported CPU kernel variant, restoring the original one afterwards."""
    original = _native.get_isa()
    if request.param == "none":
        pytest.skip("tcompress._C is not built: no CPU kernel variants to test")
    _native.set_isa(request.param)
    yield request.param
    _native.set_isa(original)


@pytest.fixture
def cuda_device() -> torch.device:
    """The first CUDA device, or a skip saying why the CUDA kernels cannot run here."""
    if not (_native.cuda_available() and torch.cuda.is_available()):
        pytest.skip(f"needs a CUDA device ({_native.cuda_status()})")
    return torch.device("cuda", 0)


@pytest.fixture(scope="session")
def data_dir() -> pathlib.Path:
    """The shared assets folder, or a skip naming the variable when it is not set."""
    path = os.environ.get("TCOMPRESS_DATA_DIR")
    if not path or not pathlib.Path(path).is_dir():
        pytest.skip("shared assets not found: set TCOMPRESS_DATA_DIR to the ../shared folder")
    return pathlib.Path(path)


# ---------------------------------------------------------------------------------------------------------------
# Models: tiny random ones built from configs (tests/model_factories.py), and the real stories260K
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture
def tiny_gpt2():
    """A fresh seeded GPT2LMHeadModel (2 layers, d=64, vocab 512, 128 positions), in eval mode."""
    from model_factories import tiny_gpt2 as build

    return build()


@pytest.fixture
def tiny_mistral():
    """A fresh seeded MistralForCausalLM (2 layers, d=64, 4 heads / 2 KV heads, vocab 512), in eval mode."""
    from model_factories import tiny_mistral as build

    return build()


@pytest.fixture
def tiny_llama():
    """A fresh seeded LlamaForCausalLM (2 layers, d=64, 4 heads / 2 KV heads, vocab 512, tied), in eval mode."""
    from model_factories import tiny_llama as build

    return build()


@pytest.fixture(scope="session")
def stories260k_dir(data_dir) -> pathlib.Path:
    """``$TCOMPRESS_DATA_DIR/models/stories260K``, or a skip naming the missing asset."""
    path = data_dir / "models" / "stories260K"
    if not (path / "config.json").is_file():
        pytest.skip(f"asset missing: {path} (the stories260K model)")
    return path


@pytest.fixture
def stories260k(stories260k_dir):
    """(model, tokenizer): the real stories260K Llama in fp32, freshly loaded (tests may edit it), in eval mode."""
    return tcompress.load(stories260k_dir)
