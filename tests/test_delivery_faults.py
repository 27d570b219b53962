"""Faults between the outbox and a real HTTP endpoint: 500s then recovery, 429 with Retry-After, a
server that hangs, a server that is down. Every action ends delivered once or recorded as failed
with its reason: nothing lost, nothing twice."""

from __future__ import annotations

import json
import random
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from connectors.registry import RetryPolicy
from connectors.webhook import WebhookConnector
from engine.core.effects import Action
from engine.daemon.deliveries.dispatch import Dispatcher, OutboxSink, Routes
from engine.store.outbox import DEAD, DELIVERED, MemoryOutbox
from journeys.config import WebhookConfig

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=timezone.utc)


class Endpoint(BaseHTTPRequestHandler):
    script: dict[str, list] = {}  # user id → answers to give in turn: status codes, or "hang"
    seen: list[tuple[str, str]] = []  # (idempotency key, user id) of every request that got a 2xx
    lock = threading.Lock()

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        user = body["user_id"]
        with self.lock:
            answers = self.script.get(user) or [200]
            answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if answer == "hang":
            time.sleep(1.5)
            answer = 200
        if 200 <= answer < 300:
            with self.lock:
                self.seen.append((self.headers["Idempotency-Key"], user))
        self.send_response(answer)
        if answer == 429:
            self.send_header("Retry-After", "30")
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def endpoint():
    Endpoint.script, Endpoint.seen = {}, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Endpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()


def action(n: int) -> Action:
    return Action(id=f"a{n}", time=T0, user=f"u{n}", journey="J", version="v1", entry=1, path="j/1",
                  kind="webhook", channel="webhook", target="crm", outcome="sent", data={"n": n})


def run(outbox, connector, until: timedelta, step=timedelta(seconds=10)):
    # retries from a 1 s base for 40 s: a retry every 10 s step, the fifth attempt at the deadline
    d = Dispatcher(outbox, {"webhook:crm": connector}, profiles=lambda uid: {}, workers=4,
                   policies={"webhook:crm": RetryPolicy(retry_for=40, backoff_base=1.0)}, rng=random.Random(7))
    now = T0
    while now <= T0 + until:
        d.run_due(now)
        now += step
    d.close()


def test_every_action_ends_delivered_once_or_failed_with_its_reason(endpoint):
    Endpoint.script = {"u1": [500, 500, 200], "u2": [429, 200], "u3": ["hang", 200], "u4": [400],
                       "u5": [503]}  # u5 keeps failing: dead once its 40 s of retries are over, after 5 attempts
    outbox = MemoryOutbox()
    OutboxSink(outbox, Routes({}, {}, frozenset({"crm"}))).emit([action(n) for n in range(1, 7)])
    url = f"http://127.0.0.1:{endpoint.server_port}/hook"
    connector = WebhookConnector.from_config("crm", WebhookConfig(url=url, timeout="1s"), {})
    run(outbox, connector, timedelta(hours=2))
    states = {e.user_id: e for e in outbox.entries.values()}
    assert {u for u, e in states.items() if e.state == DELIVERED} == {"u1", "u2", "u3", "u6"}
    assert states["u4"].state == "failed" and "400" in states["u4"].last_error
    assert states["u5"].state == DEAD and states["u5"].attempts == 5
    # the endpoint accepted each delivered action once, except that the hung request may have been
    # accepted after the client gave up: then its retry carried the same idempotency key
    accepted = {}
    for key, user in Endpoint.seen:
        accepted.setdefault(user, set()).add(key)
    assert {u: keys for u, keys in accepted.items()} == {u: {f"a{u[1:]}"} for u in ("u1", "u2", "u3", "u6")}
    assert states["u2"].attempts == 2 and states["u1"].attempts == 3


def test_a_server_that_is_down_leaves_everything_pending_then_delivers(endpoint):
    outbox = MemoryOutbox()
    OutboxSink(outbox, Routes({}, {}, frozenset({"crm"}))).emit([action(1), action(2)])
    down = WebhookConnector.from_config("crm", WebhookConfig(url="http://127.0.0.1:9/hook", timeout="1s"), {})
    run(outbox, down, timedelta(seconds=5), step=timedelta(seconds=1))
    assert all(e.state == "pending" and e.attempts >= 1 and e.last_error for e in outbox.entries.values())
    up = WebhookConnector.from_config("crm", WebhookConfig(url=f"http://127.0.0.1:{endpoint.server_port}/h",
                                                          timeout="1s"), {})
    run(outbox, up, timedelta(hours=1))
    assert {e.state for e in outbox.entries.values()} == {DELIVERED}
    assert sorted(u for _, u in Endpoint.seen) == ["u1", "u2"]
