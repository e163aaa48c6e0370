"""The book's shape: exercises with worked answers, checked figures, clean pages.

The notebooks themselves run in tests/test_notebooks.py; that run also
executes every worked answer and every ``check`` cell, which asserts the
figures the prose around it quotes. The tests here look at the notebooks'
structure and at how a chapter is arranged for the page.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
from helpers import book as _book

NOTEBOOKS = _book.notebook_paths()
IDS = [p.stem for p in NOTEBOOKS]


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)  # type: ignore[no-untyped-call]


def _headings(nb: nbformat.NotebookNode) -> list[str]:
    return [
        line
        for cell in nb.cells
        if cell.cell_type == "markdown"
        for line in cell.source.splitlines()
        if line.startswith("## ")
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_chapter_ends_with_exercises_and_further_reading(path: Path) -> None:
    """Each chapter has an Exercises section and ends with Further reading.

    Only a clean-up cell (removing the chapter's temporary files) may follow.
    """
    nb = _read(path)
    headings = _headings(nb)
    assert "## Exercises" in headings, path.name
    assert headings[-1] == "## Further reading", path.name
    last = [c for c in nb.cells if c.cell_type == "markdown"][-1].source
    assert len(re.findall(r"^- .*https://", last, re.MULTILINE)) >= 3, path.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_every_exercise_has_a_worked_answer_and_an_explanation(path: Path) -> None:
    """3-5 exercises, each followed by a hidden answer cell and a folded explanation."""
    nb = _read(path)
    start = next(
        i for i, c in enumerate(nb.cells) if c.source.startswith("## Exercises")
    )
    asked = answered = explained = 0
    for cell in nb.cells[start:]:
        if cell.cell_type == "markdown":
            asked += len(re.findall(r"^\*\*\d+\. ", cell.source, re.MULTILINE))
            explained += cell.source.count("<summary>Explanation</summary>")
        elif _book.is_answer(cell):
            answered += 1
    assert 3 <= asked <= 5, f"{path.name}: {asked} exercises"
    assert answered == asked, f"{path.name}: {answered} answers for {asked}"
    assert explained == asked, f"{path.name}: {explained} explanations for {asked}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_quoted_figures_are_checked(path: Path) -> None:
    """Each chapter has at least one check cell asserting figures its prose quotes."""
    nb = _read(path)
    checks = [c for c in nb.cells if _book.is_check(c)]
    assert checks, path.name
    for cell in checks:
        assert "assert" in cell.source
        assert cell.metadata["jupyter"]["source_hidden"], path.name


def _page(cells: list[nbformat.NotebookNode]) -> str:
    from nbconvert import MarkdownExporter

    nb = nbformat.v4.new_notebook(cells=cells)  # type: ignore[no-untyped-call]
    body, _ = MarkdownExporter().from_notebook_node(_book.for_the_page(nb))  # type: ignore[no-untyped-call]
    return str(body)


def test_a_worked_answer_is_folded_and_a_check_is_left_out() -> None:
    """On the page, an answer cell sits in a closed <details>; a check cell is gone."""
    answer = nbformat.v4.new_code_cell("print(6 * 7)")  # type: ignore[no-untyped-call]
    answer.metadata["jupyter"] = {"source_hidden": True}
    answer.outputs = [nbformat.v4.new_output("stream", text="42\n")]  # type: ignore[no-untyped-call]
    check = nbformat.v4.new_code_cell("assert 6 * 7 == 42")  # type: ignore[no-untyped-call]
    check.metadata["jupyter"] = {"source_hidden": True}
    check.metadata["tags"] = ["check"]
    shown = nbformat.v4.new_code_cell("x = 1")  # type: ignore[no-untyped-call]
    page = _page([shown, answer, check])
    assert "x = 1" in page
    assert "assert 6 * 7" not in page
    opened = page.index("<details>")
    assert (
        opened
        < page.index("print(6 * 7)")
        < page.index("42")
        < page.index("</details>")
    )
    assert "<details open" not in page


def test_outputs_lose_machine_paths_and_long_tracebacks() -> None:
    """Kernel cell files, the checkout and temporary folders never reach the page."""
    jobkit_file = _book.ROOT / "jobkit" / "worker" / "worker.py"
    log = (
        "ERROR jobkit: failed\n"
        "Traceback (most recent call last):\n"
        f'  File "{jobkit_file}", line 894, in _execute\n'
        "    result = await self._invoke(task, job)\n"
        "             ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n"
        '  File "/tmp/ipykernel_30005/301272299.py", line 4, in send_email\n'
        "    raise ValueError('no')\n"
        "ValueError: no\n"
        "wrote /tmp/jobkit-ch08-abc123/jobs.db and "
        f"{_book.ROOT}/chapters/README.md\n"
    )
    cell = nbformat.v4.new_code_cell("")  # type: ignore[no-untyped-call]
    cell.outputs = [nbformat.v4.new_output("stream", text=log)]  # type: ignore[no-untyped-call]
    page = _page([cell])
    assert "ipykernel" not in page and "/tmp/" not in page
    assert str(_book.ROOT) not in page
    assert 'File "<cell>", line 4, in send_email' in page
    assert "... (1 frame in jobkit)" in page
    assert "wrote jobs.db and chapters/README.md" in page


def test_rendered_chapters_show_no_machine_paths() -> None:
    """The committed chapters name no kernel files, checkout or temporary folder."""
    for chapter in sorted(_book.CHAPTERS.glob("[0-9][0-9]-*.md")):
        text = chapter.read_text(encoding="utf-8")
        assert "ipykernel_" not in text, chapter.name
        assert not re.search(r"/tmp/jobkit-|/work/|/home/", text), chapter.name


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_code_cells_stay_short(path: Path) -> None:
    """No code cell has more than 15 lines, worked answers and checks included.

    Folding a cell does not shorten it: a worked answer is read when it is
    unfolded. Plumbing (plots, processes, log set-up) goes to helpers such
    as ``jobkit.notebook``; a long lesson becomes several cells with a
    sentence of prose between them.
    """
    nb = _read(path)
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            lines = len(cell.source.splitlines())
            assert lines <= 15, f"{path.name} cell {index}: {lines} lines"
