"""The daemon: the ingest (HTTP) and the engine's loops in one process (`journeys serve`).

    uvicorn (main thread, asyncio)     the worker thread (owns the store)    the delivery thread
    ──────────────────────────────     ───────────────────────────────────   ────────────────────────
    POST /v1/...  → group commit → inbox ─► wake ─► timers due → run_due      (engine.daemon.deliveries.loop)
    GET /healthz, /readyz, /metrics         inbox messages → engine.take ─► poke ─► outbox due →
    /u/..., /v1/profile, /admin/... ─► submit (jobs between rounds)                 connectors

`build_app` makes the HTTP side, `serve` runs it: on one port, or with `--admin-port` the
operator's routes (engine.daemon.admin.surface) on a second listener of the same event loop.

The worker thread runs the processor and the timers, in turn: a SQLite connection belongs to one
thread, and serialising them means a timer and an event of the same user never race. The ingest
writes the inbox on its own connection (its group-commit thread). Deliveries run on a thread and
connection of their own, so a slow provider never holds up the events behind it.

Processing: messages are taken in inbox order after the cursor, up to `BATCH` at a time, and
handled in one `store.transaction()` with `inbox.mark(last seq)` (the inbox is opened on the
store's connection): states, actions, outbox entries and the cursor commit together, so a crash
neither loses nor repeats a message. Before each message, timers due by now fire. A group that
fails is retried one message at a time; a message that fails on its own (an engine bug, a row
that no longer parses) is logged and set aside with its error in the table `inbox_failed`, so one
bad message cannot stop the daemon and nothing accepted is lost.

Housekeeping (engine.daemon.housekeeping): APScheduler's thread submits the upkeep jobs (inbox and
trail pruning, the erasure scrub, retention) to the worker thread, which runs them between rounds
like the admin API's jobs.

Wake-ups: the ingest's inbox is wrapped so that each committed group sets a `threading.Event`
the worker waits on; the worker otherwise sleeps until the earliest of its deadlines: the store's
next timer or the next scheduled entry, at most `MAX_IDLE` seconds (a safety net, not the way
work is found). After each round the worker pokes the delivery thread, which sleeps until the
next outbox retry or batch flush otherwise.

Shutdown (SIGTERM, SIGINT): uvicorn stops accepting and finishes the requests in flight (their
events are committed before they are answered), then the worker finishes its current
transaction and closes the store, then the deliveries flush their batches; the process exits 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import signal
import sqlite3
import threading
import time
from concurrent.futures import Future
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from fastapi import Request  # at module level, as the responses: the routes' annotations name them
from fastapi.responses import JSONResponse, Response
from ..core.effects import Action, Effect, Received, Transition, reported_outcome
from ..core.step import PARKED
from ..runtime.clock import Clock, SystemClock
from ..store.base import StoreError
from ..store.inbox import PRUNE_CHUNK
from .metrics import Tally

log = logging.getLogger("journeys.daemon")

BATCH = 200  # inbox messages per transaction
TIMER_BATCH = 2000  # timer fires per transaction when many are due at once
MAX_IDLE = 1.0  # seconds the worker sleeps at most with nothing due
PRUNE_EVERY = 30.0  # seconds between deletions of processed inbox rows and of old trail rows
SCRUB_EVERY = 5.0  # seconds between scrubs of the identifiers settled audience removals carried
RETAIN_EVERY = 600.0  # seconds between rounds of retention (messageIds, the action log, settled outbox)
REQUEST_TIMEOUT = 30.0  # seconds an HTTP request waits for the worker to run its job (`Worker.call`)
STALLED_AFTER = 60.0  # seconds without a finished round before /readyz says the worker is stuck
PARTITION_TTL = 10.0  # seconds a PostgreSQL worker's partition leases last (JOURNEYS_LEASE_TTL)
CATCH_UP_LEASES = 3  # partitions taken over catch up the scheduled entries of this many lease TTLs


def transient(exc: BaseException) -> bool:
    """A database error that says "try again" (a deadlock between two workers, a serialisation
    failure, a busy SQLite file, a dropped connection), as opposed to a message the engine cannot
    take: the batch is retried instead of set aside."""
    if isinstance(exc, sqlite3.OperationalError):
        return "locked" in str(exc) or "busy" in str(exc)
    if type(exc).__module__.startswith("psycopg"):
        import psycopg

        return isinstance(exc, psycopg.OperationalError)
    return False
_FAR = datetime(9999, 1, 1, tzinfo=timezone.utc)


class Counts(Tally):
    """The metrics sink: counts effects by kind (messages received, actions by kind and outcome, an
    audience change that passed as `updated`, not `sent`, runs parked per journey, each also logged
    as a warning). Written by the worker, read by /readyz
    and /metrics: a lock keeps the snapshot whole."""

    def emit(self, effects: Sequence[Effect]) -> None:
        with self._lock:
            for e in effects:
                if isinstance(e, Received):
                    self._counts[f"received.{e.kind}"] += 1
                elif isinstance(e, Action):
                    self._counts[f"action.{e.kind}.{reported_outcome(e.kind, e.outcome)}"] += 1
                elif isinstance(e, Transition) and e.kind == PARKED:
                    self._counts[f"parked.{e.journey}"] += 1
                    # no user id in the log (an erasure cannot reach it): the user's trail has it
                    log.warning("journey %r parked a user's run: %s (GET /admin/users/{id}/trace)", e.journey,
                                e.detail)


class AlreadyServed(StoreError):
    """Another `journeys serve` runs on this SQLite file."""


def hold_alone(path: str) -> Any:
    """An exclusive lock, for this process's life, on `<file>.serve.lock`: one daemon per SQLite
    file. Two would each take the inbox and the outbox as theirs (each one's deliveries release
    the other's leases at start) and send the same messages twice. The kernel drops the lock when
    the process ends, kill -9 included, so a crash never leaves a stale one."""
    import fcntl

    Path(path).parent.mkdir(parents=True, exist_ok=True)  # the store's own folder, made before the store
    lock = open(f"{path}.serve.lock", "a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.seek(0)
        holder = lock.read().strip() or "another process"
        lock.close()
        raise AlreadyServed(f"{path}: {holder} already serves this SQLite store; one journeys serve per "
                            "file (several workers share a PostgreSQL store, see docs/deployment.md)") from None
    lock.seek(0)
    lock.truncate()
    lock.write(f"journeys serve (pid {os.getpid()})\n")
    lock.flush()
    return lock


def store_file(url: str, base: Path | None = None) -> str:
    """The daemon's store: a PostgreSQL URL as it is, or the SQLite file of a URL or path (a
    relative one is relative to `base`, the project)."""
    from ..store.urls import is_postgres, sqlite_path

    if is_postgres(url):
        from ..store.urls import parse_url

        parse_url(url)  # ValueError for a bad schema name, before anything starts
        return url
    path = sqlite_path(url)
    if path == ":memory:":
        raise ValueError("the daemon's store must be a file (sqlite:///path.db), not :memory:")
    p = Path(path)
    if not p.is_absolute() and base is not None:
        p = base / p
    return str(p.resolve())


class Worker:
    """The processor and the timers on one thread that owns the store; it starts the deliveries."""

    def __init__(self, root: Path, config: Any, program: Any, path: str, *, clock: Clock | None = None,
                 environ: dict[str, str] | None = None, counts: Counts | None = None,
                 deliver: bool = True, event_time: bool = False):
        """`deliver=False`: no delivery thread (the outbox fills, nothing is sent). `event_time`:
        each message is taken at its own timestamp on a virtual `clock`, as the dry-run takes it
        (`journeys replay`)."""
        self.root, self.config, self.program, self.path = root, config, program, path
        self.deliver, self.event_time = deliver, event_time
        from .metrics import Lateness, TimedClock

        self.lateness = Lateness()  # how late timers fire (/metrics)
        self.clock = TimedClock(clock or SystemClock(), self.lateness)
        self.reloader: Any = None  # an engine.daemon.reload.Reloader: hot reload (serve sets it)
        self.environ = environ
        self.counts = counts or Counts()
        self.wake = threading.Event()
        self.stopping = threading.Event()
        self.opened = threading.Event()  # the store is open (or failed to open: see `error`)
        self.error: BaseException | None = None
        self.store_open = False
        self.heartbeat = 0.0  # time.monotonic() of the last round
        self.processed = 0
        self._thread: threading.Thread | None = None
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], Future]] = queue.SimpleQueue()
        # the processor drops a message whose flag is False (a forgotten user's)
        self.keep: Callable[[Sequence[Any]], list[bool]] = lambda messages: [True] * len(messages)
        self.deliveries: Any = None  # the engine.daemon.deliveries.loop.DeliveryLoop, started by start()
        self.partitions: Any = None  # PostgreSQL: this worker's leases (engine.daemon.partitions.Partitions)
        self.listener: Any = None  # PostgreSQL: LISTEN for other workers' ingest commits
        self._file_lock: Any = None  # SQLite: hold_alone's lock, held while the process lives
        self._next_heartbeat = 0.0
        self._caught_up = True  # False once partitions were taken: their missed schedules fire
        self.housekeeping: Any = None  # engine.daemon.housekeeping.Housekeeping, started by start()
        self.training: Any = None  # engine.daemon.training.Training, when the project predicts

    def submit(self, fn: Callable[[], Any]) -> Future:
        """Run `fn` on the worker thread (the one that owns the store), between rounds; its result
        or exception comes back in the future. Thread-safe; wakes the worker."""
        future: Future = Future()
        if not self.running:
            future.set_exception(RuntimeError("the worker is not running"))
            return future
        self._jobs.put((fn, future))
        self.wake.set()
        return future

    async def call(self, fn: Callable[[], Any], timeout: float = REQUEST_TIMEOUT) -> Any:
        """`submit`, awaited from the HTTP event loop: the routes' one way to read or write the store
        (the admin API, the pauses, the console, the delivery feedback). A worker that does not take
        the job within `timeout` seconds is an asyncio.TimeoutError."""
        return await asyncio.wait_for(asyncio.wrap_future(self.submit(fn)), timeout)

    def _run_jobs(self) -> None:
        while True:
            try:
                fn, future = self._jobs.get_nowait()
            except queue.Empty:
                return
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                future.set_exception(exc)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Open the store (creating its tables) on the worker thread, then start the deliveries."""
        from .deliveries.loop import DeliveryLoop

        self._thread = threading.Thread(target=self._main, name="journeys-worker", daemon=True)
        self._thread.start()
        self.opened.wait()
        if self.error is not None:
            raise self.error
        from .housekeeping import Housekeeping

        self.housekeeping = Housekeeping(self.submit, self._upkeep(), transient=transient)  # a lock: retried
        self.housekeeping.start()
        if self.program.features_on and not self.event_time:
            from .training import Training

            self.training = Training(self, transient=transient)
            self.training.start()
        if not self.deliver:
            return
        if self.config.serve.deliveries == "process" and isinstance(self.clock.clock, SystemClock):
            from .deliveries.process import DeliveryProcess

            self.deliveries = DeliveryProcess(self.root, self.config, self.path, environ=self.environ)
        else:  # a virtual clock cannot cross to another process
            self.deliveries = DeliveryLoop(self.root, self.config, self.path, self.clock, environ=self.environ)
        try:
            self.deliveries.start()
        except BaseException:
            self.stop()
            raise
        from .deliveries.dispatch import lease_seconds

        # from now on new entries are written leased to these deliveries and handed over after
        # each commit (OutboxSink.handoff): no claim transaction on the way to the provider
        self.outbox_sink.handoff(lease_seconds(self.environ or None), self.clock.now)

    def stop(self, timeout: float | None = 60) -> None:
        """The processor finishes its transaction first, then the deliveries flush their batches."""
        if self.housekeeping is not None:
            self.housekeeping.stop()
        if self.training is not None:
            self.training.stop()
        self.stopping.set()
        self.wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        if self.deliveries is not None:
            self.deliveries.stop(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self.stopping.is_set()

    def _main(self) -> None:
        try:
            self._open()
        except BaseException as exc:  # noqa: BLE001 - reported by start()
            self._let_go_of_the_file()
            self.error = exc
            self.opened.set()
            return
        self.store_open = True
        self.opened.set()
        try:
            self._loop()
        except BaseException:  # noqa: BLE001
            log.exception("the worker stopped on an error")
            raise
        finally:
            self._run_jobs()  # jobs submitted while stopping still get an answer
            self._close_cluster()
            self.store.close()
            self.store_open = False
            self._let_go_of_the_file()
            if self.partitions is not None:
                from .read_pool import close_all

                close_all()  # the HTTP threads' read connections (/readyz, /metrics)

    def _let_go_of_the_file(self) -> None:
        """SQLite: hold_alone's lock goes; the next daemon on this file may start."""
        if self._file_lock is not None:
            self._file_lock.close()
            self._file_lock = None

    def _open(self) -> None:
        from ..runtime.loop import Engine
        from ..runtime.sinks import FanOut
        from ..store.open import open_store
        from ..store.urls import is_postgres
        from .deliveries.dispatch import OutboxSink, Routes

        if not is_postgres(self.path) and self.path != ":memory:":
            self._file_lock = hold_alone(self.path)
        store = self.store = open_store(self.path)
        try:
            with store.transaction():
                if is_postgres(self.path):
                    self._open_cluster(store)
                else:
                    from ..store.inbox import Inbox
                    from ..store.outbox import SqliteOutbox

                    self.inbox = Inbox(store.conn)
                    self.outbox = SqliteOutbox(store.conn)
                from .api import event_filter
                self.keep = event_filter(store.conn)  # drops events of forgotten users
                from .admin.pause_store import create as create_pauses
                create_pauses(store.conn)  # SQLite: the emergency stop's tables, before the deliveries read them

            def unroutable(action: Action, why: str) -> None:
                log.warning("action %s (%s %s) not delivered: %s", action.id, action.kind, action.target, why)
                self.counts.add("action.unroutable")

            # on PostgreSQL a transaction's outbox entries go in one statement at its commit
            self.outbox_sink = OutboxSink(self.outbox, Routes.from_config(self.config), unroutable,
                                          defer=store.defer if is_postgres(self.path) else None)
            from .trail import Trail
            self.trail = Trail(store, self.config.serve.trail_days)  # each user's timeline, for the admin API
            # the models train inline on the events' clock (`journeys replay`), else on the scheduler's
            # thread (engine.daemon.training.Training)
            self.engine = Engine(self.program, store, self.clock, FanOut(self.outbox_sink, self.counts, self.trail),
                                 train_inline=self.event_time)
            from .training import log_training

            self.engine.on_trained = log_training  # the daemon's sinks are for users' effects
            if self.program.features_on and not self.event_time:
                from .training import load_models

                load_models(self)  # the latest version kept: scores at once, before any training
        except BaseException:
            self._close_cluster()
            store.close()
            raise

    def _open_cluster(self, store: Any) -> None:
        """PostgreSQL: the shared inbox, this worker's partition leases, and a listener that wakes
        the worker when any worker's ingest commits (engine.daemon.partitions, engine.store.pg_inbox)."""
        from ..store.pg_inbox import Listener, PostgresInbox
        from ..store.pg_outbox import PostgresOutbox
        from .partitions import Partitions

        self.inbox = PostgresInbox(store.conn, store.schema)
        self.outbox = PostgresOutbox(store.conn)
        self.partitions = Partitions(store.conn, ttl=float((self.environ or os.environ).get(
            "JOURNEYS_LEASE_TTL", PARTITION_TTL)))
        store.parts = frozenset()  # nothing is ours until the first heartbeat
        self.listener = Listener(self.path, self.wake, lambda: self.partitions.owned)

    def _close_cluster(self) -> None:
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        if self.partitions is not None and self.stopping.is_set():
            try:
                self.partitions.leave()  # a clean stop hands the partitions over at once
            except Exception:  # noqa: BLE001 - they expire anyway
                log.exception("giving the partitions back failed; they expire in %.0f s", self.partitions.ttl)

    def retry_dead(self, entry_id: str) -> bool:
        """An operator's retry of a dead or failed outbox entry (on the worker thread)."""
        from .deliveries.dispatch import retry_dead

        with self.store.transaction():
            done = retry_dead(self.outbox, entry_id, self.clock.now())
        if done and self.deliveries is not None:
            self.deliveries.poke()
        return done

    def _upkeep(self) -> list[tuple[str, float, Callable[[], Any]]]:
        """The housekeeping jobs (engine.daemon.housekeeping), each run on this worker's thread; True
        from one means it stopped at a chunk with more to delete."""
        from ..store import retention
        from .erasure import scrub

        days = retention.policy(self.config)

        def inbox() -> bool:
            return self.inbox.prune() >= PRUNE_CHUNK

        def trail() -> bool:
            self.trail.prune(self.clock.now())
            return False

        def scrub_removals() -> bool:
            scrub(self.store.conn)
            return False

        def retain() -> bool:
            with self.store.transaction():
                deleted = retention.prune(self.store.conn, days, self.clock.now())
            if any(deleted.values()):
                log.info("retention: deleted %s", ", ".join(f"{n} {t}" for t, n in deleted.items() if n))
            return retention.more(deleted.values())

        return [("inbox", PRUNE_EVERY, inbox), ("trail", PRUNE_EVERY, trail),
                ("scrub", SCRUB_EVERY, scrub_removals), ("retention", RETAIN_EVERY, retain)]

    # ------------------------------------------------------------------ the loop

    def _loop(self) -> None:
        while not self.stopping.is_set():
            self.heartbeat = time.monotonic()
            self.wake.clear()  # before looking: a commit from now on wakes the wait below
            self._guard("reload", self._reload)
            self._run_jobs()
            more = self.round()
            if self.deliveries is not None:
                # the entries this iteration's transactions wrote leased (OutboxSink.handoff); the
                # loop reads each back, so one whose transaction rolled back is skipped
                fresh = self.outbox_sink.take_fresh()
                if fresh:
                    self.deliveries.hand(fresh)
                self.deliveries.poke()  # after the commits: new outbox entries are visible to it
            if more or self.stopping.is_set():
                continue
            delay = min(self._until_next(), MAX_IDLE)
            if delay > 0:
                self.wake.wait(delay)

    def _reload(self) -> None:
        """Between transactions: a new program after SIGHUP or a changed project file (engine.daemon.reload)."""
        if self.reloader is None or not self.reloader.due():
            return
        from .reload import swap

        program = self.reloader.reload(self.program)
        if program is None:
            return
        swap(self.engine, program)
        self.program = program
        config = self.reloader.config
        if config is not None and config != self.config:  # journeys.toml changed: routes and connectors
            from .deliveries.dispatch import Routes

            self.config = config
            self.outbox_sink.routes = Routes.from_config(config)
            if self.deliveries is not None:
                self.deliveries.reconfigure(config)

    def _guard(self, what: str, run: Callable[[], Any]) -> Any:
        """`run()`'s result, or None when it failed (logged; the loop goes on)."""
        try:
            return run()
        except Exception:  # noqa: BLE001 - the loop goes on; the next round retries
            log.exception("%s failed", what)
            return None

    def round(self) -> bool:
        """Up to TIMER_BATCH timers due, then up to BATCH inbox messages, each in a transaction.
        True when either stopped at its limit (there may be more right away)."""
        if self.partitions is not None and time.monotonic() >= self._next_heartbeat:
            self._guard("partitions", self._heartbeat)
        engine = self.engine

        catching_up = not self._caught_up

        def timers() -> bool:
            self._fence()
            if catching_up:
                engine.catch_up(self.clock.now() - timedelta(seconds=CATCH_UP_LEASES * self.partitions.ttl))
            return engine.run_due(self.clock.now(), limit=TIMER_BATCH)

        if self.partitions is not None:  # the timers of partitions taken since the last fence count too
            self.store.parts = self.partitions.owned
        more_timers = None
        if catching_up or engine.has_due(self.clock.now()):
            more_timers = self._guard("timers", lambda: self._in_transaction(timers))
            if catching_up and more_timers is not None:  # committed (a rollback catches up next round)
                self._caught_up = True
        parts = self.partitions.owned if self.partitions is not None else None
        rows = self.inbox.next_batch(parts, BATCH)
        if rows:
            self._process(rows)
        return len(rows) == BATCH or bool(more_timers)

    def _heartbeat(self) -> None:
        self._next_heartbeat = time.monotonic() + self.partitions.ttl / 5
        before = self.partitions.owned
        owned = self.partitions.heartbeat()
        if owned != before:
            log.warning("partitions: %d held (%+d)", len(owned), len(owned) - len(before))
            self.wake.set()  # new partitions may have messages waiting
        if owned - before and self.engine.program.scheduled:
            self._caught_up = False  # ... and scheduled entries their last owner did not fire

    def _fence(self) -> frozenset[int] | None:
        """Inside a transaction: the partitions still ours, held against a takeover till it ends."""
        if self.partitions is None:
            return None
        parts = self.partitions.fence()
        self.store.parts = parts
        return parts

    def _in_transaction(self, run: Callable[[], Any]) -> Any:
        """One transaction; if it rolls back, the engine's plan of scheduled entries is put back
        as it was, so an entry taken out of it in the failed transaction fires on the retry."""
        engine = self.engine
        plan = (list(engine._schedules), set(engine._zones_scheduled), engine._started)
        try:
            with self.store.transaction():
                return run()
        except BaseException:
            engine._schedules, engine._zones_scheduled, engine._started = plan
            raise

    def _process(self, rows: list[tuple[int, bytes]]) -> None:
        from ..runtime.loop import moments
        from ..store.inbox import message_from_json

        engine, clock, keep, event_time = self.engine, self.clock, self.keep, self.event_time

        prefetch = getattr(self.store, "prefetch", None)

        def run() -> None:
            parts = self._fence()
            # a row whose partition was taken over meanwhile is left for its new owner
            mine = [row for row in rows if parts is None or row[2] in parts]
            messages = [message_from_json(row[1]) for row in mine]
            if prefetch is not None:
                now = clock.now()
                prefetch(messages, moments(now, (msg.timestamp for msg in messages)) if event_time
                         else [now] * len(messages))
            for msg, kept in zip(messages, keep(messages)):
                at = msg.timestamp if event_time else clock.now()
                if kept:
                    engine.take(msg, at)
                else:
                    engine.run_due(at)
            self.inbox.finish(mine)

        try:
            self._in_transaction(run)
        except Exception as exc:  # noqa: BLE001
            if transient(exc):  # a deadlock, a lock timeout, a lost connection: nothing is done, retried
                log.warning("inbox batch rolled back, retried next round: %s: %s", type(exc).__name__, exc)
                self.counts.add("inbox.retried")
                time.sleep(0.05)
                return
            if len(rows) > 1:
                for row in rows:
                    self._process([row])
                return
            seq, raw = rows[0][0], rows[0][1]
            error = f"{type(exc).__name__}: {exc}"
            log.error("inbox message %d set aside: %s", seq, error, exc_info=exc)
            self.counts.add("inbox.failed")
            # kept with its error for an operator: moved past, never lost
            self._in_transaction(lambda: self.inbox.set_aside(seq, raw, error, clock.now()))
        self.processed += len(rows)
        self.counts.add("inbox.processed", len(rows))

    def _until_next(self) -> float:
        """Seconds until the earliest timer or scheduled entry (MAX_IDLE if none)."""
        now = self.clock.now()
        due: list[datetime] = []
        timer = self.store.next_timer(_FAR)
        if timer is not None:
            due.append(timer[0])
        schedules = getattr(self.engine, "_schedules", None)
        if schedules:
            due.append(schedules[0][0])
        if not due:
            return MAX_IDLE
        return max(0.0, (min(due) - now).total_seconds() + 0.001)


def _signal_ingest(app: Any, wake: threading.Event, owned: Callable[[], frozenset[int]] | None = None) -> None:
    """Make the ingest's group commit set `wake` after each commit: the worker wakes the moment
    events are durable, instead of polling the inbox. `owned()` (a worker of a cluster): only when
    it holds one of the partitions written; the owners of the others hear the commit's NOTIFY
    (engine.store.pg_inbox.Listener)."""
    commit = app.state.group_commit
    opener = commit._open

    def open_and_signal() -> Any:
        inbox = opener()
        append = inbox.append_rows

        def append_rows(rows: Sequence[tuple[str, bytes]]) -> Any:
            written = append(rows)
            if owned is None or not isinstance(written, frozenset) or not written.isdisjoint(owned()):
                wake.set()
            return written

        inbox.append_rows = append_rows
        return inbox

    commit._open = open_and_signal


def inbox_position(path: str) -> tuple[int, int]:
    """(last seq appended, processed) from a connection of its own (read-only for SQLite). On
    PostgreSQL, whose inbox deletes what is processed, (rows waiting, 0): the cluster's backlog."""
    from ..store.urls import is_postgres

    if is_postgres(path):
        from .read_pool import pool

        with pool(path).connection() as pg:
            return pg.execute("SELECT count(*) FROM inbox").fetchone()[0], 0
    conn = sqlite3.connect(Path(path).as_uri() + "?mode=ro", uri=True, timeout=2)
    try:
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'inbox'").fetchone()
        last = 0 if row is None else row[0]
        processed = conn.execute("SELECT processed FROM inbox_cursor").fetchone()[0]
        return last, processed
    finally:
        conn.close()


def add_health(app: Any, worker: Worker, auth: Any) -> None:
    """GET /healthz: the process answers. GET /readyz: `{"ready": true}` when the store is open,
    both loops run, the processor finished a round in the last `STALLED_AFTER` seconds (a wedged
    worker takes the instance out of the load balancer) and the inbox can be read; 503 and
    `{"ready": false}` otherwise. Public, and nothing more: a load balancer needs the status, and a
    stranger must not learn the journeys' names, the counts or a reload's errors. GET
    /admin/readyz, behind the admin token (`auth`, an AdminAuth): the same decision with why, the
    inbox lag, the counts, the journeys' versions and the last reload's errors."""
    from .admin.schemas import DaemonError, Health, Readiness, Ready

    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    def readiness() -> tuple[bool, dict[str, Any]]:
        mono = time.monotonic()
        deliveries = worker.deliveries
        running = worker.running and deliveries is not None and deliveries.running
        age = mono - worker.heartbeat
        body: dict[str, Any] = {"store": "open" if worker.store_open else "closed",
                                "loops": "running" if running else "stopped",
                                "heartbeat_age_s": round(age, 3),
                                "delivery_heartbeat_age_s": round(mono - deliveries.heartbeat, 3) if deliveries else None}
        ready = worker.store_open and running
        if age > STALLED_AFTER:
            body["stalled"] = f"the processor has not finished a round for {age:.0f} s"
            ready = False
        try:
            last, processed = inbox_position(worker.path)
            body.update(last_seq=last, processed=processed, inbox_lag=last - processed)
        except Exception as exc:  # noqa: BLE001 - sqlite3 or psycopg: the store cannot be read
            body["inbox_error"] = str(exc)
            ready = False
        if worker.partitions is not None:
            body["partitions"] = {"worker": worker.partitions.id, "held": len(worker.partitions.owned),
                                  "of": worker.partitions.total}
        body["counts"] = worker.counts.snapshot()
        from .reload import readyz_fields

        body.update(readyz_fields(worker, worker.reloader))
        body["ready"] = ready
        return ready, body

    def readyz() -> JSONResponse:
        ready, _ = readiness()
        return JSONResponse({"ready": ready}, status_code=200 if ready else 503)

    def admin_readyz(request: Request) -> Response:
        if (refused := auth.refusal(request)) is not None:
            return refused
        ready, body = readiness()
        return JSONResponse(body, status_code=200 if ready else 503)

    app.add_api_route("/healthz", healthz, methods=["GET"], tags=["health"], summary="The process answers",
                      responses={200: {"model": Health, "description": "Always, while the process serves."}})
    app.add_api_route("/readyz", readyz, methods=["GET"], tags=["health"], summary="Ready for traffic",
                      responses={200: {"model": Ready, "description": "Ready."},
                                 503: {"model": Ready, "description": "Not ready: take it out of the load balancer."}})
    app.add_api_route("/admin/readyz", admin_readyz, methods=["GET"], tags=["admin"],
                      summary="Why the daemon is (not) ready, and what it runs",
                      responses={200: {"model": Readiness, "description": "Ready."},
                                 503: {"model": Readiness, "description": "Not ready, and why."},
                                 401: {"model": DaemonError, "description": "No admin token, or a wrong one."}})


def _admin_server(config: Any) -> Any:
    """uvicorn's Server for the admin listener, leaving the signals to the public server's: it is
    stopped when that one stops (`serve`); two servers capturing SIGTERM in turn would each
    restore the other's handler and raise the signal again."""
    import contextlib

    import uvicorn

    class AdminServer(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Any:
            yield

    return AdminServer(config)


def banner(worker: Any, address: str, path: str) -> None:
    """The startup line, at INFO: where the daemon listens, its store (without a password) and the
    journeys it loaded; a JSON log has them as fields of their own too (engine.daemon.logs)."""
    from ..store.urls import redact

    store, names = redact(path), sorted(worker.program.journeys)
    log.info("journeys serve: %s, store %s, %d journeys: %s", address, store, len(names), ", ".join(names) or "none",
             extra={"address": address, "store": store, "journeys": names})


def build_app(worker: Worker, write_keys: Iterable[str]) -> Any:
    """The daemon's ASGI app as `journeys serve` serves it, for a started worker: the ingest, the
    health checks, /metrics, the unsubscribe, profile and admin routes, and /openapi.json behind
    the admin token. Returned wrapped by the metrics' request counter; its `.app` is the FastAPI
    app, whose routes tests/test_operator_surface.py walks (engine.daemon.admin.surface)."""
    from .admin.auth import AdminAuth
    from .admin.console import add_console_routes
    from .admin.openapi import add_openapi
    from .admin.pauses import add_pause_routes
    from .api import add_routes
    from .deliveries.webhooks import add_feedback_routes
    from .ingest import create_app
    from .metrics import add_metrics

    auth = AdminAuth(worker.environ if worker.environ is not None else os.environ)
    app = create_app(worker.config, worker.path, write_keys, openapi_url=None)
    _signal_ingest(app, worker.wake, None if worker.partitions is None else (lambda: worker.partitions.owned))
    add_health(app, worker, auth)
    served = add_metrics(app, worker, worker.reloader, auth)  # the app, its requests counted for /metrics
    add_routes(app, worker)
    add_feedback_routes(app, worker)  # bounces and complaints: public paths with their own credentials
    add_pause_routes(app, worker)
    add_console_routes(app, worker)
    add_openapi(app, auth)
    return served


def listen(host: str, port: int) -> Any:
    """A listening TCP socket (IPv6 when `host` is an IPv6 address), bound before serving: a port
    in use is an OSError here, said in one line, not uvicorn's exit from inside its loop."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=2048)


def serve(root: Path, config: Any, program: Any, path: str, write_keys: Iterable[str], *,
          host: str = "127.0.0.1", port: int = 8080, environ: dict[str, str] | None = None,
          log_level: str = "warning", admin_host: str = "127.0.0.1", admin_port: int | None = None) -> int:
    """Run the daemon until SIGTERM or SIGINT; returns the exit code (0 after a clean stop).

    `admin_port`: the operator's routes (engine.daemon.admin.surface) on a listener of their own at
    `admin_host:admin_port`, still behind the admin token, and not on the public port (a 404
    there). It is a second uvicorn server on the same event loop, serving the same app (its
    lifespan, the ingest's group commit, is the public server's): the same worker, the same
    counts."""
    import asyncio

    import uvicorn

    from .admin.surface import Only
    from .reload import Reloader

    worker = Worker(root, config, program, path, environ=environ)
    worker.reloader = Reloader(root)
    worker.start()  # opens the store (and creates its tables) before the ingest opens the inbox
    try:
        served = build_app(worker, write_keys)
        admin: Any = None
        if admin_port is not None:
            try:
                admin_socket = listen(admin_host, admin_port)
            except OSError as exc:
                log.error("--admin-port: cannot listen on %s:%d: %s", admin_host, admin_port, exc)
                return 1
            admin = _admin_server(uvicorn.Config(Only(served, operator=True), log_level=log_level, log_config=None,
                                                lifespan="off", timeout_graceful_shutdown=10))
            served = Only(served, operator=False)
        server = uvicorn.Server(uvicorn.Config(served, host=host, port=port, log_level=log_level, log_config=None,
                                               lifespan="on", timeout_graceful_shutdown=10))  # our log format

        def stop(signum: int, frame: Any) -> None:
            # uvicorn handles the signal while it serves and raises it again after its shutdown:
            # this handler, restored by then, makes that a clean stop instead of a kill.
            server.should_exit = True

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)

        def reload(signum: int, frame: Any) -> None:
            worker.reloader.request()  # the worker reloads between transactions
            worker.wake.set()

        signal.signal(signal.SIGHUP, reload)
        address = f"http://{host}:{port}"
        if admin is not None:
            address += f" (operator routes on http://{admin_host}:{admin_port})"
        banner(worker, address, path)
        if admin is None:
            server.run()
        else:
            async def both() -> None:
                operator = asyncio.create_task(admin.serve(sockets=[admin_socket]))
                try:
                    await server.serve()
                finally:
                    admin.should_exit = True
                    await operator

            with asyncio.Runner(loop_factory=server.config.get_loop_factory()) as runner:
                runner.run(both())
        if not server.started:
            return 1  # could not bind, or the lifespan failed (uvicorn logged why)
        return 0
    finally:
        worker.stop()
