"""Housekeeping in normal operation is quiet (issue 18, point 6): a store that says "try again" (SQLite's
`database is locked`) is retried with backoff and never logged at ERROR, and a job never overlaps
itself, however long its work takes, so APScheduler never has a run to skip.

Every wait here is bounded by `eventually` with a generous timeout; nothing asserts how fast."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from engine.daemon.housekeeping import Housekeeping
from engine.daemon.worker import transient

from .test_daemon import SHOP, eventually, rows


def _errors(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR]


def _housekeeping_warnings(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "journeys.housekeeping" and r.levelno >= logging.WARNING]


def _keep_until(jobs, until, *, wrap=lambda submit: submit, **options) -> None:
    """Housekeeping with a one-thread pool standing in for the worker (`Worker.submit`), until
    `until()` is true (at most 60 s)."""
    worker = ThreadPoolExecutor(1, thread_name_prefix="worker")
    keeping = Housekeeping(wrap(worker.submit), jobs, **options)
    keeping.start()
    try:
        eventually(until, timeout=60)
    finally:
        keeping.stop()
        worker.shutdown()


def test_the_daemon_s_prune_meets_a_locked_database_quietly_and_succeeds_once_the_lock_goes(tmp_path, monkeypatch,
                                                                                             caplog):
    """The real worker's inbox job, while another connection holds SQLite's write lock longer than
    the worker waits for it (10 s in the daemon; 20 ms here, so the test takes seconds)."""
    import engine.daemon.worker as daemon
    from engine.core.program import Program
    from journeys.checker import load_checked

    caplog.set_level(logging.DEBUG, logger="journeys")
    monkeypatch.setattr(daemon, "PRUNE_EVERY", 0.2)
    project, compiled = load_checked(SHOP)
    # no trail: its prune's transaction would put the worker's 10 s wait back
    config = project.config.model_copy(update={"serve": project.config.serve.model_copy(update={"trail_days": 0})})
    path = str(tmp_path / "store.db")
    worker = daemon.Worker(SHOP, config, Program.build(compiled), path, environ={}, deliver=False)
    worker.start()
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        worker.submit(lambda: worker.store.conn.execute("PRAGMA busy_timeout = 20")).result(30)
        holder.execute("BEGIN IMMEDIATE")  # the write lock, with three processed messages the prune will delete
        holder.executemany("INSERT INTO inbox (received_at, raw) VALUES ('2026-03-02T10:00:00Z', ?)",
                           [(b"{}",)] * 3)
        holder.execute("UPDATE inbox_cursor SET processed = (SELECT max(seq) FROM inbox)")
        # the inbox job has met the lock (whatever it logged about it)
        eventually(lambda: [r for r in caplog.records if r.name == "journeys.housekeeping"], timeout=30)
        holder.execute("COMMIT")  # the lock goes
        eventually(lambda: rows(Path(path), "SELECT count(*) FROM inbox") == [(0,)], timeout=30)
    finally:
        holder.close()
        worker.stop()
    assert _errors(caplog) == []
    assert _housekeeping_warnings(caplog) == []  # it did not persist past a few tries


def test_a_lock_that_persists_is_one_warning_without_a_traceback(tmp_path, caplog):
    path = tmp_path / "store.db"
    setup = sqlite3.connect(path, isolation_level=None)
    setup.execute("PRAGMA journal_mode = WAL")
    setup.execute("CREATE TABLE t (x)")
    conn = sqlite3.connect(path, isolation_level=None, timeout=0.02, check_same_thread=False)
    tries = []

    def prune() -> bool:
        tries.append(time.monotonic())
        conn.execute("DELETE FROM t")
        return False

    setup.execute("BEGIN IMMEDIATE")  # held for the whole test
    try:
        _keep_until([("prune", 0.1, prune)], lambda: _housekeeping_warnings(caplog), transient=transient,
                    retry_delays=(0.05, 0.1, 0.2))
    finally:
        setup.close()
        conn.close()
    [warning] = _housekeeping_warnings(caplog)[:1]
    assert warning.levelno == logging.WARNING and warning.exc_info is None
    assert "prune" in warning.getMessage() and "database is locked" in warning.getMessage()
    assert len(tries) >= 4  # the first try and three retries before the warning
    assert _errors(caplog) == []


def test_a_job_that_fails_for_another_reason_is_an_error_with_its_traceback(caplog):
    def broken() -> bool:
        raise RuntimeError("a bug")

    _keep_until([("broken", 0.1, broken)], lambda: _errors(caplog), transient=transient)
    error = _errors(caplog)[0]
    assert "broken" in error.getMessage() and error.exc_info is not None


def test_jobs_whose_work_outlasts_their_interval_never_overlap(caplog):
    """Work of 0.2-0.3 s every 0.05 s, on one worker thread: no run of a job starts, or is queued
    on the worker, while another of it is in flight, and APScheduler never skips one."""
    caplog.set_level(logging.INFO)
    lock = threading.Lock()
    in_flight: Counter[str] = Counter()
    most: Counter[str] = Counter()
    runs: Counter[str] = Counter()
    chunks = iter(range(10**6))

    def slow() -> bool:
        time.sleep(0.3)
        runs["slow"] += 1
        return False

    def chunked() -> bool:  # three chunks a run
        time.sleep(0.1)
        more = next(chunks) % 3 != 2
        if not more:
            runs["chunked"] += 1
        return more

    names = {slow: "slow", chunked: "chunked"}

    def counting(submit):
        def counted(work):
            name = names[work]
            with lock:
                in_flight[name] += 1
                most[name] = max(most[name], in_flight[name])
            future = submit(work)

            def done(_):
                with lock:
                    in_flight[name] -= 1

            future.add_done_callback(done)
            return future

        return counted

    _keep_until([("slow", 0.05, slow), ("chunked", 0.05, chunked)],
                lambda: runs["slow"] >= 4 and runs["chunked"] >= 4, wrap=counting)
    assert most == Counter({"slow": 1, "chunked": 1})
    skipped = [r.getMessage() for r in caplog.records if "maximum number of running instances" in r.getMessage()]
    assert skipped == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_a_quick_job_keeps_running_however_its_runs_interleave_with_the_scheduler():
    """A run may be over before APScheduler asks the trigger for the next time (its executor then
    reports it on the scheduler's thread): the job must not stay parked."""
    runs: list[float] = []

    def quick() -> bool:
        runs.append(time.monotonic())
        return False

    def inline(work):  # the work done at once, on the scheduler's executor thread
        future = Future()
        future.set_result(work())
        return future

    _keep_until([("quick", 0.01, quick)], lambda: len(runs) >= 300, wrap=lambda submit: inline)
