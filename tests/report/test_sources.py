"""The report's evaluation and calibration texts (``runner._sources``): WikiText-2 test / validation by default; any
other text split into disjoint calibration and evaluation parts with labels that say which is which; an explicit
``--calibration`` used as given, even when it is the evaluation text."""

from __future__ import annotations

import sys

import pytest
from tcompress import data
from tcompress.report.runner import _sources


def test_tinystories_calibrates_on_other_stories_than_it_evaluates(data_dir):
    if not (data_dir / data.TINYSTORIES_FILE).is_file():
        pytest.skip(f"asset missing: {data_dir / data.TINYSTORIES_FILE}")
    evaluation, calibration = _sources("tinystories", None)
    assert evaluation.text != calibration.text  # what results.json's overlaps_evaluation compares
    assert not set(evaluation.documents) & set(calibration.documents)
    assert len(evaluation.documents) == len(calibration.documents) == 5
    assert evaluation.label.endswith("documents 6–10 of 10 (evaluation)")
    assert calibration.label.endswith("documents 1–5 of 10 (calibration)")
    assert (evaluation, calibration) == _sources("tinystories", None)


def test_a_file_is_split_and_an_explicit_calibration_is_used_as_given(tmp_path):
    path = tmp_path / "notes.txt"
    text = "".join(f"note {i} says something\n" for i in range(50))
    path.write_text(text, encoding="utf-8")
    evaluation, calibration = _sources(str(path), None)
    assert calibration.text + evaluation.text == text and calibration.text and evaluation.text
    assert calibration.label.endswith("(calibration)") and evaluation.label.endswith("(evaluation)")
    assert path.name in calibration.label and path.name in evaluation.label
    other = tmp_path / "other.txt"
    other.write_text("other text\n" * 10, encoding="utf-8")
    evaluation, calibration = _sources(str(path), str(other))
    assert evaluation.text == text and calibration.text == other.read_text()  # no split when told what calibrates
    # The same text named twice is the user's choice: kept, and results.json reports the overlap.
    evaluation, calibration = _sources(str(path), str(path))
    assert evaluation.text == calibration.text == text


def test_default_is_wikitext2_test_and_validation(data_dir):
    for relative in (data.WIKITEXT2_TEST_FILE, data.WIKITEXT2_VALID_FILE):
        if not (data_dir / relative).is_file():
            pytest.skip(f"asset missing: {data_dir / relative}")
    evaluation, calibration = _sources(None, None)
    assert (evaluation.name, calibration.name) == ("wikitext2", "wikitext2-calibration")
    assert evaluation.text == data.wikitext2_test_text()
    assert calibration.text == data.wikitext2_calibration_text()


def test_the_offline_fallback_is_split_when_it_must_serve_both(monkeypatch, tmp_path):
    monkeypatch.setenv("TCOMPRESS_DATA_DIR", str(tmp_path))  # no assets
    monkeypatch.setitem(sys.modules, "datasets", None)  # and no datasets package to try the network with
    whole = data.fallback_text()
    for text in (None, "fallback"):
        evaluation, calibration = _sources(text, None)
        assert calibration.text + evaluation.text == whole and evaluation.text != calibration.text
        assert "NOT WikiText-2" in evaluation.label and evaluation.label.endswith("(evaluation)")
        assert "NOT WikiText-2" in calibration.label and calibration.label.endswith("(calibration)")
