"""Opening a jobkit SQLite file: refuse what is not ours, create or upgrade what is.

Every step looks before it writes, so a file that is refused keeps every
byte; creating and upgrading each happen in one transaction, so a second
process opening the same file meanwhile waits and then finds nothing to do.
"""

from __future__ import annotations

import sqlite3
from typing import Final

from ..protocol import IncompatibleStore, StoreBusy, StoreError
from . import schema

_SQLITE_BUSY: Final = 5
_SQLITE_LOCKED: Final = 6
_SQLITE_NOTADB: Final = 26

# The result codes of a file whose pages or header are not what SQLite wrote.
DAMAGE: Final = frozenset({"SQLITE_CORRUPT", "SQLITE_NOTADB"})


def is_busy(exc: sqlite3.Error) -> bool:
    """Whether ``exc`` says another connection holds the lock."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED)


def opening_error(path: str, busy_timeout: float, exc: sqlite3.Error) -> StoreError:
    """The store error that says why ``path`` could not be opened."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    if is_busy(exc):
        return StoreBusy(
            f"{path!r} stayed locked by other connections for "
            f"{busy_timeout:g} s while opening it"
        )
    if code == _SQLITE_NOTADB:
        return IncompatibleStore(
            f"{path!r} is not an SQLite database ({exc}); "
            "refusing to use it (the file was left unchanged)"
        )
    return StoreError(f"cannot open {path!r}: {exc}")


def open_database(path: str, busy_timeout: float) -> sqlite3.Connection:
    """Connect to ``path``, creating or upgrading jobkit's schema in it."""
    # SQLite itself waits for a busy database while opening: this runs
    # before any event loop work, and may create the schema.
    try:
        conn = sqlite3.connect(
            path,
            timeout=busy_timeout,
            isolation_level=None,
            check_same_thread=False,
        )
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open {path!r}: {exc}") from None
    try:
        _prepare(path, conn)
    except sqlite3.Error as exc:
        conn.close()
        raise opening_error(path, busy_timeout, exc) from None
    except BaseException:
        conn.close()
        raise
    return conn


def _inspect(path: str, conn: sqlite3.Connection) -> bool:
    """Return whether the database is empty; refuse it if it is not ours."""
    # One read transaction, so that a schema another process commits
    # meanwhile is seen whole or not at all.
    own = not conn.in_transaction
    if own:
        conn.execute("BEGIN")
    try:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = [
            name
            for (name,) in conn.execute("SELECT name FROM sqlite_master ORDER BY name")
        ]
    finally:
        if own:
            conn.execute("COMMIT")
    if app_id == 0 and version == 0 and not tables:
        return True
    if app_id != schema.APPLICATION_ID:
        shown = ", ".join(tables[:8]) + (", ..." if len(tables) > 8 else "")
        raise IncompatibleStore(
            f"{path!r} is not a jobkit database (application_id "
            f"{app_id:#x}, user_version {version}, tables: {shown or 'none'}); "
            f"jobkit schema version {schema.SCHEMA_VERSION} expects application_id "
            f"{schema.APPLICATION_ID:#x}; refusing to use it "
            "(the file was left unchanged)"
        )
    if version != schema.SCHEMA_VERSION and version not in schema.MIGRATIONS:
        newer = "newer than" if version > schema.SCHEMA_VERSION else "different from"
        raise IncompatibleStore(
            f"{path!r} holds jobkit schema version {version}, {newer} "
            f"version {schema.SCHEMA_VERSION} that this jobkit understands; "
            "refusing to use it (the file was left unchanged)"
        )
    return False


def _prepare(path: str, conn: sqlite3.Connection) -> None:
    # Look before writing anything: a refused file must keep every byte.
    if _inspect(path, conn):
        # Only a file with no page written yet takes it; others keep theirs.
        conn.execute(f"PRAGMA page_size = {schema.PAGE_SIZE}")
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have created the schema meanwhile.
            if _inspect(path, conn):
                for statement in schema.SCHEMA:
                    conn.execute(statement)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    if conn.execute("PRAGMA user_version").fetchone()[0] < schema.SCHEMA_VERSION:
        _migrate(conn)


def _migrate(conn: sqlite3.Connection) -> None:
    # One transaction for all the steps: a crash leaves the old version
    # whole, and a second process opening the file meanwhile waits, then
    # finds nothing left to do.
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        while version < schema.SCHEMA_VERSION:
            for statement in schema.MIGRATIONS[version]:
                conn.execute(statement)
            version += 1
        conn.execute(f"PRAGMA user_version = {schema.SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
