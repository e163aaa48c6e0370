"""The ``jobkit`` command line (also ``python -m jobkit``); see :mod:`jobkit.cli`."""

import sys

from .cli.main import main

__all__ = ["main"]

if __name__ == "__main__":
    sys.exit(main())
