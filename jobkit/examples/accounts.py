"""The example web app's own data: users, and an outbox of the e-mails sent.

It lives in its own SQLite file, apart from jobkit's job tables: the
application owns its schema, jobkit owns its own, and neither migrates the
other's. Statements are short and run inline on the trio thread, as
jobkit's SQLite store does, because a single-row transaction costs less than
a hop to a worker thread and back.

The outbox is keyed by the job id, so writing the same job's e-mail twice
(a job delivered at least once may run twice) records it once.
"""

from __future__ import annotations

import os
import sqlite3

import attrs

__all__ = ["Accounts", "EmailTaken", "OutboxEntry", "User", "check_email"]

_SCHEMA = (
    """
    CREATE TABLE IF NOT EXISTS users (
        id         INTEGER PRIMARY KEY AUTOINCREMENT,
        email      TEXT    NOT NULL UNIQUE,
        name       TEXT    NOT NULL,
        created_at REAL    NOT NULL
    )
    """,
    """
    CREATE TABLE IF NOT EXISTS outbox (
        job_id   INTEGER PRIMARY KEY,
        user_id  INTEGER NOT NULL,
        to_addr  TEXT    NOT NULL,
        subject  TEXT    NOT NULL,
        sent_at  REAL    NOT NULL
    )
    """,
    "CREATE INDEX IF NOT EXISTS outbox_sent_at ON outbox (sent_at)",
)


class EmailTaken(ValueError):
    """Raised by :meth:`Accounts.add_user` when the e-mail address is in use.

    Example::

        >>> from jobkit.examples.accounts import Accounts, EmailTaken
        >>> accounts = Accounts(":memory:")
        >>> _ = accounts.add_user("ada@example.com", "Ada", now=0.0)
        >>> try:
        ...     accounts.add_user("ada@example.com", "Ada again", now=1.0)
        ... except EmailTaken as exc:
        ...     print(exc)
        a user with e-mail 'ada@example.com' already exists
        >>> accounts.close()
    """


@attrs.frozen
class User:
    """A registered user, as stored.

    Example::

        >>> from jobkit.examples.accounts import User
        >>> User(id=1, email="ada@example.com", name="Ada", created_at=0.0).email
        'ada@example.com'
    """

    id: int
    email: str
    name: str
    created_at: float


@attrs.frozen
class OutboxEntry:
    """One e-mail recorded as sent, by the job that sent it.

    Example::

        >>> from jobkit.examples.accounts import OutboxEntry
        >>> OutboxEntry(job_id=3, user_id=1, to="ada@example.com",
        ...             subject="Welcome", sent_at=5.0).job_id
        3
    """

    job_id: int
    user_id: int
    to: str
    subject: str
    sent_at: float


def _text(value: object, what: str, *, limit: int = 200) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, got {value!r}")
    value = value.strip()
    if not value:
        raise ValueError(f"{what} must not be empty")
    if len(value) > limit:
        raise ValueError(f"{what} must be at most {limit} characters, got {len(value)}")
    return value


def check_email(value: object) -> str:
    """Return ``value`` as a plausible e-mail address, or raise ``ValueError``.

    Only the shape ``local@domain`` is checked: deliverability is the mail
    server's business.

    Example::

        >>> from jobkit.examples.accounts import check_email
        >>> check_email("  ada@example.com ")
        'ada@example.com'
        >>> check_email("ada")
        Traceback (most recent call last):
        ...
        ValueError: email must look like name@domain, got 'ada'
    """
    email = _text(value, "email")
    local, at, domain = email.partition("@")
    if (
        not (local and at and domain)
        or "@" in domain
        or any(c.isspace() for c in email)
    ):
        raise ValueError(f"email must look like name@domain, got {email!r}")
    return email


class Accounts:
    """The users and the e-mail outbox of the example app, in one SQLite file.

    ``path`` may be ``":memory:"`` for a throwaway database. Every method is
    a short synchronous statement; call them from the trio thread.

    Example::

        >>> from jobkit.examples.accounts import Accounts
        >>> accounts = Accounts(":memory:")
        >>> user = accounts.add_user("ada@example.com", "Ada", now=10.0)
        >>> accounts.get_user(user.id).name
        'Ada'
        >>> accounts.record_email(job_id=7, user_id=user.id, to=user.email,
        ...                       subject="Welcome", now=11.0)
        True
        >>> accounts.record_email(job_id=7, user_id=user.id, to=user.email,
        ...                       subject="Welcome", now=12.0)   # a re-run
        False
        >>> [entry.sent_at for entry in accounts.outbox()]
        [11.0]
        >>> accounts.close()
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._path = os.fspath(path)
        self._conn = sqlite3.connect(self._path, isolation_level=None)
        if self._path != ":memory:":
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = NORMAL")
        for statement in _SCHEMA:
            self._conn.execute(statement)

    @property
    def path(self) -> str:
        """The database file's path, as given."""
        return self._path

    def __repr__(self) -> str:
        return f"<Accounts {self._path!r}>"

    def add_user(self, email: object, name: object, *, now: float) -> User:
        """Store a new user and return it; refuse bad input or a taken address.

        Raises ``ValueError`` naming the field that is wrong, and
        :class:`EmailTaken` when the address is already registered.

        Example::

            >>> from jobkit.examples.accounts import Accounts
            >>> accounts = Accounts(":memory:")
            >>> accounts.add_user("bob@example.com", "Bob", now=0.0).id
            1
            >>> accounts.close()
        """
        checked_email = check_email(email)
        checked_name = _text(name, "name")
        try:
            cursor = self._conn.execute(
                "INSERT INTO users (email, name, created_at) VALUES (?, ?, ?)",
                (checked_email, checked_name, now),
            )
        except sqlite3.IntegrityError:
            raise EmailTaken(
                f"a user with e-mail {checked_email!r} already exists"
            ) from None
        user_id = cursor.lastrowid
        assert user_id is not None
        return User(id=user_id, email=checked_email, name=checked_name, created_at=now)

    def get_user(self, user_id: int) -> User | None:
        """Return the user with ``user_id``, or ``None``.

        Example::

            >>> from jobkit.examples.accounts import Accounts
            >>> accounts = Accounts(":memory:")
            >>> accounts.get_user(42) is None
            True
            >>> accounts.close()
        """
        row = self._conn.execute(
            "SELECT id, email, name, created_at FROM users WHERE id = ?", (user_id,)
        ).fetchone()
        return None if row is None else User(*row)

    def delete_user(self, user_id: int) -> bool:
        """Delete a user; return whether there was one.

        Example::

            >>> from jobkit.examples.accounts import Accounts
            >>> accounts = Accounts(":memory:")
            >>> user = accounts.add_user("c@example.com", "C", now=0.0)
            >>> accounts.delete_user(user.id), accounts.delete_user(user.id)
            (True, False)
            >>> accounts.close()
        """
        cursor = self._conn.execute("DELETE FROM users WHERE id = ?", (user_id,))
        return cursor.rowcount > 0

    def record_email(
        self, *, job_id: int, user_id: int, to: str, subject: str, now: float
    ) -> bool:
        """Record that job ``job_id`` sent an e-mail; False if it already had.

        Keyed by the job id, so a job that runs twice (at-least-once
        delivery) leaves one entry, the first.

        Example::

            >>> from jobkit.examples.accounts import Accounts
            >>> accounts = Accounts(":memory:")
            >>> accounts.record_email(
            ...     job_id=1, user_id=1, to="a@example.com", subject="Hi", now=0.0)
            True
            >>> accounts.close()
        """
        cursor = self._conn.execute(
            "INSERT OR IGNORE INTO outbox (job_id, user_id, to_addr, subject, "
            "sent_at) VALUES (?, ?, ?, ?, ?)",
            (job_id, user_id, to, subject, now),
        )
        return cursor.rowcount > 0

    def prune_outbox(self, *, before: float) -> int:
        """Delete outbox entries sent before ``before``; return how many.

        Example::

            >>> from jobkit.examples.accounts import Accounts
            >>> accounts = Accounts(":memory:")
            >>> for job_id, at in [(1, 10.0), (2, 20.0), (3, 30.0)]:
            ...     _ = accounts.record_email(job_id=job_id, user_id=1,
            ...                               to="a@example.com", subject="Hi", now=at)
            >>> accounts.prune_outbox(before=25.0), len(accounts.outbox())
            (2, 1)
            >>> accounts.close()
        """
        cursor = self._conn.execute("DELETE FROM outbox WHERE sent_at < ?", (before,))
        return cursor.rowcount

    def outbox(self) -> list[OutboxEntry]:
        """Return the recorded e-mails, oldest first.

        Example::

            >>> from jobkit.examples.accounts import Accounts
            >>> accounts = Accounts(":memory:")
            >>> accounts.outbox()
            []
            >>> accounts.close()
        """
        rows = self._conn.execute(
            "SELECT job_id, user_id, to_addr, subject, sent_at FROM outbox "
            "ORDER BY sent_at, job_id"
        ).fetchall()
        return [OutboxEntry(*row) for row in rows]

    def close(self) -> None:
        """Close the database connection.

        Example::

            >>> from jobkit.examples.accounts import Accounts
            >>> Accounts(":memory:").close()
        """
        self._conn.close()
