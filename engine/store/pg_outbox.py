"""`PostgresOutbox`: the durable outbox (engine.store.outbox) in a PostgreSQL store's schema.

It works on the store's own connection, so entries commit in the same transaction as the state
that produced them, exactly as `SqliteOutbox` does on the SQLite file. The table `outbox` is
created by the store's migrations (`engine.store.migrations`, version 1); times are timestamptz, ids
`COLLATE "C"` so that "oldest due first, then by id" is the same order as in the other outboxes.

Entry states are engine.store.outbox's; `due` takes `pending` entries and `sending` ones whose lease
(`next_at`) ran out, as `SqliteOutbox` does, and `save` updates an entry in place, so an entry
deleted while its delivery was in flight (the user was forgotten) stays deleted.

`due(now, limit, claim=True)` is for several dispatchers on one database: it reads the due rows
`FOR UPDATE SKIP LOCKED`, so the rows one worker has taken are locked until its transaction ends
and every other worker skips them instead of waiting or delivering them twice. A claim only holds
inside a transaction (the caller's `store.transaction()` around due → deliver → save); outside one
the locks would be released the moment the query returns, so that is refused.

`due` reads, connector by connector, only what it takes, as `SqliteOutbox.due` does: the
connectors with open entries (`CONNECTORS`: a seek of the index `outbox_open_connector` each,
migration 6), then in one statement the first due entries of each connector that has room, as
many as it has room for, locked with SKIP LOCKED: none is locked that is not returned, and none
of a skipped connector's entries is read. Each connector's branch has its own LIMIT, a parameter,
so the planner knows how few rows it reads (a LIMIT taken from a joined row is estimated at a
tenth of the table, which with a backlog costs a plan JIT compilation, 0.4 s). When the
connectors' rooms come to more than the limit, their due entries' keys are read first, without
locking, to give them turns (`fair_share`): three statements instead of two.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Collection, Iterable, Mapping, Sequence

from .outbox import (CONNECTORS, DEAD, FAILED, OPEN, PARKED, QUEUED, Entry, action_ranges, claim_sizes, fair_share,
                     in_ranges)

_COLUMNS = ("id, action_id, connector, user_id, kind, target, payload, created, next_at, state, attempts, "
            "last_error, provider_id")
_TYPES = ("text", "text", "text", "text", "text", "text", "text", "timestamptz", "timestamptz", "text", "integer",
          "text", "text")
_ADD = (f"INSERT INTO outbox ({_COLUMNS}) SELECT * FROM unnest("
        + ", ".join(f"%b::{t}[]" for t in _TYPES) + ") ON CONFLICT (id) DO NOTHING")
_SAVE_MANY = ("UPDATE outbox SET next_at = u.next_at, state = u.state, attempts = u.attempts, "
              "last_error = u.last_error, provider_id = u.provider_id FROM unnest(%b::timestamptz[], %b::text[], "
              "%b::integer[], %b::text[], %b::text[], %b::text[]) AS u (next_at, state, attempts, last_error, "
              "provider_id, id) WHERE outbox.id = u.id")

# One connector's due entries, oldest first (a range of BY_CONNECTOR; its bounds and the LIMIT are
# parameters, so the planner knows how few rows it reads): the branches of `_lines`.
_LINE = f"SELECT {{}} FROM outbox WHERE {OPEN} AND connector = %s AND next_at <= %s ORDER BY next_at, id LIMIT %s"
_LOCK = " FOR UPDATE SKIP LOCKED"


def _row(e: Entry) -> tuple:
    return (e.id, e.action_id, e.connector, e.user_id, e.kind, e.target, e.payload, e.created, e.next_at, e.state,
            e.attempts, e.last_error, e.provider_id)


def _entry(row: tuple) -> Entry:
    (_, action_id, connector, user_id, kind, target, payload, created, next_at, state, attempts, last_error,
     provider_id) = row
    return Entry(action_id, connector, user_id, kind, target, payload, created, next_at, state, attempts, last_error,
                 provider_id)


class PostgresOutbox:
    """The `Outbox` protocol on the connection of a `PostgresStore` (its search_path is the store's
    schema, where the migrations made the table)."""

    def __init__(self, conn, claim: bool = False):
        """`claim=True`: `due` claims by default (a dispatcher sharing the database with others)."""
        self.conn, self.claim = conn, claim

    def add(self, entries: Iterable[Entry]) -> int:
        """One statement for the batch; returns how many entries were new (a replayed one is not)."""
        rows = [_row(e) for e in entries]
        if not rows:
            return 0
        return self.conn.execute(_ADD, [list(column) for column in zip(*rows)]).rowcount

    def add_new(self, entries: Iterable[Entry]) -> list[str]:
        """As `add`, in one statement; the ids of the entries that were new."""
        rows = [_row(e) for e in entries]
        if not rows:
            return []
        return [r[0] for r in self.conn.execute(_ADD + " RETURNING id", [list(column) for column in zip(*rows)])]

    def due(self, now: datetime, limit: int = 100, skip: Collection[str] = (),
            room: Mapping[str, int] | None = None, *, claim: bool | None = None) -> list[Entry]:
        """Pending entries (and sending ones whose lease ran out) with `next_at <= now`: of each
        connector the oldest due first, at most `room[connector]`, none of those in `skip`; the
        connectors take turns when they come to more than `limit` (engine.store.outbox.Outbox.due).
        `claim=True` locks them for the caller's transaction and skips entries another
        transaction holds (FOR UPDATE SKIP LOCKED): concurrent dispatchers each get their own."""
        claim = self.claim if claim is None else claim
        if claim:
            from psycopg.pq import TransactionStatus

            if self.conn.info.transaction_status != TransactionStatus.INTRANS:
                raise RuntimeError("due(claim=True) must run inside a transaction (store.transaction()): outside one "
                                   "the claim would end as soon as the query returns")
        sizes = claim_sizes([c for (c,) in self.conn.execute(CONNECTORS)], limit, skip, room)
        if sum(sizes.values()) > limit:  # the connectors take turns: whose entries, read without locking
            lines: dict[str, list[tuple]] = {}
            for key in self._lines(sizes, now, "connector, next_at, id"):
                lines.setdefault(key[0], []).append(key)
            sizes = Counter(key[0] for key in fair_share(lines.values(), limit, key=lambda k: k[1:]))
        return sorted(map(_entry, self._lines(sizes, now, _COLUMNS, _LOCK if claim else "")),
                      key=lambda e: (e.next_at, e.id))

    def _lines(self, sizes: Mapping[str, int], now: datetime, columns: str, lock: str = "") -> list[tuple]:
        """The first `sizes[connector]` due entries of each connector (these `columns`), in one
        statement; `lock`: locked with SKIP LOCKED, so none is locked that is not returned."""
        if not sizes:
            return []
        line = f"SELECT * FROM ({_LINE.format(columns)}{lock}) AS line"
        return self.conn.execute(" UNION ALL ".join([line] * len(sizes)),
                                 [v for c, n in sizes.items() for v in (c, now, n)]).fetchall()

    def save(self, entry: Entry) -> None:
        """The entry's new delivery state; an entry no longer there is not written back."""
        self.save_many([entry])

    def save_many(self, entries: Sequence[Entry]) -> None:
        """One statement for them all (an UPDATE from arrays); an id twice keeps the later."""
        if not entries:
            return
        latest = list({e.id: e for e in entries}.values())
        self.conn.execute(_SAVE_MANY, ([e.next_at for e in latest], [e.state for e in latest],
                                       [e.attempts for e in latest], [e.last_error for e in latest],
                                       [e.provider_id for e in latest], [e.id for e in latest]))

    def get(self, entry_id: str) -> Entry | None:
        row = self.conn.execute(f"SELECT {_COLUMNS} FROM outbox WHERE id = %s", (entry_id,)).fetchone()
        return _entry(row) if row else None

    def get_many(self, ids: Collection[str]) -> dict[str, Entry]:
        rows = self.conn.execute(f"SELECT {_COLUMNS} FROM outbox WHERE id = ANY(%b::text[])", (list(ids),))
        return {e.id: e for e in map(_entry, rows)}

    def by_state(self, state: str, limit: int = 1000) -> list[Entry]:
        parked = f" AND {PARKED}" if state in (QUEUED, FAILED, DEAD) else ""  # then it reads the index
        return [_entry(r) for r in self.conn.execute(
            f"SELECT {_COLUMNS} FROM outbox WHERE state = %s{parked} ORDER BY id LIMIT %s", (state, limit))]

    def queued(self, connector: str) -> list[Entry]:
        return [_entry(r) for r in self.conn.execute(
            f"SELECT {_COLUMNS} FROM outbox WHERE state = %s AND {PARKED} AND connector = %s ORDER BY id",
            (QUEUED, connector))]

    def of_actions(self, action_ids: Collection[str]) -> list[Entry]:
        """The entries of these actions, by id (ranges of the primary key, as `SqliteOutbox`)."""
        if not action_ids:
            return []
        return [_entry(r) for r in self.conn.execute(
            f"SELECT {_COLUMNS} FROM outbox WHERE {in_ranges(len(set(action_ids)), '%s')} ORDER BY id",
            action_ranges(action_ids))]
