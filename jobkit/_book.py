"""Execute the book's notebooks and render them into ``chapters/``.

Used by the test suite (every notebook must run top to bottom in a fresh
kernel) and by ``nox -s chapters``. Run as ``python -m jobkit._book render``.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
CHAPTERS = ROOT / "chapters"


def notebook_paths() -> list[Path]:
    """Return the book's notebooks in reading order."""
    return sorted(NOTEBOOKS.glob("[0-9][0-9]-*.ipynb"))


def execute(path: Path, *, timeout: int = 300) -> Any:
    """Run the notebook at ``path`` in a fresh kernel and return it with outputs."""
    import nbformat
    from nbclient import NotebookClient
    from traitlets.config import Config

    nb = nbformat.read(path, as_version=4)  # type: ignore[no-untyped-call]
    with tempfile.TemporaryDirectory(prefix="jobkit-kernel-") as sockets:
        config = Config()
        # ipc sockets start the kernel faster than tcp and need no free port;
        # an absolute path keeps client and kernel (which runs in the
        # notebook's folder) pointing at the same socket files.
        config.KernelManager.transport = "ipc"
        config.KernelManager.ip = str(Path(sockets) / "kernel")
        client = NotebookClient(
            nb,
            config=config,
            kernel_name="python3",
            timeout=timeout,
            resources={"metadata": {"path": str(path.parent)}},
        )
        client.execute()
    return nb


def title_of(nb: Any, fallback: str) -> str:
    """Return the notebook's first Markdown heading."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            match = re.search(r"^#\s+(.+)$", cell.source, re.MULTILINE)
            if match:
                return match.group(1).strip()
    return fallback


def render(paths: list[Path] | None = None) -> list[Path]:
    """Execute each notebook and write it as Markdown with figures into chapters/."""
    from nbconvert import MarkdownExporter

    CHAPTERS.mkdir(exist_ok=True)
    written = []
    index = ["# jobkit: the book", "", "Rendered, executed chapters.", ""]
    for path in paths or notebook_paths():
        nb = execute(path)
        stem = path.stem
        exporter = MarkdownExporter()  # type: ignore[no-untyped-call]
        body, resources = exporter.from_notebook_node(
            nb, resources={"output_files_dir": f"{stem}_files"}
        )
        figures = CHAPTERS / f"{stem}_files"
        if figures.exists():
            # Only the figures the notebook draws: pictures kept beside them
            # (the dashboard's screenshots) come from scripts of their own.
            for old in figures.glob("output_*"):
                old.unlink()
        for name, data in resources.get("outputs", {}).items():
            target = CHAPTERS / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        out = CHAPTERS / f"{stem}.md"
        out.write_text(body, encoding="utf-8")
        written.append(out)
        index.append(f"- [{title_of(nb, stem)}]({stem}.md)")
    if paths is None:
        (CHAPTERS / "README.md").write_text("\n".join(index) + "\n", encoding="utf-8")
    return written


def main(argv: list[str]) -> int:
    if not argv or argv[0] != "render":
        print("usage: python -m jobkit._book render [NOTEBOOK ...]", file=sys.stderr)
        return 2
    chosen = [Path(a).resolve() for a in argv[1:]] or None
    for out in render(chosen):
        print(f"wrote {out.relative_to(ROOT)}")
    print(f"chapters are in {CHAPTERS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
