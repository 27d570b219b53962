"""The Web Push connector against a fake push service on loopback: a real HTTP server that checks
each request the way RFC 8292 (VAPID) and RFC 8291 (message encryption) describe it: it verifies
the VAPID JWT with the public key sent in `k` (ES256, aud = the endpoint's origin, exp within 24
hours, a mailto: sub), requires `Content-Encoding: aes128gcm` and a TTL, and decrypts the body with
the browser's private key and auth secret, as a browser would, to see the payload."""

from __future__ import annotations

import base64
import json
import os
import re
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import http_ece
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from connectors.base import Connector, Delivery
from connectors.errors import ConfigurationError, InvalidRecipient, PermanentError, RetryableError
from connectors.webpush import PushMessage, PushResult, WebPushConnector

SUBJECT = "mailto:push@shop.example.com"
APP_KEY = ec.generate_private_key(ec.SECP256R1())  # the application server's VAPID key pair
APP_PUBLIC = APP_KEY.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


APP_KEY_RAW = b64url(APP_KEY.private_numbers().private_value.to_bytes(32, "big"))


class Browser:
    """A browser's push subscription: its own key pair and auth secret, as PushManager makes them."""

    def __init__(self, endpoint: str):
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.auth = os.urandom(16)
        self.endpoint = endpoint

    def subscription(self) -> dict:
        public = self.key.public_key().public_bytes(serialization.Encoding.X962,
                                                    serialization.PublicFormat.UncompressedPoint)
        return {"endpoint": self.endpoint, "expirationTime": None,
                "keys": {"p256dh": b64url(public), "auth": b64url(self.auth)}}


class FakePushService:
    def __init__(self):
        self.browsers: dict[str, Browser] = {}
        self.received: list[dict] = []
        self.violations: list[str] = []
        self.script: dict[str, list] = {}  # path → answers (status, headers) to give before 201
        self.release = threading.Event()
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                answer = fake.push(self.path, self.headers, body)
                if answer == "hang":
                    fake.release.wait(5)
                    return
                status, headers = answer
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.origin = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def browser(self, name: str) -> Browser:
        b = Browser(f"{self.origin}/push/{name}")
        self.browsers[f"/push/{name}"] = b
        return b

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    def violate(self, what: str):
        with self.lock:
            self.violations.append(what)

    def push(self, path: str, headers, body: bytes):
        browser = self.browsers.get(path)
        if browser is None:
            return 404, {}
        # RFC 8292 §3: Authorization: vapid t=<JWT>, k=<the public key, base64url uncompressed point>
        m = re.fullmatch(r"vapid t=([A-Za-z0-9_\-.]+),\s*k=([A-Za-z0-9_\-]+)", headers.get("Authorization", ""))
        if not m:
            self.violate(f"Authorization {headers.get('Authorization')!r}")
            return 401, {}
        token, k = m.groups()
        if unb64url(k) != APP_PUBLIC:
            self.violate("k is not the application server's public key")
        public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64url(k))
        try:
            header = jwt.get_unverified_header(token)
            claims = jwt.decode(token, public, algorithms=["ES256"], audience=self.origin,
                                options={"require": ["aud", "exp", "sub"]})
        except jwt.PyJWTError as e:
            self.violate(f"VAPID JWT: {e}")
            return 403, {}
        if header.get("typ") != "JWT" or header.get("alg") != "ES256":
            self.violate(f"VAPID JWT header {header}")
        if claims["exp"] > time.time() + 24 * 3600:
            self.violate("VAPID exp more than 24 hours ahead")
        if claims["sub"] != SUBJECT:
            self.violate(f"VAPID sub {claims['sub']!r}")
        # RFC 8030 §5.2 TTL is required; §5.3 Urgency; RFC 8291 §4: aes128gcm
        if not re.fullmatch(r"\d+", headers.get("TTL", "")):
            self.violate(f"TTL {headers.get('TTL')!r}")
        if headers.get("Urgency", "normal") not in ("very-low", "low", "normal", "high"):
            self.violate(f"Urgency {headers.get('Urgency')!r}")
        if headers.get("Content-Encoding") != "aes128gcm":
            self.violate(f"Content-Encoding {headers.get('Content-Encoding')!r}")
        salt, rs, idlen = body[:16], struct.unpack("!L", body[16:20])[0], body[20]
        if idlen != 65 or len(body) > 4096 or rs < 18:
            self.violate(f"aes128gcm header: rs={rs} idlen={idlen} length={len(body)}")
        try:
            plaintext = http_ece.decrypt(body, private_key=browser.key, auth_secret=browser.auth, version="aes128gcm")
            payload = json.loads(plaintext)
        except Exception as e:  # noqa: BLE001 - anything that cannot be decrypted is a violation
            self.violate(f"cannot decrypt the body: {e!r}")
            return 400, {}
        with self.lock:
            self.received.append({"path": path, "payload": payload, "headers": dict(headers), "claims": claims,
                                  "salt": salt, "sender_key": body[21:21 + idlen]})
            n = len(self.received)
            queue = self.script.get(path)
            answer = queue.pop(0) if queue else None
        if answer is not None:
            return answer
        return 201, {"Location": f"{self.origin}/m/{n}", "TTL": headers.get("TTL", "0")}


@pytest.fixture
def service():
    fake = FakePushService()
    yield fake
    fake.close()


def connector(key: str = APP_KEY_RAW, **kw) -> WebPushConnector:
    settings = {"vapid_private_key_env": "VAPID_PRIVATE_KEY", "vapid_subject": SUBJECT, **kw}
    return WebPushConnector.from_settings("browser", settings, env={"VAPID_PRIVATE_KEY": key})


def push(*subscriptions, action_id="a1", data=None) -> Delivery:
    data = data or {"title": "Your cart is waiting", "body": "One tap away.", "url": "https://shop.example.com/cart"}
    return Delivery(action_id=action_id, kind="push", target="finish_checkout", user_id="u1",
                    profile={"webpush_subscriptions": list(subscriptions)}, data=data)


def test_the_browser_decrypts_the_payload_and_the_request_is_as_the_rfcs_say(service):
    browser = service.browser("one")
    c = connector(ttl=3600, urgency="high")
    result = c.deliver(push(browser.subscription(), data={
        "title": "Your cart is waiting", "body": "One tap away.", "url": "https://shop.example.com/cart",
        "image": "https://shop.example.com/cart.png", "data": {"cart_id": "c-9", "total": 42.5}}))
    assert service.violations == []
    [got] = service.received
    assert got["payload"] == {"title": "Your cart is waiting", "body": "One tap away.",
                              "url": "https://shop.example.com/cart", "image": "https://shop.example.com/cart.png",
                              "data": {"cart_id": "c-9", "total": 42.5}}
    assert got["headers"]["TTL"] == "3600" and got["headers"]["Urgency"] == "high"
    assert got["claims"]["aud"] == service.origin and got["claims"]["exp"] > time.time()
    assert isinstance(result, PushResult) and result.provider_id == f"{service.origin}/m/1"
    assert c.public_key == b64url(APP_PUBLIC)  # what the site hands to pushManager.subscribe()
    c.close()


def test_each_message_has_its_own_salt_and_key_and_each_browser_its_own_request(service):
    one, two = service.browser("one"), service.browser("two")
    c = connector()
    result = c.deliver(push(one.subscription(), json.dumps(two.subscription())))  # a JSON string is read too
    c.deliver(push(one.subscription(), action_id="a2"))
    assert service.violations == []
    assert [r["path"] for r in service.received] == ["/push/one", "/push/two", "/push/one"]
    assert len({r["salt"] for r in service.received}) == 3 and len({r["sender_key"] for r in service.received}) == 3
    assert result.provider_ids == (f"{service.origin}/m/1", f"{service.origin}/m/2")


def test_the_vapid_token_is_reused_for_an_origin_and_signed_again_before_it_expires(service):
    browser = service.browser("one")
    now = [time.time()]
    c = WebPushConnector.from_settings("browser", {"vapid_private_key_env": "K", "vapid_subject": SUBJECT},
                                       env={"K": APP_KEY_RAW}, clock=lambda: now[0])
    c.deliver(push(browser.subscription(), action_id="a1"))
    now[0] += 3600
    c.deliver(push(browser.subscription(), action_id="a2"))
    now[0] += 10 * 3600 + 1  # eleven hours: an hour before its 12-hour exp, a new token
    c.deliver(push(browser.subscription(), action_id="a3"))
    auths = [r["headers"]["Authorization"] for r in service.received]
    assert auths[0] == auths[1] != auths[2]
    assert service.violations == []


def test_a_rendered_push_wins_over_the_with_values(service):
    browser = service.browser("one")
    connector().deliver(push(browser.subscription(), data={
        "_push": {"title": "Rendered", "body": "by render_push", "data": {"k": "v"}}, "title": "ignored"}))
    assert service.received[0]["payload"] == {"title": "Rendered", "body": "by render_push", "data": {"k": "v"}}
    connector().deliver(push(browser.subscription(), action_id="a2",
                             data={"_push": PushMessage(title="Dataclass")}))
    assert service.received[1]["payload"] == {"title": "Dataclass"}


@pytest.mark.parametrize("status", [404, 410])
def test_a_gone_subscription_is_an_invalid_recipient_naming_the_endpoint(service, status):
    browser = service.browser("one")
    service.script["/push/one"] = [(status, {})]
    with pytest.raises(InvalidRecipient) as e:
        connector().deliver(push(browser.subscription()))
    assert e.value.stale == browser.endpoint and e.value.status == status


def test_a_gone_subscription_beside_a_live_one_is_reported_on_the_result(service):
    live, gone = service.browser("live"), service.browser("gone")
    service.script["/push/gone"] = [(410, {})]
    result = connector().deliver(push(gone.subscription(), live.subscription()))
    assert result.stale == (gone.endpoint,) and result.provider_ids == (f"{service.origin}/m/2",)


def test_too_many_requests_is_retried_after_what_the_service_asked(service):
    browser = service.browser("one")
    service.script["/push/one"] = [(429, {"Retry-After": "30"}), (503, {})]
    c = connector()
    with pytest.raises(RetryableError) as first:
        c.deliver(push(browser.subscription()))
    with pytest.raises(RetryableError) as second:
        c.deliver(push(browser.subscription()))
    assert first.value.retry_after == 30 and second.value.status == 503
    assert c.deliver(push(browser.subscription())).provider_id


def test_refusals_are_permanent_or_configuration_errors(service):
    browser = service.browser("one")
    service.script["/push/one"] = [(413, {}), (400, {}), (403, {})]
    c = connector()
    with pytest.raises(PermanentError) as too_big:
        c.deliver(push(browser.subscription()))
    with pytest.raises(PermanentError) as bad:
        c.deliver(push(browser.subscription()))
    with pytest.raises(ConfigurationError):
        c.deliver(push(browser.subscription()))
    assert too_big.value.status == 413 and not isinstance(too_big.value, InvalidRecipient)
    assert bad.value.status == 400 and not isinstance(bad.value, (InvalidRecipient, ConfigurationError))


def test_a_hanging_push_service_is_a_retryable_timeout(service):
    browser = service.browser("one")
    service.script["/push/one"] = ["hang"]
    started = time.monotonic()
    with pytest.raises(RetryableError, match="timed out"):
        connector(timeout=0.3).deliver(push(browser.subscription()))
    assert time.monotonic() - started < 3


def test_an_unreachable_push_service_is_retryable():
    sub = Browser("http://127.0.0.1:9/push/x").subscription()  # nothing listens on the discard port
    with pytest.raises(RetryableError):
        connector().deliver(push(sub))


def test_a_pem_key_signs_the_same(service):
    browser = service.browser("one")
    pem = APP_KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    connector(key=pem).deliver(push(browser.subscription()))
    assert service.violations == [] and len(service.received) == 1


def test_malformed_subscriptions_and_oversized_payloads_are_refused_without_a_request(service):
    browser = service.browser("one")
    broken = browser.subscription() | {"keys": {"p256dh": "not-a-key", "auth": b64url(os.urandom(16))}}
    with pytest.raises(InvalidRecipient) as e:
        connector().deliver(push(broken))
    assert e.value.stale == browser.endpoint
    with pytest.raises(InvalidRecipient):
        connector().deliver(Delivery(action_id="a", kind="push", target="t", user_id="u", profile={},
                                     data={"title": "x"}))
    with pytest.raises(PermanentError, match="at most"):
        connector().deliver(push(browser.subscription(), data={"title": "x", "body": "y" * 4000}))
    assert service.received == []


def test_configuration_mistakes_are_configuration_errors():
    with pytest.raises(ConfigurationError, match="VAPID_PRIVATE_KEY"):
        WebPushConnector.from_settings("b", {"vapid_private_key_env": "VAPID_PRIVATE_KEY", "vapid_subject": SUBJECT},
                                       env={})
    with pytest.raises(ConfigurationError, match="not a VAPID"):
        connector(key="bm90IGEga2V5")
    with pytest.raises(ConfigurationError, match="mailto"):
        connector(vapid_subject="push@shop.example.com")
    with pytest.raises(ConfigurationError, match="urgency"):
        connector(urgency="urgent")
    with pytest.raises(ConfigurationError, match="unknown settings"):
        connector(ttl_seconds=10)


def test_the_connector_fits_the_protocol():
    c = connector()
    assert isinstance(c, Connector) and c.channel == "push" and c.name == "browser"
