"""The ``lfads-tools`` command line tool."""

from __future__ import annotations

import argparse
import sys

from lds.errors import LfadsToolsError


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lfads-tools",
        description="Find, load, inspect and reuse trained latent-dynamics models.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="run the main workflow end to end on synthetic data",
        description="Run the main workflow end to end on synthetic data.",
        epilog="example: lfads-tools demo --out /tmp/lfads-demo",
    )
    demo.add_argument("--out", default=None, help="folder for the files it writes (default: a new temporary folder)")
    demo.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    demo.set_defaults(handler=_run_demo)
    return parser


def _run_demo(args) -> int:
    from .demo import run_demo

    run_demo(out=args.out, seed=args.seed)
    return 0


def main(argv=None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except LfadsToolsError as exc:
        print(f"lfads-tools {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
