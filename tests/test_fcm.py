"""The FCM connector against a fake Google on loopback: a real HTTP server that plays both the
OAuth token endpoint of a service account and the FCM HTTP v1 send endpoint, and checks each
request the way Google documents it (a JWT-bearer grant signed with the account's key; the send
path, the bearer token it issued, and the Message schema with string-only data)."""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from connectors.base import Delivery
from connectors.errors import ConfigurationError, InvalidRecipient, PermanentError, RetryableError
from connectors.fcm import SCOPE, FcmConnector, PushMessage, PushResult

PROJECT = "shop-test"
EMAIL = "journeys@shop-test.iam.gserviceaccount.com"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
KEY_PEM = KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()


def fcm_error(http: int, status: str, code: str | None = None, message: str = "") -> tuple[int, dict, dict]:
    error = {"code": http, "message": message or status, "status": status}
    if code:
        error["details"] = [{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}]
    return http, {"error": error}, {}


class FakeGoogle:
    """The token endpoint (/token) and FCM (/v1/projects/{id}/messages:send), recording each request
    and every way a request departs from the documented format (`violations`)."""

    def __init__(self):
        self.violations: list[str] = []
        self.token_requests: list[dict] = []
        self.sends: list[dict] = []
        self.issued: list[str] = []
        self.revoked: set[str] = set()
        self.expires_in = 3600
        self.clock = time.time  # what the fake takes for now when it checks iat
        self.script: dict[str, list] = {}  # device token → answers to give, in order, before 200
        self.release = threading.Event()
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path == "/token":
                    answer = fake.token(self.headers, body)
                else:
                    answer = fake.send(self.path, self.headers, body)
                if answer == "hang":
                    fake.release.wait(5)
                    return
                status, payload, headers = answer
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Content-Length", str(len(data)))
                for k, v in headers.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def violate(self, what: str):
        with self.lock:
            self.violations.append(what)

    # ------------------------------------------------------------------ OAuth 2.0 token endpoint

    def token(self, headers, body: bytes):
        if not headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
            self.violate(f"token request Content-Type {headers.get('Content-Type')!r}")
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        if form.get("grant_type") != "urn:ietf:params:oauth:grant-type:jwt-bearer":
            self.violate(f"grant_type {form.get('grant_type')!r}")
            return 400, {"error": "unsupported_grant_type"}, {}
        assertion = form.get("assertion", "")
        try:
            header = jwt.get_unverified_header(assertion)
            claims = jwt.decode(assertion, KEY.public_key(), algorithms=["RS256"], audience=f"{self.base}/token",
                                issuer=EMAIL, options={"require": ["iss", "aud", "iat", "exp", "scope"],
                                                 "verify_exp": False, "verify_iat": False})  # by self.clock below
        except jwt.PyJWTError as e:
            self.violate(f"assertion: {e}")
            return 400, {"error": "invalid_grant", "error_description": str(e)}, {}
        if header.get("alg") != "RS256" or header.get("kid") != "key-1":
            self.violate(f"assertion header {header}")
        if claims["scope"] != SCOPE:
            self.violate(f"scope {claims['scope']!r}")
        if not 0 < claims["exp"] - claims["iat"] <= 3600 or abs(claims["iat"] - self.clock()) > 60 \
                or claims["exp"] <= self.clock():
            self.violate(f"iat/exp {claims['iat']}/{claims['exp']}")
        with self.lock:
            self.token_requests.append(claims)
            access = f"ya29.fake-{len(self.issued) + 1}"
            self.issued.append(access)
        return 200, {"access_token": access, "expires_in": self.expires_in, "token_type": "Bearer"}, {}

    # ------------------------------------------------------------------ FCM HTTP v1

    def send(self, path: str, headers, body: bytes):
        if path != f"/v1/projects/{PROJECT}/messages:send":
            self.violate(f"send path {path}")
            return fcm_error(404, "NOT_FOUND", message="Requested entity was not found.")
        auth = headers.get("Authorization", "")
        m = re.fullmatch(r"Bearer (\S+)", auth)
        if not m or m.group(1) not in self.issued or m.group(1) in self.revoked:
            return fcm_error(401, "UNAUTHENTICATED", message="Request had invalid authentication credentials.")
        if not headers.get("Content-Type", "").startswith("application/json"):
            self.violate(f"send Content-Type {headers.get('Content-Type')!r}")
        try:
            request = json.loads(body)
        except ValueError:
            self.violate("send body is not JSON")
            return fcm_error(400, "INVALID_ARGUMENT")
        problems = message_schema_problems(request)
        if problems:
            for p in problems:
                self.violate(p)
            return fcm_error(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", "; ".join(problems))
        message = request["message"]
        with self.lock:
            self.sends.append({"access": m.group(1), "message": message})
            n = len(self.sends)
            queue = self.script.get(message["token"])
            answer = queue.pop(0) if queue else None
        if answer is not None:
            return answer
        return 200, {"name": f"projects/{PROJECT}/messages/0:{n}"}, {}


def message_schema_problems(request: dict) -> list[str]:
    """Departures from SendMessageRequest/Message as documented for projects.messages.send."""
    problems = []
    if set(request) - {"message", "validate_only"}:
        problems.append(f"unknown request fields {set(request) - {'message', 'validate_only'}}")
    message = request.get("message")
    if not isinstance(message, dict):
        return problems + ["no message"]
    known = {"name", "data", "notification", "android", "webpush", "apns", "fcm_options", "token", "topic", "condition"}
    if set(message) - known:
        problems.append(f"unknown message fields {set(message) - known}")
    if sum(k in message for k in ("token", "topic", "condition")) != 1:
        problems.append("a message needs exactly one of token, topic, condition")
    data = message.get("data", {})
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        problems.append(f"data must map strings to strings: {data!r}")
    notification = message.get("notification", {})
    if set(notification) - {"title", "body", "image"} or not all(isinstance(v, str) for v in notification.values()):
        problems.append(f"bad notification {notification!r}")
    webpush = message.get("webpush", {})
    if set(webpush) - {"headers", "data", "notification", "fcm_options"}:
        problems.append(f"unknown webpush fields {set(webpush)}")
    link = webpush.get("fcm_options", {}).get("link")
    if link is not None and not link.startswith("https://"):
        problems.append("webpush.fcm_options.link must be HTTPS")
    if not all(isinstance(v, str) for v in webpush.get("headers", {}).values()):
        problems.append("webpush headers must be strings")
    android = message.get("android", {})
    if "ttl" in android and not re.fullmatch(r"\d+(\.\d{1,9})?s", android["ttl"]):
        problems.append(f"android.ttl must be a Duration like '3.5s': {android['ttl']!r}")
    apns = message.get("apns", {})
    if set(apns) - {"headers", "payload", "fcm_options", "live_activity_token"}:
        problems.append(f"unknown apns fields {set(apns)}")
    return problems


@pytest.fixture
def google():
    fake = FakeGoogle()
    yield fake
    fake.close()


def account(google: FakeGoogle) -> str:
    return json.dumps({"type": "service_account", "project_id": PROJECT, "private_key_id": "key-1",
                       "private_key": KEY_PEM, "client_email": EMAIL, "client_id": "1",
                       "token_uri": f"{google.base}/token"})


def connector(google: FakeGoogle, **kw) -> FcmConnector:
    settings = {"credentials_env": "FCM_CREDENTIALS", "project_id": PROJECT, "base_url": google.base, **kw}
    return FcmConnector.from_settings("fcm", settings, env={"FCM_CREDENTIALS": account(google)})


def push(action_id="a1", tokens=("tok-A",), data=None) -> Delivery:
    data = data or {"title": "Your cart is waiting", "body": "One tap away.", "url": "https://shop.example.com/cart"}
    return Delivery(action_id=action_id, kind="push", target="finish_checkout", user_id="u1",
                    profile={"push_tokens": list(tokens)}, data=data)


def test_a_push_is_sent_as_documented(google):
    c = connector(google)
    result = c.deliver(push(data={"title": "Your cart is waiting", "body": "One tap away.",
                                  "url": "https://shop.example.com/cart",
                                  "image": "https://shop.example.com/cart.png",
                                  "data": {"cart_id": "c-9", "total": 42.5, "items": ["a", "b"], "gift": True}}))
    assert google.violations == []
    assert isinstance(result, PushResult)
    assert result.provider_id == f"projects/{PROJECT}/messages/0:1"
    [sent] = google.sends
    assert sent["access"] == google.issued[0]
    assert sent["message"] == {
        "token": "tok-A",
        "notification": {"title": "Your cart is waiting", "body": "One tap away.",
                         "image": "https://shop.example.com/cart.png"},
        "data": {"cart_id": "c-9", "total": "42.5", "items": '["a","b"]', "gift": "true",
                 "url": "https://shop.example.com/cart"},
        "webpush": {"fcm_options": {"link": "https://shop.example.com/cart"}},
        "apns": {"payload": {"aps": {"mutable-content": 1}}, "fcm_options": {"image": "https://shop.example.com/cart.png"}},
    }
    [claims] = google.token_requests
    assert claims["iss"] == EMAIL and claims["scope"] == SCOPE and claims["aud"] == f"{google.base}/token"
    c.close()


def test_a_rendered_push_in_the_delivery_wins_and_ttl_reaches_every_platform(google):
    c = connector(google, ttl=3600)
    d = push(data={"_push": PushMessage(title="Rendered", body="by render_push", url="http://insecure.example/x"),
                   "title": "ignored"})
    c.deliver(d)
    assert google.violations == []
    message = google.sends[0]["message"]
    assert message["notification"] == {"title": "Rendered", "body": "by render_push"}
    assert "fcm_options" not in message["webpush"]  # FCM wants HTTPS links; the url still goes in data
    assert message["data"] == {"url": "http://insecure.example/x"}
    assert message["android"] == {"ttl": "3600s"} and message["webpush"]["headers"] == {"TTL": "3600"}
    assert int(message["apns"]["headers"]["apns-expiration"]) > time.time()


def test_one_send_per_device_and_one_access_token_for_many_sends(google):
    c = connector(google)
    result = c.deliver(push("a1", tokens=("tok-A", "tok-B", "tok-C")))
    for i in range(2, 6):
        c.deliver(push(f"a{i}"))
    assert [s["message"]["token"] for s in google.sends[:3]] == ["tok-A", "tok-B", "tok-C"]
    assert result.provider_ids == tuple(f"projects/{PROJECT}/messages/0:{i}" for i in (1, 2, 3))
    assert len(google.sends) == 7 and len(google.token_requests) == 1
    assert {s["access"] for s in google.sends} == {google.issued[0]}


def test_the_single_push_token_trait_is_read_too(google):
    c = connector(google)
    c.deliver(Delivery(action_id="a", kind="push", target="t", user_id="u", profile={"push_token": "tok-Z"},
                       data={"title": "Hi"}))
    assert google.sends[0]["message"]["token"] == "tok-Z"


def test_the_access_token_is_refreshed_before_it_expires(google):
    now = [time.time()]
    google.clock = lambda: now[0]
    c = FcmConnector.from_settings("fcm", {"credentials_env": "X", "project_id": PROJECT, "base_url": google.base},
                                   env={"X": account(google)}, clock=lambda: now[0])
    c.deliver(push("a1"))
    now[0] += 3600 - 301  # still more than five minutes left: the cached token is used
    c.deliver(push("a2"))
    assert len(google.token_requests) == 1
    now[0] += 2           # less than five minutes left: a new token before the old one expires
    c.deliver(push("a3"))
    assert len(google.token_requests) == 2
    assert [s["access"] for s in google.sends] == [google.issued[0], google.issued[0], google.issued[1]]


def test_threads_share_one_token_fetch(google):
    c = connector(google)
    errors = []

    def work(i):
        try:
            c.deliver(push(f"t{i}"))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(google.sends) == 8 and len(google.token_requests) == 1


def test_401_fetches_a_new_token_once_then_succeeds(google):
    c = connector(google)
    c.deliver(push("a1"))
    google.revoked.add(google.issued[0])  # the token is revoked before it expires
    result = c.deliver(push("a2"))
    assert result.provider_id and len(google.token_requests) == 2
    assert google.sends[-1]["access"] == google.issued[1]


def test_401_twice_is_a_configuration_error(google):
    c = connector(google)
    google.script["tok-A"] = [fcm_error(401, "UNAUTHENTICATED"), fcm_error(401, "UNAUTHENTICATED")]
    with pytest.raises(ConfigurationError) as e:
        c.deliver(push())
    assert e.value.status == 401 and len(google.token_requests) == 2


def test_a_refused_service_account_is_a_configuration_error(google):
    wrong = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    creds = json.loads(account(google)) | {"private_key": wrong}
    c = FcmConnector.from_settings("fcm", {"credentials_env": "C", "base_url": google.base},
                                   env={"C": json.dumps(creds)})
    with pytest.raises(ConfigurationError) as e:
        c.deliver(push())
    assert e.value.status == 400 and "invalid_grant" in e.value.answer
    assert google.sends == []


def test_unregistered_token_is_an_invalid_recipient_naming_the_token(google):
    c = connector(google)
    google.script["tok-A"] = [fcm_error(404, "NOT_FOUND", "UNREGISTERED", "Requested entity was not found.")]
    with pytest.raises(InvalidRecipient) as e:
        c.deliver(push())
    assert e.value.stale == "tok-A" and e.value.status == 404 and "UNREGISTERED" in e.value.answer


def test_a_stale_token_among_live_ones_is_reported_on_the_result(google):
    c = connector(google)
    google.script["tok-B"] = [fcm_error(404, "NOT_FOUND", "UNREGISTERED")]
    result = c.deliver(push(tokens=("tok-A", "tok-B")))
    assert result.stale == ("tok-B",) and len(result.provider_ids) == 1


def test_invalid_argument_is_permanent(google):
    c = connector(google)
    google.script["tok-A"] = [fcm_error(400, "INVALID_ARGUMENT", "INVALID_ARGUMENT",
                                        "The registration token is not a valid FCM registration token")]
    with pytest.raises(PermanentError) as e:
        c.deliver(push())
    assert not isinstance(e.value, InvalidRecipient) and e.value.status == 400


def test_quota_exceeded_is_retried_after_what_fcm_asked(google):
    c = connector(google)
    google.script["tok-A"] = [(*fcm_error(429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED")[:2], {"Retry-After": "17"})]
    with pytest.raises(RetryableError) as e:
        c.deliver(push())
    assert e.value.retry_after == 17 and e.value.status == 429


def test_internal_and_unavailable_are_retryable(google):
    c = connector(google)
    google.script["tok-A"] = [fcm_error(500, "INTERNAL", "INTERNAL"),
                              (*fcm_error(503, "UNAVAILABLE", "UNAVAILABLE")[:2], {"Retry-After": "5"})]
    with pytest.raises(RetryableError) as first:
        c.deliver(push())
    with pytest.raises(RetryableError) as second:
        c.deliver(push())
    assert first.value.status == 500 and second.value.retry_after == 5
    assert c.deliver(push()).provider_id


def test_a_retry_does_not_send_twice_to_devices_that_accepted(google):
    c = connector(google)
    google.script["tok-B"] = [fcm_error(503, "UNAVAILABLE", "UNAVAILABLE")]
    with pytest.raises(RetryableError):
        c.deliver(push("a1", tokens=("tok-A", "tok-B")))
    result = c.deliver(push("a1", tokens=("tok-A", "tok-B")))
    assert [s["message"]["token"] for s in google.sends] == ["tok-A", "tok-B", "tok-B"]
    assert result.provider_ids == (f"projects/{PROJECT}/messages/0:3",)


def test_a_hanging_fcm_is_a_retryable_timeout(google):
    c = connector(google, timeout=0.3)
    c.deliver(push("warm"))  # the token is fetched first; then FCM hangs
    google.script["tok-A"] = ["hang"]
    started = time.monotonic()
    with pytest.raises(RetryableError) as e:
        c.deliver(push())
    assert "timed out" in str(e.value) and time.monotonic() - started < 3


def test_an_unreachable_fcm_is_retryable(google):
    c = connector(google)
    c.tokens.get()
    c.url = "http://127.0.0.1:9/v1/projects/x/messages:send"  # nothing listens on the discard port
    with pytest.raises(RetryableError):
        c.deliver(push())


def test_configuration_mistakes_are_configuration_errors(google, tmp_path):
    with pytest.raises(ConfigurationError, match="FCM_CREDENTIALS"):
        FcmConnector.from_settings("fcm", {"credentials_env": "FCM_CREDENTIALS"}, env={})
    with pytest.raises(ConfigurationError, match="projectid"):
        FcmConnector.from_settings("fcm", {"credentials_env": "C", "projectid": "x"}, env={"C": account(google)})
    with pytest.raises(ConfigurationError, match="not valid JSON"):
        FcmConnector.from_settings("fcm", {"credentials_env": "C"}, env={"C": "{nope"})
    # the variable may hold a path to the JSON file instead
    path = tmp_path / "sa.json"
    path.write_text(account(google))
    c = FcmConnector.from_settings("fcm", {"credentials_env": "C", "base_url": google.base}, env={"C": str(path)})
    assert c.project_id == PROJECT  # from the service account when the connector names none
    c.deliver(push())
    assert google.violations == []


def test_a_user_without_tokens_and_an_empty_push_are_refused_without_a_request(google):
    c = connector(google)
    with pytest.raises(InvalidRecipient):
        c.deliver(Delivery(action_id="a", kind="push", target="t", user_id="u", profile={}, data={"title": "x"}))
    with pytest.raises(PermanentError, match="nothing to send"):
        c.deliver(push(data={"url": "https://x.example"}))
    with pytest.raises(PermanentError, match="reserved"):
        c.deliver(push(data={"title": "x", "data": {"google.c.a": "1"}}))
    assert google.sends == [] and google.token_requests == []


def test_the_connector_fits_the_protocol(google):
    from connectors.base import Connector

    c = connector(google)
    assert isinstance(c, Connector) and c.channel == "push" and c.name == "fcm"


def test_any_rendered_push_object_fits_the_seam(google):
    """The renderer's own dataclass (title, body, url, image, data attributes) is read as it is."""
    from types import SimpleNamespace

    rendered = SimpleNamespace(title="Rendered", body="by the renderer", url=None, image=None, data={"k": "v"})
    c = FcmConnector.from_settings("fcm", {"credentials_env": "C", "base_url": google.base}, {"C": account(google)})
    c.deliver(push(data={"_push": rendered}))
    assert google.sends[0]["message"]["notification"] == {"title": "Rendered", "body": "by the renderer"}
    assert google.sends[0]["message"]["data"] == {"k": "v"}
