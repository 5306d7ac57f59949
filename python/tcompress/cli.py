"""The ``tcompress`` command.

tcompress              info, then the kernel self-check (the default job)
tcompress info [--json]
tcompress selfcheck [--rows N]
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


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer; got {value}")
    return value


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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
