"""Delivery feedback without a daemon: what a DSN and a Resend webhook report, hard or soft; that
the dispatcher writes a hard bounce or a dead push token as an event into the inbox in the
transaction that settles the attempt; and that the engine's delivery steps suppress what the
events make undeliverable, with the reason `undeliverable`."""

from __future__ import annotations

import json
import random
from datetime import datetime, timedelta, timezone

import pytest
from svix.webhooks import Webhook

from connectors._push import PushResult
from connectors.base import MalformedReport
from connectors.dsn import hard, parse
from connectors.errors import InvalidRecipient, PermanentError
from connectors.recording import RecordingConnector
from connectors.resend import UnverifiedWebhook, verify_webhook, webhook_feedback, webhook_secrets
from engine.core.delivery import feedback_traits
from engine.daemon.deliveries.dispatch import Dispatcher
from engine.daemon.deliveries.feedback import FeedbackWriter
from engine.store.inbox import Inbox, message_from_json
from engine.store.outbox import Entry, SqliteOutbox
from engine.store.pg_outbox import PostgresOutbox
from engine.store.pg_store import PostgresStore
from engine.store.sqlite_store import SqliteStore

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=timezone.utc)
SECRET = "whsec_" + "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"


def dsn(*recipients: str, original: str | None = "<4f1c2a9e0d3b7c6a5e8f9012@shop.example.com>",
        third: str = "text/rfc822-headers") -> bytes:
    """A DSN as Postfix writes one: a human part, the delivery-status, the original headers."""
    blocks = "\n".join(recipients)
    headers = (f"\n--B\nContent-Type: {third}\n\nFrom: Shop <hello@shop.example.com>\nTo: ann@example.com\n"
               f"Subject: Hello\nMessage-ID: {original}\n") if original else ""
    return (f"From: MAILER-DAEMON@mx.example.net\nTo: hello@shop.example.com\nMessage-ID: <dsn-1@mx.example.net>\n"
            f"Subject: Undelivered Mail Returned to Sender\nMIME-Version: 1.0\n"
            f"Content-Type: multipart/report; report-type=delivery-status; boundary=\"B\"\n\n"
            f"--B\nContent-Type: text/plain\n\nYour message could not be delivered.\n\n"
            f"--B\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx.example.net\n\n{blocks}\n"
            f"{headers}\n--B--\n").encode()


def recipient(address: str, action: str, status: str, diagnostic: str = "") -> str:
    lines = [f"Final-Recipient: rfc822; {address}", f"Action: {action}", f"Status: {status}"]
    if diagnostic:
        lines.append(f"Diagnostic-Code: smtp; {diagnostic}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------- DSNs

def test_a_dsn_reports_each_failed_or_delayed_recipient_hard_only_when_the_address_is_dead():
    reports = parse(dsn(recipient("gone@example.com", "failed", "5.1.1", "550 5.1.1 <gone@example.com>: User unknown"),
                        recipient("full@example.com", "failed", "5.2.2", "552 5.2.2 Mailbox full"),
                        recipient("spam@example.com", "failed", "5.7.1", "550 5.7.1 Message rejected as spam"),
                        recipient("later@example.com", "delayed", "4.4.1", "connect timed out"),
                        recipient("fine@example.com", "delivered", "2.0.0")))
    assert [(r.address, r.bounce) for r in reports] == [
        ("gone@example.com", "hard"), ("full@example.com", "soft"), ("spam@example.com", "soft"),
        ("later@example.com", "soft")]
    assert {r.action_id for r in reports} == {"4f1c2a9e0d3b7c6a5e8f9012"}  # from the original Message-ID
    assert reports[0].report_id == "<dsn-1@mx.example.net>" and "User unknown" in reports[0].reason


def test_the_original_message_may_come_back_whole():
    [report] = parse(dsn(recipient("gone@example.com", "failed", "5.1.1"), third="message/rfc822"))
    assert report.action_id == "4f1c2a9e0d3b7c6a5e8f9012" and report.bounce == "hard"


def test_a_dsn_without_the_original_headers_names_no_action():
    [report] = parse(dsn(recipient("gone@example.com", "failed", "5.1.1"), original=None))
    assert report.action_id is None


@pytest.mark.parametrize("raw, field", [
    (b"", "body"),
    (b"From: a@b\nSubject: hi\n\nnot a report\n", "Content-Type"),
    (b"Content-Type: multipart/report; report-type=disposition-notification; boundary=B\n\n--B\n"
     b"Content-Type: text/plain\n\nx\n--B--\n", "report-type"),
    (b"Content-Type: multipart/report; report-type=delivery-status; boundary=B\n\n--B\n"
     b"Content-Type: text/plain\n\nx\n--B--\n", "message/delivery-status"),
    (dsn("Final-Recipient: rfc822; gone@example.com\nStatus: 5.1.1\n"), "recipient 1: Action"),
    (dsn("Action: failed\nStatus: 5.1.1\n"), "recipient 1: Final-Recipient"),
    (dsn("Final-Recipient: rfc822; gone@example.com\nAction: failed\nStatus: bounced\n"), "recipient 1: Status"),
])
def test_what_is_not_a_dsn_is_refused_naming_the_field(raw, field):
    with pytest.raises(MalformedReport) as e:
        parse(raw)
    assert e.value.field == field


def test_headers_the_standard_library_cannot_read_are_a_malformed_body_not_a_crash():
    with pytest.raises(MalformedReport) as e:  # email's Message-ID parser raises IndexError on `<>`
        parse(dsn(recipient("gone@example.com", "failed", "5.1.1"), original="<>"))
    assert e.value.field == "body"


@pytest.mark.parametrize("status, reply, dead", [
    ("5.1.1", 550, True), ("5.1.10", 550, True), ("5.2.1", 550, True), ("5.4.4", 550, True),
    ("5.2.2", 552, False), ("5.7.1", 550, False), ("4.1.1", 450, False), (None, 550, True), (None, 554, False)])
def test_hard_means_the_address_itself_cannot_receive(status, reply, dead):
    assert hard(status, reply) is dead


# ---------------------------------------------------------------------- Resend's webhooks

def signed(payload: dict, secret: str = SECRET, msg_id: str = "msg_1", at: datetime | None = None) -> tuple[bytes, dict]:
    body = json.dumps(payload).encode()
    at = at or datetime.now(timezone.utc)
    signature = Webhook(secret).sign(msg_id, at, body.decode())
    return body, {"svix-id": msg_id, "svix-timestamp": str(int(at.timestamp())), "svix-signature": signature}


def event(kind: str, **data) -> dict:
    return {"type": kind, "created_at": "2026-03-02T10:00:00.000Z",
            "data": {"email_id": "56761188-7520-42d8-8898-ff6fc54ce618", "from": "Shop <hello@shop.example.com>",
                     "to": ["ann@example.com"], "subject": "Hello",
                     "tags": [{"name": "journeys_action", "value": "4f1c2a9e0d3b7c6a5e8f9012"}], **data}}


def test_a_signed_webhook_is_verified_and_names_the_connector_whose_secret_signed_it():
    body, headers = signed(event("email.complained"))
    other = "whsec_" + "c2VjcmV0LW9mLWFub3RoZXItZW5kcG9pbnQ="
    assert verify_webhook(body, headers, {"marketing": other, "resend": SECRET}) == "resend"


@pytest.mark.parametrize("tamper", ["body", "signature", "old", "missing"])
def test_a_webhook_that_does_not_verify_is_refused(tamper):
    body, headers = signed(event("email.complained"), at=datetime.now(timezone.utc) - timedelta(minutes=10)
                           if tamper == "old" else None)
    if tamper == "body":
        body = body.replace(b"ann@", b"bob@")
    elif tamper == "signature":
        headers["svix-signature"] = "v1,Zm9yZ2Vk"
    elif tamper == "missing":
        del headers["svix-id"]
    with pytest.raises(UnverifiedWebhook):
        verify_webhook(body, headers, {"resend": SECRET})


def test_bounces_and_complaints_are_reported_and_other_events_ignored():
    [permanent] = webhook_feedback(event("email.bounced", bounce={
        "type": "Permanent", "subType": "General", "message": "The recipient's address does not exist"}), "resend")
    assert (permanent.kind, permanent.bounce, permanent.address, permanent.action_id) == (
        "bounce", "hard", "ann@example.com", "4f1c2a9e0d3b7c6a5e8f9012")
    assert "does not exist" in permanent.reason
    [transient] = webhook_feedback(event("email.bounced", bounce={"type": "Transient", "subType": "MailboxFull"}),
                                   "resend")
    assert transient.bounce == "soft"
    [complaint] = webhook_feedback(event("email.complained", tags={"journeys_action": "abc"}), "resend", "msg_9")
    assert (complaint.kind, complaint.action_id, complaint.report_id) == ("complaint", "abc", "msg_9")
    assert webhook_feedback(event("email.opened"), "resend") == []


@pytest.mark.parametrize("payload, field", [
    ([], "body"), ({"data": {}}, "type"), ({"type": "email.bounced"}, "data"),
    (event("email.bounced", to=[]), "data.to"), (event("email.bounced"), "data.bounce.type")])
def test_a_webhook_that_is_not_as_documented_is_refused_naming_the_field(payload, field):
    with pytest.raises(MalformedReport) as e:
        webhook_feedback(payload, "resend")
    assert e.value.field == field


def test_each_resend_connector_has_its_webhook_secret_from_the_variable_it_names():
    connectors = {"resend": {"type": "resend"}, "news": {"type": "resend", "webhook_secret_env": "NEWS_SECRET"},
                  "smtp": {"type": "smtp"}}
    assert webhook_secrets(connectors, {"RESEND_WEBHOOK_SECRET": "a", "NEWS_SECRET": "b"}) == {"resend": "a", "news": "b"}
    assert webhook_secrets(connectors, {}) == {}


# ---------------------------------------------------------------------- the dispatcher's feedback

def entry(n: int, kind: str, connector: str) -> Entry:
    payload = json.dumps({"id": f"a{n}", "kind": kind, "target": "hello", "user": f"u{n}", "data": {}})
    return Entry(f"a{n}", connector, f"u{n}", kind, "hello", payload, T0, T0)


@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path):
    """A store and its outbox, and a reader of its inbox's messages in order."""
    if request.param == "sqlite":
        store = SqliteStore(str(tmp_path / "s.db"))
        Inbox(store.conn)
        yield store, SqliteOutbox(store.conn), lambda: [
            raw for _, raw in store.conn.execute("SELECT seq, raw FROM inbox ORDER BY seq")]
        store.close()
    else:  # the cluster's shared inbox, on the delivery loop's own connection as the daemon has it
        with PostgresStore(request.getfixturevalue("pg_url")) as store:
            yield store, PostgresOutbox(store.conn), lambda: [
                bytes(raw) for (raw,) in store.conn.execute("SELECT raw FROM inbox ORDER BY seq")]


def test_a_hard_bounce_and_a_dead_token_become_events_in_the_inbox_with_the_settle(store):
    store, outbox, inbox = store
    mail = RecordingConnector("smtp", "email", fail=[
        InvalidRecipient("no such mailbox", status=550, answer="5.1.1 no such user", stale="gone@example.com"),
        PermanentError("the SMTP server refused the message", status=554, answer="5.7.1 spam")])
    push = RecordingConnector("fcm", "push", fail=[InvalidRecipient("gone", status=404, stale="tok-A")])

    class TwoDevices:  # one accepted the push, the other is gone (connectors._push.fan_out's result)
        name, channel = "browser", "push"

        def deliver(self, delivery):
            return PushResult(provider_id="m1", provider_ids=("m1",), stale=("https://push.example/gone",))

    with store.transaction():
        outbox.add([entry(1, "email", "smtp"), entry(2, "email", "smtp"), entry(3, "push", "fcm"),
                    entry(4, "push", "browser")])
    dispatcher = Dispatcher(outbox, {"smtp": mail, "fcm": push, "browser": TwoDevices()},
                            profiles=lambda uid: {"email": "x@example.com"},
                            rng=random.Random(1), transaction=store.transaction, feedback=FeedbackWriter(store))
    assert dispatcher.run_due(T0) == 4
    messages = sorted((message_from_json(raw) for raw in inbox()), key=lambda m: m.user_id)
    assert [(m.user_id, m.event, m.properties.get("type"), m.properties.get("email") or m.properties.get("token"))
            for m in messages] == [("u1", "Email Bounced", "hard", "gone@example.com"),
                                   ("u3", "Push Token Unregistered", None, "tok-A"),
                                   ("u4", "Push Token Unregistered", None, "https://push.example/gone")]
    assert messages[0].properties["provider"] == "smtp" and "no such user" in messages[0].properties["reason"]


# ---------------------------------------------------------------------- the engine's side

@pytest.mark.parametrize("event, props, traits, updates", [
    ("Email Bounced", {"type": "hard", "email": "ann@example.com"}, {}, {"email_bounced": "ann@example.com"}),
    ("Email Bounced", {}, {}, {"email_bounced": True}),
    ("Email Bounced", {"type": "soft", "email": "ann@example.com"}, {}, {}),
    ("Email Marked as Spam", {"provider": "resend"}, {}, {"email_unsubscribed": True}),
    ("Push Token Unregistered", {"token": "t1"}, {"push_tokens": ["t1", "t2"], "push_token": "t1"},
     {"push_tokens": ["t2"], "push_token": None}),
    ("Push Token Unregistered", {"token": "https://push.example/1"},
     {"webpush_subscriptions": [{"endpoint": "https://push.example/1"}]}, {"webpush_subscriptions": []}),
    ("Order Completed", {"type": "hard"}, {}, {}),
])
def test_what_each_feedback_event_does_to_the_profile(event, props, traits, updates):
    assert feedback_traits(event, props, traits) == updates
