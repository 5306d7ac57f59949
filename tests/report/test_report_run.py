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
    # Calibration on stories 1–5, evaluation on 6–10: nothing is judged on the text it was fitted on. The 10 stories
    # hold fewer disjoint calibration windows than the quick budget asks: capped and recorded.
    calibration = results["data"]["calibration"]
    assert calibration["overlaps_evaluation"] is False and "(calibration)" in calibration["label"]
    assert calibration["windows"][0] < calibration["windows_asked"] == 32
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
    assert all(-1 < b["r2"][p]["output"]["pooled"] <= 1 for b in curve for p in ("no_outliers", "no_first", "all"))


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


def test_the_readme_tables_come_from_a_run(stories_report, capsys):
    """experiments/readme_tables.py prints every table of the README from a report folder."""
    import runpy
    from pathlib import Path

    out, results = stories_report
    script = Path(__file__).resolve().parents[2] / "experiments" / "readme_tables.py"
    tables = runpy.run_path(str(script))
    tables["main"]([str(out)])
    printed = capsys.readouterr().out
    for section in tables["SECTIONS"]:
        assert f"### {section} — stories260K: `test`" in printed
    assert "step missing" not in printed
    baseline = results["steps"]["baseline"]["result"]["ppl"]
    assert f"| stories260K | fp32 | {baseline:.4f} |" in printed
    assert all(f"| {f['key']} | {f['title']} |" in printed for f in results["findings"])


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


# -- dtype, TF32 and budget overrides -------------------------------------------------------------------------------


def test_with_overrides_replaces_sizes_and_keeps_the_name():
    import dataclasses

    from tcompress.report.budgets import budget, with_overrides

    quick = budget("quick")
    changed = with_overrides(quick, eval_tokens=None, calib_windows=8, spectral_ratios=[0.5], substitution_ranks=[None])
    assert changed.name == "quick" and changed.eval_tokens is None and changed.calib_windows == 8
    assert changed.spectral_ratios == (0.5,) and changed.substitution_ranks == (None,)  # lists stored as tuples
    restored = dataclasses.replace(
        changed,
        eval_tokens=quick.eval_tokens,
        calib_windows=quick.calib_windows,
        spectral_ratios=quick.spectral_ratios,
        substitution_ranks=quick.substitution_ranks,
    )
    assert restored == quick  # nothing else changed
    assert with_overrides(quick) == quick


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"eval_token": 10}, "unknown budget override(s) eval_token; expected some of eval_tokens, calib_windows"),
        ({"name": "huge"}, "unknown budget override(s) name"),
        ({"eval_tokens": 0}, "eval_tokens must be a positive int or None (the whole text); got 0"),
        ({"eval_tokens": "all"}, "eval_tokens must be a positive int or None (the whole text); got 'all'"),
        ({"calib_windows": 1}, "calib_windows must be an int ≥ 2; got 1"),
        ({"calib_length": 2.5}, "calib_length must be an int ≥ 2; got 2.5"),
        ({"geometry_windows": True}, "geometry_windows must be an int ≥ 2; got True"),
        ({"speed_tokens": -1}, "speed_tokens must be an int ≥ 0; got -1"),
        ({"spectral_ratios": (0.5, 1.5)}, "spectral_ratios must be a non-empty sequence of numbers in (0, 1]; got"),
        ({"spectral_ratios": ()}, "spectral_ratios must be a non-empty sequence of numbers in (0, 1]; got ()"),
        ({"exit_taus": (0.0,)}, "exit_taus must be a non-empty sequence of positive numbers; got (0.0,)"),
        ({"quant_configs": ("W3",)}, "quant_configs must be a non-empty sequence of names out of W8, W8A8"),
        ({"spectral_methods": "plain"}, "spectral_methods must be a non-empty sequence of names out of plain"),
        ({"substitution_int8": "yes"}, "substitution_int8 must be True or False; got 'yes'"),
        ({"wall_rotations": (0,)}, "wall_rotations must be a non-empty sequence of True/False; got (0,)"),
        ({"multi_block_counts": (2, 0)}, "multi_block_counts must be a non-empty sequence of ints ≥ 1; got (2, 0)"),
    ],
)
def test_with_overrides_names_what_is_wrong(overrides, message):
    import re

    from tcompress.report.budgets import budget, with_overrides

    with pytest.raises(ValueError, match=re.escape(message)):
        with_overrides(budget("quick"), **overrides)


def test_run_report_refuses_bad_dtype_and_overrides_before_loading():
    with pytest.raises(ValueError, match=r"report: dtype must be one of float32, .* got 'fp8'"):
        run_report("no-such-model", dtype="fp8")
    with pytest.raises(ValueError, match="eval_tokens must be a positive int, None or 'all' .*; got 'most'"):
        run_report("no-such-model", eval_tokens="most")
    with pytest.raises(ValueError, match="budget override calib_windows must be an int ≥ 2; got 1"):
        run_report("no-such-model", calib_windows=1)
    with pytest.raises(ValueError, match="calib_windows given both as an argument and in overrides, differently"):
        run_report("no-such-model", calib_windows=4, overrides={"calib_windows": 8})
    with pytest.raises(ValueError, match="unknown budget override"):
        run_report("no-such-model", overrides={"windows": 8})
    with pytest.raises(ValueError, match="tf32 must be True or False; got 'no'"):
        run_report("no-such-model", tf32="no")


def test_default_output_folder_names_dtype_and_overrides():
    import torch

    assert str(report_runner._default_out("smollm2-135m", "quick", torch.float32, {})).endswith("smollm2-135m-quick")
    assert str(report_runner._default_out("smollm2-135m", "full", torch.bfloat16, {})).endswith(
        "smollm2-135m-full-bfloat16"
    )
    assert str(report_runner._default_out("a/b", "quick", torch.float32, {"eval_tokens": 8})).endswith(
        "a--b-quick-custom"
    )


def test_tf32_is_allowed_only_inside_and_restored():
    import torch

    before = (torch.backends.cuda.matmul.allow_tf32, torch.get_float32_matmul_precision())
    with report_runner._tf32(True):
        assert torch.backends.cuda.matmul.allow_tf32 and torch.get_float32_matmul_precision() == "high"
    assert (torch.backends.cuda.matmul.allow_tf32, torch.get_float32_matmul_precision()) == before
    with pytest.raises(RuntimeError), report_runner._tf32(True):
        raise RuntimeError("a failing report")
    assert (torch.backends.cuda.matmul.allow_tf32, torch.get_float32_matmul_precision()) == before
    with report_runner._tf32(False):
        assert (torch.backends.cuda.matmul.allow_tf32, torch.get_float32_matmul_precision()) == before


@pytest.fixture(scope="module")
def bf16_report(tmp_path_factory, stories260k_dir):
    """A bf16 stories260K report with smaller sizes: baseline and linearity only (a few seconds)."""
    out = tmp_path_factory.mktemp("bf16-report")
    results = run_report(
        "stories260k",
        text="tinystories",
        out=out,
        only=["baseline", "linearity"],
        dtype="bf16",
        eval_tokens=1024,
        calib_windows=8,
        calib_length=64,
        log=_quiet,
        command="test",
    )
    return out, results


def test_bf16_report_records_dtype_precision_and_overrides(bf16_report):
    out, results = bf16_report
    assert all(entry["status"] == "ok" for entry in results["steps"].values())
    assert results["model"]["dtype"] == "bfloat16"
    assert results["precision"] == {"dtype": "bfloat16", "tf32": False, "float32_matmul_precision": "highest"}
    assert results["overrides"] == {"eval_tokens": 1024, "calib_windows": 8, "calib_length": 64}
    assert results["budget"]["name"] == "quick" and results["budget"]["calib_windows"] == 8
    assert results["data"]["calibration"]["windows"] == [8, 64]
    assert results["data"]["evaluation"]["tokens"] <= 1024
    # bf16 rounding costs stories260K a little perplexity, not a lot (fp32: 3.1 to 3.4 on these texts)
    assert 2.5 < results["steps"]["baseline"]["result"]["ppl"] < 4.5
    assert json.loads((out / "results.json").read_text())["overrides"] == results["overrides"]


def test_reruns_reuse_steps_only_with_the_same_dtype_and_overrides(bf16_report, tmp_path):
    out, _ = bf16_report
    sizes = dict(eval_tokens=1024, calib_windows=8, calib_length=64)
    same = tmp_path / "same"
    same.mkdir()
    (same / "results.json").write_text((out / "results.json").read_text())
    results = run_report(
        "stories260k", text="tinystories", out=same, only=["baseline"], dtype="bfloat16", log=_quiet, **sizes
    )
    assert list(results["steps"]) == ["baseline", "linearity"]  # linearity kept from the earlier run
    for name, changed in (
        ("fp32", dict(sizes, dtype="float32")),
        ("sizes", dict(sizes, eval_tokens=512, dtype="bf16")),
    ):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "results.json").write_text((out / "results.json").read_text())
        results = run_report("stories260k", text="tinystories", out=folder, only=["baseline"], log=_quiet, **changed)
        assert list(results["steps"]) == ["baseline"], name


def test_tf32_is_on_while_a_cuda_report_runs_and_restored_after(monkeypatch, stories260k_dir, tmp_path):
    """On CPU the setting changes nothing, so the run pretends to be on CUDA and a step records what it saw."""
    import torch

    seen = {}
    real_baseline = report_runner.STEPS["baseline"]

    def recording_baseline(ctx):
        seen["precision"] = torch.get_float32_matmul_precision()
        seen["allow_tf32"] = torch.backends.cuda.matmul.allow_tf32
        return real_baseline(ctx)

    before = torch.get_float32_matmul_precision()
    monkeypatch.setattr(report_runner, "_uses_cuda", lambda device, device_map: True)
    monkeypatch.setitem(report_runner.STEPS, "baseline", recording_baseline)
    results = run_report(
        "stories260k", text="tinystories", out=tmp_path, only=["baseline"], calib_windows=4, calib_length=32, log=_quiet
    )
    assert seen == {"precision": "high", "allow_tf32": True}
    assert results["precision"]["tf32"] is True and results["precision"]["float32_matmul_precision"] == "high"
    assert torch.get_float32_matmul_precision() == before
    no_tf32 = run_report(
        "stories260k", text="tinystories", out=tmp_path / "strict", only=["baseline"], tf32=False, log=_quiet
    )
    assert no_tf32["precision"]["tf32"] is False and seen["precision"] == before
