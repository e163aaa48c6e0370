"""Opening a store from one string: a file path or a URL."""

from __future__ import annotations

import os
import re
import urllib.parse
from typing import Any

from ._memory import MemoryStore
from ._sqlite import SQLiteStore
from ._store import Store, StoreError

__all__ = ["sqlite_path", "store_from_url"]

# A scheme of two letters or more: "C:\jobs.db" is a Windows path, not a URL.
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]+):")

_KINDS = "a file path, sqlite:///PATH, postgresql://... or memory:"


def sqlite_path(url: str | os.PathLike[str]) -> str | None:
    """Return the file an SQLite URL or plain path names; None for other URLs.

    ``sqlite:///jobs.db`` is ``jobs.db`` (relative), ``sqlite:////var/jobs.db``
    is ``/var/jobs.db``, as in SQLAlchemy.

    Example::

        >>> from jobkit._url import sqlite_path
        >>> sqlite_path("jobs.db"), sqlite_path("sqlite:////var/jobs.db")
        ('jobs.db', '/var/jobs.db')
        >>> print(sqlite_path("memory:"))
        None
    """
    text = os.fspath(url)
    match = _SCHEME.match(text)
    if match is None:
        return text
    if match.group(1).lower() != "sqlite":
        return None
    rest = text[match.end() :]
    if not rest.startswith("///") or len(rest) == 3:
        raise ValueError(
            f"an SQLite URL is sqlite:///PATH (relative) or sqlite:////PATH "
            f"(absolute), got {text!r}"
        )
    return urllib.parse.unquote(rest[3:])


def store_from_url(
    url: str | os.PathLike[str], *, create: bool = True, **options: Any
) -> Store:
    """Open the store ``url`` names: a file path, ``sqlite:///PATH``,
    ``postgresql://...`` (or ``postgres://``), or ``memory:``.

    With ``create=False`` a store that does not exist yet is an error
    (:class:`~jobkit.StoreError`) rather than created empty. ``options`` go to
    the store's constructor (e.g. ``timeout=`` for
    :class:`~jobkit.PostgresStore`). A PostgreSQL URL may name the store's
    schema with a ``schema`` query parameter, which is not passed on to the
    server: ``postgresql://db.internal/app?schema=jobs``.

    Example::

        >>> import jobkit
        >>> jobkit.store_from_url("memory:")
        <MemoryStore with 0 jobs>
        >>> jobkit.store_from_url("redis://localhost")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: cannot open a store from 'redis://localhost': expected ...
    """
    text = os.fspath(url)
    if not isinstance(text, str) or not text:
        raise ValueError(f"expected a store URL ({_KINDS}), got {url!r}")
    match = _SCHEME.match(text)
    scheme = None if match is None else match.group(1).lower()
    if scheme in ("postgresql", "postgres"):
        from ._postgres import PostgresStore

        parts = urllib.parse.urlsplit(text)
        query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        schemas = [value for key, value in query if key == "schema"]
        if schemas:
            options.setdefault("schema", schemas[-1])
            rest = urllib.parse.urlencode([(k, v) for k, v in query if k != "schema"])
            text = urllib.parse.urlunsplit(parts._replace(query=rest))
        return PostgresStore(text, create=create, **options)
    if scheme == "memory":
        if text[match.end() :].strip("/") if match else "":
            raise ValueError(f"a memory store URL is just 'memory:', got {text!r}")
        return MemoryStore(**options)
    path = sqlite_path(text)
    if path is None:
        raise ValueError(f"cannot open a store from {text!r}: expected {_KINDS}")
    if not create and path != ":memory:" and not os.path.exists(path):
        raise StoreError(f"no database at {path!r}")
    return SQLiteStore(path, **options)
