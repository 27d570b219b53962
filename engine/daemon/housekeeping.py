"""Housekeeping: the daemon's periodic upkeep, run by APScheduler, done on the worker thread.

The jobs (each `(name, seconds, work)`, the worker builds the list):

    inbox      every 30 s   delete processed inbox rows (SQLite; PostgreSQL deletes as it goes)
    trail      every 30 s   each user's trail past `trail_days` (engine.daemon.trail)
    scrub      every 5 s    the identifiers settled audience removals carried (engine.daemon.erasure)
    retention  every 10 min messageIds, the action log and settled outbox entries past their days
                            (engine.store.retention)

"Every" counts from the end of the previous run: a job never overlaps itself, by design. Its
APScheduler trigger (`_AfterEachRun`) fires `seconds` after the start, then is parked while a run
goes on; when the run finished, the next one is set `seconds` from then. So a job whose work
outlasts its interval (a backlog of deletes behind a busy worker) is never queued twice on the
worker thread, and APScheduler never has a run to skip ("maximum number of running instances").

A job's `work` runs on the worker thread through `Worker.submit`, between two rounds, since the
store's connection belongs to that thread and serialising with the processor means upkeep never
races an event. `work` returns True when it stopped at a chunk with more to do: it is submitted
again at once, each chunk its own turn, so a large backlog of deletes never holds the worker (or
SQLite's write lock) for long while events wait.

A store that says "try again" (`transient(exc)`: SQLite's `database is locked`, a PostgreSQL
deadlock or serialisation failure) is normal operation, since the ingest's and the deliveries'
transactions take the same write lock: the job tries again after each of `RETRY_DELAYS` (the
worker takes events in between), and only when the store still refuses is one WARNING logged,
without a traceback; the next run tries again. Any other error is a bug: ERROR, with its traceback.

These are the wall-clock duties of one daemon; the journeys' own schedules (cron entries in user
time) are not here: the engine fires them from its store and clock, so the dry-run fires them at
the same moments (engine.runtime.loop, engine.core.timing). The models' training, on a schedule
of its own, is engine.daemon.training.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import TimeoutError as FutureTimeout
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Sequence

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, JobExecutionEvent
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger


log = logging.getLogger("journeys.housekeeping")

RETRY_DELAYS = (1.0, 2.0, 4.0, 8.0)  # seconds before each new try of a job the store refused for now
STOP_CHECK = 0.5  # seconds between two looks at `stop()` while a job waits for the worker

Job = tuple[str, float, Callable[[], Any]]

_PARKED = datetime(9999, 1, 1, tzinfo=timezone.utc)  # a job's next run until its run finished


class _AfterEachRun(BaseTrigger):
    """`seconds` after the scheduler starts, then `seconds` after each run finished (`finished`,
    set by `Housekeeping._finished`), parked meanwhile.

    APScheduler asks for the next time right after it handed a run to its executor, and a quick
    run may be over by then (the executor then reports it on the scheduler's own thread, before
    the question): the run that fired at `previous_fire_time` is over when `finished` is later."""

    __slots__ = ("seconds", "finished")

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.finished: datetime | None = None

    def get_next_fire_time(self, previous_fire_time: datetime | None, now: datetime) -> datetime:
        if previous_fire_time is None:
            return now + timedelta(seconds=self.seconds)
        finished = self.finished
        if finished is not None and finished >= previous_fire_time:
            return finished + timedelta(seconds=self.seconds)
        return _PARKED  # still running: `_finished` sets the time when it is over

    def __str__(self) -> str:
        return f"{self.seconds:g} s after each run"


class _Stopping(Exception):
    """`stop()` was called: the run ends where it is."""


class Housekeeping:
    def __init__(self, submit: Callable[[Callable[[], Any]], Any], jobs: Sequence[Job], *,
                 transient: Callable[[BaseException], bool] = lambda exc: False,
                 retry_delays: Sequence[float] = RETRY_DELAYS):
        """`submit(fn)`: run fn on the worker thread, a concurrent.futures.Future back.
        `transient(exc)`: the store said "try again" (engine.daemon.worker.transient)."""
        self._submit = submit
        self._transient = transient
        self._retry_delays = tuple(retry_delays)
        self._stopping = threading.Event()
        self._triggers = {name: _AfterEachRun(seconds) for name, seconds, _ in jobs}
        # a run is never late by too much to run (the worker may have been busy)
        self.scheduler = BackgroundScheduler(timezone="UTC", job_defaults={"misfire_grace_time": None})
        for name, seconds, work in jobs:
            self.scheduler.add_job(self._run, self._triggers[name], args=(name, seconds, work), id=name, name=name)
        # APScheduler's own bookkeeping of a run is done when it tells listeners: from then on the
        # job may be due again without ever being "still running"
        self.scheduler.add_listener(self._finished, EVENT_JOB_EXECUTED | EVENT_JOB_ERROR)

    def start(self) -> None:
        self.scheduler.start()

    def stop(self) -> None:
        self._stopping.set()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)

    def _run(self, name: str, seconds: float, work: Callable[[], Any]) -> None:
        try:
            self._until_done(name, seconds, work)
        except _Stopping:
            pass
        except Exception:  # noqa: BLE001 - logged; the next run tries again
            if not self._stopping.is_set():
                log.exception("housekeeping job %s failed", name)

    def _finished(self, event: JobExecutionEvent) -> None:
        """A run finished: the job's next one, its interval from now."""
        if self._stopping.is_set():
            return
        trigger = self._triggers[event.job_id]
        trigger.finished = datetime.now(timezone.utc)
        try:
            self.scheduler.modify_job(event.job_id, next_run_time=trigger.finished + timedelta(seconds=trigger.seconds))
        except JobLookupError:  # the scheduler stopped meanwhile
            pass

    def _until_done(self, name: str, seconds: float, work: Callable[[], Any]) -> None:
        """`work` on the worker thread until it has no more chunks; a chunk the store refused for
        now is tried again after each of the retry delays."""
        refused = 0
        while True:
            try:
                more = self._on_worker(work)
            except Exception as exc:  # noqa: BLE001 - a transient one is retried, any other raised
                if not self._transient(exc):
                    raise
                if refused == len(self._retry_delays):
                    log.warning("housekeeping job %s: the store still refuses after %d tries (%s: %s); "
                                "next run in %g s", name, refused + 1, type(exc).__name__, exc, seconds)
                    return
                log.debug("housekeeping job %s: %s: %s; trying again in %g s", name, type(exc).__name__, exc,
                          self._retry_delays[refused])
                if self._stopping.wait(self._retry_delays[refused]):
                    raise _Stopping() from None
                refused += 1
                continue
            if not more:
                return
            refused = 0  # stopped at a chunk: the next one, after the rounds waiting in between

    def _on_worker(self, work: Callable[[], Any]) -> Any:
        """`work()`'s result from the worker thread: submitted once, waited for as long as the
        worker takes (never queued twice), but not past `stop()`."""
        if self._stopping.is_set():
            raise _Stopping()
        future = self._submit(work)
        while True:
            try:
                return future.result(STOP_CHECK)
            except FutureTimeout:
                if self._stopping.is_set():
                    future.cancel()
                    raise _Stopping() from None
