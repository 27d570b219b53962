"""`journeys serve` as a real process on loopback: events in over HTTP, states and journeys in the
store, a timer firing on time and its email arriving at an SMTP server, the health checks, a clean
SIGTERM, and a SIGKILL under load that loses no accepted event."""

from __future__ import annotations

import email
import email.policy
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest

from .conftest import ROOT, SHOP
from .test_smtp import Server, free_port

KEY = "test-write-key"
AUTH = (KEY, "")
ADMIN_TOKEN = "admin-token-for-tests"  # every test daemon's JOURNEYS_ADMIN_TOKEN, unless a test sets its own
UNSUBSCRIBE_SECRET = "unsubscribe-secret-for-tests-0123456789"  # serve needs one when a journey sends email
SECRETS = ("SMTP_USER", "SMTP_PASSWORD", "FCM_CREDENTIALS", "META_ACCESS_TOKEN", "GOOGLE_ADS_DEVELOPER_TOKEN",
           "GOOGLE_ADS_CLIENT_ID", "GOOGLE_ADS_CLIENT_SECRET", "GOOGLE_ADS_REFRESH_TOKEN", "CRM_WEBHOOK_SECRET")


class Daemon:
    def __init__(self, project: Path, store: str | None, log: Path, port: int | None = None,
                 args: tuple[str, ...] = (), **env: str):
        """`args`: more of `journeys serve`'s options (e.g. --admin-port)."""
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        environ = {k: v for k, v in os.environ.items() if k not in SECRETS}
        environ.update({"JOURNEYS_WRITE_KEY": KEY, "JOURNEYS_UNSUBSCRIBE_SECRET": UNSUBSCRIBE_SECRET,
                        "JOURNEYS_ADMIN_TOKEN": ADMIN_TOKEN, **env})
        self.operator = {"Authorization": f"Bearer {environ['JOURNEYS_ADMIN_TOKEN']}"}  # the operator's routes
        cmd = [sys.executable, "-m", "engine.cli", "serve", str(project), "--port", str(self.port)]
        if store is not None:
            cmd += ["--store", store]
        cmd += list(args)
        self.log = log
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=environ, stdout=open(log, "ab"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60  # a sanity bound, not a target: a loaded CI machine starts slowly
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"the daemon exited with {self.proc.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.proc.kill()
                raise AssertionError(f"the daemon did not come up:\n{log.read_text()}")
            time.sleep(0.05)

    def readiness(self) -> dict:
        """GET /admin/readyz: the detailed readiness, behind the admin token (/readyz says only ready or not)."""
        return httpx.get(self.url + "/admin/readyz", headers=self.operator, timeout=5).json()

    def post(self, kind: str, body: dict, client: httpx.Client | None = None) -> httpx.Response:
        return (client or httpx).post(f"{self.url}/v1/{kind}", json=body, auth=AUTH, timeout=10)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout)


def rows(db: Path, sql: str, *args) -> list[tuple]:
    conn = sqlite3.connect(db.as_uri() + "?mode=ro", uri=True, timeout=5)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def eventually(check, timeout: float = 5.0, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except (AssertionError, sqlite3.OperationalError):
            if time.monotonic() > deadline:
                raise
        else:
            if result is None or result:
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"not true within {timeout}s")
        time.sleep(every)


@pytest.fixture()
def shop(tmp_path):
    project = tmp_path / "shop"
    shutil.copytree(SHOP, project)
    return project


@pytest.fixture()
def daemons(tmp_path):
    started: list[Daemon] = []

    def start(project: Path, store: str | None = None, port: int | None = None, args: tuple[str, ...] = (),
              **env: str) -> Daemon:
        d = Daemon(project, store, tmp_path / "daemon.log", port, args, **env)
        started.append(d)
        return d

    yield start
    for d in started:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()


def test_events_become_profiles_and_journeys_and_sigterm_stops_cleanly(shop, tmp_path, daemons):
    db = tmp_path / "store.db"
    d = daemons(shop, f"sqlite:///{db}")
    assert d.post("identify", {"userId": "u1", "traits": {"email": "ann@example.com"}}).status_code == 200
    r = d.post("track", {"userId": "u1", "event": "Product Viewed", "messageId": "m-1",
                         "properties": {"name": "Face Cream", "category": "beauty"}})
    assert r.status_code == 200, r.text

    def in_flight():
        return {j for (j,) in rows(db, "SELECT journey FROM instances WHERE user_id = 'u1'")}

    assert "Browse abandonment" in eventually(in_flight)
    (state,) = rows(db, "SELECT state FROM profiles WHERE user_id = 'u1'")[0]
    assert b"ann@example.com" in (state if isinstance(state, bytes) else state.encode())
    assert rows(db, "SELECT count(*) FROM messages WHERE message_id = 'm-1'") == [(1,)]

    assert httpx.get(d.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(d.url + "/readyz")
    assert ready.status_code == 200 and ready.json() == {"ready": True}  # public: the status, nothing more
    body = d.readiness()
    assert body["ready"] and body["store"] == "open" and body["loops"] == "running"
    assert body["inbox_lag"] == 0 and body["processed"] == body["last_seq"] == 2

    # the ad audience connector has no token here: its delivery fails, recorded in the outbox
    eventually(lambda: rows(db, "SELECT state, last_error FROM outbox WHERE connector = 'meta'"))
    ((state, error),) = rows(db, "SELECT state, last_error FROM outbox WHERE connector = 'meta'")
    assert state == "failed" and "META_ACCESS_TOKEN" in error

    started = time.monotonic()
    assert d.stop(signal.SIGTERM) == 0
    assert time.monotonic() - started < 5


def test_sigint_stops_cleanly_too(shop, tmp_path, daemons):
    d = daemons(shop, f"sqlite:///{tmp_path / 'store.db'}")
    assert d.stop(signal.SIGINT) == 0


def test_no_write_keys_is_a_usage_error(shop, tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "JOURNEYS_WRITE_KEY"}
    out = subprocess.run([sys.executable, "-m", "engine.cli", "serve", str(shop), "--store",
                          f"sqlite:///{tmp_path / 's.db'}"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2
    assert "JOURNEYS_WRITE_KEY" in out.stderr and len(out.stderr.strip().splitlines()) == 1


TINY_JOURNEY = """\
journey "Hello" {
  entry when event "Signed Up"
  wait 2s
  send email "hello"
}
"""
TINY_TEMPLATE = """\
---
subject: "Hello"
from: "Shop <hello@shop.example.com>"
---
<p>Hello {{ user.first_name | default("there", true) }}.</p>
<p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>
"""


def tiny_project(root: Path, smtp_port: int) -> Path:
    (root / "journeys").mkdir(parents=True)
    (root / "templates" / "email").mkdir(parents=True)
    (root / "journeys.toml").write_text(f"""\
[project]
name = "tiny"
public_url = "https://journeys.example.com"

[store]
url = "sqlite:///data/tiny.db"

[ingest]
write_keys_env = ["JOURNEYS_WRITE_KEY"]

[connectors.smtp]
channel = "email"
type = "smtp"
host = "127.0.0.1"
port = {smtp_port}
security = "none"
timeout = "5s"
default = true
""")
    (root / "journeys" / "hello.journey").write_text(TINY_JOURNEY)
    (root / "templates" / "email" / "hello.j2").write_text(TINY_TEMPLATE)
    return root


def test_a_timer_fires_on_time_and_its_email_arrives(tmp_path, daemons):
    smtp = Server().start()
    try:
        project = tiny_project(tmp_path / "tiny", smtp.port)
        d = daemons(project, None, JOURNEYS_UNSUBSCRIBE_SECRET="unsubscribe-secret-for-tests-0123456789")
        db = project / "data" / "tiny.db"  # [store] url, relative to the project
        assert d.post("identify", {"userId": "u7", "traits": {"email": "u7@example.com",
                                                              "first_name": "Ada"}}).status_code == 200
        sent_at = time.monotonic()
        assert d.post("track", {"userId": "u7", "event": "Signed Up"}).status_code == 200
        eventually(lambda: rows(db, "SELECT journey FROM instances WHERE user_id = 'u7'") == [("Hello",)])
        assert smtp.handler.messages == []
        eventually(lambda: smtp.handler.messages, timeout=6, every=0.02)
        took = time.monotonic() - sent_at
        assert 1.9 <= took <= 3.0, took
        ((sender, recipients, content, _),) = smtp.handler.messages
        assert recipients == ["u7@example.com"]
        assert b"Hello Ada" in content
        eventually(lambda: rows(db, "SELECT state FROM outbox") == [("delivered",)])
        assert rows(db, "SELECT count(*) FROM instances") == [(0,)]  # the journey ended after the send
        assert d.stop() == 0
    finally:
        smtp.stop()


def daytime_zone() -> str:
    """A zone where it is about noon now, whenever the test runs: the shop's quiet hours (21:00 to
    08:00 user time) let an email to a user living there go at once."""
    offset = (12 - datetime.now(timezone.utc).hour) % 24
    offset = offset - 24 if offset > 14 else offset
    return f"Etc/GMT{-offset:+d}" if offset else "Etc/GMT"  # Etc/GMT-3 is UTC+03:00


def test_the_example_shop_delivers_its_emails_with_a_working_unsubscribe_link(shop, tmp_path, daemons):
    """examples/shop as it is, but for where its mail server is and where the daemon listens: an
    event over HTTP, the email at the SMTP server, and its unsubscribe link answered by the daemon."""
    smtp = Server().start()
    try:
        port = free_port()
        toml = shop / "journeys.toml"
        text = toml.read_text()
        for old, new in (("port = 1025", f"port = {smtp.port}"),
                         ('public_url = "http://127.0.0.1:8080"', f'public_url = "http://127.0.0.1:{port}"')):
            assert old in text
            text = text.replace(old, new)
        toml.write_text(text)
        db = tmp_path / "store.db"
        d = daemons(shop, f"sqlite:///{db}", port)
        assert d.post("identify", {"userId": "u1", "traits": {"email": "ann@example.com", "first_name": "Ann",
                                                              "timezone": daytime_zone()}}).status_code == 200
        # "Payment failure" sends its email at once (examples/shop/journeys/payment_failure.journey)
        assert d.post("track", {"userId": "u1", "event": "Payment Failed",
                                "properties": {"order_id": "o-17"}}).status_code == 200
        eventually(lambda: smtp.handler.messages, timeout=10)
        ((_, recipients, raw, _),) = smtp.handler.messages
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        assert recipients == ["ann@example.com"] and msg["Subject"] == "Your payment did not go through"
        html = msg.get_body(("html",)).get_content()
        assert "Hi Ann" in html and "#o-17" in html
        (link,) = re.findall(r'href="(http://127\.0\.0\.1:\d+/u/[^"]+)"', html)
        assert link.startswith(f"{d.url}/u/") and link in msg["List-Unsubscribe"]
        page = httpx.get(link, timeout=10)
        assert page.status_code == 200 and ">Unsubscribe</button>" in page.text, page.text
        done = httpx.post(link, data={"List-Unsubscribe": "One-Click"}, timeout=10)
        assert done.status_code == 200 and "You are unsubscribed" in done.text, done.text
        eventually(lambda: rows(db, "SELECT state FROM outbox WHERE connector = 'smtp'") == [("delivered",)])
        assert d.stop() == 0
    finally:
        smtp.stop()


def test_sigkill_under_load_then_restart_loses_no_accepted_event(shop, tmp_path, daemons):
    db = tmp_path / "store.db"
    store = f"sqlite:///{db}"
    d = daemons(shop, store)
    accepted: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def load(worker: int) -> None:
        with httpx.Client() as client:
            n = 0
            while not stop.is_set():
                n += 1
                ids = [f"w{worker}-{n}-{i}" for i in range(50)]  # batches: the inbox runs ahead of the engine
                calls = [{"type": "track", "userId": f"user-{mid}", "event": "Product Viewed", "messageId": mid,
                          "properties": {"name": "Face Cream"}} for mid in ids]
                try:
                    r = d.post("batch", {"batch": calls}, client)
                except httpx.TransportError:
                    return
                if r.status_code == 200:
                    with lock:
                        accepted.extend(ids)

    threads = [threading.Thread(target=load, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    eventually(lambda: len(accepted) >= 3000, timeout=30, every=0.01)
    d.proc.kill()  # SIGKILL: no shutdown at all
    d.proc.wait()
    stop.set()
    for t in threads:
        t.join(10)
    assert accepted
    (killed_at,) = rows(db, "SELECT processed FROM inbox_cursor")[0]
    print(f"killed with {len(accepted)} accepted, {killed_at} processed")

    again = daemons(shop, store)

    def caught_up():
        body = again.readiness()
        return body["ready"] and body["inbox_lag"] == 0 and body["last_seq"] > 0

    eventually(caught_up, timeout=20)
    (last_seq,) = rows(db, "SELECT seq FROM sqlite_sequence WHERE name = 'inbox'")[0]
    (processed,) = rows(db, "SELECT processed FROM inbox_cursor")[0]
    assert processed == last_seq >= len(accepted)
    seen = {m for (m,) in rows(db, "SELECT message_id FROM messages")}
    assert set(accepted) <= seen
    assert len(seen) == last_seq  # every appended message (each a new messageId) processed, once
    profiles = {u for (u,) in rows(db, "SELECT user_id FROM profiles")}
    assert {f"user-{m}" for m in accepted} <= profiles
    entries = rows(db, "SELECT user_id, entry FROM instances WHERE journey = 'Browse abandonment'")
    assert {u for u, _ in entries} == profiles and {e for _, e in entries} == {1}
    assert again.stop() == 0


def test_the_worker_wakes_when_events_are_committed_not_on_a_poll(shop, tmp_path, daemons):
    db = tmp_path / "store.db"
    d = daemons(shop, f"sqlite:///{db}")
    d.post("identify", {"userId": "warm-up", "traits": {"plan": "pro"}})
    eventually(lambda: rows(db, "SELECT 1 FROM profiles WHERE user_id = 'warm-up'"))
    latencies = []
    for n in range(5):
        time.sleep(0.3)  # let the worker go idle (it sleeps up to a second with nothing due)
        started = time.monotonic()
        assert d.post("identify", {"userId": f"quick-{n}", "traits": {"plan": "pro"}}).status_code == 200
        eventually(lambda: rows(db, "SELECT 1 FROM profiles WHERE user_id = ?", f"quick-{n}"), every=0.005)
        latencies.append(time.monotonic() - started)
    assert sorted(latencies)[2] < 0.2, latencies


def test_a_message_the_engine_cannot_take_is_set_aside_and_the_rest_go_on(tmp_path):
    from engine.daemon.worker import Worker
    from engine.store.inbox import Inbox, message_to_json
    from engine.core.messages import parse_message
    from engine.core.program import Program
    from journeys.checker import load_checked
    from engine.store.serialize import utc_text
    from datetime import datetime, timezone

    project, compiled = load_checked(SHOP)
    path = str(tmp_path / "store.db")
    inbox = Inbox.open(path)
    stamp = utc_text(datetime.now(timezone.utc))
    good = [message_to_json(parse_message({"type": "identify", "userId": f"u{n}", "messageId": f"m{n}",
                                           "traits": {"plan": "pro"}, "timestamp": "2026-03-02T10:00:00Z"})) for n in range(3)]
    inbox.append_rows([(stamp, good[0]), (stamp, b'{"type": "nonsense"}'), (stamp, good[1]), (stamp, good[2])])
    inbox.close()
    worker = Worker(SHOP, project.config, Program.build(compiled), path, environ={})
    worker.start()
    try:
        eventually(lambda: worker.counts.snapshot().get("inbox.processed") == 4)
    finally:
        worker.stop()
    db = Path(path)
    assert rows(db, "SELECT processed FROM inbox_cursor") == [(4,)]
    assert {u for (u,) in rows(db, "SELECT user_id FROM profiles")} == {"u0", "u1", "u2"}
    assert {m for (m,) in rows(db, "SELECT message_id FROM messages")} == {"m0", "m1", "m2"}
    assert worker.counts.snapshot()["inbox.failed"] == 1
    (aside,) = rows(db, "SELECT seq, raw, error FROM inbox_failed")
    assert aside[0] == 2 and aside[1] == b'{"type": "nonsense"}' and aside[2]  # kept with its error
    assert not worker.store_open


def test_a_message_set_aside_by_a_bug_is_taken_once_requeued_after_the_fix(tmp_path):
    """The operator's way back: a bug sets a message aside; once it is fixed, requeueing the
    message (what POST /admin/inbox/failed/{seq}/retry does) gets it processed, once."""
    from engine.daemon.worker import Worker
    from engine.store.inbox import Inbox, message_to_json
    from engine.core.messages import parse_message
    from engine.core.program import Program
    from journeys.checker import load_checked
    from engine.store.serialize import utc_text
    from datetime import datetime, timezone

    project, compiled = load_checked(SHOP)
    path = str(tmp_path / "store.db")
    worker = Worker(SHOP, project.config, Program.build(compiled), path, environ={}, deliver=False)
    worker.start()
    bug = {"on": True}
    take = worker.engine.take

    def buggy(msg, at):
        if bug["on"] and msg.user_id == "u1":
            raise KeyError("a bug")
        take(msg, at)

    worker.engine.take = buggy
    try:
        inbox = Inbox.open(path)
        stamp = utc_text(datetime.now(timezone.utc))
        inbox.append_rows([(stamp, message_to_json(parse_message(
            {"type": "identify", "userId": u, "messageId": f"m-{u}", "traits": {"plan": "pro"},
             "timestamp": "2026-03-02T10:00:00Z"}))) for u in ("u0", "u1")])
        inbox.close()
        eventually(lambda: worker.counts.snapshot().get("inbox.failed") == 1)
        assert {u for (u,) in rows(Path(path), "SELECT user_id FROM profiles")} == {"u0"}
        (seq, _, _, _), = worker.submit(lambda: worker.inbox.failed(10)).result(5)

        bug["on"] = False  # the fix is deployed

        def requeue():
            with worker.store.transaction():
                return worker.inbox.requeue(seq, worker.clock.now())

        assert worker.submit(requeue).result(5) is True
        worker.wake.set()
        eventually(lambda: {u for (u,) in rows(Path(path), "SELECT user_id FROM profiles")} == {"u0", "u1"})
    finally:
        worker.stop()
    db = Path(path)
    assert rows(db, "SELECT count(*) FROM inbox_failed") == [(0,)]
    assert rows(db, "SELECT message_id FROM messages ORDER BY 1") == [("m-u0",), ("m-u1",)]
    assert worker.counts.snapshot()["inbox.failed"] == 1  # once, before the fix
