"""The daemon's deliveries, on a thread and a store connection of their own.

A provider that answers in two seconds must not hold up the events behind it: the processor
(`engine.daemon.worker.Worker`) only writes outbox entries, in the transaction of the state that decided
them, and pokes this loop after each commit; the loop attempts what is due (`Dispatcher.run_due`),
flushes the batching connectors every `FLUSH_EVERY` seconds, and otherwise sleeps until the next
retry is due or an attempt finishes. Attempts run in each connector's pool (`Dispatcher.start_due`),
so this thread only leases entries and records outcomes: a hanging provider fills its own pool
and no other's.

Two connections write the same SQLite file: the processor's transactions and this loop's
settlements (one transaction per round of deliveries, never held across a provider call). WAL lets
readers go on; writers wait for each other up to the connection's busy timeout.

What crosses threads: `poke()` (an Event), `reconfigure(config)` (taken between rounds: the old
connectors' batches are flushed and closed, the new ones built; the connectors' circuits carry
over), and `circuits()` and `tally()` for /metrics. What an attempt says about its recipient (a
hard bounce, a dead push token) crosses as data, not as a call: the dispatcher writes it into the
inbox as events in the settle's transaction (`engine.daemon.deliveries.feedback`), and the
processor takes them as any event, since only the engine changes profiles.

A connector whose circuit is open (`engine.daemon.deliveries.dispatch.Circuit`) has its entries left out of
the loop's look at what is due next: the loop sleeps until its next probe, not in a busy loop
over entries it may not take.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger("journeys.daemon")

FLUSH_EVERY = 5.0  # seconds between flushes of batching connectors (audiences)
MAX_IDLE = 1.0  # seconds the loop sleeps at most with nothing due


class DeliveryLoop:
    def __init__(self, root: Path, config: Any, path: str, clock: Any, *, environ: dict[str, str] | None = None):
        self.root, self.config, self.path, self.clock = root, config, path, clock
        self.environ = environ
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.heartbeat = 0.0
        self.rounds = 0
        self._pending_config: Any = None
        self._handed: queue.SimpleQueue[list[str]] = queue.SimpleQueue()
        self._opened = threading.Event()
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self.dispatcher: Any = None
        from ..metrics import Tally

        self._tally = Tally()  # attempts by connector and outcome (/metrics): the dispatchers come and go

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        self._thread = threading.Thread(target=self._main, name="journeys-delivery", daemon=True)
        self._thread.start()
        self._opened.wait()
        if self._error is not None:
            raise self._error

    def stop(self, timeout: float | None = 60) -> None:
        self.stopping.set()
        self.wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def poke(self) -> None:
        """Something may be due now (the processor committed, an operator retried a dead letter)."""
        self.wake.set()

    def hand(self, ids: list[str]) -> None:
        """Entries the processor committed already leased to us (`OutboxSink.handoff`): started in
        the next round without a claim transaction."""
        self._handed.put(ids)
        self.wake.set()

    def reconfigure(self, config: Any) -> None:
        """New connectors, routes and limits from a reloaded journeys.toml, taken between rounds."""
        self._pending_config = config
        self.wake.set()

    def circuits(self) -> dict[str, dict[str, float]]:
        """Each connector's circuit (`Dispatcher.circuit_view`), from any thread."""
        dispatcher = self.dispatcher
        return dispatcher.circuit_view() if dispatcher is not None else {}

    def tally(self) -> dict[Any, int]:
        """The attempts made since the loop started, by connector and outcome (`Dispatcher.tally`), from any thread."""
        return self._tally.snapshot()

    def _main(self) -> None:
        from ...store.open import open_store
        from ...store.urls import is_postgres

        released = 0
        try:
            self.store = open_store(self.path)
            if is_postgres(self.path):  # shared with other workers: claim with SKIP LOCKED, leases expire
                from ...store.pg_outbox import PostgresOutbox

                self.outbox = PostgresOutbox(self.store.conn, claim=True)
            else:
                from ...store.outbox import SqliteOutbox

                with self.store.transaction():
                    self.outbox = SqliteOutbox(self.store.conn)
                    released = self.outbox.release(self.clock.now())
            if released:
                log.warning("%d deliveries in flight when the daemon stopped are attempted again", released)
            self.dispatcher = self._dispatcher(self.config)
        except BaseException as exc:  # noqa: BLE001 - reported by start()
            self._error = exc
            self._opened.set()
            return
        self._opened.set()
        try:
            self._loop()
        except BaseException:  # noqa: BLE001
            log.exception("the delivery loop stopped on an error")
            raise
        finally:
            self._close_dispatcher()
            self.store.close()

    # ------------------------------------------------------------------ connectors

    def _dispatcher(self, config: Any) -> Any:
        from connectors.registry import build, delivery_limits, retry_policies

        from .dispatch import Dispatcher, TokenBucket, lease_seconds
        from .feedback import FeedbackWriter
        from .hold import Hold

        store = self.store
        buckets, concurrency = delivery_limits(config)
        policies = retry_policies(config)
        connectors = build(config, self.root, self.environ)

        def profile(uid: str) -> dict[str, Any]:
            state = store.load(store.resolve(uid) or uid)
            return dict(state.traits) if state is not None else {}

        return Dispatcher(
            self.outbox, connectors, profiles=profile, transaction=store.transaction,
            limits={n: TokenBucket(rate, burst) for n, (rate, burst) in buckets.items()},
            concurrency=concurrency, workers=max(4, sum(concurrency.values()) if concurrency else 4),
            lease=lease_seconds(self.environ or None), policies=policies,
            circuits=self.dispatcher.circuits if self.dispatcher is not None else None, tally=self._tally,
            hold=Hold(store.conn), feedback=FeedbackWriter(store))

    def _close_dispatcher(self) -> None:
        dispatcher = self.dispatcher
        if dispatcher is None:
            return
        self._guard("flush", lambda: dispatcher.flush(self.clock.now()))
        dispatcher.close()  # waits for the attempts in flight
        self._guard("settle", lambda: dispatcher.settle_done(self.clock.now()))
        self._guard("give back", lambda: self._give_back(dispatcher))
        for connector in dispatcher.connectors.values():
            self._guard("close", getattr(connector, "close", lambda: None))

    def _give_back(self, dispatcher: Any) -> None:
        """The handed entries still waiting for room, pending again for whoever runs next."""
        entries = dispatcher.give_back(self.clock.now())
        if entries:
            with self.store.transaction():
                dispatcher.settle(entries)

    def _take_config(self) -> None:
        config, self._pending_config = self._pending_config, None
        if config is None:
            return
        try:
            fresh = self._dispatcher(config)
        except Exception:  # noqa: BLE001 - the running connectors stay
            log.exception("the new connector settings could not be applied; the running ones stay")
            return
        self._close_dispatcher()
        self.dispatcher, self.config = fresh, config
        log.info("connectors rebuilt: %s", ", ".join(sorted(fresh.connectors)) or "none")

    # ------------------------------------------------------------------ the loop

    def _loop(self) -> None:
        next_flush = time.monotonic() + FLUSH_EVERY
        while not self.stopping.is_set():
            self.heartbeat = time.monotonic()
            self.wake.clear()  # before looking: a poke from now on wakes the wait below
            self._take_config()
            started = 0
            known: list[datetime | None] = []  # the next due entry, as this round read it (and wrote nothing)

            def run() -> None:
                nonlocal started
                dispatcher = self.dispatcher
                now = self.clock.now()
                # before any write lock (SQLite's is the processor's too): a handed entry starts now
                started, back = dispatcher.start_handed(self._take_handed(), now, on_done=self.wake.set)
                if not (back or dispatcher.finished()):
                    due = self._next_due()
                    if due is None or due > now:
                        known.append(due)  # the wait below needs no second look
                        return  # nothing to write: no write lock taken
                with self.store.transaction():  # outcomes and the next claims: one commit per round
                    dispatcher.settle_done(now)
                    more, again = dispatcher.start_handed([], now, on_done=self.wake.set)  # the room freed
                    dispatcher.settle(back + again)
                    started += more + dispatcher.start_due(now, on_done=self.wake.set)

            self._guard("delivery", run)
            self.rounds += 1
            if time.monotonic() >= next_flush:
                self._guard("flush", lambda: self.dispatcher.flush(self.clock.now()))
                next_flush = time.monotonic() + FLUSH_EVERY
                known.clear()  # a flush writes entries
            if started or self.stopping.is_set():
                continue
            delay = self._until(known[0] if known else self._next_due())
            if delay <= 0.001 and self.dispatcher.in_flight:
                delay = MAX_IDLE  # what is due waits for a full pool: a finished attempt wakes us
            delay = min(delay, next_flush - time.monotonic(), MAX_IDLE)
            if delay > 0:
                self.wake.wait(delay)

    def _guard(self, what: str, run: Callable[[], Any]) -> None:
        try:
            run()
        except Exception:  # noqa: BLE001 - the loop goes on; the next round retries
            log.exception("%s failed", what)

    def _take_handed(self) -> list[str]:
        ids: list[str] = []
        while True:
            try:
                ids += self._handed.get_nowait()
            except queue.Empty:
                return ids

    def _next_due(self) -> datetime | None:
        """When the earliest pending entry (or lease) is due, or the next probe of an open circuit;
        None when there is none. The entries an open circuit holds back are left out (the loop
        would wake at once for what it may not take): when the earliest is one, each other
        connector's earliest is read instead, one index seek each."""
        from ...store import sql
        from ...store.outbox import OPEN, _from_t

        conn, dispatcher = self.store.conn, self.dispatcher
        first = sql.execute(conn, f"SELECT connector, next_at FROM outbox WHERE {OPEN} ORDER BY next_at, id LIMIT 1"
                            ).fetchone()
        times = [first[1]] if first else []
        down = dispatcher.down()
        if first and first[0] in down:
            seek = f"SELECT min(next_at) FROM outbox WHERE {OPEN} AND connector = ?"
            times = [sql.execute(conn, seek, (name,)).fetchone()[0] for name in dispatcher.connectors
                     if name not in down]
        due = [_from_t(t) if isinstance(t, str) else t for t in times if t]  # SQLite text, PostgreSQL timestamptz
        probe = dispatcher.next_probe()
        return min(due + ([probe] if probe is not None else []), default=None)

    def _until(self, due: datetime | None) -> float:
        """Seconds until `due` (the next entry's time; MAX_IDLE when there is none)."""
        if due is None:
            return MAX_IDLE
        return max(0.0, (due - self.clock.now()).total_seconds() + 0.001)
