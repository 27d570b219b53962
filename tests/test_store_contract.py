"""The `Store` contract, held by `MemoryStore` (the reference), `SqliteStore` and `PostgresStore`
alike, and the state serialisation the persistent stores rest on.

Every contract test runs on every store (PostgreSQL in a schema of its own per test; skipped when
no server is reachable, except in CI). The SQLite-only and PostgreSQL-only tests cover what memory
has no notion of: reopening, transactions, the schema, migrations and the admin `instances` table.
The engine tests run the same messages through `engine.runtime.loop.Engine` on each store and want
identical effects.
"""

from __future__ import annotations

import sqlite3
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import MappingProxyType

import orjson
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from engine.runtime.clock import VirtualClock
from engine.core.effects import Action
from engine.core.messages import Message, parse_message
from engine.core.program import Program
from engine.runtime.loop import Engine, handle_all
from engine.store.serialize import action_from_row, action_to_row, state_from_bytes, state_to_bytes, utc_text
from engine.runtime.sinks import Recorder
from engine.store.pg_store import PostgresStore
from engine.store.sqlite_store import SqliteStore
from engine.store.urls import sqlite_path
from engine.core.state import Instance, PendingGoal, SendRecord, UserState, new_user
from engine.store.base import MemoryStore
from journeys.checker import check_and_compile
from journeys.evaluation import Event, HistoryIndex
from journeys.project import load_project

UTC = timezone.utc
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
H = timedelta(hours=1)
REPO = Path(__file__).resolve().parent.parent
_NO_HISTORY = HistoryIndex()


# ---------------------------------------------------------------------------------- helpers


def same_state(a: UserState | None, b: UserState | None) -> bool:
    """Field-by-field equality, the history compared by content (HistoryIndex has no __eq__:
    see test_userstate_equality_survives_a_round_trip)."""
    if a is None or b is None:
        return a is b
    return (replace(a, history=_NO_HISTORY) == replace(b, history=_NO_HISTORY)
            and list(a.history.by_name.items()) == list(b.history.by_name.items()))


def rich_state(user_id: str = "u1") -> UserState:
    viewed = Event("Product Viewed", T0 + timedelta(microseconds=123456),
                   {"product_id": "p1", "name": "Lamp", "price": 28.99, "tags": ["a", "b"], "stock": None})
    checkout = Event("Checkout Started", T0 + 2 * H, {"revenue": 250, "items": [{"sku": "x", "qty": 2}]})
    history = HistoryIndex([
        viewed,
        Event("Product Viewed", T0 - 3 * H, {"product_id": "p0", "name": "Chair", "price": 10}),
        Event("Product Viewed", T0 + timedelta(microseconds=123456), {"same": "time, kept second"}),
        checkout,
        Event("Page Viewed", T0 - H, MappingProxyType({})),
        Event("Email Opened", T0 + H, {}),
        Event("Ünïcode ✓", T0 + H, {"k": "ß — ✓", "nested": {"deep": [1, [2, [3.5]]]}}),
    ])
    browse = Instance("Browse abandonment", "1143d31b26da", 2, "anon-1", T0, path="browse/1", wait="for",
                      since=T0, wake=T0 + H, named=MappingProxyType({"viewed": viewed}))
    checkout_run = Instance("Checkout abandonment", "aa11", 1, user_id, T0 + 2 * H, path="checkout/3",
                            wait="until", since=T0 + 2 * H, wake=T0 + 20 * H,
                            named=MappingProxyType({"checkout": checkout}),
                            arms=(("checkout/2", "coupon"), ("checkout/5", "control")))
    ending = Instance("Retarget by engagement", "bb22", 3, user_id, T0 - 24 * H, path="retarget/exit/1",
                      wait="held", since=T0, wake=T0 + 11 * H, exiting="exit when event \"Order Completed\"")
    running = Instance("First purchase", "cc33", 1, user_id, T0)  # no wait, no wake
    return UserState(
        user_id=user_id,
        traits=MappingProxyType({"email": "emma@example.com", "timezone": "Europe/Berlin", "age": 41,
                                 "score": 0.5, "vip": True, "unsubscribed": False, "nothing": None,
                                 "prefs": {"topics": ["lamps", "chairs"], "limits": {"email": 2}},
                                 "list": [1, "two", 3.0, None, [], {}]}),
        history=history,
        instances=MappingProxyType({i.journey: i for i in (browse, checkout_run, ending, running)}),
        entries=MappingProxyType({"Browse abandonment": (2, T0), "Checkout abandonment": (1, T0 + 2 * H)}),
        goals=(PendingGoal("Browse abandonment", "1143d31b26da", 2, "anon-1", "purchase", T0, T0 + 72 * H),
               PendingGoal("Checkout abandonment", "aa11", 1, user_id, "recovered", T0 + 2 * H, T0 + 50 * H,
                           arms=(("checkout/2", "coupon"),))),
        sends=(SendRecord(T0 - 5 * H, "email", "Browse abandonment"), SendRecord(T0 - H, "ads", "Retarget")),
        audiences=frozenset({"hot_browsers", "warm_browsers"}),
        segments=MappingProxyType({"recent_browsers": True, "promo_dependent": False}),
        aliases=frozenset({"anon-1", "anon-2"}),
    )


def waiting(user_id: str, *wakes: datetime | None) -> UserState:
    """A user waiting in one journey per wake (None: a journey that is running, no timer)."""
    instances = {f"J{n}": Instance(f"J{n}", "v1", 1, user_id, T0, path=f"j{n}/1", wait="wait", since=T0, wake=w)
                 for n, w in enumerate(wakes)}
    return UserState(user_id, instances=MappingProxyType(instances))


def action(id: str, outcome: str = "sent", **kw) -> Action:
    fields = dict(id=id, time=T0 + timedelta(microseconds=5), user="u1", journey="Browse abandonment",
                  version="v1", entry=1, path="browse/2", kind="email", channel="email",
                  target="browse_abandon", outcome=outcome, data={"product": "Lamp", "n": [1, 2]},
                  named={"viewed": {"event": "Product Viewed", "timestamp": "2026-03-02T10:00:00Z",
                                    "properties": {"name": "Lamp"}}})
    fields.update(kw)
    return Action(**fields)


def logged(store) -> dict[str, Action]:
    """The action log, by id, whatever the store."""
    if isinstance(store, MemoryStore):
        return dict(store.actions)
    if isinstance(store, PostgresStore):
        return {id: action_from_row({"json": json}) for id, json in store.conn.execute("SELECT id, json FROM actions")}
    return {row["id"]: action_from_row(row) for row in store.db["actions"].rows}


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store(request, tmp_path):
    if request.param == "memory":
        yield MemoryStore()
    else:
        s = (SqliteStore(str(tmp_path / "store.db")) if request.param == "sqlite"
             else PostgresStore(request.getfixturevalue("pg_url")))
        yield s
        s.close()


@pytest.fixture
def db_file(tmp_path) -> str:
    return str(tmp_path / "journeys.db")


# ---------------------------------------------------------------------------------- profiles


def test_save_load_round_trip(store):
    state = rich_state()
    assert store.load("u1") is None
    store.save(state, "Europe/Berlin")
    loaded = store.load("u1")
    assert same_state(loaded, state)
    assert loaded.wake == T0 + H
    assert store.load("nobody") is None


def test_save_replaces_the_profile_and_its_zone(store):
    store.save(rich_state(), "Europe/Berlin")
    newer = rich_state().evolve(traits=MappingProxyType({"email": "new@example.com"}), goals=())
    store.save(newer, "America/New_York")
    assert same_state(store.load("u1"), newer)
    assert list(store.users_in_zone("Europe/Berlin")) == []
    assert list(store.users_in_zone("America/New_York")) == ["u1"]
    assert store.zones() == {"America/New_York"}


def test_empty_state_round_trip(store):
    store.save(new_user("u0"), "UTC")
    assert same_state(store.load("u0"), new_user("u0"))


def test_delete(store):
    store.save(rich_state("u1"), "Europe/Berlin")
    store.save(rich_state("u2"), "UTC")
    store.delete("u1")
    store.delete("never-there")
    assert store.load("u1") is None
    assert list(store.users()) == ["u2"]
    assert store.zones() == {"UTC"}
    assert store.next_timer(T0 + 100 * H) == (T0 + H, "u2")


# ---------------------------------------------------------------------------------- identities and dedupe


def test_link_and_resolve(store):
    assert store.resolve("anon-1") is None
    store.link("anon-1", "u1")
    store.link("old-id", "u1")
    assert store.resolve("anon-1") == "u1"
    assert store.resolve("old-id") == "u1"
    store.link("anon-1", "u2")  # stitched again: the latest link wins
    assert store.resolve("anon-1") == "u2"
    store.link("u3", "u3")  # an id is not an alias of itself
    assert store.resolve("u3") is None


def test_seen(store):
    assert store.seen("m1") is False
    assert store.seen("m1") is True
    assert store.seen("m1") is True
    assert store.seen("m2") is False


def test_seen_within_the_dedupe_window(store):
    """A repeat is one only while its first sighting is at or after `since`; past it the message
    is new again and its sighting moves, so the window runs from the last time it was taken."""
    t0 = datetime(2026, 3, 2, 10, 0, tzinfo=timezone.utc)
    week = timedelta(days=7)
    with store.transaction():
        assert store.seen("m1", t0, t0 - week) is False
        assert store.seen("m1", t0 + timedelta(days=7), t0) is True  # exactly at the window's edge: a repeat
        assert store.seen("m1", t0 + timedelta(days=8), t0 + timedelta(days=1)) is False  # past it: new
        assert store.seen("m1", t0 + timedelta(days=9), t0 + timedelta(days=2)) is True  # from its new sighting
        assert store.seen("m2", None, None) is False
        assert store.seen("m2", t0, t0) is True  # a sighting of unknown time is a repeat for good


# ---------------------------------------------------------------------------------- timers


def test_no_timers(store):
    assert store.next_timer(T0 + 1000 * H) is None
    store.save(waiting("u1", None), "UTC")  # in flight without a wait
    assert store.next_timer(T0 + 1000 * H) is None


def test_next_timer_respects_until_and_orders_by_due_then_user(store):
    store.save(waiting("u2", T0 + 2 * H), "UTC")
    store.save(waiting("u1", T0 + 2 * H), "UTC")
    store.save(waiting("u3", T0 + 3 * H, T0 + H, None), "UTC")  # the earliest of its waits
    assert store.next_timer(T0) is None
    assert store.next_timer(T0 + H - timedelta(microseconds=1)) is None
    assert store.next_timer(T0 + H) == (T0 + H, "u3")  # due exactly at `until` counts
    assert store.next_timer(T0 + H) == (T0 + H, "u3")  # it stays until a save moves it
    store.save(waiting("u3", T0 + 3 * H), "UTC")
    assert store.next_timer(T0 + 10 * H) == (T0 + 2 * H, "u1")  # same due: by user id
    due, uid = store.next_timer(T0 + 10 * H)
    assert due.utcoffset() == timedelta(0) and due.tzinfo is not None


def test_next_timer_moves_with_saves(store):
    store.save(waiting("a", T0 + H), "UTC")
    store.save(waiting("b", T0 + 2 * H), "UTC")
    store.save(waiting("a", T0 + 5 * H), "UTC")  # a's wait moved later
    assert store.next_timer(T0 + 10 * H) == (T0 + 2 * H, "b")
    store.save(waiting("b", None), "UTC")  # b no longer waits
    assert store.next_timer(T0 + 10 * H) == (T0 + 5 * H, "a")
    store.save(waiting("a", T0 + H), "UTC")  # and back earlier
    assert store.next_timer(T0 + 10 * H) == (T0 + H, "a")
    store.save(new_user("a"), "UTC")  # nothing in flight
    assert store.next_timer(T0 + 10 * H) is None


def test_next_timer_disappears_with_the_user(store):
    store.save(waiting("a", T0 + H), "UTC")
    store.save(waiting("b", T0 + 2 * H), "UTC")
    store.delete("a")
    assert store.next_timer(T0 + 10 * H) == (T0 + 2 * H, "b")
    store.delete("b")
    assert store.next_timer(T0 + 10 * H) is None


def test_next_timer_with_microseconds_and_other_offsets(store):
    due = T0 + timedelta(microseconds=7)
    store.save(waiting("u", due), "UTC")
    paris = timezone(timedelta(hours=1))
    assert store.next_timer(T0.astimezone(paris)) is None
    assert store.next_timer(due.astimezone(paris)) == (due, "u")


# ---------------------------------------------------------------------------------- listings


def test_users_and_zones_sorted(store):
    for uid, zone in [("zed", "UTC"), ("Émile", "Europe/Paris"), ("adam", "Europe/Paris"),
                      ("Bob", "UTC"), ("10", "UTC"), ("9", "Europe/Paris")]:
        store.save(new_user(uid), zone)
    assert list(store.users()) == sorted(["zed", "Émile", "adam", "Bob", "10", "9"])
    assert list(store.users_in_zone("Europe/Paris")) == ["9", "adam", "Émile"]
    assert list(store.users_in_zone("UTC")) == ["10", "Bob", "zed"]
    assert list(store.users_in_zone("Asia/Tokyo")) == []
    assert store.zones() == {"UTC", "Europe/Paris"}


# ---------------------------------------------------------------------------------- action log


def test_record_replaces_by_id(store):
    deferred = action("a1", "deferred", until=T0 + 10 * H, reason="quiet hours")
    store.record([deferred, action("a2", "suppressed", reason="cap", rule="email 2 per 1d")])
    store.record([])
    assert logged(store) == {"a1": deferred, "a2": action("a2", "suppressed", reason="cap", rule="email 2 per 1d")}
    sent = action("a1", "sent", time=T0 + 10 * H, via="smtp")
    store.record([sent])
    assert logged(store) == {"a1": sent, "a2": action("a2", "suppressed", reason="cap", rule="email 2 per 1d")}


# ---------------------------------------------------------------------------------- SQLite only


def test_sqlite_reopen_keeps_everything(db_file):
    s = SqliteStore(db_file)
    s.save(rich_state("u1"), "Europe/Berlin")
    s.save(waiting("u2", T0 + 30 * H), "UTC")
    s.link("anon-1", "u1")
    assert s.seen("m1") is False
    s.record([action("a1")])
    s.close()

    s = SqliteStore(db_file)
    assert same_state(s.load("u1"), rich_state("u1"))
    assert same_state(s.load("u2"), waiting("u2", T0 + 30 * H))
    assert s.resolve("anon-1") == "u1"
    assert s.seen("m1") is True
    assert s.seen("m2") is False
    assert logged(s) == {"a1": action("a1")}
    assert s.users() == ["u1", "u2"]
    assert s.users_in_zone("Europe/Berlin") == ["u1"]
    assert s.zones() == {"Europe/Berlin", "UTC"}
    assert s.next_timer(T0 + 100 * H) == (T0 + H, "u1")
    s.close()


def test_sqlite_schema_and_pragmas(db_file):
    with SqliteStore(db_file) as s:
        assert s.conn.execute("SELECT version FROM schema_version").fetchall() == [(1,)]
        assert set(s.db.table_names()) >= {"schema_version", "profiles", "identities", "messages", "actions",
                                           "instances"}
        assert s.db["profiles"].pks == ["user_id"]
        assert s.db["instances"].pks == ["user_id", "journey"]
        assert s.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert s.conn.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        plan = s.conn.execute("EXPLAIN QUERY PLAN SELECT wake, user_id FROM profiles WHERE wake IS NOT NULL "
                              "AND wake <= ? ORDER BY wake, user_id LIMIT 1", ("x",)).fetchall()
        assert "INDEX" in plan[0][-1] and "TEMP B-TREE" not in str(plan)
    with SqliteStore(db_file) as s:  # reopening does not add a second version row
        assert s.conn.execute("SELECT version FROM schema_version").fetchall() == [(1,)]


def test_sqlite_refuses_another_schema_version(db_file):
    SqliteStore(db_file).close()
    conn = sqlite3.connect(db_file)
    conn.execute("UPDATE schema_version SET version = 2")
    conn.commit()
    conn.close()
    with pytest.raises(RuntimeError, match="schema version 2"):
        SqliteStore(db_file)


def test_sqlite_columns(db_file):
    with SqliteStore(db_file) as s:
        s.save(rich_state("u1"), "Europe/Berlin")
        s.record([action("a1", "deferred", reason="quiet hours", until=T0 + H)])
        assert s.conn.execute("SELECT zone, wake FROM profiles").fetchall() == [
            ("Europe/Berlin", "2026-03-02T11:00:00.000000Z")]
        row = s.db["actions"].get("a1")
        assert (row["time"], row["user"], row["outcome"], row["reason"], row["rule"]) == (
            "2026-03-02T10:00:00.000005Z", "u1", "deferred", "quiet hours", None)
        assert orjson.loads(row["json"]) == action("a1", "deferred", reason="quiet hours", until=T0 + H).to_json()


def test_sqlite_instances_table_follows_saves(db_file):
    rows = "SELECT journey, version, entry, path, wait, wake FROM instances WHERE user_id = ? ORDER BY journey"
    with SqliteStore(db_file) as s:
        state = rich_state("u1")
        s.save(state, "UTC")
        s.save(waiting("u2", T0 + H), "UTC")
        assert s.conn.execute(rows, ("u1",)).fetchall() == [
            ("Browse abandonment", "1143d31b26da", 2, "browse/1", "for", "2026-03-02T11:00:00.000000Z"),
            ("Checkout abandonment", "aa11", 1, "checkout/3", "until", "2026-03-03T06:00:00.000000Z"),
            ("First purchase", "cc33", 1, None, None, None),
            ("Retarget by engagement", "bb22", 3, "retarget/exit/1", "held", "2026-03-02T21:00:00.000000Z"),
        ]
        # two journeys ended, one moved on
        moved = replace(state.instances["Checkout abandonment"], path="checkout/4", wait=None, wake=None)
        s.save(state.evolve(instances=MappingProxyType({"Checkout abandonment": moved,
                                                        "First purchase": state.instances["First purchase"]})),
               "UTC")
        assert s.conn.execute(rows, ("u1",)).fetchall() == [
            ("Checkout abandonment", "aa11", 1, "checkout/4", None, None),
            ("First purchase", "cc33", 1, None, None, None),
        ]
        s.save(new_user("u1"), "UTC")
        assert s.conn.execute(rows, ("u1",)).fetchall() == []
        s.delete("u2")
        assert s.conn.execute("SELECT count(*) FROM instances").fetchone() == (0,)


def test_sqlite_transaction_commits_together(db_file):
    s = SqliteStore(db_file)
    other = SqliteStore(db_file)
    with s.transaction():
        assert s.seen("m1") is False
        s.link("anon-1", "u1")
        s.save(rich_state("u1"), "UTC")
        s.record([action("a1")])
        assert other.load("u1") is None and other.resolve("anon-1") is None  # not yet visible
    assert same_state(other.load("u1"), rich_state("u1"))
    assert other.resolve("anon-1") == "u1"
    assert other.seen("m1") is True
    assert logged(other) == {"a1": action("a1")}
    s.close()
    other.close()


def test_sqlite_transaction_rolls_back_on_an_exception(db_file):
    s = SqliteStore(db_file)
    s.save(waiting("u0", T0 + H), "UTC")
    with pytest.raises(ZeroDivisionError):
        with s.transaction():
            assert s.seen("m1") is False
            s.link("anon-1", "u1")
            s.save(rich_state("u1"), "UTC")
            s.delete("u0")
            s.record([action("a1")])
            1 / 0
    assert s.load("u1") is None
    assert same_state(s.load("u0"), waiting("u0", T0 + H))
    assert s.resolve("anon-1") is None
    assert s.seen("m1") is False  # the message can be retried
    assert logged(s) == {}
    assert s.next_timer(T0 + 100 * H) == (T0 + H, "u0")
    assert not s.conn.in_transaction
    s.save(rich_state("u1"), "UTC")  # and the store works on, in autocommit
    s.close()
    with SqliteStore(db_file) as s:
        assert s.users() == ["u0", "u1"]


def test_sqlite_nested_transactions_are_savepoints(db_file):
    with SqliteStore(db_file) as s:
        with s.transaction():
            s.link("kept", "u1")
            with pytest.raises(KeyError):
                with s.transaction():
                    s.link("dropped", "u1")
                    raise KeyError("inner")
            s.link("kept too", "u1")
        assert (s.resolve("kept"), s.resolve("dropped"), s.resolve("kept too")) == ("u1", None, "u1")


def test_sqlite_autocommit_outside_transactions(db_file):
    s = SqliteStore(db_file)
    other = SqliteStore(db_file)
    s.save(rich_state("u1"), "UTC")
    s.link("anon-1", "u1")
    assert s.seen("m1") is False
    assert not s.conn.in_transaction
    assert same_state(other.load("u1"), rich_state("u1"))
    assert other.resolve("anon-1") == "u1"
    assert other.seen("m1") is True
    s.close()
    other.close()


def test_sqlite_paths_and_urls(tmp_path, monkeypatch):
    assert sqlite_path("sqlite:///shop.db") == "shop.db"
    assert sqlite_path("sqlite:///data/shop.db") == "data/shop.db"
    assert sqlite_path("sqlite:////var/lib/shop.db") == "/var/lib/shop.db"
    assert sqlite_path("/var/lib/shop.db") == "/var/lib/shop.db"
    assert sqlite_path(":memory:") == sqlite_path("sqlite://") == sqlite_path("sqlite:///:memory:") == ":memory:"
    with pytest.raises(ValueError):
        sqlite_path("sqlite://host/shop.db")

    monkeypatch.chdir(tmp_path)
    for url, where in [("sqlite:///rel/a.db", tmp_path / "rel" / "a.db"),
                       (f"sqlite:///{tmp_path}/abs/b.db", tmp_path / "abs" / "b.db"),  # sqlite:////tmp/...
                       (str(tmp_path / "plain.db"), tmp_path / "plain.db"),
                       ("plain-relative.db", tmp_path / "plain-relative.db")]:
        with SqliteStore(url) as s:
            s.link("a", "b")
        assert where.exists(), url
        with SqliteStore(str(where)) as s:
            assert s.resolve("a") == "b"


def test_sqlite_in_memory():
    with SqliteStore(":memory:") as s:
        s.save(rich_state(), "UTC")
        assert same_state(s.load("u1"), rich_state())
        assert s.seen("m") is False and s.seen("m") is True


# ---------------------------------------------------------------------------------- PostgreSQL only


def test_postgres_reopen_keeps_everything(pg_url):
    s = PostgresStore(pg_url)
    s.save(rich_state("u1"), "Europe/Berlin")
    s.save(waiting("u2", T0 + 30 * H), "UTC")
    s.link("anon-1", "u1")
    assert s.seen("m1") is False
    s.record([action("a1")])
    s.close()

    with PostgresStore(pg_url) as s:
        assert same_state(s.load("u1"), rich_state("u1"))
        assert same_state(s.load("u2"), waiting("u2", T0 + 30 * H))
        assert s.resolve("anon-1") == "u1"
        assert s.seen("m1") is True and s.seen("m2") is False
        assert logged(s) == {"a1": action("a1")}
        assert s.users() == ["u1", "u2"]
        assert s.users_in_zone("Europe/Berlin") == ["u1"]
        assert s.zones() == {"Europe/Berlin", "UTC"}
        assert s.next_timer(T0 + 100 * H) == (T0 + H, "u1")


def test_postgres_schema_migrations_and_indexes(pg_url):
    from engine.store.migrations import POSTGRES, latest

    assert [m.version for m in POSTGRES] == list(range(1, len(POSTGRES) + 1))
    with PostgresStore(pg_url) as s:
        q = s.conn.execute
        assert [r[0] for r in q("SELECT version FROM schema_migrations ORDER BY 1")] == list(range(1, latest() + 1))
        tables = {r[0] for r in q("SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                                  (s.schema,))}
        assert tables == {"schema_migrations", "profiles", "identities", "messages", "actions", "instances", "outbox",
                          "inbox", "inbox_failed", "partitions", "workers", "schedule_runs", "forgotten", "trail",
                          "erasure", "models", "model_claims", "pauses", "pause_log"}
        assert q("SELECT count(*) FROM information_schema.tables WHERE table_name = 'profiles' "
                 "AND table_schema = 'public'").fetchone() == (0,)  # nothing outside its schema
        assert q("SELECT collation_name FROM information_schema.columns WHERE table_schema = %s "
                 "AND table_name = 'profiles' AND column_name = 'user_id'", (s.schema,)).fetchone() == ("C",)
        assert q("SELECT data_type FROM information_schema.columns WHERE table_schema = %s "
                 "AND table_name = 'profiles' AND column_name = 'state'", (s.schema,)).fetchone() == ("bytea",)
        q("SET enable_seqscan = off")  # an empty table: make the planner show what it would do at scale
        plan = "\n".join(r[0] for r in q("EXPLAIN SELECT wake, user_id FROM profiles WHERE wake <= now() "
                                         "ORDER BY wake, user_id LIMIT 1"))
        assert "profiles_wake" in plan and "Sort" not in plan, plan
        from engine.store.outbox import CONNECTORS
        from engine.store.pg_outbox import _COLUMNS, _LINE

        plan = "\n".join(r[0] for r in q("EXPLAIN " + _LINE.format(_COLUMNS), ("smtp", datetime.now(timezone.utc), 8)))
        assert "outbox_open_connector" in plan and "Sort" not in plan, plan  # a connector's open entries, in order
        plan = "\n".join(r[0] for r in q("EXPLAIN " + CONNECTORS))
        assert "outbox_open_connector" in plan and "Seq Scan" not in plan, plan  # a seek per connector
        plan = "\n".join(r[0] for r in q("EXPLAIN SELECT min(next_at) FROM outbox "
                                         "WHERE state IN ('pending', 'sending')"))
        assert "outbox_open " in plan, plan  # the delivery loop's next due time: the first of the open entries
    with PostgresStore(pg_url) as s:  # reopening applies nothing twice
        assert [r[0] for r in s.conn.execute("SELECT version FROM schema_migrations ORDER BY 1")] == \
            list(range(1, latest() + 1))


def test_postgres_refuses_a_schema_from_a_newer_journeys(pg_url):
    from engine.store.migrations import SchemaTooNew, latest

    with PostgresStore(pg_url) as s:
        s.conn.execute("INSERT INTO schema_migrations (version) VALUES (99)")
    with pytest.raises(SchemaTooNew, match=f"version 99, but this Journeys knows versions up to {latest()}"):
        PostgresStore(pg_url)


def test_postgres_stores_opening_at_once_migrate_once(pg_url):
    import threading

    errors, stores = [], []
    start = threading.Barrier(6)

    def open_one():
        start.wait()
        try:
            stores.append(PostgresStore(pg_url))
        except Exception as e:  # pragma: no cover - the failure this test is for
            errors.append(e)

    threads = [threading.Thread(target=open_one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(stores) == 6
    from engine.store.migrations import latest
    assert stores[0].conn.execute("SELECT version FROM schema_migrations ORDER BY 1").fetchall() == [(v,) for v in range(1, latest() + 1)]
    for s in stores:
        s.close()


def test_postgres_migrations_must_be_numbered_in_order(pg_url):
    from engine.store.migrations import Migration, migrate
    from engine.store.pg_store import connect

    conn, schema = connect(pg_url)
    with conn, pytest.raises(ValueError, match="numbered"):
        migrate(conn, schema, migrations=(Migration(2, "two", ()),))


def test_postgres_a_failing_migration_changes_nothing_and_says_which(pg_url):
    from engine.store.migrations import POSTGRES, Migration, migrate
    from engine.store.pg_store import connect
    from engine.store.base import StoreError

    conn, schema = connect(pg_url)
    with conn:
        broken = (*POSTGRES, Migration(len(POSTGRES) + 1, "broken", ("CREATE TABLE outbox (id text)",)))
        with pytest.raises(StoreError, match=f"migration {len(broken)} failed, nothing was changed: .*outbox"):
            migrate(conn, schema, "the store", migrations=broken)
        assert conn.execute("SELECT to_regclass(%s)", (f"{schema}.profiles",)).fetchone() == (None,)


def test_postgres_columns(pg_url):
    with PostgresStore(pg_url) as s:
        s.save(rich_state("u1"), "Europe/Berlin")
        s.record([action("a1", "deferred", reason="quiet hours", until=T0 + H)])
        assert s.conn.execute("SELECT zone, wake FROM profiles").fetchall() == [("Europe/Berlin", T0 + H)]
        assert bytes(s.conn.execute("SELECT state FROM profiles").fetchone()[0]) == state_to_bytes(rich_state("u1"))
        row = s.conn.execute('SELECT time, "user", outcome, reason, rule, json FROM actions WHERE id = %s',
                             ("a1",)).fetchone()
        expected = action("a1", "deferred", reason="quiet hours", until=T0 + H)
        assert row[:5] == (T0 + timedelta(microseconds=5), "u1", "deferred", "quiet hours", None)
        assert row[5] == action_to_row(expected)["json"]  # the same bytes as SQLite's log


def test_postgres_record_keeps_the_later_of_one_id_in_a_batch(pg_url):
    with PostgresStore(pg_url) as s:
        s.record([action("a1", "deferred"), action("a1", "sent", via="smtp")])
        assert logged(s) == {"a1": action("a1", "sent", via="smtp")}


def test_postgres_instances_table_follows_saves(pg_url):
    rows = "SELECT journey, version, entry, path, wait, wake FROM instances WHERE user_id = %s ORDER BY journey"
    with PostgresStore(pg_url) as s:
        state = rich_state("u1")
        s.save(state, "UTC")
        s.save(waiting("u2", T0 + H), "UTC")
        assert s.conn.execute(rows, ("u1",)).fetchall() == [
            ("Browse abandonment", "1143d31b26da", 2, "browse/1", "for", T0 + H),
            ("Checkout abandonment", "aa11", 1, "checkout/3", "until", T0 + 20 * H),
            ("First purchase", "cc33", 1, None, None, None),
            ("Retarget by engagement", "bb22", 3, "retarget/exit/1", "held", T0 + 11 * H),
        ]
        moved = replace(state.instances["Checkout abandonment"], path="checkout/4", wait=None, wake=None)
        s.save(state.evolve(instances=MappingProxyType({"Checkout abandonment": moved,
                                                        "First purchase": state.instances["First purchase"]})),
               "UTC")
        assert s.conn.execute(rows, ("u1",)).fetchall() == [
            ("Checkout abandonment", "aa11", 1, "checkout/4", None, None),
            ("First purchase", "cc33", 1, None, None, None),
        ]
        s.save(new_user("u1"), "UTC")
        assert s.conn.execute(rows, ("u1",)).fetchall() == []
        s.delete("u2")
        assert s.conn.execute("SELECT count(*) FROM instances").fetchone() == (0,)


def test_postgres_transaction_commits_together(pg_url):
    with PostgresStore(pg_url) as s, PostgresStore(pg_url) as other:
        with s.transaction():
            assert s.seen("m1") is False
            s.link("anon-1", "u1")
            s.save(rich_state("u1"), "UTC")
            s.record([action("a1")])
            assert other.load("u1") is None and other.resolve("anon-1") is None  # not yet visible
        assert same_state(other.load("u1"), rich_state("u1"))
        assert other.resolve("anon-1") == "u1"
        assert other.seen("m1") is True
        assert logged(other) == {"a1": action("a1")}


def test_postgres_transaction_rolls_back_on_an_exception(pg_url):
    from psycopg.pq import TransactionStatus

    with PostgresStore(pg_url) as s:
        s.save(waiting("u0", T0 + H), "UTC")
        with pytest.raises(ZeroDivisionError):
            with s.transaction():
                assert s.seen("m1") is False
                s.link("anon-1", "u1")
                s.save(rich_state("u1"), "UTC")
                s.delete("u0")
                s.record([action("a1")])
                1 / 0
        assert s.load("u1") is None
        assert same_state(s.load("u0"), waiting("u0", T0 + H))
        assert s.resolve("anon-1") is None
        assert s.seen("m1") is False  # the message can be retried
        assert logged(s) == {}
        assert s.next_timer(T0 + 100 * H) == (T0 + H, "u0")
        assert s.conn.info.transaction_status == TransactionStatus.IDLE
        s.save(rich_state("u1"), "UTC")  # and the store works on, in autocommit
    with PostgresStore(pg_url) as s:
        assert s.users() == ["u0", "u1"]


def test_postgres_nested_transactions_are_savepoints(pg_url):
    with PostgresStore(pg_url) as s:
        with s.transaction():
            s.link("kept", "u1")
            with pytest.raises(KeyError):
                with s.transaction():
                    s.link("dropped", "u1")
                    raise KeyError("inner")
            s.link("kept too", "u1")
        assert (s.resolve("kept"), s.resolve("dropped"), s.resolve("kept too")) == ("u1", None, "u1")


def test_postgres_saves_in_a_transaction_are_written_at_its_commit_in_one_statement(pg_url):
    """Inside a transaction a save is held for the commit and written with the others in one
    statement; meanwhile `load` answers from it, and every read of the profiles (timers, users,
    zones, a savepoint's start, a delete) writes what is held first. A savepoint that rolls back
    takes only its own saves with it."""
    count = "SELECT count(*) FROM profiles"
    with PostgresStore(pg_url) as s, PostgresStore(pg_url) as other:
        s.save(waiting("u0", T0 + 5 * H), "UTC")
        writes, write = [], s._write_states
        s._write_states = lambda rows: writes.append(len(rows)) or write(rows)  # type: ignore[method-assign]
        with s.transaction():
            s.save(waiting("u1", T0 + 6 * H), "UTC")
            s.save(waiting("u2", T0 + H), "Europe/Paris")
            assert s.conn.execute(count).fetchone() == (1,)  # held: only u0, saved outside a transaction
            assert same_state(s.load("u1"), waiting("u1", T0 + 6 * H))
            assert s.next_timer(T0 + 10 * H) == (T0 + H, "u2")  # the timers' read wrote them first
            assert s.conn.execute(count).fetchone() == (3,)
            s.save(waiting("u2", T0 + 2 * H), "UTC")
            s.save(waiting("u3"), "UTC")
            assert s.users() == ["u0", "u1", "u2", "u3"] and s.zones() == {"UTC"}
            s.save(waiting("u3", T0 + 3 * H), "UTC")
            with pytest.raises(KeyError):
                with s.transaction():  # u3's save is the outer block's: written before the savepoint
                    s.save(waiting("u3", T0 + 4 * H), "UTC")
                    s.save(waiting("u4", T0), "UTC")
                    raise KeyError("inner")
            assert same_state(s.load("u3"), waiting("u3", T0 + 3 * H)) and s.load("u4") is None
            s.save(waiting("u5", T0), "UTC")
            s.delete("u5")  # a held save must not bring the user back at the commit
            s.save(waiting("u6", T0), "UTC")
            s.save(waiting("u7", T0), "UTC")
            assert other.load("u6") is None  # nothing visible before the commit
        assert [other.load(u) is not None for u in ("u0", "u1", "u2", "u3", "u4", "u5", "u6", "u7")] == [
            True, True, True, True, False, False, True, True]
        assert same_state(other.load("u3"), waiting("u3", T0 + 3 * H))
        # the statements: at the timers' read, users(), the savepoint, the delete, the commit
        assert writes == [2, 2, 1, 1, 2]
        assert other.next_timer(T0 + 100 * H) == (T0, "u6")
        instances = "SELECT user_id, count(*) FROM instances GROUP BY user_id ORDER BY user_id"
        assert other.conn.execute(instances).fetchall() == [("u0", 1), ("u1", 1), ("u2", 1), ("u3", 1), ("u6", 1),
                                                            ("u7", 1)]


def test_postgres_autocommit_outside_transactions(pg_url):
    from psycopg.pq import TransactionStatus

    with PostgresStore(pg_url) as s, PostgresStore(pg_url) as other:
        assert s.conn.autocommit
        s.save(rich_state("u1"), "UTC")
        s.link("anon-1", "u1")
        assert s.seen("m1") is False
        assert s.conn.info.transaction_status == TransactionStatus.IDLE
        assert same_state(other.load("u1"), rich_state("u1"))
        assert other.resolve("anon-1") == "u1"
        assert other.seen("m1") is True


def test_postgres_schemas_keep_stores_apart(pg_url):
    from engine.store.urls import with_schema

    with PostgresStore(pg_url) as a, PostgresStore(with_schema(pg_url, a.schema + "_b")) as b:
        try:
            a.save(new_user("only-in-a"), "UTC")
            assert b.users() == [] and a.users() == ["only-in-a"]
        finally:
            b.conn.execute(f"DROP SCHEMA {b.schema} CASCADE")


def test_postgres_urls():
    from engine.store.urls import parse_url, redact, with_schema

    assert parse_url("postgresql://u@h:5432/db") == ("postgresql://u@h:5432/db", "journeys")
    assert parse_url("postgres://u:pw@h/db?schema=shop&sslmode=require") == (
        "postgres://u:pw@h/db?sslmode=require", "shop")
    assert redact("postgresql://u:s3cret@h:5432/db?schema=x") == "postgresql://u:***@h:5432/db?schema=x"
    assert redact("postgresql://h/db?password=s3cret&schema=x") == "postgresql://h/db?password=***&schema=x"
    assert with_schema("postgresql://h/db?sslmode=require&schema=a", "b") == "postgresql://h/db?sslmode=require&schema=b"
    for bad, why in [("postgresql://u:s3cret@h/db?schema=Shop-1", "not a plain lower-case name"),
                     ("postgresql://u:s3cret@h/db?schema=a&schema=b", "2 times"),
                     ("mysql://u:s3cret@h/db", "not a PostgreSQL URL")]:
        with pytest.raises(ValueError, match=why) as e:
            parse_url(bad)
        assert "s3cret" not in str(e.value)


def test_postgres_unreachable_server_is_a_clear_error_without_the_password():
    from engine.store.base import StoreError

    with pytest.raises(StoreError, match=r"postgresql://me:\*\*\*@127.0.0.1:1/db\?schema=x: cannot connect") as e:
        PostgresStore("postgresql://me:s3cret@127.0.0.1:1/db?schema=x")
    assert "s3cret" not in str(e.value)


# ---------------------------------------------------------------------------------- serialisation


def test_serialize_round_trip_types():
    state = rich_state()
    back = state_from_bytes(state_to_bytes(state))
    assert same_state(back, state)
    for mapping in (back.traits, back.instances, back.entries, back.segments,
                    back.instances["Browse abandonment"].named):
        assert isinstance(mapping, MappingProxyType)
        with pytest.raises(TypeError):
            mapping["x"] = 1  # type: ignore[index]
    assert isinstance(back.audiences, frozenset) and isinstance(back.aliases, frozenset)
    assert isinstance(back.goals, tuple) and isinstance(back.sends, tuple)
    assert back.instances["Checkout abandonment"].arms == (("checkout/2", "coupon"), ("checkout/5", "control"))
    assert back.entries["Browse abandonment"] == (2, T0)
    for ev in back.history.events():
        assert ev.timestamp.tzinfo is UTC
    assert back.history.by_name["Product Viewed"][1] == tuple(e.timestamp for e in back.history.by_name[
        "Product Viewed"][0])
    assert [e.properties for e in back.history.by_name["Product Viewed"][0]] == [
        {"product_id": "p0", "name": "Chair", "price": 10},
        {"product_id": "p1", "name": "Lamp", "price": 28.99, "tags": ["a", "b"], "stock": None},
        {"same": "time, kept second"}]
    assert type(back.traits["score"]) is float and type(back.traits["age"]) is int


def test_serialize_is_deterministic():
    a, b = rich_state(), rich_state()
    b = b.evolve(audiences=frozenset(sorted(b.audiences, reverse=True)))
    assert state_to_bytes(a) == state_to_bytes(b)
    assert state_to_bytes(state_from_bytes(state_to_bytes(a))) == state_to_bytes(a)


def test_serialize_refuses_another_format():
    import ormsgpack

    with pytest.raises(ValueError, match="format"):
        state_from_bytes(b'{"v": 99, "u": "x"}')
    with pytest.raises(ValueError, match="format"):
        state_from_bytes(ormsgpack.packb({"v": 3, "u": "x"}))  # version 3 was JSON text
    with pytest.raises(ValueError, match="format"):
        state_from_bytes(ormsgpack.packb([4, "x"]))


def test_a_state_written_as_json_by_an_earlier_daemon_still_reads():
    """Version 3 was the same layout as JSON text: a store written before MessagePack reads on."""
    import orjson
    import ormsgpack

    state = rich_state()
    layout = ormsgpack.unpackb(state_to_bytes(state))
    assert layout["v"] == 4 and state_to_bytes(state)[:1] != b"{"
    legacy = orjson.dumps({**layout, "v": 3})
    assert state_from_bytes(legacy) == state and state_from_bytes(legacy.decode()) == state
    assert len(state_to_bytes(state)) < len(legacy)


def test_userstate_equality_survives_a_round_trip():
    state = rich_state()
    assert state_from_bytes(state_to_bytes(state)) == state


def test_action_row_round_trip():
    for a in (action("a1"), action("a2", "deferred", until=T0 + H, reason="quiet hours"),
              action("a3", "suppressed", kind="audience_remove", channel=None, reason="cap", rule="ads 1 per 3d",
                     data={}, named={})):
        row = action_to_row(a)
        assert action_from_row(row) == a
        assert row["time"] == "2026-03-02T10:00:00.000005Z"


@given(st.datetimes(min_value=datetime(1000, 1, 1), max_value=datetime(9999, 12, 31, 23, 59),
                    timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)),
                                               timezone(timedelta(hours=-8))])),
       st.datetimes(min_value=datetime(1000, 1, 1), max_value=datetime(9999, 12, 31, 23, 59), timezones=st.just(UTC)))
def test_utc_text_sorts_like_the_times(a, b):
    ta, tb = utc_text(a), utc_text(b)
    assert len(ta) == len("2026-03-02T10:00:00.000000Z")
    assert (ta < tb) == (a < b) and (ta == tb) == (a == b)
    assert datetime.fromisoformat(ta) == a


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=12)
TIMES = st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.just(UTC))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(traits=st.dictionaries(st.text(max_size=8), JSON, max_size=5),
       events=st.lists(st.tuples(st.sampled_from(["A", "B", "Ç d"]), TIMES,
                                 st.dictionaries(st.text(max_size=6), JSON, max_size=4)), max_size=8),
       wake=st.none() | TIMES, bound=st.booleans())
def test_serialize_round_trip_any_json(traits, events, wake, bound):
    history = HistoryIndex(Event(n, t, p) for n, t, p in events)
    named = {"e": Event(*events[0])} if events and bound else {}
    inst = Instance("J", "v", 1, "u", T0, path="j/1", wait="wait" if wake else None, since=T0, wake=wake,
                    named=MappingProxyType(named))
    state = UserState("u", traits=traits, history=history, instances=MappingProxyType({"J": inst}))
    back = state_from_bytes(state_to_bytes(state))
    assert same_state(back, state)
    assert orjson.dumps(dict(back.traits)) == orjson.dumps(traits)  # same types, not just equal values


# ---------------------------------------------------------------------------------- the engine on both stores


@pytest.fixture(scope="module")
def shop_program() -> Program:
    diagnostics, compiled = check_and_compile(load_project(REPO / "examples" / "shop"))
    assert compiled is not None, diagnostics
    return Program.build(compiled)


def _msg(n: int, at: datetime, type: str = "track", event: str | None = None, *, user: str | None = None,
         anon: str | None = None, props: dict | None = None, traits: dict | None = None,
         previous: str | None = None, tz: str | None = None, message_id: str | None = None) -> Message:
    return Message(type=type, message_id=message_id or f"m{n}", timestamp=at, user_id=user, anonymous_id=anon,
                   event=event, properties=props or {}, traits=traits or {}, previous_id=previous,
                   group_id="g1" if type == "group" else None, timezone=tz)


def scenario() -> list[Message]:
    t = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)  # a Monday
    m = lambda minutes: t + timedelta(minutes=minutes)  # noqa: E731
    lamp = {"product_id": "p1", "name": "Lamp", "category": "home", "price": 28.99}
    msgs = [
        _msg(1, m(0), "page", "Page Viewed", anon="a1", props={"name": "Home", "category": "home"}, tz="Europe/Berlin"),
        *[_msg(2 + i, m(5 + i), event="Product Viewed", anon="a1", props=lamp, tz="Europe/Berlin") for i in range(5)],
        _msg(10, m(30), "identify", user="u1", anon="a1",
             traits={"email": "emma@example.com", "first_name": "Emma", "timezone": "Europe/Berlin"}),
        _msg(11, m(40), event="Checkout Started", user="u1", props={"revenue": 250, "items": [{"sku": "p1"}]}),
        _msg(11, m(41), event="Checkout Started", user="u1", props={"revenue": 250}),  # a duplicate messageId
        _msg(12, m(15 * 60), event="Product Viewed", user="u2", props={**lamp, "name": "Chair"},
             tz="America/New_York"),  # 18:00 in New York
        _msg(13, m(15 * 60 + 10), event="Product Added", user="u2", props={"product_id": "p2", "quantity": 1}),
        _msg(14, m(60), event="Product Viewed", anon="a3", props=lamp),
        _msg(15, m(90), event="Order Completed", user="u3", props={"revenue": 80, "order_id": "o1"}),
        _msg(16, m(95), event="Payment Failed", user="u3", props={"reason": "card"}),
        _msg(17, m(100), "alias", user="u3", previous="a3"),
        _msg(18, m(110), event="Unsubscribed", user="u4", props={"channel": "email"}),
        _msg(19, m(111), event="Product Viewed", user="u4", props=lamp),
        _msg(20, m(120), "group", user="u1", traits={"name": "ACME", "plan": "pro"}),
        _msg(21, m(22 * 60), event="Product Viewed", user="u5", props=lamp, tz="Asia/Tokyo"),  # 07:00 in Tokyo
        _msg(22, m(26 * 60), event="Order Completed", user="u1", props={"revenue": 250, "order_id": "o2"}),
        _msg(23, m(3 * 24 * 60), event="Push Dismissed", user="u1"),
        _msg(24, m(8 * 24 * 60), event="Product Viewed", user="u2", props=lamp),
    ]
    return msgs


def run(program: Program, store, messages: list[Message], until: datetime) -> list[dict]:
    recorder = Recorder()
    engine = Engine(program, store, VirtualClock(messages[0].timestamp), recorder)
    handle_all(engine, messages, until)
    return [e.to_json() for e in recorder.effects]


def test_engine_gives_the_same_effects_on_both_stores(shop_program, tmp_path):
    messages = scenario()
    until = datetime(2026, 3, 24, tzinfo=UTC)  # past the 14-day waits and three Mondays
    memory = MemoryStore()
    expected = run(shop_program, memory, messages, until)
    with SqliteStore(str(tmp_path / "engine.db")) as sqlite:
        got = run(shop_program, sqlite, messages, until)
        assert got == expected
        # the scenario exercises what it should
        kinds = {(e.get("kind"), e.get("outcome")) for e in expected}
        assert {("email", "sent"), ("push", "sent"), ("audience_add", "sent"), ("merge", None),
                ("duplicate", None), ("alias", None), ("schedule", None)} <= kinds, kinds
        assert any("goal" in e for e in expected)  # a conversion
        assert any(e.get("outcome") in ("suppressed", "deferred") for e in expected)
        # and both stores end in the same place
        assert list(sqlite.users()) == list(memory.users())
        for uid in memory.users():
            assert same_state(sqlite.load(uid), memory.load(uid)), uid
        assert logged(sqlite) == logged(memory)
        assert sqlite.zones() == memory.zones()
        far = until + timedelta(days=365)
        assert sqlite.next_timer(far) == memory.next_timer(far)


def test_engine_on_a_reopened_store_carries_on(shop_program, tmp_path):
    """Half the messages, close, reopen, the rest: the same effects as one run in memory."""
    messages = scenario()
    until = datetime(2026, 3, 24, tzinfo=UTC)
    expected = run(shop_program, MemoryStore(), messages, until)
    path = str(tmp_path / "engine.db")
    half = len(messages) // 2
    recorder = Recorder()
    with SqliteStore(path) as s:
        engine = Engine(shop_program, s, VirtualClock(messages[0].timestamp), recorder)
        handle_all(engine, messages[:half], None)
    with SqliteStore(path) as s:
        engine = Engine(shop_program, s, VirtualClock(messages[half - 1].timestamp), recorder)
        handle_all(engine, messages[half:], until)
    assert [e.to_json() for e in recorder.effects] == expected


def test_engine_on_the_sample_log(shop_program, tmp_path):
    lines = (REPO / "examples" / "shop" / "events" / "sample.jsonl").read_bytes().splitlines()[:700]
    messages = [parse_message(orjson.loads(line)) for line in lines]
    until = messages[-1].timestamp + timedelta(days=15)
    expected = run(shop_program, MemoryStore(), messages, until)
    with SqliteStore(str(tmp_path / "sample.db")) as s:
        assert run(shop_program, s, messages, until) == expected
    assert any(e.get("outcome") == "sent" for e in expected)


# ---------------------------------------------------------------------------------- the engine on PostgreSQL


def test_engine_gives_the_same_effects_on_postgres(shop_program, pg_url):
    messages = scenario()
    until = datetime(2026, 3, 24, tzinfo=UTC)
    memory = MemoryStore()
    expected = run(shop_program, memory, messages, until)
    with PostgresStore(pg_url) as pg:
        assert run(shop_program, pg, messages, until) == expected
        assert list(pg.users()) == list(memory.users())
        for uid in memory.users():
            assert same_state(pg.load(uid), memory.load(uid)), uid
        assert logged(pg) == logged(memory)
        assert pg.zones() == memory.zones()
        far = until + timedelta(days=365)
        assert pg.next_timer(far) == memory.next_timer(far)


def test_engine_on_a_reopened_postgres_store_carries_on(shop_program, pg_url):
    messages = scenario()
    until = datetime(2026, 3, 24, tzinfo=UTC)
    expected = run(shop_program, MemoryStore(), messages, until)
    half = len(messages) // 2
    recorder = Recorder()
    with PostgresStore(pg_url) as s:
        engine = Engine(shop_program, s, VirtualClock(messages[0].timestamp), recorder)
        handle_all(engine, messages[:half], None)
    with PostgresStore(pg_url) as s:
        engine = Engine(shop_program, s, VirtualClock(messages[half - 1].timestamp), recorder)
        handle_all(engine, messages[half:], until)
    assert [e.to_json() for e in recorder.effects] == expected


def test_engine_on_the_sample_log_on_postgres(shop_program, pg_url, tmp_path):
    lines = (REPO / "examples" / "shop" / "events" / "sample.jsonl").read_bytes().splitlines()[:700]
    messages = [parse_message(orjson.loads(line)) for line in lines]
    until = messages[-1].timestamp + timedelta(days=15)
    expected = run(shop_program, MemoryStore(), messages, until)
    with PostgresStore(pg_url) as pg, SqliteStore(str(tmp_path / "sample.db")) as sqlite:
        assert run(shop_program, pg, messages, until) == expected
        run(shop_program, sqlite, messages, until)
        # both persistent stores hold the same bytes for every profile
        for uid in sqlite.users():
            a = pg.conn.execute("SELECT state FROM profiles WHERE user_id = %s", (uid,)).fetchone()[0]
            b = sqlite.conn.execute("SELECT state FROM profiles WHERE user_id = ?", (uid,)).fetchone()[0]
            assert bytes(a) == bytes(b), uid
        assert pg.users() == sqlite.users()

