"""SqliteStore writes only what changed since the user was loaded (its zone, its journeys in
flight), and a rolled-back transaction never leaves it believing a row it no longer holds."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from engine.core.state import Instance, UserState, new_user
from engine.store.sqlite_store import SqliteStore

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=timezone.utc)


def waiting(uid: str, *journeys: str, wake: datetime = T0) -> UserState:
    return new_user(uid).evolve(instances={j: Instance(j, "v1", 1, uid, T0, path="1", wait="wait", wake=wake)
                                           for j in journeys})


def rows(store: SqliteStore, uid: str) -> list[tuple]:
    return store.conn.execute("SELECT journey, wake FROM instances WHERE user_id = ? ORDER BY journey",
                              (uid,)).fetchall()


def zone(store: SqliteStore, uid: str) -> str:
    return store.conn.execute("SELECT zone FROM profiles WHERE user_id = ?", (uid,)).fetchone()[0]


def test_instances_and_zone_follow_every_save_and_rollback(tmp_path):
    store = SqliteStore(str(tmp_path / "s.db"))
    assert store.load("u") is None
    store.save(waiting("u", "A"), "UTC")
    assert rows(store, "u") == [("A", "2026-03-02T10:00:00.000000Z")] and zone(store, "u") == "UTC"
    store.save(waiting("u", "A", "B"), "Europe/Paris")  # without a load between
    assert [r[0] for r in rows(store, "u")] == ["A", "B"] and zone(store, "u") == "Europe/Paris"

    state = store.load("u")
    store.save(state, "Europe/Paris")  # unchanged
    assert [r[0] for r in rows(store, "u")] == ["A", "B"]
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.load("u")
            store.save(waiting("u"), "UTC")
            assert rows(store, "u") == [] and zone(store, "u") == "UTC"
            raise RuntimeError("roll back")
    assert [r[0] for r in rows(store, "u")] == ["A", "B"] and zone(store, "u") == "Europe/Paris"
    store.save(waiting("u", "A", "B"), "Europe/Paris")  # the same as the file holds after the rollback
    store.save(waiting("u"), "Europe/Paris")
    assert rows(store, "u") == []

    store.load("u")
    store.save(waiting("u", "C", wake=T0 + timedelta(hours=1)), "Europe/Paris")
    assert rows(store, "u") == [("C", "2026-03-02T11:00:00.000000Z")]
    other = store.load("v")
    assert other is None
    store.save(waiting("u", "D"), "UTC")  # another user was loaded last: written whole
    assert [r[0] for r in rows(store, "u")] == ["D"] and zone(store, "u") == "UTC"
    store.delete("u")
    store.save(waiting("u"), "UTC")
    assert rows(store, "u") == [] and store.load("u").instances == {}


def wake(store: SqliteStore, uid: str) -> str | None:
    return store.conn.execute("SELECT wake FROM profiles WHERE user_id = ?", (uid,)).fetchone()[0]


def test_the_wake_follows_every_save_and_rollback_when_only_the_state_is_rewritten(tmp_path):
    """A save whose wake is the row's writes the state alone: the wake (and the timers another
    connection reads from it) is still what the last committed save said."""
    path = str(tmp_path / "s.db")
    store = SqliteStore(path)
    store.save(waiting("u", "A"), "UTC")
    state = store.load("u")
    store.save(state.evolve(traits={"plan": "pro"}), "UTC")  # the same wake: the state alone
    assert wake(store, "u") == "2026-03-02T10:00:00.000000Z" and store.load("u").traits == {"plan": "pro"}
    store.save(waiting("u", "A", wake=T0 + timedelta(hours=2)), "UTC")  # a new wake, without a load between
    assert wake(store, "u") == "2026-03-02T12:00:00.000000Z"
    store.save(waiting("u", "A"), "UTC")  # the first wake again: compared with the last save's, not the load's
    assert wake(store, "u") == "2026-03-02T10:00:00.000000Z"
    store.save(waiting("u", "A", wake=T0 + timedelta(hours=2)), "UTC")
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.load("u")
            store.save(waiting("u"), "UTC")  # no journey in flight: no wake
            assert wake(store, "u") is None
            raise RuntimeError("roll back")
    assert wake(store, "u") == "2026-03-02T12:00:00.000000Z"
    store.save(waiting("u"), "UTC")  # what the file holds is unknown after the rollback: written whole
    assert wake(store, "u") is None
    store.load("u")
    store.save(waiting("u", "B", wake=T0 + timedelta(hours=3)), "UTC")
    other = SqliteStore(path)  # the timers as another connection (a restart) reads them
    assert other.next_timer(T0 + timedelta(days=1)) == (T0 + timedelta(hours=3), "u")
    other.close()
    store.close()
