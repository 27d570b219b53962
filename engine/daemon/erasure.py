"""Forgetting a user (GDPR erasure, `DELETE /admin/users/{id}`): what goes, what stays and why.

`forget` runs in the admin route's transaction, so the daemon either forgets the user entirely or
not at all. For the user id and every id linked to it (`trail.ids_of`: the anonymous ids, aliases):

- deleted: the profile and its journeys in flight, the identities, the user's outbox entries, the
  trail, and the messages naming any of the ids in the inbox (those still to process, and those
  processed and not yet pruned) and in `inbox_failed`;
- the action log keeps its rows, so that counts per journey still add up, pseudonymised: no payload
  (`json` NULL), `user` the keyed hash of the id and `id` the keyed hash of the action id (an action
  id is a plain SHA-256 of journey, version, user id, run and step: anyone could recompute it from
  a user id and match the row);
- tombstones, `forgotten(id_hash, at, keyed)`: the keyed hash of each id, so that the processor
  drops every later event naming one of them (engine.daemon.api `event_filter`) and a late or
  replayed event cannot bring the profile back;
- the user's removal from every ad audience they are in (below).

The messageIds the user's events had (`messages`, the dedupe window) stay: they are the clients'
ids of messages (random ones, as Segment's libraries make them), and go with retention.

Keyed hashes. `keyed(key, text)` is HMAC-SHA256 under the store's erasure key: 32 random bytes
(`secrets`) made the first time a daemon opens the store and kept in the table `erasure` (one
row), so all the workers of a PostgreSQL store share it and it is backed up with the tombstones it
reads. Keyed, because a plain hash of an id can be matched by anyone against any list of ids (a CRM
export, a leaked table, another store's tombstones) without the store; a keyed one only with the
store's key. Whoever holds the whole store can still test a guessed id: the daemon has to, to drop
the user's later events. The key is never rotated: another key would forget the tombstones.

Ad audiences. Deleting the profile leaves its email and phone in Meta's and Google's customer
lists, so `removals` queues, in the same transaction, an `audience_remove` entry per audience the
user is in and connector the audience syncs to (`Routes`, as a journey's `remove user from
audience` would). The dispatcher normally reads the profile at delivery time, and by then it is
gone, so each entry carries in `Delivery.data[ERASED]` what its connector will send, and nothing
else: the connector module's `erasure_identifiers(traits, settings)`, computed before the profile
is deleted, the SHA-256 of each normalised identifier as the platform requires
(connectors.identifiers; Meta's MADID, which Meta takes unhashed, only when the connector's
`match_keys` names it; Google's addressInfo with its country and postal code as Google takes them).
The connector sends those hashes as they are: the same bytes as a removal read from the profile.
The entry's user is the keyed hash of the user id. So a removal that keeps failing while a platform
is down, dead letter included, holds no PII, and an operator's retry still removes the user once
it is back. `scrub` (a housekeeping job: engine.daemon.housekeeping) drops the hashes once the
entry is delivered. Removal entries are found by their id prefix (`forget-`), a range of the
outbox's primary key, so scrubbing never scans the outbox.

Older daemons wrote tombstones in clear, and queued removals with the user id and the traits in
clear: `prepare`, when a daemon opens the store, replaces them with keyed hashes of the ids and, in
the removals not yet delivered, both platforms' hashes of the traits (the connector's type being
unknown there), dead letters included.

The SQLite file. A deleted row's bytes outlive it in the file: in the WAL until it is checkpointed
and reset, in the free space of pages, and in copies SQLite's B-tree balancing leaves in the unused
part of pages (`PRAGMA secure_delete` does not reach those). So after an erasure `scrub` completes
it in the file (`compact`): a checkpoint that truncates the WAL, `VACUUM` (the file rewritten from
the live rows only; it keeps the rowids of tables with an index, as all those whose rowids
retention notes have) and a truncating checkpoint again. At most once per COMPACT_EVERY: erasures
meanwhile wait for the next. VACUUM holds the write lock while it runs, about 1 s for a synthetic
220 MB file on 2 cores (the ingest's appends wait; a 1 GB store, 1M users, about 5 s), and needs
free disk as large as the file. PostgreSQL has no such step: the deleted rows' old versions stay in
the table files until vacuum reuses their space, and in WAL archives and base backups for their
retention; nothing reads them.
"""

from __future__ import annotations

import hmac
import importlib
import json
import logging
import secrets
import sqlite3
import time
from datetime import datetime
from typing import Any, Callable, Mapping

import orjson

from connectors.base import ERASED
from connectors.registry import TYPES, Routes

from ..store import sql
from ..store.outbox import DELIVERED, Entry

log = logging.getLogger("journeys.daemon")

PREFIX = "forget-"
COMPACT_EVERY = 3600.0  # seconds: SQLite, at most one rewrite of the file (VACUUM) per hour
_NAMED = ("userId", "anonymousId", "previousId")  # the ids a message names (engine.store.inbox.message_to_json)

_SQLITE_TABLES = (
    ("CREATE TABLE IF NOT EXISTS erasure (id INTEGER PRIMARY KEY, key TEXT NOT NULL, compact_due REAL, "
     "compacted REAL)"),
    ("CREATE TABLE IF NOT EXISTS forgotten (id_hash TEXT PRIMARY KEY, at TEXT NOT NULL, "
     "keyed BOOLEAN NOT NULL DEFAULT FALSE)"),
)


# ---------------------------------------------------------------------- the key and the tombstones

def keyed(key: bytes, text: str) -> str:
    """HMAC-SHA256 of `text` under the store's erasure key, lower-case hex."""
    return hmac.digest(key, text.encode("utf-8"), "sha256").hex()


def _create_sqlite(conn: Any) -> None:
    """SQLite: `erasure` and `forgotten`, if missing; a `forgotten(user_id, at)` of an older daemon
    gets its columns renamed (its rows, in clear, are hashed by `prepare`)."""
    if "user_id" in {r[1] for r in conn.execute("PRAGMA table_info(forgotten)")}:
        conn.execute("ALTER TABLE forgotten RENAME COLUMN user_id TO id_hash")
        conn.execute("ALTER TABLE forgotten ADD COLUMN keyed BOOLEAN NOT NULL DEFAULT FALSE")
    for statement in _SQLITE_TABLES:
        conn.execute(statement)


def key(conn: Any) -> bytes:
    """The store's erasure key, made the first time it is asked for (by any worker: the first one
    to commit it is everyone's). On SQLite it creates the tables; PostgreSQL has them from its
    migrations (version 7)."""
    if sql.is_sqlite(conn):
        _create_sqlite(conn)
    row = sql.execute(conn, "SELECT key FROM erasure WHERE id = 1").fetchone()
    if row is None:
        sql.execute(conn, "INSERT INTO erasure (id, key) VALUES (1, ?) ON CONFLICT (id) DO NOTHING",
                    (secrets.token_hex(32),))
        row = sql.execute(conn, "SELECT key FROM erasure WHERE id = 1").fetchone()
    return bytes.fromhex(row[0])


def prepare(conn: Any) -> bytes:
    """When the store is opened, in its transaction: the key, and what an older daemon left in
    clear keyed or hashed: its tombstones, and its removals (`_rekey_removals`)."""
    k = key(conn)
    clear = sql.execute(conn, "SELECT id_hash, at FROM forgotten WHERE NOT keyed ORDER BY id_hash").fetchall()
    if clear:
        sql.executemany(conn, "INSERT INTO forgotten (id_hash, at, keyed) VALUES (?, ?, TRUE) "
                              "ON CONFLICT (id_hash) DO NOTHING", sorted((keyed(k, i), at) for i, at in clear))
        for chunk in sql.chunks([i for i, _ in clear]):
            sql.execute(conn, f"DELETE FROM forgotten WHERE NOT keyed AND id_hash IN ({sql.marks(len(chunk))})", chunk)
    removals_in_clear = _rekey_removals(conn, k)
    if clear or removals_in_clear:
        _compact_later(conn)
        log.info("erasure: what an older daemon kept in clear is hashed now: %d tombstones, %d audience removals",
                 len(clear), removals_in_clear)
    return k


def tombstoned(conn: Any, hashes: list[str]) -> set[str]:
    """Which of these keyed hashes are tombstones."""
    gone: set[str] = set()
    for chunk in sql.chunks(hashes):
        gone.update(r[0] for r in sql.execute(
            conn, f"SELECT id_hash FROM forgotten WHERE id_hash IN ({sql.marks(len(chunk))})", chunk))
    return gone


# ---------------------------------------------------------------------- forgetting

def forget(store: Any, outbox: Any, any_id: str, now: datetime, config: Any) -> dict[str, Any]:
    """`DELETE /admin/users/{id}`, inside the caller's transaction: erase the user (see the module
    docstring), queue their removal from every ad audience, leave tombstones for `event_filter`."""
    from ..store.serialize import utc_text
    from . import trail

    conn = store.conn
    k = key(conn)
    uid, listed = trail.ids_of(store, any_id)
    state = store.load(uid)
    marks = sql.marks(len(listed))
    counts = {
        "profiles": 1 if state is not None else 0,
        "instances": sql.execute(conn, "SELECT count(*) FROM instances WHERE user_id = ?", (uid,)).fetchone()[0],
    }
    traits = state.traits if state is not None else {}
    audiences = state.audiences if state is not None else frozenset()
    queued, unrouted = removals(uid, traits, audiences, config, now, k)
    store.delete(uid)
    counts["identities"] = sql.execute(
        conn, f"DELETE FROM identities WHERE user_id = ? OR alias IN ({marks})", (uid, *listed)).rowcount
    # the user's entries, but not the audience removals an earlier forget queued: forgetting twice
    # must not cancel them (the second finds no audiences left to queue again)
    counts["outbox"] = sql.execute(conn, f"DELETE FROM outbox WHERE user_id IN ({marks}) AND (id < ? OR id >= ?)",
                                   (*listed, *id_range())).rowcount
    counts["action_payloads"] = _pseudonymise_actions(conn, listed, k)
    counts["trail"] = trail.forget(conn, listed)
    counts.update(_forget_messages(conn, listed))
    outbox.add(queued)  # after the user's entries went: the removals are theirs now
    at = utc_text(now)
    sql.executemany(conn, "INSERT INTO forgotten (id_hash, at, keyed) VALUES (?, ?, TRUE) "
                          "ON CONFLICT (id_hash) DO NOTHING", sorted((keyed(k, i), at) for i in listed))
    _compact_later(conn)
    log.info("erasure: a user forgotten (%d ids), %d audience removals queued", len(listed), len(queued))
    return {"userId": uid, "forgotten": listed, "deleted": counts,
            "audiences_removed": [{"audience": e.target, "connector": e.connector, "entry": e.id} for e in queued],
            "audiences_not_removed": unrouted}


def _pseudonymise_actions(conn: Any, ids: list[str], k: bytes) -> int:
    """The user's rows of the action log, without payload, under keyed hashes; returns how many."""
    found = sql.execute(conn, f'SELECT id, "user" FROM actions WHERE "user" IN ({sql.marks(len(ids))})', ids).fetchall()
    sql.executemany(conn, 'UPDATE actions SET id = ?, "user" = ?, json = NULL WHERE id = ?',
                    [(keyed(k, action), keyed(k, user), action) for action, user in found])
    return len(found)


def _names(raw: Any, ids: set[str]) -> bool:
    """Does a stored message name one of `ids`? (One that no longer parses: does it hold one?)"""
    data = bytes(raw) if not isinstance(raw, str) else raw.encode("utf-8")
    try:
        message = orjson.loads(data)
    except orjson.JSONDecodeError:
        message = None
    if isinstance(message, dict):
        return any(message.get(f) is not None and str(message[f]) in ids for f in _NAMED)
    return any(i.encode("utf-8") in data for i in ids)


def _forget_messages(conn: Any, ids: list[str]) -> dict[str, int]:
    """Delete the messages naming one of `ids` from the inbox (to process, or processed and not yet
    pruned: the processor would drop the first kind anyway) and from `inbox_failed`."""
    wanted, counts = set(ids), {}
    for table in ("inbox", "inbox_failed"):
        gone = [seq for seq, raw in sql.execute(conn, f"SELECT seq, raw FROM {table}") if _names(raw, wanted)]
        for chunk in sql.chunks(gone):
            sql.execute(conn, f"DELETE FROM {table} WHERE seq IN ({sql.marks(len(chunk))})", chunk)
        counts[table] = len(gone)
    return counts


# ---------------------------------------------------------------------- ad audiences

Maker = Callable[[Mapping[str, Any], Mapping[str, Any]], dict[str, Any]]


def _maker(type_name: str) -> Maker | None:
    """The `erasure_identifiers` of a connector type's module (connectors.registry.TYPES), if it has one."""
    target = TYPES.get(type_name)
    return getattr(importlib.import_module(target.partition(":")[0]), "erasure_identifiers", None) if target else None


def _carried(config: Any, connector: str, traits: Mapping[str, Any]) -> dict[str, Any]:
    """What the removal for `connector` carries: its module's hashes of `traits` (nothing for a
    connector whose type has none: it cannot match the user then, and fails the entry)."""
    c = config.connectors.get(connector)
    make = _maker(c.type) if c is not None else None
    return make(traits, c.settings) if make is not None else {}


def removal_id(k: bytes, user_id: str, audience: str) -> str:
    """Deterministic, so forgetting twice (or a retried transaction) never queues a second removal."""
    return PREFIX + keyed(k, f"{user_id}\x1f{audience}")[:24]


def removals(user_id: str, traits: Mapping[str, Any], audiences: Any, config: Any, now: datetime, k: bytes
             ) -> tuple[list[Entry], list[str]]:
    """The removal entries for a user about to be forgotten, and the audiences that sync to no
    connector (nothing to remove them from)."""
    routes = Routes.from_config(config)
    user = keyed(k, user_id)
    entries: list[Entry] = []
    unrouted: list[str] = []
    for audience in sorted(audiences):
        names = list(routes.audiences.get(audience, ()))
        if not names:
            unrouted.append(audience)
            continue
        aid = removal_id(k, user_id, audience)
        for name in names:
            payload = json.dumps({"id": aid, "user": user, "kind": "audience_remove", "target": audience,
                                  "journey": "", "path": "", "reason": "forget-user", "keyed": True,
                                  "data": {ERASED: _carried(config, name, traits)}}, sort_keys=True)
            entries.append(Entry(aid, name, user, "audience_remove", audience, payload, now, now))
    return entries, unrouted


def id_range() -> tuple[str, str]:
    """[low, high): the outbox ids of removal entries (their prefix)."""
    return PREFIX, PREFIX[:-1] + chr(ord(PREFIX[-1]) + 1)


def _rekey_removals(conn: Any, k: bytes) -> int:
    """The removals an older daemon queued (no `keyed` in the payload): the user's id in clear, as
    the entry's user and in the payload, and (until delivered) the traits in clear. Each gets the
    keyed hash of the id and, for the traits, every platform's hashes (the connector's type is not
    known here); a delivered one loses them. Returns how many."""
    if sql.is_sqlite(conn) and conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'outbox'").fetchone() is None:
        return 0  # a file without deliveries yet
    rows = sql.execute(conn, "SELECT id, user_id, state, payload FROM outbox WHERE id >= ? AND id < ? "
                             "AND payload NOT LIKE ?", (*id_range(), '%"keyed": true%')).fetchall()
    updates = []
    for entry_id, user_id, state, payload in rows:
        body = json.loads(payload)
        data = body.setdefault("data", {})
        clear = data.pop(ERASED, None)
        if isinstance(clear, Mapping) and state != DELIVERED:
            data[ERASED] = {p: hashes for make in filter(None, map(_maker, TYPES)) for p, hashes in
                            make(clear, {}).items()}
        body["user"] = user_id = keyed(k, body.get("user") or user_id)
        body["keyed"] = True
        updates.append((json.dumps(body, sort_keys=True), user_id, entry_id))
    sql.executemany(conn, "UPDATE outbox SET payload = ?, user_id = ? WHERE id = ?", updates)
    return len(updates)


def scrub(conn: Any) -> int:
    """The housekeeping of removals: the hashes of delivered ones dropped, then, on SQLite, the
    file compacted if an erasure waits for it. Returns how many entries were scrubbed. `conn` is
    the store's, SQLite or PostgreSQL (engine.store.sql), outside a transaction."""
    rows = sql.execute(conn, "SELECT id, payload FROM outbox WHERE id >= ? AND id < ? AND state = ? "
                             "AND payload LIKE ?", (*id_range(), DELIVERED, f'%"{ERASED}"%')).fetchall()
    updates = []
    for entry_id, payload in rows:
        body = json.loads(payload)
        body.get("data", {}).pop(ERASED, None)
        updates.append((json.dumps(body, sort_keys=True), entry_id))
    sql.executemany(conn, "UPDATE outbox SET payload = ? WHERE id = ?", updates)
    if sql.is_sqlite(conn):
        _create_sqlite(conn)
        compact(conn)
    return len(updates)


# ---------------------------------------------------------------------- the SQLite file

def _compact_later(conn: Any) -> None:
    """SQLite: an erasure is done in the tables; the file is to be compacted (`compact`)."""
    if sql.is_sqlite(conn):
        conn.execute("UPDATE erasure SET compact_due = coalesce(compact_due, ?) WHERE id = 1", (time.time(),))


def compact(conn: Any, every: float = COMPACT_EVERY) -> bool:
    """SQLite, outside a transaction: if an erasure waits for it and the last compaction is `every`
    seconds old, rewrite the file from its live rows (checkpoint, VACUUM, checkpoint, the WAL
    truncated each time) so no byte of the erased rows is left in it or in its WAL. True when done;
    a failure (a checkpoint that readers kept from finishing) leaves it for the next call."""
    due, compacted = conn.execute("SELECT compact_due, compacted FROM erasure WHERE id = 1").fetchone() or (None, None)
    if due is None or (compacted is not None and time.time() - compacted < every):
        return False
    started = time.monotonic()
    try:
        if conn.execute("PRAGMA database_list").fetchone()[2]:  # a file (":memory:" has nothing to rewrite)
            # the WAL emptied first: VACUUM's frames must not follow frames of the erased rows
            done = _checkpoint(conn)
            if done:
                conn.execute("VACUUM")
                done = _checkpoint(conn)
            if not done:
                log.warning("erasure: the store's WAL could not be checkpointed (readers); tried again later")
                return False
        conn.execute("UPDATE erasure SET compact_due = NULL, compacted = ? WHERE id = 1", (time.time(),))
    except sqlite3.OperationalError as e:
        log.warning("erasure: compacting the store file failed, tried again later: %s", e)
        return False
    _checkpoint(conn)  # the update's own frame
    log.info("erasure: the store file rewritten without the erased rows in %.1f s", time.monotonic() - started)
    return True


def _checkpoint(conn: Any) -> bool:
    """Checkpoint the whole WAL into the file and truncate it; False if readers kept it from finishing."""
    busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    return not busy
