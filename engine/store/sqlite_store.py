"""`SqliteStore`: the daemon's `Store` on one SQLite file (behaves like `MemoryStore`, persisted).

Schema (created when missing; `schema_version` holds 1, and a file of another version is refused):

    profiles(user_id TEXT PK, zone TEXT, state BLOB, wake TEXT NULL)
        indexes on (wake, user_id) and (zone, user_id): covering, so timers and zones need no sort
    identities(alias TEXT PK, user_id TEXT)
    messages(message_id TEXT PK, seen_at INTEGER NULL)   when it was taken, microseconds since 1970
    actions(id TEXT PK, time, user, journey, version, path, kind, target, outcome, reason, rule,
            json TEXT)                                                  index on user
    instances(user_id, journey, version, entry, path, wait, wake, PK(user_id, journey))

`profiles.state` is `engine.store.serialize.state_to_bytes`; `profiles.wake` is `state.wake`, so a
profile and its timer are one row and can never disagree. `instances` mirrors each profile's
journeys in flight for admin queries (live counts per step): `save` rewrites the profile's rows,
so a journey no longer in flight has none. Times in columns are fixed-width ISO-8601 UTC text
(`2026-03-02T10:00:00.000000Z`) that sorts as the times do, so the first timers are one indexed
`ORDER BY wake, user_id LIMIT n`, in the same (due, user id) order as `MemoryStore`; `next_timer`
answers from those, held in memory (`engine.store.timer_window`: this connection makes every change to
them, so it can keep them exact). Ids sort by
SQLite's BINARY collation, which for UTF-8 text is code-point order: Python's `sorted`.

Transactions. The connection runs in autocommit mode (`isolation_level=None`: the sqlite3 module
opens no transaction behind our back). Outside an explicit transaction each method is atomic and
durable on its own: a single statement commits by itself, and a method that writes several rows
(`save`, `delete`, `record`) wraps them in its own `BEGIN IMMEDIATE ... COMMIT`. The daemon
groups one message's writes (dedupe, links, profiles, actions) with

    with store.transaction():
        engine.handle(msg)

`BEGIN IMMEDIATE` takes the write lock up front, so a transaction never fails half-way on a lock
upgrade; an exception rolls everything back (the messageId too, so a retry is not taken for a
duplicate). Transactions nest as savepoints. sqlite-utils creates the schema (its methods join
an open transaction); the per-event reads and writes are prepared SQL on the connection, a few
statements whose cost is SQLite's, not a layer's.

Durability: WAL journal with `synchronous=NORMAL`: a commit is atomic and survives a crash of the
process; a power loss may lose the last commits, never corrupt the file. The connection belongs to
the thread that opened the store (sqlite3's default check).

`path_or_url`: `sqlite:///relative/path.db`, `sqlite:////abs/path.db`, a plain path, or
`:memory:` (also `sqlite://` and `sqlite:///:memory:`).
"""

from __future__ import annotations

import sqlite3
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterator, Mapping, Sequence

import sqlite_utils

from ..core.effects import Action
from ..core.state import UserState
from . import sql as side
from .serialize import action_to_row, state_from_bytes, state_to_bytes, utc_text
from .sql import begin_immediate
from .timer_window import TimerWindow
from .urls import sqlite_path
from .write_behind import WriteBehind

SCHEMA_VERSION = 1

_fromiso = datetime.fromisoformat
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)
_EMPTY: Mapping[str, Any] = MappingProxyType({})

_SAVE = ("INSERT INTO profiles (user_id, zone, state, wake) VALUES (?, ?, ?, ?) "
         "ON CONFLICT (user_id) DO UPDATE SET zone = excluded.zone, state = excluded.state, "
         "wake = excluded.wake")
_UPDATE = "UPDATE profiles SET state = ?, wake = ? WHERE user_id = ?"
_UPDATE_STATE = "UPDATE profiles SET state = ? WHERE user_id = ?"  # the same wake: its index entry stays as it is
_INSTANCE = ("INSERT INTO instances (user_id, journey, version, entry, path, wait, wake) "
             "VALUES (?, ?, ?, ?, ?, ?, ?)")
_ACTION = ("INSERT OR REPLACE INTO actions (id, time, user, journey, version, path, kind, target, "
           "outcome, reason, rule, json) VALUES (:id, :time, :user, :journey, :version, :path, :kind, "
           ":target, :outcome, :reason, :rule, :json)")
_SEEN = "INSERT OR IGNORE INTO messages (message_id, seen_at) VALUES (?, ?)"
_SEEN_SINCE = ("INSERT INTO messages (message_id, seen_at) VALUES (?, ?) ON CONFLICT (message_id) DO UPDATE "
               "SET seen_at = excluded.seen_at WHERE messages.seen_at < ?")
_FIRST_TIMERS = "SELECT wake, user_id FROM profiles WHERE wake IS NOT NULL ORDER BY wake, user_id LIMIT ?"


def _instance_rows(uid: str, instances: Mapping[str, Any]) -> list[tuple]:
    return [(uid, i.journey, i.version, i.entry, i.path, i.wait, None if i.wake is None else utc_text(i.wake))
            for i in instances.values()]


def _changed(uid: str, before: Mapping[str, Any], after: Mapping[str, Any]) -> bool:
    """Do the journeys in flight `after` need other `instances` rows than `before`? (The same
    mapping, or both empty, the common cases, are answered without building the rows.)"""
    if before is after or (not before and not after):
        return False
    if not before or not after:
        return True
    return _instance_rows(uid, before) != _instance_rows(uid, after)


class SqliteStore(side.ModelVersions):
    """The `Store` protocol on SQLite (see the module docstring for the schema and transactions)."""

    def __init__(self, path_or_url: str):
        self.path = sqlite_path(path_or_url)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.conn = sqlite3.connect(self.path, isolation_level=None)
        self.db = sqlite_utils.Database(self.conn)
        self._depth = 0  # open transaction() blocks
        self._behind = WriteBehind()  # rows appended for the commit (the trail, the action log)
        self._timers = TimerWindow(self._first_timers)  # next_timer from memory: this connection writes them all
        # (user, zone, journeys in flight, wake as text) as the file holds them
        self._last: tuple[str, str | None, Mapping[str, Any], str | None] | None = None
        if self.path != ":memory:":
            self.db.enable_wal()
        self.conn.execute("PRAGMA synchronous = NORMAL")
        self._create()

    # ------------------------------------------------------------------ schema

    def _create(self) -> None:
        db = self.db
        with self.transaction():
            if db["schema_version"].exists():
                row = self.conn.execute("SELECT version FROM schema_version").fetchone()
                if row is None or row[0] != SCHEMA_VERSION:
                    raise RuntimeError(f"{self.path}: store schema version {row and row[0]!r}, "
                                       f"this engine reads {SCHEMA_VERSION}")
            else:
                db["schema_version"].create({"version": int})
                self.conn.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            db["profiles"].create({"user_id": str, "zone": str, "state": bytes, "wake": str},
                                  pk="user_id", if_not_exists=True)
            db["profiles"].create_index(["wake", "user_id"], if_not_exists=True)
            db["profiles"].create_index(["zone", "user_id"], if_not_exists=True)
            db["identities"].create({"alias": str, "user_id": str}, pk="alias", if_not_exists=True)
            db["messages"].create({"message_id": str, "seen_at": int}, pk="message_id", if_not_exists=True)
            # the models' trained versions (engine.daemon.training.Training): a restart scores at once
            db["models"].create({"version": str, "trained_at": str, "body": bytes}, pk="version", if_not_exists=True)
            # who trains which moment (`claim_training`): one process here, but the same code as PostgreSQL's
            db["model_claims"].create({"moment": str, "owner": str, "expires": str}, pk="moment", if_not_exists=True)
            if "seen_at" not in db["messages"].columns_dict:  # a file from before the dedupe window
                db["messages"].add_column("seen_at", int)
            db["actions"].create(
                {"id": str, "time": str, "user": str, "journey": str, "version": str, "path": str,
                 "kind": str, "target": str, "outcome": str, "reason": str, "rule": str, "json": str},
                pk="id", if_not_exists=True)
            db["actions"].create_index(["user"], if_not_exists=True)
            db["instances"].create(
                {"user_id": str, "journey": str, "version": str, "entry": int, "path": str, "wait": str,
                 "wake": str},
                pk=("user_id", "journey"), if_not_exists=True)

    # ------------------------------------------------------------------ transactions

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """All writes inside commit together, or none on an exception. Nested blocks are
        savepoints: an exception caught inside the outer block undoes only the inner one."""
        conn = self.conn
        depth = self._depth
        name = f"s{depth}"
        if depth == 0:
            begin_immediate(conn)
        else:
            conn.execute(f"SAVEPOINT {name}")
        self._depth = depth + 1
        mark = self._behind.mark()
        try:
            yield
            if depth == 0:
                self._behind.flush()  # the appended rows, one statement per table
        except BaseException:
            self._depth = depth
            self._behind.undo(mark)
            self._timers.invalidate()  # the rolled-back saves may have moved timers
            self._last = None  # and the row may no longer be what was last loaded or saved
            if depth == 0:
                conn.execute("ROLLBACK")
            else:
                conn.execute(f"ROLLBACK TO {name}")
                conn.execute(f"RELEASE {name}")
            raise
        self._depth = depth
        conn.execute("COMMIT" if depth == 0 else f"RELEASE {name}")

    def defer(self, write: Any, rows: list[Any]) -> None:
        """`write(rows)` at this transaction's commit, or now outside one (engine.store.write_behind)."""
        self._behind.defer(self._depth > 0, write, rows)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "SqliteStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ------------------------------------------------------------------ profiles

    def load(self, user_id: str) -> UserState | None:
        row = self.conn.execute("SELECT state, zone, wake FROM profiles WHERE user_id = ?", (user_id,)).fetchone()
        if row is None:
            self._last = (user_id, None, _EMPTY, None)
            return None
        state = state_from_bytes(row[0])
        self._last = (user_id, row[1], state.instances, row[2])
        return state

    def save(self, state: UserState, zone: str) -> None:
        """The engine saves the user it just loaded: what the row already holds (its zone, its
        journeys in flight, its wake: the same for most events) is not written again. A wake written
        again costs its index entry's delete and insert: with 200,000 users, about 32 µs an update
        instead of 18, and a page more in the WAL."""
        uid = state.user_id
        wake = state.wake
        instances = state.instances
        last = self._last
        known = last is not None and last[0] == uid
        execute = self.conn.execute
        with self._atomic():
            self._timers.moved(uid, wake)
            blob, due = state_to_bytes(state), None if wake is None else utc_text(wake)
            if known and last[1] == zone:  # type: ignore[index]
                if last[3] == due:  # type: ignore[index]
                    execute(_UPDATE_STATE, (blob, uid))
                else:
                    execute(_UPDATE, (blob, due, uid))
            else:
                execute(_SAVE, (uid, zone, blob, due))
            before = last[2] if known else None  # type: ignore[index]  # None: what the file holds is unknown
            if before is None or _changed(uid, before, instances):
                if before is None or before:
                    execute("DELETE FROM instances WHERE user_id = ?", (uid,))
                if instances:
                    self.conn.executemany(_INSTANCE, _instance_rows(uid, instances))
            self._last = (uid, zone, instances, due)

    def delete(self, user_id: str) -> None:
        with self._atomic():
            self._timers.moved(user_id, None)
            self._last = None
            self.conn.execute("DELETE FROM profiles WHERE user_id = ?", (user_id,))
            self.conn.execute("DELETE FROM instances WHERE user_id = ?", (user_id,))

    def _atomic(self) -> AbstractContextManager:
        """A method's several writes as one: its own transaction, or inside the caller's, which
        is then the unit that commits or rolls back (no savepoint per save: two statements each)."""
        return self.transaction() if self._depth == 0 else nullcontext()

    # ------------------------------------------------------------------ identities and dedupe

    def resolve(self, any_id: str) -> str | None:
        row = self.conn.execute("SELECT user_id FROM identities WHERE alias = ?", (any_id,)).fetchone()
        return None if row is None else row[0]

    def link(self, alias: str, user_id: str) -> None:
        if alias != user_id:
            self.conn.execute("INSERT INTO identities (alias, user_id) VALUES (?, ?) "
                              "ON CONFLICT (alias) DO UPDATE SET user_id = excluded.user_id", (alias, user_id))

    def seen(self, message_id: str, at: datetime | None = None, since: datetime | None = None) -> bool:
        when = None if at is None else (at - _EPOCH) // _MICROSECOND
        if since is None:
            cur = self.conn.execute(_SEEN, (message_id, when))
        else:  # a sighting before `since` is renewed (a row of unknown time, NULL, is not)
            cur = self.conn.execute(_SEEN_SINCE, (message_id, when, (since - _EPOCH) // _MICROSECOND))
        return cur.rowcount == 0

    # ------------------------------------------------------------------ timers and listings

    def next_timer(self, until: datetime) -> tuple[datetime, str] | None:
        return self._timers.next(until)

    def _first_timers(self, n: int) -> list[tuple[datetime, str]]:
        return [(_fromiso(wake), uid) for wake, uid in self.conn.execute(_FIRST_TIMERS, (n,))]

    def users(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT user_id FROM profiles ORDER BY user_id")]

    def users_in_zone(self, zone: str) -> list[str]:
        return [r[0] for r in self.conn.execute(
            "SELECT user_id FROM profiles WHERE zone = ? ORDER BY user_id", (zone,))]

    def zones(self) -> set[str]:
        return {r[0] for r in self.conn.execute("SELECT DISTINCT zone FROM profiles")}

    # ------------------------------------------------------------------ action log

    def record(self, actions: Sequence[Action]) -> None:
        rows = [action_to_row(a) for a in actions]
        if rows:
            self.defer(self._write_actions, rows)

    def _write_actions(self, rows: list[dict[str, Any]]) -> None:
        with self._atomic():
            self.conn.executemany(_ACTION, rows)  # an id twice: the later one stays (OR REPLACE)
