"""The emergency stop's store side, on a SQLite file and a real PostgreSQL schema alike
(engine.daemon.admin.pauses, engine.daemon.deliveries.hold): a delivery loop's view of the pauses is
never older than its poll interval (the bound behind "within a second on every worker"), a pause
holds its journey's sends and no other's, and a resume releases them in their order or drops them
with the pause as the reason, asks for that choice whenever something is held, leaves alone what
another pause still covers, and is logged with who and when. The daemon end to end, with a real
SMTP server, is tests/test_daemon_pauses.py."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from engine.daemon.admin.pause_store import (ALL, POLL, ChoiceNeeded, NotPaused, create, lift, list_pauses, log_of,
                                             pause, resume, settle)
from engine.daemon.deliveries.hold import Hold
from engine.daemon.trail import create as create_trail
from engine.daemon.trail import read
from engine.store import sql
from engine.store.outbox import DROPPED, HELD, PENDING, SENDING, Entry

from .engine_helpers import t

T0 = t("2026-03-02 08:00")


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path):
    """A fresh store of each kind with its outbox, the trail and the pauses' tables, and a way to
    open a second connection to it (another worker's deliveries)."""
    if request.param == "sqlite":
        from engine.store.outbox import SqliteOutbox
        from engine.store.sqlite_store import SqliteStore

        path = str(tmp_path / "store.db")
        s = SqliteStore(path)
        s.outbox, s.other = SqliteOutbox(s.conn), lambda: SqliteStore(path)
    else:
        from engine.store.pg_outbox import PostgresOutbox
        from engine.store.pg_store import PostgresStore

        url = request.getfixturevalue("pg_url")
        s = PostgresStore(url)
        s.outbox, s.other = PostgresOutbox(s.conn), lambda: PostgresStore(url)
    create(s.conn)
    create_trail(s.conn)
    yield s
    s.close()


def entry(n: int, journey: str, user: str = "u1", state: str = HELD, minutes: int = 0) -> Entry:
    action = {"id": f"a{n}", "journey": journey, "entry": 1, "path": "0", "kind": "email", "target": "hello",
              "user": user}
    at = T0 + timedelta(minutes=minutes)
    return Entry(f"a{n}", "smtp", user, "email", "hello", json.dumps(action), at, at + timedelta(minutes=2), state)


def states(store) -> dict[str, str]:
    return {i: s for i, s in sql.execute(store.conn, "SELECT id, state FROM outbox")}


def test_a_hold_sees_a_pause_once_its_view_is_poll_old_and_holds_only_that_journey(store):
    """Another worker's deliveries (a connection of their own) judge entries by a view of the
    pauses read at most POLL seconds before: never later, whatever the load."""
    assert POLL <= 1.0  # "within a second on every worker"
    now = [100.0]
    other = store.other()
    try:
        hold = Hold(other.conn, clock=lambda: now[0])
        a, b = entry(1, "A"), entry(2, "B")
        assert not hold.holds(a)  # the view, read at 100.0: nothing paused
        with store.transaction():
            pause(store.conn, "A", "ann@laptop", "wrong coupon", T0)
        now[0] = 100.0 + POLL * 0.99
        assert not hold.holds(a)  # a view younger than POLL is used as it is
        now[0] = 100.0 + POLL
        assert hold.holds(a) and not hold.holds(b)  # POLL old: read again
        with store.transaction():
            pause(store.conn, ALL, "ann@laptop", None, T0)
        now[0] += POLL
        assert hold.holds(a) and hold.holds(b)  # every send
        with store.transaction():
            resume(store.conn, store.outbox, ALL, None, "bob@desk", T0)
            resume(store.conn, store.outbox, "A", None, "bob@desk", T0)
        now[0] += POLL
        assert not hold.holds(a) and not hold.holds(b)
    finally:
        other.close()


def test_resume_releases_in_order_or_drops_with_the_pause_as_reason_and_asks_which(store):
    conn, outbox = store.conn, store.outbox
    with store.transaction():
        outbox.add([entry(1, "A", "u1", minutes=1), entry(2, "A", "u2", minutes=0), entry(3, "B", "u3"),
                    entry(4, "B", "u4", state=SENDING)])
        first, new = pause(conn, "A", "ann@laptop", "wrong coupon", T0)
        assert new and first == {"journey": "A", "since": "2026-03-02T08:00:00Z", "by": "ann@laptop",
                                 "reason": "wrong coupon", "held": 2}
        again, new = pause(conn, "A", "someone else", "other reason", T0 + timedelta(hours=1))
        assert not new and again == first  # idempotent: the pause stays as it was
        pause(conn, ALL, "ann@laptop", None, T0 + timedelta(minutes=5))
    assert [(p["journey"], p["held"]) for p in list_pauses(conn)] == [(ALL, 3), ("A", 2)]

    # A resumed while every send is paused: nothing of A is released (still held by *), no choice needed
    with store.transaction():
        assert resume(conn, outbox, "A", None, "bob@desk", T0) == {"resumed": "A", "released": 0, "dropped": 0}
    assert [(p["journey"], p["held"]) for p in list_pauses(conn)] == [(ALL, 3)]

    # now resuming * would free A's and B's held sends: the operator must choose
    with pytest.raises(ChoiceNeeded) as asked, store.transaction():
        resume(conn, outbox, ALL, None, "bob@desk", T0)
    assert asked.value.held == 3 and "held=release" in str(asked.value) and "held=drop" in str(asked.value)
    assert [p["journey"] for p in list_pauses(conn)] == [ALL]  # rolled back: still paused

    # A paused again; * dropped: B's held send goes (A's stay, covered by A's own pause)
    with store.transaction():
        pause(conn, "A", "ann@laptop", "still wrong", T0)
        done = resume(conn, outbox, ALL, "drop", "bob@desk", T0 + timedelta(minutes=10))
    assert done == {"resumed": ALL, "released": 0, "dropped": 1}
    assert states(store) == {"a1:smtp": HELD, "a2:smtp": HELD, "a3:smtp": DROPPED, "a4:smtp": SENDING}
    dropped = outbox.get("a3:smtp")
    assert dropped.last_error.startswith("dropped by pause: every send (*) paused by ann@laptop at ")
    assert "resumed with held=drop by bob@desk" in dropped.last_error
    (line,) = [r["line"] for r in read(conn, ["u3"])]
    assert line.split("  ")[1] == "B #1" and 'email "hello" dropped by pause' in line and "bob@desk" in line

    # A released: pending again, due at their actions' times, so in the order they were decided
    with store.transaction():
        assert resume(conn, outbox, "A", "release", "bob@desk", T0 + timedelta(hours=1)) == {
            "resumed": "A", "released": 2, "dropped": 0}
    released = [outbox.get(i) for i in ("a1:smtp", "a2:smtp")]
    assert [(e.state, e.next_at) for e in released] == [(PENDING, T0 + timedelta(minutes=1)), (PENDING, T0)]
    assert [e.id for e in outbox.due(T0 + timedelta(hours=1)) if e.id in ("a1:smtp", "a2:smtp")] == \
        ["a2:smtp", "a1:smtp"]
    assert "released after a pause" in read(conn, ["u1"])[-1]["line"]
    assert list_pauses(conn) == []

    with pytest.raises(NotPaused), store.transaction():
        resume(conn, outbox, "A", "release", "bob@desk", T0)

    assert [(r["event"], r["journey"], r["by"], r["held"], r["released"], r["dropped"]) for r in log_of(conn)] == [
        ("resumed", "A", "bob@desk", "release", 2, 0), ("resumed", ALL, "bob@desk", "drop", 0, 1),
        ("paused", "A", "ann@laptop", None, None, None), ("resumed", "A", "bob@desk", None, 0, 0),
        ("paused", ALL, "ann@laptop", None, None, None), ("paused", "A", "ann@laptop", None, None, None)]
    assert log_of(conn)[-1]["reason"] == "wrong coupon"


def test_a_resume_settles_what_stale_views_held_after_its_pause_went(store):
    """Between `lift` (the pause goes) and `settle` (SETTLE_AFTER later), a worker whose view was
    up to POLL old may still hold a send: the settle takes it too, the same way, unless the
    journey is paused again meanwhile; without a choice (nothing was held at the lift) it is released."""
    conn, outbox = store.conn, store.outbox
    with store.transaction():
        pause(conn, "A", "ann", None, T0)
        outbox.add([entry(1, "A")])
    with store.transaction():
        cause = lift(conn, "A", "drop")
        outbox.add([entry(2, "A")])  # held by a stale view, after the pause went
    assert list_pauses(conn) == []
    with store.transaction():
        assert settle(conn, outbox, "A", "drop", cause, "bob", T0) == {"resumed": "A", "released": 0, "dropped": 2}
    assert states(store) == {"a1:smtp": DROPPED, "a2:smtp": DROPPED}
    assert outbox.get("a2:smtp").last_error.startswith("dropped by pause: journey 'A' paused by ann at ")

    with store.transaction():
        pause(conn, "A", "ann", None, T0)
    with store.transaction():
        cause = lift(conn, "A", None)  # nothing held: no choice needed
        outbox.add([entry(3, "A")])
        pause(conn, "A", "carl", None, T0)  # paused again meanwhile: its held sends are the new pause's
    with store.transaction():
        assert settle(conn, outbox, "A", None, cause, "bob", T0)["released"] == 0
    assert states(store)["a3:smtp"] == HELD
    with store.transaction():
        sql.execute(conn, "DELETE FROM pauses")  # as if the daemon stopped between lift and settle
    with pytest.raises(ChoiceNeeded), store.transaction():
        lift(conn, "A", None)  # not paused, but something of it is held: the same DELETE settles it
    with store.transaction():
        assert resume(conn, outbox, "A", "release", "bob", T0)["released"] == 1
    assert states(store)["a3:smtp"] == PENDING
