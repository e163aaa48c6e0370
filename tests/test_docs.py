"""Every public name is documented with an example, and every example runs."""

from __future__ import annotations

import doctest
import enum
import importlib
import inspect
import pkgutil
import re
import sys
import types
import typing
from pathlib import Path

import pytest

import jobkit

PACKAGE_DIR = Path(jobkit.__file__).parent
# Modules whose examples need a notebook kernel or are entry points.
SKIP_MODULES = {"jobkit.__main__", "jobkit._demo"}


def _modules() -> list[types.ModuleType]:
    names = ["jobkit"] + [
        info.name
        for info in pkgutil.walk_packages([str(PACKAGE_DIR)], prefix="jobkit.")
        if info.name not in SKIP_MODULES
    ]
    return [importlib.import_module(name) for name in names]


def _defines(module: types.ModuleType, name: str) -> bool:
    # The package re-labels classes as ``jobkit.Name``, so ``__module__`` and
    # ``inspect.getsourcefile`` point at the package: read the source instead.
    try:
        source = inspect.getsource(module)
    except (OSError, TypeError):
        return False
    pattern = rf"^(?:class|def|async def) {re.escape(name)}\b"
    return re.search(pattern, source, re.MULTILINE) is not None


def _doctests() -> list[doctest.DocTest]:
    # Keyed by qualified name: the classes the package re-labels have no
    # source file or line number doctest can find, so those cannot be the key.
    found: dict[str, doctest.DocTest] = {}
    module_level = doctest.DocTestFinder(recurse=False)
    members = doctest.DocTestFinder(recurse=True)
    for module in _modules():
        globs = vars(module)
        tests = module_level.find(module, module.__name__, globs=globs)
        for name, obj in globs.items():
            if (inspect.isclass(obj) or inspect.isfunction(obj)) and _defines(
                module, name
            ):
                qualified = f"{module.__name__}.{name}"
                tests += members.find(obj, qualified, module=False, globs=globs)
        for test in tests:
            if test.examples:
                found.setdefault(test.name, test)
    return list(found.values())


DOCTESTS = _doctests()


@pytest.mark.parametrize("test", DOCTESTS, ids=[t.name for t in DOCTESTS])
def test_docstring_example_runs(test: doctest.DocTest) -> None:
    """The example in this docstring produces the output it shows."""
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    result = runner.run(test, out=lambda s: None)
    # Chart examples open figures; past 20 open, matplotlib warns, failing others.
    if (pyplot := sys.modules.get("matplotlib.pyplot")) is not None:
        pyplot.close("all")
    if result.failed:
        report: list[str] = []
        runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
        runner.run(test, out=report.append)
        pytest.fail("".join(report), pytrace=False)


def _public_names() -> list[tuple[str, object]]:
    return [
        (name, getattr(jobkit, name))
        for name in sorted(dir(jobkit))
        if not name.startswith("_")
        and not isinstance(getattr(jobkit, name), types.ModuleType)
    ]


PUBLIC = _public_names()


@pytest.mark.parametrize("name,obj", PUBLIC, ids=[n for n, _ in PUBLIC])
def test_public_name_has_summary_and_example(name: str, obj: object) -> None:
    """Each public name opens its docstring with a sentence and shows an example."""
    if typing.get_origin(obj) is not None:
        pytest.skip(f"{name} is a type alias")
    if not (inspect.isclass(obj) or callable(obj)):
        pytest.skip(f"{name} is a constant")
    doc = inspect.getdoc(obj) or ""
    assert doc, f"jobkit.{name} has no docstring"
    first = doc.split("\n\n")[0].strip()
    assert first.endswith("."), f"jobkit.{name}: summary is not a sentence: {first!r}"
    if isinstance(obj, type) and issubclass(obj, enum.Enum):
        return
    assert ">>>" in doc or "Example" in doc, f"jobkit.{name} has no example"


@pytest.mark.parametrize("name,obj", PUBLIC, ids=[n for n, _ in PUBLIC])
def test_public_name_reports_the_package(name: str, obj: object) -> None:
    """Tracebacks and reprs name ``jobkit.X``, not the private module."""
    module = getattr(obj, "__module__", None)
    if module is not None and (inspect.isclass(obj) or inspect.isfunction(obj)):
        assert module == "jobkit", f"jobkit.{name} says it lives in {module}"
