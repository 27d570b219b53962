"""The emergency stop's HTTP routes: `GET /admin/pauses`, `POST /admin/pauses`,
`DELETE /admin/pauses/{journey}?held=release|drop` and `GET /admin/pauses/log`, behind the admin
token, run on the worker thread.

What a pause and a resume do, and why, is engine.daemon.admin.pause_store (re-exported here:
`list_pauses(conn)` is what the console reads). The answers:

- `GET /admin/pauses` -> `{"pauses": [{"journey", "since", "by", "reason", "held"}, ...]}`
- `POST /admin/pauses` `{"journey": "<name>" or "*", "by"?, "reason"?}` -> `{"paused": {...}}`: a
  journey that is not loaded is a 404 naming `journey`; a journey paused already answers its pause
  as it was (idempotent).
- `DELETE /admin/pauses/{journey}?held=release|drop&by=...` -> `{"resumed", "released", "dropped"}`,
  answered once the held sends are settled, `SETTLE_AFTER` (about a second) after the pause went;
  held sends and no `held` is a 400 naming `held`; neither paused nor anything held, a 404.
- `GET /admin/pauses/log?journey=NAME&limit=N` -> `{"log": [{"at", "journey", "event", "by", "reason",
  "held", "released", "dropped"}, ...]}`: every pause and resume, newest first (`event` paused or
  resumed; a resume's `held` is the choice, release or drop, or null when nothing was held), of one
  journey when `journey` is given (`*`: the pauses of every send; a journey never paused: an empty
  list). `limit` 1 to `MAX_LOG` (default `LOG_LIMIT`); anything else is a 400 naming `limit`.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, Callable, Literal, Mapping

import orjson
from fastapi import Request
from fastapi.responses import JSONResponse, Response

from .auth import AdminAuth, error, query_limit
from .pause_store import (ALL, DROP, RELEASE, SETTLE_AFTER, ChoiceNeeded, NotPaused, lift, list_pauses, log_of, pause,
                          paused, settle)

__all__ = ["add_pause_routes", "list_pauses", "log_of"]

MAX_TEXT = 1000  # characters of `by` and `reason`
LOG_LIMIT, MAX_LOG = 100, 1000  # rows of the pause log answered: by default, at most


_BODY = {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "required": ["journey"], "properties": {
        "journey": {"type": "string", "description": "a journey's name, or * for every send"},
        "by": {"type": "string", "description": "who pauses (journeys admin: $USER@host)"},
        "reason": {"type": ["string", "null"]}}}}}}
_QUERY = [{"name": "held", "in": "query", "required": False, "schema": {"type": "string", "enum": [RELEASE, DROP]},
           "description": "what becomes of the held sends (release: sent in their order; drop: kept as dropped); "
                          "required when some are held"},
          {"name": "by", "in": "query", "required": False, "schema": {"type": "string"},
           "description": "who resumes (journeys admin: $USER@host)"}]
_LOG_QUERY = [{"name": "journey", "in": "query", "required": False, "schema": {"type": "string"},
               "description": "only this journey's pauses (* for the pauses of every send)"},
              {"name": "limit", "in": "query", "required": False,
               "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LOG, "default": LOG_LIMIT},
               "description": "the newest N rows"}]


def _models() -> dict[str, Any]:
    """The answers' shapes for /openapi.json (engine.daemon.admin.schemas' way: they only document)."""
    from pydantic import BaseModel, Field

    from .schemas import DaemonError

    class Pause(BaseModel):
        journey: str = Field(description="The journey's name, or * for every send.")
        since: str = Field(description="When it was paused (ISO 8601, UTC).")
        by: str = Field(description="Who paused it.")
        reason: str | None
        held: int = Field(description="Its sends held so far (of *: every held send).")

    class Pauses(BaseModel):
        pauses: list[Pause]

    class Paused(BaseModel):
        paused: Pause

    class Resumed(BaseModel):
        resumed: str
        released: int = Field(description="Held sends pending again, in their order.")
        dropped: int = Field(description="Held sends dropped (state dropped, the pause as their error).")

    class Logged(BaseModel):
        at: str = Field(description="When (ISO 8601, UTC).")
        journey: str = Field(description="The journey's name, or * for every send.")
        event: Literal["paused", "resumed"]
        by: str = Field(description="Who paused or resumed.")
        reason: str | None = Field(description="Why it was paused (null on a resume).")
        held: Literal["release", "drop"] | None = Field(
            description="A resume's choice for the held sends (null on a pause, or when none was given).")
        released: int | None = Field(description="A resume's held sends pending again (null on a pause).")
        dropped: int | None = Field(description="A resume's held sends dropped (null on a pause).")

    class PauseLog(BaseModel):
        log: list[Logged] = Field(description="Newest first.")

    def answer(model: Any, description: str) -> dict[str, Any]:
        return {"model": model, "description": description}

    return {"get": {200: answer(Pauses, "Each pause, with how many sends it holds.")},
            "log": {200: answer(PauseLog, "Every pause and resume, newest first: who, when, why, and what became "
                                          "of the held sends."),
                    400: answer(DaemonError, f"limit is not a whole number from 1 to {MAX_LOG} (field: limit).")},
            "post": {200: answer(Paused, "Paused (or paused already: the pause as it was)."),
                     400: answer(DaemonError, "The body is not a JSON object, or a field is missing or not a string."),
                     404: answer(DaemonError, "No journey of that name is loaded (field: journey).")},
            "delete": {200: answer(Resumed, "Resumed: what became of the held sends."),
                       400: answer(DaemonError, "Sends are held and held= is missing, or held= is neither "
                                                "release nor drop (field: held)."),
                       404: answer(DaemonError, "Not paused, and none of its sends held (field: journey).")}}


def add_pause_routes(app: Any, worker: Any) -> None:
    """`GET /admin/pauses`, `POST /admin/pauses`, `DELETE /admin/pauses/{journey}?held=release|drop`,
    `GET /admin/pauses/log` (see the module docstring), behind the admin token, on the worker thread."""
    env: Mapping[str, str] = worker.environ if worker.environ is not None else os.environ
    refusal = AdminAuth(env).refusal

    async def on_worker(fn: Callable[[Any], Any]) -> Any:
        """`fn(conn)` in a transaction of the worker's store, on its thread."""
        def run() -> Any:
            with worker.store.transaction():
                return fn(worker.store.conn)
        return await worker.call(run)

    def who(request: Request, given: Any) -> str:
        client = request.client.host if request.client else "unknown"
        return given if isinstance(given, str) and given.strip() else f"admin API ({client})"

    async def get_pauses(request: Request) -> Response:
        if (refused := refusal(request)) is not None:
            return refused
        return JSONResponse({"pauses": await on_worker(list_pauses)})

    async def get_log(request: Request) -> Response:
        if (refused := refusal(request)) is not None:
            return refused
        if isinstance(limit := query_limit(request, LOG_LIMIT, MAX_LOG), Response):
            return limit
        journey = request.query_params.get("journey") or None
        return JSONResponse({"log": await on_worker(lambda conn: log_of(conn, limit, journey))})

    async def post_pause(request: Request) -> Response:
        if (refused := refusal(request)) is not None:
            return refused
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            return error(400, 'the body must be JSON: {"journey": "<name>" or "*", "by": ..., "reason": ...}')
        if not isinstance(body, dict):
            return error(400, "the body must be a JSON object")
        journey, by, reason = body.get("journey"), body.get("by"), body.get("reason")
        for field, value in (("journey", journey), ("by", by), ("reason", reason)):
            if value is not None and (not isinstance(value, str) or len(value) > MAX_TEXT):
                return error(400, f"{field}: a string of at most {MAX_TEXT} characters", field)
        if not journey:
            return error(400, 'journey: the name of the journey to pause, or "*" for every send', "journey")

        def run(conn: Any) -> Any:
            if journey != ALL and journey not in worker.program.journeys and journey not in paused(conn):
                return None
            return pause(conn, journey, who(request, by), reason or None, worker.clock.now())

        found = await on_worker(run)
        if found is None:
            return error(404, f"no journey {journey!r} is loaded (journeys admin status lists them)", "journey")
        return JSONResponse({"paused": found[0]})

    async def delete_pause(journey: str, request: Request) -> Response:
        if (refused := refusal(request)) is not None:
            return refused
        held = request.query_params.get("held")
        if held is not None and held not in (RELEASE, DROP):
            return error(400, f"held: {RELEASE} (send the held sends) or {DROP}, not {held!r}", "held")
        by = who(request, request.query_params.get("by"))
        trail_on = bool(getattr(getattr(worker, "trail", None), "days", 0))
        try:
            cause = await on_worker(lambda conn: lift(conn, journey, held))
        except NotPaused as e:
            return error(404, str(e), "journey")
        except ChoiceNeeded as e:
            return error(400, str(e), "held")
        await asyncio.sleep(SETTLE_AFTER)  # every loop's view is fresh by now: nothing settled is held again
        done = await on_worker(lambda conn: settle(conn, worker.outbox, journey, held, cause, by, worker.clock.now(),
                                                   trail=trail_on))
        if done["released"] and worker.deliveries is not None:
            worker.deliveries.poke()
        return JSONResponse(done)

    docs = _models()
    admin = {"tags": ["admin"], "include_in_schema": True}
    app.add_api_route("/admin/pauses", get_pauses, methods=["GET"], summary="The paused journeys",
                      responses=docs["get"], **admin)
    app.add_api_route("/admin/pauses/log", get_log, methods=["GET"], summary="Every pause and resume, newest first",
                      openapi_extra={"parameters": _LOG_QUERY}, responses=docs["log"], **admin)
    app.add_api_route("/admin/pauses", post_pause, methods=["POST"], summary="Pause a journey's sends, or every send",
                      openapi_extra={"requestBody": _BODY}, responses=docs["post"], **admin)
    app.add_api_route("/admin/pauses/{journey}", delete_pause, methods=["DELETE"],
                      summary="Resume a journey's sends (* for every send), releasing or dropping the held ones",
                      openapi_extra={"parameters": _QUERY}, responses=docs["delete"], **admin)
