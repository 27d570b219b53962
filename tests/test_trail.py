"""The daemon's trail (engine/daemon/trail.py) on a real SQLite store: the same lines as the dry-run's
`--trace`, an anonymous visitor's story found by either id after the stitch, rows that vanish with
their transaction, and pruning by age and per user."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from engine.core.effects import Received
from engine.core.program import Program
from engine.daemon.trail import Trail, ids_of, read
from engine.dryrun.trace import Trace
from engine.runtime.clock import VirtualClock
from engine.runtime.loop import Engine, handle_all
from engine.runtime.sinks import FanOut
from engine.store.sqlite_store import SqliteStore

from .engine_helpers import compile_source, message, t

SOURCE = """
journey "Welcome" {
  entry when event "Signed Up"
  if user.plan == "pro" { send email "pro_welcome" } else { send email "welcome" }
  wait 1d
  send email "tips"
}
"""

EVENTS = [
    ("2026-03-02 09:00", ("anon", "a-1"), "Page Viewed", {"path": "/"}),
    ("2026-03-02 09:05", ("u1", "a-1"), "identify", {"email": "ann@example.com", "plan": "pro"}),
    ("2026-03-02 09:06", "u1", "Signed Up"),
    ("2026-03-02 09:07", "u2", "identify", {"email": "bob@example.com"}),
    ("2026-03-02 09:08", "u2", "Signed Up"),
]


def run(tmp_path, *sinks):
    program = Program.build(compile_source(tmp_path / "p", SOURCE))
    store = SqliteStore(str(tmp_path / "store.db"))
    trail = Trail(store)
    engine = Engine(program, store, VirtualClock(t("2026-03-02 08:00")), FanOut(trail, *sinks))
    msgs = [message(e, n) for n, e in enumerate(EVENTS)]
    with store.transaction():
        handle_all(engine, msgs, t("2026-03-04 00:00"))
    return store, trail


def test_the_trail_tells_the_dry_runs_story_by_either_id(tmp_path):
    anon, u1, known = Trace("a-1"), Trace("u1"), Trace("u2")
    store, _ = run(tmp_path, anon, u1, known)
    uid, ids = ids_of(store, "a-1")
    assert uid == "u1" and ids == ["a-1", "u1"]
    by_anon = read(store.conn, ids, 1000)
    # identical words in the same order: the anonymous visit, then everything under the profile
    assert anon.lines() and [r["line"] for r in by_anon] == anon.lines() + u1.lines()
    assert read(store.conn, ids_of(store, "u1")[1], 1000) == by_anon  # by the known id: the same
    lines = "\n".join(r["line"] for r in by_anon)
    assert "event Page Viewed" in lines and "branch" in lines and '"pro_welcome" sent' in lines
    assert '"tips" sent' in lines  # the timer a day later
    assert [r["line"] for r in read(store.conn, ["u2"], 1000)] == known.lines()
    first = by_anon[0]
    assert first["effect"] == "received" and first["user"] == "a-1" and first["time"] == "2026-03-02T09:00:00Z"
    sent = next(r for r in by_anon if r["effect"] == "action")
    assert sent["kind"] == "email" and sent["outcome"] == "sent" and "event" not in sent and "named" not in sent
    newest = read(store.conn, ids, 2)
    assert newest == by_anon[-2:]  # the newest rows, oldest first


def test_a_rolled_back_transaction_leaves_no_trail(tmp_path):
    store = SqliteStore(str(tmp_path / "store.db"))
    trail = Trail(store)
    try:
        with store.transaction():
            trail.emit([Received(t("2026-03-02 09:00"), "u1", "track", "X")])
            raise RuntimeError("the message failed")
    except RuntimeError:
        pass
    assert read(store.conn, ["u1"]) == []
    trail.emit([Received(t("2026-03-02 09:00"), "u1", "track", "X")])
    assert [r["name"] for r in read(store.conn, ["u1"])] == ["X"]


def test_prune_by_age_and_per_user(tmp_path):
    store = SqliteStore(str(tmp_path / "store.db"))
    trail = Trail(store, days=30, per_user=5)
    now = t("2026-03-31 12:00")
    old = [Received(now - timedelta(days=31, minutes=i), "old", "track", f"e{i}") for i in range(3)]
    busy = [Received(now - timedelta(minutes=100 - i), "bot", "track", f"e{i}") for i in range(12)]
    calm = [Received(now - timedelta(days=29), "calm", "track", "e0")]
    trail.emit(old + calm)
    for e in busy:  # a bot's messages: one emit each
        trail.emit([e])
    assert trail.prune(now) == 3 + 7
    assert read(store.conn, ["old"]) == []
    assert [r["name"] for r in read(store.conn, ["bot"])] == [f"e{i}" for i in range(7, 12)]  # the newest 5
    assert len(read(store.conn, ["calm"])) == 1
    assert trail.prune(now) == 0  # nothing new: nothing to look at


def test_one_emits_run_is_one_row_and_is_kept_whole(tmp_path):
    """Consecutive effects of one emit naming one user are one row; per-user pruning keeps every
    line of the row that holds the newest ones (at least `per_user` lines stay)."""
    store = SqliteStore(str(tmp_path / "store.db"))
    trail = Trail(store, days=30, per_user=5)
    now = t("2026-03-31 12:00")
    trail.emit([Received(now, "a", "track", "a0"), Received(now, "b", "track", "b0"),
                Received(now, "a", "track", "a1"), Received(now, "a", "track", "a2")])
    assert store.conn.execute("SELECT user_id, n FROM trail ORDER BY id").fetchall() == [("a", 1), ("b", 1), ("a", 2)]
    assert [r["name"] for r in read(store.conn, ["a", "b"])] == ["a0", "b0", "a1", "a2"]  # the emit's order
    assert [r["name"] for r in read(store.conn, ["a", "b"], 2)] == ["a1", "a2"]
    trail.emit([Received(now, "a", "track", f"x{i}") for i in range(8)])
    assert trail.prune(now) == 3  # a0, a1, a2: the 8 newest lines are one row, kept whole
    assert len(read(store.conn, ["a"], 1000)) == 8


def test_an_older_one_line_per_row_trail_is_converted(tmp_path):
    import sqlite3

    path = str(tmp_path / "store.db")
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE trail (id INTEGER PRIMARY KEY, user_id TEXT NOT NULL, time TEXT NOT NULL, "
                     "line TEXT NOT NULL, json TEXT NOT NULL)")
        conn.execute("CREATE INDEX trail_user ON trail (user_id, id)")
        conn.execute("INSERT INTO trail VALUES (7, 'u1', '2026-03-02T09:00:00.000000Z', 'event X', "
                     "'{\"effect\":\"received\",\"name\":\"X\"}')")
    store = SqliteStore(path)
    Trail(store)
    assert read(store.conn, ["u1"]) == [{"effect": "received", "name": "X", "line": "event X"}]
    assert store.conn.execute("SELECT id, n FROM trail").fetchall() == [(7, 1)]


def test_zero_days_is_no_trail(tmp_path):
    store = SqliteStore(str(tmp_path / "store.db"))
    trail = Trail(store, days=0)
    trail.emit([Received(t("2026-03-02 09:00"), "u1", "track", "X")])
    assert read(store.conn, ["u1"]) == [] and trail.prune(t("2026-03-02 10:00")) == 0


def test_every_kind_of_effect_reads_back_as_it_was_written():
    """Lines are stored as the effects' fields and rendered when read: the same text and JSON as
    rendering them at once, for every effect type and its odd fields."""
    from types import MappingProxyType

    import orjson

    from engine.core.effects import Action, Conversion, Received, TraitChange, Transition, format_effect
    from engine.daemon.trail import _dumps, _line, _record, fields

    t = datetime(2026, 3, 2, 10, 0, 0, 123456, tzinfo=timezone.utc)
    effects = [
        Received(t, "u1", "track", "Order Completed", "messageId m1 seen before"),
        Transition(t, "u1", "J", "v1", 2, "branch", "J/3", 'user.plan is "pro"'),
        Action("a1", t, "u1", "J", "v1", 2, "J/4", "email", "email", "welcome", "deferred", reason="quiet hours",
               until=t + timedelta(hours=9), data=MappingProxyType({"code": "X", "n": [1, 2]}),
               named={"order": {"total": 3}}, event={"event": "E"}),
        Conversion(t, "u1", "J", "v1", 2, "purchase", (("J/2", "a"), ("J/5", "control"))),
        TraitChange(t, "u1", "vip", {"since": "2026", "tiers": [1, 2]}, "J", "J/6"),
        TraitChange(t, "u1", "email", None),
    ]
    stored = orjson.loads(_dumps([_record(e) for e in effects]))
    assert [_line(r) for r in stored] == [{**fields(e), "line": format_effect(e)} for e in effects]
