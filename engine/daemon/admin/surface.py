"""Which of the daemon's paths are the operator's, and the two listeners that split them.

The public port serves what senders, recipients and load balancers need: the ingest (write keys),
the unsubscribe links, the profile API (its own keys), /healthz and a bare /readyz. Everything
that shows or changes the daemon's insides is the operator's: /admin/... (the admin API and the
detailed readiness, /admin/readyz), /metrics, /openapi.json and the console (/console...). Each of
those routes checks the admin token itself (`AdminAuth.refusal`); this module only says which
paths they are, by prefix, so that `journeys serve --admin-port N` can serve them on a listener of
their own (loopback by default) and answer 404 for them on the public port, and the public paths
404 on the admin listener. tests/test_operator_surface.py walks every route of the app and holds
both the credential each route asks for and this split to its table.
"""

from __future__ import annotations

from typing import Any

OPERATOR_PREFIXES = ("/admin", "/console", "/metrics", "/openapi.json")


def operator_path(path: str) -> bool:
    """Whether `path` (a request's, or a route's template) is one of the operator's."""
    return any(path == p or path.startswith(p + "/") for p in OPERATOR_PREFIXES)


class Only:
    """The daemon's app on one listener: the operator's paths (`operator=True`) or the others;
    a path that belongs to the other listener is a JSON 404, as a path that does not exist."""

    def __init__(self, app: Any, *, operator: bool):
        self.app, self.operator = app, operator

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and operator_path(scope["path"]) != self.operator:
            from .auth import error

            where = "the public port" if self.operator else "the admin port (--admin-port)"
            await error(404, f"not found: {scope['path']} is served on {where}")(scope, receive, send)
            return
        await self.app(scope, receive, send)
