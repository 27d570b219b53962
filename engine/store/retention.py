"""Retention: the daemon's logs are kept for a number of days, then deleted a chunk at a time.

Three tables grow with every event or action and would fill a server's disk in months; journeys.toml
says how long each is kept:

    [ingest] dedupe_days = 7    `messages`, the messageIds taken: a repeat within the window is
                                dropped, a later one is a new event (engine.runtime.loop, in the daemon
                                and the dry-run alike), so a messageId older than that answers
                                nothing any more and can go
    [serve] actions_days = 90   `actions`, the action log (the admin API's recent actions, audits)
    [serve] outbox_days = 30    `outbox`: delivered entries; dead letters (dead, or failed for
                                good) stay until an operator retries them, open entries until settled

What goes is what is older than that, never anything newer, deleted `CHUNK` rows per statement
so a delete never holds the write lock for long (engine.daemon.housekeeping runs `prune` until a round
deletes less than a chunk). None of it changes what the engine decides: the action log and the
outbox are not read by its decisions, and a messageId past the window would be taken as new
whether its row is still there or not.

How a row's age is known differs by store, since the hot path must not pay for it:

- SQLite: rowids grow with each insert, so the table `retention_marks` notes, once per `MARK_EVERY`,
  the highest rowid of each table at that moment. Rows at or below the newest mark older than the
  table's days are older than that; they go in rowid order. (The highest rowid of a table is never
  deleted: SQLite would then give the next row a smaller rowid, and a mark could reach it early.)
  A row is kept up to `MARK_EVERY` longer than its days.
- PostgreSQL: `messages.seen_at`, `actions.time` and `outbox.created` have BRIN indexes
  (migration 5): a few pages for a table appended in time order, no cost per insert worth the name.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Iterable, Mapping

from .outbox import DELIVERED, DROPPED
from .serialize import utc_text
from .sql import is_sqlite

CHUNK = 1000  # rows per delete statement
MARK_EVERY = timedelta(hours=1)  # SQLite: how often the highest rowids are noted

TABLES = ("messages", "actions", "outbox")
# the outbox entries retention may delete: delivered ones; dead letters (dead, and failed: a
# permanent error) wait for an operator's retry, listed and counted, like open entries and those
# a pause holds; the ones a resume dropped are settled (engine.daemon.admin.pause_store)
_SETTLED = (DELIVERED, DROPPED)
_SETTLED_SQL = "(" + ", ".join(f"'{state}'" for state in _SETTLED) + ")"  # constants: safe to inline


def policy(config: Any) -> dict[str, int]:
    """{table: days} from journeys.toml (journeys.config.ProjectConfig)."""
    return {"messages": config.ingest.dedupe_days, "actions": config.serve.actions_days,
            "outbox": config.serve.outbox_days}


def prune(conn: Any, days: Mapping[str, int], now: datetime, chunk: int = CHUNK) -> dict[str, int]:
    """Delete at most `chunk` rows past their days from each table (inside the caller's
    transaction); {table: rows deleted}. A table that returns `chunk` may have more."""
    if is_sqlite(conn):
        return _prune_sqlite(conn, days, now, chunk)
    return _prune_postgres(conn, days, now, chunk)


# ---------------------------------------------------------------------------------------- SQLite

_MARKS = ("CREATE TABLE IF NOT EXISTS retention_marks (at TEXT PRIMARY KEY, messages INTEGER, actions INTEGER, "
          "outbox INTEGER)")


def _prune_sqlite(conn: Any, days: Mapping[str, int], now: datetime, chunk: int) -> dict[str, int]:
    conn.execute(_MARKS)
    _mark(conn, now)
    deleted = {}
    for table in TABLES:
        row = conn.execute(f"SELECT {table} FROM retention_marks WHERE at <= ? ORDER BY at DESC LIMIT 1",
                           (utc_text(now - timedelta(days=days[table])),)).fetchone()
        deleted[table] = 0 if row is None or row[0] is None else _delete_sqlite(conn, table, row[0], chunk)
    # a mark older than the one every table still needs is of no more use
    oldest = utc_text(now - timedelta(days=max(days.values())))
    conn.execute("DELETE FROM retention_marks WHERE at < (SELECT max(at) FROM retention_marks WHERE at <= ?)",
                 (oldest,))
    return deleted


def _mark(conn: Any, now: datetime) -> None:
    newest = conn.execute("SELECT max(at) FROM retention_marks").fetchone()[0]
    if newest is not None and newest > utc_text(now - MARK_EVERY):
        return
    highest = [conn.execute(f"SELECT max(rowid) FROM {table}").fetchone()[0] for table in TABLES]
    conn.execute("INSERT OR REPLACE INTO retention_marks VALUES (?, ?, ?, ?)", (utc_text(now), *highest))


def _delete_sqlite(conn: Any, table: str, bound: int, chunk: int) -> int:
    settled = f" AND state IN {_SETTLED_SQL}" if table == "outbox" else ""
    return conn.execute(
        f"DELETE FROM {table} WHERE rowid IN (SELECT rowid FROM {table} WHERE rowid <= ? "
        f"AND rowid < (SELECT max(rowid) FROM {table}){settled} ORDER BY rowid LIMIT ?)", (bound, chunk)).rowcount


# ------------------------------------------------------------------------------------ PostgreSQL

# SKIP LOCKED: the workers of a cluster all run retention; none waits on rows another is
# deleting (or, in the outbox, retrying), and two never deadlock over them
_PG_DELETE = {
    "messages": "DELETE FROM messages WHERE message_id IN "
                "(SELECT message_id FROM messages WHERE seen_at < %s LIMIT %s FOR UPDATE SKIP LOCKED)",
    "actions": "DELETE FROM actions WHERE id IN "
               "(SELECT id FROM actions WHERE time < %s LIMIT %s FOR UPDATE SKIP LOCKED)",
    "outbox": "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE created < %s "
              f"AND state IN {_SETTLED_SQL} LIMIT %s FOR UPDATE SKIP LOCKED)",
}


def _prune_postgres(conn: Any, days: Mapping[str, int], now: datetime, chunk: int) -> dict[str, int]:
    return {table: conn.execute(_PG_DELETE[table], (now - timedelta(days=days[table]), chunk)).rowcount
            for table in TABLES}


def more(deleted: Iterable[int], chunk: int = CHUNK) -> bool:
    """Did a round stop at its chunk somewhere (run it again at once)?"""
    return any(n >= chunk for n in deleted)
