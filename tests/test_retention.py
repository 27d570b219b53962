"""Retention (engine.store.retention) on both stores, the housekeeping that runs it (engine.daemon.housekeeping),
and the daemon's worker running both: messageIds past the dedupe window, old actions and settled
outbox entries go; anything newer than its days, dead letters and open entries stay; in chunks."""

from __future__ import annotations

import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest

from engine.store import retention, sql
from engine.store.outbox import DEAD, DELIVERED, FAILED, PENDING, Entry

from .engine_helpers import t
from .test_daemon import SHOP, eventually, rows

T0 = t("2026-03-02 10:00")
WEEK = {"messages": 7, "actions": 7, "outbox": 7}


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path):
    if request.param == "sqlite":
        from engine.store.outbox import SqliteOutbox
        from engine.store.sqlite_store import SqliteStore

        s = SqliteStore(str(tmp_path / "store.db"))
        s.outbox = SqliteOutbox(s.conn)
    else:
        from engine.store.pg_outbox import PostgresOutbox
        from engine.store.pg_store import PostgresStore

        s = PostgresStore(request.getfixturevalue("pg_url"))
        s.outbox = PostgresOutbox(s.conn)
    yield s
    s.close()


def write(store, tag: str, at) -> None:
    """Messages, actions and outbox entries (one per state) named `tag`, as of `at`."""
    conn = store.conn
    with store.transaction():
        for n in range(3):
            assert store.seen(f"{tag}-m{n}", at) is False
            sql.execute(conn, 'INSERT INTO actions (id, time, "user", kind, target, outcome, json) '
                              "VALUES (?, ?, 'u1', 'email', 'x', 'sent', '{}')", (f"{tag}-a{n}", sql.moment(conn, at)))
        store.outbox.add([Entry(f"{tag}-{state}", "smtp", "u1", "email", "x", "{}", at, at, state)
                          for state in (DELIVERED, FAILED, DEAD, PENDING)])


def left(store) -> dict[str, list[str]]:
    conn = store.conn
    return {"messages": sorted(r[0] for r in sql.execute(conn, "SELECT message_id FROM messages")),
            "actions": sorted(r[0] for r in sql.execute(conn, "SELECT id FROM actions")),
            "outbox": sorted(r[0].split(":")[0] for r in sql.execute(conn, "SELECT id FROM outbox"))}


def prune(store, days, now, chunk=retention.CHUNK):
    with store.transaction():
        return retention.prune(store.conn, days, now, chunk)


def test_what_is_past_its_days_goes_and_nothing_newer(store):
    write(store, "old", T0)
    assert prune(store, WEEK, T0) == {"messages": 0, "actions": 0, "outbox": 0}  # nothing is a week old
    write(store, "new", T0 + timedelta(days=10))
    later = T0 + timedelta(days=10, hours=2)
    assert prune(store, WEEK, later) == {"messages": 3, "actions": 3, "outbox": 1}
    assert left(store) == {
        "messages": ["new-m0", "new-m1", "new-m2"],
        "actions": ["new-a0", "new-a1", "new-a2"],
        # dead letters (dead, and failed for good) wait for an operator, open entries for their
        # delivery; delivered ones go
        "outbox": ["new-dead", "new-delivered", "new-failed", "new-pending", "old-dead", "old-failed",
                   "old-pending"]}
    assert prune(store, WEEK, later) == {"messages": 0, "actions": 0, "outbox": 0}
    with store.transaction():  # what the engine asks: seen within the window?
        assert store.seen("old-m0", later, later - timedelta(days=7)) is False  # gone, and past the window anyway
        assert store.seen("new-m0", later, later - timedelta(days=7)) is True


def test_each_table_keeps_its_own_days_and_deletes_in_chunks(store):
    write(store, "old", T0)
    prune(store, WEEK, T0)
    write(store, "new", T0 + timedelta(days=10))
    later = T0 + timedelta(days=10, hours=2)
    days = {"messages": 30, "actions": 7, "outbox": 90}
    first = prune(store, days, later, chunk=2)
    assert first == {"messages": 0, "actions": 2, "outbox": 0} and retention.more(first.values(), 2)
    second = prune(store, days, later, chunk=2)
    assert second == {"messages": 0, "actions": 1, "outbox": 0} and not retention.more(second.values(), 2)
    kept = left(store)
    assert kept["actions"] == ["new-a0", "new-a1", "new-a2"] and len(kept["messages"]) == 6 and len(kept["outbox"]) == 8


def test_sqlite_keeps_a_table_s_newest_row_so_rowids_never_go_back(tmp_path):
    """SQLite gives a new row the highest rowid plus one: if every row went, the next would
    start again under an old mark and be deleted long before its days."""
    from engine.store.outbox import SqliteOutbox
    from engine.store.sqlite_store import SqliteStore

    store = SqliteStore(str(tmp_path / "s.db"))
    store.outbox = SqliteOutbox(store.conn)
    write(store, "old", T0)
    prune(store, WEEK, T0)
    assert prune(store, WEEK, T0 + timedelta(days=8))["actions"] == 2
    assert left(store)["actions"] == ["old-a2"]
    write(store, "fresh", T0 + timedelta(days=8, hours=1))
    prune(store, WEEK, T0 + timedelta(days=8, hours=2))
    # old-a2 is no longer the newest: gone; the fresh rows are above the mark
    assert left(store)["actions"] == ["fresh-a0", "fresh-a1", "fresh-a2"]
    store.close()


def test_housekeeping_runs_each_job_on_the_worker_until_it_has_no_more():
    from engine.daemon.housekeeping import Housekeeping

    worker = ThreadPoolExecutor(1, thread_name_prefix="worker")  # stands in for Worker.submit
    threads, calls = set(), []
    chunks = iter([True, True, False])

    def job() -> bool:
        threads.add(threading.current_thread().name)
        calls.append(time.monotonic())
        return next(chunks, False)

    def failing() -> bool:
        calls_failing.append(1)
        raise RuntimeError("a store error")

    calls_failing: list[int] = []
    keeping = Housekeeping(worker.submit, [("job", 0.3, job), ("failing", 0.1, failing)])
    keeping.start()
    try:
        eventually(lambda: len(calls) >= 3, timeout=5)
        assert calls[2] - calls[0] < 0.25  # the chunks run back to back, not an interval apart
        eventually(lambda: len(calls) >= 4, timeout=5)  # the next interval: once more
        eventually(lambda: len(calls_failing) >= 2, timeout=5)  # an error does not stop the job
    finally:
        keeping.stop()
        worker.shutdown()
    assert threads == {"worker_0"}
    n = len(calls)
    time.sleep(0.5)
    assert len(calls) == n  # stopped


def test_the_daemon_worker_prunes_its_inbox_and_its_logs(tmp_path, monkeypatch):
    """The real worker's housekeeping: processed inbox rows go, and actions older than
    actions_days (their mark planted as a daemon would have left it months ago)."""
    import engine.daemon.worker as daemon
    from engine.store.inbox import Inbox, message_to_json
    from engine.core.messages import parse_message
    from engine.core.program import Program
    from engine.store.serialize import utc_text
    from journeys.checker import load_checked
    from datetime import datetime, timezone

    monkeypatch.setattr(daemon, "PRUNE_EVERY", 0.2)
    monkeypatch.setattr(daemon, "RETAIN_EVERY", 0.2)
    path = str(tmp_path / "store.db")
    inbox = Inbox.open(path)
    now = datetime.now(timezone.utc)
    inbox.append_rows([(utc_text(now), message_to_json(parse_message(
        {"type": "identify", "userId": f"u{n}", "messageId": f"m{n}", "timestamp": "2026-03-02T10:00:00Z"})))
        for n in range(5)])
    inbox.close()
    project, compiled = load_checked(SHOP)
    worker = daemon.Worker(SHOP, project.config, Program.build(compiled), path, environ={}, deliver=False)
    worker.start()
    try:
        eventually(lambda: worker.counts.snapshot().get("inbox.processed") == 5)
        eventually(lambda: rows(Path(path), "SELECT count(*) FROM inbox") == [(0,)])

        conn = sqlite3.connect(path)
        with conn:  # two actions as the engine logs them, one of them (by its mark) 100 days old
            for n in (1, 2):
                conn.execute("INSERT INTO actions (id, time, user, kind, target, outcome, json) "
                             "VALUES (?, ?, 'u1', 'email', 'x', 'sent', '{}')", (f"a{n}", utc_text(now)))
            conn.execute(retention._MARKS)
            conn.execute("INSERT INTO retention_marks VALUES (?, 0, (SELECT rowid FROM actions WHERE id = 'a1'), 0)",
                         (utc_text(now - timedelta(days=100)),))
        conn.close()
        eventually(lambda: rows(Path(path), "SELECT id FROM actions ORDER BY 1") == [("a2",)])
        assert len(rows(Path(path), "SELECT message_id FROM messages")) == 5
    finally:
        worker.stop()
