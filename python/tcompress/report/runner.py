"""``tcompress report``: runs the paper's experiment suite on one model and writes results.json, PNG plots and
report.md into one folder.

Every step runs on its own: a step that raises is recorded as failed (error and traceback in results.json) and the
others go on. results.json is rewritten after every step, so an interrupted run keeps what it measured, and a
rerun into the same folder with the same model, dtype, data and budget keeps the steps it does not rerun (``only``).

Precision. The model runs in the dtype the user chose (``dtype``; float32 by default). On CUDA, float32 matmuls may
use TF32 while the report runs (``tf32``, on by default; the previous setting is restored afterwards, and what was in
force is recorded under ``"precision"`` in results.json). That is acceptable because TF32 only rounds the inputs of
the model's matmuls (10-bit mantissa, fp32 accumulation, relative error ~1e-3 per product, far below the effects the
report measures), while every statistic the findings rest on is accumulated and solved in float64 (block moments, fits,
eigen- and singular-value decompositions) and every log-probability is taken in float32 from upcast logits.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import torch

from .. import data, models
from .._files import atomic_file
from ..loading import load
from ..models import resolve_dtype
from .budgets import Budget, with_overrides
from .budgets import budget as get_budget
from .context import STEPS_USING_BLOCK_STATISTICS, ReportContext, source_windows
from .findings import judge
from .markdown import render_markdown
from .plots import draw_plots
from .steps_compression import baseline, quantization, spectral, wall
from .steps_exit import early_exit
from .steps_structure import geometry, linearity, substitution

#: The steps in run order; ``only`` / ``skip`` take these names.
STEPS: dict[str, Callable[[ReportContext], dict[str, Any]]] = {
    "baseline": baseline,
    "spectral": spectral,
    "quantization": quantization,
    "wall": wall,
    "linearity": linearity,
    "substitution": substitution,
    "geometry": geometry,
    "early-exit": early_exit,
}

DEFAULT_MODEL = "smollm2-135m"
RESULTS_FILE = "results.json"
REPORT_FILE = "report.md"
FORMAT = "tcompress-report"
FORMAT_VERSION = 1


def _select(only, skip) -> list[str]:
    for label, names in (("only", only), ("skip", skip)):
        unknown = [n for n in names or () if n not in STEPS]
        if unknown:
            raise ValueError(f"report: unknown step(s) in {label}: {unknown}; expected some of {', '.join(STEPS)}")
    chosen = [n for n in STEPS if not only or n in only]
    return [n for n in chosen if n not in (skip or ())]


def _environment() -> dict[str, Any]:
    import transformers

    from .. import __version__
    from ..info import info

    cpu = platform.processor() or platform.machine()
    return {
        "tcompress": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "isa": info().get("isa"),
        "machine": f"{cpu}, {os.cpu_count()} CPUs, {torch.get_num_threads()} torch threads, "
        f"{platform.system()} {platform.release()}"
        + (f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""),
    }


def _sources(text: str | None, calibration: str | None) -> tuple[data.TextSource, data.TextSource]:
    """(evaluation, calibration) text sources: WikiText-2 test / validation by default (the labelled offline
    fallback when absent). Any other evaluation text (TinyStories, a file, or the fallback when WikiText-2 validation
    is absent too) is split by :func:`tcompress.data.split_source` into a calibration part and a disjoint evaluation
    part, so nothing is judged on the text it was fitted on; an explicit ``calibration`` is used as given (also when
    it is the evaluation text: results.json then says ``overlaps_evaluation``)."""
    eval_source = data.default_text_source() if text in (None, "wikitext2") else data.text_source(text)
    if calibration is not None:
        return eval_source, data.text_source(calibration)
    if eval_source.name in ("wikitext2", "fallback"):
        calib_source = data.calibration_source()
        if calib_source.text != eval_source.text:
            return eval_source, calib_source
    calib_source, eval_source = data.split_source(eval_source)
    return eval_source, calib_source


def _budget_with_overrides(name: str, overrides: dict[str, Any]) -> tuple[Budget, dict[str, Any]]:
    """The named budget with the sizes in ``overrides`` replaced (``eval_tokens="all"``: the whole text), and the
    overrides as recorded in results.json (JSON values)."""
    if isinstance(overrides.get("eval_tokens"), str):
        if overrides["eval_tokens"].lower() != "all":
            raise ValueError(
                f"report: eval_tokens must be a positive int, None or 'all' (the whole text); "
                f"got {overrides['eval_tokens']!r}"
            )
        overrides = {**overrides, "eval_tokens": None}
    chosen = with_overrides(get_budget(name), **overrides)
    return chosen, {k: getattr(chosen, k) for k in overrides}


def _uses_cuda(device: str, device_map: str | dict | None) -> bool:
    if device_map is not None:
        return torch.cuda.is_available()  # accelerate puts what fits on the GPUs
    return str(device).startswith("cuda")


@contextlib.contextmanager
def _tf32(enabled: bool):
    """Allows TF32 for float32 matmuls and convolutions while the block runs (when ``enabled``); restores the
    previous settings afterwards, also on error."""
    saved = (
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.allow_tf32,
        torch.get_float32_matmul_precision(),
    )
    if enabled:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.set_float32_matmul_precision("high")
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[:2]
        torch.set_float32_matmul_precision(saved[2])


def _default_out(model: str, budget: str, dtype: torch.dtype, overrides: dict[str, Any]) -> Path:
    """tcompress-report/<model>-<budget>[-<dtype>][-custom]: runs in another dtype or with other sizes get their own
    folder, so they do not replace the plain budget's report."""
    slug = Path(model).stem.lower() if os.path.exists(model) else model.replace("/", "--").lower()
    suffix = "" if dtype == torch.float32 else "-" + str(dtype).replace("torch.", "")
    return Path("tcompress-report") / f"{slug}-{budget}{suffix}{'-custom' if overrides else ''}"


def _write_json(path: Path, results: dict[str, Any]) -> None:
    with atomic_file(path) as tmp:  # a reader (or a crash) never sees half a file
        tmp.write_text(json.dumps(results, indent=1, default=str) + "\n")


def _previous_steps(path: Path, results: dict[str, Any]) -> dict[str, Any]:
    """The steps of an earlier run in the same folder on the same model, dtype, TF32 setting, data and budget
    (overrides applied), else {}."""
    if not path.is_file():
        return {}
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    same = (
        old.get("format") == FORMAT
        and old.get("budget") == json.loads(json.dumps(results["budget"]))  # tuples read back as lists
        and old.get("model", {}).get("embedding_sha256_16") == results["model"]["embedding_sha256_16"]
        # A checkpoint stored in bf16 has the same embedding fingerprint in fp32 and bf16; the numbers differ.
        and old.get("model", {}).get("dtype") == results["model"]["dtype"]
        # Files from before the "precision" entry ran without TF32.
        and old.get("precision", {}).get("tf32", False) == results["precision"]["tf32"]
        and all(
            old.get("data", {}).get(k, {}).get("token_sha256_16") == results["data"][k]["token_sha256_16"]
            for k in ("evaluation", "calibration")
        )
    )
    return old.get("steps", {}) if same else {}


def render(directory: str | os.PathLike) -> Path:
    """Redraws the plots and rewrites report.md of a report folder from its results.json; returns report.md."""
    directory = Path(directory)
    path = directory / RESULTS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"report: {path} does not exist (run `tcompress report --out {directory}` first)")
    results = json.loads(path.read_text())
    results["findings"] = [f.to_dict() for f in judge(results)]
    results["plots"] = draw_plots(results, directory)
    _write_json(path, results)
    report = directory / REPORT_FILE
    report.write_text(render_markdown(results))
    return report


def run_report(
    model: str = DEFAULT_MODEL,
    *,
    text: str | None = None,
    calibration: str | None = None,
    budget: str = "quick",
    device: str = "cpu",
    device_map: str | None = None,
    dtype: str | torch.dtype = torch.float32,
    tf32: bool = True,
    out: str | os.PathLike | None = None,
    only: list[str] | None = None,
    skip: list[str] | None = None,
    log: Callable[[str], None] | None = None,
    command: str | None = None,
    eval_tokens: int | str | None = None,
    calib_windows: int | None = None,
    calib_length: int | None = None,
    geometry_layers: int | None = None,
    geometry_windows: int | None = None,
    exit_windows: int | None = None,
    exit_train_steps: int | None = None,
    speed_tokens: int | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Runs the report's steps on ``model`` and writes results.json, the plots and report.md into ``out``.

    Args:
        model: ``"smollm2-135m"`` (the embedded default), ``"stories260k"``, a local folder, a .gguf file or a hub id.
        text: evaluation text: ``"wikitext2"`` (default; the labelled offline fallback where absent),
            ``"tinystories"``, ``"fallback"`` or a text file.
        calibration: calibration text (default: WikiText-2 validation for WikiText-2; for another evaluation text,
            a disjoint part of it (:func:`tcompress.data.split_source`), the rest evaluating).
        budget: ``"quick"``, ``"standard"`` or ``"full"`` (:mod:`tcompress.report.budgets`).
        device: where the model runs (``"cpu"``, ``"cuda"``); ignored with ``device_map``.
        device_map: ``"auto"`` spreads a model too large for one device (accelerate).
        dtype: the model's parameter dtype: ``torch.float32`` (default), ``torch.bfloat16``, ``torch.float16`` or
            a name (``"bfloat16"``, ``"bf16"`` ...; :func:`tcompress.models.load.resolve_dtype`).
        tf32: on CUDA, let float32 matmuls use TF32 while the report runs (see the module docstring for why that
            is acceptable); ignored on CPU.
        out: the output folder (default ``tcompress-report/<model>-<budget>``, then ``-<dtype>`` unless float32
            and ``-custom`` with overrides).
        only, skip: step names (:data:`STEPS`) to run only / to leave out.
        log: prints a progress line (default: above the progress bar).
        command: the command line recorded in the report.
        eval_tokens: evaluation tokens instead of the budget's; ``"all"`` = the whole text. None keeps the budget's.
        calib_windows, calib_length: calibration windows (≥ 2: one is held out) and their length (capped by the
            model's evaluation length), instead of the budget's.
        geometry_layers, geometry_windows: blocks whose geometry is measured and calibration windows (≥ 2) it uses.
        exit_windows: evaluation windows of the token-difficulty curves; exit_train_steps: exit-head training
            steps; speed_tokens: tokens decoded for the speed measurement (0 skips it).
        overrides: any other :class:`~tcompress.report.budgets.Budget` field by name (see
            :func:`~tcompress.report.budgets.with_overrides`); a name given both here and as a keyword argument
            above must have the same value in both.

    Returns:
        The results dict that was written to results.json.

    Raises:
        ValueError: an unknown budget, step name, dtype or budget override (name or value), or an unsupported model;
        FileNotFoundError: a missing model or text (before any step runs). Errors inside a step are recorded, not
        raised.
    """
    plan = _select(only, skip)
    explicit = {
        "eval_tokens": eval_tokens,
        "calib_windows": calib_windows,
        "calib_length": calib_length,
        "geometry_layers": geometry_layers,
        "geometry_windows": geometry_windows,
        "exit_windows": exit_windows,
        "exit_train_steps": exit_train_steps,
        "speed_tokens": speed_tokens,
    }
    explicit = {k: v for k, v in explicit.items() if v is not None}
    clash = [k for k in explicit if k in (overrides or {}) and overrides[k] != explicit[k]]
    if clash:
        raise ValueError(f"report: {', '.join(clash)} given both as an argument and in overrides, differently")
    the_budget, recorded_overrides = _budget_with_overrides(budget, {**(overrides or {}), **explicit})
    the_dtype = resolve_dtype(dtype, who="report")
    if not isinstance(tf32, bool):
        raise ValueError(f"report: tf32 must be True or False; got {tf32!r}")
    if device_map is None and device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"report: device {device!r} was asked for but torch.cuda.is_available() is False")
    use_tf32 = tf32 and _uses_cuda(device, device_map)
    out_dir = Path(out) if out is not None else _default_out(model, budget, the_dtype, recorded_overrides)
    with _tf32(use_tf32):
        return _run(
            model,
            text=text,
            calibration=calibration,
            the_budget=the_budget,
            overrides=recorded_overrides,
            device=device,
            device_map=device_map,
            dtype=the_dtype,
            tf32=use_tf32,
            out_dir=out_dir,
            plan=plan,
            log=log,
            command=command,
        )


def _run(
    model: str,
    *,
    text: str | None,
    calibration: str | None,
    the_budget: Budget,
    overrides: dict[str, Any],
    device: str,
    device_map: str | None,
    dtype: torch.dtype,
    tf32: bool,
    out_dir: Path,
    plan: list[str],
    log: Callable[[str], None] | None,
    command: str | None,
) -> dict[str, Any]:
    """The body of :func:`run_report`, arguments checked, under the TF32 setting in force."""
    from tqdm.auto import tqdm

    budget = the_budget.name
    out_dir.mkdir(parents=True, exist_ok=True)
    say = log or tqdm.write
    started = time.perf_counter()
    torch.manual_seed(0)

    eval_source, calib_source = _sources(text, calibration)  # a missing text fails before the model loads
    say(f"loading {model} ...")
    source = models.resolve_model(model)
    lm, tokenizer = load(model, dtype=dtype, device=device, device_map=device_map)
    arch = models.architecture(lm)
    # A token budget smaller than the model's window evaluates one shorter window rather than failing.
    eval_length = min(arch.eval_length(lm), the_budget.eval_tokens or arch.eval_length(lm))
    eval_windows = source_windows(eval_source, tokenizer, eval_length, the_budget.eval_tokens)
    calib_length = min(the_budget.calib_length, arch.eval_length(lm))
    calib_bos = bool(calib_source.documents) and getattr(tokenizer, "bos_token_id", None) is not None
    calib_windows = data.calibration_windows(
        tokenizer, the_budget.calib_windows, calib_length, seed=0, bos=calib_bos, source=calib_source, at_most=True
    )
    if calib_windows.shape[0] < 2:
        raise ValueError(
            f"report: the calibration text ({calib_source.label}) holds {calib_windows.shape[0]} window of "
            f"{calib_length} tokens; the held-out split needs at least 2. Give a longer --calibration text or a "
            "shorter --calib-length"
        )
    ctx = ReportContext(lm, tokenizer, model, the_budget, eval_source, eval_windows, calib_source, calib_windows, say)
    results: dict[str, Any] = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "command": command or " ".join(["tcompress", "report", *sys.argv[2:]]),
        "started": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "environment": _environment(),
        "budget": the_budget.to_dict(),
        "overrides": overrides,
        "precision": {
            "dtype": str(dtype).replace("torch.", ""),
            "tf32": tf32,
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
        },
        **ctx.describe(),
    }
    results["model"]["source"] = source.label
    if calib_windows.shape[0] < the_budget.calib_windows:
        # A short text (the 10 TinyStories of the offline data) holds fewer disjoint windows than the budget asks.
        results["data"]["calibration"]["windows_asked"] = the_budget.calib_windows
        say(
            f"note: {calib_source.label} holds only {calib_windows.shape[0]} non-overlapping calibration windows of "
            f"{calib_length} tokens; the budget asked for {the_budget.calib_windows}. Every fit uses those "
            f"{calib_windows.shape[0]} (recorded in results.json)"
        )
    path = out_dir / RESULTS_FILE
    results["steps"] = {name: entry for name, entry in _previous_steps(path, results).items() if name not in plan}
    say(
        f"{model}: {ctx.num_blocks} blocks, d = {ctx.hidden_size}; evaluation {eval_source.label}, "
        f"{eval_windows.numel():,} tokens; calibration {calib_windows.numel():,} tokens; budget {budget}"
        + "".join(f", {k} = {v}" for k, v in overrides.items())
        + f"; {str(dtype).replace('torch.', '')}{' (TF32 matmuls)' if tf32 else ''}; steps {', '.join(plan)}"
    )
    bar = tqdm(plan, desc="report", unit="step", disable=None)  # None: no bar when the output is not a terminal
    for index, name in enumerate(bar):
        bar.set_postfix_str(name)
        say(f"[{name}]")
        step_start = time.perf_counter()
        try:
            entry = {"status": "ok", "result": STEPS[name](ctx)}
        except Exception as exc:  # noqa: BLE001 - a failed step is reported and does not lose the others
            entry = {"status": "failed", "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
            say(f"  FAILED: {entry['error']}")
        entry["seconds"] = time.perf_counter() - step_start
        ctx.release_replay()  # a later step records its own prefix, if any
        if not STEPS_USING_BLOCK_STATISTICS.intersection(plan[index + 1 :]):
            ctx.release_block_statistics()  # 32·d²·L bytes (17 GB for Mistral-7B) no later step needs
        results["steps"][name] = entry
        results["seconds"] = time.perf_counter() - started
        _write_json(path, results)
    results["steps"] = {name: results["steps"][name] for name in STEPS if name in results["steps"]}
    results["evaluations"] = ctx.evaluations
    results["seconds"] = time.perf_counter() - started
    results["findings"] = [f.to_dict() for f in judge(results)]
    results["plots"] = draw_plots(results, out_dir)
    _write_json(path, results)
    (out_dir / REPORT_FILE).write_text(render_markdown(results))
    _summary(results, out_dir, say)
    return results


def _summary(results: dict[str, Any], out_dir: Path, say: Callable[[str], None]) -> None:
    say("")
    say(f"tcompress report: {results['model']['name']}, budget {results['budget']['name']}, {results['seconds']:.0f} s")
    for name, entry in results["steps"].items():
        status = entry["status"] if entry["status"] == "ok" else f"FAILED ({entry['error']})"
        say(f"  {name:<13} {status:<8} {entry.get('seconds', 0):6.0f} s")
    say("findings:")
    for f in results["findings"]:
        say(f"  {f['key']:<8} {f['verdict']:<18} {f['title']}")
    say(f"written: {out_dir / REPORT_FILE}, {out_dir / RESULTS_FILE}, {len(results['plots'])} plots")
