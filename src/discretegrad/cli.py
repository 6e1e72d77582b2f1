"""The ``discretegrad`` command: a thin layer over the Python API.

Bad input prints one message to stderr and exits with status 2 (no traceback).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import NoReturn

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2
        self.exit(2, f"discretegrad: error: {message}\n")


def _cmd_demo(args: argparse.Namespace) -> int:
    from discretegrad.demo import run_demo

    run_demo(args.out, draws=args.draws, seed=args.seed)
    print(f"wrote tables and plots under {args.out}/")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="discretegrad", description="Gradient estimators for discrete random variables.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    d = sub.add_parser("demo", help="exact-gradient diagnostics of every registered estimator")
    d.add_argument("--out", default="results/demo", help="output directory (default: results/demo)")
    d.add_argument("--draws", type=int, default=1000, help="gradient draws per estimator (default: 1000)")
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=_cmd_demo)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (ValueError, TypeError, OSError) as e:
        print(f"discretegrad: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
