"""ResendConnector against a real HTTP server on loopback that checks Resend's documented request
(POST /emails, Bearer key, Idempotency-Key, the JSON fields) and answers 200, 4xx, 5xx, 429 with
Retry-After, or hangs."""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from connectors import unsubscribe
from connectors.base import Delivery
from connectors.errors import ConfigurationError, InvalidRecipient, PermanentError, RetryableError
from connectors.resend import ResendConnector

from .conftest import SHOP

SECRET = "unsubscribe-secret-for-tests-0123456789"
KEY = "re_test_123456"
ENV = {unsubscribe.SECRET_ENV: SECRET, "RESEND_API_KEY": KEY}
PUBLIC = "https://journeys.example.com"
VIEWED = {"event": "Product Viewed", "timestamp": "2026-03-02T04:31:20Z",
          "properties": {"name": "Vintage Face Cream", "category": "beauty"}}
FIELDS = {"from": str, "to": list, "subject": str, "html": str, "text": str, "reply_to": str, "headers": dict,
          "tags": list}  # tags: [{name, value}], letters, digits, _ and - only


class FakeResend(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[dict] = []
        self.answers: list[tuple[int, dict, dict | str]] = []  # (status, headers, body), one per request
        self.release = threading.Event()
        self.problems: list[str] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: FakeResend

    def log_message(self, *args):
        pass

    def do_POST(self):
        length = int(self.headers.get("Content-Length", 0))
        raw = self.rfile.read(length)
        problems = self.server.problems
        if self.path != "/emails":
            problems.append(f"path {self.path}")
        if self.headers.get("Authorization") != f"Bearer {KEY}":
            problems.append(f"auth {self.headers.get('Authorization')}")
        if not self.headers.get("Content-Type", "").startswith("application/json"):
            problems.append("content type")
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
            problems.append("body is not JSON")
        if isinstance(body, dict):
            for key, value in body.items():
                if key not in FIELDS or not isinstance(value, FIELDS[key]):
                    problems.append(f"field {key}")
            for key in ("from", "to", "subject"):
                if key not in body:
                    problems.append(f"missing {key}")
        self.server.requests.append({"headers": dict(self.headers), "body": body})
        status, headers, answer = self.server.answers.pop(0) if self.server.answers else (
            200, {}, {"id": "49a3999c-0ce1-4ea6-ab68-afcd6dc2e794"})
        if status == 0:  # hang until the test is over
            self.server.release.wait(10)
            return
        data = answer.encode() if isinstance(answer, str) else json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture()
def api():
    server = FakeResend()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield server
    server.release.set()
    server.shutdown()
    server.server_close()


def connector(api, **settings) -> ResendConnector:
    return ResendConnector("resend", {"base_url": api.url, "timeout": "2s", **settings}, ENV, templates=SHOP,
                           public_url=PUBLIC)


def delivery(action_id="act-0001", **kw) -> Delivery:
    base = dict(action_id=action_id, kind="email", target="browse_abandon", user_id="user_42",
                profile={"email": "ann@example.com", "first_name": "Ann"},
                data={"product": "Vintage Face Cream", "category": "beauty"}, named={"viewed": VIEWED},
                journey="Browse abandonment", step="s1")
    base.update(kw)
    return Delivery(**base)


def test_sends_the_documented_request(api):
    c = connector(api)
    result = c.deliver(delivery())
    c.close()
    assert api.problems == []
    assert result.provider_id == "49a3999c-0ce1-4ea6-ab68-afcd6dc2e794"
    [req] = api.requests
    assert req["headers"]["Idempotency-Key"] == "act-0001"
    body = req["body"]
    assert body["from"] == "Shop <hello@shop.example.com>" and body["to"] == ["ann@example.com"]
    assert body["subject"] == "Still thinking it over?" and body["reply_to"] == "support@shop.example.com"
    assert "<strong>Vintage Face Cream</strong>" in body["html"]
    assert "You were looking at Vintage Face Cream in our beauty collection." in body["text"]
    m = re.fullmatch(r"<https://journeys\.example\.com/u/(.+)>", body["headers"]["List-Unsubscribe"])
    assert m and unsubscribe.verify(m.group(1), SECRET) == ("user_42", "email")
    assert body["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    # the tag Resend's webhooks give back, by which a bounce or a complaint finds its action's user
    assert body["tags"] == [{"name": "journeys_action", "value": "act-0001"}]


def test_an_action_id_a_tag_cannot_carry_is_left_out_of_the_tags(api):
    c = connector(api)
    c.deliver(delivery(action_id="act:0001"))
    c.close()
    assert "tags" not in api.requests[0]["body"]


def test_a_retry_sends_the_same_idempotency_key(api):
    api.answers.append((500, {}, {"statusCode": 500, "name": "internal_server_error", "message": "oops"}))
    c = connector(api)
    with pytest.raises(RetryableError):
        c.deliver(delivery("act-7"))
    c.deliver(delivery("act-7"))
    assert [r["headers"]["Idempotency-Key"] for r in api.requests] == ["act-7", "act-7"]
    assert api.requests[0]["body"] == api.requests[1]["body"]


def test_429_is_retryable_after_retry_after(api):
    api.answers.append((429, {"Retry-After": "7"}, {"statusCode": 429, "name": "rate_limit_exceeded",
                                                    "message": "Too many requests"}))
    with pytest.raises(RetryableError) as e:
        connector(api).deliver(delivery())
    assert e.value.status == 429 and e.value.retry_after == 7.0 and "rate_limit_exceeded" in str(e.value)


@pytest.mark.parametrize("status, name, error", [
    (400, "validation_error", PermanentError),
    (422, "invalid_from_address", PermanentError),
    (401, "missing_api_key", ConfigurationError),
    (403, "invalid_api_key", ConfigurationError),
    (409, "concurrent_idempotent_requests", RetryableError),
    (409, "invalid_idempotent_request", PermanentError),
    (500, "internal_server_error", RetryableError),
    (503, "", RetryableError),
])
def test_error_answers_map_to_the_error_tree(api, status, name, error):
    api.answers.append((status, {}, {"statusCode": status, "name": name, "message": "m"} if name else "<html>"))
    with pytest.raises(error) as e:
        connector(api).deliver(delivery())
    assert type(e.value) is error and e.value.status == status
    assert e.value.answer is not None


def test_a_hanging_api_is_retryable(api):
    api.answers.append((0, {}, ""))
    c = connector(api, timeout="300ms")
    started = time.monotonic()
    with pytest.raises(RetryableError, match="in time"):
        c.deliver(delivery())
    assert time.monotonic() - started < 5


def test_api_down_is_retryable(api):
    url = api.url
    api.shutdown()
    api.server_close()
    c = ResendConnector("resend", {"base_url": url, "timeout": "1s"}, ENV, templates=SHOP, public_url=PUBLIC)
    with pytest.raises(RetryableError, match="cannot reach"):
        c.deliver(delivery())


def test_missing_address_never_reaches_the_api(api):
    with pytest.raises(InvalidRecipient):
        connector(api).deliver(delivery(profile={"first_name": "Ann"}))
    assert api.requests == []


def test_configuration_is_checked():
    with pytest.raises(ConfigurationError, match="RESEND_API_KEY"):
        ResendConnector("resend", {}, {})
    with pytest.raises(ConfigurationError, match="https"):
        ResendConnector("resend", {"base_url": "http://api.resend.example.com"}, ENV)
    assert ResendConnector("resend", {}, ENV).base_url == "https://api.resend.com"
    with pytest.raises(ConfigurationError, match="unknown settings api_key"):
        ResendConnector("resend", {"api_key": "re_inline"}, ENV)
