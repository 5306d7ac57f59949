"""Early-exit experiments (issue 6, finding 5): easy-token curves (logit lens vs trained heads), KL sensitivity,
threshold sweep, and real decoding speed of EarlyExitLM against the plain model loop.

    python experiments/early_exit_experiments.py --model stories260k --out runs/early_exit_stories260k
    python experiments/early_exit_experiments.py --model smollm2-135m --out runs/early_exit_smollm2 \
        --head-depths 8,10,12,15,18,21,24,27 --check-layers 12,18 --train-steps 150

Data: stories260K trains its heads on TinyStories stories 1-6 and is measured on stories 7-10 (the shared file holds
ten); SmolLM2 trains on WikiText-2 validation windows and is measured on WikiText-2 test. Writes ``results.json`` and
the trained heads into ``--out`` and prints the README tables.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import tcompress
import torch
from tcompress.analysis.tokens import kl_sensitivity, summarize, token_stats
from tcompress.data import calibration_windows, tinystories_texts, token_windows, wikitext2_test_text
from tcompress.early_exit.policy import threshold_sweep
from tcompress.recipes.exit_heads import build_exit_heads, head_parameter_report, save_exit_heads, train_exit_heads
from tcompress.report.steps_exit import decoding_speed, first_windows


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x]


def _data(name: str, tokenizer, args) -> tuple[torch.Tensor, torch.Tensor, str]:
    """(calibration windows, evaluation windows, label)."""
    if name == "stories260k":
        stories = tinystories_texts()
        calib = token_windows("\n".join(stories[:6]), tokenizer, args.length, bos=True)
        evaluation = token_windows("\n".join(stories[6:]), tokenizer, args.length, bos=True)
        return calib, evaluation[: args.eval_windows], "TinyStories valid-first10: stories 1-6 train, 7-10 measure"
    calib = calibration_windows(tokenizer, args.calib_windows, args.length, seed=0)
    evaluation = token_windows(
        wikitext2_test_text(), tokenizer, args.length, max_tokens=args.length * args.eval_windows
    )
    return calib, evaluation, "WikiText-2 validation (train) / test (measure)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="stories260k")
    parser.add_argument("--out", required=True)
    parser.add_argument("--length", type=int, default=128, help="window length (tokens)")
    parser.add_argument("--calib-windows", type=int, default=64)
    parser.add_argument("--eval-windows", type=int, default=8)
    parser.add_argument("--head-depths", default="", help="comma list; default every depth")
    parser.add_argument("--rank", type=int, default=None, help="low-rank translators (default full)")
    parser.add_argument("--train-steps", type=int, default=300)
    parser.add_argument("--tokens-per-step", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--taus", default="0.01,0.05,0.1,0.25,0.5,1")
    parser.add_argument("--sensitivity-tau", type=float, default=0.1)
    parser.add_argument("--check-layers", default="", help="EarlyExitLM checkpoints; default the head depths")
    parser.add_argument("--thresholds", default="0.5,0.7,0.8,0.9,0.95,0.99")
    parser.add_argument("--sweep-windows", type=int, default=4)
    parser.add_argument("--speed-threshold", type=float, default=0.9)
    parser.add_argument("--speed-tokens", type=int, default=128)
    parser.add_argument("--speed-repeats", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    model, tokenizer = tcompress.load(args.model)
    model.eval()
    num_blocks = len(tcompress.models.architecture(model).blocks(model))
    depths = _ints(args.head_depths) or list(range(1, num_blocks))
    check_layers = _ints(args.check_layers) or depths
    calib, evaluation, data_label = _data(args.model.lower(), tokenizer, args)
    results: dict = {
        "model": args.model,
        "num_blocks": num_blocks,
        "data": data_label,
        "args": vars(args),
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads",
        "torch": torch.__version__,
        "calibration_windows": list(calib.shape),
        "evaluation_windows": list(evaluation.shape),
    }
    print(f"{args.model}: {num_blocks} blocks; heads at {depths}; {data_label}", flush=True)

    lens = build_exit_heads(model, depths, kind="lens")
    tuned = build_exit_heads(model, depths, kind="tuned", rank=args.rank)
    training = train_exit_heads(
        tuned, model, calib, steps=args.train_steps, tokens_per_step=args.tokens_per_step, lr=args.lr
    )
    results["training"] = training
    results["head_cost"] = head_parameter_report(tuned, model)
    save_exit_heads(tuned, out / "heads", extra={"training": training, "data": data_label})

    taus = tuple(_floats(args.taus))
    stats = {}
    for kind, heads in (("lens", lens), ("tuned", tuned)):
        stats[kind] = token_stats(model, heads, evaluation, progress=True)
        results[f"difficulty_{kind}"] = summarize(stats[kind], kind, taus).to_dict()
    results["sensitivity"] = {
        kind: kl_sensitivity(
            model,
            heads,
            evaluation[: args.sweep_windows],
            first_windows(stats[kind], args.sweep_windows),
            args.sensitivity_tau,
        ).to_dict()
        for kind, heads in (("lens", lens), ("tuned", tuned))
    }
    sweep_windows = evaluation[: args.sweep_windows]
    thresholds = _floats(args.thresholds)
    results["sweep"] = {
        kind: [
            r.to_dict() for r in threshold_sweep(model, heads, sweep_windows, thresholds, check_layers, progress=True)
        ]
        for kind, heads in (("lens", lens), ("tuned", tuned))
    }
    prompt = evaluation[:1, :16]
    results["speed"] = decoding_speed(
        model, tuned, prompt, args.speed_tokens, args.speed_repeats, args.speed_threshold, check_layers
    )
    results["seconds"] = time.time() - started
    (out / "results.json").write_text(json.dumps(results, indent=2))
    print_tables(results)


def print_tables(results: dict) -> None:
    """The README tables of one run."""
    num_blocks = results["num_blocks"]
    print(f"\n### {results['model']} ({num_blocks} blocks; {results['data']})\n")
    cost = results["head_cost"]
    print(
        f"Trained heads: {cost['head_parameters']:,} parameters ({100 * cost['fraction_of_model']:.2f}% of the model's "
        f"{cost['model_parameters']:,}), rank {cost['rank'] or 'full'}, {results['training']['steps']} steps x "
        f"{results['training']['tokens'] // results['training']['steps']} tokens, "
        f"{results['training']['seconds']:.0f} s\n"
    )
    for kind in ("lens", "tuned"):
        d = results[f"difficulty_{kind}"]
        taus = list(d["easy_fraction"])
        print(f"Easy-token fraction ({kind}, {d['tokens']} tokens; loose / strict), by depth:\n")
        print("| depth | KL mean | top-1 agree | " + " | ".join(f"τ={t}" for t in taus) + " |")
        print("|---" * (3 + len(taus)) + "|")
        for k in map(str, d["depths"]):
            cells = [f"{d['easy_fraction'][t][k]:.3f} / {d['easy_fraction_strict'][t][k]:.3f}" for t in taus]
            print(f"| {k} | {d['kl_mean'][k]:.3f} | {d['agreement'][k]:.3f} | " + " | ".join(cells) + " |")
        print("\nExit at or before 50% / 75% depth (strict; loose in brackets):\n")
        print("| τ | ≤50% | ≤75% |\n|---|---|---|")
        for t in taus:
            print(
                f"| {t} | {d['exit_by_50pct'][t]:.3f} ({d['exit_by_50pct_loose'][t]:.3f}) | "
                f"{d['exit_by_75pct'][t]:.3f} ({d['exit_by_75pct_loose'][t]:.3f}) |"
            )
        print()
    print("KL sensitivity (tokens judged easy at their first easy depth, blocks then skipped for real):\n")
    print(
        "| heads | τ | easy tokens | judged KL | actual KL (easy) | Δloss easy | actual KL (rest) | Δloss rest | "
        "ppl full → skipped | mean depth |"
    )
    print("|---" * 10 + "|")
    for kind, s in results["sensitivity"].items():
        print(
            f"| {kind} | {s['tau']} | {s['easy_tokens']}/{s['easy_tokens'] + s['other_tokens']} | "
            f"{s['predicted_kl_easy']:.4f} | {s['actual_kl_easy']:.4f} | {s['loss_change_easy']:+.4f} | "
            f"{s['actual_kl_other']:.4f} | {s['loss_change_other']:+.4f} | {s['ppl_full']:.3f} → "
            f"{s['ppl_skipped']:.3f} | {s['mean_depth']:.2f} |"
        )
    print(
        "\nThreshold sweep (teacher-forced, max_prob gate at check layers "
        f"{results['sweep']['tuned'][0]['check_layers']}):\n"
    )
    print("| heads | threshold | mean depth | depth fraction | ppl | Δppl | top-1 agreement | KL |")
    print("|---" * 8 + "|")
    for kind, rows in results["sweep"].items():
        for r in rows:
            delta = 100 * (r["ppl"] / r["ppl_full"] - 1)
            print(
                f"| {kind} | {r['threshold']} | {r['mean_depth']:.2f} | {r['depth_fraction']:.3f} | {r['ppl']:.3f} "
                f"| {delta:+.2f}% | {r['agreement']:.3f} | {r['kl_mean']:.4f} |"
            )
    s = results["speed"]
    tps = s["tokens_per_s"]
    print(
        f"\nDecoding speed (batch 1, greedy, {s['new_tokens']} new tokens, best of {s['repeats']} alternating runs; "
        f"threshold {s['threshold']}, checks at {s['check_layers']}):\n"
    )
    print(
        "| full model loop tok/s | EarlyExitLM tok/s | EarlyExitLM never-exit tok/s | speedup vs full loop | "
        "speedup vs never-exit | mean depth generated |"
    )
    print("|---|---|---|---|---|---|")
    print(
        f"| {tps['full_model_loop']:.1f} | {tps['early_exit']:.1f} | {tps['early_exit_never']:.1f} | "
        f"{s['speedup_vs_full_loop']:.2f}x | {s['speedup_vs_never_exit']:.2f}x | {s['mean_depth_generated']:.2f} |"
    )
    print(f"\nTotal {results['seconds']:.0f} s.")


if __name__ == "__main__":
    main()
