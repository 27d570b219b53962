"""The admin API over HTTP, for `journeys admin`: one call, its JSON answer, or one line saying why not.

An operator runs these commands when something is wrong, often against a daemon that is the
problem. So every failure is an `AdminError` whose message is one line a person can act on: the
daemon cannot be reached (stopped, wrong --url), it did not answer in time, it refused the token,
it knows no such user or journey (its own error message, as the API said it), or it answered
something that is not the admin API's JSON (--url names another server). The command prints it on
stderr and exits 1; a traceback would bury the cause.
"""

from __future__ import annotations

import re
from typing import Any, Mapping
from urllib.parse import quote

DEFAULT_URL = "http://127.0.0.1:8080"
TIMEOUT = 10.0  # seconds; a resume waits about one more (engine.daemon.admin.pause_store.SETTLE_AFTER)


class AdminError(Exception):
    """A call that failed, in one line."""


def segment(value: str) -> str:
    """`value` as one path segment: a user id with a slash or a `?` stays one id."""
    return quote(value, safe="")


class Client:
    def __init__(self, url: str, token: str | None, timeout: float = TIMEOUT):
        self.url, self.token, self.timeout = url.rstrip("/"), token, timeout

    def call(self, method: str, path: str, *, params: Mapping[str, Any] | None = None, json: Any = None,
             ok: tuple[int, ...] = (200,)) -> tuple[int, Any]:
        """(status, the JSON answer) of one request; AdminError unless its status is in `ok`."""
        import httpx

        if not self.token:
            raise AdminError("no admin token: set JOURNEYS_ADMIN_TOKEN or pass --token")
        try:
            given = {k: v for k, v in (params or {}).items() if v is not None}
            r = httpx.request(method, self.url + path, params=given, json=json,
                              headers={"Authorization": f"Bearer {self.token}"}, timeout=self.timeout)
        except httpx.TimeoutException:
            raise AdminError(f"the daemon at {self.url} did not answer within {self.timeout:g} s") from None
        except (httpx.HTTPError, httpx.InvalidURL) as e:
            raise AdminError(f"cannot reach the daemon at {self.url}: {_reason(e)}") from None
        try:
            body = r.json()
        except ValueError:
            body = None
        if r.status_code in ok and isinstance(body, dict):
            return r.status_code, body
        raise AdminError(_refusal(self.url, method, path, r.status_code, body))


def _reason(e: Exception) -> str:
    """An exception's words without errno's prefix: `[Errno 111] Connection refused` -> `connection refused`."""
    text = re.sub(r"\[Errno -?\d+\]\s*", "", str(e)).strip() or type(e).__name__
    return text[:1].lower() + text[1:]


def _refusal(url: str, method: str, path: str, status: int, body: Any) -> str:
    message = body.get("error") if isinstance(body, dict) else None
    if status in (401, 403):
        return (f"the daemon at {url} refused the admin token ({status}): {message or 'unauthorized'}; "
                "check JOURNEYS_ADMIN_TOKEN or --token")
    if not isinstance(message, str):
        return f"{url}: {method} {path} answered {status} without the admin API's JSON: is --url a journeys daemon?"
    if status == 404 and body.get("detail") == "Not Found":  # no such route: not this daemon's admin API
        return f"{url}: {method} {path}: no such route (404): is --url the daemon's address, of this version?"
    return message if status == 404 else f"the daemon answered {status}: {message}"
