"""Who may call the operator's routes: one admin token, `JOURNEYS_ADMIN_TOKEN`.

Programs (`journeys admin`, curl, Prometheus) send it as `Authorization: Bearer <token>`. A
browser on the console cannot put a header on a link it follows, so the console's sign-in page
sets it as an HttpOnly, SameSite=Strict cookie (`COOKIE`); a request carrying the cookie instead
of the header that changes anything (any method but GET, HEAD and OPTIONS) must also come from
the daemon's own origin (its Origin, or else Referer, names the Host it was sent to): another site
cannot make a signed-in browser press the console's buttons (CSRF).

Without the variable every operator route is refused: an operator surface nobody configured is
closed, not open.
"""

from __future__ import annotations

import hmac
from typing import Any, Mapping
from urllib.parse import urlsplit

from fastapi.responses import JSONResponse, Response

ADMIN_TOKEN_ENV = "JOURNEYS_ADMIN_TOKEN"
COOKIE = "journeys_admin"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def bearer(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else None


def matches(given: str | None, keys: list[bytes]) -> bool:
    """Whether `given` is one of `keys`, compared in constant time (every key is compared)."""
    if not given:
        return False
    raw = given.encode("utf-8")
    ok = False
    for k in keys:
        ok |= hmac.compare_digest(raw, k)
    return ok


def error(status: int, message: str, field: str | None = None) -> JSONResponse:
    """`{"error", "field"?, "code", "message"}`: the shape of every error of the daemon (`error_body`)."""
    from ..ingest import error_body

    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(error_body(status, message, field=field), status_code=status, headers=headers)


def query_limit(request: Any, default: int, most: int) -> int | JSONResponse:
    """The request's `?limit=N` (`default` without one), or the 400 naming `limit` to answer when it
    is not a whole number from 1 to `most`."""
    raw = request.query_params.get("limit", str(default))
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= most:
        return error(400, f"limit: a whole number from 1 to {most}, not {raw!r}", "limit")
    return limit


def _same_origin(headers: Mapping[str, str]) -> bool:
    host = headers.get("host")
    source = headers.get("origin") or headers.get("referer")
    return bool(host and source) and urlsplit(source).netloc == host


class AdminAuth:
    """The admin token of the daemon's environment, and the check every operator route makes."""

    def __init__(self, environ: Mapping[str, str]):
        self.token = environ.get(ADMIN_TOKEN_ENV, "").encode("utf-8")

    def valid(self, given: str | None) -> bool:
        return bool(self.token) and matches(given, [self.token])

    def refusal(self, request: Any) -> Response | None:
        """None when the request may go on; otherwise the 401 to answer (JSON, as every error)."""
        if not self.token:
            return error(401, f"the admin API is off: set {ADMIN_TOKEN_ENV}")
        if self.valid(bearer(request.headers.get("authorization"))):
            return None
        if self.valid(request.cookies.get(COOKIE)):
            if request.method in SAFE_METHODS or _same_origin(request.headers):
                return None
            return error(403, "a signed-in console's change must come from the console's own page")
        return error(401, "Authorization: Bearer <admin token> is required")
