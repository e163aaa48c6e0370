"""Opening a store from one string: a file path or a URL."""

from __future__ import annotations

import os
import re
import urllib.parse
from typing import Any

from .memory import MemoryStore
from .protocol import Store, StoreError
from .sqlite.store import SQLiteStore

__all__ = ["sqlite_path", "store_from_url"]

# A scheme of two letters or more: "C:\jobs.db" is a Windows path, not a URL.
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]+):")

# Query parameters of a PostgreSQL URL that are PostgresStore's, not libpq's.
_POSTGRES_OPTIONS = frozenset({"schema", "synchronous"})

_KINDS = "a file path, sqlite:///PATH, postgresql://... or memory:"


def sqlite_path(url: str | os.PathLike[str]) -> str | None:
    """Return the file an SQLite URL or plain path names; None for other URLs.

    ``sqlite:///jobs.db`` is ``jobs.db`` (relative), ``sqlite:////var/jobs.db``
    is ``/var/jobs.db``, as in SQLAlchemy.

    Example::

        >>> from jobkit.store.url import sqlite_path
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
    schema and its durability (``off``, ``normal`` or ``full``; see
    :class:`~jobkit.PostgresStore`) as query parameters, which are not passed
    on to the server: ``postgresql://db.internal/app?schema=jobs&synchronous=off``.

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
        from .postgres import PostgresStore

        parts = urllib.parse.urlsplit(text)
        query = urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
        ours = {key: value for key, value in query if key in _POSTGRES_OPTIONS}
        if ours:
            if "synchronous" in ours:
                ours["synchronous"] = ours["synchronous"].upper()
            for key, value in ours.items():
                options.setdefault(key, value)
            # quote, not quote_plus: libpq reads a "+" as itself, not a space.
            rest = urllib.parse.urlencode(
                [(k, v) for k, v in query if k not in _POSTGRES_OPTIONS],
                quote_via=urllib.parse.quote,
            )
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
