"""The HTTP ingest (engine/daemon/ingest.py) and the durable inbox (engine/store/inbox.py).

A real uvicorn server in a subprocess on a loopback port (the listening socket is made here and
handed over, so there is no port race), spoken to by plain HTTP and by the official Segment and
RudderStack Python libraries; the inbox is read from its SQLite file as the processor will.
"""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

from engine.core.messages import Message, parse_message
from engine.daemon.ingest import MAX_BATCH_EVENTS, create_app, write_keys_from_env
from engine.store.inbox import Inbox, message_from_json, message_to_json
from engine.store.sqlite_store import SqliteStore
from journeys.config import IngestConfig, ProjectConfig

from .engine_helpers import Harness

ROOT = Path(__file__).resolve().parent.parent
KEY = "test-write-key"
OTHER_KEY = "second-source-key"
UTC = timezone.utc

SERVER = """
import json, socket, sys, uvicorn
from engine.daemon.ingest import create_app
from journeys.config import ProjectConfig
db, fd, keys = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",")
app = create_app(ProjectConfig.model_validate(json.loads(sys.argv[4])), db, keys)
config = uvicorn.Config(app, log_level="warning", access_log=False)
uvicorn.Server(config).run(sockets=[socket.socket(fileno=fd)])
"""


class Server:
    def __init__(self, db: Path, config: dict | None = None):
        """`config`: journeys.toml's content, as a dict (none: the defaults)."""
        self.db = db
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(256)
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.proc = subprocess.Popen([sys.executable, "-c", SERVER, str(db), str(sock.fileno()), f"{KEY},{OTHER_KEY}",
                                      json.dumps(config or {})], cwd=ROOT, pass_fds=[sock.fileno()])
        sock.close()
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(self.url + "/openapi.json", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the ingest server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("ingest") / "journeys.db")
    yield s
    s.stop()


def auth(key: str = KEY) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def post(server: Server, path: str, body=None, *, key: str | None = KEY, content: bytes | None = None,
         headers: dict | None = None) -> httpx.Response:
    h = dict(auth(key) if key else {})
    h.update(headers or {})
    if content is None:
        return httpx.post(server.url + path, json=body, headers=h, timeout=10)
    return httpx.post(server.url + path, content=content, headers=h, timeout=10)


def stored(db: Path) -> list[tuple[int, datetime, Message]]:
    conn = sqlite3.connect(db)
    try:
        return Inbox(conn).take_received(0, 10**9)
    finally:
        conn.close()


def stored_for(db: Path, user: str) -> list[Message]:
    return [m for _, _, m in stored(db) if user in (m.user_id, m.anonymous_id)]


def by_id(messages: list[Message]) -> dict[str, Message]:
    """Messages by messageId: a client's retry may have delivered one twice; both are the same."""
    out: dict[str, Message] = {}
    for m in messages:
        assert out.setdefault(m.message_id, m) == m
    return out


def uid() -> str:
    return "u-" + uuid.uuid4().hex[:12]


T0 = "2026-03-02T10:00:00.000Z"


# ---------------------------------------------------------------------- the official libraries


def test_segment_library_delivers_unchanged(server):
    from segment.analytics import Client

    errors: list = []
    client = Client(KEY, host=server.url, sync_mode=True, on_error=lambda e, batch: errors.append(e))
    user, anon = uid(), uid()
    when = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    sent = [
        client.identify(user, {"email": "ada@example.com", "plan": "pro"}, anonymous_id=anon, timestamp=when)[1],
        client.track(user, "Order Completed", {"order_id": "o-1", "total": 42.5, "items": [1, 2]},
                     context={"timezone": "Europe/Paris"}, timestamp=when)[1],
        client.page(user, "Docs", "Install", {"path": "/install"}, timestamp=when)[1],
        client.screen(user, "Onboarding", "Step 2", {"step": 2}, timestamp=when)[1],
        client.group(user, "acme", {"name": "Acme"}, timestamp=when)[1],
        client.alias(anon, user, timestamp=when)[1],
        client.track(anonymous_id=anon, event="Product Viewed", properties={"sku": "s-1"})[1],  # no timestamp given
    ]
    client.track(user, "Order Completed", {"order_id": "o-1", "total": 42.5, "items": [1, 2]},  # a retry: same id
                 context={"timezone": "Europe/Paris"}, timestamp=when, message_id=sent[1]["messageId"])
    client.flush()
    assert errors == []
    got = by_id(stored_for(server.db, user) + stored_for(server.db, anon))
    assert set(got) == {m["messageId"] for m in sent}
    m = {s["messageId"]: got[s["messageId"]] for s in sent}
    ident, track, page, screen, group, alias, anon_track = (m[s["messageId"]] for s in sent)
    assert (ident.type, ident.user_id, ident.anonymous_id) == ("identify", user, anon)
    assert dict(ident.traits) == {"email": "ada@example.com", "plan": "pro"}
    assert (track.type, track.event, track.user_id, track.timestamp) == ("track", "Order Completed", user, when)
    assert dict(track.properties) == {"order_id": "o-1", "total": 42.5, "items": [1, 2]}
    assert track.timezone == "Europe/Paris"
    assert (page.type, page.event) == ("page", "Page Viewed")
    assert dict(page.properties) == {"path": "/install", "name": "Install", "category": "Docs"}
    assert (screen.type, screen.event, dict(screen.properties)) == ("screen", "Screen Viewed", {"step": 2, "name": "Step 2"})
    assert (group.type, group.group_id, dict(group.traits)) == ("group", "acme", {"name": "Acme"})
    assert (alias.type, alias.user_id, alias.previous_id) == ("alias", user, anon)
    assert (anon_track.anonymous_id, anon_track.event, dict(anon_track.properties)) == (anon, "Product Viewed", {"sku": "s-1"})
    assert abs(anon_track.timestamp - datetime.now(UTC)) < timedelta(minutes=1)


def test_segment_library_batches_from_its_thread(server):
    from segment.analytics import Client

    errors: list = []
    client = Client(KEY, host=server.url, on_error=lambda e, batch: errors.append(e), upload_size=50, gzip=True)
    user = uid()
    ids = [client.track(user, "Tick", {"n": i})[1]["messageId"] for i in range(230)]
    client.flush()
    client.join()
    assert errors == []
    got = by_id(stored_for(server.db, user))
    assert set(got) == set(ids)
    assert sorted(got[i].properties["n"] for i in ids) == list(range(230))


def test_rudderstack_library_delivers_unchanged(server):
    from rudderstack.analytics import Client

    errors: list = []
    client = Client(KEY, host=server.url, sync_mode=True, on_error=lambda e, batch: errors.append(e))  # gzips
    assert client.gzip
    user, anon = uid(), uid()
    when = datetime(2026, 3, 2, 11, 0, tzinfo=UTC)
    sent = [
        client.identify(user, {"email": "bo@example.com"}, anonymous_id=anon, timestamp=when)[1],
        client.track(user, "Cart Updated", {"count": 3, "nested": {"a": [1, {"b": None}]}}, timestamp=when)[1],
        client.page(user, "Shop", "Cart", {"url": "https://x/cart"}, timestamp=when)[1],
        client.screen(user, "App", "Home", {}, timestamp=when)[1],
        client.group(user, "g-7", {"size": 12}, timestamp=when)[1],
        client.alias(anon, user, timestamp=when)[1],
    ]
    client.track(user, "Cart Updated", {"count": 3, "nested": {"a": [1, {"b": None}]}}, timestamp=when,
                 message_id=sent[1]["messageId"])  # a retry
    client.flush()
    assert errors == []
    got = by_id(stored_for(server.db, user) + stored_for(server.db, anon))
    assert set(got) == {s["messageId"] for s in sent}
    for s in sent:
        m = got[s["messageId"]]
        assert m.type == s["type"]
        assert m.user_id == s.get("userId")
        assert m.timestamp == when
    track = got[sent[1]["messageId"]]
    assert (track.event, dict(track.properties)) == ("Cart Updated", {"count": 3, "nested": {"a": [1, {"b": None}]}})
    assert dict(got[sent[0]["messageId"]].traits) == {"email": "bo@example.com"}
    assert dict(got[sent[2]["messageId"]].properties) == {"url": "https://x/cart", "name": "Cart", "category": "Shop"}
    assert got[sent[4]["messageId"]].group_id == "g-7"
    assert got[sent[5]["messageId"]].previous_id == anon


def test_a_retried_message_reaches_the_engine_once(server, tmp_path):
    """The inbox keeps what it is sent, a retry included; the engine drops the repeat."""
    from segment.analytics import Client

    client = Client(KEY, host=server.url, sync_mode=True)
    user = uid()
    when = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    for _ in range(2):
        client.track(user, "Signed Up", {}, timestamp=when, message_id=f"signup-{user}")
    messages = stored_for(server.db, user)
    assert len(messages) == 2 and messages[0] == messages[1]
    run = Harness.from_source(tmp_path, 'journey "Welcome" { entry when event "Signed Up"  send email "welcome" }')
    run.feed(messages)
    assert len(run.sent(user, template="welcome")) == 1


# ---------------------------------------------------------------------- answers


def test_every_call_and_the_short_paths(server):
    user = uid()
    calls = {
        "track": {"userId": user, "event": "E", "timestamp": T0},
        "identify": {"userId": user, "traits": {"a": 1}, "timestamp": T0},
        "page": {"userId": user, "name": "Home", "timestamp": T0},
        "screen": {"userId": user, "name": "Main", "timestamp": T0},
        "alias": {"userId": user, "previousId": "old-" + user, "timestamp": T0},
        "group": {"userId": user, "groupId": "g", "timestamp": T0},
    }
    for kind, body in calls.items():
        r = post(server, f"/v1/{kind}", body)
        assert (r.status_code, r.json()) == (200, {"success": True}), kind
        r = post(server, f"/v1/{kind[0]}", dict(body, messageId=f"{kind}-short-{user}"))
        assert r.status_code == 200, kind
    r = post(server, "/v1/b", {"batch": [dict(calls["track"], type="track")]})
    assert r.status_code == 200
    got = stored_for(server.db, user)
    assert sorted(m.type for m in got) == sorted(list(calls) * 2 + ["track"])


def test_the_path_gives_the_type(server):
    user = uid()
    r = post(server, "/v1/track", {"type": "identify", "userId": user, "event": "E", "timestamp": T0})
    assert r.status_code == 200
    assert [m.type for m in stored_for(server.db, user)] == ["track"]


BAD_CALLS = [
    ("/v1/track", {"event": "E", "timestamp": T0}, "userId"),
    ("/v1/track", {"userId": "x", "timestamp": T0}, "event"),
    ("/v1/track", {"userId": "x", "event": 12, "timestamp": T0}, "event"),
    ("/v1/track", {"userId": {"id": 1}, "event": "E", "timestamp": T0}, "userId"),
    ("/v1/track", {"userId": "x", "event": "E", "timestamp": "yesterday"}, "timestamp"),
    ("/v1/track", {"userId": "x", "event": "E", "originalTimestamp": "soon"}, "originalTimestamp"),
    ("/v1/track", {"userId": "x", "event": "E", "properties": [1, 2], "timestamp": T0}, "properties"),
    ("/v1/track", {"userId": "x", "event": "E", "context": "web", "timestamp": T0}, "context"),
    ("/v1/track", {"userId": "x", "event": "E", "messageId": True, "timestamp": T0}, "messageId"),
    ("/v1/identify", {"userId": "x", "traits": "vip", "timestamp": T0}, "traits"),
    ("/v1/page", {"userId": "x", "name": 3, "timestamp": T0}, "name"),
    ("/v1/alias", {"userId": "x", "timestamp": T0}, "previousId"),
    ("/v1/alias", {"anonymousId": "a", "previousId": "p", "timestamp": T0}, "userId"),
    ("/v1/group", {"userId": "x", "timestamp": T0}, "groupId"),
    ("/v1/batch", {"events": []}, "batch"),
    ("/v1/batch", {"batch": {"type": "track"}}, "batch"),
]


@pytest.mark.parametrize("path, body, field", BAD_CALLS, ids=[f"{p}-{f}" for p, _, f in BAD_CALLS])
def test_a_bad_call_is_a_400_naming_its_field(server, path, body, field):
    before = len(stored(server.db))
    r = post(server, path, body)
    assert r.status_code == 400
    assert r.json()["field"] == field
    assert field in r.json()["error"]
    if path != "/v1/batch":  # the same field as the dry-run's readers name
        raw = dict(body, type=path.rsplit("/", 1)[1])
        with pytest.raises(Exception) as exc:
            parse_message(raw)
        assert exc.value.field == field
    assert len(stored(server.db)) == before


@pytest.mark.parametrize("content, problem", [
    (b'{"userId": "x", "event": ', "malformed JSON"),
    (b"\xff\xfe", "malformed JSON"),
    (b"", "malformed JSON"),
    (b"[1, 2]", "expected a JSON object"),
    (b'"text"', "expected a JSON object"),
])
def test_a_body_that_is_not_a_json_object_is_a_400(server, content, problem):
    r = post(server, "/v1/track", content=content, headers={"Content-Type": "application/json"})
    assert r.status_code == 400
    assert r.json()["field"] == "body" and problem in r.json()["error"]


def test_write_keys(server):
    body = {"userId": uid(), "event": "E", "timestamp": T0}
    for key, headers, extra in [
        (None, {}, {}),
        ("wrong", {}, {}),
        (None, {"Authorization": "Bearer " + KEY}, {}),
        (None, {"Authorization": "Basic not-base64!"}, {}),
        (KEY, {}, {"writeKey": "wrong"}),  # the body's key wins, as at Segment
    ]:
        r = post(server, "/v1/track", dict(body, **extra), key=key, headers=headers)
        assert r.status_code == 401, (key, headers, extra)
        assert r.json()["field"] == "writeKey"
        assert r.headers["WWW-Authenticate"].startswith("Basic")
    assert post(server, "/v1/track", dict(body, writeKey=KEY), key=None).status_code == 200
    assert post(server, "/v1/track", dict(body, messageId="m2-" + body["userId"]), key=OTHER_KEY).status_code == 200
    # with a password, as some senders write it
    h = {"Authorization": "Basic " + base64.b64encode(f"{KEY}:x".encode()).decode()}
    assert post(server, "/v1/track", dict(body, messageId="m3-" + body["userId"]), key=None, headers=h).status_code == 200
    # without a key, even a malformed body gets a 401, not parsing details
    assert post(server, "/v1/track", key=None, content=b"{oops").status_code == 401
    assert len(stored_for(server.db, body["userId"])) == 3


def test_size_limits(server):
    user = uid()
    big = {"userId": user, "event": "E", "timestamp": T0, "properties": {"blob": "x" * 33_000}}
    r = post(server, "/v1/track", big)
    assert r.status_code == 413 and r.json()["field"] == "body"
    # a batch may be larger than one call, up to 500 KB ...
    ok = {"batch": [dict(big, type="track", properties={"blob": "x" * 20_000}, messageId=f"{user}-{i}") for i in range(20)]}
    assert post(server, "/v1/batch", ok).status_code == 200
    # ... not more
    over = {"batch": [dict(big, type="track", properties={"blob": "x" * 30_000}) for _ in range(18)]}
    assert post(server, "/v1/batch", over).status_code == 413
    # a streamed body (no Content-Length) is cut off as soon as it passes the limit
    def chunks():
        yield b'{"userId": "' + user.encode() + b'", "event": "E", "properties": {"blob": "'
        for _ in range(100):
            yield b"x" * 10_000
        yield b'"}}'
    r = httpx.post(server.url + "/v1/track", content=chunks(), headers=auth(), timeout=10)
    assert r.status_code == 413
    # 32 KB per call inside a batch too: the call is rejected, the others accepted
    mixed = {"batch": [dict(big, type="track", messageId=f"{user}-big"),
                       {"type": "track", "userId": user, "event": "Small", "timestamp": T0}]}
    r = post(server, "/v1/batch", mixed)
    assert r.status_code == 400
    assert r.json()["rejected"] == [{"index": 0, "field": "message", "message": r.json()["rejected"][0]["message"]}]
    assert "32 KB" in r.json()["rejected"][0]["message"]
    # too many calls
    many = {"batch": [{"type": "track", "userId": user, "event": "E", "timestamp": T0}] * (MAX_BATCH_EVENTS + 1)}
    r = post(server, "/v1/batch", many)
    assert r.status_code == 413 and r.json()["field"] == "batch"
    assert sorted(m.event for m in stored_for(server.db, user)) == ["E"] * 20 + ["Small"]


def test_gzip_bodies(server):
    user = uid()
    body = gzip.compress(b'{"userId": "%s", "event": "Zipped", "timestamp": "%s"}' % (user.encode(), T0.encode()))
    r = post(server, "/v1/track", content=body, headers={"Content-Encoding": "gzip"})
    assert r.status_code == 200
    assert [m.event for m in stored_for(server.db, user)] == ["Zipped"]
    bomb = gzip.compress(b'{"userId": "x", "event": "E", "p": "' + b"0" * 2_000_000 + b'"}')
    assert len(bomb) < 32 * 1024
    assert post(server, "/v1/batch", content=bomb, headers={"Content-Encoding": "gzip"}).status_code == 413
    r = post(server, "/v1/track", content=b"not gzip", headers={"Content-Encoding": "gzip"})
    assert r.status_code == 400 and "gzip" in r.json()["error"]
    r = post(server, "/v1/track", content=body[:-8], headers={"Content-Encoding": "gzip"})
    assert r.status_code == 400
    r = post(server, "/v1/track", content=b"{}", headers={"Content-Encoding": "br"})
    assert r.status_code == 415


def test_a_batch_with_bad_calls_keeps_the_good_ones_and_lists_the_bad(server):
    user = uid()
    batch = [
        {"type": "track", "userId": user, "event": "First", "timestamp": T0},
        {"type": "track", "userId": user, "timestamp": T0},
        {"type": "identify", "userId": user, "traits": {"a": 1}, "timestamp": T0},
        {"type": "jump", "userId": user, "timestamp": T0},
        "not an object",
        {"type": "track", "userId": user, "event": "Late", "timestamp": "2026-13-45"},
        {"type": "page", "userId": user, "name": "Home", "timestamp": T0},
    ]
    r = post(server, "/v1/batch", {"batch": batch})
    assert r.status_code == 400
    body = r.json()
    assert body["accepted"] == 3 and body["field"] == "batch"
    assert "4 of 7" in body["error"]
    assert [(x["index"], x["field"]) for x in body["rejected"]] == [
        (1, "event"), (3, "type"), (4, "message"), (5, "timestamp")]
    assert all(x["message"] for x in body["rejected"])
    assert [m.type for m in stored_for(server.db, user)] == ["track", "identify", "page"]
    # an empty batch is nothing to do
    assert post(server, "/v1/batch", {"batch": []}).status_code == 200


def test_times_and_batch_context(server):
    user = uid()
    before = datetime.now(UTC)
    r = post(server, "/v1/batch", {
        "context": {"timezone": "Asia/Tokyo"},
        "sentAt": "2026-03-02T10:00:10Z",
        "batch": [
            {"type": "track", "userId": user, "event": "NoTime"},
            # the device's clock is 10 s after its sentAt: Segment's skew correction
            {"type": "track", "userId": user, "event": "Skewed", "originalTimestamp": "2026-03-02T10:00:00Z"},
            {"type": "track", "userId": user, "event": "Own", "originalTimestamp": "2026-03-02T09:00:00Z",
             "sentAt": "2026-03-02T09:00:01Z", "context": {"timezone": "Europe/Oslo"}},
            {"type": "track", "userId": user, "event": "Given", "timestamp": T0},
        ],
    })
    after = datetime.now(UTC)
    assert r.status_code == 200
    got = {m.event: (at, m) for _, at, m in stored(server.db) if m.user_id == user}
    at, m = got["NoTime"]
    assert before <= at <= after and m.timestamp == at
    at, m = got["Skewed"]
    assert m.timestamp == at - timedelta(seconds=10)
    at, m = got["Own"]
    assert m.timestamp == at - timedelta(seconds=1)
    assert m.timezone == "Europe/Oslo"
    assert got["Given"][1].timestamp == datetime(2026, 3, 2, 10, tzinfo=UTC)
    assert got["NoTime"][1].timezone == got["Given"][1].timezone == "Asia/Tokyo"
    # a single call without any time
    r = post(server, "/v1/identify", {"userId": user, "traits": {"x": 1}})
    assert r.status_code == 200
    (m,) = [m for m in stored_for(server.db, user) if m.type == "identify"]
    assert before <= m.timestamp <= datetime.now(UTC)


ERRORS = [  # (request, status, code): every refusal of the ingest
    ({"path": "/v1/track", "content": b'{"userId": '}, 400, "invalid_request"),
    ({"path": "/v1/track", "content": b"[1]"}, 400, "invalid_request"),
    ({"path": "/v1/track", "body": {"userId": "x", "timestamp": T0}}, 400, "invalid_event"),
    ({"path": "/v1/batch", "body": {"batch": [{"type": "track", "userId": "x", "timestamp": T0}]}}, 400, "invalid_event"),
    ({"path": "/v1/batch", "body": {"events": []}}, 400, "invalid_request"),
    ({"path": "/v1/track", "body": {"userId": "x", "event": "E"}, "key": "wrong"}, 401, "invalid_write_key"),
    ({"path": "/v1/track", "body": {"userId": "x", "event": "E"}, "key": None}, 401, "invalid_write_key"),
    ({"path": "/v1/track", "body": {"userId": "x", "event": "E", "p": "x" * 33_000}}, 413, "payload_too_large"),
    ({"path": "/v1/track", "content": b"{}", "headers": {"Content-Encoding": "br"}}, 415, "unsupported_encoding"),
]


@pytest.mark.parametrize("request_, status, code", ERRORS, ids=[f"{s}-{c}-{i}" for i, (_, s, c) in enumerate(ERRORS)])
def test_every_error_answer_has_the_code_and_message_the_libraries_read(server, request_, status, code):
    """The official libraries read `code` and `message` from an error body (tests/test_official_clients.py
    shows what they do without them); `error` and `field` stay, `message` is `error`'s sentence."""
    r = post(server, **request_)
    body = r.json()
    assert (r.status_code, body.get("code")) == (status, code), r.text
    assert body["message"] == body["error"] and body["message"]


def test_a_batch_refusal_says_what_the_first_bad_call_is(server):
    """The libraries log `message` only: it names the first bad call and its field."""
    r = post(server, "/v1/batch", {"batch": [{"type": "track", "userId": "x", "event": "E", "timestamp": T0},
                                             {"type": "track", "userId": "x", "event": "E", "timestamp": "soon"}]})
    assert r.status_code == 400
    assert r.json()["message"] == ("1 of 2 events rejected; the other 1 were accepted "
                                   "(batch[1] timestamp: not an ISO-8601 time: 'soon')")


def test_openapi_lists_every_endpoint(server):
    spec = httpx.get(server.url + "/openapi.json").json()
    paths = {p for p in spec["paths"]}
    assert paths == {f"/v1/{k}" for k in ("track", "identify", "page", "screen", "alias", "group", "batch")}
    schemas = spec["components"]["schemas"]
    for path, op in spec["paths"].items():
        post_ = op["post"]
        ref = post_["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        assert ref.rsplit("/", 1)[1] in schemas
        assert {"200", "400", "401", "413"} <= set(post_["responses"])
    assert {"userId", "anonymousId", "messageId", "timestamp", "event", "properties"} <= set(schemas["Track"]["properties"])
    assert schemas["Track"]["required"] == ["event"]
    assert "previousId" in schemas["Alias"]["required"]
    assert schemas["Track"].get("additionalProperties", True) is True
    assert spec["components"]["securitySchemes"]["writeKey"]["scheme"] == "basic"


# ---------------------------------------------------------------------- durability


def test_nothing_answered_is_lost_when_the_server_is_killed(tmp_path):
    """Concurrent senders; SIGKILL the moment the 40th request is answered 200: every event of
    every 200 is in the inbox when it is opened again."""
    server = Server(tmp_path / "journeys.db")
    acknowledged: list[str] = []
    try:
        async def main() -> None:
            killed = asyncio.Event()
            async with httpx.AsyncClient(base_url=server.url, headers=auth(), timeout=10) as client:
                async def send(i: int) -> None:
                    batch = [{"type": "track", "userId": f"k-{i}", "event": "E", "messageId": f"k-{i}-{j}",
                              "timestamp": T0} for j in range(20)]
                    try:
                        r = await client.post("/v1/batch", json={"batch": batch})
                    except httpx.HTTPError:
                        return
                    if r.status_code == 200 and not killed.is_set():
                        acknowledged.extend(e["messageId"] for e in batch)
                        if len(acknowledged) >= 40 * 20:
                            os.kill(server.proc.pid, signal.SIGKILL)
                            killed.set()

                await asyncio.gather(*(send(i) for i in range(400)))

        asyncio.run(main())
        server.proc.wait(10)
        assert server.proc.returncode == -signal.SIGKILL
    finally:
        server.stop()
    assert len(acknowledged) >= 800
    inbox = Inbox.open(str(tmp_path / "journeys.db"))
    try:
        ids = {m.message_id for _, m in inbox.take(0, 10**6)}
    finally:
        inbox.close()
    assert set(acknowledged) <= ids


# ---------------------------------------------------------------------- through FastAPI, in process


@pytest.mark.filterwarnings("ignore:Using `httpx` with")
def test_fastapi_routing_gives_the_same_answers(tmp_path):
    from fastapi.testclient import TestClient

    db = tmp_path / "j.db"
    with TestClient(create_app(ProjectConfig(), str(db), [KEY], fast_path=False)) as client:
        r = client.post("/v1/track", json={"userId": "a", "event": "E", "timestamp": T0}, headers=auth())
        assert (r.status_code, r.json()) == (200, {"success": True})
        r = client.post("/v1/track", json={"event": "E", "timestamp": T0}, headers=auth())
        assert (r.status_code, r.json()["field"]) == (400, "userId")
        r = client.post("/v1/batch", json={"batch": [{"type": "track", "userId": "b", "event": "E", "timestamp": T0},
                                                     {"type": "track", "userId": "b", "timestamp": T0}]},
                        headers=auth())
        assert r.status_code == 400 and r.json()["accepted"] == 1
        assert client.post("/v1/track", json={"userId": "a"}, headers=auth("nope")).status_code == 401
        assert client.post("/v1/track", content=b"x" * 40_000, headers=auth()).status_code == 413
    assert [m.user_id for _, _, m in stored(db)] == ["a", "b"]


def test_create_app_needs_a_write_key(tmp_path):
    with pytest.raises(ValueError, match="write keys"):
        create_app(ProjectConfig(), str(tmp_path / "j.db"), [])
    config = ProjectConfig(ingest=IngestConfig(write_keys_env=["K1", "K2", "K3"]))
    assert write_keys_from_env(config, {"K1": "a", "K2": "", "OTHER": "z"}) == {"a"}


# ---------------------------------------------------------------------- the inbox


MESSAGES = [
    {"type": "track", "userId": "u", "event": "Order Completed", "messageId": "m1", "timestamp": "2026-03-02T10:00:00.123456Z",
     "properties": {"total": 1.5, "items": [{"sku": "a"}], "none": None}, "context": {"timezone": "Europe/Paris"}},
    {"type": "identify", "anonymousId": "a", "messageId": "m2", "timestamp": "2026-03-02T10:00:00+02:00",
     "context": {"traits": {"email": "x@y.z"}}},
    {"type": "page", "userId": "u", "name": "Home", "category": "Docs", "properties": {"path": "/"}, "timestamp": T0},
    {"type": "screen", "userId": "u", "anonymousId": "a", "name": "Main", "timestamp": T0},
    {"type": "alias", "userId": "u", "previousId": "a", "timestamp": T0},
    {"type": "group", "userId": "u", "groupId": "g", "traits": {"n": 1}, "timestamp": T0},
    {"type": "track", "userId": 42, "event": "E", "timestamp": T0},
]


@pytest.mark.parametrize("raw", MESSAGES, ids=[f"{m['type']}-{i}" for i, m in enumerate(MESSAGES)])
def test_a_message_round_trips_through_json(raw):
    msg = parse_message(raw)
    again = message_from_json(message_to_json(msg))
    assert again == msg
    assert again.timestamp.tzinfo is timezone.utc
    assert message_to_json(again) == message_to_json(msg)


def test_inbox_append_take_mark_prune(tmp_path):
    db = str(tmp_path / "journeys.db")
    inbox = Inbox.open(db)
    msgs = [parse_message(dict(m, messageId=f"x{i}")) for i, m in enumerate(MESSAGES)]
    inbox.append(msgs[:3], received_at=datetime(2026, 3, 2, 10, 0, 1, tzinfo=UTC))
    inbox.append(msgs[3:])
    assert inbox.last_seq() == 7 and inbox.pending() == 7 and inbox.processed() == 0
    taken = inbox.take(0, 5)
    assert [seq for seq, _ in taken] == [1, 2, 3, 4, 5]
    assert [m for _, m in taken] == msgs[:5]
    assert [m for _, m in inbox.take(5, 100)] == msgs[5:]
    assert inbox.take_received(0, 1)[0][1] == datetime(2026, 3, 2, 10, 0, 1, tzinfo=UTC)

    # mark commits with the processor's transaction, or not at all
    store = SqliteStore(db)
    processor = Inbox(store.conn)
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.seen("x0")
            processor.mark(3)
            raise RuntimeError("crash")
    assert processor.processed() == 0 and not store.seen("x0")
    with store.transaction():
        processor.mark(3)
    processor.mark(2)  # never back
    assert inbox.processed() == 3 and inbox.pending() == 4
    assert [seq for seq, _ in inbox.take(inbox.processed(), 100)] == [4, 5, 6, 7]

    assert inbox.prune() == 3
    inbox.append(msgs[:1])
    assert inbox.last_seq() == 8  # seqs are never reused
    processor.mark(8)
    assert inbox.prune(chunk=2) == 2 and inbox.prune(chunk=2) == 2  # in chunks, oldest first
    assert [seq for seq, _ in inbox.take(0, 10)] == [8]
    assert inbox.prune() == 1 and inbox.pending() == 0
    assert inbox.last_seq() == 8  # with the table empty too
    inbox.append(msgs[:1])
    assert [seq for seq, _ in inbox.take(8, 10)] == [9]
    store.close()
    inbox.close()
    # the store's own schema check is untouched by the inbox's tables
    SqliteStore(db).close()


def test_inbox_refuses_memory():
    with pytest.raises(ValueError):
        Inbox.open(":memory:")


# ---------------------------------------------------------------------- group commit


class _FakeInbox:
    def __init__(self, fail: bool = False):
        self.transactions: list[list] = []
        self.fail = fail
        self.closed = False

    def append_rows(self, rows):
        time.sleep(0.002)  # a commit takes time: requests pile up behind it
        if self.fail:
            raise sqlite3.OperationalError("database is locked")
        self.transactions.append(list(rows))

    def close(self):
        self.closed = True


def test_group_commit_shares_transactions_and_answers_after_them():
    from engine.daemon.ingest import GroupCommit

    inbox = _FakeInbox()
    done: list[int] = []

    async def main():
        commit = GroupCommit(lambda: inbox, max_delay=0.002)
        await commit.start()

        async def request(i: int):
            await commit.submit([("t", b"%d" % i)])
            assert any((("t", b"%d" % i) in t) for t in inbox.transactions)  # committed before answered
            done.append(i)

        await asyncio.gather(*(request(i) for i in range(500)))
        await commit.close()
        return commit.commits

    commits = asyncio.run(main())
    assert sorted(done) == list(range(500))
    assert sorted(int(r[1]) for t in inbox.transactions for r in t) == list(range(500))
    assert commits == len(inbox.transactions) < 50
    assert inbox.closed


def test_group_commit_waits_for_company_only_when_requests_come_together():
    """One request at a time never waits `max_delay` (here 10 s) for a company that does not come;
    concurrent ones still share commits."""
    from engine.daemon.ingest import GroupCommit

    inbox = _FakeInbox()

    async def main():
        commit = GroupCommit(lambda: inbox, max_delay=10.0)
        await commit.start()
        for i in range(5):  # one after the other, each right after the last commit
            await asyncio.wait_for(commit.submit([("t", b"%d" % i)]), timeout=5)
        await commit.close()

    asyncio.run(main())
    assert [len(t) for t in inbox.transactions] == [1, 1, 1, 1, 1]


def test_group_commit_failure_reaches_every_waiting_request():
    from engine.daemon.ingest import GroupCommit

    async def main():
        commit = GroupCommit(lambda: _FakeInbox(fail=True))
        results = await asyncio.gather(*(commit.submit([("t", b"x")]) for _ in range(10)), return_exceptions=True)
        await commit.close()
        return results

    results = asyncio.run(main())
    assert all(isinstance(r, sqlite3.OperationalError) for r in results)


@pytest.mark.filterwarnings("ignore:Using `httpx` with")
def test_an_unwritable_inbox_is_a_503_to_retry(tmp_path):
    from fastapi.testclient import TestClient

    db = tmp_path / "j.db"
    app = create_app(ProjectConfig(), str(db), [KEY])
    with TestClient(app) as client:
        app.state.group_commit.inbox.append_rows = _FakeInbox(fail=True).append_rows
        r = client.post("/v1/track", json={"userId": "a", "event": "E", "timestamp": T0}, headers=auth())
        assert r.status_code == 503 and r.headers["Retry-After"] == "1"
        assert "database is locked" in r.json()["error"]
        assert r.json()["code"] == "unavailable" and r.json()["message"] == r.json()["error"]
