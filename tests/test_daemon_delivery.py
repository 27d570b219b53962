"""The daemon's deliveries on their own thread: a slow provider does not hold up the events behind
it, and a changed journeys.toml rebuilds the connectors without a restart."""

from __future__ import annotations

import time
from pathlib import Path

from .test_daemon import daemons, eventually, rows  # noqa: F401 - the fixture
from .test_smtp import Server
from .test_webhook import Receiver

JOURNEYS = """\
journey "Slow hook" {
  entry when event "Slow"
  webhook "crm" with { user_id: user.id }
}

journey "Quick mail" {
  entry when event "Quick"
  send email "hello"
}
"""
TEMPLATE = """\
---
subject: "Hello"
from: "Shop <hello@shop.example.com>"
---
<p>Hello.</p>
"""


def project(root: Path, smtp_port: int, hook_url: str) -> Path:
    (root / "journeys").mkdir(parents=True, exist_ok=True)
    (root / "templates" / "email").mkdir(parents=True, exist_ok=True)
    (root / "journeys.toml").write_text(f"""\
[project]
name = "deliveries"
public_url = "https://journeys.example.com"

[store]
url = "sqlite:///data/d.db"

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

[webhooks.crm]
url = "{hook_url}"
timeout = "10s"
""")
    (root / "journeys" / "j.journey").write_text(JOURNEYS)
    (root / "templates" / "email" / "hello.j2").write_text(TEMPLATE)
    return root


SECRET = {"JOURNEYS_UNSUBSCRIBE_SECRET": "unsubscribe-secret-for-tests-0123456789"}


def slow(seconds: float):
    def answer(req):
        time.sleep(seconds)
        return 200, {"Content-Type": "application/json"}, {"ok": True}
    return answer


def test_a_slow_provider_does_not_hold_up_later_events(tmp_path, daemons):
    smtp, hook = Server().start(), Receiver(slow(4.0))
    try:
        root = project(tmp_path / "p", smtp.port, hook.url)
        d = daemons(root, None, **SECRET)
        db = root / "data" / "d.db"
        d.post("identify", {"userId": "u2", "traits": {"email": "u2@example.com"}})
        assert d.post("track", {"userId": "u1", "event": "Slow"}).status_code == 200
        eventually(lambda: hook.requests, timeout=5, every=0.01)  # the webhook call is now hanging
        started = time.monotonic()
        assert d.post("track", {"userId": "u2", "event": "Quick"}).status_code == 200
        eventually(lambda: smtp.handler.messages, timeout=5, every=0.01)
        took = time.monotonic() - started
        assert took < 1.5, f"the email waited {took:.2f}s behind the slow webhook"
        eventually(lambda: rows(db, "SELECT kind, state FROM outbox ORDER BY kind")
                   == [("email", "delivered"), ("webhook", "delivered")], timeout=10)
        assert d.stop() == 0
    finally:
        smtp.stop()
        hook.close()


def test_a_changed_journeys_toml_rebuilds_the_connectors(tmp_path, daemons):
    first, second, hook = Server().start(), Server().start(), Receiver()
    try:
        root = project(tmp_path / "p", first.port, hook.url)
        d = daemons(root, None, JOURNEYS_RELOAD_POLL="0.2", **SECRET)
        d.post("identify", {"userId": "u1", "traits": {"email": "u1@example.com"}})
        d.post("track", {"userId": "u1", "event": "Quick"})
        eventually(lambda: first.handler.messages, timeout=5)

        toml = root / "journeys.toml"
        toml.write_text(toml.read_text().replace(f"port = {first.port}", f"port = {second.port}"))
        eventually(lambda: d.readiness()["reloads"]["ok"] >= 1, timeout=10)
        d.post("identify", {"userId": "u2", "traits": {"email": "u2@example.com"}})
        d.post("track", {"userId": "u2", "event": "Quick"})
        eventually(lambda: second.handler.messages, timeout=5)
        assert [m[1] for m in first.handler.messages] == [["u1@example.com"]]
        assert [m[1] for m in second.handler.messages] == [["u2@example.com"]]

        # limits that do not parse fail the reload; the running connectors stay
        toml.write_text(toml.read_text().replace("default = true", "default = true\nrate = \"fast\""))
        eventually(lambda: d.readiness()["reload_errors"], timeout=10)
        errors = d.readiness()["reload_errors"]
        assert "journeys.toml" in errors[0] and "rate" in errors[0], errors
        d.post("identify", {"userId": "u3", "traits": {"email": "u3@example.com"}})
        d.post("track", {"userId": "u3", "event": "Quick"})
        eventually(lambda: len(second.handler.messages) == 2, timeout=5)
        assert d.stop() == 0
    finally:
        first.stop()
        second.stop()
        hook.close()
