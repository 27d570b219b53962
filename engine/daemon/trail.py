"""A user's trail in the daemon: the timeline `journeys simulate --trace USER` prints, kept in the
store so that the admin API can answer "what happened to this person, and why" about live traffic
(`GET /admin/users/{id}/trace`).

`Trail` is a sink, like `engine.dryrun.trace.Trace` and the daemon's `Counts`: every effect (an event or
profile update received, an entry or a refused entry with its reason, a step, a wait, a branch and
why, a send or a suppression, a conversion, a trait written) becomes one line of the user's
trail, rendered by `engine.core.effects.format_effect`, so that the daemon and the dry-run tell the same story in
the same words. The lines are written on the store's connection inside the transaction of the
state that produced them, held until its commit and then written in one statement
(engine.store.write_behind): a rolled back message leaves no trail, a committed one always does.

One row holds a run of lines: the consecutive effects of one `emit` (one message, or one timer)
that name the same user, as a JSON array of records, one per effect: `[code, its fields...]`,
rendered into the line and its JSON form when read (rows of older daemons hold `[line, fields]`
and are read as they are). A message's 5 or so effects are then
one insert and one index entry instead of five (see Cost).

    trail(id PK, user_id, time, n, json)   index (user_id, id)
    SQLite: created here (a file with the older one-line-per-row table is converted once);
    PostgreSQL: migration 3 (engine.store.migrations), time timestamptz, id bigserial

`user_id` is the profile id the effects name, `time` the newest of them, `n` how many lines.
Identities are gathered when reading, not when writing: an anonymous visitor's rows stay under the
anonymous id, and `ids_of` collects the profile id and all its aliases (`identities`), so asking by
either id shows the whole story, before and after the stitch. `fields` is the effect's `to_json()`
plus `effect` (received, transition, action, conversion, trait), without the fields that have no
value (null, `{}`); an action's `named` and `event` payloads are left out (they are in `actions`).
`read` answers one dict per line, `{...fields, "line": line}`, whatever the rows' grouping.

Bounded: `prune(now)` (the worker calls it every `PRUNE_EVERY`) deletes rows older than `days`
(`[serve] trail_days`, default 30) and, for the users written since the last prune, the rows all
of whose lines are beyond their newest `per_user` lines, so a bot hammering one id cannot grow the
table without end. Rows are written in the order of the daemon's clock, so the old ones are the
first ids: pruning by age walks the primary key from the start and needs no index on `time` (one
index less to write per row). Each call deletes at most `PRUNE_BATCH` old rows and looks at most at
`PRUNE_USERS` users; the rest waits for the next call, so housekeeping never holds the worker for
long. Forgetting a user deletes their rows (`forget`). `days = 0` turns the trail off (the sink
writes nothing).

Both stores: the SQL is engine.store.sql's common dialect, on the store's sqlite3 or psycopg connection.

Cost, measured with `python benchmarks/trail_cost.py [--store postgres]` (the shop's sample log,
13,519 events, 5.4 lines each, through the engine on a fresh store in group commits, with and
without this sink, best of 3, 2 cores). SQLite: one row per line cost about 95 µs more per event
(5.4 inserts) on top of about 210 µs without; one row per run cost about 85 µs (1.2 inserts),
with the lines rendered at write time (about 1.7 kB of JSON per event); storing the effects'
fields and rendering when read, about 28 µs on top of 160 µs (801 bytes of JSON per event). PostgreSQL: about 270 µs more per event on top of about
1,500 µs without, most of it the insert's round trip to the server, once per emit.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import operator
from datetime import datetime, timedelta
from typing import Any, Iterable, Mapping, Sequence

import orjson

from ..core.effects import Action, Conversion, Effect, Received, TraitChange, Transition, format_effect
from ..store import sql
from ..store.serialize import utc_text

log = logging.getLogger("journeys.daemon")

DAYS = 30
PER_USER = 1000
PRUNE_BATCH = 10_000
PRUNE_USERS = 10_000
MAX_LIMIT = 1000

_KIND = {Received: "received", Transition: "transition", Action: "action", Conversion: "conversion",
         TraitChange: "trait"}
_LEFT_OUT = ("named", "event")  # an action's payloads: large, and kept with the action itself
_INSERT = "INSERT INTO trail (user_id, time, n, json) VALUES (?, ?, ?, ?)"
_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS


def create(conn: Any) -> None:
    """SQLite: the table, if missing; a file written before runs were grouped has one line per row
    (`line`, `json` columns), converted here once, each line a run of one."""
    if not sql.is_sqlite(conn):
        return  # PostgreSQL: migration 3
    columns = {r[1] for r in conn.execute("PRAGMA table_info(trail)")}
    if "line" in columns:
        conn.execute("ALTER TABLE trail RENAME TO trail_lines")
        conn.execute("DROP INDEX IF EXISTS trail_user")
    conn.execute("CREATE TABLE IF NOT EXISTS trail (id INTEGER PRIMARY KEY, user_id TEXT NOT NULL, "
                 "time TEXT NOT NULL, n INTEGER NOT NULL, json TEXT NOT NULL)")
    conn.execute("CREATE INDEX IF NOT EXISTS trail_user ON trail (user_id, id)")
    if "line" in columns:
        try:
            conn.execute("INSERT INTO trail (id, user_id, time, n, json) SELECT id, user_id, time, 1, "
                         "json_array(json_array(line, json(json))) FROM trail_lines")
        except Exception as e:  # noqa: BLE001 - no JSON functions in this SQLite: the old trail is dropped
            log.warning("the trail's older rows could not be converted, they are dropped: %s", e)
        conn.execute("DROP TABLE trail_lines")


def _dumps(value: Any) -> str:
    try:
        return orjson.dumps(value, default=_plain, option=_OPTIONS).decode()
    except TypeError:  # what orjson refuses (an integer beyond 64 bits) the standard module takes
        return json.dumps(value, sort_keys=True, separators=(",", ":"), default=_plain)


def _plain(value: Any) -> Any:
    """What orjson does not write by itself: read-only mappings (an action's data), else text."""
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


# A line is kept as the effect's own fields, `[code, field, field, ...]` in the dataclass's order
# (an action without its `named` and `event` payloads), and rendered when it is read: the text and
# the JSON form cost about 5 µs per effect to make, a third of a timer's fire in the daemon, for
# lines that are mostly never read. `_STORED[code]` = (class, the fields kept, the indexes of times).
_STORED: list[tuple[type, tuple[str, ...], tuple[int, ...]]] = []
_CODE: dict[type, tuple[int, Any]] = {}
for _code, _cls in enumerate((Received, Transition, Action, Conversion, TraitChange)):
    _names = tuple(f.name for f in dataclasses.fields(_cls) if f.name not in _LEFT_OUT)
    _STORED.append((_cls, _names, tuple(i for i, n in enumerate(_names) if n in ("time", "until"))))
    _CODE[_cls] = (_code, operator.attrgetter(*_names))


def _record(e: Effect) -> tuple:
    code, get = _CODE[type(e)]
    return (code, *get(e))


def _effect(record: list[Any]) -> Effect:
    """The effect a stored record was made of (times parsed back, a conversion's arms as pairs)."""
    cls, names, times = _STORED[record[0]]
    values = record[1:]
    for i in times:
        if values[i] is not None:
            values[i] = datetime.fromisoformat(values[i])
    kwargs = dict(zip(names, values))
    if cls is Conversion:
        kwargs["arms"] = tuple(tuple(a) for a in kwargs["arms"])
    return cls(**kwargs)


def _line(record: list[Any]) -> dict[str, Any]:
    """One line as `read` answers it. A record written before lines were stored as fields is
    `[line, fields]`, answered as it is."""
    if isinstance(record[0], str):
        line, f = record
        return {**f, "line": line}
    e = _effect(record)
    return {**fields(e), "line": format_effect(e)}


def fields(e: Effect) -> dict[str, Any]:
    """The structured form of an effect, as the trail keeps it."""
    out = {k: v for k, v in e.to_json().items() if v is not None and v != {} and k not in _LEFT_OUT}
    out["effect"] = _KIND.get(type(e), type(e).__name__.lower())
    return out


def runs(effects: Sequence[Effect]) -> list[tuple[str, datetime, list[Effect]]]:
    """(user, newest time, effects) for each run of consecutive effects naming the same user."""
    out: list[tuple[str, datetime, list[Effect]]] = []
    for e in effects:
        if out and out[-1][0] == e.user:
            user, newest, group = out[-1]
            group.append(e)
            if e.time > newest:
                out[-1] = (user, e.time, group)
        else:
            out.append((e.user, e.time, [e]))
    return out


class Trail:
    """The sink that writes each user's effects into `trail` (see the module docstring)."""

    def __init__(self, store: Any, days: int = DAYS, per_user: int = PER_USER):
        self.store, self.conn = store, store.conn
        self.days, self.per_user = days, per_user
        self._touched: set[str] = set()  # users with new rows since the last prune (a hint only)
        self._moment = utc_text if sql.is_sqlite(self.conn) else (lambda t: t)  # sql.moment, decided once
        self._defer = getattr(store, "defer", None)  # the store's write-behind (engine.store.write_behind)
        create(self.conn)

    def emit(self, effects: Sequence[Effect]) -> None:
        if not self.days or not effects:
            return
        moment = self._moment
        rows = [(user, moment(newest), len(group), _dumps([_record(e) for e in group]))
                for user, newest, group in runs(effects)]
        if self._defer is not None:
            self._defer(self._write, rows)  # at the commit, with the transaction's other rows
        else:
            self._write(rows)
        self._touched.update(r[0] for r in rows)

    def _write(self, rows: list[tuple]) -> None:
        sql.executemany(self.conn, _INSERT, rows)

    def prune(self, now: datetime) -> int:
        """Delete what is past `days` and each recently written user's rows beyond `per_user`
        lines; returns how many lines went."""
        conn = self.conn
        if not self.days:
            return 0
        with self.store.transaction():
            bound = sql.execute(conn, "SELECT max(id) FROM (SELECT id, time FROM trail ORDER BY id LIMIT ?) AS first "
                                      "WHERE time < ?",
                                (PRUNE_BATCH, sql.moment(conn, now - timedelta(days=self.days)))).fetchone()[0]
            deleted = 0 if bound is None else _delete(conn, "id <= ?", (bound,))
            for _ in range(min(len(self._touched), PRUNE_USERS)):
                user = self._touched.pop()
                bound = sql.execute(conn, "SELECT max(id) FROM (SELECT id, n, sum(n) OVER (ORDER BY id DESC) AS upto "
                                          "FROM trail WHERE user_id = ?) AS newest WHERE upto - n >= ?",
                                    (user, self.per_user)).fetchone()[0]
                if bound is not None:
                    deleted += _delete(conn, "user_id = ? AND id <= ?", (user, bound))
        return deleted


def add_lines(conn: Any, user: str, time: datetime, lines: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
    """Lines that are no engine effect (an operator's resume dropped or released a user's held
    send: engine.daemon.admin.pause_store), as one row in `user`'s trail, each `(line, fields)`: the
    form `read` answers as it is. Inside the caller's transaction."""
    if lines:
        sql.execute(conn, _INSERT, (user, sql.moment(conn, time), len(lines), _dumps([[line, dict(f)] for line, f in lines])))


def _delete(conn: Any, where: str, params: Sequence[Any]) -> int:
    """Delete the rows `where` says; returns how many lines they held."""
    lines = sql.execute(conn, f"SELECT coalesce(sum(n), 0) FROM trail WHERE {where}", params).fetchone()[0]
    sql.execute(conn, f"DELETE FROM trail WHERE {where}", params)
    return int(lines)


def ids_of(store: Any, any_id: str) -> tuple[str, list[str]]:
    """The profile id `any_id` belongs to, and every id its trail may be under: the profile id,
    the id asked for, and the profile's aliases."""
    uid = store.resolve(any_id) or any_id
    ids = {uid, any_id} | {a for (a,) in sql.execute(store.conn, "SELECT alias FROM identities WHERE user_id = ?",
                                                     (uid,))}
    state = store.load(uid)
    if state is not None:
        ids |= set(state.aliases)
    return uid, sorted(ids)


def read(conn: Any, ids: Iterable[str], limit: int = 100) -> list[dict[str, Any]]:
    """The newest `limit` lines under any of `ids`, oldest first (a timeline reads forwards):
    each `{time, line, effect, ...}` with the effect's fields. A row holds at least one line, so
    the newest `limit` rows hold them all."""
    ids = list(ids)
    if not ids:
        return []
    rows = sql.execute(conn, f"SELECT json FROM trail WHERE user_id IN ({sql.marks(len(ids))}) "
                             "ORDER BY id DESC LIMIT ?", (*ids, limit)).fetchall()
    lines = [_line(record) for (raw,) in reversed(rows) for record in orjson.loads(raw)]
    return lines[-limit:] if limit > 0 else []


def forget(conn: Any, ids: Iterable[str]) -> int:
    """Delete the rows of a forgotten user (all their ids); returns how many lines they held."""
    ids = list(ids)
    if not ids:
        return 0
    return _delete(conn, f"user_id IN ({sql.marks(len(ids))})", ids)


def effects(raw: str | bytes) -> list[Effect]:
    """The effects one stored row holds, as the sink wrote them (the console counts them per
    journey and step); a row of an older daemon (`[line, fields]` records) holds none it can read."""
    return [_effect(record) for record in orjson.loads(raw) if not isinstance(record[0], str)]
