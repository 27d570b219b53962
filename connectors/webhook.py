"""Webhooks: `webhook "crm_nudge" with {...}` in a journey POSTs a signed JSON document to the URL
journeys.toml gives that name.

    [webhooks.crm_nudge]
    url = "https://crm.example.com/hooks/nudge"
    secret_env = "CRM_WEBHOOK_SECRET"     # signs every request (recommended)
    timeout = "10s"                       # "500ms", "10s", "1m"
    headers = { "X-Team" = "growth" }     # extra headers, sent as they are

Each webhook is its own connector (the dispatcher routes to "webhook:NAME"), with its own pooled
HTTP connections (`connectors.http`). It delivers as a coroutine (`deliver_async`) on the connectors'
event loop, where the daemon's dispatcher starts it: no thread per call in flight (`deliver` runs the
same coroutine and waits, for callers in a thread).

The request:

    POST <url>
    Content-Type: application/json
    Idempotency-Key: <action id>
    X-Journeys-Timestamp: <unix seconds>
    X-Journeys-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>" with the secret>

    {"id": "<action id>", "webhook": "crm_nudge", "user_id": "u1", "journey": "browse_abandonment",
     "step": "nudge", "data": {...the with-values...}, "sent_at": "2025-01-01T12:00:00Z"}

The action id is deterministic, so a retried delivery carries the same `id` and Idempotency-Key:
a receiver that remembers the keys it has handled processes each action once.

Verifying a request (receivers can copy this; it needs only the standard library). Compute the
HMAC over the raw body bytes exactly as received, before parsing the JSON; compare in constant
time; refuse a timestamp too far from now, so a captured request cannot be replayed later:

    import hashlib, hmac, time

    def verify(secret: str, body: bytes, timestamp: str, signature: str, tolerance: int = 300) -> bool:
        try:
            sent = int(timestamp)
        except ValueError:
            return False
        if abs(time.time() - sent) > tolerance:
            return False
        expected = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(signature, "sha256=" + expected)

Answers: 2xx -> delivered (`Result`, the body's `id` if it has one as provider id); 408, 429 and
5xx -> RetryableError with the wait from Retry-After; any other status -> PermanentError (401/403:
ConfigurationError, the receiver refused the signature or credentials); timeouts and connection
errors -> RetryableError. Redirects are not followed: a 3xx is a PermanentError naming the new
location, so a moved endpoint is noticed and configured rather than silently re-posted.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import time
from datetime import datetime, timezone
from typing import Any, Callable, Mapping

from .base import Delivery, Result
from .errors import ConfigurationError, PermanentError, RetryableError, from_http_status, parse_retry_after
from .http import Answer, Http, HttpTimeout, HttpUnreachable, wait

SIGNATURE_HEADER = "X-Journeys-Signature"
TIMESTAMP_HEADER = "X-Journeys-Timestamp"
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str | float | int) -> float:
    """Seconds in a duration such as "10s", "500ms", "1m" or "1.5s" (a bare number is seconds)."""
    if isinstance(text, (int, float)):
        return float(text)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", str(text))
    if not m:
        raise ConfigurationError(f"not a duration: {text!r} (write e.g. \"10s\" or \"500ms\")")
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The X-Journeys-Signature value: "sha256=" + hex HMAC-SHA256 of "<timestamp>.<body>"."""
    mac = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify(secret: str, body: bytes, timestamp: str, signature: str, tolerance: int = 300,
           now: float | None = None) -> bool:
    """What a receiver checks: the signature over the raw body, and a timestamp within `tolerance`
    seconds of now (the module docstring has a copy with no dependency on this package)."""
    try:
        sent = int(timestamp)
    except (TypeError, ValueError):
        return False
    if abs((time.time() if now is None else now) - sent) > tolerance:
        return False
    return hmac.compare_digest(signature, sign(secret, timestamp, body))


class WebhookConnector:
    channel = "webhook"
    uses_profile = False  # the document carries the step's `with` data, never the profile

    def __init__(self, name: str, *, url: str, secret: str | None = None, timeout: float | str = "10s",
                 headers: Mapping[str, str] | None = None, missing: str | None = None,
                 clock: Callable[[], float] = time.time, transport: Any = None):
        """`transport`: an httpx transport to send through instead of the network (tests)."""
        self.name = name
        self.webhook = name.split(":", 1)[1] if name.startswith("webhook:") else name
        self.url = url
        self._secret = secret
        self._missing = missing
        self._headers = dict(headers or {})
        self._clock = clock
        self._http = Http(timeout=parse_duration(timeout), max_connections=20, transport=transport)

    @classmethod
    def from_config(cls, webhook: str, config: Any, env: Mapping[str, str] | None = None,
                    **kwargs: Any) -> "WebhookConnector":
        """From a `[webhooks.NAME]` table (`journeys.config.WebhookConfig`), as connector "webhook:NAME"."""
        env = os.environ if env is None else env
        secret = env.get(config.secret_env) if config.secret_env else None
        missing = (f"the environment variable {config.secret_env} (secret_env) is not set"
                   if config.secret_env and not secret else None)
        return cls(f"webhook:{webhook}", url=config.url, secret=secret, missing=missing,
                   timeout=config.timeout, headers=config.headers, **kwargs)

    def deliver(self, delivery: Delivery) -> Result:
        return wait(self.deliver_async(delivery))

    async def deliver_async(self, delivery: Delivery) -> Result:
        """`deliver` as a coroutine on the connectors' loop (`connectors.http.io_loop`)."""
        body, headers = self._request(delivery)
        try:
            answer = await self._http.post_async(self.url, content=body, headers=headers)
        except HttpTimeout as e:
            raise RetryableError(f"the webhook did not answer in time: {e}") from None
        except HttpUnreachable as e:
            raise RetryableError(f"could not reach the webhook: {e}") from None
        return self._outcome(answer)

    def _request(self, delivery: Delivery) -> tuple[bytes, dict[str, str]]:
        """The signed document and its headers."""
        if delivery.kind != "webhook":
            raise PermanentError(f"{self.name} calls a webhook; it cannot deliver a {delivery.kind}")
        if self._missing:
            raise ConfigurationError(f"{self.name}: {self._missing}")
        now = self._clock()
        document = {
            "id": delivery.action_id, "webhook": self.webhook, "user_id": delivery.user_id,
            "journey": delivery.journey, "step": delivery.step, "data": dict(delivery.data),
            "sent_at": datetime.fromtimestamp(now, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        try:
            body = json.dumps(document, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=str).encode("utf-8")
        except (TypeError, ValueError) as e:
            raise PermanentError(f"the webhook's data is not JSON: {e}") from e
        timestamp = str(int(now))
        headers = {**self._headers, "Content-Type": "application/json", "Idempotency-Key": delivery.action_id,
                   TIMESTAMP_HEADER: timestamp}
        if self._secret:
            headers[SIGNATURE_HEADER] = sign(self._secret, timestamp, body)
        return body, headers

    def _outcome(self, answer: Answer) -> Result:
        """A 2xx as the Result; any other answer as the error it means."""
        status = answer.status_code
        if 200 <= status < 300:
            return Result(provider_id=_answer_id(answer), detail=f"HTTP {status}")
        text = answer.text[:2000]
        if 300 <= status < 400:
            raise PermanentError(f"the webhook moved to {answer.headers.get('Location', '?')}; update its url",
                                 status=status, answer=text)
        raise from_http_status(status, text, parse_retry_after(answer.headers.get("Retry-After")))

    def close(self) -> None:
        self._http.close()


def _answer_id(response: Answer) -> str | None:
    try:
        answer = response.json()
    except ValueError:
        return None
    value = answer.get("id") if isinstance(answer, dict) else None
    return str(value) if value is not None else None
