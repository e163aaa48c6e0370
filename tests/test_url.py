"""jobkit.store_from_url: one string names a store (PostgreSQL in test_postgres.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

import jobkit
from jobkit._url import sqlite_path


def test_paths_and_sqlite_urls_open_sqlite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plain path, sqlite:///relative and sqlite:////absolute name one file."""
    monkeypatch.chdir(tmp_path)
    for url, path in [
        ("a.db", "a.db"),
        ("sqlite:///a.db", "a.db"),
        (f"sqlite:///{tmp_path}/b.db", f"{tmp_path}/b.db"),
        ("sqlite:///with%20space.db", "with space.db"),
    ]:
        store = jobkit.store_from_url(url)
        assert isinstance(store, jobkit.SQLiteStore) and store.path == path
        trio.run(store.aclose)
    assert sqlite_path("postgresql://host/db") is None


def test_memory_opens_a_memory_store() -> None:
    """memory: is a fresh MemoryStore each time."""
    a, b = jobkit.store_from_url("memory:"), jobkit.store_from_url("memory:")
    assert isinstance(a, jobkit.MemoryStore) and a is not b


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("redis://localhost/0", "expected a file path, sqlite:///PATH"),
        ("sqlite://relative.db", "an SQLite URL is sqlite:///PATH"),
        ("sqlite:///", "an SQLite URL is sqlite:///PATH"),
        ("memory:x", "just 'memory:'"),
        ("", "expected a store URL"),
    ],
)
def test_anything_else_is_a_clear_value_error(url: str, match: str) -> None:
    """An unknown scheme or a malformed URL says what is expected."""
    with pytest.raises(ValueError, match=match):
        jobkit.store_from_url(url)


def test_create_false_refuses_a_missing_file(tmp_path: Path) -> None:
    """create=False: a missing SQLite file is a StoreError, and is not created."""
    missing = tmp_path / "missing.db"
    with pytest.raises(jobkit.StoreError, match="no database at"):
        jobkit.store_from_url(str(missing), create=False)
    assert not missing.exists()
