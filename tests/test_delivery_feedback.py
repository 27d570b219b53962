"""Delivery feedback seen from outside, on `journeys serve` as a real process: an SMTP server on
loopback that refuses a recipient, a DSN posted to the daemon, a signed Resend webhook, FCM and a
Web Push service answering that a device is gone. Each becomes a Segment-spec event in the user's
trail, and the next message on that channel is suppressed (`undeliverable`, or `consent` for a
complaint) instead of being attempted: the provider's server receives nothing more for them. The
dry-run of a recorded log with those events suppresses exactly what the daemon does."""

from __future__ import annotations

import email
import json
import os
import subprocess
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path

import httpx
import pytest
from svix.webhooks import Webhook

from .conftest import ROOT
from .test_daemon import daemons, eventually  # noqa: F401 - the fixture
from .test_fcm import PROJECT, FakeGoogle, account, fcm_error
from .test_http_email import KEY as RESEND_KEY
from .test_http_email import FakeResend
from .test_smtp import Handler, Server
from .test_webpush import APP_KEY_RAW, SUBJECT, FakePushService

FEEDBACK_TOKEN = "feedback-token-for-tests"
WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

JOURNEYS = {"email": """\
journey "Mail" {
  entry when event "Mail"
  reenter always
  send email "hello"
}
""", "push": """\
journey "Push" {
  entry when event "Push"
  reenter always
  send push "nudge"
}
"""}
EMAIL = """\
---
subject: "Hello"
from: "Shop <hello@shop.example.com>"
---
<p>Hello.</p>
"""
PUSH = """\
---
title: "Hello"
url: https://shop.example.com/
---
Something new for you.
"""


class Recipients(Handler):
    """The test SMTP server's handler, counting every RCPT TO it is asked, refused ones too."""

    def __init__(self):
        super().__init__()
        self.asked: list[str] = []

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        self.asked.append(address)
        return await super().handle_RCPT(server, session, envelope, address, rcpt_options)


def project(root: Path, connectors: str) -> Path:
    (root / "journeys").mkdir(parents=True, exist_ok=True)
    (root / "templates" / "email").mkdir(parents=True, exist_ok=True)
    (root / "templates" / "push").mkdir(parents=True, exist_ok=True)
    (root / "journeys.toml").write_text(f"""\
[project]
name = "feedback"
public_url = "https://journeys.example.com"

[store]
url = "sqlite:///data/d.db"

[ingest]
write_keys_env = ["JOURNEYS_WRITE_KEY"]

{connectors}
""")
    channel = "push" if 'channel = "push"' in connectors else "email"  # the journey its connector can send
    (root / "journeys" / "j.journey").write_text(JOURNEYS[channel])
    (root / "templates" / "email" / "hello.j2").write_text(EMAIL)
    (root / "templates" / "push" / "nudge.j2").write_text(PUSH)
    return root


def smtp_connector(port: int) -> str:
    return f"""\
[connectors.smtp]
channel = "email"
type = "smtp"
host = "127.0.0.1"
port = {port}
security = "none"
timeout = "5s"
default = true
"""


def trail(d, user: str) -> list[str]:
    r = httpx.get(f"{d.url}/admin/users/{user}/trace", headers=d.operator, timeout=5)
    return [row["line"] for row in r.json()["trail"]] if r.status_code == 200 else []


def user(d, uid: str) -> dict:
    r = httpx.get(f"{d.url}/admin/users/{uid}", headers=d.operator, timeout=5)
    assert r.status_code == 200, r.text
    return r.json()


def actions(d, uid: str) -> list[tuple]:
    """The user's actions, oldest first: (kind, outcome, reason, rule)."""
    return [(a["kind"], a["outcome"], a["reason"], a["rule"]) for a in reversed(user(d, uid)["recent_actions"])]


def events_in(lines: list[str], name: str) -> list[str]:
    return [line for line in lines if name in line]


# ---------------------------------------------------------------------- SMTP

@pytest.fixture()
def smtp():
    server = Server()
    server.handler = Recipients()
    server.start()
    yield server
    server.stop()


def test_a_recipient_refused_at_rcpt_is_a_hard_bounce_and_is_not_mailed_again(tmp_path, daemons, smtp):
    smtp.handler.replies["gone@example.com"] = "550 5.1.1 <gone@example.com>: Recipient address rejected: User unknown"
    d = daemons(project(tmp_path / "p", smtp_connector(smtp.port)), None)
    for uid, address in (("u1", "gone@example.com"), ("u2", "ann@example.com")):
        d.post("identify", {"userId": uid, "traits": {"email": address}})
        d.post("track", {"userId": uid, "event": "Mail"})

    lines = eventually(lambda: events_in(trail(d, "u1"), "Email Bounced"), timeout=10)
    assert len(lines) == 1
    assert eventually(lambda: user(d, "u1")["traits"].get("email_bounced") == "gone@example.com", timeout=5)

    for uid in ("u1", "u2"):
        d.post("track", {"userId": uid, "event": "Mail"})
    eventually(lambda: len(smtp.handler.messages) == 2, timeout=10)  # ann's second email
    assert eventually(lambda: len(actions(d, "u1")) == 2)
    assert actions(d, "u1") == [("email", "sent", None, None), ("email", "suppressed", "undeliverable", "email bounced")]
    assert smtp.handler.asked.count("gone@example.com") == 1  # the server was never asked again
    assert [m[1] for m in smtp.handler.messages] == [["ann@example.com"], ["ann@example.com"]]
    assert any("suppressed by undeliverable (email bounced)" in line for line in trail(d, "u1")), trail(d, "u1")
    assert d.stop() == 0


def dsn_for(message_id: str, address: str, status: str = "5.1.1", action: str = "failed") -> bytes:
    return (f"From: MAILER-DAEMON@mx.example.net\nTo: hello@shop.example.com\nMessage-ID: <dsn-7@mx.example.net>\n"
            f"Subject: Undelivered Mail Returned to Sender\nMIME-Version: 1.0\n"
            f"Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\n\n"
            f"--B\nContent-Type: text/plain\n\nYour message could not be delivered.\n\n"
            f"--B\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.net\n\n"
            f"Final-Recipient: rfc822; {address}\nAction: {action}\nStatus: {status}\n"
            f"Diagnostic-Code: smtp; 550 {status} <{address}>: mailbox unavailable\n\n"
            f"--B\nContent-Type: text/rfc822-headers\n\nFrom: Shop <hello@shop.example.com>\nTo: {address}\n"
            f"Subject: Hello\nMessage-ID: {message_id}\n\n--B--\n").encode()


def test_a_dsn_posted_to_the_daemon_bounces_the_user_it_was_sent_to(tmp_path, daemons, smtp):
    d = daemons(project(tmp_path / "p", smtp_connector(smtp.port)), None, JOURNEYS_FEEDBACK_TOKEN=FEEDBACK_TOKEN)
    d.post("identify", {"userId": "u1", "traits": {"email": "ann@example.com"}})
    d.post("track", {"userId": "u1", "event": "Mail"})
    eventually(lambda: smtp.handler.messages, timeout=10)
    message_id = email.message_from_bytes(smtp.handler.messages[0][2])["Message-ID"]
    url, bearer = f"{d.url}/v1/feedback/dsn", {"Authorization": f"Bearer {FEEDBACK_TOKEN}",
                                               "Content-Type": "message/rfc822"}
    raw = dsn_for(message_id, "ann@example.com")

    # refused without the token, or with a write key: nothing recorded
    assert httpx.post(url, content=raw, timeout=5).status_code == 401
    assert httpx.post(url, content=raw, auth=("test-write-key", ""), timeout=5).status_code == 401
    # not a DSN: a 400 naming the field
    bad = httpx.post(url, content=b"Subject: hi\n\nnot a report\n", headers=bearer, timeout=5)
    assert bad.status_code == 400 and bad.json()["field"] == "Content-Type", bad.text
    bad = httpx.post(url, content=raw.replace(b"Status: 5.1.1\n", b""), headers=bearer, timeout=5)
    assert bad.status_code == 400 and bad.json()["field"] == "recipient 1: Status", bad.text
    # a DSN for a message that is not ours: answered, counted, not recorded
    other = httpx.post(url, content=dsn_for("<elsewhere@example.net>", "bob@example.com"), headers=bearer, timeout=5)
    assert other.status_code == 200 and other.json() == {"recorded": 0, "unattributed": 1, "ignored": 0}

    r = httpx.post(url, content=raw, headers=bearer, timeout=5)
    assert r.status_code == 200 and r.json() == {"recorded": 1, "unattributed": 0, "ignored": 0}, r.text
    assert httpx.post(url, content=raw, headers=bearer, timeout=5).status_code == 200  # the MTA sent it twice

    eventually(lambda: user(d, "u1")["traits"].get("email_bounced") == "ann@example.com", timeout=10)
    d.post("track", {"userId": "u1", "event": "Mail"})
    assert eventually(lambda: len(actions(d, "u1")) == 2, timeout=10)
    assert actions(d, "u1")[1] == ("email", "suppressed", "undeliverable", "email bounced")
    assert len(events_in(trail(d, "u1"), "Email Bounced")) == 1  # the second copy was the same event
    assert len(smtp.handler.messages) == 1
    assert d.stop() == 0


# ---------------------------------------------------------------------- Resend

@pytest.fixture()
def resend():
    server = FakeResend()
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()
    yield server
    server.release.set()
    server.shutdown()
    server.server_close()


def signed(payload: dict, msg_id: str, secret: str = WEBHOOK_SECRET) -> tuple[bytes, dict]:
    body = json.dumps(payload).encode()
    now = datetime.now(timezone.utc)
    return body, {"svix-id": msg_id, "svix-timestamp": str(int(now.timestamp())),
                  "svix-signature": Webhook(secret).sign(msg_id, now, body.decode()), "Content-Type": "application/json"}


def test_a_signed_resend_complaint_opts_the_user_out_and_a_forged_one_records_nothing(tmp_path, daemons, resend):
    connector = f"""\
[connectors.resend]
channel = "email"
type = "resend"
base_url = "{resend.url}"
default = true
"""
    d = daemons(project(tmp_path / "p", connector), None, RESEND_API_KEY=RESEND_KEY,
                RESEND_WEBHOOK_SECRET=WEBHOOK_SECRET)
    d.post("identify", {"userId": "u1", "traits": {"email": "ann@example.com"}})
    d.post("track", {"userId": "u1", "event": "Mail"})
    eventually(lambda: resend.requests, timeout=10)
    [tag] = resend.requests[0]["body"]["tags"]
    complaint = {"type": "email.complained", "created_at": "2026-03-02T10:00:00.000Z",
                 "data": {"email_id": "49a3999c-0ce1-4ea6-ab68-afcd6dc2e794", "to": ["ann@example.com"],
                          "from": "Shop <hello@shop.example.com>", "subject": "Hello", "tags": [tag]}}
    url = f"{d.url}/v1/feedback/resend"

    body, headers = signed(complaint, "msg_forged", secret="whsec_c2VjcmV0LW9mLWFub3RoZXItZW5kcG9pbnQ=")
    forged = httpx.post(url, content=body, headers=headers, timeout=5)
    assert forged.status_code == 401 and forged.json()["field"] == "svix-signature", forged.text
    body, headers = signed({"type": "email.bounced", "data": {"to": ["ann@example.com"]}}, "msg_bad")
    bad = httpx.post(url, content=body, headers=headers, timeout=5)
    assert bad.status_code == 400 and bad.json()["field"] == "data.bounce.type", bad.text

    body, headers = signed(complaint, "msg_good")
    r = httpx.post(url, content=body, headers=headers, timeout=5)
    assert r.status_code == 200 and r.json()["recorded"] == 1, r.text
    eventually(lambda: user(d, "u1")["traits"].get("email_unsubscribed") is True, timeout=10)
    d.post("track", {"userId": "u1", "event": "Mail"})
    assert eventually(lambda: len(actions(d, "u1")) == 2, timeout=10)
    assert actions(d, "u1")[1] == ("email", "suppressed", "consent", "email opt-out")
    assert len(events_in(trail(d, "u1"), "Email Marked as Spam")) == 1  # the forged one left nothing
    assert len(resend.requests) == 1
    assert d.stop() == 0


# ---------------------------------------------------------------------- push

def test_an_unregistered_fcm_token_is_dropped_and_the_next_push_not_attempted(tmp_path, daemons):
    google = FakeGoogle()
    try:
        google.script["tok-A"] = [fcm_error(404, "NOT_FOUND", "UNREGISTERED", "Requested entity was not found.")]
        connector = f"""\
[connectors.fcm]
channel = "push"
type = "fcm"
project_id = "{PROJECT}"
credentials_env = "FCM_CREDENTIALS"
base_url = "{google.base}"
default = true
"""
        d = daemons(project(tmp_path / "p", connector), None, FCM_CREDENTIALS=account(google))
        d.post("identify", {"userId": "u1", "traits": {"push_tokens": ["tok-A"]}})
        d.post("track", {"userId": "u1", "event": "Push"})
        lines = eventually(lambda: events_in(trail(d, "u1"), "Push Token Unregistered"), timeout=10)
        assert len(lines) == 1
        eventually(lambda: user(d, "u1")["traits"]["push_tokens"] == [], timeout=5)
        d.post("track", {"userId": "u1", "event": "Push"})
        assert eventually(lambda: len(actions(d, "u1")) == 2, timeout=10)
        assert actions(d, "u1")[1] == ("push", "suppressed", "undeliverable", "no push device left")
        assert [s["message"]["token"] for s in google.sends] == ["tok-A"]
        assert d.stop() == 0
    finally:
        google.close()


def test_a_web_push_subscription_gone_410_is_dropped_and_the_next_push_not_attempted(tmp_path, daemons):
    service = FakePushService()
    try:
        browser = service.browser("b1")
        service.script["/push/b1"] = [(410, {})]
        connector = f"""\
[connectors.browser]
channel = "push"
type = "webpush"
vapid_private_key_env = "VAPID_PRIVATE_KEY"
vapid_subject = "{SUBJECT}"
default = true
"""
        d = daemons(project(tmp_path / "p", connector), None, VAPID_PRIVATE_KEY=APP_KEY_RAW)
        d.post("identify", {"userId": "u1", "traits": {"webpush_subscriptions": [browser.subscription()]}})
        d.post("track", {"userId": "u1", "event": "Push"})
        eventually(lambda: events_in(trail(d, "u1"), "Push Token Unregistered"), timeout=10)
        eventually(lambda: user(d, "u1")["traits"]["webpush_subscriptions"] == [], timeout=5)
        d.post("track", {"userId": "u1", "event": "Push"})
        assert eventually(lambda: len(actions(d, "u1")) == 2, timeout=10)
        assert actions(d, "u1")[1] == ("push", "suppressed", "undeliverable", "no push device left")
        assert len(service.received) == 1
        assert d.stop() == 0
    finally:
        service.close()


# ---------------------------------------------------------------------- the dry-run

LOG = [
    {"type": "identify", "userId": "u1", "traits": {"email": "gone@example.com"}, "timestamp": "2026-03-02T10:00:00Z"},
    {"type": "identify", "userId": "u2", "traits": {"email": "full@example.com"}, "timestamp": "2026-03-02T10:00:01Z"},
    {"type": "identify", "userId": "u3", "traits": {"email": "old@example.com"}, "timestamp": "2026-03-02T10:00:02Z"},
    {"type": "track", "userId": "u1", "event": "Email Bounced", "timestamp": "2026-03-02T10:01:00Z",
     "properties": {"type": "hard", "email": "gone@example.com", "provider": "smtp"}},
    {"type": "track", "userId": "u2", "event": "Email Bounced", "timestamp": "2026-03-02T10:01:01Z",
     "properties": {"type": "soft", "email": "full@example.com", "provider": "smtp"}},
    {"type": "track", "userId": "u3", "event": "Email Bounced", "timestamp": "2026-03-02T10:01:02Z",
     "properties": {"type": "hard", "email": "old@example.com", "provider": "smtp"}},
    {"type": "identify", "userId": "u3", "traits": {"email": "new@example.com"}, "timestamp": "2026-03-02T10:01:03Z"},
    {"type": "track", "userId": "u1", "event": "Mail", "timestamp": "2026-03-02T10:02:00Z"},
    {"type": "track", "userId": "u2", "event": "Mail", "timestamp": "2026-03-02T10:02:01Z"},
    {"type": "track", "userId": "u3", "event": "Mail", "timestamp": "2026-03-02T10:02:02Z"},
]


def test_the_dry_run_of_a_log_with_bounces_suppresses_exactly_what_the_daemon_does(tmp_path, daemons, smtp):
    root = project(tmp_path / "p", smtp_connector(smtp.port))
    log = tmp_path / "events.jsonl"
    log.write_text("".join(json.dumps(m) + "\n" for m in LOG))
    sends = tmp_path / "sends.jsonl"
    out = subprocess.run([sys.executable, "-m", "engine.cli", "simulate", str(root), "--events", str(log),
                          "--sends", str(sends), "--quiet"], cwd=ROOT, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "JOURNEYS_UNSUBSCRIBE_SECRET": "x" * 32})
    assert out.returncode == 0, out.stderr
    simulated = {(a["user"], a["outcome"], a["reason"], a["rule"])
                 for a in map(json.loads, sends.read_text().splitlines())}
    assert simulated == {("u1", "suppressed", "undeliverable", "email bounced"), ("u2", "sent", None, None),
                         ("u3", "sent", None, None)}  # a soft bounce, and a new address, suppress nothing

    d = daemons(root, None)
    for message in LOG:
        kind = message.pop("type")
        assert d.post(kind, message).status_code == 200
    eventually(lambda: all(len(actions(d, u)) == 1 for u in ("u1", "u2", "u3")), timeout=10)
    live = {(u, *actions(d, u)[0][1:]) for u in ("u1", "u2", "u3")}
    assert live == simulated
    eventually(lambda: len(smtp.handler.messages) == 2, timeout=10)
    assert sorted(m[1][0] for m in smtp.handler.messages) == ["full@example.com", "new@example.com"]
    assert d.stop() == 0
