"""The one exception tree of delivery. Every connector raises only these.

    DeliveryError                 something kept an action from being delivered
    ├── RetryableError            try again later: timeouts, connection errors, 5xx, 429
    │                             (`retry_after`: seconds the provider asked to wait, if it said)
    └── PermanentError            trying again cannot help: 4xx, invalid credentials, bad payload
        ├── InvalidRecipient      this recipient can never receive it (unknown address, an
        │                         unregistered push token): `stale` is that dead address or token,
        │                         for the outbox to remove from the profile
        └── ConfigurationError    the connector is not usable: a missing secret, a bad setting

Every error carries the provider's answer (`status`, `answer`) so the outbox records why an
action failed in the provider's own words.
"""

from __future__ import annotations


class DeliveryError(Exception):
    def __init__(self, message: str, *, status: int | None = None, answer: str | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.answer = answer

    def __str__(self) -> str:
        where = f" (HTTP {self.status})" if self.status is not None else ""
        return f"{self.message}{where}"


class RetryableError(DeliveryError):
    def __init__(self, message: str, *, status: int | None = None, answer: str | None = None,
                 retry_after: float | None = None):
        super().__init__(message, status=status, answer=answer)
        self.retry_after = retry_after


class PermanentError(DeliveryError):
    pass


class InvalidRecipient(PermanentError):
    def __init__(self, message: str, *, status: int | None = None, answer: str | None = None,
                 stale: str | None = None):
        super().__init__(message, status=status, answer=answer)
        self.stale = stale  # the dead address or token itself, to remove from the profile


class ConfigurationError(PermanentError):
    pass


def from_http_status(status: int, answer: str, retry_after: float | None = None) -> DeliveryError:
    """The error an HTTP answer means when the provider documents nothing more specific."""
    if status == 429 or status >= 500 or status == 408:
        return RetryableError("the provider asked to retry" if status == 429 else "the provider failed",
                              status=status, answer=answer, retry_after=retry_after)
    if status in (401, 403):
        return ConfigurationError("the provider refused the credentials", status=status, answer=answer)
    return PermanentError("the provider refused the request", status=status, answer=answer)


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds: a number of seconds or an HTTP date (RFC 9110)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime
    from datetime import datetime, timezone

    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())
