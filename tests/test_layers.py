"""Each layer of the package imports only the layers below it.

The layers and their order are drawn in ``jobkit/__init__.py``'s docstring;
``LAYERS`` below is the same list, lowest first. Every import counts: at the
top of a module, inside a function (a lazy import) or under
``TYPE_CHECKING``. A module that belongs to no layer fails the test too, so a
new module is placed on purpose.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import jobkit

PACKAGE_DIR = Path(jobkit.__file__).parent

# Lowest first; a module belongs to the layer whose longest prefix names it
# or a package above it ("jobkit" alone names only the package's face).
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("checks", ("jobkit._checks", "jobkit._html")),
    ("runtime", ("jobkit.runtime",)),
    ("core", ("jobkit.core",)),
    ("store", ("jobkit.store",)),
    ("observe", ("jobkit.observe", "jobkit.charts")),
    ("queue", ("jobkit.queue",)),
    ("worker", ("jobkit.worker",)),
    # The package's face: re-exports the layers up to the worker.
    ("api", ("jobkit",)),
    ("sim", ("jobkit.sim",)),
    (
        "apps",
        (
            "jobkit.cli",
            "jobkit.dashboard",
            "jobkit.examples",
            "jobkit.notebook",
            "jobkit.testing",
            "jobkit._demo",
            "jobkit.__main__",
        ),
    ),
)

# The examples show users' code: they import only what users may import.
PUBLIC_MODULES = (
    "jobkit",
    "jobkit.store",
    "jobkit.store.transitions",
    "jobkit.charts",
    "jobkit.sim",
    "jobkit.sim.charts",
    "jobkit.testing",
    "jobkit.testing.store_contract",
    "jobkit.testing.store_model",
    "jobkit.notebook",
)

# The core is pure: no event loop, no files, no network, no clock.
CORE_MAY_NOT_IMPORT = ("trio", "sqlite3", "os", "socket", "threading", "time")


def layer_of(module: str) -> int | None:
    """Return the rank of the layer ``module`` belongs to, or None."""
    matches = [
        (len(prefix), rank)
        for rank, (_, prefixes) in enumerate(LAYERS)
        for prefix in prefixes
        if module == prefix or (prefix != "jobkit" and module.startswith(prefix + "."))
    ]
    return max(matches)[1] if matches else None


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, root: Path) -> list[tuple[int, str]]:
    """Return ``(line, module)`` for every import in the file, lazy ones too."""
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    known = {module_name(p, root) for p in root.rglob("*.py")}
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, *([node.module] if node.module else [])])
            else:
                target = node.module or ""
            for alias in node.names:
                # ``from . import job`` imports the module ``job``, not a name.
                sub = f"{target}.{alias.name}"
                found.append((node.lineno, sub if sub in known else target))
    return found


def violations(root: Path) -> list[str]:
    """Every upward import and every module without a layer under ``root``."""
    found = []
    for path in sorted(root.rglob("*.py")):
        name = module_name(path, root)
        rank = layer_of(name)
        where = path.relative_to(root.parent)
        if rank is None:
            found.append(f"{where}: {name} belongs to no layer")
            continue
        for line, target in imports(path, root):
            top = target.partition(".")[0]
            if name.startswith("jobkit.core") and top in CORE_MAY_NOT_IMPORT:
                found.append(f"{where}:{line}: the core imports {target}")
            if top != "jobkit":
                continue
            if (
                name.startswith("jobkit.examples")
                and target not in PUBLIC_MODULES
                and not target.startswith("jobkit.examples")
            ):
                found.append(f"{where}:{line}: an example imports {target}")
            target_rank = layer_of(target)
            if target_rank is not None and target_rank > rank:
                found.append(
                    f"{where}:{line}: {LAYERS[rank][0]} ({name}) imports "
                    f"{LAYERS[target_rank][0]} ({target})"
                )
    return found


def test_every_layer_imports_only_layers_below_it() -> None:
    assert violations(PACKAGE_DIR) == []


def test_the_layers_drawn_in_the_docstring_are_the_ones_enforced() -> None:
    doc = jobkit.__doc__ or ""
    present = {module_name(path, PACKAGE_DIR) for path in PACKAGE_DIR.rglob("*.py")}
    for _, prefixes in LAYERS:
        for prefix in prefixes:
            if any(
                layer_of(name) is not None and name.startswith(prefix)
                for name in present
            ):
                assert prefix.rpartition(".")[2] in doc, f"the drawing lacks {prefix}"


# The command line's shared modules; every other module of jobkit.cli but
# ``main`` holds one group of commands, so that a command is one file.
CLI_SHARED = ("jobkit.cli.common", "jobkit.cli.options")


def cli_violations(root: Path) -> list[str]:
    """Every import of a command module by another module of the command line."""
    found = []
    for path in sorted((root / "cli").glob("*.py")):
        name = module_name(path, root)
        if name in ("jobkit.cli", "jobkit.cli.main"):
            continue
        for line, target in imports(path, root):
            if target.startswith("jobkit.cli") and target not in CLI_SHARED:
                found.append(f"{path.relative_to(root.parent)}:{line}: {target}")
    return found


def test_a_cli_command_module_imports_only_the_shared_ones() -> None:
    assert cli_violations(PACKAGE_DIR) == []


@pytest.mark.parametrize(
    ("path", "source", "expected"),
    [
        (
            "runtime/tasks.py",
            "from ..worker.worker import Worker\n",
            "runtime (jobkit.runtime.tasks) imports worker (jobkit.worker.worker)",
        ),
        (
            "store/memory.py",
            "def f():\n    from ..queue import facade\n",
            "store (jobkit.store.memory) imports queue (jobkit.queue.facade)",
        ),
        (
            "core/job.py",
            "import jobkit.observe.metrics\n",
            "core (jobkit.core.job) imports observe (jobkit.observe.metrics)",
        ),
        ("core/retry.py", "import time\n", "the core imports time"),
        ("observe/metrics.py", "import jobkit\n", "observe (jobkit.observe.metrics)"),
        ("new.py", "", "jobkit.new belongs to no layer"),
        ("examples/app.py", "from .._checks import seconds\n", "an example imports"),
    ],
)
def test_a_planted_violation_is_reported(
    tmp_path: Path, path: str, source: str, expected: str
) -> None:
    root = tmp_path / "jobkit"
    packages = (
        "",
        "runtime",
        "core",
        "store",
        "observe",
        "queue",
        "worker",
        "examples",
    )
    for package in packages:
        (root / package).mkdir(parents=True, exist_ok=True)
        (root / package / "__init__.py").write_text("")
    for module in ("worker/worker.py", "queue/facade.py", "observe/metrics.py"):
        (root / module).write_text("")
    (root / path).write_text(source)
    found = violations(root)
    assert len(found) == 1
    assert expected in found[0]
