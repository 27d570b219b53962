"""The daemon's HTTP routes beyond the ingest: unsubscribe links, the profile API, the admin API.

All of them read and write the store on the worker thread (`Worker.submit`): the store's
connection belongs to it, and serialising with the processor means an admin action never races
an event of the same user. The unsubscribe POST alone touches no store: it writes an event into
the inbox, as the ingest does.

- `GET /u/{token}`, `POST /u/{token}`: the unsubscribe link, an opaque token (`connectors.unsubscribe`:
  AES-SIV, several secrets for a rotation, and links of the earlier format while they are on).
  GET changes nothing: mail security scanners and link previews follow every link in a message,
  and would unsubscribe people who never asked. It answers a small page whose "Unsubscribe" button
  POSTs `List-Unsubscribe=One-Click` to the same URL, the very request RFC 8058 One-Click mail
  clients send from the List-Unsubscribe header. POST records the opt-out as an event in the
  inbox, `{"type": "track", "event": "Unsubscribed", "properties": {"channel": <channel>,
  "source": "link"}}` on the link's user, through the ingest's group commit (the delivery
  feedback's `track_call` and `rows`), and answers once it is committed. The engine takes it as
  any event (`<channel>_unsubscribed = true`, or `unsubscribed` for a channel it does not know),
  so segments, exit rules and the delivery's consent check see it; and because it is in the
  inbox, a dry-run of the inbox (`journeys simulate`, `journeys replay`) suppresses the sends the
  daemon suppressed, which an update made behind the inbox's back would not. Its messageId is a
  hash of the user, the channel and the minute of the click: a double click or a One-Click
  client's retry is one event (the engine drops repeats), while a click after the user
  subscribed again is a new opt-out, not a repeat. A forgotten user's click is dropped by the
  processor (`event_filter`), as every event naming them. A POST without that body is a 400
  page; an inbox that cannot be written, a 503 page asking to try again. A token that does not
  verify is a 404 page. The POST's body is read through the ingest's `read_body`, at most
  `UNSUBSCRIBE_MAX_BYTES` (1,000: the One-Click body is 26 bytes, a multipart form of it a few
  hundred): a longer one is a JSON 413 (`payload_too_large`), refused from Content-Length before
  anything is read, or as soon as a chunked body passes the limit. The route is public: it must
  not hold a stranger's 300 MB.
- `GET /v1/profile/{user_id}`: the profile's traits (the site reads `home_banner`), for the keys
  `[ingest] profile_keys_env` names, as HTTP Basic user name or Bearer token. Write keys are not
  accepted: they ship in browsers and apps, and must not read other people's profiles.
- `/admin/...`: behind `Authorization: Bearer $JOURNEYS_ADMIN_TOKEN` (no variable: every admin
  call is refused). `GET /admin/users/{id}`, `GET /admin/users/{id}/trace?limit=N` (or
  `GET /admin/trace?user=ID&limit=N`, for an id that itself ends in `/trace`),
  `GET /admin/journeys`, `GET /admin/dead-letters` (every entry that will not be retried: failed
  and dead alike, or `?state=` one of them), `POST /admin/dead-letters/{entry_id}/retry`,
  `GET /admin/inbox/failed`, `POST /admin/inbox/failed/{seq}/retry` (a message the engine could
  not take goes back into the inbox once the cause is fixed),
  `DELETE /admin/users/{id}` (forget the user). Errors are JSON, `{"error": ..., "field": ...}`
  when a parameter is at fault, with `code` and `message` as every error of the daemon.

The user view's recent actions join two things: the engine's decision (the action log's
`outcome`; an audience change that passed is `updated`, not `sent`) and what became of its
delivery (`status`, from the action's outbox entries: see `fate`).

The trace (`/admin/users/{id}/trace`) is what `journeys simulate --trace USER` prints, about live
traffic: the newest `limit` (default 100, at most 1000) rows of the user's trail (`engine.daemon.trail`,
written by the daemon's sink in the transaction of each state), oldest first, each `{time, line,
effect, ...}` with the same line as the dry-run and the effect's fields. Asking by an anonymous id
or the user id gives the same trail: the rows under the profile id and all its aliases.

Forgetting a user (GDPR erasure, `engine.daemon.erasure.forget`) deletes, in one transaction: the
profile and its journeys in flight, the identities pointing to it, its outbox entries, its trail,
the messages naming it in the inbox and `inbox_failed`, and the payloads of its logged actions (the
rows stay, under keyed hashes, so journey counts still add up). In the same transaction it queues
the removal of the user from every ad audience they are in, on every connector the audience syncs
to: those entries carry only the hashes the platforms match on. The answer lists them
(`audiences_removed`). The user id and its aliases go into `forgotten(id_hash, at, keyed)` as keyed
hashes (HMAC-SHA256 under the store's erasure key), and the processor drops every later event
naming one of them (`event_filter`), so a late or replayed event cannot bring the profile back.

Both stores: the SQL here is written once (engine.store.sql: `?` placeholders, the dialect SQLite and
PostgreSQL share) and runs on the store's own connection, a sqlite3 or a psycopg one. SQLite files
get `forgotten` and `erasure` at run time; PostgreSQL has them, and `trail`, from its migrations.
"""

from __future__ import annotations

import html
import logging
import os
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, Sequence

import orjson
from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import HTMLResponse, JSONResponse, Response

from ..store import sql
from . import erasure
from .admin import schemas
from .admin.auth import AdminAuth, bearer, matches, query_limit
from .admin.auth import error as _error
from .erasure import forget  # DELETE /admin/users/{id}, with the admin API's reads and writes

log = logging.getLogger("journeys.daemon")

RECENT_ACTIONS = 50
TRACE_LIMIT = 100  # trail rows a trace shows unless `limit` says otherwise
UNSUBSCRIBE_MAX_BYTES = 1000  # the body of POST /u/{token}: "List-Unsubscribe=One-Click", in a form
ADMIN_ERRORS = {400: "A parameter is not valid (`field` names it).", 404: "Nothing by that id."}


# ---------------------------------------------------------------------- tombstones

def event_filter(conn: Any) -> Callable[[Sequence[Any]], list[bool]]:
    """The processor's check, for a batch of messages in one query: False for a message that
    names a forgotten user (user id, anonymous id or previous id), whose keyed hash is a tombstone.
    Called when the store is opened: on SQLite it creates the tables; tombstones an older daemon
    wrote in clear are hashed (`erasure.prepare`)."""
    key = erasure.prepare(conn)

    def keep(messages: Sequence[Any]) -> list[bool]:
        named = [[erasure.keyed(key, i) for i in (m.user_id, m.anonymous_id, getattr(m, "previous_id", None)) if i]
                 for m in messages]
        gone = erasure.tombstoned(conn, sorted({h for hashes in named for h in hashes}))
        return [gone.isdisjoint(hashes) for hashes in named]

    return keep


def _aliases(conn: Any, uid: str) -> set[str]:
    """The ids `identities` links to the profile `uid`."""
    return {a for (a,) in sql.execute(conn, "SELECT alias FROM identities WHERE user_id = ?", (uid,))}


# ---------------------------------------------------------------------- the admin API's reads and writes
# Plain functions of the store (and, for forget, engine.daemon.erasure's, the outbox, clock and
# config), run on the worker thread by the routes below; tested on both stores directly
# (tests/test_daemon_pg_tables.py).

ACTION_COLUMNS = ("id", "time", "journey", "version", "path", "kind", "target", "outcome", "reason", "rule")


def user_view(store: Any, outbox: Any, any_id: str) -> dict[str, Any] | None:
    """`GET /admin/users/{id}`: the profile, its aliases, journeys in flight and recent actions,
    each with what became of its delivery (`recent_actions`)."""
    conn = store.conn
    uid = store.resolve(any_id) or any_id
    state = store.load(uid)
    if state is None:
        return None
    instances = [
        {"journey": i.journey, "version": i.version, "entry": i.entry, "entered_at": i.entered_at,
         "path": i.path, "wait": i.wait, "since": i.since, "wake": i.wake, "exiting": i.exiting}
        for i in sorted(state.instances.values(), key=lambda i: i.journey)]
    actions = recent_actions(conn, outbox, uid)
    aliases = sorted(_aliases(conn, uid) | set(state.aliases))
    return jsonable_encoder({
        "userId": uid, "traits": dict(state.traits), "aliases": aliases,
        "audiences": sorted(state.audiences), "segments": dict(state.segments),
        "journeys": instances, "next_wake": state.wake, "recent_actions": actions})


def journey_counts(conn: Any) -> dict[str, Any]:
    """`GET /admin/journeys`: users in flight per journey, and per (version, step, wait). Sorted
    here, not in SQL, so both stores give the same order whatever their collations."""
    groups = sql.execute(conn, "SELECT journey, version, coalesce(path, ''), coalesce(wait, ''), count(*) "
                               "FROM instances GROUP BY journey, version, coalesce(path, ''), coalesce(wait, '')"
                         ).fetchall()
    out: dict[str, Any] = {}
    for journey, version, path, wait, n in sorted(groups):
        j = out.setdefault(journey, {"journey": journey, "in_flight": 0, "steps": []})
        j["in_flight"] += n
        j["steps"].append({"version": version, "path": path or None, "wait": wait or None, "users": n})
    return {"journeys": list(out.values())}


def recent_actions(conn: Any, outbox: Any, uid: str) -> list[dict[str, Any]]:
    """The user's newest actions (RECENT_ACTIONS), each the engine's decision joined with what
    became of its delivery: `outcome` is the decision (`updated` for an audience change that
    passed), `status` the delivery's fate (see `fate`), `deliveries` its outbox entries, one per
    connector the action went to."""
    from ..core.effects import DEFERRED, reported_outcome
    from ..store.serialize import utc_text

    rows = sql.execute(conn, f'SELECT {", ".join(ACTION_COLUMNS)}, json FROM actions WHERE "user" = ? '
                             "ORDER BY time DESC, id DESC LIMIT ?", (uid, RECENT_ACTIONS)).fetchall()
    entries: dict[str, list[Any]] = {}
    for e in outbox.of_actions([r[0] for r in rows]):
        entries.setdefault(e.action_id, []).append(e)
    out = []
    for *columns, raw in rows:
        a = dict(zip(ACTION_COLUMNS, columns))
        outcome, mine = reported_outcome(a["kind"], a["outcome"]), entries.get(a["id"], [])
        until = orjson.loads(raw).get("until") if outcome == DEFERRED and raw else None
        out.append({**a, "time": sql.text_time(a["time"]), "outcome": outcome,
                    "until": until and utc_text(datetime.fromisoformat(until)), **fate(outcome, mine),
                    "deliveries": [_entry_json(e) for e in mine]})
    return out


def fate(outcome: str, entries: Sequence[Any]) -> dict[str, Any]:
    """What became of an action: `status` with the `error`, `attempts` and `next_try` of the
    delivery furthest from done. Suppressed and deferred actions have no delivery; a passed one is
    `failed` when an entry will not be retried (failed or dead: a dead letter), else `retrying`
    when an attempt failed and another is coming, `pending` when none failed yet (not attempted, in
    flight, or waiting in a batch), and `sent` (`updated` for an audience) once every entry is
    delivered; `unknown` when no entry is left (no connector took it, or its record is past
    `[serve] outbox_days`); `held` while an operator's pause holds it, `dropped` (the pause as its
    `error`) once the resume dropped it."""
    from ..core.effects import DEFERRED, SUPPRESSED
    from ..store.outbox import DEAD_LETTERS, DELIVERED, DROPPED, HELD, PENDING
    from ..store.serialize import utc_text

    if outcome in (SUPPRESSED, DEFERRED) or not entries:
        status = outcome if outcome in (SUPPRESSED, DEFERRED) else "unknown"
        return {"status": status, "error": None, "attempts": 0, "next_try": None}
    worst = min(entries, key=lambda e: (e.state not in DEAD_LETTERS, not e.last_error, e.state == DELIVERED))
    status = ("failed" if worst.state in DEAD_LETTERS else outcome if worst.state == DELIVERED
              else worst.state if worst.state in (HELD, DROPPED)  # an operator's pause (engine.daemon.admin.pause_store)
              else "retrying" if worst.last_error else "pending")
    return {"status": status, "error": worst.last_error, "attempts": worst.attempts,
            "next_try": utc_text(worst.next_at) if worst.state == PENDING else None}


def _entry_json(e: Any) -> dict[str, Any]:
    """An outbox entry as the admin API shows it."""
    from ..store.serialize import utc_text

    return {"id": e.id, "action_id": e.action_id, "connector": e.connector, "user_id": e.user_id,
            "kind": e.kind, "target": e.target, "state": e.state, "attempts": e.attempts,
            "last_error": e.last_error, "created": utc_text(e.created), "next_at": utc_text(e.next_at)}


def dead_letters(outbox: Any, state: str | None, limit: int) -> dict[str, Any]:
    """`GET /admin/dead-letters`: the outbox entries that will not be retried, failed for good and
    dead (out of attempts) alike, or only those in `state`; by id, at most `limit`."""
    from ..store.outbox import DEAD_LETTERS

    found = [e for s in (DEAD_LETTERS if state is None else (state,)) for e in outbox.by_state(s, limit)]
    return {"entries": [_entry_json(e) for e in sorted(found, key=lambda e: e.id)[:limit]]}


def failed_messages(inbox: Any, limit: int) -> dict[str, Any]:
    """`GET /admin/inbox/failed`: the messages the engine could not take, oldest first, each as
    the JSON it was stored as (or its text, when that no longer parses)."""
    out = []
    for seq, raw, error, at in inbox.failed(limit):
        try:
            message: Any = orjson.loads(raw)
        except orjson.JSONDecodeError:
            message = bytes(raw).decode("utf-8", "replace")
        out.append({"seq": seq, "error": error, "at": sql.text_time(at), "message": message})
    return {"messages": out}


# ---------------------------------------------------------------------- pages

def _page(title: str, text: str, status: int = 200) -> HTMLResponse:
    body = (f"<!doctype html><html><head><meta charset=\"utf-8\"><meta name=\"robots\" content=\"noindex\">"
            f"<title>{html.escape(title)}</title></head><body><h1>{html.escape(title)}</h1>"
            f"<p>{html.escape(text)}</p></body></html>")
    return HTMLResponse(body, status_code=status)


def _not_found() -> HTMLResponse:
    return _page("Link not valid", "This unsubscribe link is not valid. Use the link from a recent email.", 404)


def _confirm_page(what: str) -> HTMLResponse:
    """The page a GET of an unsubscribe link shows: nothing is recorded until the button is
    pressed. The form posts to the page's own URL (no action: right behind any proxy prefix) the
    body RFC 8058 One-Click clients send."""
    body = ("<!doctype html><html><head><meta charset=\"utf-8\"><meta name=\"robots\" content=\"noindex\">"
            "<title>Unsubscribe</title></head><body><h1>Unsubscribe</h1>"
            f"<p>Stop receiving {html.escape(what)} from us?</p>"
            "<form method=\"post\"><input type=\"hidden\" name=\"List-Unsubscribe\" value=\"One-Click\">"
            "<button type=\"submit\">Unsubscribe</button></form></body></html>")
    return HTMLResponse(body, headers={"Cache-Control": "no-store"})


# ---------------------------------------------------------------------- the routes

def add_routes(app: Any, worker: Any) -> None:
    """Add the unsubscribe, profile and admin routes to the daemon's app (see the module docstring)."""
    from connectors.errors import ConfigurationError
    from connectors.unsubscribe import Keys
    from journeys.functions import CHANNELS

    from ..core.step import UNSUBSCRIBED_EVENT
    from ..store.outbox import DEAD, DEAD_LETTERS, FAILED
    from . import trail
    from .deliveries.feedback import rows as inbox_rows
    from .deliveries.feedback import track_call
    from .ingest import Refused, _header_key, read_body

    env: Mapping[str, str] = worker.environ if worker.environ is not None else os.environ
    profile_keys = [env[n].encode("utf-8") for n in worker.config.ingest.profile_keys_env if env.get(n)]
    commit = app.state.group_commit  # the ingest's: the unsubscribe link's event goes into the inbox

    on_worker = worker.call

    def in_transaction(fn: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            with worker.store.transaction():
                return fn()
        return run

    # ------------------------------------------------------------------ unsubscribe

    try:
        links: Keys | None = Keys.from_env(env)
    except ConfigurationError:
        links = None  # no secret, or a bad one: no link can be valid

    def verified(token: str) -> tuple[str, str] | None:
        return None if links is None else links.verify(token)

    def what(channel: str) -> str:
        return f"{channel} messages" if channel in CHANNELS else "messages"

    async def unsubscribe(user: str, channel: str) -> None:
        """Write the opt-out into the inbox; back once it is committed (durable, the worker woken)."""
        now = datetime.now(timezone.utc)
        # a repeat in the same minute is one event; a click after the user subscribed again, a new one
        click = (user, channel, now.strftime("%Y-%m-%dT%H:%M"))
        call = track_call(user, UNSUBSCRIBED_EVENT, {"channel": channel, "source": "link"}, now, click,
                          origin="unsubscribe")
        await commit.submit(inbox_rows([call], now))

    async def confirm_page(token: str) -> Response:
        found = verified(token)
        if found is None:
            return _not_found()
        return _confirm_page(what(found[1]))

    async def one_click(token: str, request: Request) -> Response:
        try:
            raw = await read_body(request.headers.get("content-length"), None, request.stream(),
                                  UNSUBSCRIBE_MAX_BYTES)
        except Refused as refused:
            return refused.response()
        body = raw.decode("utf-8", "replace")
        if "List-Unsubscribe=One-Click" not in body:
            return _page("Bad request", "Expected List-Unsubscribe=One-Click (RFC 8058).", 400)
        found = verified(token)
        if found is None:
            return _not_found()
        try:
            await unsubscribe(*found)
        except Exception as exc:  # noqa: BLE001 - the page says so; the user (or the mail client) tries again
            log.error("unsubscribe link: the inbox could not store the opt-out: %s", exc)
            return _page("Please try again", "We could not record your request just now. Please try again "
                                             "in a few minutes.", 503)
        return _page("You are unsubscribed", f"You will not receive any more {what(found[1])} from us.")

    app.add_api_route("/u/{token}", confirm_page, methods=["GET"], include_in_schema=False)
    app.add_api_route("/u/{token}", one_click, methods=["POST"], include_in_schema=False)

    # ------------------------------------------------------------------ profile API

    async def profile(user_id: str, request: Request) -> Response:
        header = request.headers.get("authorization")
        if not profile_keys:
            return _error(404, "the profile API is off: set [ingest] profile_keys_env in journeys.toml")
        if not (matches(_header_key(header), profile_keys) or matches(bearer(header), profile_keys)):
            return _error(401, "a profile key is required (HTTP Basic user name or Bearer)")

        def read() -> Any:
            store = worker.store
            uid = store.resolve(user_id) or user_id
            state = store.load(uid)
            return None if state is None else {"userId": uid, "traits": jsonable_encoder(dict(state.traits))}

        found = await on_worker(read)
        if found is None:
            return _error(404, f"no profile {user_id!r}")
        return JSONResponse(found, headers={"Cache-Control": "no-store"})

    app.add_api_route("/v1/profile/{user_id:path}", profile, methods=["GET"], tags=["profile"],
                      summary="A profile's traits", responses={
                          200: {"model": schemas.Profile, "description": "The profile (by its id or an alias)."},
                          401: {"model": schemas.DaemonError, "description": "No profile key, or an unknown one."},
                          404: {"model": schemas.DaemonError,
                                "description": "No such profile, or the profile API is off (no profile_keys_env)."}})

    # ------------------------------------------------------------------ admin API

    admin_refusal = AdminAuth(env).refusal

    async def admin_trace(user_id: str, request: Request) -> Response:
        if (refused := admin_refusal(request)) is not None:
            return refused
        if isinstance(limit := query_limit(request, TRACE_LIMIT, trail.MAX_LIMIT), Response):
            return limit

        def read() -> Any:
            uid, ids = trail.ids_of(worker.store, user_id)
            rows = trail.read(worker.store.conn, ids, limit)
            if not rows and worker.store.load(uid) is None:
                return None
            return {"userId": uid, "ids": ids, "trail": rows}

        found = await on_worker(read)
        if found is None:
            return _error(404, f"no profile or trail {user_id!r}")
        return JSONResponse(jsonable_encoder(found))

    async def admin_user(user_id: str, request: Request) -> Response:
        if (refused := admin_refusal(request)) is not None:
            return refused
        found = await on_worker(lambda: user_view(worker.store, worker.outbox, user_id))
        if found is None:
            return _error(404, f"no profile {user_id!r}")
        return JSONResponse(found)

    async def admin_journeys(request: Request) -> Response:
        if (refused := admin_refusal(request)) is not None:
            return refused
        return JSONResponse(await on_worker(lambda: journey_counts(worker.store.conn)))

    async def admin_dead_letters(request: Request, state: str | None = None, limit: int = 100) -> Response:
        if (refused := admin_refusal(request)) is not None:
            return refused
        if state is not None and state not in DEAD_LETTERS:  # none: both
            return _error(400, f"state: {DEAD} or {FAILED}")
        limit = max(1, min(limit, 1000))

        return JSONResponse(await on_worker(lambda: dead_letters(worker.outbox, state, limit)))

    async def admin_retry(entry_id: str, request: Request) -> Response:
        if (refused := admin_refusal(request)) is not None:
            return refused
        done = await on_worker(in_transaction(
            lambda: worker.retry_dead(entry_id)))
        if not done:
            return _error(404, f"no dead or failed outbox entry {entry_id!r}")
        return JSONResponse({"id": entry_id, "state": "pending"})

    async def admin_failed(request: Request, limit: int = 100) -> Response:
        if (refused := admin_refusal(request)) is not None:
            return refused
        limit = max(1, min(limit, 1000))
        return JSONResponse(await on_worker(lambda: failed_messages(worker.inbox, limit)))

    async def admin_requeue(seq: str, request: Request) -> Response:
        if (refused := admin_refusal(request)) is not None:
            return refused
        if not seq.isdigit():
            return _error(400, f"seq: a message number from GET /admin/inbox/failed, not {seq!r}", "seq")
        done = await on_worker(in_transaction(lambda: worker.inbox.requeue(int(seq), worker.clock.now())))
        if not done:
            return _error(404, f"no message {seq} set aside")
        worker.wake.set()
        return JSONResponse({"seq": int(seq), "state": "requeued"})

    async def admin_forget(user_id: str, request: Request) -> Response:
        if (refused := admin_refusal(request)) is not None:
            return refused
        return JSONResponse(await on_worker(in_transaction(lambda: forget(
            worker.store, worker.outbox, user_id, worker.clock.now(), worker.config))))

    async def admin_trace_by_query(request: Request) -> Response:
        """`GET /admin/trace?user=ID`: the trace of any id, one that ends in `/trace` included (the
        path form reads `/admin/users/a/trace` as the trace of `a`)."""
        if (refused := admin_refusal(request)) is not None:
            return refused
        user_id = request.query_params.get("user", "")
        if not user_id:
            return _error(400, "user: the id whose trace to read, as ?user=ID", "user")
        return await admin_trace(user_id, request)

    # (path, endpoint, method, the 200's model, the other answers it can give; 401 and 403: every
    # admin route, engine.daemon.admin.openapi)
    for path, endpoint, method, model, errors in (
            ("/admin/trace", admin_trace_by_query, "GET", schemas.Trace, {400, 404}),
            ("/admin/users/{user_id:path}/trace", admin_trace, "GET", schemas.Trace, {400, 404}),  # before the user view's
            ("/admin/users/{user_id:path}", admin_user, "GET", schemas.UserView, {404}),
            ("/admin/users/{user_id:path}", admin_forget, "DELETE", schemas.Forgotten, set()),
            ("/admin/journeys", admin_journeys, "GET", schemas.JourneyCounts, set()),
            ("/admin/dead-letters", admin_dead_letters, "GET", schemas.DeadLetters, {400}),
            ("/admin/dead-letters/{entry_id:path}/retry", admin_retry, "POST", schemas.Retried, {404}),
            ("/admin/inbox/failed", admin_failed, "GET", schemas.FailedMessages, set()),
            ("/admin/inbox/failed/{seq}/retry", admin_requeue, "POST", schemas.Requeued, {400, 404})):
        responses: dict[int | str, dict[str, Any]] = {200: {"model": model, "description": "Done."}}
        responses.update({status: {"model": schemas.DaemonError, "description": ADMIN_ERRORS[status]}
                          for status in errors})
        app.add_api_route(path, endpoint, methods=[method], tags=["admin"], responses=responses)
