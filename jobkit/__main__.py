"""The ``jobkit`` command line (also ``python -m jobkit``)."""

from __future__ import annotations

import argparse
import sys
from typing import Any, NoReturn

from .cli import main as _cli


class _Parser(argparse.ArgumentParser):
    """Report a usage error in one line, as every other refusal is reported."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"jobkit: error: {message} (see '{self.prog} --help')\n")


class _Version(argparse.Action):
    """``--version``; the installed version is looked up only when asked for."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(
            option_strings, argparse.SUPPRESS, nargs=0, help="print the version"
        )

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        from importlib.metadata import version

        print(f"jobkit {version('jobkit')}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="jobkit",
        description="Run and inspect jobkit job queues.",
        epilog=(
            "Every command has --help. --db, --app and --json go before or after\n"
            f"the command; --db defaults to ${_cli.DB_ENV}, --app to ${_cli.APP_ENV}.\n"
            "Durations are seconds or a number with ms, s, m, h or d (90s, 10m, 7d)."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action=_Version)
    _cli.add_global_options(parser, top=True)
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
