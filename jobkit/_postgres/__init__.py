"""PostgreSQL support: :class:`PostgresStore`, its schema and its listener.

Importing this package imports psycopg; ``import jobkit`` does not, and
reaches :class:`PostgresStore` lazily as ``jobkit.PostgresStore``.
"""

from __future__ import annotations

try:
    import psycopg  # noqa: F401
    import psycopg_pool  # noqa: F401
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "PostgresStore needs psycopg 3 and psycopg-pool: pip install 'jobkit[postgres]'"
    ) from exc

from ._schema import SCHEMA_VERSION as SCHEMA_VERSION
from ._store import PostgresStore as PostgresStore

__all__ = ["SCHEMA_VERSION", "PostgresStore"]
