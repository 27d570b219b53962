"""The routes by which providers report on messages after the fact: bounces and complaints.

- `POST /v1/feedback/dsn`: one RFC 3464 delivery status notification, the raw RFC 822 message as
  the body (at most `DSN_MAX_BYTES`), from an MTA's pipe (Postfix `bounce` address piped to curl)
  or an inbound-mail webhook that posts the raw message. Authenticated by
  `Authorization: Bearer <token>`, the token of `JOURNEYS_FEEDBACK_TOKEN` (for the pipe: it can
  do nothing else) or the admin token. Parsed by `connectors.dsn`.
- `POST /v1/feedback/resend`: Resend's webhooks (`email.bounced`, `email.complained`; other
  event types are answered and ignored), authenticated by their Svix signature under the signing
  secret of a Resend connector (`webhook_secret_env`, default `RESEND_WEBHOOK_SECRET`).
  Parsed and verified by `connectors.resend`.

Each report is traced to its user through the action its message was (the DSN's original
Message-ID, Resend's `journeys_action` tag): the action's outbox entry names the user. The events
(`engine.daemon.deliveries.feedback.event_of`) go into the inbox through the ingest's group commit,
so they are durable before the answer and the worker wakes for them. A report that names no action
of ours (another system's mail, an entry past `[serve] outbox_days`, a forgotten user) is
answered 200 with `unattributed` counted and logged: the provider must not retry it forever.

Answers: 200 `{"recorded": n, "unattributed": n, "ignored": n}`; 400 naming the field of a report
that is not one (`connectors.base.MalformedReport`); 401 for a missing or wrong token or signature
(nothing is recorded); 404 for a route that is off (no token for DSNs, no Resend webhook secret);
413 over the size limit; 503 when the inbox cannot be written (retry).
"""

from __future__ import annotations

import hashlib
import logging
import os
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, Sequence

import orjson
from fastapi import Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from connectors.base import Feedback, MalformedReport

from .feedback import event_of, rows

log = logging.getLogger("journeys.delivery")

FEEDBACK_TOKEN_ENV = "JOURNEYS_FEEDBACK_TOKEN"
DSN_MAX_BYTES = 1_000_000  # a DSN may give the whole original message back
WEBHOOK_MAX_BYTES = 256 * 1024


class Recorded(BaseModel):
    """What a report became."""

    recorded: int  # events written to the inbox
    unattributed: int = 0  # reports that name no message of ours (logged)
    ignored: int = 0  # reports that call for nothing (a delivered DSN recipient, a Resend `email.opened`)


def _responses(auth: str) -> dict[int | str, dict[str, Any]]:
    from ..admin.schemas import DaemonError as ErrorBody  # every error code of the daemon (not_found too)

    return {200: {"model": Recorded, "description": "The report's events are in the inbox."},
            400: {"model": ErrorBody, "description": "Not a report: `field` names what is missing or wrong."},
            401: {"model": ErrorBody, "description": f"{auth} is missing or wrong: nothing is recorded."},
            404: {"model": ErrorBody, "description": "This source is not configured (no token, no webhook secret)."},
            413: {"model": ErrorBody, "description": "The body is over the size limit."},
            415: {"model": ErrorBody, "description": "A Content-Encoding other than gzip."},
            503: {"model": ErrorBody, "description": "The inbox could not be written, or the webhook secret is "
                                                    "not one; retry."}}


def add_feedback_routes(app: Any, worker: Any) -> None:
    """`POST /v1/feedback/dsn` and `POST /v1/feedback/resend` on the daemon's app (module docstring)."""
    from connectors import dsn
    from connectors.errors import ConfigurationError
    from connectors.resend import UnverifiedWebhook, verify_webhook, webhook_feedback, webhook_secrets

    from ..admin.auth import ADMIN_TOKEN_ENV, bearer, error, matches
    from ..ingest import Refused, read_body

    env: Mapping[str, str] = worker.environ if worker.environ is not None else os.environ
    tokens = [env[n].encode("utf-8") for n in (FEEDBACK_TOKEN_ENV, ADMIN_TOKEN_ENV) if env.get(n)]
    commit = app.state.group_commit

    def users_of(action_ids: set[str]) -> dict[str, str]:
        """On the worker thread: the user of each action (by its email outbox entries)."""
        return {e.action_id: e.user_id for e in worker.outbox.of_actions(sorted(action_ids)) if e.kind == "email"}

    async def record(reports: Sequence[Feedback], source: Callable[[Feedback], str], what: str,
                     ignored: int = 0) -> Response:
        wanted = {fb.action_id for fb in reports if fb.action_id}
        users: dict[str, str] = {}
        if wanted:
            users = await worker.call(lambda: users_of(wanted))
        now = datetime.now(timezone.utc)
        calls = [event_of(fb, users[fb.action_id], now, source(fb)) for fb in reports if fb.action_id in users]
        lost = len(reports) - len(calls)
        if lost:
            log.warning("%s: %d of %d reports name no message of ours (no action id, or none in the outbox): "
                        "not recorded", what, lost, len(reports))
        if calls:
            try:
                await commit.submit(rows(calls, now))
            except Exception as exc:  # noqa: BLE001 - the provider retries a 5xx
                return Refused(503, f"the inbox could not store the events: {exc}").response()
        return JSONResponse(Recorded(recorded=len(calls), unattributed=lost, ignored=ignored).model_dump())

    async def body_of(request: Request, cap: int) -> bytes:
        return await read_body(request.headers.get("content-length"), request.headers.get("content-encoding"),
                               request.stream(), cap)

    async def dsn_route(request: Request) -> Response:
        if not tokens:
            return error(404, f"the DSN route is off: set {FEEDBACK_TOKEN_ENV} (or {ADMIN_TOKEN_ENV})")
        if not matches(bearer(request.headers.get("authorization")), tokens):
            return error(401, f"Authorization: Bearer <{FEEDBACK_TOKEN_ENV} or the admin token> is required")
        try:
            raw = await body_of(request, DSN_MAX_BYTES)
        except Refused as refused:
            return refused.response()
        try:
            reports = dsn.parse(raw)
        except MalformedReport as bad:
            return error(400, f"not a delivery status notification: {bad}", bad.field)
        digest = hashlib.sha256(raw).hexdigest()[:32]
        return await record(reports, lambda fb: f"dsn:{fb.report_id or digest}", "a DSN",
                            ignored=0 if reports else 1)

    async def resend_route(request: Request) -> Response:
        secrets = webhook_secrets({n: {"type": c.type, **c.settings} for n, c in worker.config.connectors.items()},
                                  env)
        if not secrets:
            return error(404, "no Resend webhook secret: set RESEND_WEBHOOK_SECRET (or the variable a Resend "
                              "connector's `webhook_secret_env` names)")
        try:
            raw = await body_of(request, WEBHOOK_MAX_BYTES)
        except Refused as refused:
            return refused.response()
        try:
            provider = verify_webhook(raw, dict(request.headers), secrets)
        except UnverifiedWebhook as e:
            return error(401, str(e), "svix-signature")
        except ConfigurationError as e:
            log.error("%s", e)
            return error(503, str(e))
        try:
            payload = orjson.loads(raw)
        except orjson.JSONDecodeError as e:
            return error(400, f"malformed JSON: {e}", "body")
        report_id = request.headers.get("svix-id")
        try:
            reports = webhook_feedback(payload, provider, report_id)
        except MalformedReport as bad:
            return error(400, f"not a Resend email event: {bad}", bad.field)
        return await record(reports, lambda fb: f"resend:{report_id}", "a Resend webhook",
                            ignored=0 if reports else 1)

    raw_body = {"requestBody": {"required": True, "content": {
        "message/rfc822": {"schema": {"type": "string", "format": "binary"}}}}}
    json_body = {"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"type": "object", "required": ["type", "data"]}}}}}
    app.add_api_route("/v1/feedback/dsn", dsn_route, methods=["POST"], tags=["feedback"], include_in_schema=True,
                      summary="A delivery status notification (RFC 3464) for a message sent over SMTP",
                      responses=_responses(f"Bearer {FEEDBACK_TOKEN_ENV} (or the admin token)"),
                      openapi_extra={**raw_body, "security": [{"feedbackToken": []}, {"adminToken": []}]})
    app.add_api_route("/v1/feedback/resend", resend_route, methods=["POST"], tags=["feedback"],
                      include_in_schema=True, summary="Resend's webhook events (bounces and complaints)",
                      responses=_responses("The Svix signature (svix-id, svix-timestamp, svix-signature)"),
                      openapi_extra={**json_body, "security": [{"svixSignature": []}]})
