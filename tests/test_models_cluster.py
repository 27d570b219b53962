"""Several workers on one store train each moment of the models' schedule once, as of that moment:
the first to claim it trains and keeps the version, the others take that version from the store,
and a claim whose worker died expires so that another trains (engine.daemon.training)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from engine.core.state import UserState
from engine.daemon import training as training_module
from engine.daemon.training import Training
from engine.models.features import observe
from engine.models.modelset import UNTRAINED
from engine.store.open import migrate_store, open_store

MONDAY_3AM = datetime(2026, 3, 16, 3, tzinfo=timezone.utc)
WEDNESDAY = datetime(2026, 3, 18, 14, 30, tzinfo=timezone.utc)


class _Clock:
    """Virtual time from `start`, running `speed` times faster than the wall clock."""

    def __init__(self, start: datetime, speed: float = 0.0):
        self.start, self.speed, self.began = start, speed, time.monotonic()

    def now(self) -> datetime:
        return self.start + timedelta(seconds=(time.monotonic() - self.began) * self.speed)


@dataclass(frozen=True)
class _Program:
    models: Any = UNTRAINED
    retrain: str = "0 3 * * mon"


class _Engine:
    """What Training needs of the engine: features as of a moment, and the version in use."""

    def __init__(self):
        self.program = _Program()
        self.rows_at: list[datetime] = []
        before = observe(None, "Order Completed", MONDAY_3AM - timedelta(days=3), {"revenue": 5})
        self.features = {f"u{i}": observe(before, "Order Completed", MONDAY_3AM + timedelta(hours=5), {"revenue": 9})
                         for i in range(40)}

    def training_rows(self, at, users):
        self.rows_at.append(at)
        t = int(at.timestamp())
        return [(u, self.features[u].as_of(t), timezone.utc) for u in sorted(users)]

    def use_models(self, models, at):
        self.program = replace(self.program, models=models)


class _Worker:
    """A worker whose jobs run on a thread of its own that owns the store, as the daemon's."""

    def __init__(self, url, clock):
        self.pool = ThreadPoolExecutor(1)
        self.store = self.pool.submit(open_store, url).result()
        self.clock, self.engine = clock, _Engine()
        self.program = self.engine.program
        self.jobs = 0
        self.do(lambda store: [store.save(UserState(u), "UTC") for u in self.engine.features])

    def submit(self, fn):
        self.jobs += 1
        return self.pool.submit(fn)

    def do(self, fn):
        """`fn(store)` inside a transaction, on the worker's thread."""
        def work():
            with self.store.transaction():
                return fn(self.store)
        return self.pool.submit(work).result()

    def close(self):
        self.pool.submit(self.store.close).result()
        self.pool.shutdown()


def _url(kind, tmp_path, request):
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'm.db'}"
    url = request.getfixturevalue("pg_url")
    migrate_store(url)
    return url


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_a_moment_is_claimed_by_one_worker_until_its_claim_expires(kind, tmp_path, request):
    worker = _Worker(_url(kind, tmp_path, request), _Clock(WEDNESDAY))
    until = MONDAY_3AM + timedelta(minutes=30)

    def claims(store):
        return [store.claim_training(MONDAY_3AM, "a", MONDAY_3AM, until),
                store.claim_training(MONDAY_3AM, "b", MONDAY_3AM + timedelta(minutes=1), until),
                store.claim_training(MONDAY_3AM, "a", MONDAY_3AM + timedelta(minutes=2), until),  # still ours
                store.claim_training(MONDAY_3AM + timedelta(days=7), "b", MONDAY_3AM, until),  # another moment
                store.claim_training(MONDAY_3AM, "b", until + timedelta(seconds=1), until + timedelta(hours=1)),
                store.claim_training(MONDAY_3AM, "a", until + timedelta(seconds=2), until)]

    def versions(store):
        before = store.models_at(MONDAY_3AM)
        store.save_models("v1", MONDAY_3AM, b"one")
        store.save_models("v2", MONDAY_3AM + timedelta(days=7), b"two")
        return before, store.models_at(MONDAY_3AM), store.latest_models()
    try:
        assert worker.do(claims) == [True, False, True, True, True, False]
        assert worker.do(versions) == (None, b"one", b"two")
    finally:
        worker.close()


def test_a_training_stands_for_the_schedules_last_moment_not_the_clock(tmp_path):
    worker = _Worker(_url("sqlite", tmp_path, None), _Clock(WEDNESDAY))
    try:
        training = Training(worker)
        training.run()
        assert (training.trained, training.adopted, training.failed) == (1, 0, 0)
        assert worker.engine.rows_at == [MONDAY_3AM]  # features as they stood at Monday 03:00 (one chunk)
        assert worker.engine.program.models.trained_at == int(MONDAY_3AM.timestamp())
        assert worker.do(lambda store: store.models_at(MONDAY_3AM)) is not None
        training.run()  # the moment's version is in use: nothing to do
        assert training.trained == 1 and worker.engine.rows_at == [MONDAY_3AM]
    finally:
        worker.close()


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_two_workers_on_one_store_train_a_moment_once_and_score_with_the_same_version(kind, tmp_path, request):
    url = _url(kind, tmp_path, request)
    workers = [_Worker(url, _Clock(WEDNESDAY)) for _ in range(2)]
    trainings = [Training(w, poll=0.05) for w in workers]
    try:
        threads = [threading.Thread(target=t.run) for t in trainings]
        for th in threads:
            th.start()
        for th in threads:
            th.join(120)
        assert sorted((t.trained, t.adopted, t.failed) for t in trainings) == [(0, 1, 0), (1, 0, 0)]
        versions = {w.engine.program.models.version for w in workers}
        assert len(versions) == 1 and None not in versions
        assert all(w.engine.program.models.trained_at == int(MONDAY_3AM.timestamp()) for w in workers)
        assert sum(len(w.engine.rows_at) for w in workers) == 1  # one worker read the features (one chunk)
    finally:
        for w in workers:
            w.close()


def test_a_claim_whose_worker_died_expires_and_another_worker_trains(tmp_path):
    clock = _Clock(WEDNESDAY, speed=1200.0)  # 20 virtual minutes a second
    worker = _Worker(_url("sqlite", tmp_path, None), clock)
    try:  # a worker claimed Monday's training, then died
        worker.do(lambda store: store.claim_training(MONDAY_3AM, "dead", WEDNESDAY, WEDNESDAY + timedelta(minutes=30)))
        training = Training(worker, poll=0.05)
        done = threading.Thread(target=training.run)
        done.start()
        done.join(120)
        assert (training.trained, training.adopted, training.failed) == (1, 0, 0)
        assert clock.now() > WEDNESDAY + timedelta(minutes=30)  # it waited for the claim to expire
        assert worker.do(lambda store: store.models_at(MONDAY_3AM)) is not None
    finally:
        worker.close()


def test_a_worker_waiting_for_another_stops_when_the_daemon_stops(tmp_path):
    worker = _Worker(_url("sqlite", tmp_path, None), _Clock(WEDNESDAY))
    try:
        worker.do(lambda store: store.claim_training(MONDAY_3AM, "other", WEDNESDAY, WEDNESDAY + timedelta(hours=1)))
        training = Training(worker, poll=0.05)
        waiting = threading.Thread(target=training.run)
        waiting.start()
        time.sleep(0.3)
        assert waiting.is_alive()  # waiting for the other worker's version
        training.stop()
        waiting.join(30)
        assert not waiting.is_alive()
        assert (training.trained, training.adopted, training.failed) == (0, 0, 0)
        assert worker.engine.program.models is UNTRAINED
    finally:
        worker.close()


def test_the_features_are_read_a_chunk_at_a_time_and_train_the_same_version(tmp_path, monkeypatch):
    whole = _Worker(f"sqlite:///{tmp_path / 'whole.db'}", _Clock(WEDNESDAY))
    chunked = _Worker(f"sqlite:///{tmp_path / 'chunked.db'}", _Clock(WEDNESDAY))
    try:
        Training(whole).run()
        monkeypatch.setattr(training_module, "ROWS_CHUNK", 7)
        before = chunked.jobs
        Training(chunked).run()
        assert chunked.engine.rows_at == [MONDAY_3AM] * 6  # 40 users, 7 a turn: the worker's other jobs go between
        assert chunked.jobs - before >= 6 + 3
        assert chunked.engine.program.models.version == whole.engine.program.models.version
    finally:
        whole.close()
        chunked.close()
