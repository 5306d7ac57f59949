"""tcompress.data: the text sources (WikiText-2 file, calibration cleanup, TinyStories, the labelled offline
fallback) and token windows (shapes, no overlap, the dropped tail, the token budget, BOS, bad input)."""

from __future__ import annotations

import sys

import pytest
import torch
from model_factories import ByteTokenizer
from tcompress import data
from transformers import GPT2TokenizerFast


@pytest.fixture(scope="module")
def gpt2_tokenizer(data_dir):
    path = data_dir / "tokenizers" / "gpt2"
    if not path.is_dir():
        pytest.skip(f"asset missing: {path} (the GPT-2 tokenizer)")
    return GPT2TokenizerFast.from_pretrained(path)


@pytest.fixture
def no_assets(monkeypatch, tmp_path):
    """An empty assets folder, and no datasets package to fall back on (it would try the network)."""
    monkeypatch.setenv("TCOMPRESS_DATA_DIR", str(tmp_path))
    monkeypatch.setitem(sys.modules, "datasets", None)
    return tmp_path


def _require(data_dir, relative):
    if not (data_dir / relative).is_file():
        pytest.skip(f"asset missing: {data_dir / relative}")


# -- sources -----------------------------------------------------------------------------------------------------


def test_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("TCOMPRESS_DATA_DIR", str(tmp_path))
    assert data.data_dir() == tmp_path
    monkeypatch.setenv("TCOMPRESS_DATA_DIR", str(tmp_path / "absent"))
    assert data.data_dir() is None
    monkeypatch.delenv("TCOMPRESS_DATA_DIR")
    assert data.data_dir() is None


def test_wikitext2_raw_test_has_287644_gpt2_tokens(data_dir, gpt2_tokenizer):
    _require(data_dir, data.WIKITEXT2_TEST_FILE)
    source = data.text_source("wikitext2")
    assert source.label.startswith("wikitext-2-raw test (file ")
    assert source.text == data.wikitext2_test_text()
    ids = gpt2_tokenizer(source.text, add_special_tokens=False)["input_ids"]
    assert len(ids) == 287_644
    windows = data.token_windows(ids, gpt2_tokenizer, 1024)
    assert windows.shape == (287_644 // 1024, 1024)
    assert torch.equal(windows.flatten(), torch.tensor(ids[: 280 * 1024]))
    assert data.default_text_source().name == "wikitext2"


def test_calibration_text_is_detokenized(data_dir):
    _require(data_dir, data.WIKITEXT2_VALID_FILE)
    raw = (data_dir / data.WIKITEXT2_VALID_FILE).read_text(encoding="utf-8")
    assert " @-@ " in raw
    text = data.wikitext2_calibration_text()
    assert "@" not in text  # every @ of the release is one of the three splits
    assert "<unk>" in text
    assert len(text) == len(raw) - 4 * raw.count(" @")
    assert data.calibration_source().label.startswith("wikitext-2 validation, detokenized")


def test_tinystories_texts(data_dir):
    _require(data_dir, data.TINYSTORIES_FILE)
    stories = data.tinystories_texts()
    assert len(stories) == 10
    assert all(s and s == s.strip() and "<|endoftext|>" not in s for s in stories)
    assert stories[0].startswith("Spot. Spot saw the shiny car")
    source = data.text_source("tinystories")
    assert source.documents == tuple(stories)


def test_fallback_is_labelled(no_assets):
    text = data.fallback_text()
    assert len(text) > 100_000
    for source in (data.text_source("fallback"), data.default_text_source(), data.calibration_source()):
        assert source.name == "fallback" and source.text == text
        assert "NOT WikiText-2" in source.label


def test_missing_assets_are_named(no_assets):
    with pytest.raises(FileNotFoundError, match=r"datasets package is not installed.*wiki\.test\.raw does not exist"):
        data.wikitext2_test_text()
    with pytest.raises(FileNotFoundError, match=r"valid\.txt does not exist"):
        data.wikitext2_calibration_text()
    with pytest.raises(FileNotFoundError, match=r"valid-first10\.txt does not exist"):
        data.tinystories_texts()


def test_text_source_file_and_unknown_name(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("some text", encoding="utf-8")
    source = data.text_source(path)
    assert source.text == "some text" and str(path) in source.label
    with pytest.raises(ValueError, match="one of wikitext2, wikitext2-calibration, tinystories, fallback.*'nope'"):
        data.text_source("nope")


# -- windows -----------------------------------------------------------------------------------------------------


def test_windows_are_adjacent_and_drop_the_tail():
    ids = torch.arange(1000)
    w = data.token_windows(ids, None, 64)
    assert w.shape == (15, 64) and w.dtype == torch.int64
    assert torch.equal(w.flatten(), ids[: 15 * 64])  # no overlap, no gap, tail dropped


def test_windows_stride_and_budget():
    ids = torch.arange(1000)
    w = data.token_windows(ids, None, 64, stride=32)
    assert w.shape == (30, 64) and torch.equal(w[1, :32], w[0, 32:])
    w = data.token_windows(ids, None, 64, max_tokens=200)
    assert w.shape == (3, 64) and int(w.max()) < 200
    w = data.token_windows(list(range(100)), None, 10, stride=30)
    assert w[:, 0].tolist() == [0, 30, 60, 90]


def test_windows_from_text_and_bos():
    tok = ByteTokenizer()
    text = "abcdefghij" * 10
    w = data.token_windows(text, tok, 10)
    assert w.shape == (10, 10) and w[0].tolist() == list(b"abcdefghij")
    w = data.token_windows(text, tok, 11, bos=True)
    assert w.shape == (10, 11)
    assert (w[:, 0] == tok.bos_token_id).all() and w[:, 1:].flatten().tolist() == list(text.encode())


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((torch.arange(10), None, 1), {}, "length must be an int ≥ 2; got 1"),
        ((torch.arange(10), None, 4), {"stride": 0}, "stride must be a positive int; got 0"),
        ((torch.arange(10), None, 4), {"max_tokens": 0}, "max_tokens must be a positive int"),
        ((torch.arange(10), None, 16), {}, "10 tokens do not fill one window of 16"),
        ((torch.arange(100), None, 16), {"max_tokens": 8}, "8 tokens .after the max_tokens budget"),
        ((torch.zeros(2, 8, dtype=torch.long), None, 4), {}, "1-D sequence of integer token ids; got a 2-D"),
        ((torch.zeros(8), None, 4), {}, "got a 1-D torch.float32"),
        (("text", None, 2), {}, "tokenizer is needed"),
        ((torch.arange(10), object(), 4), {"bos": True}, "bos_token_id"),
    ],
)
def test_windows_bad_input(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        data.token_windows(*args, **kwargs)


def test_calibration_windows(data_dir, gpt2_tokenizer):
    _require(data_dir, data.WIKITEXT2_VALID_FILE)
    w = data.calibration_windows(gpt2_tokenizer, 8, 128, seed=3)
    assert w.shape == (8, 128) and w.dtype == torch.int64
    assert torch.equal(w, data.calibration_windows(gpt2_tokenizer, 8, 128, seed=3))
    assert not torch.equal(w, data.calibration_windows(gpt2_tokenizer, 8, 128, seed=4))
    # Each window is a contiguous stretch of the tokenized calibration text.
    text = gpt2_tokenizer.decode(w[0])
    assert text in data.wikitext2_calibration_text()


def test_calibration_windows_fallback_warns(no_assets):
    with pytest.warns(UserWarning, match="NOT WikiText-2"):
        w = data.calibration_windows(ByteTokenizer(), 4, 32, bos=True)
    assert w.shape == (4, 32) and (w[:, 0] == 1).all()
    with pytest.raises(ValueError, match="n must be a positive int"):
        data.calibration_windows(ByteTokenizer(), 0, 32)


def test_a_text_file_that_is_not_utf8_is_named_in_the_error(tmp_path):
    path = tmp_path / "binary.bin"
    path.write_bytes(b"ok so far \xcc\xff\x00 then garbage")
    with pytest.raises(ValueError, match=r"binary\.bin is not UTF-8 text \(byte 0xcc at offset 10\)"):
        data.text_source(path)
