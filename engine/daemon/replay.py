"""`journeys replay`: the proof of the dry-run's promise, "this is what the daemon will do".

The daemon itself (`engine.daemon.worker.Worker` and the ingest app, not a copy) runs in this
process on a loopback port, with the dry-run's clock (each message at its own timestamp, on a
virtual clock) and without its delivery thread (the outbox fills; nothing is sent). The log goes
in through HTTP as Segment batches with a write key, like any sender's; once the inbox is drained,
timers due by `until` fire, as the dry-run fires them. The command line (engine.cli.replay) then
runs the dry-run on the same log with an `ActionLog` among its sinks and `compare`s the two action
logs: the same ids, times, users, steps, outcomes and reasons, or the differences are listed.

Memory stays bounded whatever the log's length (issue 21): the messages are taken from an
iterable (a `SortedLog` reads them from the files as they are sent), each side's actions stay on
disk (the daemon's in its store, the dry-run's in an `ActionLog`, a SQLite file), both are read
back in id order, and `compare` merges the two streams, keeping `SHOWN` differences of each side in
full and counting the rest.
"""

from __future__ import annotations

import secrets
import socket
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from itertools import chain, islice
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import orjson

from ..core.effects import Action, Effect

BATCH = 100  # events per HTTP request, the size Segment's libraries send
SHOWN = 10  # differences of each side kept in full; the others are only counted
RETRY_AFTER_CAP = 5.0  # seconds waited at most before sending a refused (503) batch again

_SORTED = orjson.OPT_SORT_KEYS
Canonical = tuple[str, bytes]  # an action's id, and its JSON with sorted keys: what `compare` reads


@dataclass
class Replay:
    """What the daemon did with a log: `actions` rows in the action log of its SQLite `store`."""

    events: int
    actions: int
    store: str
    seconds: float = 0.0


@dataclass
class Comparison:
    """Two action logs merged by id: how many each side holds, and the actions only one side has
    (an id on both sides whose actions differ counts on both). `missing`: in the dry-run and not in
    the daemon; `extra`: in the daemon and not in the dry-run; each keeps its first `SHOWN` by id,
    and `*_count` says how many there are in all."""

    daemon: int = 0
    dry_run: int = 0
    missing: list[dict[str, Any]] = field(default_factory=list)
    extra: list[dict[str, Any]] = field(default_factory=list)
    missing_count: int = 0
    extra_count: int = 0

    @property
    def identical(self) -> bool:
        return not self.missing_count and not self.extra_count

    def add_missing(self, action: bytes, shown: int) -> None:
        self.missing_count += 1
        if len(self.missing) < shown:
            self.missing.append(orjson.loads(action))

    def add_extra(self, action: bytes, shown: int) -> None:
        self.extra_count += 1
        if len(self.extra) < shown:
            self.extra.append(orjson.loads(action))


def canonical(action: dict[str, Any]) -> Canonical:
    """An action's JSON form (`Action.to_json`, or a row of the action log read back) as `compare`
    takes it: two actions are the same when these bytes are."""
    return action["id"], orjson.dumps(action, option=_SORTED)


def compare(daemon: Iterable[Canonical], dry_run: Iterable[Canonical], shown: int = SHOWN) -> Comparison:
    """Merge two action logs, each in id order with each id once (`logged_actions`,
    `ActionLog.actions`, or `canonical` pairs sorted), holding one action of each side at a time."""
    result = Comparison()
    ours, theirs = _InOrder(daemon), _InOrder(dry_run)
    mine, their = next(ours, None), next(theirs, None)
    while mine is not None and their is not None:
        if mine[0] < their[0]:
            result.add_extra(mine[1], shown)
            mine = next(ours, None)
        elif their[0] < mine[0]:
            result.add_missing(their[1], shown)
            their = next(theirs, None)
        else:
            if mine[1] != their[1]:
                result.add_extra(mine[1], shown)
                result.add_missing(their[1], shown)
            mine, their = next(ours, None), next(theirs, None)
    for _, action in chain((mine,) if mine is not None else (), ours):
        result.add_extra(action, shown)
    for _, action in chain((their,) if their is not None else (), theirs):
        result.add_missing(action, shown)
    result.daemon, result.dry_run = ours.count, theirs.count
    return result


class _InOrder:
    """The actions as they come, counted and checked: a merge of streams out of id order would
    report differences that are not there."""

    def __init__(self, actions: Iterable[Canonical]) -> None:
        self._actions = iter(actions)
        self._last: str | None = None
        self.count = 0

    def __iter__(self) -> _InOrder:
        return self

    def __next__(self) -> Canonical:
        action = next(self._actions)
        if self._last is not None and action[0] <= self._last:
            raise ValueError(f"actions out of id order: {action[0]} after {self._last}")
        self._last = action[0]
        self.count += 1
        return action


def logged_actions(path: str) -> Iterator[Canonical]:
    """The action log of the SQLite store at `path` (a daemon's), in id order, read a row at a time."""
    conn = sqlite3.connect(path)
    try:
        for action_id, raw in conn.execute("SELECT id, json FROM actions ORDER BY id"):
            yield action_id, orjson.dumps(orjson.loads(raw), option=_SORTED)
    finally:
        conn.close()


class ActionLog:
    """A sink that keeps every action of a run in a SQLite file, by id, the later of one id
    replacing the earlier (as a store's action log does: `MemoryStore.record`, the daemon's
    `INSERT OR REPLACE`), so the dry-run's side of the comparison is on disk, not in memory."""

    reads_reasons = False  # actions only

    def __init__(self, path: str | Path) -> None:
        self._conn = sqlite3.connect(str(path), isolation_level=None)
        self._conn.execute("PRAGMA journal_mode = OFF")  # a scratch file: no crash to survive
        self._conn.execute("PRAGMA synchronous = OFF")
        self._conn.execute("CREATE TABLE actions (id TEXT PRIMARY KEY, json BLOB NOT NULL)")
        self._conn.execute("BEGIN")  # one transaction for the run: no commit per action

    def emit(self, effects: Sequence[Effect]) -> None:
        rows = [canonical(e.to_json()) for e in effects if isinstance(e, Action)]
        if rows:
            self._conn.executemany("INSERT OR REPLACE INTO actions (id, json) VALUES (?, ?)", rows)

    def actions(self) -> Iterator[Canonical]:
        """Every action kept, in id order, read a row at a time."""
        if self._conn.in_transaction:
            self._conn.execute("COMMIT")
        for action_id, raw in self._conn.execute("SELECT id, json FROM actions ORDER BY id"):
            yield action_id, bytes(raw)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> ActionLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def replay(root: Path, config: Any, program: Any, messages: Iterable[Any], store_path: str, *,
           until: datetime | None = None, timeout: float = 600.0) -> Replay:
    """Feed `messages` (in time order: a list, a `SortedLog`, any iterable, taken once and never
    held) to the daemon through HTTP, its store a new SQLite file at `store_path`; timers due by
    `until` (default: the last message's time) fire after the last message. `timeout`: how long the
    daemon may take to start, to take one batch, or to finish one transaction."""
    import httpx
    import uvicorn

    from ..runtime.clock import VirtualClock
    from ..runtime.loop import run_until
    from .ingest import create_app
    from .worker import Worker, _signal_ingest

    started = time.monotonic()
    stream = iter(messages)
    head = next(stream, None)
    first = head.timestamp if head is not None else until
    worker = Worker(root, config, program, store_path, clock=VirtualClock(first) if first else None,
                    deliver=False, event_time=True)
    worker.start()
    key = secrets.token_urlsafe(16)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        app = create_app(config, store_path, {key}, historical=True)  # the log's times, as the dry-run takes them
        _signal_ingest(app, worker.wake)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the replay's daemon did not start")
            time.sleep(0.01)
        url = "http://%s:%d/v1/batch" % sock.getsockname()[:2]
        try:
            with httpx.Client(auth=(key, ""), timeout=60) as client:
                sent, last = _send(client, url, chain((head,), stream) if head is not None else stream, timeout)
            _drained(worker, store_path, timeout)
        finally:
            server.should_exit = True
            thread.join(30)
        end = until if until is not None else last
        worker.submit(lambda: run_until(worker.engine, end)).result(timeout)
        logged = worker.submit(lambda: worker.store.conn.execute("SELECT count(*) FROM actions").fetchone()[0])
        actions = logged.result(timeout)
    finally:
        sock.close()
        worker.stop()
    return Replay(sent, actions, store_path, time.monotonic() - started)


def _drained(worker: Any, store_path: str, timeout: float) -> None:
    """Wait until the worker has processed every event of its inbox (the ingest answered once they
    were durable), however long a large log takes, unless it goes `timeout` seconds without
    finishing a transaction: then it is stuck, not slow."""
    from .worker import inbox_position

    done, since = -1, time.monotonic()
    while True:
        appended, processed = inbox_position(store_path)
        if processed >= appended:
            return
        if not worker.running:
            raise RuntimeError(f"the daemon's worker stopped after {processed} of {appended} events (see its log)")
        if processed != done:
            done, since = processed, time.monotonic()
        elif time.monotonic() - since > timeout:
            raise RuntimeError(f"the daemon processed no event for {timeout:.0f}s ({processed} of {appended})")
        time.sleep(0.05)


def _send(client: Any, url: str, messages: Iterator[Any], timeout: float) -> tuple[int, datetime | None]:
    """POST the messages in batches of `BATCH`, holding one batch at a time; (how many were sent,
    the last one's time)."""
    from ..store.inbox import message_to_json

    sent, last = 0, None
    while batch := list(islice(messages, BATCH)):
        post_batch(client, url, b'{"batch":[' + b",".join(message_to_json(m) for m in batch) + b"]}",
                   f"events {sent + 1}-{sent + len(batch)}", timeout)
        sent += len(batch)
        last = batch[-1].timestamp
    return sent, last


def post_batch(client: Any, url: str, body: bytes, what: str, timeout: float) -> None:
    """POST one batch until the daemon takes it. A 503 (the inbox could not be written: its lock
    held longer than the ingest waits, as while the replay's worker trains the models inline in
    its transaction) is sent again after its Retry-After, as Segment's libraries do, for up to
    `timeout` seconds; any other refusal is a RuntimeError naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        r = client.post(url, content=body, headers={"Content-Type": "application/json"})
        if r.status_code == 200:
            return
        if r.status_code != 503 or time.monotonic() > deadline:
            raise RuntimeError(f"the daemon refused {what}: {r.status_code} {r.text}")
        time.sleep(_retry_after(r.headers.get("Retry-After")))


def _retry_after(value: str | None) -> float:
    try:
        return min(max(float(value or 1), 0.0), RETRY_AFTER_CAP)
    except ValueError:
        return 1.0
