"""The daemon's OpenAPI description: which credential each operation takes, and who may read it.

Every route that is part of the API is described: the ingest (tag `ingest`), the profile API
(`profile`), the admin API with the detailed readiness and /metrics (`admin`), /healthz and the
bare /readyz (`health`). Left out: the unsubscribe pages (`/u/{token}`, HTML for a recipient
following a link from an email, not an API anyone programs against) and the console (HTML pages
for a person); /openapi.json itself.

The security of an operation follows its tag (`TAG_SECURITY`), set when the document is built,
so a route another part of the daemon registers with `tags=["admin"]` is described as taking the
admin token without saying so itself; a route whose credential is its own declares it
(`openapi_extra={"security": [{"feedbackToken": []}]}`, a scheme of `SCHEMES`), and keeps it; each admin operation also gets the 401 and 403 every admin
route can answer (`AdminAuth.refusal`). There is no global `security`: /healthz and /readyz take
none. The ingest's bare app (`create_app`, used alone by tests and benchmarks) serves this
document openly; `journeys serve` serves it behind the admin token (`add_openapi`): it maps every
operator route, which is for operators to read.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request  # at module level, as the responses: the route's annotations name them
from fastapi.responses import JSONResponse, Response

SCHEMES: dict[str, dict[str, Any]] = {
    "writeKey": {"type": "http", "scheme": "basic",
                 "description": "The source's write key as the user name, an empty password (or `writeKey` in the "
                                "body): the values of the variables `[ingest] write_keys_env` names."},
    "profileKey": {"type": "http", "scheme": "bearer",
                   "description": "A key `[ingest] profile_keys_env` names, as a Bearer token (or as the HTTP Basic "
                                  "user name). Write keys are not accepted."},
    "adminToken": {"type": "http", "scheme": "bearer",
                   "description": "JOURNEYS_ADMIN_TOKEN. Unset, every operator route answers 401."},
    "feedbackToken": {"type": "http", "scheme": "bearer",
                      "description": "JOURNEYS_FEEDBACK_TOKEN (an MTA's pipe: it can do nothing else), or the admin "
                                     "token."},
    "svixSignature": {"type": "apiKey", "in": "header", "name": "svix-signature",
                      "description": "A provider's webhook signed with the connector's secret (Svix: with svix-id "
                                     "and svix-timestamp)."},
}
TAG_SECURITY: dict[str, str | None] = {"ingest": "writeKey", "profile": "profileKey", "admin": "adminToken",
                                       "health": None}
ADMIN_ERRORS = {
    "401": "No admin token, a wrong one, or none configured (JOURNEYS_ADMIN_TOKEN unset).",
    "403": "The console's cookie on a change that did not come from the console's own page.",
}


def secure(schema: dict[str, Any]) -> dict[str, Any]:
    """Set each operation's `security` from its tag, the schemes it uses, and the admin errors."""
    from .schemas import DaemonError

    components = schema.setdefault("components", {})
    used: set[str] = set()
    admin = False
    for operations in schema.get("paths", {}).values():
        for op in operations.values():
            if "security" in op:  # the route's own
                used.update(name for requirement in op["security"] for name in requirement)
                continue
            tags = [t for t in op.get("tags", ()) if t in TAG_SECURITY]
            if not tags:
                continue
            scheme = TAG_SECURITY[tags[0]]
            op["security"] = [] if scheme is None else [{scheme: []}]
            if scheme is not None:
                used.add(scheme)
            if scheme == "adminToken":
                admin = True
                for status, description in ADMIN_ERRORS.items():
                    op.setdefault("responses", {}).setdefault(status, {
                        "description": description,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/DaemonError"}}}})
    schema.pop("security", None)
    components["securitySchemes"] = {name: SCHEMES[name] for name in SCHEMES if name in used}
    if admin:
        components.setdefault("schemas", {}).setdefault(
            "DaemonError", DaemonError.model_json_schema(ref_template="#/components/schemas/{model}"))
    return schema


def add_openapi(app: Any, auth: Any) -> None:
    """GET /openapi.json behind the admin token (`create_app(openapi_url=None)` leaves it out)."""
    async def openapi(request: Request) -> Response:
        if (refused := auth.refusal(request)) is not None:
            return refused
        return JSONResponse(app.openapi())

    app.add_api_route("/openapi.json", openapi, methods=["GET"], include_in_schema=False, tags=["admin"])
