"""A provider's outage, from minutes to days, against a real HTTP server on loopback and the
dispatcher on a virtual clock (`run_due(now)`): retries run for each connector's `retry_for` (48 h
by default) rather than a handful of attempts, so an outage of hours loses nothing; a circuit per
connector holds its deliveries back once it keeps failing (one probe per cool-down, no attempt
counted for the rest) and never holds up another connector's; a permanent refusal is failed at
once and opens no circuit; Retry-After is honoured up to the deadline. Then the daemon itself:
its /metrics and logs say when a provider went down and when it came back."""

from __future__ import annotations

import json
import random
import threading
import time
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from connectors.errors import ConfigurationError
from connectors.registry import RetryPolicy, retry_policy
from connectors.webhook import WebhookConnector
from engine.core.effects import Action
from engine.daemon.deliveries.dispatch import Dispatcher, OutboxSink, Routes
from engine.store.outbox import DEAD, DELIVERED, FAILED, PENDING, MemoryOutbox
from journeys.config import WebhookConfig

from .test_daemon import daemons, eventually, rows, tiny_project  # noqa: F401 - daemons is a fixture
from .test_reload_metrics import metrics, value
from .test_smtp import Server

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=timezone.utc)
HOUR = timedelta(hours=1)
ROUTES = Routes({}, {}, frozenset({"a", "b"}))


class Provider:
    """A provider on loopback: each path answers what the test says (a status and headers), and
    the idempotency keys of the requests it accepted are kept."""

    def __init__(self) -> None:
        self.answers: dict[str, tuple[int, dict[str, str]]] = {}
        self.requests: dict[str, int] = {}
        self.accepted: dict[str, list[str]] = {}
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                self.rfile.read(int(self.headers["Content-Length"]))
                with outer.lock:
                    status, headers = outer.answers.get(self.path, (200, {}))
                    outer.requests[self.path] = outer.requests.get(self.path, 0) + 1
                    if 200 <= status < 300:
                        outer.accepted.setdefault(self.path, []).append(self.headers["Idempotency-Key"])
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def answer(self, path: str, status: int, **headers: str) -> None:
        with self.lock:
            self.answers[path] = (status, {k.replace("_", "-"): v for k, v in headers.items()})

    def connector(self, name: str) -> WebhookConnector:
        url = f"http://127.0.0.1:{self.httpd.server_port}/{name}"
        return WebhookConnector.from_config(name, WebhookConfig(url=url, timeout="2s"), {})

    def count(self, name: str) -> int:
        with self.lock:
            return self.requests.get(f"/{name}", 0)


@pytest.fixture
def provider():
    p = Provider()
    yield p
    p.httpd.shutdown()
    p.httpd.server_close()


def hooks(target: str, numbers: range, at: datetime = T0) -> list[Action]:
    return [Action(id=f"{target}{n}", time=at, user=f"u{n}", journey="J", version="v1", entry=1, path="j/1",
                   kind="webhook", channel="webhook", target=target, outcome="sent", data={"n": n}) for n in numbers]


def dispatcher(outbox, provider: Provider, *names: str, **policies: RetryPolicy) -> Dispatcher:
    return Dispatcher(outbox, {f"webhook:{n}": provider.connector(n) for n in names}, profiles=lambda uid: {},
                      policies={f"webhook:{n}": p for n, p in policies.items()}, rng=random.Random(7))


def drive(d: Dispatcher, start: datetime, end: datetime, step: timedelta = timedelta(seconds=10)) -> datetime:
    """The dispatcher's rounds from `start` to `end` on the virtual clock; returns the next moment."""
    now = start
    while now <= end:
        d.run_due(now)
        now += step
    return now


def test_a_six_hour_outage_dead_letters_nothing_and_each_entry_is_delivered_once_after(provider):
    """Before: 8 attempts from a 2 s base, every entry dead about four minutes into the outage."""
    provider.answer("/a", 503)
    outbox = MemoryOutbox()
    OutboxSink(outbox, ROUTES).emit(hooks("a", range(20)))
    d = dispatcher(outbox, provider, "a")  # the default policy
    after = drive(d, T0, T0 + 6 * HOUR)
    assert outbox.by_state(DEAD) == [] and outbox.by_state(FAILED) == []
    assert {e.state for e in outbox.entries.values()} == {PENDING}
    # the first round tried all 20; then the open circuit let one probe through per cool-down
    # (at most 5 minutes): not every entry's own retries, about 15 each in 6 hours
    assert 20 < provider.count("a") <= 20 + 6 * 12 + 10, provider.count("a")
    assert d.circuit_view()["webhook:a"]["open"] == 1

    provider.answer("/a", 200)
    drive(d, after, after + 2 * HOUR)
    assert {e.state for e in outbox.entries.values()} == {DELIVERED}
    assert sorted(provider.accepted["/a"]) == sorted(f"a{n}" for n in range(20))  # each once
    assert d.circuit_view()["webhook:a"] == {"open": 0, "down_since": 0.0, "failures": 0}


def test_a_48_hour_outage_kills_entries_only_once_their_retry_for_has_passed(provider):
    provider.answer("/a", 503)
    policy = retry_policy("webhook:a", {"retry_for": "24h"})
    assert policy.retry_for == 24 * 3600
    outbox = MemoryOutbox()
    OutboxSink(outbox, ROUTES).emit(hooks("a", range(20)))
    d = dispatcher(outbox, provider, "a", a=policy)
    died: dict[str, datetime] = {}
    now = T0
    while now <= T0 + 48 * HOUR:
        d.run_due(now)
        died.update((e.id, now) for e in outbox.by_state(DEAD) if e.id not in died)
        now += timedelta(minutes=1)
    assert len(died) == 20 and outbox.by_state(FAILED) == []
    assert all(T0 + 24 * HOUR <= t <= T0 + 24 * HOUR + timedelta(minutes=10) for t in died.values()), sorted(
        died.values())
    assert all("503" in e.last_error for e in outbox.by_state(DEAD))


def test_a_backlog_past_its_deadline_is_dead_within_rounds_not_a_hundred_per_cool_down():
    from connectors.errors import RetryableError
    from connectors.recording import RecordingConnector

    outbox = MemoryOutbox()
    OutboxSink(outbox, ROUTES).emit(hooks("a", range(1000)))
    down = RecordingConnector("webhook:a", "webhook", fail=[RetryableError("down", status=503)] * 2000)
    d = Dispatcher(outbox, {"webhook:a": down}, profiles=lambda uid: {}, rng=random.Random(7),
                   policies={"webhook:a": RetryPolicy(retry_for=3600)})
    drive(d, T0, T0 + HOUR - timedelta(seconds=10))
    assert outbox.by_state(DEAD) == [] and len(down.attempts) < 150  # held back: 100, then a probe a while
    now, first = T0 + HOUR, None
    while outbox.by_state(PENDING):
        d.run_due(now)
        first = first or (outbox.by_state(DEAD) and now)
        now += timedelta(seconds=1)
    # at its next look (every circuit_wait_max: 5 minutes) the circuit finds the first hundred past
    # their deadline, and reads on round after round (one a second here) until none is left
    assert first <= T0 + HOUR + timedelta(minutes=5) and now - first <= timedelta(seconds=12), (first, now)
    assert len(outbox.by_state(DEAD)) == 1000


def test_a_permanent_refusal_fails_at_once_and_opens_no_circuit(provider):
    provider.answer("/a", 400)
    outbox = MemoryOutbox()
    OutboxSink(outbox, ROUTES).emit(hooks("a", range(10)))
    d = dispatcher(outbox, provider, "a")
    d.run_due(T0)
    failed = outbox.by_state(FAILED)
    assert len(failed) == 10 and all(e.attempts == 1 and "400" in e.last_error for e in failed)
    assert d.circuit_view()["webhook:a"] == {"open": 0, "down_since": 0.0, "failures": 0}
    provider.answer("/a", 200)
    later = T0 + timedelta(seconds=1)
    OutboxSink(outbox, ROUTES).emit(hooks("a", range(10, 20), at=later))
    assert d.run_due(later) == 10 and len(outbox.by_state(DELIVERED)) == 10


def test_an_open_circuit_of_one_connector_does_not_delay_another(provider):
    """A's backlog (more than a round claims) stays due while its circuit is open; B's deliveries
    go out in the very round they are due, probe rounds of A included."""
    provider.answer("/a", 503)
    outbox = MemoryOutbox()
    sink = OutboxSink(outbox, ROUTES)
    sink.emit(hooks("a", range(300)))
    d = dispatcher(outbox, provider, "a", "b")
    d.run_due(T0)
    assert d.circuit_view()["webhook:a"]["open"] == 1
    now, n = T0 + timedelta(seconds=10), 0
    while now <= T0 + HOUR:
        sink.emit(hooks("b", range(n, n + 3), at=now))
        n += 3
        d.run_due(now)
        late = [e.id for e in outbox.entries.values() if e.connector == "webhook:b" and e.state != DELIVERED]
        assert late == [], f"at {now - T0}: {late}"
        now += timedelta(seconds=10)
    assert provider.count("b") == n
    # the first round's claim, then one probe per cool-down (15 s doubling to 5 minutes: 15 in the hour)
    assert provider.count("a") <= 100 + 20
    assert len(outbox.by_state(DEAD)) == 0


def test_retry_after_is_honoured_up_to_the_deadline_by_entries_and_by_the_circuit(provider):
    outbox = MemoryOutbox()
    provider.answer("/a", 429, Retry_After="600")
    OutboxSink(outbox, ROUTES).emit(hooks("a", range(2)))
    d = dispatcher(outbox, provider, "a", a=RetryPolicy(retry_for=3600, circuit_failures=2))
    d.run_due(T0)
    assert all(e.next_at >= T0 + timedelta(seconds=600) for e in outbox.entries.values())
    assert d.circuit_view()["webhook:a"]["open"] == 1
    drive(d, T0 + timedelta(seconds=10), T0 + timedelta(seconds=590))
    assert provider.count("a") == 2  # neither the entries nor the circuit's probe came back early
    d.run_due(T0 + timedelta(seconds=600))
    assert provider.count("a") == 3  # one probe

    provider.answer("/a", 503, Retry_After="7200")  # past the deadline: the last try is at the deadline
    drive(d, T0 + timedelta(seconds=610), T0 + timedelta(seconds=3590))
    assert {e.state for e in outbox.entries.values()} == {PENDING}
    assert all(e.next_at <= T0 + HOUR for e in outbox.entries.values())
    drive(d, T0 + HOUR, T0 + HOUR + timedelta(minutes=10))
    assert {e.state for e in outbox.entries.values()} == {DEAD}


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_an_open_circuit_lets_the_delivery_loop_sleep(tmp_path, provider, request, kind):
    """The daemon's loop on a real store: the open connector's entries are due, but it may not
    take them, so it sleeps until the next probe instead of going round and round."""
    from engine.daemon.deliveries.loop import DeliveryLoop
    from engine.runtime.clock import SystemClock
    from engine.store.open import open_store
    from engine.store.outbox import SqliteOutbox
    from engine.store.pg_outbox import PostgresOutbox
    from journeys.config import ProjectConfig

    provider.answer("/a", 503)
    path = str(tmp_path / "d.db") if kind == "sqlite" else request.getfixturevalue("pg_url")
    store = open_store(path)
    with store.transaction():
        outbox = SqliteOutbox(store.conn) if kind == "sqlite" else PostgresOutbox(store.conn)
        OutboxSink(outbox, ROUTES).emit(hooks("a", range(20), at=datetime.now(timezone.utc)))
    store.close()
    url = f"http://127.0.0.1:{provider.httpd.server_port}/a"
    loop = DeliveryLoop(tmp_path, ProjectConfig(webhooks={"a": WebhookConfig(url=url)}), path, SystemClock())
    loop.start()
    try:
        eventually(lambda: loop.circuits()["webhook:a"]["open"] == 1, timeout=30)

        def settled() -> bool:  # the attempts in flight when the circuit opened have come back
            before = provider.count("a")
            time.sleep(0.5)
            return provider.count("a") == before
        eventually(settled, timeout=30)
        tried, rounds = provider.count("a"), loop.rounds
        time.sleep(2)  # the first probe is 15 s away
        assert loop.rounds - rounds <= 20, loop.rounds - rounds
        assert provider.count("a") == tried
    finally:
        loop.stop()


def test_a_long_outage_keeps_every_delay_within_its_cap():
    """Thousands of failed attempts and probes (a month of `retry_for`, one-second caps): before,
    2 ** attempts overflowed a float after 1,024 of them and the outcomes could not be settled."""
    from connectors.errors import RetryableError
    from connectors.recording import RecordingConnector

    outbox = MemoryOutbox()
    OutboxSink(outbox, ROUTES).emit(hooks("a", range(1)))
    down = RecordingConnector("webhook:a", "webhook", fail=[RetryableError("down")] * 2500)
    policy = RetryPolicy(retry_for=30 * 86400, backoff_base=1, backoff_max=1, circuit_wait_max=1)
    d = Dispatcher(outbox, {"webhook:a": down}, profiles=lambda uid: {}, policies={"webhook:a": policy},
                   rng=random.Random(7))
    after = drive(d, T0, T0 + timedelta(seconds=2600), step=timedelta(seconds=1))
    assert len(down.attempts) > 1100 and outbox.get("a0:webhook:a").attempts > 1100
    drive(d, after, after + timedelta(seconds=10), step=timedelta(seconds=1))
    assert outbox.get("a0:webhook:a").state == DELIVERED


def test_retry_settings_are_validated_naming_the_connector_and_the_setting():
    policy = retry_policy("smtp", {"retry_for": "72h", "backoff_max": "30m", "circuit_failures": 3,
                                   "circuit_wait_max": "2m"})
    assert (policy.retry_for, policy.backoff_max, policy.circuit_failures, policy.circuit_wait_max) == (
        72 * 3600, 1800, 3, 120)
    default = RetryPolicy()
    assert default.retry_for >= 24 * 3600 and default.backoff_max == 3600 and default.circuit_wait_max == 300
    for settings, field in [({"retry_for": "soon"}, "retry_for"), ({"retry_for": 0}, "retry_for"),
                            ({"backoff_max": "1h", "backoff_base": "2h"}, "backoff_max"),
                            ({"circuit_failures": -1}, "circuit_failures"),
                            ({"circuit_failures": 2.5}, "circuit_failures"),
                            ({"circuit_wait_max": "never"}, "circuit_wait_max")]:
        with pytest.raises(ConfigurationError) as err:
            retry_policy("smtp", settings)
        assert 'connector "smtp"' in str(err.value) and field in str(err.value), err.value


def test_check_env_points_at_a_retry_setting_that_does_not_parse(tmp_path):
    from connectors.preflight import preflight
    from journeys.checker import load_checked

    from .test_smtp import free_port

    root = tiny_project(tmp_path / "p", free_port())
    toml = root / "journeys.toml"
    toml.write_text(toml.read_text().replace("default = true", 'default = true\nretry_for = "a while"'))
    project, compiled = load_checked(root)
    (diag,) = [d for d in preflight(project, compiled, {"JOURNEYS_UNSUBSCRIBE_SECRET": "s" * 32,
                                                                "JOURNEYS_WRITE_KEY": "k"}) if d.is_error]
    assert diag.code == "J047" and "retry_for" in diag.message and diag.span.line == 19, diag


JOURNEY = """\
journey "Hello" {
  entry when event "Signed Up"
  send email "hello"
}
"""


def test_the_daemon_reports_a_provider_down_and_back_in_metrics_and_once_in_its_logs(tmp_path, daemons):
    pytest.importorskip("prometheus_client")
    smtp = Server()  # its port is chosen; nothing listens there yet: the provider is down
    root = tiny_project(tmp_path / "p", smtp.port)
    (root / "journeys" / "hello.journey").write_text(JOURNEY)
    toml = root / "journeys.toml"
    toml.write_text(toml.read_text().replace(
        "default = true", 'default = true\ncircuit_failures = 3\ncircuit_wait_max = "1s"'))
    try:
        d = daemons(root, None)
        db = root / "data" / "tiny.db"
        began = time.time()
        for n in range(3):
            assert d.post("identify", {"userId": f"u{n}", "traits": {"email": f"u{n}@example.com"}}).status_code == 200
            assert d.post("track", {"userId": f"u{n}", "event": "Signed Up"}).status_code == 200

        def down():
            m = metrics(d)
            return value(m, "journeys_connector_circuit_open", connector="smtp") == 1 and m

        m = eventually(down, timeout=30, every=0.1)
        since = value(m, "journeys_connector_down_since_seconds", connector="smtp")
        assert began - 1 <= since <= time.time(), (began, since)
        assert value(m, "journeys_connector_consecutive_failures", connector="smtp") >= 3

        smtp.start()  # the provider is back: the next probe closes the circuit and the rest follow
        eventually(lambda: rows(db, "SELECT DISTINCT state FROM outbox") == [("delivered",)], timeout=60, every=0.2)
        assert len(smtp.handler.messages) == 3
        m = eventually(lambda: (lambda m: value(m, "journeys_connector_circuit_open", connector="smtp") == 0
                                and m)(metrics(d)), timeout=30)
        assert value(m, "journeys_connector_down_since_seconds", connector="smtp") == 0
        assert value(m, "journeys_connector_consecutive_failures", connector="smtp") == 0
        assert d.stop() == 0
        lines = [json.loads(line) for line in d.log.read_text().splitlines() if line.startswith("{")]
        opened = [(x["level"], x["message"]) for x in lines if x["message"].startswith("smtp: circuit open")]
        closed = [(x["level"], x["message"]) for x in lines if x["message"].startswith("smtp: circuit closed")]
        assert len(opened) == 1 and opened[0][0] == "WARNING" and "Connection refused" in opened[0][1], opened
        assert len(closed) == 1 and closed[0][0] == "INFO", closed
    finally:
        smtp.stop()
