"""Email through Resend's HTTP API (`POST https://api.resend.com/emails`).

    [connectors.resend]
    channel = "email"
    type = "resend"
    api_key_env = "RESEND_API_KEY"          # default; sent as `Authorization: Bearer ...`
    from = "Shop <hello@shop.example.com>"  # when a template has no `from`
    timeout = "10s"
    base_url = "https://api.resend.com"     # only tests change it (http only to this machine)

The request is Resend's documented JSON (`from`, `to`, `subject`, `html`, `text`, `reply_to`,
`headers`), with the action id as `Idempotency-Key`: Resend answers a repeated key within 24
hours with the first email's id instead of sending again, so a retry after a timeout cannot
send twice. The answer's `id` is the Result's provider id.

Errors follow Resend's documented codes: 429 (rate limit, daily or monthly quota) is retryable
after `Retry-After`; 409 `concurrent_idempotent_requests` (the same key still in flight) is
retryable, 409 `invalid_idempotent_request` (the same key with another body) is permanent;
401/403 mean the key (or the sending domain) is wrong: ConfigurationError; other 4xx are
permanent; 5xx, timeouts and connection errors retryable.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

import httpx

from .base import Delivery, Result
from .errors import ConfigurationError, PermanentError, RetryableError, from_http_status, parse_retry_after
from .render import EmailRenderer, TemplateStore, recipient
from .base import check_settings
from .smtp import parse_seconds

DEFAULT_BASE_URL = "https://api.resend.com"
DEFAULT_KEY_ENV = "RESEND_API_KEY"  # the variable of the API key when journeys.toml names none
_LOOPBACK = {"127.0.0.1", "::1", "localhost"}
SETTINGS = {"api_key_env", "from", "timeout", "base_url"}


class ResendConnector:
    channel = "email"

    def __init__(self, name: str, settings: Mapping[str, Any], env: Mapping[str, str], *,
                 templates: TemplateStore | Path | str = ".", public_url: str | None = None,
                 transport: httpx.BaseTransport | None = None):
        self.name = name
        check_settings(name, "resend", settings, SETTINGS)
        self.api_key_env = settings.get("api_key_env", DEFAULT_KEY_ENV)
        self.api_key = env.get(self.api_key_env, "")
        if not self.api_key:
            raise ConfigurationError(f"connector `{name}`: the environment variable {self.api_key_env} "
                                     "(the Resend API key) is not set")
        self.base_url = str(settings.get("base_url", DEFAULT_BASE_URL)).rstrip("/")
        parts = urlsplit(self.base_url)
        if not parts.netloc or not (parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in _LOOPBACK)):
            raise ConfigurationError(f"connector `{name}`: `base_url` must be an https URL, not {self.base_url!r}")
        self.timeout = parse_seconds(settings.get("timeout", 10), "timeout")
        self.renderer = EmailRenderer(templates, public_url=public_url, env=env, default_sender=settings.get("from"))
        self._client = httpx.Client(
            base_url=self.base_url, timeout=self.timeout, transport=transport, follow_redirects=False,
            headers={"Authorization": f"Bearer {self.api_key}", "User-Agent": "journeys"})

    def close(self) -> None:
        self._client.close()

    def payload(self, delivery: Delivery) -> dict[str, Any]:
        to = recipient(delivery)
        r = self.renderer.render(delivery)
        body: dict[str, Any] = {"from": r.sender, "to": [to], "subject": r.subject, "html": r.html, "text": r.text,
                                "headers": dict(r.headers)}
        if r.reply_to:
            body["reply_to"] = r.reply_to
        return body

    def deliver(self, delivery: Delivery) -> Result:
        body = self.payload(delivery)
        try:
            response = self._client.post("/emails", json=body, headers={"Idempotency-Key": delivery.action_id})
        except httpx.TimeoutException as e:
            raise RetryableError(f"Resend did not answer in time ({type(e).__name__})") from None
        except httpx.TransportError as e:
            raise RetryableError(f"cannot reach Resend: {e or type(e).__name__}") from None
        if 200 <= response.status_code < 300:
            try:
                provider_id = response.json().get("id")
            except (ValueError, AttributeError):
                provider_id = None
            return Result(provider_id=provider_id, detail="accepted by Resend")
        raise _error(response)


def _error(response: httpx.Response) -> Exception:
    status = response.status_code
    answer = response.text[:2000]
    try:
        data = response.json()
        name, message = str(data.get("name", "")), str(data.get("message", ""))
    except (ValueError, AttributeError):
        name, message = "", ""
    said = f": {name}: {message}" if name or message else ""
    if status == 429:
        return RetryableError(f"Resend asked to slow down{said}", status=status, answer=answer,
                              retry_after=parse_retry_after(response.headers.get("retry-after")))
    if status == 409:
        if name == "invalid_idempotent_request":
            return PermanentError(f"Resend saw this action's key with another body{said}", status=status, answer=answer)
        return RetryableError(f"Resend is still processing this action{said}", status=status, answer=answer,
                              retry_after=parse_retry_after(response.headers.get("retry-after")))
    if status in (401, 403):
        return ConfigurationError(f"Resend refused the API key or the sender{said}", status=status, answer=answer)
    error = from_http_status(status, answer, parse_retry_after(response.headers.get("retry-after")))
    if said:
        error.message += said
    return error
