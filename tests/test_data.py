"""tcompress.data: the text sources (WikiText-2 file, calibration cleanup, TinyStories, the labelled offline
fallback), the calibration/evaluation split of one source, token windows (shapes, no overlap, the dropped tail, the
token budget, BOS, bad input) and calibration windows (disjoint, seeded, spread over the whole text)."""

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


class PositionTokenizer:
    """Token id = the character's position in the text: a window's ids are the text positions it covers."""

    bos_token_id = -1

    def __call__(self, text: str, add_special_tokens: bool = True, **kwargs) -> dict:
        return {"input_ids": list(range(len(text)))}


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


def test_calibration_windows_share_no_token_position():
    source = data.TextSource("t", "x" * 1000, "a 1000-character stub")
    w = data.calibration_windows(PositionTokenizer(), 10, 64, seed=0, source=source)
    assert w.shape == (10, 64)
    starts = w[:, 0]
    assert torch.equal(w, starts[:, None] + torch.arange(64))  # each window is one contiguous stretch
    assert len(set(w.flatten().tolist())) == w.numel()  # no position is in two windows
    assert (starts % 64 == 0).all() and int(w.max()) < 15 * 64  # whole slots of the 15 the text holds
    # The slots are drawn from the whole text, not its first ten; every slot is reached over a few seeds.
    used = {
        int(s) // 64
        for seed in range(10)
        for s in data.calibration_windows(PositionTokenizer(), 10, 64, seed=seed, source=source)[:, 0]
    }
    assert used == set(range(15))
    # Asking for every slot tiles the text up to the dropped tail.
    every = data.calibration_windows(PositionTokenizer(), 15, 64, seed=1, source=source)
    assert sorted(every.flatten().tolist()) == list(range(15 * 64))


def test_calibration_windows_seed_and_bos():
    source = data.TextSource("t", "x" * 1000, "a 1000-character stub")
    tok = PositionTokenizer()
    w = data.calibration_windows(tok, 8, 33, seed=5, bos=True, source=source)
    assert torch.equal(w, data.calibration_windows(tok, 8, 33, seed=5, bos=True, source=source))
    assert not torch.equal(w, data.calibration_windows(tok, 8, 33, seed=6, bos=True, source=source))
    assert w.shape == (8, 33) and (w[:, 0] == tok.bos_token_id).all()
    text_ids = w[:, 1:]
    assert (text_ids[:, 0] % 32 == 0).all() and len(set(text_ids.flatten().tolist())) == 8 * 32


def test_calibration_windows_too_short_says_how_many_fit():
    source = data.TextSource("t", "x" * 100, "a 100-character stub")
    with pytest.raises(
        ValueError,
        match=r"a 100-character stub: its 100 tokens hold 3 non-overlapping windows of 32 text tokens; asked for 4",
    ):
        data.calibration_windows(PositionTokenizer(), 4, 32, source=source)
    with pytest.raises(ValueError, match=r"hold 0 non-overlapping windows of 128 text tokens; asked for 1"):
        data.calibration_windows(PositionTokenizer(), 1, 129, bos=True, source=source)
    assert data.calibration_windows(PositionTokenizer(), 3, 32, source=source).shape == (3, 32)


# -- the calibration/evaluation split ----------------------------------------------------------------------------


def test_split_source_documents_are_disjoint_halves(data_dir):
    _require(data_dir, data.TINYSTORIES_FILE)
    source = data.text_source("tinystories")
    calib, evaluation = data.split_source(source)
    assert calib.documents == source.documents[:5] and evaluation.documents == source.documents[5:]
    assert not set(calib.documents) & set(evaluation.documents)
    assert calib.text == "\n\n".join(calib.documents) and evaluation.text == "\n\n".join(evaluation.documents)
    assert calib.label == source.label + ", documents 1–5 of 10 (calibration)"
    assert evaluation.label == source.label + ", documents 6–10 of 10 (evaluation)"
    assert calib.name == evaluation.name == "tinystories"
    assert (calib, evaluation) == data.split_source(data.text_source("tinystories"))  # deterministic


def test_split_source_of_odd_and_too_few_documents():
    calib, evaluation = data.split_source(data.TextSource("d", "a\n\nb\n\nc", "three", ("a", "b", "c")))
    assert (calib.documents, evaluation.documents) == (("a",), ("b", "c"))
    assert evaluation.label == "three, documents 2–3 of 3 (evaluation)"
    with pytest.raises(ValueError, match="one story: a calibration/evaluation split needs at least 2 documents; got 1"):
        data.split_source(data.TextSource("d", "a", "one story", ("a",)))


def test_split_source_text_cuts_at_a_line_end():
    text = "".join(f"line {i:03d} of the text\n" for i in range(100))  # 100 lines of 21 characters
    calib, evaluation = data.split_source(data.TextSource("f", text, "text file f.txt"))
    assert calib.text + evaluation.text == text
    assert calib.text.endswith("\n") and evaluation.text.startswith("line ")
    assert calib.text.count("\n") == 21  # the line holding character 420 (20%) ends the calibration part
    assert calib.label == f"text file f.txt, characters 1–{len(calib.text):,} of 2,100 (calibration)"
    assert evaluation.label == f"text file f.txt, characters {len(calib.text) + 1:,}–2,100 of 2,100 (evaluation)"
    assert calib.documents == evaluation.documents == ()
    one_line = data.TextSource("f", "word " * 100, "one line")
    calib, evaluation = data.split_source(one_line)
    assert calib.text + evaluation.text == one_line.text and len(calib.text) == 105 and calib.text.endswith(" ")
    with pytest.raises(ValueError, match=r"tiny: 4 characters cannot be split .*pass a longer text"):
        data.split_source(data.TextSource("f", "abcd", "tiny"))


def test_split_of_wikitext2_test_as_a_file_holds_the_standard_budget(data_dir, gpt2_tokenizer):
    """A large running text split 20/80 still gives the standard budget its 64 x 256 calibration windows and
    16,384 evaluation tokens."""
    _require(data_dir, data.WIKITEXT2_TEST_FILE)
    calib, evaluation = data.split_source(data.text_source(data_dir / data.WIKITEXT2_TEST_FILE))
    assert data.calibration_windows(gpt2_tokenizer, 64, 256, source=calib).shape == (64, 256)
    assert data.token_windows(evaluation.text, gpt2_tokenizer, 1024, max_tokens=16_384).numel() == 16_384


def test_a_text_file_that_is_not_utf8_is_named_in_the_error(tmp_path):
    path = tmp_path / "binary.bin"
    path.write_bytes(b"ok so far \xcc\xff\x00 then garbage")
    with pytest.raises(ValueError, match=r"binary\.bin is not UTF-8 text \(byte 0xcc at offset 10\)"):
        data.text_source(path)
