"""The daemon's deliveries in a process of their own (`[serve] deliveries = "process"`, the default).

Why a process: the engine, the ingest and the deliveries are Python threads sharing one
interpreter lock. Measured on the latency benchmark, the delivery loop and the connectors' HTTP
calls took about half of the daemon's CPU, so at a few hundred events a second the worker waited
for the lock behind the webhook calls and the latency's tail grew. In a child process the same
`engine.daemon.deliveries.loop.DeliveryLoop` runs on another core with its own store connection; nothing
about what is delivered changes (the outbox, its leases and its transactions are the same, and
`[serve] deliveries = "thread"` runs the very same loop in the daemon's process).

`DeliveryProcess` has the `DeliveryLoop` interface the worker uses (start, stop, running,
heartbeat, poke, hand, reconfigure) and speaks to the child over a pipe:

    daemon → child    b"p" (poke: commits to look at), ("hand", entry ids leased to it: start them),
                      ("config", ProjectConfig), ("stop", timeout)
    child → daemon    ("ready",) | ("error", exception), ("beat", seconds since the loop's last round,
                      loop alive), ("circuits", each connector's circuit, when it changed: for
                      /metrics), ("tally", the attempts made so far, by connector and outcome, when
                      they changed and once more before it stops: for /metrics), ("stopped",)

What the attempts report about recipients (a hard bounce, a dead push token) needs no message:
the child's dispatcher writes it into the inbox as events in the settle's transaction
(`engine.daemon.deliveries.feedback`), and the worker takes them from there as any event.

Failure: the child dies with the daemon (PR_SET_PDEATHSIG: after a kill -9 of the daemon no
orphan keeps delivering while the restarted daemon releases its leases); if the child dies alone,
the daemon logs it and starts a new one, whose start releases the dead one's leases (the entries
are attempted again with the same idempotency key), and /readyz says stalled meanwhile.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

log = logging.getLogger("journeys.daemon")

BEAT_EVERY = 0.5  # seconds between the child's heartbeats
RESTART_AFTER = 1.0  # seconds before a child that died alone is started again


class DeliveryProcess:
    def __init__(self, root: Path, config: Any, path: str, *, environ: dict[str, str] | None = None):
        self.root, self.config, self.path = root, config, path
        self.environ = environ
        self.heartbeat = 0.0  # time.monotonic() of the child's loop's last round, as last heard
        self._alive = False
        self._stopping = threading.Event()
        self._send_lock = threading.Lock()
        self._conn: Any = None
        self._process: Any = None
        self._reader: threading.Thread | None = None
        self._stopped = threading.Event()
        self._unsent: list[str] = []  # handed while no child ran (its successor's start released older leases)
        self._circuits: dict[str, dict[str, float]] = {}  # as the child last said
        # the attempts of the children that died (counters never go back) and the running child's,
        # as it last said: one tuple replaced whole by the reader, for the HTTP threads to read
        self._attempts: tuple[dict[Any, int], dict[Any, int]] = ({}, {})

    # ------------------------------------------------------------------ the worker's interface

    def start(self) -> None:
        """Start the child and wait until its loop runs; its error (a connector that cannot be
        built, a store that cannot be opened) is raised here, as the thread's would be."""
        self._spawn()
        self._reader = threading.Thread(target=self._read, name="journeys-delivery-pipe", daemon=True)
        self._reader.start()

    def stop(self, timeout: float | None = 60) -> None:
        """The child flushes its batches and waits for the attempts in flight, then exits."""
        self._stopping.set()
        if self._reader is None:  # it never started
            return
        self._send(("stop", timeout))
        self._stopped.wait(timeout)
        process = self._process
        if process is not None:
            process.join(5 if timeout is None else min(timeout, 5))
            if process.is_alive():
                log.error("the delivery process did not stop; killing it")
                process.kill()
                process.join()

    @property
    def running(self) -> bool:
        return self._alive and not self._stopping.is_set()

    def poke(self) -> None:
        self._send(None)

    def hand(self, ids: list[str]) -> None:
        with self._send_lock:
            if self._conn is None:  # between a dead child and its successor: kept for the new one
                self._unsent += ids
                return
        if not self._send(("hand", ids)):  # the child died before its reader noticed: the same
            with self._send_lock:
                self._unsent += ids

    def reconfigure(self, config: Any) -> None:
        self.config = config
        self._send(("config", config))

    def circuits(self) -> dict[str, dict[str, float]]:
        """Each connector's circuit, as the child last said (`DeliveryLoop.circuits`)."""
        return self._circuits

    def tally(self) -> dict[Any, int]:
        """The attempts since the daemon started, by connector and outcome (`DeliveryLoop.tally`):
        the child's last figures on top of those its dead predecessors last sent."""
        before, last = self._attempts
        out = Counter(before)
        out.update(last)
        return dict(out)

    # ------------------------------------------------------------------ the pipe

    def _send(self, message: Any) -> bool:
        """Whether the message reached the pipe (a child that has died refuses it)."""
        conn = self._conn
        if conn is None:
            return False
        try:
            with self._send_lock:
                if message is None:
                    conn.send_bytes(b"p")
                else:
                    conn.send(message)
        except (OSError, ValueError):  # the child is gone: the reader restarts it
            return False
        return True

    def _spawn(self) -> None:
        context = multiprocessing.get_context("spawn")  # never fork a process with threads running
        ours, theirs = context.Pipe()
        process = context.Process(target=child_main, name="journeys-delivery", daemon=False,
                                  args=(theirs, self.root, self.config, self.path, self.environ, os.getpid(),
                                        log_format()))
        process.start()
        theirs.close()
        try:
            first = ours.recv() if ours.poll(120) else ("error", RuntimeError("it did not start in 120 s"))
        except EOFError:
            first = ("error", RuntimeError(f"it exited with code {process.join(5) or process.exitcode}"))
        if first[0] != "ready":
            process.kill()
            process.join()
            ours.close()
            raise first[1]
        self._conn, self._process = ours, process
        self.heartbeat, self._alive = time.monotonic(), True

    def _read(self) -> None:
        """What the child says; a child that died alone is started again."""
        while True:
            try:
                message = self._conn.recv()
            except (EOFError, OSError):
                message = None
            if message is None or message[0] == "stopped":
                self._alive = False
                self._attempts = (self.tally(), {})  # a new child counts from 0
                if self._stopping.is_set():
                    self._stopped.set()
                    return
                code = self._process.exitcode if self._process is not None else None
                log.error("the delivery process died (exit code %s); starting a new one in %.0f s", code,
                          RESTART_AFTER)
                self._restart()
                continue
            kind = message[0]
            if kind == "beat":
                self.heartbeat = time.monotonic() - message[1]
                self._alive = message[2]
            elif kind == "circuits":
                self._circuits = message[1]
            elif kind == "tally":
                self._attempts = (self._attempts[0], message[1])

    def _restart(self) -> None:
        with self._send_lock:
            old = self._conn
            self._conn = None
        if old is not None:
            old.close()
        if self._process is not None:
            self._process.join(5)
        while not self._stopping.is_set():
            time.sleep(RESTART_AFTER)
            if self._stopping.is_set():
                break
            try:
                self._spawn()
                with self._send_lock:
                    unsent, self._unsent = self._unsent, []
                if unsent:
                    self.hand(unsent)
                return
            except Exception:  # noqa: BLE001 - tried again
                log.exception("the delivery process could not be started again")
        self._stopped.set()


def log_format() -> str:
    """The daemon's log format, for the child's lines to look the same."""
    for handler in logging.getLogger().handlers:
        if type(handler.formatter).__name__ == "JsonFormatter":
            return "json"
    return "text"


def _die_with_parent(parent: int) -> None:
    """Linux: the kernel kills this process when the daemon dies, even by SIGKILL."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the pipe's end stops the child instead
        pass
    if os.getppid() != parent:  # the daemon died before the line above
        os._exit(0)


def child_main(conn: Any, root: Path, config: Any, path: str, environ: dict[str, str] | None, parent: int,
               log_kind: str) -> None:
    """The child: the delivery loop, driven by the daemon's messages."""
    _die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the daemon decides when deliveries stop
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from ...runtime.clock import SystemClock
    from .loop import DeliveryLoop
    from ..logs import LogFormat, setup_logging

    setup_logging(LogFormat(log_kind))
    lock = threading.Lock()

    def send(message: Any) -> None:
        with lock:
            conn.send(message)

    loop = DeliveryLoop(root, config, path, SystemClock(), environ=environ)
    try:
        loop.start()
    except BaseException as exc:  # noqa: BLE001 - reported to the daemon, which fails to start
        try:
            send(("error", exc))  # its type too: a ConfigurationError is a usage error of `journeys serve`
        except Exception:  # noqa: BLE001 - an exception that does not pickle
            send(("error", RuntimeError(f"{type(exc).__name__}: {exc}")))
        return
    send(("ready",))
    next_beat = 0.0
    circuits: dict[str, dict[str, float]] = {}
    tally: dict[Any, int] = {}
    while True:
        now = time.monotonic()
        if now >= next_beat:
            send(("beat", max(0.0, now - loop.heartbeat), loop.running))
            next_beat = now + BEAT_EVERY
            view = loop.circuits()
            if view != circuits:
                circuits = view
                send(("circuits", circuits))
            now_tally = loop.tally()
            if now_tally != tally:
                tally = now_tally
                send(("tally", tally))
        if not conn.poll(max(0.0, next_beat - time.monotonic())):
            continue
        try:
            raw = conn.recv_bytes()
        except (EOFError, OSError):  # the daemon is gone
            loop.stop(10)
            return
        if raw == b"p":
            loop.poke()
            continue
        message = pickle.loads(raw)
        if message[0] == "hand":
            loop.hand(message[1])
        elif message[0] == "config":
            loop.reconfigure(message[1])
        elif message[0] == "stop":
            loop.stop(message[1])
            send(("tally", loop.tally()))  # the attempts settled while stopping
            send(("stopped",))
            return
