"""``tcompress report`` end to end: the real stories260K and tiny random GPT-2 / Mistral checkpoints (with the
stories260K tokenizer, whose 512-token vocabulary fits them) through every step, failure isolation, rerunning one
step into the same folder, re-rendering, and the command line."""

from __future__ import annotations

import json

import pytest
from tcompress import cli
from tcompress.report import STEPS, render, run_report
from tcompress.report import runner as report_runner

PLOTS = {"linearity", "geometry", "compression", "quantization", "easy_tokens", "early_exit"}


def _quiet(_line: str) -> None:
    pass


@pytest.fixture(scope="module")
def stories_report(tmp_path_factory):
    """One quick report of the real stories260K on TinyStories (about 10 s), shared by the tests below."""
    import os

    if not os.environ.get("TCOMPRESS_DATA_DIR"):
        pytest.skip("shared assets not found: set TCOMPRESS_DATA_DIR to the ../shared folder")
    out = tmp_path_factory.mktemp("stories-report")
    results = run_report("stories260k", text="tinystories", out=out, log=_quiet, command="test")
    return out, results


def test_every_step_runs_on_stories260k(stories_report):
    out, results = stories_report
    assert list(results["steps"]) == list(STEPS)
    failed = {k: v.get("error") for k, v in results["steps"].items() if v["status"] != "ok"}
    assert not failed
    assert json.loads((out / "results.json").read_text())["steps"].keys() == results["steps"].keys()
    assert set(results["plots"]) == PLOTS and all((out / name).is_file() for name in results["plots"].values())


def test_results_record_identities_and_numbers(stories_report):
    _, results = stories_report
    assert results["model"]["num_blocks"] == 5 and results["model"]["hidden_size"] == 64
    assert len(results["model"]["embedding_sha256_16"]) == 16
    assert results["data"]["evaluation"]["name"] == "tinystories"
    assert results["data"]["calibration"]["overlaps_evaluation"] is True
    assert {"tcompress", "torch", "transformers", "python", "machine"} <= set(results["environment"])
    baseline = results["steps"]["baseline"]["result"]["ppl"]
    # The rotation is exact: rotated fp32 equals the baseline (up to float rounding).
    rows = results["steps"]["quantization"]["result"]["rows"]
    rotated_fp32 = next(r for r in rows if r["setting"] == "fp32" and r["rotated"])
    assert rotated_fp32["ppl"] == pytest.approx(baseline, rel=1e-3)
    # stories260K's 172-wide MLP cannot take groups of 64: recorded as n/a, not an error.
    g64 = [r for r in rows if r["setting"] == "W4 g64"]
    assert g64 and all(r["ppl"] is None and "does not divide" in r["note"] for r in g64)
    curve = results["steps"]["linearity"]["result"]["curve"]["blocks"]
    assert [b["layer"] for b in curve] == list(range(5))
    assert all(-1 < b["r2"]["no_first"]["output"]["pooled"] <= 1 for b in curve)


def test_findings_have_verdicts_and_the_report_states_the_rule(stories_report):
    out, results = stories_report
    keys = [f["key"] for f in results["findings"]]
    assert keys == ["F1", "F2", "F3", "F4", "F5", "headline"]
    assert all(f["verdict"] != "not measured" for f in results["findings"])
    text = (out / "report.md").read_text()
    assert "**Rule.**" in text
    for f in results["findings"]:
        assert f"{f['key']}: {f['title']} — {f['verdict']}" in text
    for name in results["plots"].values():
        assert f"]({name})" in text


def test_render_rewrites_report_from_results(stories_report, tmp_path):
    out, results = stories_report
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "results.json").write_text((out / "results.json").read_text())
    report = render(copy)
    assert report.read_text() == (out / "report.md").read_text()
    assert all((copy / name).is_file() for name in results["plots"].values())


def test_render_of_a_folder_without_results_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="results.json does not exist"):
        render(tmp_path)


def test_a_failing_step_is_recorded_and_the_others_kept(stories_report, monkeypatch, tmp_path):
    out, _ = stories_report

    def broken(ctx):
        raise RuntimeError("deliberately broken step")

    folder = tmp_path / "rerun"
    folder.mkdir()
    (folder / "results.json").write_text((out / "results.json").read_text())
    monkeypatch.setitem(report_runner.STEPS, "wall", broken)
    results = run_report("stories260k", text="tinystories", out=folder, only=["wall", "baseline"], log=_quiet)
    assert results["steps"]["wall"]["status"] == "failed"
    assert "deliberately broken step" in results["steps"]["wall"]["error"]
    assert "Traceback" in results["steps"]["wall"]["traceback"]
    # The steps not rerun come from the earlier run in the same folder; the one rerun is fresh.
    assert results["steps"]["geometry"]["status"] == "ok" and results["steps"]["baseline"]["status"] == "ok"
    f3 = next(f for f in results["findings"] if f["key"] == "F3")
    assert f3["verdict"] == "not measured"
    text = (folder / "report.md").read_text()
    assert "**failed**: RuntimeError: deliberately broken step" in text


def test_other_data_does_not_reuse_earlier_steps(stories_report, tmp_path):
    out, _ = stories_report
    folder = tmp_path / "other"
    folder.mkdir()
    (folder / "results.json").write_text((out / "results.json").read_text())
    results = run_report("stories260k", text="fallback", out=folder, only=["baseline"], log=_quiet)
    assert list(results["steps"]) == ["baseline"]


@pytest.mark.parametrize("family", ["gpt2", "mistral"])
def test_tiny_random_checkpoints_run_every_step(family, stories260k_dir, tmp_path):
    """The GPT-2 (LayerNorm, Conv1D, learned positions) and Mistral code paths of every step, on tiny random models
    saved as ordinary checkpoints. Their numbers mean nothing; every step must run and every finding get judged."""
    from model_factories import tiny_gpt2, tiny_mistral
    from transformers import AutoTokenizer

    model = tiny_gpt2() if family == "gpt2" else tiny_mistral()
    checkpoint = tmp_path / family
    model.save_pretrained(checkpoint)
    AutoTokenizer.from_pretrained(stories260k_dir).save_pretrained(checkpoint)
    results = run_report(str(checkpoint), text="tinystories", out=tmp_path / "out", log=_quiet)
    failed = {k: v.get("error") for k, v in results["steps"].items() if v["status"] != "ok"}
    assert not failed
    assert results["model"]["family"] == family


def test_unknown_step_and_budget_are_refused_before_loading():
    with pytest.raises(ValueError, match="unknown step.*'sepctral'.*expected some of baseline"):
        run_report("no-such-model", only=["sepctral"])
    with pytest.raises(ValueError, match="budget must be one of quick, standard, full; got 'huge'"):
        run_report("no-such-model", budget="huge")


def test_cuda_without_a_device_is_refused(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="device 'cuda' was asked for but torch.cuda.is_available\\(\\) is False"):
        run_report("no-such-model", device="cuda")


def test_cli_report_only_baseline(stories260k_dir, tmp_path, capsys):
    code = cli.main(["report", "stories260k", "--text", "tinystories", "--only", "baseline", "--out", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr()
    assert "baseline" in out.out + out.err and (tmp_path / "report.md").is_file()


def test_cli_rejects_an_unknown_step(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["report", "--only", "bogus"])
    assert exc.value.code == 2 and "invalid choice: 'bogus'" in capsys.readouterr().err


def test_cli_render(stories_report, tmp_path, capsys):
    out, _ = stories_report
    (tmp_path / "results.json").write_text((out / "results.json").read_text())
    assert cli.main(["report", "--render", str(tmp_path)]) == 0
    assert (tmp_path / "report.md").is_file()
