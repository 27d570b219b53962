"""The durable inbox: what the HTTP ingest accepted, written down before it says so.

The ingest (`engine/daemon/ingest.py`) answers a request only once its messages are committed here; the
processor (the daemon's loop, another step) takes them in order, runs them through the engine and
marks how far it got in the same transaction as the states they produced. A crash anywhere loses
nothing and processes nothing twice: what was answered 200 is in the inbox, and the cursor moves
only with the state.

Schema, in the store's SQLite file (created when missing, next to the store's tables):

    inbox(seq INTEGER PRIMARY KEY AUTOINCREMENT, received_at TEXT, raw BLOB)
    inbox_cursor(processed INTEGER)            one row: the highest seq the processor finished
    inbox_failed(seq INTEGER PK, raw BLOB, error TEXT, at TEXT)
                                               a message the engine could not take, for an operator

`AUTOINCREMENT` so a seq is never reused, even after processed rows are pruned: the cursor is a
seq and must never point at a newer row. `received_at` is fixed-width ISO-8601 UTC
(`engine.store.serialize.utc_text`). `raw` is the normalised message as a Segment-spec JSON object
(`message_to_json`): `parse_message` reads it back into the very same `Message`
(`message_from_json`), so the inbox is also an event log `journeys simulate --events` could
replay. The inbox keeps what it was given: a retried request appends its messages again, and the
engine drops the repeats by messageId (`Store.seen`), as it does for a replayed log.

Connections. The ingest writes on a connection of its own (`Inbox.open`, WAL, `synchronous=FULL`
by default: a commit survives a power loss, not only a crash of the process; a group commit makes
that one fsync per batch of requests). The processor builds its `Inbox` on the store's connection
(`Inbox(store.conn)`) so `mark` joins `store.transaction()`:

    batch = inbox.take(inbox.processed(), 500)
    with store.transaction():
        for seq, msg in batch:
            engine.handle(msg)
        if batch:
            inbox.mark(batch[-1][0])

SQLite allows one writer at a time; both sides keep their write transactions short (`BEGIN
IMMEDIATE` takes the lock up front; the ingest's connection waits up to `busy_timeout` for it).
"""

from __future__ import annotations

import sqlite3
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Sequence

import orjson

from ..core.messages import Message, parse_message
from .serialize import utc_text
from .sql import LOCK_WAIT, begin_immediate
from .urls import sqlite_path

_dumps = orjson.dumps
_loads = orjson.loads

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS inbox (seq INTEGER PRIMARY KEY AUTOINCREMENT, received_at TEXT NOT NULL, "
    "raw BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS inbox_cursor (processed INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS inbox_failed (seq INTEGER PRIMARY KEY, raw BLOB, error TEXT, at TEXT)",
)
_APPEND = "INSERT INTO inbox (received_at, raw) VALUES (?, ?)"


def message_to_json(msg: Message) -> bytes:
    """The message as a Segment-spec JSON object that `parse_message` reads back into an equal
    `Message`: type, messageId, timestamp, the ids, and the fields the message's type uses (page and
    screen keep their properties, `name` and `category` already in them; `context.timezone` when
    there is one). Empty properties and traits are left out."""
    out: dict[str, Any] = {"type": msg.type, "messageId": msg.message_id, "timestamp": msg.timestamp}
    if msg.user_id is not None:
        out["userId"] = msg.user_id
    if msg.anonymous_id is not None:
        out["anonymousId"] = msg.anonymous_id
    kind = msg.type
    if kind == "track":
        out["event"] = msg.event
    if kind in ("track", "page", "screen"):
        if msg.properties:
            out["properties"] = msg.properties
    elif kind in ("identify", "group"):
        if msg.traits:
            out["traits"] = msg.traits
        if kind == "group":
            out["groupId"] = msg.group_id
    elif kind == "alias":
        out["previousId"] = msg.previous_id
    if msg.timezone is not None:
        out["context"] = {"timezone": msg.timezone}
    return _dumps(out, default=_plain)


def _plain(value: Any) -> Any:
    try:
        return dict(value)  # a Mapping such as MappingProxyType
    except (TypeError, ValueError):
        raise TypeError(f"not JSON: {type(value).__name__}") from None


def message_from_json(raw: bytes | str) -> Message:
    """The `Message` that `message_to_json` wrote (raises `MessageError` for anything else)."""
    return parse_message(_loads(raw))


PRUNE_CHUNK = 1000  # processed messages deleted per statement


class Inbox:
    """The inbox tables on a SQLite connection (see the module docstring)."""

    lock_wait = LOCK_WAIT  # seconds an append waits for the write lock (Inbox.open's busy_timeout_ms)

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        for sql in _SCHEMA:
            conn.execute(sql)
        if conn.execute("SELECT count(*) FROM inbox_cursor").fetchone()[0] == 0:
            conn.execute("INSERT INTO inbox_cursor (processed) VALUES (0)")

    @classmethod
    def open(cls, path_or_url: str, *, synchronous: str = "FULL", busy_timeout_ms: int = 10_000) -> "Inbox":
        """An inbox on a connection of its own to the store's file (a path or `sqlite:///` URL).

        The connection may be used from another thread than the one that opened it, but from one
        thread at a time (the ingest's single writer thread)."""
        path = sqlite_path(path_or_url)
        if path == ":memory:":
            raise ValueError("the inbox must be a file the processor can open too, not :memory:")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False,
                               timeout=busy_timeout_ms / 1000)
        conn.execute("PRAGMA journal_mode = WAL")
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"synchronous: {synchronous!r}")
        conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
        conn.execute("BEGIN IMMEDIATE")
        try:
            inbox = cls(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            conn.close()
            raise
        conn.execute("COMMIT")
        inbox.lock_wait = busy_timeout_ms / 1000
        return inbox

    def close(self) -> None:
        self.conn.close()

    # ------------------------------------------------------------------ the ingest's side

    def append(self, messages: Iterable[Message], received_at: datetime | None = None) -> None:
        """Append messages, all received at `received_at` (default: now), in one transaction."""
        text = utc_text(received_at or datetime.now(timezone.utc))
        self.append_rows([(text, message_to_json(m)) for m in messages])

    def append_rows(self, rows: Sequence[tuple[str, bytes]]) -> None:
        """Append (received_at text, `message_to_json` bytes) rows in one transaction: the group
        commit's call, with the JSON made by the requests themselves. Inside a transaction the
        caller opened on this connection the rows join it instead."""
        if not rows:
            return
        conn = self.conn
        if conn.in_transaction:
            conn.executemany(_APPEND, rows)
            return
        begin_immediate(conn, self.lock_wait)
        try:
            conn.executemany(_APPEND, rows)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    # ------------------------------------------------------------------ the processor's side

    def processed(self) -> int:
        """The highest seq the processor has marked (0 before the first)."""
        return self.conn.execute("SELECT processed FROM inbox_cursor").fetchone()[0]

    def take(self, after_seq: int, limit: int = 1000) -> list[tuple[int, Message]]:
        """Up to `limit` messages with seq > `after_seq`, oldest first, as (seq, Message)."""
        rows = self.conn.execute("SELECT seq, raw FROM inbox WHERE seq > ? ORDER BY seq LIMIT ?",
                                 (after_seq, limit)).fetchall()
        return [(seq, parse_message(_loads(raw))) for seq, raw in rows]

    def take_received(self, after_seq: int, limit: int = 1000) -> list[tuple[int, datetime, Message]]:
        """As `take`, with each message's receivedAt."""
        rows = self.conn.execute("SELECT seq, received_at, raw FROM inbox WHERE seq > ? ORDER BY seq LIMIT ?",
                                 (after_seq, limit)).fetchall()
        return [(seq, datetime.fromisoformat(at), parse_message(_loads(raw))) for seq, at, raw in rows]

    def mark(self, seq: int) -> None:
        """Everything up to `seq` is processed. One statement: inside the processor's transaction it
        commits (or rolls back) with the states it produced. The cursor never moves back."""
        self.conn.execute("UPDATE inbox_cursor SET processed = max(processed, ?)", (seq,))

    def last_seq(self) -> int:
        """The newest seq appended (0 when none ever was)."""
        row = self.conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'inbox'").fetchone()
        return 0 if row is None else row[0]

    def pending(self) -> int:
        """How many messages wait for the processor."""
        return self.conn.execute("SELECT count(*) FROM inbox WHERE seq > (SELECT processed FROM inbox_cursor)"
                                 ).fetchone()[0]

    # the processor's interface, shared with engine.store.pg_inbox.PostgresInbox

    def next_batch(self, parts: Any, limit: int) -> list[tuple[int, bytes, int]]:
        """Up to `limit` (seq, raw, partition) rows after the cursor, oldest first (`parts` is
        ignored: one SQLite daemon processes every partition, numbered 0 here)."""
        return self.conn.execute("SELECT seq, raw, 0 FROM inbox WHERE seq > ? ORDER BY seq LIMIT ?",
                                 (self.processed(), limit)).fetchall()

    def finish(self, rows: Sequence[tuple]) -> None:
        """Inside the processing transaction: these rows (the next ones, in order) are done."""
        if rows:
            self.mark(rows[-1][0])

    def set_aside(self, seq: int, raw: bytes, error: str, at: datetime) -> None:
        """Keep a message the engine could not take, with its error, for an operator; move past it."""
        self.conn.execute("INSERT OR REPLACE INTO inbox_failed VALUES (?, ?, ?, ?)", (seq, raw, error, utc_text(at)))
        self.mark(seq)

    def failed(self, limit: int) -> list[tuple[int, bytes, str, datetime]]:
        """The messages set aside, oldest first: (seq, raw, error, when)."""
        return [(seq, raw, error, datetime.fromisoformat(at)) for seq, raw, error, at in self.conn.execute(
            "SELECT seq, raw, error, at FROM inbox_failed ORDER BY seq LIMIT ?", (limit,))]

    def requeue(self, seq: int, at: datetime) -> bool:
        """Inside a transaction: the message set aside as `seq` goes back into the inbox, as a new
        message received `at` (after whatever has arrived since); False if there is none."""
        row = self.conn.execute("DELETE FROM inbox_failed WHERE seq = ? RETURNING raw", (seq,)).fetchone()
        if row is None:
            return False
        self.conn.execute(_APPEND, (utc_text(at), row[0]))
        return True

    def prune(self, chunk: int = PRUNE_CHUNK) -> int:
        """Delete processed messages, the oldest `chunk` at most; returns how many. Seqs are never
        reused afterwards. In chunks, because the delete holds the write lock the ingest and the
        deliveries wait for: 15,000 rows at once held it long enough to show in the latency."""
        cur = self.conn.execute("DELETE FROM inbox WHERE seq <= min((SELECT processed FROM inbox_cursor), "
                                "(SELECT min(seq) FROM inbox) + ? - 1)", (chunk,))
        return cur.rowcount
