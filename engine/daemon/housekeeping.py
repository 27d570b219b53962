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
the same moments (engine.runtime.loop, engine.core.timing).

Models (`Training`, when the project predicts): the daemon trains its models on a schedule,
APScheduler firing `program.retrain` (cron, UTC).

The dry-run trains inline, inside `Engine.run_due`, at the very moments of the same cron
expression (engine.runtime.loop); so does `journeys replay`, whose daemon runs on the events' own
clock. A live daemon cannot stop taking events for a training, so here the expensive part runs on
the scheduler's thread:

1. on the worker thread (it owns the store): every user's features as of now (`training_rows`);
2. on the scheduler's thread: `engine.models.modelset.train`, which keeps the last good version of
   a family whose training fails and says why;
3. on the worker thread again: the engine scores with the new version from its next step.

A daemon that starts with predictions in use trains once at start (a restart would otherwise wait
for the next scheduled moment with no version at all), then on the schedule. Each training is
logged (version, users, each family's status) and counted for /metrics.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Sequence

import orjson
from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, JobExecutionEvent
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger

from ..models.features import seconds as epoch_seconds
from ..models.modelset import ModelSet, train

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


models_log = logging.getLogger("journeys.models")


class Training:
    """The models' training (see the module's docstring, "Models")."""

    def __init__(self, worker: Any, transient: Callable[[BaseException], bool] = lambda exc: False):
        self.worker = worker
        self.transient = transient  # "try again" from the store (a lock): retried, then a warning
        self.scheduler: Any = None
        self.trained = 0  # trainings that produced a version
        self.failed = 0  # trainings that failed as a whole (the running version stays)
        self.family_failures = 0  # families that kept their last good version
        self.last_seconds = 0.0  # how long the last training took
        self._lock = threading.Lock()
        self._stopped = False

    def start(self) -> None:
        from apscheduler.triggers.cron import CronTrigger

        self.scheduler = BackgroundScheduler(timezone=timezone.utc)
        from ..core.timing import aps_crontab  # weekday numbers as cron means them, as the dry-run's

        trigger = CronTrigger.from_crontab(aps_crontab(self.worker.program.retrain), timezone=timezone.utc)
        self.scheduler.add_job(self.run, trigger, id="train", coalesce=True, max_instances=1,
                               misfire_grace_time=None)
        if self._missed(trigger):
            self.scheduler.add_job(self.run, id="train-at-start")  # now, once
        self.scheduler.start()

    def _missed(self, trigger: Any) -> bool:
        """Is a training due at start: no version kept in the store, or the schedule passed a
        moment since the kept one was trained (the daemon was down then)?"""
        trained = self.worker.engine.program.models.trained_at
        if trained is None:
            return True
        since = datetime.fromtimestamp(trained, timezone.utc)
        due = trigger.get_next_fire_time(None, since + timedelta(seconds=1))
        return due is not None and due <= self.worker.clock.now()

    def stop(self) -> None:
        """No more trainings; one under way is abandoned when it next needs the worker (a daemon
        that stops does not wait for a fit)."""
        self._stopped = True
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
            self.scheduler = None

    def run(self) -> None:
        """One training (never two at once); the running version stays if anything fails."""
        if not self._lock.acquire(blocking=False):
            return
        started = time.monotonic()
        worker = self.worker
        try:
            at = worker.clock.now()
            rows = self._on_worker(lambda: _rows(worker, at))
            previous = worker.engine.program.models
            problems: list[str] = []
            models = train(rows, epoch_seconds(at), previous=previous, log=problems.append)
            worker.submit(lambda: worker.engine.use_models(models, at)).result()
            self.trained += 1
            self.family_failures += len(models.problems)
            for problem in problems:
                models_log.error("%s", problem)
        except Exception as exc:  # noqa: BLE001 - the daemon goes on with the version it has
            if self._stopped:  # the worker stopped under it: nothing failed
                models_log.info("models: training abandoned: the daemon is stopping")
                return
            self.failed += 1
            if self.transient(exc):  # the store stayed locked through every try: normal under load
                models_log.warning("models: the store stayed busy (%s: %s); the running version stays, the next "
                                   "training is at the next scheduled moment", type(exc).__name__, exc)
            else:
                models_log.exception("models: training failed; scoring goes on with the running version")
        else:
            try:
                self._on_worker(lambda: _keep(worker, models, at))
            except Exception as exc:  # noqa: BLE001 - the version is in use; only a restart would miss it
                if not self._stopped:
                    models_log.warning("models: version %s is in use but could not be kept in the store (%s: %s)",
                                       models.version, type(exc).__name__, exc)
        finally:
            self.last_seconds = time.monotonic() - started
            self._lock.release()

    def _on_worker(self, fn: Callable[[], Any]) -> Any:
        """`fn` on the worker thread (it owns the store), tried again after each of RETRY_DELAYS
        while the store says "try again" (SQLite's write lock held by the ingest, a deadlock)."""
        for delay in (*RETRY_DELAYS, None):
            try:
                return self.worker.submit(fn).result()
            except Exception as exc:  # noqa: BLE001 - sorted below
                if delay is None or not self.transient(exc):
                    raise
                time.sleep(delay)


def _keep(worker: Any, models: Any, at: datetime) -> None:
    """The version into the store, so that a restart scores with it at once."""
    with worker.store.transaction():
        worker.store.save_models(models.version, at, orjson.dumps(models.to_plain()))


def load_models(worker: Any) -> None:
    """At start: the latest version the store kept, if any (one that cannot be read is logged and
    left: the daemon trains instead)."""
    body = worker.store.latest_models()
    if body is None:
        return
    try:
        models = ModelSet.from_plain(orjson.loads(body))
    except Exception:  # noqa: BLE001 - a version from another Journeys: train a new one
        models_log.exception("models: the version kept in the store cannot be read; training a new one")
        return
    worker.engine.program = replace(worker.engine.program, models=models)
    models_log.info("models: version %s (trained as of %s) loaded from the store", models.version,
                    models.describe()["trained_at"])


def _rows(worker: Any, at: Any) -> list:
    with worker.store.transaction():
        return worker.engine.training_rows(at)


def log_training(models: Any, at: Any) -> None:
    """What the daemon says of each training (the worker's `Engine.on_trained`): the version and
    each family's status, with the reason of one that fell back."""
    described = models.describe()
    models_log.info("models: version %s trained as of %s on %d users: %s", models.version, described["trained_at"],
                    models.users, ", ".join(f"{n} {f['status']}" + (f" ({f['reason']})" if f["reason"] else "")
                                            for n, f in described["models"].items()))
