"""The ``jobkit`` command line; the entry point is :mod:`jobkit.__main__`."""
