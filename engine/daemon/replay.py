"""`journeys replay`: the proof of the dry-run's promise, "this is what the daemon will do".

The daemon itself (`engine.daemon.worker.Worker` and the ingest app, not a copy) runs in this
process on a loopback port, with the dry-run's clock (each message at its own timestamp, on a
virtual clock) and without its delivery thread (the outbox fills; nothing is sent). The log goes
in through HTTP as Segment batches with a write key, like any sender's; once the inbox is drained,
timers due by `until` fire, as the dry-run fires them. The command line (engine.cli.replay) then
`compare`s the actions the daemon logged with the dry-run's on the same log
(`engine.dryrun.simulate.dry_run_actions`): the same ids, times, users, steps, outcomes and
reasons, or the differences are listed.
"""

from __future__ import annotations

import secrets
import socket
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

import orjson

BATCH = 100  # events per HTTP request, the size Segment's libraries send


@dataclass
class Replay:
    events: int
    actions: list[dict[str, Any]]  # Action.to_json of every action the daemon logged, sorted by id
    dry_run: list[dict[str, Any]] | None = None  # the same from `simulate`, when compared
    seconds: float = 0.0
    missing: list[dict[str, Any]] = field(default_factory=list)  # in the dry-run, not the daemon
    extra: list[dict[str, Any]] = field(default_factory=list)  # in the daemon, not the dry-run

    @property
    def identical(self) -> bool:
        return self.dry_run is not None and not self.missing and not self.extra


def _canonical(actions: Sequence[dict[str, Any]]) -> dict[bytes, dict[str, Any]]:
    return {orjson.dumps(a, option=orjson.OPT_SORT_KEYS): a for a in actions}


def compare(replay: Replay, dry_run: Sequence[dict[str, Any]]) -> Replay:
    ours, theirs = _canonical(replay.actions), _canonical(dry_run)
    replay.dry_run = sorted(dry_run, key=lambda a: a["id"])
    replay.missing = [theirs[k] for k in sorted(theirs.keys() - ours.keys())]
    replay.extra = [ours[k] for k in sorted(ours.keys() - theirs.keys())]
    return replay


def replay(root: Path, config: Any, program: Any, messages: Sequence[Any], *, until: datetime | None = None,
           store_path: str | None = None, timeout: float = 600.0) -> Replay:
    """Feed `messages` (in time order) to the daemon through HTTP; the actions it logged."""
    if store_path is None:
        with tempfile.TemporaryDirectory(prefix="journeys-replay-") as tmp:
            return _replay(root, config, program, messages, until, str(Path(tmp) / "replay.db"), timeout)
    return _replay(root, config, program, messages, until, store_path, timeout)


def _replay(root: Path, config: Any, program: Any, messages: Sequence[Any], until: datetime | None,
            path: str, timeout: float) -> Replay:
    import httpx
    import uvicorn

    from ..runtime.clock import VirtualClock
    from ..runtime.loop import run_until
    from ..store.inbox import message_to_json
    from .ingest import create_app
    from .worker import Worker, _signal_ingest, inbox_position

    started = time.monotonic()
    if until is None and messages:
        until = messages[-1].timestamp
    first = messages[0].timestamp if messages else until
    worker = Worker(root, config, program, path, clock=VirtualClock(first) if first else None,
                    deliver=False, event_time=True)
    worker.start()
    key = secrets.token_urlsafe(16)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    try:
        app = create_app(config, path, {key}, historical=True)  # the log's times, as the dry-run takes them
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
                for i in range(0, len(messages), BATCH):
                    calls = b",".join(message_to_json(m) for m in messages[i:i + BATCH])
                    r = client.post(url, content=b'{"batch":[' + calls + b"]}",
                                    headers={"Content-Type": "application/json"})
                    if r.status_code != 200:
                        raise RuntimeError(f"the daemon refused events {i + 1}-{i + BATCH}: {r.status_code} {r.text}")
            while True:  # the ingest answered once the events were durable; now wait for the engine
                last, processed = inbox_position(path)
                if processed >= last:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the daemon processed {processed} of {last} events in {timeout:.0f}s")
                time.sleep(0.01)
        finally:
            server.should_exit = True
            thread.join(30)
        worker.submit(lambda: run_until(worker.engine, until)).result(timeout)
        actions = worker.submit(lambda: _logged_actions(worker.store.conn)).result(timeout)
    finally:
        sock.close()
        worker.stop()
    return Replay(len(messages), actions, seconds=time.monotonic() - started)


def _logged_actions(conn: Any) -> list[dict[str, Any]]:
    return [orjson.loads(raw) for (raw,) in conn.execute("SELECT json FROM actions ORDER BY id")]
