"""The official Segment and RudderStack Python libraries against the daemon's ingest while it
refuses: what each library does with our error answers.

Both libraries read `code` and `message` from an error body (segment/analytics/request.py and
rudderstack/analytics/request.py: `payload["code"]`, `payload["message"]`). Without them,
segment-analytics-python logs "Unknown error", and rudder-sdk-python raises a KeyError inside its
`backoff` loop, which it retries like a network error (`max_retries` 10, exponential backoff: up
to 17 minutes) on an answer that will never change. With them, both:

- give up on a 4xx at once (Segment: every 4xx but 408, 410, 429, 460; RudderStack: every 4xx but
  429): one request, `on_error` called with an APIError carrying our code and message, and our
  message in the library's log;
- retry a 5xx (our 503 when the inbox cannot be written), and the events arrive.

The ingest is the real app (`create_app`) on uvicorn on a loopback port, in a thread of this
process, so that its inbox can be made to fail the way a full disk makes it fail. A pure observer
around it records the status of every request the libraries send. The libraries run as their
users run them: the background consumer thread, `flush()` (which blocks until the queue is
done), small `max_retries`, `timeout` and `upload_interval` so that a regression costs seconds,
not minutes; `flush()` runs in a thread joined with a generous bound, so a library that retries
forever fails the test instead of hanging it.
"""

from __future__ import annotations

import logging
import socket
import sqlite3
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
import uvicorn

from engine.daemon.ingest import create_app
from journeys.config import ProjectConfig

from .test_daemon import daemons, shop  # noqa: F401 - fixtures
from .test_ingest import KEY, stored_for

FLUSH_BOUND = 60.0  # seconds: far above what a library that gives up or retries once needs
LIBRARIES = ["segment", "rudderstack"]


class Observed:
    """ASGI: the app, with the status of every POST /v1/batch it answered recorded."""

    def __init__(self, app):
        self.app = app
        self.statuses: list[int] = []

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] != "/v1/batch":
            return await self.app(scope, receive, send)

        async def observe(message):
            if message["type"] == "http.response.start":
                self.statuses.append(message["status"])
            await send(message)

        await self.app(scope, receive, observe)


class Ingest:
    """The ingest app on uvicorn, in a thread, on a loopback port."""

    def __init__(self, db: Path):
        self.db = db
        self.app = create_app(ProjectConfig(), str(db), [KEY])
        self.observed = Observed(self.app)
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(self.observed, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the ingest did not start")
            time.sleep(0.01)

    def fail_inbox(self, times: int) -> None:
        """The next `times` commits fail as SQLite fails on a locked or full database."""
        inbox = self.app.state.group_commit.inbox
        append = inbox.append_rows
        left = [times]

        def append_rows(rows):
            if left[0] > 0:
                left[0] -= 1
                raise sqlite3.OperationalError("database or disk is full")
            return append(rows)

        inbox.append_rows = append_rows

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(30)
        self.sock.close()


@pytest.fixture()
def ingest(tmp_path):
    s = Ingest(tmp_path / "journeys.db")
    yield s
    s.stop()


def client(library: str, url: str, key: str, errors: list):
    """The library's client as its users run it (a consumer thread), with short retries."""
    if library == "segment":
        from segment.analytics import Client
    else:
        from rudderstack.analytics import Client
    return Client(key, host=url, on_error=lambda e, batch: errors.append(e), max_retries=2, timeout=10,
                  upload_interval=0.05)


def flush(c) -> float:
    """`c.flush()`, bounded: the seconds it took. A library still retrying fails here."""
    start = time.monotonic()
    t = threading.Thread(target=c.flush, daemon=True)
    t.start()
    t.join(FLUSH_BOUND)
    assert not t.is_alive(), f"flush() has not returned after {FLUSH_BOUND:.0f}s: the library is still retrying"
    return time.monotonic() - start


def stop(c) -> None:
    for consumer in c.consumers:
        consumer.pause()
    for consumer in c.consumers:
        consumer.join(FLUSH_BOUND)


def logged(caplog) -> str:
    return "\n".join(r.getMessage() + (repr(r.exc_info[1]) if r.exc_info else "") for r in caplog.records)


def uid() -> str:
    return "u-" + uuid.uuid4().hex[:12]


@pytest.fixture()
def logs(caplog):
    for name in ("segment", "rudderstack", "backoff"):
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


def sent(ingest: Ingest, library: str, key: str, calls) -> list:
    """`calls(client)` through the library, flushed (bounded); the errors its on_error got."""
    errors: list = []
    c = client(library, ingest.url, key, errors)
    try:
        calls(c)
        took = flush(c)
    finally:
        stop(c)
    print(f"{library}: {ingest.observed.statuses} in {took:.2f}s")
    return errors


def given_up_at_once(ingest: Ingest, logs, library: str, key: str, calls, status: int, code: str):
    """The library sent one request, got `status`, did not retry, reported an APIError with our
    `code` and `message` to on_error and logged them (not "Unknown error", no KeyError)."""
    errors = sent(ingest, library, key, calls)
    assert ingest.observed.statuses == [status], f"{library} retried a {status}: {ingest.observed.statuses}"
    [e] = errors
    assert (e.status, e.code) == (status, code), repr(e)
    text = logged(logs)
    assert f"{code}: {e.message} ({status})" in text
    assert "Unknown error" not in text and "KeyError" not in text
    return e


@pytest.mark.parametrize("library", LIBRARIES)
def test_a_wrong_write_key_is_given_up_at_once_and_logged_with_our_message(ingest, logs, library):
    user = uid()
    e = given_up_at_once(ingest, logs, library, "not-the-key", lambda c: c.track(user, "Order Completed", {"total": 1}),
                         401, "invalid_write_key")
    assert "write key" in e.message
    assert stored_for(ingest.db, user) == []


@pytest.mark.parametrize("library", LIBRARIES)
def test_an_invalid_event_is_given_up_at_once_and_the_good_ones_arrive(ingest, logs, library):
    """An empty event name passes both libraries' checks and not the ingest's: the batch is a 400
    that names it, and the good call of the same batch is kept."""
    user = uid()

    def calls(c):
        c.track(user, "", {"total": 1})
        c.track(user, "Order Completed", {"total": 2})

    e = given_up_at_once(ingest, logs, library, KEY, calls, 400, "invalid_event")
    assert "1 of 2 events rejected" in e.message and "event: missing" in e.message
    assert [m.event for m in stored_for(ingest.db, user)] == ["Order Completed"]


@pytest.mark.parametrize("library", LIBRARIES)
def test_a_503_is_retried_and_the_events_arrive(ingest, logs, library):
    """The inbox fails once (503 with Retry-After): Segment waits the Retry-After and sends the
    batch again; RudderStack backs off and sends it again. Nothing is lost, nothing reported."""
    user = uid()
    ingest.fail_inbox(1)

    def calls(c):
        c.track(user, "Order Completed", {"total": 3})
        c.identify(user, {"plan": "pro"})

    errors = sent(ingest, library, KEY, calls)
    assert ingest.observed.statuses == [503, 200], f"{library} sent {ingest.observed.statuses}"
    assert errors == []
    assert sorted(m.type for m in stored_for(ingest.db, user)) == ["identify", "track"]
    text = logged(logs)
    assert "Unknown error" not in text and "KeyError" not in text
    if library == "rudderstack":  # backoff logs the error it retries: ours, with its code
        assert "unavailable: the inbox could not store the events" in text


def test_every_error_answer_of_the_daemon_has_a_code_and_a_message(shop, tmp_path, daemons):  # noqa: F811
    """`journeys serve`'s other JSON errors (admin and profile API, FastAPI's own 404, 405 and
    422) carry `code` and `message` too, besides their existing fields."""
    d = daemons(shop, f"sqlite:///{tmp_path / 'store.db'}", JOURNEYS_ADMIN_TOKEN="admin-token-for-tests")
    admin = {"Authorization": "Bearer admin-token-for-tests"}
    cases = [
        (httpx.get(f"{d.url}/admin/journeys"), 401, "unauthorized", "error"),
        (httpx.get(f"{d.url}/v1/profile/u1", auth=(KEY, "")), 404, "not_found", "error"),
        (httpx.get(f"{d.url}/admin/users/nobody", headers=admin), 404, "not_found", "error"),
        (httpx.get(f"{d.url}/admin/trace", headers=admin), 400, "invalid_request", "error"),
        (httpx.get(f"{d.url}/admin/dead-letters?limit=many", headers=admin), 422, "invalid_request", "detail"),
        (httpx.get(f"{d.url}/no/such/path"), 404, "not_found", "detail"),
        (httpx.get(f"{d.url}/v1/track"), 405, "method_not_allowed", "detail"),
        (httpx.post(f"{d.url}/v1/track", json={"event": "E"}, auth=(KEY, "")), 400, "invalid_event", "error"),
    ]
    for r, status, code, kept in cases:
        body = r.json()
        assert (r.status_code, body.get("code")) == (status, code), (r.request.url, r.text)
        assert isinstance(body.get("message"), str) and body["message"], r.text
        assert kept in body, r.text  # the field the answer had before
    assert d.stop() == 0
