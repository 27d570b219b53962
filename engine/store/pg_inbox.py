"""The durable inbox on PostgreSQL, shared by every worker of a cluster.

The same promise as the SQLite inbox (`engine.store.inbox`): a request is answered once its messages
are committed, and a message leaves the inbox only in the transaction of the states it produced.
What differs is that many processes write and read it:

- Any worker's ingest appends (`append_rows`, one statement per group commit), each row tagged
  with its partition (`engine.store.pg_store.partition_of` of the sender's id), and sends
  `NOTIFY journeys_inbox_<schema>` in the same transaction: the workers' listeners wake their
  processors when the rows are visible.
- A worker takes rows only from the partitions it leases, oldest seq first (`next_batch`), and
  deletes them in its processing transaction (`finish`). Rows are deleted rather than passed by a
  cursor: two ingests commit in any order, so a seq may become visible after a higher one was
  processed; a cursor would skip it, a deletion cannot.

    inbox(seq bigserial, part smallint, received_at timestamptz, raw bytea)   index (part, seq)
    inbox_failed(seq, raw, error, at)     a message the engine could not take, kept for an operator
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any, Callable, Iterable, Sequence

import orjson

from .pg_store import partition_of, sender_key
from .serialize import utc_text

# the rows and the workers' wake-up in one statement, so in one implicit transaction: one round
# trip per group commit instead of four (BEGIN, INSERT, NOTIFY, COMMIT); a data-modifying CTE runs
# once whether or not the query reads it, and NOTIFY is delivered at the commit
_APPEND = ("WITH appended AS (INSERT INTO inbox (part, received_at, raw) "
           "SELECT * FROM unnest(%b::smallint[], %b::timestamptz[], %b::bytea[])) SELECT pg_notify(%s, %s)")


def channel(schema: str) -> str:
    return f"journeys_inbox_{schema}"


def _partition(raw: bytes) -> int:
    """The partition of a message as stored; one that is not a JSON object (only a message set
    aside and requeued by an operator can be) goes to the sender-less messages' partition, to
    be set aside again by whoever holds it."""
    try:
        message = orjson.loads(raw)
    except orjson.JSONDecodeError:
        message = None
    return partition_of(sender_key(message if isinstance(message, dict) else {}))


class PostgresInbox:
    def __init__(self, conn: Any, schema: str):
        self.conn, self.schema = conn, schema

    @classmethod
    def open(cls, url: str) -> "PostgresInbox":
        """The ingest's inbox, on a connection of its own (migrated like the store)."""
        from .migrations import migrate
        from .pg_store import connect
        from .urls import redact

        conn, schema = connect(url)
        try:
            migrate(conn, schema, redact(url))
        except BaseException:
            conn.close()
            raise
        return cls(conn, schema)

    def close(self) -> None:
        self.conn.close()

    # ------------------------------------------------------------------ the ingest's side

    def append_rows(self, rows: Sequence[tuple[str, bytes]]) -> frozenset[int]:
        """Append (received_at text, `message_to_json` bytes) rows and wake the workers, in one
        transaction; the partitions written."""
        if not rows:
            return frozenset()
        parts = [_partition(raw) for _, raw in rows]
        times = [datetime.fromisoformat(at.replace("Z", "+00:00")) for at, _ in rows]
        written = frozenset(parts)
        # the payload names the partitions written: only their owners need to wake
        self.conn.execute(_APPEND, (parts, times, [raw for _, raw in rows], channel(self.schema),
                                    ",".join(map(str, sorted(written)))))
        return written

    # ------------------------------------------------------------------ the processor's side

    def next_batch(self, parts: Iterable[int], limit: int) -> list[tuple[int, bytes, int]]:
        """Up to `limit` (seq, raw, partition) rows of these partitions, oldest first."""
        parts = sorted(parts)
        if not parts:
            return []
        return [(seq, bytes(raw), part) for seq, raw, part in self.conn.execute(
            "SELECT seq, raw, part FROM inbox WHERE part = ANY(%b::smallint[]) ORDER BY seq LIMIT %s", (parts, limit))]

    def finish(self, rows: Sequence[tuple]) -> None:
        """Inside the processing transaction: these rows are done."""
        self.conn.execute("DELETE FROM inbox WHERE seq = ANY(%b::bigint[])", ([row[0] for row in rows],))

    def set_aside(self, seq: int, raw: bytes, error: str, at: datetime) -> None:
        self.conn.execute("INSERT INTO inbox_failed (seq, raw, error, at) VALUES (%s, %s, %s, %s) "
                          "ON CONFLICT (seq) DO UPDATE SET error = excluded.error, at = excluded.at",
                          (seq, raw, error, at))
        self.conn.execute("DELETE FROM inbox WHERE seq = %s", (seq,))

    def failed(self, limit: int) -> list[tuple[int, bytes, str, datetime]]:
        return [(seq, bytes(raw), error, at) for seq, raw, error, at in self.conn.execute(
            "SELECT seq, raw, error, at FROM inbox_failed ORDER BY seq LIMIT %s", (limit,))]

    def requeue(self, seq: int, at: datetime) -> bool:
        row = self.conn.execute("DELETE FROM inbox_failed WHERE seq = %s RETURNING raw", (seq,)).fetchone()
        if row is None:
            return False
        self.append_rows([(utc_text(at), bytes(row[0]))])  # its partition's owner is woken
        return True

    def pending(self) -> int:
        return self.conn.execute("SELECT count(*) FROM inbox").fetchone()[0]

    def prune(self) -> int:
        return 0  # processed rows are deleted as they are processed


class Listener:
    """LISTENs on the inbox's channel on a connection of its own and sets `wake` when an ingest
    (any worker's) commits messages of partitions `owned()` holds, so a worker sleeps until there
    is something for it. Every worker hears every commit: waking all of them for each one cost
    four workers twice the CPU per event of one (rounds that found nothing)."""

    def __init__(self, url: str, wake: threading.Event, owned: Callable[[], frozenset[int]] | None = None):
        """`owned()`: the partitions the worker holds now (None: wake on every commit)."""
        from .pg_store import connect

        self.conn, schema = connect(url)
        self.wake, self.owned = wake, owned
        self.stopping = threading.Event()
        self.conn.execute(f'LISTEN "{channel(schema)}"')
        self._thread = threading.Thread(target=self._run, name="journeys-listen", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                for note in self.conn.notifies(timeout=1.0):
                    if self._ours(note.payload):
                        self.wake.set()
            except Exception:  # noqa: BLE001 - the connection closed: the worker still polls
                if not self.stopping.is_set():
                    self.wake.set()
                return

    def _ours(self, payload: str) -> bool:
        if self.owned is None or not payload:  # an older ingest's notification names no partition
            return True
        try:
            parts = {int(p) for p in payload.split(",")}
        except ValueError:
            return True
        return not parts.isdisjoint(self.owned())

    def close(self) -> None:
        self.stopping.set()
        self._thread.join(5)
        self.conn.close()

