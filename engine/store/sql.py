"""One statement, either store: the daemon's side tables (trail, tombstones, admin queries,
metrics) are read and written through this, on a SQLite or a PostgreSQL connection alike.

The stores' own SQL differs (engine.store.sqlite_store, engine.store.pg_store), but the daemon's side code is
a few plain queries that both databases understand once the placeholders agree, so it is written
once, in their common dialect, with sqlite3's `?` placeholders:

- `execute`/`executemany` run it on a `sqlite3.Connection` as it is, or on a psycopg 3 connection
  with each `?` turned into `%s` (and a literal `%` doubled). Statements never hold a `?` inside
  a string literal: values are always parameters.
- `INSERT ... ON CONFLICT (...) DO NOTHING / DO UPDATE SET x = excluded.x` (SQLite >= 3.24), not
  `INSERT OR IGNORE/REPLACE`; `CASE` rather than SQLite's two-argument `max`; subqueries in FROM
  with an alias; the column `"user"` quoted (a keyword in PostgreSQL).
- Times: SQLite tables hold `utc_text`, PostgreSQL ones timestamptz. `moment(conn, t)` gives the
  parameter each expects, `text_time(v)` turns what either returns into `utc_text`.
- Tables: SQLite files get the side tables at run time (`CREATE TABLE IF NOT EXISTS`, only when
  `is_sqlite`); PostgreSQL gets them from its migrations (engine.store.migrations), never at run time.
"""

from __future__ import annotations

import sqlite3
import time
from datetime import datetime
from typing import Any, Iterable, Iterator, Sequence

from .base import CLAIMS_KEPT, KEPT_MODELS

_PG: dict[str, str] = {}  # statement -> its psycopg form (the daemon runs the same few many times)


def is_sqlite(conn: Any) -> bool:
    return isinstance(conn, sqlite3.Connection)


def dialect(conn: Any) -> str:
    """"sqlite" or "postgres": which database a connection speaks."""
    return "sqlite" if is_sqlite(conn) else "postgres"


def pg_form(statement: str) -> str:
    """`statement` with psycopg's placeholders: `?` -> `%s`, a literal `%` -> `%%`."""
    out = _PG.get(statement)
    if out is None:
        out = _PG[statement] = statement.replace("%", "%%").replace("?", "%s")
    return out


def execute(conn: Any, statement: str, params: Sequence[Any] = ()) -> Any:
    """Run one statement with `?` placeholders; returns the cursor (fetchone, fetchall, rowcount,
    iteration work the same on both drivers)."""
    if is_sqlite(conn):
        return conn.execute(statement, tuple(params))
    return conn.execute(pg_form(statement), tuple(params))


def executemany(conn: Any, statement: str, rows: Iterable[Sequence[Any]]) -> None:
    """Run one statement for each row of parameters (psycopg batches them in a pipeline)."""
    rows = [tuple(r) for r in rows]
    if not rows:
        return
    if is_sqlite(conn):
        conn.executemany(statement, rows)
    else:
        with conn.cursor() as cur:
            cur.executemany(pg_form(statement), rows)


def marks(n: int) -> str:
    """`?, ?, ...` for an `IN (...)` of n values."""
    return ",".join("?" * n)


IN_CHUNK = 500  # values per `IN (...)`, well under SQLite's limit of bound variables


def chunks(values: Sequence[Any]) -> Iterator[Sequence[Any]]:
    """`values` in slices of IN_CHUNK, for an `IN (...)` each (with `marks(len(chunk))`)."""
    for at in range(0, len(values), IN_CHUNK):
        yield values[at:at + IN_CHUNK]


def moment(conn: Any, t: datetime) -> Any:
    """A time as the connection's tables hold it: `utc_text` for SQLite, the datetime for PostgreSQL."""
    if is_sqlite(conn):
        from .serialize import utc_text

        return utc_text(t)
    return t


def text_time(value: Any) -> Any:
    """A time read from either store as `utc_text` (None stays None)."""
    if isinstance(value, datetime):
        from .serialize import utc_text

        return utc_text(value)
    return value


# ----------------------------------------------------------------------------------- SQLite's write lock

# ---------------------------------------------------------------------------- the models' versions

class ModelVersions:
    """The models' trained versions and who trains which moment (engine.daemon.training), written once
    for both stores: a store with a `conn` of either driver gets these methods by inheriting them."""

    conn: Any

    def save_models(self, version: str, trained_at: datetime, body: bytes) -> None:
        """Keep a trained version, and only the latest KEPT_MODELS."""
        conn = self.conn
        execute(conn, "INSERT INTO models (version, trained_at, body) VALUES (?, ?, ?) "
                      "ON CONFLICT (version) DO UPDATE SET body = excluded.body", (version, moment(conn, trained_at), body))
        execute(conn, "DELETE FROM models WHERE version NOT IN (SELECT version FROM models "
                      "ORDER BY trained_at DESC, version DESC LIMIT ?)", (KEPT_MODELS,))

    def latest_models(self) -> bytes | None:
        row = execute(self.conn, "SELECT body FROM models ORDER BY trained_at DESC, version DESC LIMIT 1").fetchone()
        return None if row is None else bytes(row[0])

    def models_at(self, trained_at: datetime) -> bytes | None:
        row = execute(self.conn, "SELECT body FROM models WHERE trained_at = ? ORDER BY version DESC LIMIT 1",
                      (moment(self.conn, trained_at),)).fetchone()
        return None if row is None else bytes(row[0])

    def claim_training(self, at: datetime, owner: str, now: datetime, until: datetime) -> bool:
        """The training of moment `at` for `owner` until `until`, if nobody else's claim holds at
        `now`. Two PostgreSQL workers inserting the same moment: the second waits on the first's
        row, then finds its WHERE false and gets no row back."""
        conn = self.conn
        row = execute(conn, "INSERT INTO model_claims (moment, owner, expires) VALUES (?, ?, ?) ON CONFLICT (moment) "
                            "DO UPDATE SET owner = excluded.owner, expires = excluded.expires "
                            "WHERE model_claims.expires < ? OR model_claims.owner = excluded.owner RETURNING owner",
                      (moment(conn, at), owner, moment(conn, until), moment(conn, now))).fetchone()
        execute(conn, "DELETE FROM model_claims WHERE expires < ?", (moment(conn, now - CLAIMS_KEPT),))
        return row is not None


LOCK_WAIT = 10.0  # seconds a writer waits for SQLite's write lock before "database is locked"
_RETRY_SLEEP = (0.0001, 0.0002, 0.0005, 0.001)  # then 1 ms at a time


def begin_immediate(conn: sqlite3.Connection, wait: float = LOCK_WAIT) -> None:
    """`BEGIN IMMEDIATE`, waiting for the write lock in steps of 0.1 to 1 ms.

    Three connections write the daemon's file (the ingest, the worker, the deliveries). SQLite's
    own busy handler sleeps 1, 2, 5, 10, 15, 20, 25 ms... between tries, so a writer that found the
    lock taken for 3 ms waited 8: that was much of the latency's tail. So the connection's own wait
    is off for the BEGIN (PRAGMA busy_timeout = 0) and the retries here are short; `wait` is put
    back as the connection's timeout for its other statements."""
    conn.execute("PRAGMA busy_timeout = 0")
    try:
        tries = 0
        deadline = 0.0
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as e:
                if not _busy(e):
                    raise
                now = time.monotonic()
                if not tries:
                    deadline = now + wait
                elif now >= deadline:
                    raise
            time.sleep(_RETRY_SLEEP[min(tries, len(_RETRY_SLEEP) - 1)])
            tries += 1
    finally:
        conn.execute(f"PRAGMA busy_timeout = {int(wait * 1000)}")


def _busy(e: sqlite3.OperationalError) -> bool:
    return "locked" in str(e) or "busy" in str(e)
