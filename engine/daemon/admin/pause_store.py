"""The emergency stop: an operator pauses one journey's sends, or every send (`*`), and resumes
them later, releasing or dropping what was held meanwhile.

Why the pauses live in the store: several workers share a PostgreSQL store and each runs its own
deliveries, so a pause must be where all of them look. Each delivery loop reads `pauses` at most
`POLL` seconds before it admits an outbox entry (engine.daemon.deliveries.hold.Hold): a pause
takes effect within POLL (half a second) on every worker. An entry of a paused journey that comes
due, or is handed over fresh by the processor, is written `held` instead of being attempted. The
journey itself runs on: users enter, wait and advance, the engine decides and logs its actions;
only their delivery waits. (An attempt already in flight finishes; an audience change already
taken into a batch goes out with the batch.)

A resume is two steps. `lift` deletes the pause, once it checked the operator's choice: as soon as
something is held they must say what becomes of it. A delivery loop whose view is up to POLL old
may still hold a send after that commit, so `settle` runs `SETTLE_AFTER` later, when every view
is fresh: the held sends the pause no longer covers (a `*` pause still in force keeps holding
everyone's) are released or dropped. Released, they are pending again, due at their action's time,
so they go out in the order they were decided; dropped, they stay in the outbox as `dropped` with
the pause as their `last_error`, and the user's trail says so. (Settled before every view was
fresh, a released send could be held again.) Held sends that no pause covers any more (a daemon
stopped between the two steps) are settled by the same DELETE, which answers for a journey that is
not paused when something of it is held, and /metrics counts them.

Every pause and resume is a row of `pause_log` (who, when, why, what became of the held sends) and
an INFO line of the daemon's log with the same as JSON fields.

    pauses (journey PK, since, paused_by, reason)
    pause_log (id, at, journey, event, by_whom, reason, held, released, dropped)
    SQLite: created here (`create`); PostgreSQL: migration 10 (engine.store.migrations).

This module is the store's side, on the worker's connection (the routes, engine.daemon.admin.pauses)
or a delivery loop's (engine.daemon.deliveries.hold); it imports no web framework.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

import orjson

from ...core.effects import iso
from ...store import sql
from ...store.outbox import DROPPED, HELD, PENDING, Entry

log = logging.getLogger("journeys.daemon")

ALL = "*"  # the pause of every send
POLL = 0.5  # seconds a delivery loop's view of the pauses may be old: a pause's delay at most
SETTLE_AFTER = 2 * POLL  # seconds from a pause lifted to its held sends settled: every view is fresh by then
RELEASE, DROP = "release", "drop"


class NotPaused(LookupError):
    """A resume of a journey that is not paused and has nothing held."""


class ChoiceNeeded(ValueError):
    """A resume with sends held and no `held` choice: the operator must say release or drop."""

    def __init__(self, journey: str, held: int):
        super().__init__(f"{held} sends of {_label(journey)} are held: resume with held=release to send them "
                         "(in their order) or held=drop to drop them")
        self.held = held


def create(conn: Any) -> None:
    """SQLite: the tables, if missing (PostgreSQL: migration 10)."""
    if not sql.is_sqlite(conn):
        return
    conn.execute("CREATE TABLE IF NOT EXISTS pauses (journey TEXT PRIMARY KEY, since TEXT NOT NULL, "
                 "paused_by TEXT NOT NULL, reason TEXT)")
    conn.execute("CREATE TABLE IF NOT EXISTS pause_log (id INTEGER PRIMARY KEY, at TEXT NOT NULL, "
                 "journey TEXT NOT NULL, event TEXT NOT NULL, by_whom TEXT NOT NULL, reason TEXT, held TEXT, "
                 "released INTEGER, dropped INTEGER)")


def journey_sql(conn: Any) -> str:
    """The journey of an outbox entry in SQL: its payload is the action as JSON."""
    return "json_extract(payload, '$.journey')" if sql.is_sqlite(conn) else "(payload::json ->> 'journey')"


def entry_journey(entry: Entry) -> str:
    return orjson.loads(entry.payload).get("journey") or ""


def paused(conn: Any) -> frozenset[str]:
    """The journeys paused now (`*`: every send)."""
    return frozenset(j for (j,) in sql.execute(conn, "SELECT journey FROM pauses"))


def count(conn: Any) -> int:
    """How many pauses are in force (/metrics, on its own reader): 0 on a SQLite file no daemon
    of this version has opened yet (its tables come with the first one)."""
    if sql.is_sqlite(conn) and conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'pauses'").fetchone() is None:
        return 0
    return sql.execute(conn, "SELECT count(*) FROM pauses").fetchone()[0]


def held_counts(conn: Any) -> dict[str, int]:
    """The held sends by journey."""
    return {j: n for j, n in sql.execute(
        conn, f"SELECT {journey_sql(conn)}, count(*) FROM outbox WHERE state = '{HELD}' GROUP BY 1")}


def list_pauses(conn: Any) -> list[dict[str, Any]]:
    """`GET /admin/pauses`: each pause, `{journey, since, by, reason, held}` by journey (`*` first);
    `held` counts the sends held of that journey (of `*`: every held send)."""
    counts = held_counts(conn)
    rows = sql.execute(conn, "SELECT journey, since, paused_by, reason FROM pauses").fetchall()
    return [{"journey": j, "since": _iso(since), "by": by, "reason": reason,
             "held": sum(counts.values()) if j == ALL else counts.get(j, 0)}
            for j, since, by, reason in sorted(rows)]


def pause(conn: Any, journey: str, by: str, reason: str | None, now: datetime) -> tuple[dict[str, Any], bool]:
    """Pause `journey` (`*`: every send), inside the caller's transaction: (the pause, whether it
    is new). A journey paused already keeps its pause as it was (who, since when, why)."""
    new = sql.execute(conn, "INSERT INTO pauses (journey, since, paused_by, reason) VALUES (?, ?, ?, ?) "
                            "ON CONFLICT (journey) DO NOTHING",
                      (journey, sql.moment(conn, now), by, reason)).rowcount == 1
    if new:
        _record(conn, now, journey, "paused", by, reason)
        log.info("%s paused by %s%s", _label(journey), by, f": {reason}" if reason else "",
                 extra={"pause": "paused", "journey": journey, "by": by, "reason": reason, "at": iso(now)})
    found = next(p for p in list_pauses(conn) if p["journey"] == journey)
    return found, new


def lift(conn: Any, journey: str, held: str | None) -> str:
    """The first half of a resume, inside the caller's transaction: the pause goes (so every
    delivery loop stops holding within POLL). Returns the pause as a dropped send's error names it,
    for `settle`. NotPaused: no pause and nothing of it held; ChoiceNeeded: something is held
    and `held` is None (nothing is changed then)."""
    row = sql.execute(conn, "SELECT since, paused_by, reason FROM pauses WHERE journey = ?", (journey,)).fetchone()
    ids = _held_ids(conn, journey, paused(conn) - {journey})
    if row is None and not ids:
        raise NotPaused(f"{_label(journey)} is not paused and none of its sends is held")
    if ids and held is None:
        raise ChoiceNeeded(journey, len(ids))
    sql.execute(conn, "DELETE FROM pauses WHERE journey = ?", (journey,))
    return _cause(journey, row)


def settle(conn: Any, outbox: Any, journey: str, held: str | None, cause: str, by: str, now: datetime, *,
           trail: bool = True) -> dict[str, Any]:
    """The second half of a resume, `SETTLE_AFTER` after `lift` (every loop's view is fresh by
    then: nothing settled here is held again), inside the caller's transaction: the held sends of
    `journey` that no pause covers are released or dropped as `held` says (released when None:
    nothing was held at `lift`, the stale views held these after it), and the resume is logged.
    `trail`: a line in each user's trail for each send dropped or released."""
    ids = _held_ids(conn, journey, paused(conn))
    done = _settle(conn, outbox, ids, held or RELEASE, cause, by, now, trail)
    _record(conn, now, journey, "resumed", by, None, held, done[RELEASE], done[DROP])
    log.info("%s resumed by %s: %d held sends released, %d dropped", _label(journey), by, done[RELEASE], done[DROP],
             extra={"pause": "resumed", "journey": journey, "by": by, "held": held, "released": done[RELEASE],
                    "dropped": done[DROP], "at": iso(now)})
    return {"resumed": journey, "released": done[RELEASE], "dropped": done[DROP]}


def resume(conn: Any, outbox: Any, journey: str, held: str | None, by: str, now: datetime, *,
           trail: bool = True) -> dict[str, Any]:
    """`lift` and `settle` at once: for a store no delivery loop reads meanwhile (tools, tests).
    The daemon's route waits `SETTLE_AFTER` between the two."""
    return settle(conn, outbox, journey, held, lift(conn, journey, held), by, now, trail=trail)


def log_of(conn: Any, limit: int = 100, journey: str | None = None) -> list[dict[str, Any]]:
    """`GET /admin/pauses/log`: the newest `limit` rows of the pause log (of `journey` only, `*`
    the pauses of every send, when given), newest first: `{at, journey, event, by, reason, held,
    released, dropped}`, the last three null on a `paused` row."""
    where, params = ("WHERE journey = ? ", [journey]) if journey is not None else ("", [])
    rows = sql.execute(conn, "SELECT at, journey, event, by_whom, reason, held, released, dropped FROM pause_log "
                             f"{where}ORDER BY id DESC LIMIT ?", (*params, limit)).fetchall()
    return [{"at": _iso(at), "journey": j, "event": e, "by": by, "reason": reason, "held": held,
             "released": released, "dropped": dropped} for at, j, e, by, reason, held, released, dropped in rows]


# ---------------------------------------------------------------------- what a resume does

def _held_ids(conn: Any, journey: str, covered: frozenset[str]) -> list[str]:
    """The held entries of `journey` (`*`: of every journey) that none of the pauses `covered`
    holds, by id."""
    if ALL in covered or journey in covered:
        return []
    where, params = f"state = '{HELD}'", []
    if journey != ALL:
        where, params = f"{where} AND {journey_sql(conn)} = ?", [journey]
    elif covered:
        where, params = f"{where} AND {journey_sql(conn)} NOT IN ({sql.marks(len(covered))})", sorted(covered)
    return [i for (i,) in sql.execute(conn, f"SELECT id FROM outbox WHERE {where} ORDER BY id", params)]


def _settle(conn: Any, outbox: Any, ids: list[str], held: str, pause_of: str, by: str, now: datetime,
            trail: bool) -> dict[str, int]:
    """Release or drop the entries `ids`: released, pending and due at their action's time (in the
    order they were decided); dropped, with the pause as their last error."""
    found = outbox.get_many(ids)
    entries = [found[i] for i in ids if i in found and found[i].state == HELD]
    if held == DROP:
        why = f"dropped by pause: {pause_of}, resumed with held=drop by {by} at {iso(now)}"
        changed = [e.evolve(state=DROPPED, last_error=why) for e in entries]
    else:
        changed = [e.evolve(state=PENDING, next_at=min(e.created, now)) for e in entries]
    outbox.save_many(changed)
    if trail and changed:
        _trail(conn, changed, "dropped by pause" if held == DROP else "released after a pause",
               f"{pause_of}; resumed with held={held} by {by}", now)
    return {RELEASE: len(changed) if held != DROP else 0, DROP: len(changed) if held == DROP else 0}


def _trail(conn: Any, entries: list[Entry], what: str, detail: str, now: datetime) -> None:
    """One line per entry in its user's trail, in the trail's own words for an action."""
    from ..trail import add_lines

    by_user: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for e in entries:
        a = orjson.loads(e.payload)
        line = (f"{iso(now)}  {a.get('journey')} #{a.get('entry')}  {e.kind} \"{e.target}\" {what} "
                f"({detail})  [{a.get('path')}, id {e.action_id}, to {e.connector}]")
        fields = {"effect": "pause", "time": iso(now), "user": e.user_id, "journey": a.get("journey"),
                  "action": e.action_id, "connector": e.connector, "kind": e.kind, "target": e.target,
                  "outcome": e.state, "detail": detail}
        by_user.setdefault(e.user_id, []).append((line, fields))
    for user, lines in by_user.items():
        add_lines(conn, user, now, lines)


def _record(conn: Any, now: datetime, journey: str, event: str, by: str, reason: str | None,
            held: str | None = None, released: int | None = None, dropped: int | None = None) -> None:
    sql.execute(conn, "INSERT INTO pause_log (at, journey, event, by_whom, reason, held, released, dropped) "
                      "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (sql.moment(conn, now), journey, event, by, reason, held, released, dropped))


def _cause(journey: str, row: Any) -> str:
    """The pause, as a dropped send's error names it."""
    if row is None:
        return f"{_label(journey)} (no longer paused)"
    since, by, reason = row
    return f"{_label(journey)} paused by {by} at {_iso(since)}" + (f" ({reason})" if reason else "")


def _label(journey: str) -> str:
    return "every send (*)" if journey == ALL else f"journey {journey!r}"


def _iso(value: Any) -> str:
    """A time from either store in the admin API's form (ISO 8601, UTC, `Z`)."""
    if isinstance(value, str):
        value = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return iso(value)
