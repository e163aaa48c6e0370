"""Every chapter notebook runs in a fresh kernel, and the book index resolves."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from helpers import book as _book

from tests.helpers.stores import postgres_url

NOTEBOOKS = _book.notebook_paths()

# Chapters that run against a PostgreSQL server: like the store tests, they
# are left out with one line when none answers, and fail under $CI.
ON_POSTGRES = {"09-outgrowing-one-machine"}


@pytest.mark.slow
@pytest.mark.timeout(900)  # a chapter's simulations take minutes on a busy host
@pytest.mark.parametrize(
    "path",
    [
        pytest.param(p, marks=[pytest.mark.postgres] if p.stem in ON_POSTGRES else [])
        for p in NOTEBOOKS
    ],
    ids=[p.stem for p in NOTEBOOKS],
)
def test_notebook_executes(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The notebook runs without error in a fresh kernel."""
    if path.stem in ON_POSTGRES:
        # The kernel inherits the environment: the chapter reads its server here.
        monkeypatch.setenv("JOBKIT_BOOK_POSTGRES_URL", postgres_url())
    _book.execute(path)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_is_stored_without_outputs(path: Path) -> None:
    """Notebooks are stored without outputs; chapters/ holds executed copies."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [], f"{path.name} has outputs"
            assert cell["execution_count"] is None


def test_every_notebook_has_a_rendered_chapter() -> None:
    """Each notebook has its rendered chapter, and every link in the index resolves."""
    index = _book.CHAPTERS / "README.md"
    text = index.read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)]+)\)", text)
    assert sorted(links) == sorted(f"{p.stem}.md" for p in NOTEBOOKS)
    for link in links:
        chapter = _book.CHAPTERS / link
        assert chapter.exists(), link
        for figure in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", chapter.read_text()):
            assert (_book.CHAPTERS / figure).exists(), f"{link}: {figure}"
