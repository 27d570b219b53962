"""Housekeeping: the daemon's periodic upkeep, run by APScheduler, done on the worker thread.

The jobs (each `(name, seconds, work)`, the worker builds the list):

    inbox      every 30 s   delete processed inbox rows (SQLite; PostgreSQL deletes as it goes)
    trail      every 30 s   each user's trail past `trail_days` (engine.daemon.trail)
    scrub      every 5 s    the identifiers settled audience removals carried (engine.daemon.erasure)
    retention  every 10 min messageIds, the action log and settled outbox entries past their days
                            (engine.store.retention)

APScheduler's `BackgroundScheduler` keeps the clock: interval triggers, one run of a job at a
time (`max_instances=1`), runs missed while the worker was busy merged into one (`coalesce`). A
job's `work` runs on the worker thread through `Worker.submit`, between two rounds, since the
store's connection belongs to that thread and serialising with the processor means upkeep never
races an event. `work` returns True when it stopped at a chunk with more to do: it is submitted
again at once, each chunk its own turn, so a large backlog of deletes never holds the worker (or
SQLite's write lock) for long while events wait.

These are the wall-clock duties of one daemon; the journeys' own schedules (cron entries in user
time) are not here: the engine fires them from its store and clock, so the dry-run fires them at
the same moments (engine.runtime.loop, engine.core.timing).
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Sequence

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

log = logging.getLogger("journeys.housekeeping")

TIMEOUT = 60.0  # seconds a job waits for its turn on the worker thread

Job = tuple[str, float, Callable[[], Any]]


class Housekeeping:
    def __init__(self, submit: Callable[[Callable[[], Any]], Any], jobs: Sequence[Job]):
        """`submit(fn)`: run fn on the worker thread, a concurrent.futures.Future back."""
        self._submit = submit
        self.scheduler = BackgroundScheduler(timezone="UTC", job_defaults={
            "coalesce": True, "max_instances": 1, "misfire_grace_time": None})
        for name, seconds, work in jobs:
            self.scheduler.add_job(self._run, IntervalTrigger(seconds=seconds), args=(name, work),
                                   id=name, name=name)

    def start(self) -> None:
        self.scheduler.start()

    def stop(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)

    def _run(self, name: str, work: Callable[[], Any]) -> None:
        try:
            while self.scheduler.running and self._submit(work).result(TIMEOUT):
                pass  # stopped at a chunk: the next one, after the rounds waiting in between
        except Exception:  # noqa: BLE001 - logged; the next interval tries again
            if self.scheduler.running:
                log.exception("housekeeping job %s failed", name)
