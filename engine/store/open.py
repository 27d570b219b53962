"""The store a URL names, opened: `open_store` for the command lines and the daemon, and
`migrate_store` for `journeys migrate` (URLs are read by `engine.store.urls`).

    sqlite:///relative.db, sqlite:////abs.db, a plain path, :memory:   → SqliteStore
    postgresql://user@host:5432/dbname?schema=name (or postgres://)     → PostgresStore

The drivers are imported only for the store asked for, so a SQLite user never loads psycopg.
"""

from __future__ import annotations

from pathlib import Path

from .base import StoreError
from .urls import is_postgres, redact, sqlite_path


def open_store(url: str):
    """A `SqliteStore` or a `PostgresStore`, opened (and, for PostgreSQL, migrated). ValueError for a
    URL that names no store; StoreError for one that cannot be opened."""
    if is_postgres(url):
        from .pg_store import PostgresStore

        return PostgresStore(url)
    from .sqlite_store import SqliteStore

    try:
        return SqliteStore(url)
    except RuntimeError as e:  # another schema version
        raise StoreError(str(e)) from None


def migrate_store(url: str) -> tuple[int, int]:
    """Apply the missing schema migrations; returns (version before, version after), 0 for a store
    that did not exist. A SQLite file is created at its one version, or checked to be at it."""
    if is_postgres(url):
        from .migrations import migrate
        from .pg_store import connect

        conn, schema = connect(url)
        try:
            return migrate(conn, schema, redact(url))
        finally:
            conn.close()
    import sqlite3

    from .sqlite_store import SCHEMA_VERSION

    path = sqlite_path(url)
    before = 0
    if path != ":memory:" and Path(path).is_file() and Path(path).stat().st_size > 0:
        try:
            with sqlite3.connect(Path(path).resolve().as_uri() + "?mode=ro", uri=True) as conn:
                row = conn.execute("SELECT version FROM schema_version").fetchone()
            before = row[0] if row else 0
        except sqlite3.OperationalError:  # no schema_version table: not created by a store yet
            before = 0
        except sqlite3.DatabaseError as e:
            raise StoreError(f"{path}: not a SQLite database ({e})") from None
        if before > SCHEMA_VERSION:
            raise StoreError(f"{path}: the store's schema is at version {before}, but this Journeys knows versions "
                             f"up to {SCHEMA_VERSION}; upgrade Journeys")
    open_store(url).close()
    return before, SCHEMA_VERSION
