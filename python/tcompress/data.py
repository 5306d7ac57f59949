"""Text sources (WikiText-2, TinyStories, an offline fallback) and tokenized windows for evaluation and calibration.

Files are read from the shared assets folder ``$TCOMPRESS_DATA_DIR``:

- ``data/wikitext-2-raw/wiki.test.raw``: the standard perplexity text (287,644 GPT-2 tokens);
- ``data/wikitext-2/valid.txt``: calibration text (the tokenized release, its ``@-@`` style splits undone);
- ``data/tinystories/valid-first10.txt``: ten TinyStories validation stories separated by ``<|endoftext|>`` lines.

Every source carries a label saying where its text came from, so a report can never pass the offline fallback (Python's
own documentation, always available) off as WikiText-2. Where one text must both calibrate and evaluate,
:func:`split_source` cuts it into two disjoint, labelled parts; :func:`calibration_windows` never overlaps windows.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import torch

from ._files import display_path

WIKITEXT2_TEST_FILE = "data/wikitext-2-raw/wiki.test.raw"
WIKITEXT2_VALID_FILE = "data/wikitext-2/valid.txt"
TINYSTORIES_FILE = "data/tinystories/valid-first10.txt"
FALLBACK_LABEL = "offline fallback: Python pydoc_data topics (NOT WikiText-2)"

SOURCE_NAMES = ("wikitext2", "wikitext2-calibration", "tinystories", "fallback")

# The tokenized WikiText-2 release splits hyphens, thousands separators and decimal points into " @x@ ".
_WIKITEXT_DETOKENIZE = ((" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", "."))

TextOrIds = Union[str, Sequence[int], torch.Tensor]


@dataclass(frozen=True)
class TextSource:
    """A text and where it came from.

    Attributes:
        name: the source's name (``"wikitext2"``, ``"tinystories"``, ``"fallback"``, ... or a file path).
        text: the whole text, as one string.
        label: provenance for reports, e.g. ``"wikitext-2-raw test (file /x/wiki.test.raw)"``.
        documents: the separate documents of a source evaluated one by one (the TinyStories protocol); empty for a
            running text that is cut into windows.
    """

    name: str
    text: str
    label: str
    documents: tuple[str, ...] = field(default=(), repr=False)

    def __repr__(self) -> str:  # the text is megabytes long
        return f"TextSource(name={self.name!r}, label={self.label!r}, chars={len(self.text)})"


def data_dir() -> Path | None:
    """The shared assets folder from ``$TCOMPRESS_DATA_DIR``, or None when it is unset or not a directory."""
    value = os.environ.get("TCOMPRESS_DATA_DIR")
    if not value or not Path(value).is_dir():
        return None
    return Path(value)


def _asset(relative: str) -> Path | None:
    root = data_dir()
    if root is None or not (root / relative).is_file():
        return None
    return root / relative


def _missing(what: str, relative: str) -> FileNotFoundError:
    root = data_dir()
    where = f"{root / relative} does not exist" if root else "TCOMPRESS_DATA_DIR is not set to the shared assets folder"
    return FileNotFoundError(f"{what}: {where}")


def _wikitext2_test() -> TextSource:
    path = _asset(WIKITEXT2_TEST_FILE)
    if path is not None:
        # Universal newlines: a CRLF copy of the file reads as the LF original and tokenizes the same.
        text = path.read_text(encoding="utf-8")
        return TextSource("wikitext2", text, f"wikitext-2-raw test (file {display_path(path)})")
    try:
        import datasets
    except ImportError:
        raise _missing(
            "WikiText-2 raw test text (and the datasets package is not installed)", WIKITEXT2_TEST_FILE
        ) from None
    rows = datasets.load_dataset("wikitext", "wikitext-2-raw-v1", split="test")["text"]
    # Joined with "\n\n" as in the Hugging Face perplexity guide: the shared file has that layout (it starts
    # "\n\n = Robert Boulter = \n\n\n\n\n Robert", i.e. "", " = Robert Boulter = \n", "", ... so joined). Not checked
    # end to end here (no datasets package or network); the file route is the tested one (287,644 GPT-2 tokens).
    return TextSource("wikitext2", "\n\n".join(rows), "wikitext-2-raw test (datasets: wikitext/wikitext-2-raw-v1)")


def wikitext2_test_text() -> str:
    """The WikiText-2 raw test split: the shared file, else the ``datasets`` package (which may need a network).

    Raises:
        FileNotFoundError: neither the file nor the ``datasets`` package is available.
    """
    return _wikitext2_test().text


def wikitext2_calibration_text() -> str:
    """The WikiText-2 validation split with `` @-@ ``, `` @,@ ``, `` @.@ `` rejoined (``<unk>`` kept as is).

    Raises:
        FileNotFoundError: ``$TCOMPRESS_DATA_DIR/data/wikitext-2/valid.txt`` is missing.
    """
    path = _asset(WIKITEXT2_VALID_FILE)
    if path is None:
        raise _missing("WikiText-2 calibration text", WIKITEXT2_VALID_FILE)
    text = path.read_text(encoding="utf-8")
    for split, joined in _WIKITEXT_DETOKENIZE:
        text = text.replace(split, joined)
    return text


def tinystories_texts() -> list[str]:
    """The ten TinyStories validation stories, each stripped of surrounding whitespace.

    Raises:
        FileNotFoundError: ``$TCOMPRESS_DATA_DIR/data/tinystories/valid-first10.txt`` is missing.
    """
    path = _asset(TINYSTORIES_FILE)
    if path is None:
        raise _missing("TinyStories texts", TINYSTORIES_FILE)
    stories: list[str] = []
    current: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() == "<|endoftext|>":
            stories.append("\n".join(current).strip())
            current = []
        else:
            current.append(line)
    stories.append("\n".join(current).strip())
    return [story for story in stories if story]


def fallback_text() -> str:
    """Always-available English prose: the topics of Python's own documentation (``pydoc_data.topics``).

    About 465k characters (139k GPT-2 tokens). Not WikiText-2: perplexities on it are not comparable with
    published numbers; use it where the point is a relative change (compressed vs original) and no asset is present.
    """
    from pydoc_data.topics import topics

    return "\n\n".join(topics.values())


def text_source(name: str | os.PathLike) -> TextSource:
    """A labelled text source by name: ``"wikitext2"``, ``"wikitext2-calibration"``, ``"tinystories"``,
    ``"fallback"``, or the path of a UTF-8 text file.

    Raises:
        FileNotFoundError: the named source's asset is missing.
        ValueError: ``name`` is neither a known source nor an existing file, or the file is not UTF-8 text.
    """
    key = os.fspath(name)
    if key == "wikitext2":
        return _wikitext2_test()
    if key == "wikitext2-calibration":
        text = wikitext2_calibration_text()  # FileNotFoundError when the asset is missing (before any label)
        label = f"wikitext-2 validation, detokenized (file {display_path(_asset(WIKITEXT2_VALID_FILE))})"
        return TextSource(key, text, label)
    if key == "tinystories":
        stories = tinystories_texts()
        label = f"tinystories validation, first {len(stories)} stories (file {display_path(_asset(TINYSTORIES_FILE))})"
        return TextSource(key, "\n\n".join(stories), label, tuple(stories))
    if key == "fallback":
        return TextSource(key, fallback_text(), FALLBACK_LABEL)
    path = Path(key).expanduser()
    if path.is_file():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(
                f"text_source: {path} is not UTF-8 text (byte {exc.object[exc.start]:#04x} at offset {exc.start}); "
                "pass a UTF-8 text file"
            ) from None
        return TextSource(key, text, f"text file {display_path(path)}")
    raise ValueError(f"text_source: expected one of {', '.join(SOURCE_NAMES)} or an existing text file; got {key!r}")


def default_text_source() -> TextSource:
    """WikiText-2 raw test where it can be had (the shared file, else ``datasets``), else the offline fallback (its
    label says so)."""
    try:
        return _wikitext2_test()
    except FileNotFoundError:
        return text_source("fallback")
    except Exception as exc:  # noqa: BLE001 - datasets without a network fails in many ways; all mean "not here"
        warnings.warn(f"WikiText-2 through datasets failed ({exc}); using the {FALLBACK_LABEL}", stacklevel=2)
        return text_source("fallback")


def calibration_source() -> TextSource:
    """The calibration text: WikiText-2 validation where the file is present, else the offline fallback."""
    try:
        return text_source("wikitext2-calibration")
    except FileNotFoundError:
        return text_source("fallback")


# Shares of a text that calibrate when one text must serve both roles. Documents: the first half (the experiment
# scripts' stories 1-5 / 6-10 split, so their numbers compare); a running text: the first 20%, since evaluation wants
# most of it and calibration (64 x 256 tokens in the standard budget) needs little.
DOCUMENT_CALIBRATION_SHARE = 0.5
TEXT_CALIBRATION_SHARE = 0.2


def split_source(source: TextSource) -> tuple[TextSource, TextSource]:
    """(calibration, evaluation): two disjoint parts of one source, so fits and perplexities are not in-sample.

    A source with n documents gives its first ⌊:data:`DOCUMENT_CALIBRATION_SHARE` · n⌋ documents to calibration and
    the rest to evaluation, both kept as documents. A running text is cut just after the first line end at or after
    :data:`TEXT_CALIBRATION_SHARE` of its characters (after a space in a text without one); the part before
    calibrates. Names stay; labels say which part each is (documents or characters, 1-based and inclusive).
    Deterministic.

    Raises:
        ValueError: fewer than 2 documents, or a text too short to give both parts some non-blank text.
    """
    if source.documents:
        docs = source.documents
        if len(docs) < 2:
            raise ValueError(
                f"split_source: {source.label}: a calibration/evaluation split needs at least 2 documents; "
                f"got {len(docs)}"
            )
        k = int(len(docs) * DOCUMENT_CALIBRATION_SHARE)  # ≥ 1 for 2 or more documents

        def part(chosen: tuple[str, ...], first: int, last: int, role: str) -> TextSource:
            label = f"{source.label}, documents {first}–{last} of {len(docs)} ({role})"
            return TextSource(source.name, "\n\n".join(chosen), label, chosen)

        return part(docs[:k], 1, k, "calibration"), part(docs[k:], k + 1, len(docs), "evaluation")
    text = source.text
    point = int(len(text) * TEXT_CALIBRATION_SHARE)
    # A line end, else a space (a one-line file), else the character itself: words stay whole where they can.
    ends = [i for i in (text.find("\n", point), text.find(" ", point)) if i >= 0]
    cut = ends[0] + 1 if ends else point  # the line end or space stays with the calibration part
    calib, rest = text[:cut], text[cut:]
    if not calib.strip() or not rest.strip():
        raise ValueError(
            f"split_source: {source.label}: {len(text):,} characters cannot be split into a calibration part (the "
            f"first {TEXT_CALIBRATION_SHARE:.0%}, to a line end) and an evaluation part that both hold text; "
            "pass a longer text, or a separate calibration text"
        )
    n = len(text)
    return (
        TextSource(source.name, calib, f"{source.label}, characters 1–{cut:,} of {n:,} (calibration)"),
        TextSource(source.name, rest, f"{source.label}, characters {cut + 1:,}–{n:,} of {n:,} (evaluation)"),
    )


# ---------------------------------------------------------------------------------------------------------------
# Tokenized windows
# ---------------------------------------------------------------------------------------------------------------


def _token_ids(text_or_ids: TextOrIds, tokenizer: Any) -> torch.Tensor:
    if isinstance(text_or_ids, str):
        if tokenizer is None:
            raise ValueError("token_windows: a tokenizer is needed to tokenize text; got tokenizer=None")
        # No special tokens: the text is one long stream; BOS, where wanted, is placed per window.
        ids = tokenizer(text_or_ids, add_special_tokens=False, verbose=False)["input_ids"]
        return torch.tensor(ids, dtype=torch.long)
    ids = torch.as_tensor(text_or_ids)
    if ids.dim() != 1 or ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise ValueError(
            f"token_windows: expected a str or a 1-D sequence of integer token ids; "
            f"got a {ids.dim()}-D {ids.dtype} tensor"
        )
    return ids.to(torch.long)


def _bos_id(tokenizer: Any, who: str) -> int:
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        raise ValueError(f"{who}: bos=True needs a tokenizer with a bos_token_id; {type(tokenizer).__name__} has none")
    return int(bos)


def token_windows(
    text_or_ids: TextOrIds,
    tokenizer: Any,
    length: int,
    stride: int | None = None,
    *,
    max_tokens: int | None = None,
    bos: bool = False,
) -> torch.Tensor:
    """(num_windows, length) int64 windows cut from one tokenization of the whole text.

    The text is tokenized once (no special tokens), the first ``max_tokens`` tokens are kept, and windows start at
    0, stride, 2·stride, ...; the ragged tail that does not fill a whole window is dropped, so every window is full
    length and every token counts the same. With ``bos``, each window is BOS followed by ``length - 1`` text tokens
    (BOS is context, never a predicted target) and the default stride is ``length - 1``.

    Args:
        text_or_ids: the text, or its token ids already (then ``tokenizer`` is used only for BOS).
        tokenizer: a Hugging Face tokenizer.
        length: tokens per window (≥ 2: one to condition on, one to predict).
        stride: text tokens between window starts; the default makes the windows adjacent and non-overlapping.
            Smaller strides overlap (tokens are then counted once per window they are in).
        max_tokens: the token budget: at most this many text tokens are used.
        bos: put the tokenizer's BOS token first in each window.

    Raises:
        ValueError: a bad length/stride/budget, or too few tokens for one window.
    """
    if isinstance(length, bool) or not isinstance(length, int) or length < 2:
        raise ValueError(f"token_windows: length must be an int ≥ 2; got {length!r}")
    span = length - 1 if bos else length
    stride = span if stride is None else stride
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise ValueError(f"token_windows: stride must be a positive int; got {stride!r}")
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1):
        raise ValueError(f"token_windows: max_tokens must be a positive int or None; got {max_tokens!r}")
    ids = _token_ids(text_or_ids, tokenizer)
    if max_tokens is not None:
        ids = ids[:max_tokens]
    if ids.numel() < span:
        raise ValueError(
            f"token_windows: {ids.numel()} tokens{' (after the max_tokens budget)' if max_tokens else ''} "
            f"do not fill one window of {span} text tokens"
        )
    windows = ids.unfold(0, span, stride)
    if bos:
        first = torch.full((windows.shape[0], 1), _bos_id(tokenizer, "token_windows"), dtype=torch.long)
        windows = torch.cat((first, windows), dim=1)
    return windows.contiguous()


def calibration_windows(
    tokenizer: Any,
    n: int,
    length: int,
    seed: int = 0,
    *,
    bos: bool = False,
    source: TextSource | None = None,
    at_most: bool = False,
) -> torch.Tensor:
    """(n, length) int64 non-overlapping windows at seeded random places in the calibration text.

    The text is ``source``'s, by default :func:`calibration_source`'s: WikiText-2 validation, or the offline fallback
    with a warning (record ``calibration_source().label`` in a report). The tokenized text is cut into
    ⌊tokens / span⌋ disjoint slots (span = ``length``, or ``length - 1`` with ``bos``) and ``n`` distinct slots are
    taken in the order of a permutation drawn from a CPU generator seeded with ``seed``: no token position is in two
    windows (a held-out window shares no text with a fit window), and the windows come from the whole text, not
    just its start. With ``bos``, each window is BOS + ``length - 1`` tokens. With ``at_most``, a text that holds
    fewer than ``n`` disjoint windows gives all it holds (the caller reads how many from the shape) instead of an error.

    Raises:
        ValueError: n < 1, length < 2, or a calibration text that holds fewer than ``n`` disjoint windows (with
            ``at_most``: none).
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"calibration_windows: n must be a positive int; got {n!r}")
    if isinstance(length, bool) or not isinstance(length, int) or length < 2:
        raise ValueError(f"calibration_windows: length must be an int ≥ 2; got {length!r}")
    source = calibration_source() if source is None else source
    if source.name == "fallback":
        warnings.warn(f"calibration_windows: no WikiText-2 calibration text; using the {source.label}", stacklevel=2)
    ids = _token_ids(source.text, tokenizer)
    span = length - 1 if bos else length
    slots = ids.numel() // span
    if at_most and slots >= 1:
        n = min(n, slots)
    if slots < n:
        raise ValueError(
            f"calibration_windows: {source.label}: its {ids.numel():,} tokens hold {slots} non-overlapping windows of "
            f"{span} text tokens; asked for {n}. Use a longer calibration text, or fewer or shorter windows"
        )
    gen = torch.Generator().manual_seed(int(seed))
    starts = torch.randperm(slots, generator=gen)[:n] * span
    windows = ids[starts[:, None] + torch.arange(span)]
    if bos:
        first = torch.full((n, 1), _bos_id(tokenizer, "calibration_windows"), dtype=torch.long)
        windows = torch.cat((first, windows), dim=1)
    return windows
