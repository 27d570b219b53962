"""The daemon's models: trained on a schedule, APScheduler firing `program.retrain` (cron, UTC).

The dry-run trains inline, inside `Engine.run_due`, at the very moments of the same cron
expression (engine.runtime.loop); so does `journeys replay`, whose daemon runs on the events' own
clock. A live daemon cannot stop taking events for a training, so here the expensive part runs on
the scheduler's thread:

1. on the worker thread (it owns the store): every user's features as they stood at the moment
   the training stands for (`training_rows`): the schedule's last moment, not the wall clock's
   now, so a training that starts late (a busy worker, a restart) learns what the dry-run learns.
   ROWS_CHUNK users a turn (about 70 ms on SQLite): the worker takes events between two chunks
   instead of stalling for the whole store (100,000 users: 3.3 s in one read);
2. on the scheduler's thread: `engine.models.modelset.train`, which keeps the last good version of
   a family whose training fails and says why;
3. on the worker thread again: the engine scores with the new version from its next step, and
   the version goes into the store (a restart scores with it at once: `load_models`).

One version per moment, whatever the number of workers: before training, a worker claims the
moment in the store (`claim_training`, for CLAIM_SECONDS or three times its last training). The
workers of a PostgreSQL cluster that lose the claim wait for the version it leaves in the store
(`models_at`), looking every `poll` seconds, and score with it: every worker scores with the same
version, the one the dry-run trains. A claim whose holder died expires and the next look takes it.

A daemon that starts with predictions in use trains at start when the store keeps no version or
the schedule passed a moment since the kept one (the daemon was down then). Each training is logged
(version, users, each family's status) and counted for /metrics, as is each version taken from
another worker.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import orjson
from apscheduler.schedulers.background import BackgroundScheduler

from ..core.timing import aps_crontab, previous_fire
from ..models.features import seconds as epoch_seconds
from ..models.modelset import ModelSet, train
from .housekeeping import RETRY_DELAYS

models_log = logging.getLogger("journeys.models")

CLAIM_SECONDS = 1800.0  # how long a claim to train a moment holds at least (a dead holder's expires)
POLL_SECONDS = 5.0  # how often a worker that lost the claim looks for the version
ROWS_CHUNK = 2000  # users whose features are read in one turn of the worker


class Training:
    """The models' training (see the module's docstring)."""

    def __init__(self, worker: Any, transient: Callable[[BaseException], bool] = lambda exc: False,
                 poll: float = POLL_SECONDS, claim_seconds: float = CLAIM_SECONDS):
        self.worker = worker
        self.transient = transient  # "try again" from the store (a lock): retried, then a warning
        self.poll = poll
        self.claim_seconds = claim_seconds
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.scheduler: Any = None
        self.trained = 0  # trainings that produced a version
        self.adopted = 0  # versions another worker trained, taken from the store
        self.failed = 0  # trainings that failed as a whole (the running version stays)
        self.family_failures = 0  # families that kept their last good version
        self.last_seconds = 0.0  # how long the last training took
        self._lock = threading.Lock()
        self._stopped = threading.Event()

    def start(self) -> None:
        from apscheduler.triggers.cron import CronTrigger

        self.scheduler = BackgroundScheduler(timezone=timezone.utc)
        trigger = CronTrigger.from_crontab(aps_crontab(self.worker.program.retrain), timezone=timezone.utc)
        self.scheduler.add_job(self.run, trigger, id="train", coalesce=True, max_instances=1,
                               misfire_grace_time=None)
        if self._missed():
            self.scheduler.add_job(self.run, id="train-at-start")  # now, once
        self.scheduler.start()

    def _moment(self) -> datetime | None:
        """The moment of the schedule a training now stands for: its last at or before now."""
        return previous_fire(self.worker.program.retrain, "UTC", self.worker.clock.now())

    def _missed(self) -> bool:
        """Is a training due at start: no version kept in the store, or the schedule passed a
        moment since the kept one was trained (the daemon was down then)?"""
        trained = self.worker.engine.program.models.trained_at
        moment = self._moment()
        return trained is None or (moment is not None and epoch_seconds(moment) > trained)

    def stop(self) -> None:
        """No more trainings; one under way is abandoned when it next needs the worker (a daemon
        that stops does not wait for a fit)."""
        self._stopped.set()
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
            self.scheduler = None

    def run(self) -> None:
        """The version of the schedule's last moment: trained here, or taken from the worker that
        claimed it; never two at once, and the running version stays if anything fails."""
        if not self._lock.acquire(blocking=False):
            return
        started = time.monotonic()
        worker = self.worker
        try:
            moment = self._moment() or worker.clock.now()
            if worker.engine.program.models.trained_at == epoch_seconds(moment):
                return  # in use already
            while not self._stopped.is_set():
                body = self._on_worker(lambda: worker.store.models_at(moment))
                if body is not None:
                    self._adopt(ModelSet.from_plain(orjson.loads(body)), moment)
                    return
                now = worker.clock.now()
                until = now + timedelta(seconds=max(self.claim_seconds, 3 * self.last_seconds))
                if self._on_worker(lambda: _claim(worker, moment, self.owner, now, until)):
                    self._train(moment)
                    return
                self._stopped.wait(self.poll)  # another worker trains it: look again
        except Exception as exc:  # noqa: BLE001 - the daemon goes on with the version it has
            if self._stopped.is_set():  # the worker stopped under it: nothing failed
                models_log.info("models: training abandoned: the daemon is stopping")
                return
            self.failed += 1
            if self.transient(exc):  # the store stayed locked through every try: normal under load
                models_log.warning("models: the store stayed busy (%s: %s); the running version stays, the next "
                                   "training is at the next scheduled moment", type(exc).__name__, exc)
            else:
                models_log.exception("models: training failed; scoring goes on with the running version")
        finally:
            self.last_seconds = time.monotonic() - started
            self._lock.release()

    def _train(self, moment: datetime) -> None:
        worker = self.worker
        users = self._on_worker(lambda: list(worker.store.users()))
        rows: list = []
        for start in range(0, len(users), ROWS_CHUNK):  # one turn each: events go on in between
            if self._stopped.is_set():
                raise RuntimeError("the daemon is stopping")
            chunk = users[start:start + ROWS_CHUNK]
            rows += self._on_worker(lambda: _rows(worker, moment, chunk))
        problems: list[str] = []
        models = train(rows, epoch_seconds(moment), previous=worker.engine.program.models, log=problems.append)
        worker.submit(lambda: worker.engine.use_models(models, moment)).result()
        self.trained += 1
        self.family_failures += len(models.problems)
        for problem in problems:
            models_log.error("%s", problem)
        try:
            self._on_worker(lambda: _keep(worker, models, moment))
        except Exception as exc:  # noqa: BLE001 - the version is in use; only a restart would miss it
            if not self._stopped.is_set():
                models_log.warning("models: version %s is in use but could not be kept in the store (%s: %s)",
                                   models.version, type(exc).__name__, exc)

    def _adopt(self, models: ModelSet, moment: datetime) -> None:
        worker = self.worker
        worker.submit(lambda: _score_with(worker, models)).result()
        self.adopted += 1
        models_log.info("models: version %s (trained as of %s) taken from the store, where another worker left it",
                        models.version, moment.isoformat())

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


def _claim(worker: Any, moment: datetime, owner: str, now: datetime, until: datetime) -> bool:
    with worker.store.transaction():
        return worker.store.claim_training(moment, owner, now, until)


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
    _score_with(worker, models)
    models_log.info("models: version %s (trained as of %s) loaded from the store", models.version,
                    models.describe()["trained_at"])


def _score_with(worker: Any, models: ModelSet) -> None:
    """The engine scores with `models` from its next step: a version trained elsewhere (the store's,
    another worker's), so not announced as a training."""
    worker.engine.program = replace(worker.engine.program, models=models)


def _rows(worker: Any, at: Any, users: list[str]) -> list:
    with worker.store.transaction():
        return worker.engine.training_rows(at, users)


def log_training(models: Any, at: Any) -> None:
    """What the daemon says of each training (the worker's `Engine.on_trained`): the version and
    each family's status, with the reason of one that fell back."""
    described = models.describe()
    models_log.info("models: version %s trained as of %s on %d users: %s", models.version, described["trained_at"],
                    models.users, ", ".join(f"{n} {f['status']}" + (f" ({f['reason']})" if f["reason"] else "")
                                            for n, f in described["models"].items()))
