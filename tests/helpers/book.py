"""Execute the book's notebooks and render them into ``chapters/``.

Used by the test suite (every notebook must run top to bottom in a fresh
kernel) and by ``nox -s chapters``. Run as ``python tests/helpers/book.py render``;
``python tests/helpers/book.py time NOTEBOOK ...`` runs notebooks without
writing anything and prints how long each cell took, and their total.

Two kinds of cell get special treatment on the page:

- a code cell whose source is hidden (``"jupyter": {"source_hidden": true}``
  in its metadata, how JupyterLab folds a cell) is a worked answer: the
  chapter shows it, with its output, inside a folded ``<details>`` block;
- a code cell tagged ``check`` asserts that the figures the prose quotes
  are the ones the cells computed; the tests run it, the page leaves it out.

Outputs are cleaned of machine detail on the way: tracebacks are shortened
as :func:`jobkit.notebook.short_traceback` does, and the checkout's and the
temporary folders' paths are dropped.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
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


ANSWER_SUMMARY = "The experiment: code and output (click to unfold)"
# The notebooks keep their databases and logs in tempfile.mkdtemp folders.
_TEMP_DIR = re.compile(r"(?:/private)?/(?:tmp|var/folders/\S+?/T)/jobkit-[\w-]+/")


def is_answer(cell: Any) -> bool:
    """Whether ``cell`` is a worked answer: a code cell with its source hidden."""
    meta = cell.get("metadata", {})
    hidden = meta.get("jupyter", {}).get("source_hidden")
    return bool(cell.cell_type == "code" and hidden and not is_check(cell))


def is_check(cell: Any) -> bool:
    """Whether ``cell`` checks the prose's figures (tagged ``check``)."""
    return "check" in cell.get("metadata", {}).get("tags", [])


def clean_text(text: str) -> str:
    """Return output text without machine paths and with short tracebacks."""
    from jobkit.notebook import short_traceback

    text = short_traceback(text)
    text = _TEMP_DIR.sub("", text)
    return text.replace(str(ROOT) + "/", "")


def for_the_page(nb: Any) -> Any:
    """Return a copy of the executed ``nb`` arranged for reading on a page."""
    import copy

    import nbformat

    page = copy.deepcopy(nb)
    cells = []
    for cell in page.cells:
        if is_check(cell):
            continue
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                output["text"] = clean_text(output["text"])
            elif output.get("output_type") == "error":
                output["traceback"] = [clean_text(t) for t in output["traceback"]]
            elif "text/plain" in output.get("data", {}):
                output["data"]["text/plain"] = clean_text(output["data"]["text/plain"])
        if is_answer(cell):
            summary = f"<details>\n<summary>{ANSWER_SUMMARY}</summary>\n"
            cells.append(nbformat.v4.new_markdown_cell(summary))  # type: ignore[no-untyped-call]
            cells.append(cell)
            cells.append(nbformat.v4.new_markdown_cell("</details>"))  # type: ignore[no-untyped-call]
        else:
            cells.append(cell)
    page.cells = cells
    return page


def render(paths: list[Path] | None = None) -> list[Path]:
    """Execute each notebook and write it as Markdown with figures into chapters/."""
    from nbconvert import MarkdownExporter

    CHAPTERS.mkdir(exist_ok=True)
    written = []
    index = ["# jobkit: the book", "", "Rendered, executed chapters.", ""]
    for path in paths or notebook_paths():
        nb = for_the_page(execute(path))
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


def cell_seconds(nb: Any) -> list[tuple[int, float]]:
    """Return ``(index, seconds)`` for each code cell of the executed ``nb``.

    The kernel stamps when it took a cell up and when it replied; the
    difference is the cell's own time, without the kernel's start.
    """
    from datetime import datetime

    times = []
    for index, cell in enumerate(nb.cells):
        stamps = cell.get("metadata", {}).get("execution", {})
        if cell.cell_type == "code" and "shell.execute_reply" in stamps:
            began = datetime.fromisoformat(stamps["iopub.status.busy"])
            ended = datetime.fromisoformat(stamps["shell.execute_reply"])
            times.append((index, (ended - began).total_seconds()))
    return times


def report_times(path: Path) -> float:
    """Execute the notebook at ``path``, print each cell's time; return the total."""
    times = cell_seconds(execute(path))
    for index, seconds in times:
        print(f"{path.stem} cell {index:3}: {seconds:6.2f} s")
    total = sum(seconds for _, seconds in times)
    print(f"{path.stem}: {total:.1f} s in {len(times)} code cells")
    return total


def main(argv: list[str]) -> int:
    if argv[:1] == ["time"] and argv[1:]:
        for name in argv[1:]:
            report_times(Path(name).resolve())
        return 0
    if not argv or argv[0] != "render":
        print(
            "usage: python tests/helpers/book.py render [NOTEBOOK ...]\n"
            "       python tests/helpers/book.py time NOTEBOOK ...",
            file=sys.stderr,
        )
        return 2
    chosen = [Path(a).resolve() for a in argv[1:]] or None
    for out in render(chosen):
        print(f"wrote {out.relative_to(ROOT)}")
    print(f"chapters are in {CHAPTERS}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
