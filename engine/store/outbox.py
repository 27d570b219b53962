"""The durable outbox: every action to deliver is written down before anyone tries to deliver it.

An action the engine decided to send becomes one outbox entry per connector it goes to (an
audience can sync to Meta and Google: two entries), keyed `action id:connector`. Adding is
idempotent (`INSERT OR IGNORE`), so a replayed message or a retried transaction never makes a
second entry, and the daemon writes the entries in the same transaction as the user's state: a
crash leaves either both or neither.

Entry states: `pending` (due at `next_at`), `sending` (leased by an attempt in flight until
`next_at`; due again if the lease runs out, which means its process died), `queued` (taken into a
connector's batch, waiting for its flush), `delivered`, `failed` (a permanent error, with the provider's answer) and `dead`
(retryable errors until the attempts ran out). Failed and dead entries are the dead letters: nothing
retries them, an operator lists them and retries them once the cause is fixed.

Delivery itself is at least once towards the provider, exactly once where the provider honours
the idempotency key (the action id): a crash after the provider accepted but before the entry was
marked delivered retries it with the same key.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Collection, Iterable, Protocol, Sequence

from . import sql

PENDING, SENDING, QUEUED, DELIVERED, FAILED, DEAD = "pending", "sending", "queued", "delivered", "failed", "dead"
DUE = (PENDING, SENDING)  # a sending entry whose lease ran out is due again
DEAD_LETTERS = (DEAD, FAILED)  # will not be retried: failed for good, or out of attempts

# The outbox's indexes, on SQLite and PostgreSQL alike. Delivered entries, nearly all of them after
# a while, are in neither: the claim of due entries walks an index of open ones only (a full
# index of every entry kept the dead versions of delivered ones in the claim's path, 22,613 index
# entries visited for 8 rows on PostgreSQL under load), and the admin lists read the parked ones.
# The states are literals in the queries too, so both databases see that the partial index applies.
OPEN = f"state IN ('{PENDING}', '{SENDING}')"
PARKED = f"state IN ('{QUEUED}', '{FAILED}', '{DEAD}')"
INDEXES = (
    f"CREATE INDEX outbox_open ON outbox (next_at, id) WHERE {OPEN}",
    f"CREATE INDEX outbox_parked ON outbox (state, connector, id) WHERE {PARKED}",
)


@dataclass(frozen=True)
class Entry:
    action_id: str
    connector: str
    user_id: str
    kind: str
    target: str
    payload: str  # the Action as JSON (Action.to_json), what the connector's Delivery is built from
    created: datetime
    next_at: datetime
    state: str = PENDING
    attempts: int = 0
    last_error: str | None = None
    provider_id: str | None = None

    @property
    def id(self) -> str:
        return f"{self.action_id}:{self.connector}"

    def evolve(self, **changes) -> "Entry":
        return replace(self, **changes)


class Outbox(Protocol):
    def add(self, entries: Iterable[Entry]) -> int:
        """Insert entries not there yet; returns how many were new."""
        ...

    def due(self, now: datetime, limit: int = 100, skip: Collection[str] = ()) -> list[Entry]:
        """Pending entries (and sending ones whose lease ran out) with `next_at <= now`, oldest
        due first, leaving out the connectors in `skip` (their pools are full)."""
        ...

    def save(self, entry: Entry) -> None:
        """Write an entry's new state. An entry deleted meanwhile (its user was forgotten while a
        delivery was in flight) stays deleted."""
        ...

    def save_many(self, entries: Sequence[Entry]) -> None:
        """`save` for each, in one statement where the store can (an id twice: the later wins)."""
        ...

    def get(self, entry_id: str) -> Entry | None: ...

    def get_many(self, ids: Collection[str]) -> dict[str, Entry]:
        """The entries of these ids that exist, by id: one read for a batch of handed entries."""
        ...

    def by_state(self, state: str, limit: int = 1000) -> list[Entry]: ...

    def queued(self, connector: str) -> list[Entry]: ...

    def of_actions(self, action_ids: Collection[str]) -> list[Entry]:
        """The entries of these actions (one per connector each went to), by id: read by id ranges
        (`action id:` up to `action id;`), so the primary key finds them."""
        ...


def action_ranges(action_ids: Collection[str]) -> list[str]:
    """[low, high) bounds of the entry ids of each action, flat: every entry id of an action starts
    with `action id:`, and `;` is the character after `:`."""
    return [bound for a in sorted(set(action_ids)) for bound in (f"{a}:", f"{a};")]


def in_ranges(n: int, mark: str) -> str:
    """The condition that an entry's id is in one of `n` ranges of `action_ranges` (`mark`: the
    driver's placeholder)."""
    return " OR ".join([f"(id >= {mark} AND id < {mark})"] * n)


class MemoryOutbox:
    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}

    def add(self, entries: Iterable[Entry]) -> int:
        new = 0
        for e in entries:
            if e.id not in self.entries:
                self.entries[e.id] = e
                new += 1
        return new

    def due(self, now: datetime, limit: int = 100, skip: Collection[str] = ()) -> list[Entry]:
        ready = [e for e in self.entries.values()
                 if e.state in DUE and e.next_at <= now and e.connector not in skip]
        ready.sort(key=lambda e: (e.next_at, e.id))
        return ready[:limit]

    def save(self, entry: Entry) -> None:
        if entry.id in self.entries:
            self.entries[entry.id] = entry

    def save_many(self, entries: Sequence[Entry]) -> None:
        for entry in entries:
            self.save(entry)

    def get(self, entry_id: str) -> Entry | None:
        return self.entries.get(entry_id)

    def get_many(self, ids: Collection[str]) -> dict[str, Entry]:
        return {i: self.entries[i] for i in ids if i in self.entries}

    def by_state(self, state: str, limit: int = 1000) -> list[Entry]:
        return sorted((e for e in self.entries.values() if e.state == state), key=lambda e: e.id)[:limit]

    def queued(self, connector: str) -> list[Entry]:
        return sorted((e for e in self.entries.values() if e.state == QUEUED and e.connector == connector),
                      key=lambda e: e.id)

    def of_actions(self, action_ids: Collection[str]) -> list[Entry]:
        return sorted((e for e in self.entries.values() if e.action_id in action_ids), key=lambda e: e.id)


def _t(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _from_t(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)


class SqliteOutbox:
    """The outbox in the store's SQLite file, on the store's connection, so entries commit in the
    same transaction as the state that produced them."""

    COLUMNS = ("id", "action_id", "connector", "user_id", "kind", "target", "payload", "created", "next_at",
               "state", "attempts", "last_error", "provider_id")

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn
        conn.execute("""CREATE TABLE IF NOT EXISTS outbox (
            id TEXT PRIMARY KEY, action_id TEXT NOT NULL, connector TEXT NOT NULL, user_id TEXT NOT NULL,
            kind TEXT NOT NULL, target TEXT NOT NULL, payload TEXT NOT NULL, created TEXT NOT NULL,
            next_at TEXT NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL, last_error TEXT,
            provider_id TEXT)""")
        for statement in INDEXES:
            conn.execute(statement.replace("CREATE INDEX", "CREATE INDEX IF NOT EXISTS"))
        conn.execute("DROP INDEX IF EXISTS outbox_due")  # before 2026-11-26: indexed every entry ever sent

    def _row(self, e: Entry) -> tuple:
        return (e.id, e.action_id, e.connector, e.user_id, e.kind, e.target, e.payload, _t(e.created),
                _t(e.next_at), e.state, e.attempts, e.last_error, e.provider_id)

    @staticmethod
    def _entry(row: tuple) -> Entry:
        (_, action_id, connector, user_id, kind, target, payload, created, next_at, state, attempts, last_error,
         provider_id) = row
        return Entry(action_id, connector, user_id, kind, target, payload, _from_t(created), _from_t(next_at),
                     state, attempts, last_error, provider_id)

    def add(self, entries: Iterable[Entry]) -> int:
        before = self.conn.total_changes
        self.conn.executemany(f"INSERT OR IGNORE INTO outbox VALUES ({', '.join('?' * len(self.COLUMNS))})",
                              [self._row(e) for e in entries])
        return self.conn.total_changes - before

    def due(self, now: datetime, limit: int = 100, skip: Collection[str] = ()) -> list[Entry]:
        skip = sorted(skip)
        but = f" AND connector NOT IN ({', '.join('?' * len(skip))})" if skip else ""
        rows = self.conn.execute(f"SELECT * FROM outbox WHERE {OPEN} AND next_at <= ?{but} "
                                 "ORDER BY next_at, id LIMIT ?", (_t(now), *skip, limit)).fetchall()
        return [self._entry(r) for r in rows]

    def release(self, now: datetime) -> int:
        """Leases of a previous life of this process back to pending, due at `now` (an SQLite store
        has one daemon, so none of them is in flight any more)."""
        return self.conn.execute("UPDATE outbox SET state = ?, next_at = ? WHERE state = ?",
                                 (PENDING, _t(now), SENDING)).rowcount

    def save(self, entry: Entry) -> None:
        self.save_many([entry])

    def save_many(self, entries: Sequence[Entry]) -> None:
        self.conn.executemany(
            "UPDATE outbox SET next_at = ?, state = ?, attempts = ?, last_error = ?, provider_id = ? WHERE id = ?",
            [(_t(e.next_at), e.state, e.attempts, e.last_error, e.provider_id, e.id) for e in entries])

    def get(self, entry_id: str) -> Entry | None:
        row = self.conn.execute("SELECT * FROM outbox WHERE id = ?", (entry_id,)).fetchone()
        return self._entry(row) if row else None

    def get_many(self, ids: Collection[str]) -> dict[str, Entry]:
        found = {}
        for chunk in sql.chunks(list(ids)):
            for row in self.conn.execute(f"SELECT * FROM outbox WHERE id IN ({sql.marks(len(chunk))})", chunk):
                entry = self._entry(row)
                found[entry.id] = entry
        return found

    def by_state(self, state: str, limit: int = 1000) -> list[Entry]:
        parked = f" AND {PARKED}" if state in (QUEUED, FAILED, DEAD) else ""  # then it reads the index
        rows = self.conn.execute(f"SELECT * FROM outbox WHERE state = ?{parked} ORDER BY id LIMIT ?",
                                 (state, limit)).fetchall()
        return [self._entry(r) for r in rows]

    def queued(self, connector: str) -> list[Entry]:
        rows = self.conn.execute(f"SELECT * FROM outbox WHERE state = ? AND {PARKED} AND connector = ? ORDER BY id",
                                 (QUEUED, connector)).fetchall()
        return [self._entry(r) for r in rows]

    def of_actions(self, action_ids: Collection[str]) -> list[Entry]:
        found: list[Entry] = []
        for chunk in sql.chunks(sorted(set(action_ids))):  # sorted here: an ORDER BY would scan the whole index
            found += map(self._entry, self.conn.execute(f"SELECT * FROM outbox WHERE {in_ranges(len(chunk), '?')}",
                                                        action_ranges(chunk)))
        return sorted(found, key=lambda e: e.id)
