"""Web Push: notifications to browsers, through each browser's push service, with VAPID (RFC 8292)
and an encrypted payload (RFC 8291, `aes128gcm` of RFC 8188).

    [connectors.browser]
    channel = "push"
    type = "webpush"
    vapid_private_key_env = "VAPID_PRIVATE_KEY"   # base64url of the raw P-256 key, or PEM/DER
    vapid_subject = "mailto:push@shop.example.com" # or an https: URL: who to contact about abuse
    # ttl = 86400          # optional: seconds the push service keeps an undelivered message
    # urgency = "normal"   # optional: very-low | low | normal | high
    # timeout = 10         # optional: seconds per HTTP request

Recipients: the profile trait `webpush_subscriptions`, a list of the browser's PushSubscription
JSON (`{"endpoint": ..., "keys": {"p256dh": ..., "auth": ...}}`, as an object or a JSON string);
one request per subscription (see `connectors._push` for how a delivery to several browsers turns
out, and for where the rendered message is read from the delivery).

Each request is `POST <endpoint>` with `Authorization: vapid t=<JWT ES256 {aud: the endpoint's
origin, exp: 12 hours, sub}>, k=<the application server's public key>`, `Content-Encoding:
aes128gcm`, `TTL` and `Urgency`; the body is the payload encrypted to the subscription's p256dh key
and auth secret (a fresh ephemeral key and salt per message). The payload is the JSON the site's
service worker reads in its `push` event and shows with `showNotification`:

    {"title": ..., "body": ..., "url": ..., "image": ..., "data": {...}}   (absent keys left out)

The push service answers 201 Created with the message's URL in `Location` (the provider id).
404 and 410 mean the subscription is gone → `InvalidRecipient(stale=<the endpoint>)`; a malformed
subscription too. 413 and other 4xx → `PermanentError`; 401/403 (the push service refused the
VAPID signature) → `ConfigurationError`; 429 and 5xx → `RetryableError` with Retry-After; timeouts
and connection errors → `RetryableError`.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import threading
import time
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

import http_ece
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid, VapidException

from ._push import DeliveredMemo, PushMessage, PushResult, fan_out, profile_list, push_message
from .base import Delivery, check_settings
from .errors import (ConfigurationError, DeliveryError, InvalidRecipient, PermanentError, RetryableError,
                     from_http_status, parse_retry_after)
from .http import Answer, Http, HttpTimeout, HttpUnreachable

__all__ = ["WebPushConnector", "PushMessage", "PushResult", "webpush_payload"]

URGENCIES = ("very-low", "low", "normal", "high")
VAPID_LIFETIME = 12 * 3600  # RFC 8292: exp at most 24 hours ahead; a token is reused for its first 11 hours
RECORD_SIZE = 4096          # RFC 8291: push services must accept 4096 bytes of encrypted payload
MAX_PLAINTEXT = RECORD_SIZE - 86 - 16 - 1  # the aes128gcm header (salt, rs, 65-byte key id), the tag, the delimiter
SETTINGS = {"vapid_private_key_env", "vapid_subject", "ttl", "urgency", "timeout"}


def webpush_payload(msg: PushMessage) -> bytes:
    """The JSON a service worker receives in its push event."""
    payload: dict[str, Any] = {k: v for k, v in (("title", msg.title), ("body", msg.body), ("url", msg.url),
                                                 ("image", msg.image)) if v}
    if msg.data:
        payload["data"] = dict(msg.data)
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, default=str).encode("utf-8")


def _b64url(value: str) -> bytes:
    value = value.strip()
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


class _Subscription:
    __slots__ = ("endpoint", "origin", "p256dh", "auth")

    def __init__(self, raw: Any):
        if isinstance(raw, str):
            try:
                raw = json.loads(raw)
            except ValueError:
                raise InvalidRecipient("a Web Push subscription is not JSON", stale=None) from None
        endpoint = raw.get("endpoint") if isinstance(raw, Mapping) else None
        if not isinstance(endpoint, str) or not endpoint:
            raise InvalidRecipient("a Web Push subscription has no endpoint", stale=None)
        self.endpoint = endpoint
        parts = urlsplit(endpoint)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise InvalidRecipient(f"a Web Push endpoint is not an https URL: {endpoint}", stale=endpoint)
        self.origin = f"{parts.scheme}://{parts.netloc}"
        keys = raw.get("keys") or {}
        try:
            self.p256dh = _b64url(keys["p256dh"])
            self.auth = _b64url(keys["auth"])
            ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), self.p256dh)
        except (KeyError, TypeError, AttributeError, ValueError, binascii.Error):
            raise InvalidRecipient("a Web Push subscription has no valid p256dh and auth keys",
                                   stale=endpoint) from None
        if len(self.auth) != 16:
            raise InvalidRecipient("a Web Push subscription's auth secret is not 16 bytes", stale=endpoint)


class WebPushConnector:
    channel = "push"

    def __init__(self, name: str = "webpush", *, vapid_private_key_env: str, vapid_subject: str,
                 ttl: int = 86400, urgency: str = "normal", timeout: float = 10.0,
                 env: Mapping[str, str] | None = None, clock: Callable[[], float] = time.time,
                 transport: Any = None):
        """`transport`: an httpx transport to send through instead of the network (tests)."""
        self.name = name
        env = os.environ if env is None else env
        key = (env.get(vapid_private_key_env) or "").strip()
        if not key:
            raise ConfigurationError(f"the environment variable {vapid_private_key_env} (vapid_private_key_env) is not set")
        try:
            self._vapid = (Vapid.from_pem(key.encode()) if key.startswith("-----BEGIN")
                           else Vapid.from_string(key))
        except (VapidException, ValueError, TypeError, binascii.Error) as e:
            raise ConfigurationError(f"{vapid_private_key_env} is not a VAPID (P-256) private key: {e}") from None
        if not (vapid_subject.startswith("mailto:") or vapid_subject.startswith("https://")):
            raise ConfigurationError("vapid_subject must be a mailto: or https: URL (RFC 8292)")
        if urgency not in URGENCIES:
            raise ConfigurationError(f"urgency must be one of {', '.join(URGENCIES)}, not {urgency!r}")
        self.subject, self.ttl, self.urgency = vapid_subject, int(ttl), urgency
        self._clock = clock
        self._http = Http(timeout=timeout, max_connections=100, transport=transport)
        self._memo = DeliveredMemo()
        self._auth: dict[str, tuple[str, float]] = {}  # origin → (Authorization, reuse until)
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, name: str, settings: Mapping[str, Any], env: Mapping[str, str] | None = None,
                      **kwargs: Any) -> "WebPushConnector":
        """From a journeys.toml connector's settings (`ConnectorConfig.settings`)."""
        check_settings(name, "webpush", settings, SETTINGS)
        for required in ("vapid_private_key_env", "vapid_subject"):
            if not settings.get(required):
                raise ConfigurationError(f"connector {name!r} (webpush) needs {required}")
        return cls(name, env=env, **dict(settings), **kwargs)

    @property
    def public_key(self) -> str:
        """The application server key, base64url: what the site passes to pushManager.subscribe()."""
        from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

        raw = self._vapid.public_key.public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    def deliver(self, delivery: Delivery) -> PushResult:
        msg = push_message(delivery)
        payload = webpush_payload(msg)
        if len(payload) > MAX_PLAINTEXT:
            raise PermanentError(f"the Web Push payload is {len(payload)} bytes; at most {MAX_PLAINTEXT} fit")
        raw = profile_list(delivery.profile, "webpush_subscriptions")
        if not raw:
            raise InvalidRecipient("the profile has no Web Push subscription (webpush_subscriptions)")
        subs: dict[str, _Subscription | InvalidRecipient] = {}
        order: list[str] = []
        for i, item in enumerate(raw):
            try:
                sub: _Subscription | InvalidRecipient = _Subscription(item)
                key = sub.endpoint  # type: ignore[union-attr]
            except InvalidRecipient as err:
                sub, key = err, err.stale or f"#{i}"
            if key not in subs:
                order.append(key)
            subs[key] = sub

        def send_one(key: str) -> str | None:
            sub = subs[key]
            if isinstance(sub, InvalidRecipient):
                raise sub
            return self._send(sub, payload)

        return fan_out(delivery.action_id, order, send_one, self._memo, trait="webpush_subscriptions")

    def close(self) -> None:
        self._http.close()

    # ------------------------------------------------------------------ one request

    def _send(self, sub: _Subscription, payload: bytes) -> str | None:
        body = http_ece.encrypt(payload, salt=os.urandom(16), private_key=ec.generate_private_key(ec.SECP256R1()),
                                dh=sub.p256dh, auth_secret=sub.auth, rs=RECORD_SIZE, version="aes128gcm")
        headers = {"Authorization": self._authorization(sub.origin), "Content-Encoding": "aes128gcm",
                   "Content-Type": "application/octet-stream", "TTL": str(self.ttl), "Urgency": self.urgency}
        try:
            r = self._http.post(sub.endpoint, content=body, headers=headers)
        except HttpTimeout as e:
            raise RetryableError(f"the push service timed out: {e}") from None
        except HttpUnreachable as e:
            raise RetryableError(f"cannot reach the push service: {e}") from None
        if 200 <= r.status_code < 300:
            return r.headers.get("Location") or None
        raise error_for(r, sub.endpoint)

    def _authorization(self, origin: str) -> str:
        """`vapid t=..., k=...` for a push service's origin, signed once and reused for 11 hours."""
        now = self._clock()
        with self._lock:
            cached = self._auth.get(origin)
            if cached and now < cached[1]:
                return cached[0]
            claims = {"aud": origin, "exp": int(now) + VAPID_LIFETIME, "sub": self.subject}
            try:
                header = self._vapid.sign(claims)["Authorization"]
            except VapidException as e:
                raise ConfigurationError(f"cannot sign the VAPID token: {e}") from None
            self._auth[origin] = (header, now + VAPID_LIFETIME - 3600)
            return header


def error_for(r: Answer, endpoint: str) -> DeliveryError:
    status, answer = r.status_code, r.text[:2000]
    retry_after = parse_retry_after(r.headers.get("Retry-After"))
    if status in (404, 410):
        return InvalidRecipient("the Web Push subscription has expired or was unsubscribed",
                                status=status, answer=answer, stale=endpoint)
    if status == 413:
        return PermanentError("the push service refused the payload as too large", status=status, answer=answer)
    if status in (401, 403):
        return ConfigurationError("the push service refused the VAPID signature (wrong key, or subject)",
                                  status=status, answer=answer)
    if status == 429 or status >= 500:
        return RetryableError("the push service asked to retry" if status == 429 else "the push service failed",
                              status=status, answer=answer, retry_after=retry_after)
    return from_http_status(status, answer, retry_after)
