"""Webhooks against a real HTTP server on loopback that does what a receiver should: verifies the
signature with the shared secret over the raw body, the timestamp within tolerance and the
idempotency key, and answers 2xx, 4xx, 5xx, 429 with Retry-After, a redirect, or nothing."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import tomllib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import pytest

from connectors.base import Delivery, Result
from connectors.errors import ConfigurationError, PermanentError, RetryableError
from connectors.webhook import WebhookConnector, parse_duration, sign, verify
from journeys.config import ProjectConfig

SECRET = "whsec_test"


def receiver_verify(secret: str, body: bytes, timestamp: str, signature: str, tolerance: int = 300) -> bool:
    """The module docstring's verify(), as a receiver would paste it."""
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    if abs(time.time() - sent) > tolerance:
        return False
    expected = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(signature, "sha256=" + expected)


class Receiver:
    def __init__(self, answer=None):
        self.requests: list[dict] = []
        self.answer = answer or (lambda req: (200, {"Content-Type": "application/json"}, {"id": "evt_1"}))
        self.connections: set = set()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                outer.connections.add(self.client_address)
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                if len(raw) < length:  # the sender died mid-request (a killed daemon): no call was made
                    self.close_connection = True
                    return
                headers = {k.lower(): v for k, v in self.headers.items()}
                req = {"path": urlsplit(self.path).path, "target": self.path, "headers": headers, "raw": raw,
                       "verified": receiver_verify(SECRET, raw, headers.get("x-journeys-timestamp", ""),
                                                   headers.get("x-journeys-signature", ""))}
                outer.requests.append(req)
                status, extra, payload = outer.answer(req)
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    for k, v in extra.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.httpd.block_on_close = False
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/hooks/nudge"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def receiver():
    made = []

    def make(answer=None):
        r = Receiver(answer)
        made.append(r)
        return r

    yield make
    for r in made:
        r.close()


def hook(url, **kw):
    kw.setdefault("secret", SECRET)
    return WebhookConnector("webhook:crm_nudge", url=url, **kw)


def delivery(i=1, **data):
    return Delivery(action_id=f"act-{i}", kind="webhook", target="crm_nudge", user_id="u1",
                    profile={"email": "secret@example.com"}, data=data or {"sku": "A1", "price": 12.5},
                    journey="browse_abandonment", step="nudge")


def test_signed_json_post_as_documented(receiver):
    rcv = receiver()
    result = hook(rcv.url, headers={"X-Team": "growth"}).deliver(delivery(data_ok=True, sku="Ä1"))
    assert isinstance(result, Result) and result.provider_id == "evt_1" and not result.queued

    (req,) = rcv.requests
    assert req["path"] == "/hooks/nudge"
    assert req["verified"]                                     # the receiver's own check passes
    h = req["headers"]
    assert h["content-type"] == "application/json"
    assert h["idempotency-key"] == "act-1"
    assert abs(int(h["x-journeys-timestamp"]) - time.time()) < 5
    assert h["x-journeys-signature"] == "sha256=" + hmac.new(
        SECRET.encode(), h["x-journeys-timestamp"].encode() + b"." + req["raw"], hashlib.sha256).hexdigest()
    assert h["x-team"] == "growth"
    body = json.loads(req["raw"])
    assert body["id"] == "act-1" and body["webhook"] == "crm_nudge" and body["user_id"] == "u1"
    assert body["journey"] == "browse_abandonment" and body["step"] == "nudge"
    assert body["data"] == {"data_ok": True, "sku": "Ä1"}
    assert body["sent_at"].endswith("Z") and abs(int(h["x-journeys-timestamp"]) - time.mktime(
        time.strptime(body["sent_at"], "%Y-%m-%dT%H:%M:%SZ")) + time.timezone) < 2
    assert b"secret@example.com" not in req["raw"]             # the profile is not sent


def test_signature_fails_with_another_secret_a_changed_body_or_an_old_timestamp():
    body, ts = b'{"id":"x"}', str(int(time.time()))
    sig = sign(SECRET, ts, body)
    assert verify(SECRET, body, ts, sig)
    assert not verify("other", body, ts, sig)
    assert not verify(SECRET, body + b" ", ts, sig)
    old = str(int(time.time()) - 301)
    assert not verify(SECRET, body, old, sign(SECRET, old, body))
    assert verify(SECRET, body, old, sign(SECRET, old, body), tolerance=600)
    assert not verify(SECRET, body, "not-a-number", sig)


def test_a_retried_delivery_carries_the_same_idempotency_key(receiver):
    calls = []
    rcv = receiver(lambda req: (503, {}, b"busy") if not calls.append(1) and len(calls) == 1 else (204, {}, b""))
    c = hook(rcv.url)
    with pytest.raises(RetryableError):
        c.deliver(delivery(7))
    assert isinstance(c.deliver(delivery(7)), Result)
    assert [r["headers"]["idempotency-key"] for r in rcv.requests] == ["act-7", "act-7"]
    assert json.loads(rcv.requests[0]["raw"])["id"] == json.loads(rcv.requests[1]["raw"])["id"]


def test_connections_are_pooled(receiver):
    rcv = receiver()
    c = hook(rcv.url)
    for i in range(5):
        c.deliver(delivery(i))
    assert len(rcv.requests) == 5 and len(rcv.connections) == 1


@pytest.mark.parametrize("status, headers, kind, retry_after", [
    (500, {}, RetryableError, None),
    (502, {}, RetryableError, None),
    (408, {}, RetryableError, None),
    (429, {"Retry-After": "42"}, RetryableError, 42),
    (400, {}, PermanentError, None),
    (404, {}, PermanentError, None),
    (422, {}, PermanentError, None),
    (401, {}, ConfigurationError, None),
    (301, {"Location": "https://new.example.com/hook"}, PermanentError, None),
])
def test_answers_map_to_the_error_tree(receiver, status, headers, kind, retry_after):
    rcv = receiver(lambda req: (status, headers, b"receiver says no"))
    with pytest.raises(kind) as e:
        hook(rcv.url).deliver(delivery())
    assert type(e.value) is kind
    assert e.value.status == status and "receiver says no" in e.value.answer
    if kind is RetryableError:
        assert e.value.retry_after == retry_after
    if status == 301:
        assert "new.example.com" in str(e.value)


def test_2xx_without_json_is_delivered(receiver):
    rcv = receiver(lambda req: (202, {}, b"accepted"))
    result = hook(rcv.url).deliver(delivery())
    assert result.provider_id is None and result.detail == "HTTP 202"


def test_a_hanging_receiver_is_a_retryable_timeout(receiver):
    rcv = receiver(lambda req: (time.sleep(3), (200, {}, b""))[1])
    started = time.monotonic()
    with pytest.raises(RetryableError, match="in time"):
        hook(rcv.url, timeout="300ms").deliver(delivery())
    assert time.monotonic() - started < 2


def test_connection_refused_is_retryable():
    with pytest.raises(RetryableError, match="could not reach"):
        hook("http://127.0.0.1:9/hook").deliver(delivery())


def test_from_journeys_toml(receiver):
    rcv = receiver()
    cfg = ProjectConfig.model_validate(tomllib.loads(f"""
[webhooks.crm_nudge]
url = "{rcv.url}"
secret_env = "CRM_WEBHOOK_SECRET"
timeout = "2s"
headers = {{ "X-Team" = "growth" }}
"""))
    c = WebhookConnector.from_config("crm_nudge", cfg.webhooks["crm_nudge"], env={"CRM_WEBHOOK_SECRET": SECRET})
    assert c.name == "webhook:crm_nudge" and c.channel == "webhook"
    c.deliver(delivery())
    assert rcv.requests[0]["verified"] and rcv.requests[0]["headers"]["x-team"] == "growth"

    unset = WebhookConnector.from_config("crm_nudge", cfg.webhooks["crm_nudge"], env={})
    with pytest.raises(ConfigurationError, match="CRM_WEBHOOK_SECRET"):
        unset.deliver(delivery())
    assert len(rcv.requests) == 1


def test_unsigned_when_no_secret_is_configured(receiver):
    rcv = receiver()
    hook(rcv.url, secret=None).deliver(delivery())
    assert "x-journeys-signature" not in rcv.requests[0]["headers"]
    assert "x-journeys-timestamp" in rcv.requests[0]["headers"]


def test_bad_input():
    with pytest.raises(PermanentError):
        hook("http://127.0.0.1:9").deliver(Delivery("a", "email", "t", "u"))
    with pytest.raises(PermanentError, match="not JSON"):
        hook("http://127.0.0.1:9").deliver(delivery(x=float("nan")))


@pytest.mark.parametrize("text, seconds", [("10s", 10), ("500ms", 0.5), ("1m", 60), ("1.5s", 1.5), ("2", 2), (3, 3)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


def test_bad_duration():
    with pytest.raises(ConfigurationError):
        parse_duration("ten seconds")
