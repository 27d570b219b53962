"""The dispatcher's leases and pools: an attempt in flight leases its entry, a hanging connector
fills only its own pool, a lease that runs out makes the entry due again, and a restarted SQLite
daemon takes back the leases of its previous life."""

from __future__ import annotations

import threading
from datetime import timedelta

from connectors.base import Result
from connectors.recording import RecordingConnector
from engine.daemon.deliveries.dispatch import OutboxSink
from engine.store.outbox import DELIVERED, PENDING, SENDING, SqliteOutbox
from engine.store.sqlite_store import SqliteStore

from .test_outbox import ROUTES, T0, action, dispatcher


class Hanging:
    name, channel = "fcm", "push"

    def __init__(self):
        self.release = threading.Event()
        self.calls = 0

    def deliver(self, delivery):
        self.calls += 1
        self.release.wait(10)
        return Result(provider_id="late")


def sqlite_outbox(tmp_path):
    store = SqliteStore(str(tmp_path / "s.db"))
    return store, SqliteOutbox(store.conn)


def test_a_hanging_connector_fills_its_own_pool_and_no_other(tmp_path):
    store, outbox = sqlite_outbox(tmp_path)
    OutboxSink(outbox, ROUTES).emit([action(n, kind="push") for n in range(1, 21)] + [action(21)])
    hanging, smtp = Hanging(), RecordingConnector("smtp")
    finished = threading.Semaphore(0)
    d = dispatcher(outbox, {"fcm": hanging, "smtp": smtp}, workers=8, concurrency={"fcm": 2, "smtp": 2},
                   transaction=store.transaction)
    started = d.start_due(T0, on_done=finished.release)
    assert started == 5  # four push entries (twice fcm's concurrency) and the email
    assert finished.acquire(timeout=5)  # the email, while both push attempts hang
    assert d.settle_done(T0) == 1
    assert [x.action_id for x in smtp.delivered] == ["a21"]
    assert outbox.get("a21:smtp").state == DELIVERED
    assert len(outbox.by_state(SENDING)) == 4 and len(outbox.by_state(PENDING)) == 16
    assert d.start_due(T0) == 0  # fcm's pool is full: nothing more is leased for it
    hanging.release.set()
    d.close()
    assert d.settle_done(T0) == 4
    assert len(outbox.by_state(DELIVERED)) == 5
    assert d.run_due(T0) == 16
    assert hanging.calls == 20


def test_a_lease_that_runs_out_makes_the_entry_due_again(tmp_path):
    store, outbox = sqlite_outbox(tmp_path)
    OutboxSink(outbox, ROUTES).emit([action(1)])
    died = dispatcher(outbox, {"smtp": Hanging()}, workers=2, transaction=store.transaction, lease=60)
    assert died.start_due(T0) == 1  # the process "dies" with the attempt in flight
    entry = outbox.get("a1:smtp")
    assert entry.state == SENDING and entry.next_at == T0 + timedelta(seconds=60)
    assert outbox.due(T0 + timedelta(seconds=59)) == []
    smtp = RecordingConnector("smtp")
    other = dispatcher(outbox, {"smtp": smtp}, transaction=store.transaction)
    assert other.run_due(T0 + timedelta(seconds=60)) == 1
    assert [x.action_id for x in smtp.delivered] == ["a1"]  # the same id: the provider's idempotency key
    assert outbox.get("a1:smtp").state == DELIVERED


def test_a_restarted_sqlite_daemon_takes_back_its_leases_at_once(tmp_path):
    store, outbox = sqlite_outbox(tmp_path)
    OutboxSink(outbox, ROUTES).emit([action(1), action(2)])
    dispatcher(outbox, {"smtp": Hanging()}, workers=2, transaction=store.transaction).start_due(T0)
    store.close()
    store, outbox = sqlite_outbox(tmp_path)
    assert outbox.release(T0) == 2
    assert [e.id for e in outbox.due(T0)] == ["a1:smtp", "a2:smtp"]


def test_an_entry_forgotten_while_in_flight_stays_deleted(tmp_path):
    store, outbox = sqlite_outbox(tmp_path)
    OutboxSink(outbox, ROUTES).emit([action(1)])
    hanging = Hanging()
    finished = threading.Semaphore(0)
    d = dispatcher(outbox, {"smtp": hanging}, workers=2, transaction=store.transaction)
    d.start_due(T0, on_done=finished.release)
    store.conn.execute("DELETE FROM outbox WHERE user_id = 'u1'")  # forget-user, meanwhile
    hanging.release.set()
    assert finished.acquire(timeout=5)
    assert d.settle_done(T0) == 1
    assert outbox.get("a1:smtp") is None
