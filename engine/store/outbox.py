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
retries them, an operator lists them and retries them once the cause is fixed. `held` and
`dropped`: an operator's emergency stop (engine.daemon.admin.pause_store) holds the sends of a paused
journey instead of attempting them; its resume puts them back (pending, in their order) or drops
them (`dropped`, with the pause as `last_error`), never deletes them.

Delivery itself is at least once towards the provider, exactly once where the provider honours
the idempotency key (the action id): a crash after the provider accepted but before the entry was
marked delivered retries it with the same key.

A claim (`due`) reads each connector's due entries on their own, through an index of the open
entries by connector (`BY_CONNECTOR`), as many as that connector has room for: the thousands of
entries of a slow provider's connector waiting behind its full pool are never read by a claim
that leaves them out, so a round costs what it claims, not what waits (issue 18: the claim walked
every open entry, 56-64 % of the delivery process's CPU with a backlog of 22,626).
"""

from __future__ import annotations

import bisect
import json
import sqlite3
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Collection, Iterable, Mapping, Protocol, Sequence, TypeVar

import orjson

from . import sql
from .serialize import utc_text

PENDING, SENDING, QUEUED, DELIVERED, FAILED, DEAD = "pending", "sending", "queued", "delivered", "failed", "dead"
HELD, DROPPED = "held", "dropped"  # sends of a paused journey; those its resume dropped
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
# The open entries by connector, for the claim (`due`): the connectors that have open entries, one
# index seek each, and each connector's due entries in order. (INDEXES are PostgreSQL's migration
# 4 as they stand; this one is its migration 6. `outbox_open` stays: the earliest entry due of
# all, which the delivery loop sleeps until, is its first.)
BY_CONNECTOR = f"CREATE INDEX outbox_open_connector ON outbox (connector, next_at, id) WHERE {OPEN}"
# The held entries (PostgreSQL's migration 10): a pause's count and its resume read them and no
# others; empty, and free to keep, while nothing is paused.
HELD_INDEX = f"CREATE INDEX outbox_held ON outbox (id) WHERE state = '{HELD}'"


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
        """`dataclasses.replace`, in 2 µs instead of 3.3 (an entry's fields are its `__dict__`): once
        or twice per delivery."""
        return Entry(**{**self.__dict__, **changes})


class Outbox(Protocol):
    def add(self, entries: Iterable[Entry]) -> int:
        """Insert entries not there yet; returns how many were new."""
        ...

    def due(self, now: datetime, limit: int = 100, skip: Collection[str] = (),
            room: Mapping[str, int] | None = None) -> list[Entry]:
        """Pending entries (and sending ones whose lease ran out) with `next_at <= now`: of each
        connector the oldest due first (then by id), at most `room[connector]` of it (a connector
        not in `room`: up to `limit`), none of the connectors in `skip` (their pools are full).
        When they come to more than `limit`, the connectors take turns (`fair_share`). The
        entries are returned oldest due first (then by id)."""
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


_Item = TypeVar("_Item")


def fair_share(lines: Iterable[Sequence[_Item]], limit: int, key: Callable[[_Item], tuple]) -> list[_Item]:
    """At most `limit` of the connectors' lines of due entries (each oldest first), in turns: the
    first of every line, then the second of every line, ..., each turn oldest first (`key`: the
    entry's (next_at, id)), so a connector's backlog, however old, takes no more of a round than
    any other connector with entries due. Returned by `key`."""
    lines = [line for line in lines if line]
    if sum(map(len, lines)) > limit:
        turns = sorted(((turn, key(e)), e) for line in lines for turn, e in enumerate(line))
        return sorted((e for _, e in turns[:limit]), key=key)
    return sorted((e for line in lines for e in line), key=key)


def claim_sizes(connectors: Iterable[str], limit: int, skip: Collection[str],
                room: Mapping[str, int] | None) -> dict[str, int]:
    """How many of each connector's due entries a claim reads: its room, up to `limit` (a connector
    not in `room`: `limit`); those skipped or without room are left out."""
    sizes = {c: min(limit, room.get(c, limit) if room else limit) for c in connectors if c not in skip}
    return {c: n for c, n in sizes.items() if n > 0}


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
        # the open entries by connector, as (next_at, id) in order: the SQL outboxes' BY_CONNECTOR
        self.open: dict[str, list[tuple[datetime, str]]] = {}

    def _keep(self, old: Entry | None, new: Entry) -> None:
        """`new` replaces `old` (None: it is new): the index of open entries follows."""
        if old is not None and old.state in DUE:
            line = self.open[old.connector]
            del line[bisect.bisect_left(line, (old.next_at, old.id))]
            if not line:
                del self.open[old.connector]
        if new.state in DUE:
            bisect.insort(self.open.setdefault(new.connector, []), (new.next_at, new.id))
        self.entries[new.id] = new

    def add(self, entries: Iterable[Entry]) -> int:
        new = 0
        for e in entries:
            if e.id not in self.entries:
                self._keep(None, e)
                new += 1
        return new

    def due(self, now: datetime, limit: int = 100, skip: Collection[str] = (),
            room: Mapping[str, int] | None = None) -> list[Entry]:
        lines = []
        for connector, size in claim_sizes(self.open, limit, skip, room).items():
            line = self.open[connector]
            lines.append(line[:bisect.bisect_right(line, now, hi=min(size, len(line)), key=_next_at)])
        return [self.entries[entry_id] for _, entry_id in fair_share(lines, limit, key=lambda k: k)]

    def save(self, entry: Entry) -> None:
        old = self.entries.get(entry.id)
        if old is not None:
            self._keep(old, entry)

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


def _next_at(key: tuple[datetime, str]) -> datetime:
    return key[0]


_SCALARS = frozenset({str, int, bool, type(None)})


def _plain_json(value: Any) -> bool:
    """Is `value` made only of what orjson writes as `json.dumps` does (read back, the same
    value): strings, ints, booleans, None, finite floats, lists, tuples and dicts with string keys?
    orjson writes a NaN or an infinity as null (json: NaN, Infinity) and a datetime, an enum, a
    dataclass or a subclass in its own way (json: `default=str`)."""
    kind = type(value)
    if kind in _SCALARS:
        return True
    if kind is float:
        return value - value == 0.0  # NaN and the infinities give NaN
    if kind is dict:
        for k, v in value.items():
            if type(k) is not str or not _plain_json(v):
                return False
        return True
    if kind is list or kind is tuple:
        for v in value:
            if not _plain_json(v):
                return False
        return True
    return False


def payload_json(document: Mapping[str, Any]) -> str:
    """An entry's `payload`: the action's JSON (`Action.to_json`) as `json.dumps(sort_keys=True,
    default=str)` writes it, in the sense that matters, what `json.loads` reads back from it. A plain
    document (nearly all) goes through orjson, on every event's path: 4.7 µs instead of 13 for the
    latency benchmark's action. Anything else (a NaN, a date, an int past 64 bits, a lone surrogate,
    a cycle) is written by `json.dumps` itself, byte for byte as before."""
    try:
        if _plain_json(document):
            return orjson.dumps(document, option=orjson.OPT_SORT_KEYS).decode()
    except (RecursionError, orjson.JSONEncodeError):
        pass
    return json.dumps(document, sort_keys=True, default=str)


def _from_t(text: str) -> datetime:
    """`utc_text`'s text back (always six digits and a Z): `fromisoformat` reads it as UTC, in 0.4 µs
    against `strptime`'s 15 (two per entry read, on the delivery path)."""
    return datetime.fromisoformat(text)


# The connectors that have open entries: one seek of BY_CONNECTOR each (a loose index scan).
CONNECTORS = f"""WITH RECURSIVE open (connector) AS (
        SELECT (SELECT connector FROM outbox WHERE {OPEN} ORDER BY connector LIMIT 1)
        UNION ALL
        SELECT (SELECT o.connector FROM outbox o WHERE {OPEN} AND o.connector > open.connector
                ORDER BY o.connector LIMIT 1)
        FROM open WHERE open.connector IS NOT NULL)
    SELECT connector FROM open WHERE connector IS NOT NULL"""
# One connector's due entries, oldest first: a range of BY_CONNECTOR.
DUE_OF = f"SELECT * FROM outbox WHERE {OPEN} AND connector = ? AND next_at <= ? ORDER BY next_at, id LIMIT ?"


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
        for statement in (*INDEXES, BY_CONNECTOR, HELD_INDEX):  # an older file gets the indexes it lacks
            conn.execute(statement.replace("CREATE INDEX", "CREATE INDEX IF NOT EXISTS"))
        conn.execute("DROP INDEX IF EXISTS outbox_due")  # before 2026-11-26: indexed every entry ever sent

    def _row(self, e: Entry) -> tuple:
        return (e.id, e.action_id, e.connector, e.user_id, e.kind, e.target, e.payload, utc_text(e.created),
                utc_text(e.next_at), e.state, e.attempts, e.last_error, e.provider_id)

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

    def due(self, now: datetime, limit: int = 100, skip: Collection[str] = (),
            room: Mapping[str, int] | None = None) -> list[Entry]:
        open_ = [c for (c,) in self.conn.execute(CONNECTORS)]
        lines = [[self._entry(r) for r in self.conn.execute(DUE_OF, (connector, utc_text(now), size))]
                 for connector, size in claim_sizes(open_, limit, skip, room).items()]
        return fair_share(lines, limit, key=lambda e: (e.next_at, e.id))

    def release(self, now: datetime) -> int:
        """Leases of a previous life of this process back to pending, due at `now` (an SQLite store
        has one daemon, so none of them is in flight any more)."""
        return self.conn.execute("UPDATE outbox SET state = ?, next_at = ? WHERE state = ?",
                                 (PENDING, utc_text(now), SENDING)).rowcount

    def save(self, entry: Entry) -> None:
        self.save_many([entry])

    def save_many(self, entries: Sequence[Entry]) -> None:
        self.conn.executemany(
            "UPDATE outbox SET next_at = ?, state = ?, attempts = ?, last_error = ?, provider_id = ? WHERE id = ?",
            [(utc_text(e.next_at), e.state, e.attempts, e.last_error, e.provider_id, e.id) for e in entries])

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
