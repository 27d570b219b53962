"""The daemon: the ingest (HTTP) and the engine's loops in one process (`journeys serve`).

    uvicorn (main thread, asyncio)          the worker thread (owns the store's connection)
    ─────────────────────────────           ────────────────────────────────────────────────
    POST /v1/...  → group commit → inbox ─► wake ─► timers due    → engine.run_due
    GET /healthz, /readyz                          inbox messages → engine.handle + inbox.mark
                                                   outbox due     → Dispatcher.run_due / flush
                                                   sleep until the next timer, outbox retry or
                                                   flush, or until the ingest commits

One worker thread runs the processor, the timers and the dispatcher, in turn: a SQLite connection
belongs to one thread, and serialising them means a timer and an event of the same user never
race. The ingest writes the inbox on its own connection (its group-commit thread).

Processing: messages are taken in inbox order after the cursor, up to `BATCH` at a time, and
handled in one `store.transaction()` with `inbox.mark(last seq)` (the inbox is opened on the
store's connection): states, actions, outbox entries and the cursor commit together, so a crash
neither loses nor repeats a message. Before each message, timers due by now fire. A group that
fails is retried one message at a time; a message that fails on its own (an engine bug, a row
that no longer parses) is logged and set aside with its error in the table `inbox_failed`, so one
bad message cannot stop the daemon and nothing accepted is lost.

Wake-ups: the ingest's inbox is wrapped so that each committed group sets a `threading.Event`
the worker waits on; the worker otherwise sleeps until the earliest of its deadlines: the store's
next timer, the next scheduled entry, the next outbox retry, the next batch flush, at most
`MAX_IDLE` seconds (a safety net, not the way work is found).

Shutdown (SIGTERM, SIGINT): uvicorn stops accepting and finishes the requests in flight (their
events are committed before they are answered), then the worker finishes its current
transaction and closes the store; the process exits 0.
"""

from __future__ import annotations

import logging
import queue
import signal
import sqlite3
import threading
import time
from collections import Counter
from concurrent.futures import Future
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from .clock import Clock, SystemClock
from .effects import Action, Effect, Received

log = logging.getLogger("journeys.daemon")

BATCH = 200  # inbox messages per transaction
MAX_IDLE = 1.0  # seconds the worker sleeps at most with nothing due
FLUSH_EVERY = 5.0  # seconds between flushes of batching connectors (audiences)
PRUNE_EVERY = 30.0  # seconds between deletions of processed inbox rows
_FAR = datetime(9999, 1, 1, tzinfo=timezone.utc)


class Counts:
    """The metrics sink: counts effects by kind (messages received, actions by kind and outcome).
    Written by the worker, read by /readyz: a lock keeps the snapshot whole."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()

    def emit(self, effects: Sequence[Effect]) -> None:
        with self._lock:
            for e in effects:
                if isinstance(e, Received):
                    self._counts[f"received.{e.kind}"] += 1
                elif isinstance(e, Action):
                    self._counts[f"action.{e.kind}.{e.outcome}"] += 1

    def add(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] += n

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(sorted(self._counts.items()))


def store_file(url: str, base: Path | None = None) -> str:
    """The SQLite file of a store URL or path; a relative one is relative to `base` (the project)."""
    from .sqlite_store import sqlite_path

    if url.startswith(("postgres://", "postgresql://")):
        raise ValueError(f"{url}: only SQLite stores are supported for now (sqlite:///path.db)")
    path = sqlite_path(url)
    if path == ":memory:":
        raise ValueError("the daemon's store must be a file (sqlite:///path.db), not :memory:")
    p = Path(path)
    if not p.is_absolute() and base is not None:
        p = base / p
    return str(p.resolve())


class Worker:
    """The processor, the timers and the dispatcher on one thread that owns the store."""

    def __init__(self, root: Path, config: Any, program: Any, path: str, *, clock: Clock | None = None,
                 environ: dict[str, str] | None = None, counts: Counts | None = None):
        self.root, self.config, self.program, self.path = root, config, program, path
        from .reload import Lateness, TimedClock

        self.lateness = Lateness()  # how late timers fire (/metrics)
        self.clock = TimedClock(clock or SystemClock(), self.lateness)
        self.reloader: Any = None  # an engine.reload.Reloader: hot reload (serve sets it)
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
        self.keep: Callable[[Any], bool] = lambda msg: True  # the processor drops a message if False

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
        self._thread = threading.Thread(target=self._main, name="journeys-worker", daemon=True)
        self._thread.start()
        self.opened.wait()
        if self.error is not None:
            raise self.error

    def stop(self, timeout: float | None = 60) -> None:
        self.stopping.set()
        self.wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self.stopping.is_set()

    def _main(self) -> None:
        try:
            self._open()
        except BaseException as exc:  # noqa: BLE001 - reported by start()
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
            if self.dispatcher is not None:
                self.dispatcher.close()
            self.store.close()
            self.store_open = False

    def _open(self) -> None:
        from connectors.registry import build, delivery_limits

        from .dispatch import Dispatcher, OutboxSink, Routes, TokenBucket, forget_address
        from .inbox import Inbox
        from .outbox import SqliteOutbox
        from .runtime import Engine
        from .sinks import FanOut
        from .sqlite_store import SqliteStore

        self.dispatcher = None
        store = self.store = SqliteStore(self.path)
        try:
            with store.transaction():
                self.inbox = Inbox(store.conn)
                self.outbox = SqliteOutbox(store.conn)
                from .daemon_api import event_filter
                self.keep = event_filter(store.conn)  # drops events of forgotten users
            routes = Routes.from_config(self.config)

            def unroutable(action: Action, why: str) -> None:
                log.warning("action %s (%s %s) not delivered: %s", action.id, action.kind, action.target, why)
                self.counts.add("action.unroutable")

            from .trail import Trail
            self.trail = Trail(store, self.config.serve.trail_days)  # each user's timeline, for the admin API
            self.engine = Engine(self.program, store, self.clock,
                                 FanOut(OutboxSink(self.outbox, routes, unroutable), self.counts, self.trail))
            buckets, concurrency = delivery_limits(self.config)
            connectors = build(self.config, self.root, self.environ)

            def profile(uid: str) -> dict[str, Any]:
                state = store.load(store.resolve(uid) or uid)
                return dict(state.traits) if state is not None else {}

            def on_stale(uid: str, connector: str, dead: str) -> None:
                state = store.load(store.resolve(uid) or uid)
                if state is None:
                    return
                updates = forget_address(state.traits, dead)
                if updates:
                    with store.transaction():
                        self.engine.update_profile(uid, updates, f"{connector}: {dead} is no longer valid")

            self.dispatcher = Dispatcher(
                self.outbox, connectors, profiles=profile, on_stale=on_stale,
                limits={n: TokenBucket(rate, burst) for n, (rate, burst) in buckets.items()},
                concurrency=concurrency, workers=max(4, sum(concurrency.values()) if concurrency else 4))
        except BaseException:
            store.close()
            raise

    # ------------------------------------------------------------------ the loop

    def _loop(self) -> None:
        next_flush = next_prune = time.monotonic()
        while not self.stopping.is_set():
            self.heartbeat = time.monotonic()
            self.wake.clear()  # before looking: a commit from now on wakes the wait below
            self._guard("reload", self._reload)
            self._run_jobs()
            more = self.round()
            mono = time.monotonic()
            if mono >= next_flush:
                self._guard("flush", lambda: self.dispatcher.flush(self.clock.now()))
                next_flush = mono + FLUSH_EVERY
            if mono >= next_prune:
                self._guard("prune", self.inbox.prune)
                self._guard("trail", lambda: self.trail.prune(self.clock.now()))
                next_prune = mono + PRUNE_EVERY
            if more or self.stopping.is_set():
                continue
            delay = min(self._until_next(), next_flush - time.monotonic(), MAX_IDLE)
            if delay > 0:
                self.wake.wait(delay)

    def _reload(self) -> None:
        """Between transactions: a new program after SIGHUP or a changed project file (engine.reload)."""
        if self.reloader is None or not self.reloader.due():
            return
        from .reload import swap

        program = self.reloader.reload(self.program)
        if program is not None:
            swap(self.engine, program)
            self.program = program

    def _guard(self, what: str, run: Callable[[], Any]) -> None:
        try:
            run()
        except Exception:  # noqa: BLE001 - the loop goes on; the next round retries
            log.exception("%s failed", what)

    def round(self) -> bool:
        """Timers due, then up to BATCH inbox messages, then the outbox entries due. True when the
        inbox had a full batch (there may be more right away)."""
        store, engine = self.store, self.engine
        self._guard("timers", lambda: self._in_transaction(lambda: engine.run_due(self.clock.now())))
        rows = store.conn.execute("SELECT seq, raw FROM inbox WHERE seq > ? ORDER BY seq LIMIT ?",
                                  (self.inbox.processed(), BATCH)).fetchall()
        if rows:
            self._process(rows)
        if not self.stopping.is_set():
            self._guard("delivery", lambda: self.dispatcher.run_due(self.clock.now()))
        return len(rows) == BATCH

    def _in_transaction(self, run: Callable[[], Any]) -> None:
        with self.store.transaction():
            run()

    def _process(self, rows: list[tuple[int, bytes]]) -> None:
        from .inbox import message_from_json

        engine, clock, keep = self.engine, self.clock, self.keep

        def run() -> None:
            for _, raw in rows:
                msg = message_from_json(raw)
                if keep(msg):
                    engine.take(msg, clock.now())
                else:
                    engine.run_due(clock.now())
            self.inbox.mark(rows[-1][0])

        try:
            self._in_transaction(run)
        except Exception as exc:  # noqa: BLE001
            if len(rows) > 1:
                for row in rows:
                    self._process([row])
                return
            seq, raw = rows[0]
            error = f"{type(exc).__name__}: {exc}"
            log.error("inbox message %d set aside: %s", seq, error, exc_info=exc)
            self.counts.add("inbox.failed")

            def set_aside() -> None:  # kept with its error for an operator: moved past, never lost
                self.store.conn.execute(
                    "CREATE TABLE IF NOT EXISTS inbox_failed (seq INTEGER PRIMARY KEY, raw BLOB, error TEXT, at TEXT)")
                self.store.conn.execute("INSERT OR REPLACE INTO inbox_failed VALUES (?, ?, ?, ?)",
                                        (seq, raw, error, clock.now().isoformat()))
                self.inbox.mark(seq)

            self._in_transaction(set_aside)
        self.processed += len(rows)
        self.counts.add("inbox.processed", len(rows))

    def _until_next(self) -> float:
        """Seconds until the earliest timer, scheduled entry or outbox retry (MAX_IDLE if none)."""
        now = self.clock.now()
        due: list[datetime] = []
        timer = self.store.next_timer(_FAR)
        if timer is not None:
            due.append(timer[0])
        schedules = getattr(self.engine, "_schedules", None)
        if schedules:
            due.append(schedules[0][0])
        row = self.store.conn.execute("SELECT min(next_at) FROM outbox WHERE state = 'pending'").fetchone()
        if row and row[0]:
            from .outbox import _from_t

            due.append(_from_t(row[0]))
        if not due:
            return MAX_IDLE
        return max(0.0, (min(due) - now).total_seconds() + 0.001)


def _signal_ingest(app: Any, wake: threading.Event) -> None:
    """Make the ingest's group commit set `wake` after each commit: the worker wakes the moment
    events are durable, instead of polling the inbox."""
    commit = app.state.group_commit
    opener = commit._open

    def open_and_signal() -> Any:
        inbox = opener()
        append = inbox.append_rows

        def append_rows(rows: Sequence[tuple[str, bytes]]) -> None:
            append(rows)
            wake.set()

        inbox.append_rows = append_rows
        return inbox

    commit._open = open_and_signal


def inbox_position(path: str) -> tuple[int, int]:
    """(last seq appended, processed) from a read-only connection of its own."""
    conn = sqlite3.connect(Path(path).as_uri() + "?mode=ro", uri=True, timeout=2)
    try:
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'inbox'").fetchone()
        last = 0 if row is None else row[0]
        processed = conn.execute("SELECT processed FROM inbox_cursor").fetchone()[0]
        return last, processed
    finally:
        conn.close()


def add_health(app: Any, worker: Worker) -> None:
    """GET /healthz: the process answers. GET /readyz: the store is open, the loops run, and how
    far the processor is behind the inbox (503 when not ready)."""
    from fastapi.responses import JSONResponse

    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    def readyz() -> JSONResponse:
        body: dict[str, Any] = {"store": "open" if worker.store_open else "closed",
                                "loops": "running" if worker.running else "stopped",
                                "heartbeat_age_s": round(time.monotonic() - worker.heartbeat, 3)}
        ready = worker.store_open and worker.running
        try:
            last, processed = inbox_position(worker.path)
            body.update(last_seq=last, processed=processed, inbox_lag=last - processed)
        except sqlite3.Error as exc:
            body["inbox_error"] = str(exc)
            ready = False
        body["counts"] = worker.counts.snapshot()
        from .reload import readyz_fields

        body.update(readyz_fields(worker, worker.reloader))
        body["ready"] = ready
        return JSONResponse(body, status_code=200 if ready else 503)

    app.add_api_route("/healthz", healthz, methods=["GET"], include_in_schema=False)
    app.add_api_route("/readyz", readyz, methods=["GET"], include_in_schema=False)


def serve(root: Path, config: Any, program: Any, path: str, write_keys: Iterable[str], *,
          host: str = "127.0.0.1", port: int = 8080, environ: dict[str, str] | None = None,
          log_level: str = "warning") -> int:
    """Run the daemon until SIGTERM or SIGINT; returns the exit code (0 after a clean stop)."""
    import uvicorn

    from .daemon_api import add_routes
    from .ingest import create_app
    from .reload import Reloader, add_metrics

    worker = Worker(root, config, program, path, environ=environ)
    worker.reloader = Reloader(root)
    worker.start()  # opens the store (and creates its tables) before the ingest opens the inbox
    try:
        app = create_app(config, path, write_keys)
        _signal_ingest(app, worker.wake)
        add_health(app, worker)
        add_metrics(app, worker, worker.reloader)
        add_routes(app, worker)
        server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level=log_level,
                                               lifespan="on", timeout_graceful_shutdown=10))

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
        log.warning("journeys serve: http://%s:%d, store %s", host, port, path)
        server.run()
        if not server.started:
            return 1  # could not bind, or the lifespan failed (uvicorn logged why)
        return 0
    finally:
        worker.stop()
