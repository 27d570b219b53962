"""`PostgresStore`: the `Store` protocol on PostgreSQL (psycopg 3), for when one SQLite file is not
enough: a server others can back up and query, and later several workers on one database.

It behaves like `SqliteStore` (and so like `MemoryStore`): the same tables, the same bytes in them
(`engine.store.serialize`), the same orders. The tables live in one PostgreSQL schema, named by the
URL's `schema` parameter (default `journeys`), so one database can hold several stores (a
daemon's, dry-runs', one per test):

    postgresql://user:password@host:5432/dbname?schema=shop

Other query parameters are libpq's (`sslmode`, `connect_timeout`, ...). Opening the store applies
the missing schema migrations (`engine.store.migrations`, version 1 = the tables below) and refuses a
schema a newer Journeys wrote.

    profiles(user_id PK, zone, state bytea, wake timestamptz NULL)  indexes (wake, user_id), (zone, user_id)
    identities(alias PK, user_id)      messages(message_id PK)
    actions(id PK, time timestamptz, "user", journey, version, path, kind, target, outcome, reason,
            rule, json)                                                         index on "user"
    instances(user_id, journey, version, entry, path, wait, wake, PK(user_id, journey))
    outbox(...)                                                       see engine.store.pg_outbox

Ids are `COLLATE "C"`: byte order of UTF-8, which is code-point order, so `users()` is Python's
`sorted` and `next_timer` is one index scan in (due, user id) order, as in the other stores.

Round trips. Outside a transaction each method is one SQL statement, atomic on its own. Inside
one, what nothing reads back before the commit is held and written at the commit, one statement
per table for the whole batch (engine.store.write_behind): the action log (`record`), and the profiles
(`save`: the profile upserted, the instances rows of journeys no longer in flight deleted, the
others upserted, in one statement of data-modifying CTEs with the rows passed as arrays through
`unnest`). `load` answers from the states saved in the transaction, and every query that reads
`profiles` or `instances` (the next timer, the users of a zone or a schedule, a delete, a
savepoint) writes the held saves first. Arrays are sent in binary (`%b`): psycopg's text format
escapes each element in Python, 13 times slower for a batch of outbox entries. psycopg 3
prepares a statement on the server once it has run a few times, so they are parsed once.

Transactions. The connection is in autocommit mode outside `transaction()` blocks; a block is one
PostgreSQL transaction (READ COMMITTED), nested blocks are savepoints, an exception rolls back and
propagates: the same contract as `SqliteStore.transaction`. The connection belongs to the thread
that uses the store (the daemon's worker), as with SQLite; each store object has its own.

Text in PostgreSQL cannot hold the NUL character, so an id containing one is refused by the
server (psycopg's `DataError`); SQLite would store it.
"""

from __future__ import annotations

import hashlib
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any, Iterable, Iterator, Sequence

from ..core.effects import Action
from ..core.state import UserState
from . import sql as side
from .base import StoreError
from .migrations import PARTITIONS, migrate
from .serialize import action_to_row, state_from_bytes, state_to_bytes
from .urls import parse_url, redact
from .write_behind import WriteBehind

_SAVE = """
WITH profile AS (
    INSERT INTO profiles (user_id, zone, state, wake, part)
    SELECT * FROM unnest(%(u)b::text[], %(zone)b::text[], %(state)b::bytea[], %(wake)b::timestamptz[],
                         %(part)b::smallint[])
    ON CONFLICT (user_id) DO UPDATE SET zone = excluded.zone, state = excluded.state, wake = excluded.wake,
        part = excluded.part),
ended AS (
    DELETE FROM instances i WHERE i.user_id = ANY(%(u)b::text[]) AND NOT EXISTS (
        SELECT FROM unnest(%(iu)b::text[], %(journeys)b::text[]) AS kept (user_id, journey)
        WHERE kept.user_id = i.user_id AND kept.journey = i.journey))
INSERT INTO instances (user_id, journey, version, entry, path, wait, wake)
SELECT * FROM unnest(%(iu)b::text[], %(journeys)b::text[], %(versions)b::text[], %(entries)b::integer[],
                     %(paths)b::text[], %(waits)b::text[], %(wakes)b::timestamptz[])
ON CONFLICT (user_id, journey) DO UPDATE SET version = excluded.version, entry = excluded.entry,
    path = excluded.path, wait = excluded.wait, wake = excluded.wake"""

_DELETE = ("WITH instances_gone AS (DELETE FROM instances WHERE user_id = %(u)s) "
           "DELETE FROM profiles WHERE user_id = %(u)s")

_ACTION_COLUMNS = ("id", "time", "user", "journey", "version", "path", "kind", "target", "outcome", "reason",
                   "rule", "json")
_RECORD = (
    'INSERT INTO actions (id, time, "user", journey, version, path, kind, target, outcome, reason, rule, json) '
    "SELECT * FROM unnest(%b::text[], %b::timestamptz[], %b::text[], %b::text[], %b::text[], %b::text[], "
    "%b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[]) "
    "ON CONFLICT (id) DO UPDATE SET time = excluded.time, \"user\" = excluded.\"user\", "
    "journey = excluded.journey, version = excluded.version, path = excluded.path, kind = excluded.kind, "
    "target = excluded.target, outcome = excluded.outcome, reason = excluded.reason, rule = excluded.rule, "
    "json = excluded.json")

_EARLIEST = "SELECT wake, user_id FROM profiles WHERE wake IS NOT NULL ORDER BY wake, user_id LIMIT 1"
_EARLIEST_IN = ("SELECT wake, user_id FROM profiles WHERE wake IS NOT NULL AND part = ANY(%b::smallint[]) "
                "ORDER BY wake, user_id LIMIT 1")
EARLIEST_FRESH = 0.5  # seconds the earliest timer read is trusted (another worker may add one)
_NO_TIMER = (datetime.max.replace(tzinfo=timezone.utc), "")


# ----------------------------------------------------------------------------------- partitions


def partition_of(any_id: str, total: int = PARTITIONS) -> int:
    """The partition of an id: the first 32 bits of its MD5, modulo `total`. PostgreSQL computes
    the same (`('x' || substr(md5(id), 1, 8))::bit(32)::bigint % total`) for rows it backfills."""
    return int(hashlib.md5(any_id.encode()).hexdigest()[:8], 16) % total


def advisory_key(any_id: str) -> int:
    """A signed 64-bit key for `pg_advisory_xact_lock`, the same in every process."""
    return int.from_bytes(hashlib.blake2b(any_id.encode(), digest_size=8).digest(), "big", signed=True)


def sender_key(raw: dict[str, Any]) -> str:
    """The id a Segment call is partitioned by: userId, else anonymousId."""
    return str(raw.get("userId") or raw.get("anonymousId") or "")


# ----------------------------------------------------------------------------------- connections


def connect(url: str):
    """(a psycopg connection in autocommit mode, its schema name), the session's time zone UTC and
    its search_path the schema (which need not exist yet). StoreError when the server cannot be
    reached or refuses us, naming the URL without its password."""
    import psycopg
    from psycopg import sql

    conninfo, schema = parse_url(url)
    extra: dict[str, Any] = {}
    if "connect_timeout" not in conninfo:
        extra["connect_timeout"] = 10  # an unreachable host fails in seconds, not libpq's minutes
    try:
        conn = psycopg.connect(conninfo, autocommit=True, **extra)
    except psycopg.Error as e:
        reason = " ".join(str(e).split())  # libpq's message, on one line; it never holds the password
        raise StoreError(f"{redact(url)}: cannot connect to PostgreSQL: {reason}") from None
    try:
        conn.execute("SET TIME ZONE 'UTC'")  # timestamptz read back as timezone.utc datetimes
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
    except BaseException:
        conn.close()
        raise
    return conn, schema


# ----------------------------------------------------------------------------------- the store


class PostgresStore(side.ModelVersions):
    """The `Store` protocol on PostgreSQL (see the module docstring for the schema and transactions)."""

    def __init__(self, url: str):
        self.url = redact(url)
        self.parts: frozenset[int] | None = None  # timers and schedules only of these partitions (None: all)
        self._depth = 0  # open transaction() blocks
        self._behind = WriteBehind()  # rows held for the commit (profiles, actions, trail, outbox)
        self._earliest: tuple[datetime, str] | None = None  # see next_timer
        self._earliest_parts: frozenset[int] | None = None
        self._earliest_at = 0.0
        self._held: set[int] = set()  # advisory lock keys held in the current transaction
        self._forget_batch()
        self.conn, self.schema = connect(url)
        try:
            migrate(self.conn, self.schema, self.url)
        except BaseException:
            self.conn.close()
            raise

    # ------------------------------------------------------------------ transactions

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All writes inside commit together, or none on an exception. Nested blocks are
        savepoints: an exception caught inside the outer block undoes only the inner one."""
        outer = self._depth == 0
        if outer:
            self._held = set()  # advisory locks end with the transaction
        else:  # the saves held so far belong to the outer block: written before the savepoint, a
            self._saved()  # rollback of this block neither undoes them nor leaves them unwritten
        self._depth += 1
        mark = self._behind.mark()
        try:
            with self.conn.transaction():
                yield
                if outer:
                    self._behind.flush()  # the appended rows, one statement per table, before COMMIT
        except BaseException:
            self._behind.undo(mark)
            self._forget_batch()  # what was read or written in the rolled-back block is not so
            raise
        finally:
            self._depth -= 1
            if outer:
                self._forget_batch()

    # ------------------------------------------------------------------ a batch's reads at once

    def prefetch(self, messages: Sequence[Any], moments: Sequence[datetime | None] | None = None) -> None:
        """Inside a transaction, before the engine takes `messages` (at `moments`, the engine's
        time for each): lock every id they name (in one statement and a fixed order, so two
        workers rarely deadlock), mark the messageIds never seen before taken, and read the
        identity links and profiles they need, three round trips for the batch instead of three
        per message. Until the transaction ends, `seen` (of a new messageId), `resolve` and `load`
        answer from what was read here, kept current by `link`, `save` and `delete`; a messageId
        seen before is asked again by `seen`, which knows the dedupe window."""
        if self._depth == 0 or not messages:
            return
        ids = {i for m in messages for i in (m.user_id, m.anonymous_id, getattr(m, "previous_id", None)) if i}
        self.lock(ids)
        first: dict[str, datetime | None] = {}
        for m, at in zip(messages, moments if moments is not None else [None] * len(messages)):
            first.setdefault(m.message_id, at)
        new = {r[0] for r in self.conn.execute(
            "INSERT INTO messages (message_id, seen_at) SELECT * FROM unnest(%b::text[], %b::timestamptz[]) "
            "ON CONFLICT DO NOTHING RETURNING message_id", (list(first), list(first.values())))}
        self._batch_seen = {mid: False for mid in new}
        self._links = dict(self.conn.execute("SELECT alias, user_id FROM identities WHERE alias = ANY(%b::text[])",
                                             (sorted(ids),)).fetchall())
        self._links_known = set(ids)
        profiles = ids | set(self._links.values())
        self.lock(profiles)
        self._saved()
        self._states = {uid: state_from_bytes(raw) for uid, raw in self.conn.execute(
            "SELECT user_id, state FROM profiles WHERE user_id = ANY(%b::text[])", (sorted(profiles),))}
        self._states_known = profiles

    def _forget_batch(self) -> None:
        self._batch_seen: dict[str, bool] = {}
        self._links: dict[str, str] = {}
        self._links_known: set[str] = set()
        self._states: dict[str, UserState] = {}
        self._states_known: set[str] = set()

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "PostgresStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ profiles

    def load(self, user_id: str) -> UserState | None:
        if user_id in self._states_known:
            return self._states.get(user_id)
        row = self.conn.execute("SELECT state FROM profiles WHERE user_id = %s", (user_id,)).fetchone()
        return None if row is None else state_from_bytes(row[0])

    def save(self, state: UserState, zone: str) -> None:
        """Inside a transaction the row is written at the commit, with the batch's other saves in
        one statement (engine.store.write_behind): `load` answers from the batch's states meanwhile,
        and every query that reads `profiles` or `instances` writes the saves first."""
        earliest = self._earliest
        if earliest is not None and (state.user_id == earliest[1] or (
                state.wake is not None and state.wake < earliest[0])):
            self._earliest = None  # the remembered earliest timer moved, or this one is earlier
        if self._depth > 0:
            self._states[state.user_id] = state
            self._states_known.add(state.user_id)
        self.defer(self._write_states, [(state, zone)])

    def _write_states(self, rows: list[tuple[UserState, str]]) -> None:
        """One statement for them all; a user saved twice keeps the later state."""
        latest = {state.user_id: (state, zone) for state, zone in rows}
        instances = [(uid, i) for uid, (state, _) in latest.items() for i in state.instances.values()]
        self.conn.execute(_SAVE, {
            "u": list(latest), "zone": [zone for _, zone in latest.values()],
            "state": [state_to_bytes(state) for state, _ in latest.values()],
            "wake": [state.wake for state, _ in latest.values()], "part": [partition_of(uid) for uid in latest],
            "iu": [uid for uid, _ in instances], "journeys": [i.journey for _, i in instances],
            "versions": [i.version for _, i in instances], "entries": [i.entry for _, i in instances],
            "paths": [i.path for _, i in instances], "waits": [i.wait for _, i in instances],
            "wakes": [i.wake for _, i in instances]})

    def _saved(self) -> None:
        """Before a query that reads profiles or instances: the saves held for the commit, written."""
        self._behind.flush(self._write_states)

    def delete(self, user_id: str) -> None:
        if self._earliest is not None and self._earliest[1] == user_id:
            self._earliest = None
        self._saved()  # a save of this user held for the commit must not bring it back
        self._states.pop(user_id, None)
        self.conn.execute(_DELETE, {"u": user_id})

    # ------------------------------------------------------------------ identities and dedupe

    def resolve(self, any_id: str) -> str | None:
        if any_id in self._links_known:
            return self._links.get(any_id)
        row = self.conn.execute("SELECT user_id FROM identities WHERE alias = %s", (any_id,)).fetchone()
        return None if row is None else row[0]

    def link(self, alias: str, user_id: str) -> None:
        if alias != user_id:
            if self._links_known:
                self._links[alias] = user_id
                self._links_known.add(alias)
            self.conn.execute("INSERT INTO identities (alias, user_id) VALUES (%s, %s) "
                              "ON CONFLICT (alias) DO UPDATE SET user_id = excluded.user_id", (alias, user_id))

    def seen(self, message_id: str, at: datetime | None = None, since: datetime | None = None) -> bool:
        if self._batch_seen.pop(message_id, None) is not None:
            return False  # new, marked by prefetch; a repeat later in the batch is asked below
        if since is None:
            cur = self.conn.execute("INSERT INTO messages (message_id, seen_at) VALUES (%s, %s) "
                                    "ON CONFLICT DO NOTHING", (message_id, at))
        else:  # a sighting before `since` is renewed (a row of unknown time, NULL, is not)
            cur = self.conn.execute("INSERT INTO messages (message_id, seen_at) VALUES (%s, %s) "
                                    "ON CONFLICT (message_id) DO UPDATE SET seen_at = excluded.seen_at "
                                    "WHERE messages.seen_at < %s", (message_id, at, since))
        return cur.rowcount == 0

    # ------------------------------------------------------------------ timers and listings

    def next_timer(self, until: datetime) -> tuple[datetime, str] | None:
        """The earliest timer due by `until`. The engine asks before every message; the answer
        "the earliest is later than that" is remembered (`_earliest`) until a save or delete in
        this process could change it, the partitions change, or `EARLIEST_FRESH` seconds pass
        (a worker stitching an anonymous id may set a wake in our partitions): a round trip per
        message was 15 % of the engine's time on PostgreSQL."""
        earliest = self._earliest
        if (earliest is None or self._earliest_parts != self.parts
                or time.monotonic() - self._earliest_at > EARLIEST_FRESH):
            self._saved()
            if self.parts is None:
                row = self.conn.execute(_EARLIEST).fetchone()
            else:
                row = self.conn.execute(_EARLIEST_IN, (sorted(self.parts),)).fetchone()
            earliest = _NO_TIMER if row is None else (row[0], row[1])
            self._earliest, self._earliest_parts, self._earliest_at = earliest, self.parts, time.monotonic()
        return earliest if earliest[0] <= until else None

    def users(self) -> list[str]:
        self._saved()
        return [r[0] for r in self.conn.execute("SELECT user_id FROM profiles ORDER BY user_id")]

    def users_in_zone(self, zone: str) -> list[str]:
        self._saved()
        if self.parts is None:
            return [r[0] for r in self.conn.execute(
                "SELECT user_id FROM profiles WHERE zone = %s ORDER BY user_id", (zone,))]
        return [r[0] for r in self.conn.execute(
            "SELECT user_id FROM profiles WHERE zone = %s AND part = ANY(%b::smallint[]) ORDER BY user_id",
            (zone, sorted(self.parts)))]

    # ------------------------------------------------------------------ several workers

    def schedule_users(self, name: str, zone: str | None, fire: datetime) -> list[str]:
        """The users a scheduled entry reaches at `fire` (those of `zone`, or all), sorted. With
        partitions (several workers), only those of our partitions that no worker fired this
        entry for yet: the claim (`schedule_runs`) commits with the steps it causes, so a
        partition that moves between workers never gets the same firing twice."""
        if self.parts is None:
            return self.users() if zone is None else self.users_in_zone(zone)
        self._saved()
        claimed = [r[0] for r in self.conn.execute(
            "INSERT INTO schedule_runs (name, zone, fire, part) SELECT %s, %s, %s, p FROM unnest(%b::smallint[]) AS p "
            "ON CONFLICT DO NOTHING RETURNING part", (name, zone or "", fire, sorted(self.parts)))]
        if not claimed:
            return []
        if zone is None:
            return [r[0] for r in self.conn.execute(
                "SELECT user_id FROM profiles WHERE part = ANY(%b::smallint[]) ORDER BY user_id", (claimed,))]
        return [r[0] for r in self.conn.execute(
            "SELECT user_id FROM profiles WHERE zone = %s AND part = ANY(%b::smallint[]) ORDER BY user_id",
            (zone, claimed))]

    def lock(self, ids: Iterable[str]) -> None:
        """Hold these profile ids until the transaction ends (`pg_advisory_xact_lock`), in a fixed
        order. Two workers may touch one profile at once when identities are stitched across
        partitions (an anonymous id's events go to its own partition, its profile may be a known
        user's elsewhere): the engine locks every id a message names, and the profile it
        resolves to, before reading them, so the second waits for the first's commit."""
        if self.parts is None or self._depth == 0:
            return  # one worker (or outside a transaction, where a lock would end at once)
        keys = sorted({advisory_key(i) for i in ids if i} - self._held)
        if keys:
            self.conn.execute("SELECT pg_advisory_xact_lock(k) FROM unnest(%b::bigint[]) AS k", (keys,))
            self._held.update(keys)

    def zones(self) -> set[str]:
        self._saved()
        return {r[0] for r in self.conn.execute("SELECT DISTINCT zone FROM profiles")}

    # ------------------------------------------------------------------ action log

    def record(self, actions: Sequence[Action]) -> None:
        rows = [action_to_row(a) for a in actions]
        if rows:
            self.defer(self._write_actions, rows)

    def _write_actions(self, rows: list[dict[str, Any]]) -> None:
        """One statement for them all; an id twice keeps the later action, as a replace would."""
        latest = {r["id"]: r for r in rows}
        self.conn.execute(_RECORD, [[r[c] for r in latest.values()] for c in _ACTION_COLUMNS])

    def defer(self, write: Any, rows: list[Any]) -> None:
        """`write(rows)` at this transaction's commit, or now outside one (engine.store.write_behind)."""
        self._behind.defer(self._depth > 0, write, rows)
