"""Connecting PostgresStore: its pool's sessions, and errors that name the server."""

from __future__ import annotations

from typing import Any, Final

import psycopg
import psycopg.conninfo
import psycopg_pool

from ...runtime.tasks import first_line
from ..protocol import StoreError

__all__ = ["open_pool", "session_settings", "where"]


def where(url: str) -> str:
    """Name the server and database of ``url`` for messages, without a password."""
    try:
        parts = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.Error:
        return "PostgreSQL"
    host = parts.get("host") or "local socket"
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"PostgreSQL {host}{port}/{parts.get('dbname') or parts.get('user') or ''}"


KEEPALIVES: Final = {
    # A dead peer (host down, cable cut) is noticed within about 20 s even
    # on an idle connection.
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 3,
    "keepalives_count": 3,
    "connect_timeout": 10,
}


def _url_options(url: str) -> str:
    """libpq's ``options`` given in ``url``, to go before the store's own."""
    # A keyword argument replaces the URL's value: without this, the URL's
    # ``-c`` settings would be dropped without a word.
    try:
        given = psycopg.conninfo.conninfo_to_dict(url).get("options")
    except psycopg.Error:
        return ""
    return f"{given} " if given else ""


def _connect_error(url: str) -> str:
    # The pool hides why it could not connect; one direct try tells.
    try:
        psycopg.connect(url, connect_timeout=3).close()
    except psycopg.Error as exc:
        return f": {first_line(str(exc))}"
    return ""


def session_settings(url: str, timeout: float) -> dict[str, Any]:
    """The settings of every session the store opens, the listener's too."""
    return {
        # A session that lost its client (a partition) must not hold row
        # locks for long: the server ends it after this much idleness.
        "options": (
            f"{_url_options(url)}"
            f"-c idle_in_transaction_session_timeout={int(timeout * 1000)} "
            f"-c statement_timeout={int(timeout * 1000)}"
        ),
        **KEEPALIVES,
    }


def open_pool(
    url: str, name: str, timeout: float, size: int, settings: dict[str, Any]
) -> psycopg_pool.ConnectionPool:
    """Open a pool of up to ``size`` autocommit sessions, one of them at once."""
    pool = psycopg_pool.ConnectionPool(
        url,
        min_size=1,
        max_size=size,
        kwargs={"autocommit": True, "application_name": name, **settings},
        open=False,
        name=name,
        timeout=timeout,
    )
    try:
        pool.open(wait=True, timeout=timeout)
    except psycopg_pool.PoolTimeout:
        pool.close()
        raise StoreError(
            f"cannot connect to {where(url)} within {timeout:g} s{_connect_error(url)}"
        ) from None
    except psycopg.Error as exc:
        pool.close()
        raise StoreError(
            f"cannot connect to {where(url)}: {first_line(str(exc))}"
        ) from None
    return pool
