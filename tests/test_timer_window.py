"""The timer window (engine.store.timer_window) answers next_timer exactly as the query it replaces,
under random saves, deletes and rollbacks, with windows smaller than the timers there are."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest

from engine.core.state import Instance, UserState, new_user
from engine.store.sqlite_store import SqliteStore
from engine.store.timer_window import TimerWindow

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=timezone.utc)


class Table:
    """The store's timers as a plain dict, and the query the window replaces."""

    def __init__(self) -> None:
        self.wake: dict[str, datetime] = {}
        self.reads = 0

    def first(self, n: int) -> list[tuple[datetime, str]]:
        self.reads += 1
        return sorted((w, u) for u, w in self.wake.items())[:n]

    def next(self, until: datetime) -> tuple[datetime, str] | None:
        keys = [k for k in self.first(1) if k[0] <= until]
        return keys[0] if keys else None


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("size", [1, 3, 16])
def test_window_agrees_with_the_table_under_random_changes(seed: int, size: int) -> None:
    rnd = random.Random(seed)
    table = Table()
    window = TimerWindow(table.first, size=size)
    users = [f"u{i}" for i in range(12)]
    for _ in range(600):
        op = rnd.random()
        if op < 0.45:  # a save moves (or clears) a user's timer
            uid = rnd.choice(users)
            wake = None if rnd.random() < 0.2 else T0 + timedelta(minutes=rnd.randrange(30))
            if wake is None:
                table.wake.pop(uid, None)
            else:
                table.wake[uid] = wake
            window.moved(uid, wake)
        elif op < 0.5:  # a rollback: the window cannot know what changed
            window.invalidate()
        else:
            until = T0 + timedelta(minutes=rnd.randrange(-2, 32))
            expected = Table.next(table, until)
            assert window.next(until) == expected


def test_window_reads_again_only_when_its_timers_are_used_up() -> None:
    table = Table()
    for i in range(10):
        table.wake[f"u{i}"] = T0 + timedelta(minutes=i)
    window = TimerWindow(table.first, size=4)
    fired = []
    while (key := window.next(T0 + timedelta(hours=1))) is not None:
        fired.append(key[1])
        del table.wake[key[1]]
        window.moved(key[1], None)
    assert fired == [f"u{i}" for i in range(10)]
    assert table.reads == 3  # 4, 4, then 2: fewer than asked for, so that was all of them


def test_sqlite_store_fires_past_the_window_and_forgets_rolled_back_timers(tmp_path) -> None:
    store = SqliteStore(str(tmp_path / "s.db"))
    store._timers.size = 2
    for i in range(5):
        store.save(_waiting(f"u{i}", T0 + timedelta(minutes=i)), "UTC")
    assert store.next_timer(T0 + timedelta(hours=1)) == (T0, "u0")
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.save(_waiting("u9", T0 - timedelta(minutes=1)), "UTC")
            assert store.next_timer(T0 + timedelta(hours=1)) == (T0 - timedelta(minutes=1), "u9")
            raise RuntimeError("roll back")
    assert store.next_timer(T0 + timedelta(hours=1)) == (T0, "u0")
    seen = []
    while (key := store.next_timer(T0 + timedelta(hours=1))) is not None:
        seen.append(key)
        store.save(_waiting(key[1], None), "UTC")
    assert seen == [(T0 + timedelta(minutes=i), f"u{i}") for i in range(5)]
    store.save(_waiting("u3", T0), "UTC")
    store.delete("u3")
    assert store.next_timer(T0 + timedelta(hours=1)) is None


def _waiting(uid: str, wake: datetime | None) -> UserState:
    """A user waiting in one journey until `wake` (None: in no journey)."""
    if wake is None:
        return new_user(uid)
    inst = Instance("J", "v1", 1, uid, T0, path="1", wait="wait", since=T0, wake=wake)
    return new_user(uid).evolve(instances={"J": inst})
