"""The ``jobkit`` command line (also ``python -m jobkit``)."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jobkit", description="Run and inspect jobkit job queues."
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    demo = commands.add_parser("demo", help="a short tour of jobkit at work")
    demo.set_defaults(handler=_demo)
    return parser


def _demo(args: argparse.Namespace) -> int:
    from jobkit._demo import main as demo_main

    return demo_main()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``jobkit`` console script."""
    args = build_parser().parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
