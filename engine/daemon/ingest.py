"""The daemon's HTTP ingest: Segment's HTTP Tracking API, answered once the events are durable.

Endpoints (POST, JSON, as https://segment.com/docs/connections/sources/catalog/libraries/server/http-api/):
`/v1/track`, `/v1/identify`, `/v1/page`, `/v1/screen`, `/v1/alias`, `/v1/group` (one call each; the
path gives the type) and `/v1/batch` (`{"batch": [calls with their "type"], "context": {...}}`;
the batch's `context` applies to the calls that have none). Segment's short paths `/v1/t`, `/v1/i`,
`/v1/p`, `/v1/s`, `/v1/a`, `/v1/g` and `/v1/b` work too (left out of the OpenAPI description).
So the official libraries (analytics-python, RudderStack's, analytics.js...) deliver unchanged
when pointed at the daemon. `/openapi.json` describes the calls' fields from pydantic models; the
models only document: validation is `engine.core.messages.parse_message`'s, so an error names the
field exactly as `journeys simulate` does for the same line.

Authentication: the source's write key as the HTTP Basic user name (password empty), or
`writeKey` in the body (which wins when both are given, as at Segment). Valid keys are the values
of the environment variables that journeys.toml's `[ingest] write_keys_env` names
(`write_keys_from_env`).

Answers:
- 200 `{"success": true}`: every event is committed to the inbox (`engine/store/inbox.py`).
- Every error also carries `code` (invalid_request, invalid_event, invalid_write_key,
  payload_too_large, unsupported_encoding, unavailable) and `message` (`error`'s sentence): the
  fields the official libraries read from an error body (`error_body`).
- 400 `{"error": "...", "field": "userId"}`: malformed JSON (`field` "body"; JSON nested deeper
  than orjson reads, 1,024 levels, is malformed JSON too), or a call that `parse_message` refuses
  (`field` its field: userId, event, timestamp, sentAt, type, properties nested deeper than
  `MAX_DEPTH`, ...). Nothing a sender writes is a 500: every call, single or in a batch, goes
  through `_row`, which only ever raises `MessageError`.
- 401 `{"error": ..., "field": "writeKey"}`: no write key or an unknown one. When the header
  carries no valid key, a body that is not JSON is a 401 too (there is nothing to authenticate).
- 413: the body is over the limit (32 KB for one call, 500 KB for a batch, Segment's limits; after
  gzip decompression too), refused from Content-Length before reading, or as soon as a streamed
  body passes it; a batch of more than `max_batch_events` (2,500) calls. 415: a Content-Encoding
  other than gzip or identity (the RudderStack library gzips by default).
- 503 with Retry-After when the inbox cannot be written (disk full, lock timeout): the libraries
  retry 5xx, and nothing was accepted.

A batch with bad calls: **the good calls are accepted, the bad ones listed.** The answer is 400
`{"error": "2 of 100 events rejected; the other 98 were accepted (batch[3] timestamp: ...)",
"accepted": 98, "rejected": [{"index": 3, "field": "timestamp", "message": "..."}], "code":
"invalid_event", "message": ...}`, sent after the 98 are committed (the libraries log `message`
only, so it names the first bad call). Why not reject the whole batch: the official libraries
batch the calls of many users together and never retry a 4xx (nor split a batch), so one
malformed call would silently drop the 99 good ones. A 4xx (not a 200) so that the libraries
log the error and a person sees it. A sender that retries the whole batch anyway does no harm:
the engine drops repeated messageIds (a call without one gets a deterministic id from its
content, `auto_message_id`). Each call of a
batch is held to Segment's 32 KB per call, measured on the normalised message the inbox keeps.

Times: `receivedAt` is the server's clock, kept in the inbox next to each message. A call with no
`timestamp` gets one as Segment computes it: `receivedAt - (sentAt - originalTimestamp)` when
both are there (the device's clock skew corrected; the batch's `sentAt` counts), else
`originalTimestamp` as it is, else `receivedAt`. `parse_message` insists on a time; this is where
the daemon supplies it. Then the time must be plausible:
- before 2000-01-01 (`engine.core.messages.EARLIEST`, the same bound the dry-run applies): a 400
  naming the field it came from (timestamp, originalTimestamp);
- later than `receivedAt` by more than `[ingest] future_tolerance_seconds` (0 by default): it
  becomes `receivedAt`, Segment's rule for a time in the future. No event happened after it
  arrived; a device's clock set to 2035 (or a sender's bug writing 9999-12-31) would otherwise
  put the event in the engine's future. The call is kept: a 4xx would drop it for good, as the
  libraries never retry one.
`sentAt`, the call's or the batch's, must be an ISO-8601 time when present: else a 400 naming it
(the batch's: the whole request is refused, nothing taken). `journeys replay` sends a recorded
log (`create_app(historical=True)`): there the receipt is not the log's now, and the times are
held to the engine's range only (2000-01-01 to 2100-01-01), as the dry-run holds them.

Browsers (CORS): `[ingest] cors_origins` in journeys.toml lists the web origins whose pages may
send events (none by default; "*" for any). For them, on the ingest's paths only, Starlette's
CORSMiddleware (`browser_access`) answers the preflight (OPTIONS: POST, the headers
Authorization, Content-Type and Content-Encoding, kept `CORS_MAX_AGE` seconds) and puts
`Access-Control-Allow-Origin` (the origin itself) on every answer to an allowed origin, errors
included, with `Vary: Origin` on all; it sits in `IngestApp.__call__`, before the fast path, so the
POSTs that skip FastAPI get it too. A browser sends the write key as analytics.js does, `writeKey`
in a `text/plain` JSON body (a "simple" request, no preflight: the body is parsed whatever its
Content-Type), or as an HTTP Basic header (preflighted). CORS is not the check: the write key is
(it ships in the page anyway); CORS only decides which sites' scripts may read the answers and
send the preflighted requests.

Group commit: a request is answered only after its events are committed, and concurrent requests
share the commit. `GroupCommit` collects the rows of every request that arrives within `max_delay`
(2 ms) of the first, or until `max_rows`, writes them in one transaction on the inbox's own
connection in a single worker thread (sqlite3 releases the GIL while it writes, so the event loop
keeps reading requests), then resolves every waiting request. While a commit is in flight the next
one gathers. The wait is only for company that comes: a request commits at once when the
committer was idle for `max_delay` before it, or when the last commit carried a single request
(requests arrive one at a time, slower than commits: a wait would find nobody and only add
latency, 2 ms at every event of a steady 400 events/s). Concurrent requests make groups, and the
wait comes back with them.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from typing import Any, AsyncIterator, Callable, Iterable, Literal, Mapping, Union

import orjson
from fastapi import FastAPI, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field
from pydantic.json_schema import models_json_schema

from journeys.config import ProjectConfig

from ..core.messages import EARLIEST, LATEST, MessageError, parse_message, time_field
from ..store.inbox import Inbox, message_to_json
from ..store.serialize import utc_text

MAX_CALL_BYTES = 32 * 1024
MAX_BATCH_BYTES = 500 * 1024
MAX_BATCH_EVENTS = 2500

CALLS = ("track", "identify", "page", "screen", "alias", "group")
SHORT = {"t": "track", "i": "identify", "p": "page", "s": "screen", "a": "alias", "g": "group"}

_UTC = timezone.utc
_OK = b'{"success":true}'
_loads = orjson.loads
_dumps = orjson.dumps


def write_keys_from_env(config: ProjectConfig, environ: Mapping[str, str] | None = None) -> set[str]:
    """The write keys: the non-empty values of the variables `[ingest] write_keys_env` names."""
    env = os.environ if environ is None else environ
    return {env[name] for name in config.ingest.write_keys_env if env.get(name)}


# ---------------------------------------------------------------------- the documented shapes


class _Call(BaseModel):
    """Fields common to every call (Segment spec). Other fields are allowed and ignored."""

    model_config = ConfigDict(extra="allow")
    userId: str | None = Field(None, description="The user's id in your database. userId or anonymousId is required.")
    anonymousId: str | None = Field(None, description="A pseudo-unique id for a user not known yet.")
    messageId: str | None = Field(None, description="Unique per message; repeats are dropped. Derived from the content when absent.")
    timestamp: datetime | None = Field(None, description="When the call happened (ISO-8601), from 2000-01-01 on; "
                                                       "later than its receipt: the receipt time. Absent: computed "
                                                       "from receivedAt.")
    originalTimestamp: datetime | None = Field(None, description="The device's time of the call, corrected by sentAt when timestamp is absent.")
    sentAt: datetime | None = Field(None, description="When the library sent the call (ISO-8601, else a 400).")
    context: dict[str, Any] | None = Field(None, description="Context; `timezone` (an IANA name) is used, `traits` for identify.")
    integrations: dict[str, Any] | None = Field(None, description="Accepted and ignored.")


class Track(_Call):
    """A user did something."""

    type: Literal["track"] = Field("track", description="Implied by /v1/track; required in a batch.")
    event: str = Field(description="The event's name, e.g. \"Order Completed\".")
    properties: dict[str, Any] | None = Field(None, description="The event's properties (at most 64 levels of "
                                                                "objects and arrays).")


class Identify(_Call):
    """Who the user is: traits."""

    type: Literal["identify"] = Field("identify", description="Implied by /v1/identify; required in a batch.")
    traits: dict[str, Any] | None = Field(None, description="The user's traits (else context.traits; at most 64 "
                                                            "levels of objects and arrays).")


class Page(_Call):
    """A page view: the event \"Page Viewed\"."""

    type: Literal["page"] = Field("page", description="Implied by /v1/page; required in a batch.")
    name: str | None = Field(None, description="The page's name; becomes the property `name`.")
    category: str | None = Field(None, description="The page's category; becomes the property `category`.")
    properties: dict[str, Any] | None = None


class Screen(_Call):
    """A screen view: the event \"Screen Viewed\"."""

    type: Literal["screen"] = Field("screen", description="Implied by /v1/screen; required in a batch.")
    name: str | None = Field(None, description="The screen's name; becomes the property `name`.")
    properties: dict[str, Any] | None = None


class Alias(_Call):
    """previousId is the same person as userId: their profiles merge."""

    type: Literal["alias"] = Field("alias", description="Implied by /v1/alias; required in a batch.")
    userId: str = Field(description="The known id.")  # type: ignore[assignment]
    previousId: str = Field(description="The other id.")


class Group(_Call):
    """The user belongs to a group (becomes the traits `group_id` and `group`)."""

    type: Literal["group"] = Field("group", description="Implied by /v1/group; required in a batch.")
    groupId: str = Field(description="The group's id.")
    traits: dict[str, Any] | None = Field(None, description="The group's traits.")


class Batch(BaseModel):
    """Many calls in one request (at most 500 KB, 32 KB per call, 2,500 calls)."""

    model_config = ConfigDict(extra="allow")
    batch: list[Union[Track, Identify, Page, Screen, Alias, Group]] = Field(description="The calls, each with its `type`.")
    context: dict[str, Any] | None = Field(None, description="Context for the calls that have none.")
    integrations: dict[str, Any] | None = None
    sentAt: datetime | None = Field(None, description="When the batch was sent: corrects the calls' originalTimestamp.")
    writeKey: str | None = Field(None, description="The write key, if not given by HTTP Basic authentication.")


class Success(BaseModel):
    success: Literal[True] = True


class Rejected(BaseModel):
    index: int = Field(description="The call's position in `batch`, from 0.")
    field: str = Field(description="The Segment field at fault (as parse_message names it).")
    message: str


# `code` of the ingest's error answers: short, stable, for machines (see `error_body`).
IngestErrorCode = Literal["invalid_write_key", "invalid_request", "invalid_event", "payload_too_large",
                          "unsupported_encoding", "unavailable"]


class ErrorBody(BaseModel):
    code: IngestErrorCode = Field(description="What went wrong, for machines: stable. The official libraries "
                                              "log it with `message`.")
    message: str = Field(description="What went wrong, in a sentence (the same as `error`).")
    error: str
    field: str | None = Field(None, description="The field at fault: a Segment field, `body`, `writeKey` or `batch`.")
    accepted: int | None = Field(None, description="Batch: how many calls were accepted.")
    rejected: list[Rejected] | None = Field(None, description="Batch: the calls that were not.")


_MODELS = {"track": Track, "identify": Identify, "page": Page, "screen": Screen, "alias": Alias, "group": Group,
           "batch": Batch}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"model": Success, "description": "Every call is in the inbox."},
    400: {"model": ErrorBody, "description": "Malformed JSON or an invalid call (a batch: the bad calls, the good ones accepted)."},
    401: {"model": ErrorBody, "description": "No write key, or an unknown one."},
    413: {"model": ErrorBody, "description": "Over 32 KB per call or 500 KB per batch, or too many calls."},
    415: {"model": ErrorBody, "description": "A Content-Encoding other than gzip."},
    503: {"model": ErrorBody, "description": "The inbox could not be written; retry."},
}


# ---------------------------------------------------------------------- errors and bodies

# The `code` of a daemon error answer that does not name its own (see `error_body`).
STATUS_CODES = {400: "invalid_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
                405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_encoding",
                422: "invalid_request", 429: "rate_limited", 500: "internal_error", 503: "unavailable"}


def error_body(status: int, error: str, code: str | None = None, *, field: str | None = None,
               **extra: Any) -> dict[str, Any]:
    """Every JSON error answer of the daemon: `error` (and `field`, ...) as before, plus `code` and
    `message`, the two fields the official Segment and RudderStack libraries read from an error
    body (`payload["code"]`, `payload["message"]`). Without them analytics-python logs "Unknown
    error" instead of the reason, and rudder-sdk-python raises a KeyError that its retry loop
    takes for a network error: it retries a permanent 4xx for up to 17 minutes."""
    body: dict[str, Any] = {"error": error}
    if field is not None:
        body["field"] = field
    body.update(extra)
    body["code"] = code or STATUS_CODES.get(status) or ("client_error" if status < 500 else "server_error")
    body["message"] = error
    return body


class Refused(Exception):
    """A request refused: its status and JSON error body (`error_body`)."""

    def __init__(self, status: int, error: str, field: str | None = None, code: str | None = None, **extra: Any):
        super().__init__(error)
        self.status, self.body = status, error_body(status, error, code, field=field, **extra)

    def answer(self) -> tuple[int, bytes, dict[str, str]]:
        headers = {}
        if self.status == 401:
            headers["WWW-Authenticate"] = 'Basic realm="journeys"'
        elif self.status == 503:
            headers["Retry-After"] = "1"
        return self.status, _dumps(self.body), headers

    def response(self) -> Response:
        status, body, headers = self.answer()
        return Response(body, status, headers=headers, media_type="application/json")


def _bad_write_key(error: str = "missing or unknown write key") -> Refused:
    return Refused(401, error, "writeKey", "invalid_write_key")


def _too_large(cap: int) -> Refused:
    limit = f"{cap // 1024} KB" if cap % 1024 == 0 else f"{cap} bytes"
    return Refused(413, f"the body is larger than {limit}", "body")


async def read_body(length: str | None, encoding: str | None, chunks: AsyncIterator[bytes], cap: int) -> bytes:
    """The request's body, decompressed, refused (413) as soon as it is known to pass `cap`: from
    Content-Length before anything is read, else as soon as the bytes streamed in (chunked) pass it,
    and a gzip body as soon as its inflated bytes would (at most `cap` + 1 are inflated). Every route
    that reads a body reads it through here (the ingest, the unsubscribe link: engine.daemon.api),
    so none holds more than its cap of a stranger's bytes."""
    if length is not None:
        try:
            if int(length) > cap:
                raise _too_large(cap)
        except ValueError:
            raise Refused(400, f"Content-Length is not a number: {length[:40]!r}", "body") from None
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > cap:
            raise _too_large(cap)
        parts.append(chunk)
    body = parts[0] if len(parts) == 1 else b"".join(parts)
    if not encoding or encoding.strip().lower() in ("identity", ""):
        return body
    if encoding.strip().lower() not in ("gzip", "x-gzip"):
        raise Refused(415, f"unsupported Content-Encoding {encoding[:40]!r}: send gzip or nothing", "body")
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        data = inflater.decompress(body, cap + 1)
    except zlib.error as exc:
        raise Refused(400, f"the body is not valid gzip: {exc}", "body") from None
    if len(data) > cap or inflater.unconsumed_tail:
        raise _too_large(cap)
    if not inflater.eof:
        raise Refused(400, "the body is not valid gzip: truncated", "body")
    return data


def _header_key(value: str | None) -> str | None:
    """The user name of an HTTP Basic Authorization header."""
    if not value:
        return None
    scheme, _, credentials = value.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None
    return decoded.partition(":")[0]


class _Keys:
    """Write-key checks, in constant time per key; headers already seen valid are remembered."""

    def __init__(self, keys: Iterable[str]):
        self.keys = [k.encode("utf-8") for k in keys if k]
        self.good_headers: set[str] = set()

    def valid(self, key: Any) -> bool:
        if not isinstance(key, str) or not key:
            return False
        given = key.encode("utf-8")
        ok = False
        for k in self.keys:
            ok |= hmac.compare_digest(given, k)
        return ok

    def header_ok(self, header: str | None) -> bool:
        if header is None:
            return False
        if header in self.good_headers:
            return True
        if self.valid(_header_key(header)):
            if len(self.good_headers) < 1024:
                self.good_headers.add(header)
            return True
        return False


def _fill_time(raw: dict, received: datetime, batch_sent_at: datetime | None) -> None:
    """Give a call without `timestamp` Segment's: originalTimestamp corrected by the device's clock
    skew that sentAt shows (the call's, else the batch's), else originalTimestamp as it is, else
    receivedAt. Raises `MessageError` naming originalTimestamp or sentAt when one is not a time (or
    the corrected time is before `EARLIEST`)."""
    original = raw.get("originalTimestamp")
    if original is None:
        raw["timestamp"] = received
        return
    sent = raw.get("sentAt")
    sent = batch_sent_at if sent is None else time_field(sent, "sentAt")
    if sent is None:
        return  # parse_message reads originalTimestamp (and says what is wrong with it)
    device = time_field(original, "originalTimestamp")
    try:
        corrected = received - (sent - device)
    except OverflowError:
        corrected = None
    if corrected is None or corrected < EARLIEST:
        raise MessageError("originalTimestamp", f"{str(original)[:40]!r} corrected by sentAt {sent.isoformat()} is "
                                                f"before {EARLIEST:%Y-%m-%d}: not a plausible time for an event")
    raw["timestamp"] = corrected


def _row(raw: Any, received: datetime, batch_sent_at: datetime | None, future: timedelta | None) -> bytes:
    """One call as the inbox keeps it (`message_to_json`), its time settled (the module docstring's
    Times): raises `MessageError` naming the field at fault. `future` None: the time is held to
    the engine's range only (`journeys replay`, a recorded log: the receipt is not its now)."""
    if type(raw) is dict and raw.get("timestamp") is None:
        _fill_time(raw, received, batch_sent_at)
    msg = parse_message(raw, latest=None if future is not None else LATEST)
    if future is not None and msg.timestamp > received + future:
        msg = replace(msg, timestamp=received)  # Segment's rule: no event happened after it arrived
    try:
        return message_to_json(msg)
    except (TypeError, ValueError) as exc:  # nothing orjson.loads gives can get here: a guard, not a path
        raise MessageError("message", f"cannot be stored as JSON: {exc}") from None


# ---------------------------------------------------------------------- group commit


class GroupCommit:
    """Many requests' rows, one transaction (see the module docstring).

    `submit(rows)` returns once the rows are committed, or raises what the write raised. The
    inbox is opened, written and closed in one worker thread."""

    def __init__(self, open_inbox: Callable[[], Inbox], max_delay: float = 0.002, max_rows: int = 10_000):
        self._open = open_inbox
        self.max_delay, self.max_rows = max_delay, max_rows
        self.inbox: Inbox | None = None
        self._rows: list[tuple[str, bytes]] = []
        self._waiters: list[asyncio.Future] = []
        self._first_at = 0.0
        self._task: asyncio.Task | None = None
        self._closing = False
        self._start_lock: asyncio.Lock | None = None
        self.commits = 0  # transactions written (for tests and benchmarks)
        self._last_done = float("-inf")  # loop time the last commit finished
        self._last_group = 0  # requests the last commit answered

    async def start(self) -> None:
        if self._task is not None:
            return
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="journeys-inbox")
        self.inbox = await loop.run_in_executor(self._executor, self._open)
        self._wake = asyncio.Event()
        self._full = asyncio.Event()
        self._closing = False
        self._task = loop.create_task(self._run(), name="journeys-inbox-group-commit")

    async def submit(self, rows: list[tuple[str, bytes]]) -> None:
        if self._task is None:
            if self._start_lock is None:
                self._start_lock = asyncio.Lock()
            async with self._start_lock:
                await self.start()
        if self._closing:
            raise RuntimeError("the ingest is shutting down")
        fut = self._loop.create_future()
        if not self._rows:
            self._first_at = self._loop.time()
        self._rows.extend(rows)
        self._waiters.append(fut)
        if len(self._rows) >= self.max_rows:
            self._full.set()
        self._wake.set()
        await fut

    async def _run(self) -> None:
        loop = self._loop
        while True:
            await self._wake.wait()
            if not self._rows:
                self._wake.clear()
                if self._closing:
                    return
                continue
            # Wait up to max_delay for more requests to share the commit, unless the committer was
            # idle that long before these rows came: a lone event at low load commits at once.
            idle = self._first_at - self._last_done >= self.max_delay or self._last_group <= 1
            delay = 0.0 if idle else self._first_at + self.max_delay - loop.time()
            if delay > 0 and not self._closing and len(self._rows) < self.max_rows:
                try:
                    await asyncio.wait_for(self._full.wait(), delay)
                except TimeoutError:
                    pass
            rows, waiters = self._rows, self._waiters
            self._rows, self._waiters = [], []
            self._full.clear()
            try:
                await loop.run_in_executor(self._executor, self.inbox.append_rows, rows)  # type: ignore[union-attr]
            except Exception as exc:  # noqa: BLE001 - every waiting request gets it
                for w in waiters:
                    if not w.done():
                        w.set_exception(exc)
            else:
                self.commits += 1
                self._last_done = loop.time()
                self._last_group = len(waiters)
                for w in waiters:
                    if not w.done():
                        w.set_result(None)

    async def close(self) -> None:
        """Commit what is pending, then close the inbox."""
        if self._task is None:
            return
        self._closing = True
        self._wake.set()
        await self._task
        self._task = None
        await self._loop.run_in_executor(self._executor, self.inbox.close)  # type: ignore[union-attr]
        self._executor.shutdown(wait=True)


# ---------------------------------------------------------------------- the app


class _Gone(Exception):
    """The client went away before its body arrived."""


_NOT_INGEST = object()


class IngestApp(FastAPI):
    """FastAPI, with the ingest's POSTs served straight from ASGI.

    The calls are FastAPI routes (that is where their OpenAPI description comes from, and a request
    routed through FastAPI gets the same answer from the same `accept`), but `__call__` hands a POST
    to one of their paths to `accept` directly, skipping FastAPI's middleware, routing and
    dependency machinery: measured, that machinery costs more per single-event request than parsing,
    validating and queueing the event for commit together. Everything else (`/openapi.json`,
    lifespan, other methods) goes through FastAPI as usual."""

    ingest_paths: dict[str, str | None] = {}
    browsers: Any = None  # `browser_access`: CORS around `_direct` for the ingest's paths, when configured
    browser_paths: frozenset[str] = frozenset()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.browsers is not None and scope["type"] == "http" and scope["path"] in self.browser_paths:
            await self.browsers(scope, receive, send)  # preflights answered there; the rest back to _direct
            return
        await self._direct(scope, receive, send)

    async def _direct(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            kind = self.ingest_paths.get(scope["path"], _NOT_INGEST)
            if kind is not _NOT_INGEST:
                await self._serve(scope, receive, send, kind)  # type: ignore[arg-type]
                return
        await super().__call__(scope, receive, send)

    async def _serve(self, scope: Any, receive: Any, send: Any, kind: str | None) -> None:
        authorization = length = encoding = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"content-length":
                length = value.decode("latin-1")
            elif name == b"content-encoding":
                encoding = value.decode("latin-1")

        async def chunks() -> AsyncIterator[bytes]:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise _Gone
                yield message.get("body", b"")
                if not message.get("more_body", False):
                    return

        try:
            status, body, extra = await self.accept(kind, authorization, length, encoding, chunks())
        except _Gone:
            return
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        headers.extend((k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in extra.items())
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    accept: Callable[..., Any]



def create_app(config: ProjectConfig, store_path: str, write_keys: Iterable[str], *,
               max_delay: float = 0.002, max_rows: int = 10_000, synchronous: str = "FULL",
               max_batch_events: int = MAX_BATCH_EVENTS, fast_path: bool = True,
               historical: bool = False, openapi_url: str | None = "/openapi.json") -> IngestApp:
    """The ingest as an ASGI app writing to the inbox in `store_path` (a path or sqlite:/// URL, or
    a postgresql:// URL: the inbox every worker of a cluster shares).

    `write_keys`: the accepted keys (`write_keys_from_env(config)` in the daemon); none is an
    error, as an ingest nobody can send to is a misconfiguration. `synchronous` is the inbox
    connection's SQLite setting (FULL: an answered event survives a power loss). `fast_path=False`
    routes the calls through FastAPI too (same answers, slower: for tests and benchmarks).
    `historical=True` (`journeys replay`, which sends a recorded log): the calls' times are held to
    the engine's range only, as the dry-run holds them, not set to the receipt time when later.
    `openapi_url=None`: no open /openapi.json (`journeys serve` serves it behind the admin token,
    engine.daemon.admin.openapi)."""
    keys = _Keys(write_keys)
    future = None if historical else timedelta(seconds=config.ingest.future_tolerance_seconds)
    if not keys.keys:
        raise ValueError("no write keys: set the variables [ingest] write_keys_env names in journeys.toml")
    from ..store.urls import is_postgres

    if is_postgres(store_path):  # the cluster's shared inbox (engine.store.pg_inbox)
        from ..store.pg_inbox import PostgresInbox

        commit = GroupCommit(lambda: PostgresInbox.open(store_path), max_delay, max_rows)
    else:
        commit = GroupCommit(lambda: Inbox.open(store_path, synchronous=synchronous), max_delay, max_rows)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await commit.start()
        try:
            yield
        finally:
            await commit.close()

    app = IngestApp(title=f"{config.project.name} ingest", version="1",
                  description="Segment-compatible HTTP Tracking API of the journeys daemon.",
                  lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=openapi_url)
    app.state.group_commit = commit
    _json_errors(app)

    async def accept(kind: str | None, authorization: str | None, length: str | None, encoding: str | None,
                     chunks: AsyncIterator[bytes]) -> tuple[int, bytes, dict[str, str]]:
        """One request, whatever carried it: (status, JSON body, extra headers)."""
        received = datetime.now(_UTC)
        try:
            header_ok = keys.header_ok(authorization)
            body = await read_body(length, encoding, chunks, MAX_BATCH_BYTES if kind is None else MAX_CALL_BYTES)
            try:
                payload = _loads(body)
            except orjson.JSONDecodeError as exc:
                if not header_ok:
                    raise _bad_write_key() from None
                raise Refused(400, f"malformed JSON: {exc}", "body") from None
            if type(payload) is not dict:
                if not header_ok:
                    raise _bad_write_key()
                raise Refused(400, "expected a JSON object", "body")
            body_key = payload.get("writeKey")
            if body_key is not None and body_key != "":
                if not keys.valid(body_key):
                    raise _bad_write_key("unknown write key")
            elif not header_ok:
                raise _bad_write_key()
            stamp = utc_text(received)
            if kind is not None:
                payload["type"] = kind
                try:
                    rows = [(stamp, _row(payload, received, None, future))]
                except MessageError as exc:
                    raise Refused(400, str(exc), exc.field, "invalid_event") from None
                rejected: list[dict[str, Any]] = []
                total = 1
            else:
                rows, rejected, total = _batch(payload, received, stamp, max_batch_events, future)
            if rows:
                try:
                    await commit.submit(rows)
                except Exception as exc:  # noqa: BLE001
                    raise Refused(503, f"the inbox could not store the events: {exc}") from None
            if rejected:
                first = rejected[0]
                raise Refused(400, f"{len(rejected)} of {total} events rejected; the other {len(rows)} were accepted "
                              f"(batch[{first['index']}] {first['field']}: {first['message']})",
                              "batch", "invalid_event", accepted=len(rows), rejected=rejected)
        except Refused as refused:
            return refused.answer()
        return 200, _OK, {}

    app.accept = accept
    app.ingest_paths = {}
    app.browsers = browser_access(app, config.ingest.cors_origins)

    def route(path: str, kind: str | None, shown: bool) -> None:
        if fast_path:
            app.ingest_paths[path] = kind
        async def endpoint(request: Request) -> Response:
            h = request.headers
            status, body, headers = await accept(kind, h.get("authorization"), h.get("content-length"),
                                                 h.get("content-encoding"), request.stream())
            return Response(body, status, headers=headers, media_type="application/json")

        name = kind or "batch"
        model = _MODELS[name]
        app.add_api_route(
            path, endpoint, methods=["POST"], name=f"{name} ({path})", include_in_schema=shown,
            summary=f"Send {'a batch of calls' if kind is None else 'a ' + kind + ' call'}",
            description=(model.__doc__ or "").strip(), responses=_RESPONSES, tags=["ingest"],
            openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                "schema": {"$ref": f"#/components/schemas/{model.__name__}"}}}}},
        )

    for kind in CALLS:
        route(f"/v1/{kind}", kind, True)
    route("/v1/batch", None, True)
    for short, kind in SHORT.items():
        route(f"/v1/{short}", kind, False)
    route("/v1/b", None, False)
    app.browser_paths = frozenset(f"/v1/{p}" for p in (*CALLS, "batch", *SHORT, "b"))

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            _, defs = models_json_schema([(m, "validation") for m in _MODELS.values()],
                                         ref_template="#/components/schemas/{model}")
            components = schema.setdefault("components", {})
            components.setdefault("schemas", {}).update(defs.get("$defs", {}))
            from .admin.openapi import secure

            app.openapi_schema = secure(schema)  # each operation's credential, by its tag
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


CORS_MAX_AGE = 7200  # seconds a browser may keep a preflight's answer (Chromium keeps at most 2 hours)


def browser_access(app: IngestApp, origins: list[str]) -> Any:
    """CORS for the ingest's paths (see the module docstring), Starlette's CORSMiddleware around
    the app's `_direct`: None when `[ingest] cors_origins` names no origin (browsers are then
    refused by their own rules: a preflight is a 405, an answer carries no
    Access-Control-Allow-Origin)."""
    if not origins:
        return None
    from starlette.middleware.cors import CORSMiddleware

    return CORSMiddleware(app._direct, allow_origins=origins, allow_methods=["POST"],
                          allow_headers=["Authorization", "Content-Type", "Content-Encoding"],
                          expose_headers=["Retry-After"], max_age=CORS_MAX_AGE)


def _json_errors(app: FastAPI) -> None:
    """FastAPI's own error answers (a path that does not exist, a method a path does not take, a
    query parameter that does not parse: 404, 405, 422) with `code` and `message` too, as every
    error of the daemon (`error_body`), `detail` kept as FastAPI writes it."""
    from fastapi.encoders import jsonable_encoder
    from fastapi.exception_handlers import http_exception_handler
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException

    async def http_error(request: Request, exc: HTTPException) -> Response:
        if exc.status_code < 400:
            return await http_exception_handler(request, exc)
        body = {"detail": exc.detail, **error_body(exc.status_code, str(exc.detail))}
        return JSONResponse(body, exc.status_code, headers=getattr(exc, "headers", None))

    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        errors = exc.errors()
        said = "; ".join(f"{'.'.join(str(part) for part in e['loc'])}: {e['msg']}" for e in errors)
        return JSONResponse({"detail": jsonable_encoder(errors), **error_body(422, said or "invalid request")}, 422)

    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid)


def _batch(payload: dict, received: datetime, stamp: str, max_events: int, future: timedelta | None
           ) -> tuple[list[tuple[str, bytes]], list[dict[str, Any]], int]:
    calls = payload.get("batch")
    if type(calls) is not list:
        if calls is None:
            raise Refused(400, "batch: missing: expected an array of calls", "batch")
        raise Refused(400, "batch: expected an array of calls", "batch")
    if len(calls) > max_events:
        raise Refused(413, f"batch: {len(calls)} calls, at most {max_events} in one request", "batch")
    context = payload.get("context")
    if type(context) is not dict:
        context = None
    sent_at = payload.get("sentAt")
    if sent_at is not None:  # the batch's own: a request that is wrong as a whole, nothing taken
        try:
            sent_at = time_field(sent_at, "sentAt")
        except MessageError as exc:
            raise Refused(400, str(exc), "sentAt") from None
    rows: list[tuple[str, bytes]] = []
    rejected: list[dict[str, Any]] = []
    for index, raw in enumerate(calls):
        try:
            if context is not None and type(raw) is dict and raw.get("context") is None:
                raw["context"] = context
            data = _row(raw, received, sent_at, future)
        except MessageError as exc:
            rejected.append({"index": index, "field": exc.field, "message": exc.message})
            continue
        if len(data) > MAX_CALL_BYTES:
            rejected.append({"index": index, "field": "message",
                             "message": f"larger than {MAX_CALL_BYTES // 1024} KB ({len(data)} bytes)"})
            continue
        rows.append((stamp, data))
    return rows, rejected, len(calls)
