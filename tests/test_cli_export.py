"""``tcompress export``: quantize (optionally rotate) and write compressed-tensors or GGUF from the command line, with
the transformers reload check; and the flag combinations it refuses."""

from __future__ import annotations

import re

import pytest
from tcompress import cli


@pytest.fixture(autouse=True)
def _needs_assets(stories260k_dir):
    """Every test here exports the real stories260K (skips without the shared assets)."""


def _check_line(text: str) -> tuple[float, float, float]:
    m = re.search(r"max \|logit difference\| (\S+) \(logit scale (\S+)\), top-1 agreement (\S+)", text)
    assert m, text
    return float(m.group(1)), float(m.group(2)), float(m.group(3))


def test_export_compressed_tensors_rotated_w8(tmp_path, capsys):
    pytest.importorskip("compressed_tensors")
    out = tmp_path / "ct"
    args = ["export", str(out), "--format", "compressed-tensors", "--model", "stories260k", "--bits", "8"]
    assert cli.main([*args, "--group-size", "none", "--rotate", "--check"]) == 0
    text = capsys.readouterr().out
    assert "exported stories260k (rotate, quantize)" in text and (out / "config.json").is_file()
    diff, scale, agree = _check_line(text)
    # The checkpoint holds exactly tcompress's dequantized weights: only the summation order differs.
    assert diff <= 1e-5 * scale and agree == 1.0


def test_export_gguf_q8_0(tmp_path, capsys):
    path = tmp_path / "stories.gguf"
    assert cli.main(["export", str(path), "--format", "gguf", "--model", "stories260k", "--check"]) == 0
    diff, scale, agree = _check_line(capsys.readouterr().out)
    # Q8_0 re-rounds the float weights in blocks of 32: about 1% of the logit scale on stories260K.
    assert path.is_file() and diff <= 0.04 * scale and agree >= 0.9


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--format", "gguf", "--bits", "4"], "--bits applies to --format compressed-tensors"),
        (["--format", "compressed-tensors", "--qtype", "Q4_0"], "--qtype applies to --format gguf"),
    ],
)
def test_export_refuses_mixed_flags(tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit) as exc:
        cli.main(["export", str(tmp_path / "x"), "--model", "stories260k", *extra])
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_export_of_an_unquantized_model_to_compressed_tensors_is_refused(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["export", str(tmp_path / "x"), "--format", "compressed-tensors", "--model", "stories260k"])
    assert exc.value.code == 2 and "has no QuantLinear" in capsys.readouterr().err
