"""Email through Resend's HTTP API (`POST https://api.resend.com/emails`).

    [connectors.resend]
    channel = "email"
    type = "resend"
    api_key_env = "RESEND_API_KEY"          # default; sent as `Authorization: Bearer ...`
    from = "Shop <hello@shop.example.com>"  # when a template has no `from`
    timeout = "10s"
    base_url = "https://api.resend.com"     # only tests change it (http only to this machine)
    webhook_secret_env = "RESEND_WEBHOOK_SECRET"  # default; the signing secret (whsec_...) of the
                                            # webhook endpoint POST /v1/feedback/resend

The request is Resend's documented JSON (`from`, `to`, `subject`, `html`, `text`, `reply_to`,
`headers`), with the action id as `Idempotency-Key`: Resend answers a repeated key within 24
hours with the first email's id instead of sending again, so a retry after a timeout cannot
send twice. The answer's `id` is the Result's provider id. The action id also goes as the tag
`journeys_action` (when it fits Resend's tag alphabet), which Resend's webhooks give back.

Feedback (`webhook_feedback`): Resend posts its events to the daemon's `POST /v1/feedback/resend`,
signed the Svix way (`svix-id`, `svix-timestamp`, `svix-signature`: HMAC-SHA256 of
`id.timestamp.body`, verified with the maintained `svix` package, five minutes of clock skew at
most). `email.bounced` is a bounce, hard when Resend says `Permanent` (soft for `Transient` and
`Undetermined`); `email.complained` a spam complaint; every other event type is answered and
ignored. The user is the one of the action its `journeys_action` tag names.

Errors follow Resend's documented codes: 429 (rate limit, daily or monthly quota) is retryable
after `Retry-After`; 409 `concurrent_idempotent_requests` (the same key still in flight) is
retryable, 409 `invalid_idempotent_request` (the same key with another body) is permanent;
401/403 mean the key (or the sending domain) is wrong: ConfigurationError; other 4xx are
permanent; 5xx, timeouts and connection errors retryable.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

from .base import Delivery, Feedback, MalformedReport, Result
from .errors import ConfigurationError, PermanentError, RetryableError, from_http_status, parse_retry_after
from .render import EmailRenderer, TemplateStore, recipient
from .base import check_settings
from .http import Answer, Http, HttpTimeout, HttpUnreachable
from .smtp import parse_seconds

DEFAULT_BASE_URL = "https://api.resend.com"
DEFAULT_KEY_ENV = "RESEND_API_KEY"  # the variable of the API key when journeys.toml names none
_LOOPBACK = {"127.0.0.1", "::1", "localhost"}
DEFAULT_WEBHOOK_SECRET_ENV = "RESEND_WEBHOOK_SECRET"  # the webhook's signing secret when journeys.toml names none
SETTINGS = {"api_key_env", "from", "timeout", "base_url", "webhook_secret_env"}
ACTION_TAG = "journeys_action"  # the tag that carries the action id to the webhooks
_TAG_VALUE = re.compile(r"[A-Za-z0-9_-]{1,256}")  # what Resend accepts in a tag


class ResendConnector:
    channel = "email"

    def __init__(self, name: str, settings: Mapping[str, Any], env: Mapping[str, str], *,
                 templates: TemplateStore | Path | str = ".", public_url: str | None = None,
                 transport: Any = None):
        """`transport`: an httpx transport to send through instead of the network (tests)."""
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
        self._http = Http(timeout=self.timeout, base_url=self.base_url, max_connections=100, transport=transport,
                          headers={"Authorization": f"Bearer {self.api_key}", "User-Agent": "journeys"})

    def close(self) -> None:
        self._http.close()

    def payload(self, delivery: Delivery) -> dict[str, Any]:
        to = recipient(delivery)
        r = self.renderer.render(delivery)
        body: dict[str, Any] = {"from": r.sender, "to": [to], "subject": r.subject, "html": r.html, "text": r.text,
                                "headers": dict(r.headers)}
        if r.reply_to:
            body["reply_to"] = r.reply_to
        if _TAG_VALUE.fullmatch(delivery.action_id):
            body["tags"] = [{"name": ACTION_TAG, "value": delivery.action_id}]
        return body

    def deliver(self, delivery: Delivery) -> Result:
        body = self.payload(delivery)
        try:
            response = self._http.post("/emails", json=body, headers={"Idempotency-Key": delivery.action_id})
        except HttpTimeout as e:
            raise RetryableError(f"Resend did not answer in time ({e})") from None
        except HttpUnreachable as e:
            raise RetryableError(f"cannot reach Resend: {e}") from None
        if 200 <= response.status_code < 300:
            try:
                provider_id = response.json().get("id")
            except (ValueError, AttributeError):
                provider_id = None
            return Result(provider_id=provider_id, detail="accepted by Resend")
        raise _error(response)


def _error(response: Answer) -> Exception:
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


# ---------------------------------------------------------------------- webhooks


class UnverifiedWebhook(Exception):
    """A webhook whose signature matches none of the secrets (or whose headers are missing or stale)."""


def webhook_secrets(connectors: Mapping[str, Mapping[str, Any]], env: Mapping[str, str]) -> dict[str, str]:
    """Each Resend connector's webhook signing secret that is set: {connector name: secret}.
    `connectors`: {name: {"type": ..., settings...}}, as journeys.toml has them."""
    out = {}
    for name, settings in connectors.items():
        if settings.get("type") == "resend":
            secret = env.get(str(settings.get("webhook_secret_env") or DEFAULT_WEBHOOK_SECRET_ENV), "")
            if secret:
                out[name] = secret
    return out


def verify_webhook(body: bytes, headers: Mapping[str, str], secrets: Mapping[str, str]) -> str:
    """The name of the connector whose secret signed this webhook (Svix's scheme, by the `svix`
    package), or UnverifiedWebhook. A secret that is not a Svix secret is a ConfigurationError."""
    import binascii

    from svix.webhooks import Webhook, WebhookVerificationError

    wanted = {k.lower(): v for k, v in headers.items() if k.lower() in ("svix-id", "svix-timestamp", "svix-signature")}
    for name, secret in secrets.items():
        try:
            hook = Webhook(secret)
        except (binascii.Error, ValueError, RuntimeError) as e:
            raise ConfigurationError(f"connector `{name}`: the webhook secret is not a Svix signing secret "
                                     f"(whsec_...): {e}") from None
        try:
            hook.verify(body, dict(wanted))
            return name
        except WebhookVerificationError:
            continue
    raise UnverifiedWebhook("the svix-signature matches no Resend webhook secret (or svix-id, svix-timestamp "
                            "are missing, or the timestamp is more than 5 minutes off)")


def webhook_feedback(payload: Any, provider: str, report_id: str | None = None) -> list[Feedback]:
    """What one verified Resend webhook event reports: a bounce or a complaint, or nothing for the
    other event types. Raises MalformedReport naming the field when the event is not as documented."""
    if not isinstance(payload, dict):
        raise MalformedReport("body", "expected a JSON object {type, created_at, data}")
    kind = payload.get("type")
    if not isinstance(kind, str) or not kind:
        raise MalformedReport("type", "missing: the event type, such as email.bounced")
    if kind not in ("email.bounced", "email.complained"):
        return []
    data = payload.get("data")
    if not isinstance(data, dict):
        raise MalformedReport("data", f"expected an object for {kind}")
    to = data.get("to")
    address = (to[0] if isinstance(to, list) and to else to) if to else None
    if not isinstance(address, str) or "@" not in address:
        raise MalformedReport("data.to", "expected the recipient's address")
    action_id = _tag(data.get("tags"), ACTION_TAG)
    if kind == "email.complained":
        return [Feedback("complaint", provider, reason="marked as spam", address=address, action_id=action_id,
                         report_id=report_id)]
    bounce = data.get("bounce")
    if not isinstance(bounce, dict) or not isinstance(bounce.get("type"), str):
        raise MalformedReport("data.bounce.type", "expected Permanent, Transient or Undetermined")
    said = "; ".join(str(bounce[k]) for k in ("type", "subType", "message") if bounce.get(k))
    return [Feedback("bounce", provider, reason=said, address=address, action_id=action_id, report_id=report_id,
                     bounce="hard" if bounce["type"].strip().lower() == "permanent" else "soft")]


def _tag(tags: Any, name: str) -> str | None:
    """A tag's value: Resend gives tags as [{name, value}] or as {name: value}."""
    if isinstance(tags, dict):
        value = tags.get(name)
    elif isinstance(tags, list):
        value = next((t.get("value") for t in tags if isinstance(t, dict) and t.get("name") == name), None)
    else:
        value = None
    return value if isinstance(value, str) and value else None
