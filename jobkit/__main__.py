"""The ``jobkit`` command line (also ``python -m jobkit``)."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn

from . import _cli


class _Parser(argparse.ArgumentParser):
    """Report a usage error in one line, as every other refusal is reported."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"jobkit: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="jobkit",
        description="Run and inspect jobkit job queues.",
        epilog=(
            "Every command has --help. Data commands take --db PATH (default: "
            f"${_cli.DB_ENV}) and --json."
        ),
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    demo = commands.add_parser("demo", help="a short tour of jobkit at work")
    demo.set_defaults(handler=_demo)
    for add_command in _cli.COMMANDS:
        add_command(commands)
    return parser


def _demo(args: argparse.Namespace) -> int:
    from jobkit._demo import main as demo_main

    return demo_main()


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``jobkit`` console script."""
    args = build_parser().parse_args(argv)
    return _cli.run(args)


if __name__ == "__main__":
    sys.exit(main())
