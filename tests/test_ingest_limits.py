"""What a call may hold (issue 18, points 4 and 9), seen from outside: a real ingest server on
loopback (tests/test_ingest.py's), the dry-run's log reader and `journeys simulate` itself.

- Nesting: properties and traits nest at most `MAX_DEPTH` (64) levels of objects and arrays (the
  whole call, when its messageId is derived from its content). Deeper is a 400 naming the field,
  on every path: single calls, batches, the dry-run's logs. Before, 255 to 1,023 levels with a
  messageId were a 500 with a traceback (orjson's recursion limit in `message_to_json`).
- Times: a timestamp before 2000-01-01 is a 400 naming its field; one later than receivedAt is set
  to receivedAt (Segment's rule; `[ingest] future_tolerance_seconds` lets some future through); the
  dry-run, which has no receipt time, skips lines outside 2000-01-01 .. 2100-01-01. An invalid
  `sentAt` is a 400 naming it.
- Fuzz: generated bodies (deep, huge numbers, odd strings, odd times) never get a 5xx.
"""

from __future__ import annotations

import gzip
import json
import sqlite3
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from engine.core.messages import (
    EARLIEST,
    LATEST,
    MAX_DEPTH,
    MessageError,
    parse_message,
)
from engine.dryrun.eventlog import read_log
from engine.store.inbox import Inbox
from journeys.config import load_config
from journeys.diagnostics import Diagnostics

from .test_ingest import ROOT, T0, Server, auth, post, server, stored, stored_for, uid  # noqa: F401 - fixture

UTC = timezone.utc
SHOP = ROOT / "examples" / "shop"


def nest(depth: int, leaf=1, key: str | None = "k"):
    """An object (or, key None, an array) `depth` levels deep, itself the first."""
    value = leaf
    for _ in range(depth):
        value = [value] if key is None else {key: value}
    return value


class Deep:
    """A value nested `depth` levels, written out as JSON text by `body` (Python's json module
    cannot write 1,000 levels, orjson not 255: the sender's JSON is written here)."""

    def __init__(self, depth: int, kind: str = "object", inside: str = "1"):
        self.depth, self.kind, self.inside = depth, kind, inside

    def text(self) -> str:
        opening, closing = ('{"k": ', "}") if self.kind == "object" else ("[", "]")
        return opening * self.depth + self.inside + closing * self.depth

    def __repr__(self) -> str:
        return f"Deep({self.depth}, {self.kind!r})"


def body(value) -> bytes:
    """`value` as JSON text, each `Deep` in it written out."""
    texts: dict[str, str] = {}

    def swap(v):
        if isinstance(v, Deep):
            key = f"@@deep-{len(texts)}@@"
            texts[json.dumps(key)] = v.text()
            return key
        if isinstance(v, dict):
            return {k: swap(x) for k, x in v.items()}
        if isinstance(v, list):
            return [swap(x) for x in v]
        return v

    text = json.dumps(swap(value))
    for key, deep in texts.items():
        text = text.replace(key, deep, 1)
    return text.encode()


def post_json(server, path: str, value):  # noqa: F811
    return post(server, path, content=body(value), headers={"Content-Type": "application/json"})


def track(user: str, **fields) -> dict:
    return {"userId": user, "event": "E", "timestamp": T0, "messageId": f"{user}-{len(fields)}", **fields}


# ---------------------------------------------------------------------- nesting


DEEP = [MAX_DEPTH + 1, 254, 255, 600, 1000, 1020]
CARRIERS = [  # (path, body given the deep value, the field named)
    ("/v1/track", lambda v, u: track(u, properties=v), "properties"),
    ("/v1/page", lambda v, u: {"userId": u, "timestamp": T0, "messageId": u, "properties": v}, "properties"),
    ("/v1/screen", lambda v, u: {"userId": u, "timestamp": T0, "messageId": u, "properties": v}, "properties"),
    ("/v1/identify", lambda v, u: {"userId": u, "timestamp": T0, "messageId": u, "traits": v}, "traits"),
    ("/v1/identify", lambda v, u: {"userId": u, "timestamp": T0, "messageId": u, "context": {"traits": v}},
     "context.traits"),
    ("/v1/group", lambda v, u: {"userId": u, "groupId": "g", "timestamp": T0, "messageId": u, "traits": v}, "traits"),
    # no messageId: the id is derived from the whole call, so every field is held to the limit
    ("/v1/track", lambda v, u: {"userId": u, "event": "E", "timestamp": T0, "integrations": v}, "integrations"),
]


@pytest.mark.parametrize("depth", DEEP)
@pytest.mark.parametrize("path, make, field", CARRIERS, ids=[f"{p}-{f}" for p, _, f in CARRIERS])
def test_deep_nesting_is_a_400_naming_the_field(server, path, make, field, depth):  # noqa: F811
    user = uid()
    for value in (Deep(depth), Deep(1, inside=Deep(depth - 1, "array").text())):  # objects; arrays in one
        r = post_json(server, path, make(value, user))
        assert r.status_code == 400, (r.status_code, r.text[:500])
        error = r.json()
        assert (error["field"], error["code"]) == (field, "invalid_event"), error
        assert f"deeper than {MAX_DEPTH} levels" in error["message"], error
    assert stored_for(server.db, user) == []


@pytest.mark.parametrize("path, make, field", CARRIERS[:4], ids=[f"{p}-{f}" for p, _, f in CARRIERS[:4]])
def test_nesting_up_to_the_limit_is_taken(server, path, make, field):  # noqa: F811
    user = uid()
    r = post(server, path, make(nest(MAX_DEPTH), user))
    assert r.status_code == 200, r.text
    (m,) = stored_for(server.db, user)
    kept = m.traits if field == "traits" else m.properties
    assert kept["k"] == nest(MAX_DEPTH - 1)


def test_deeper_than_json_can_be_read_is_a_400_on_the_body(server):  # noqa: F811
    """Past 1,024 levels orjson does not read the body at all: a 400 naming the body."""
    r = post_json(server, "/v1/track", {"userId": "u", "event": "E", "properties": Deep(1999)})
    assert r.status_code == 400 and r.json()["field"] == "body", r.text[:300]


def test_a_batch_rejects_the_deep_call_and_keeps_the_others(server):  # noqa: F811
    user = uid()
    calls = [dict(track(user, event="Good"), type="track", messageId=f"{user}-1"),
             dict(track(user, properties=Deep(300)), type="track", messageId=f"{user}-2"),
             dict({"userId": user, "timestamp": T0, "traits": nest(MAX_DEPTH + 1)}, type="identify",
                  messageId=f"{user}-3")]
    r = post_json(server, "/v1/batch", {"batch": calls})
    assert r.status_code == 400, r.text[:300]
    answer = r.json()
    assert answer["accepted"] == 1
    assert [(x["index"], x["field"]) for x in answer["rejected"]] == [(1, "properties"), (2, "traits")]
    assert [m.event for m in stored_for(server.db, user)] == ["Good"]


def test_the_dry_run_skips_a_deep_line_with_the_reason(tmp_path):
    log = tmp_path / "events.jsonl"
    lines = [track("u1", messageId="a"), track("u2", messageId="b", properties=Deep(300)),
             track("u3", messageId="c", properties=nest(MAX_DEPTH + 1)), track("u4", messageId="d")]
    log.write_bytes(b"\n".join(body({"type": "track", **line}) for line in lines) + b"\n")
    read = read_log(log)
    assert [m.user_id for m in read.messages] == ["u1", "u4"]
    assert [(s.line, s.field) for s in read.skipped] == [(2, "properties"), (3, "properties")]
    assert all(f"deeper than {MAX_DEPTH} levels" in s.message for s in read.skipped)


# ---------------------------------------------------------------------- times


def test_a_timestamp_before_2000_is_a_400_naming_its_field(server):  # noqa: F811
    user = uid()
    for field, value in [("timestamp", "0001-01-01T00:00:00Z"), ("timestamp", "1999-12-31T23:59:59Z"),
                         ("originalTimestamp", "1970-01-01T00:00:00Z")]:
        body = {"userId": user, "event": "E", field: value}
        r = post(server, "/v1/track", body)
        assert r.status_code == 400, (field, value, r.text)
        assert r.json()["field"] == field and "2000-01-01" in r.json()["message"], r.json()
    assert post(server, "/v1/track", {"userId": user, "event": "Y2K", "timestamp": "2000-01-01T00:00:00Z"}
                ).status_code == 200
    assert [m.event for m in stored_for(server.db, user)] == ["Y2K"]


def test_a_timestamp_in_the_future_becomes_the_receipt_time(server):  # noqa: F811
    user = uid()
    soon = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    calls = [("far", {"timestamp": "9999-12-31T23:59:59Z"}), ("soon", {"timestamp": soon}),
             ("2100", {"timestamp": "2100-01-01T00:00:00Z"}), ("device", {"originalTimestamp": "9000-01-01T00:00:00Z"})]
    for event, fields in calls:
        r = post(server, "/v1/track", {"userId": user, "event": event, **fields})
        assert r.status_code == 200, (event, r.text)
    got = {m.event: (at, m.timestamp) for _, at, m in stored(server.db) if m.user_id == user}
    assert sorted(got) == sorted(e for e, _ in calls)
    for event, (received, timestamp) in got.items():
        assert timestamp == received, event


def test_a_batch_in_the_future_keeps_its_calls_with_the_receipt_time(server):  # noqa: F811
    user = uid()
    r = post(server, "/v1/batch", {"batch": [
        {"type": "track", "userId": user, "event": "Far", "timestamp": "9999-12-31T00:00:00Z"},
        {"type": "track", "userId": user, "event": "Past", "timestamp": T0},
        {"type": "track", "userId": user, "event": "Ancient", "timestamp": "0001-01-01T00:00:00Z"}]})
    assert r.status_code == 400 and r.json()["accepted"] == 2
    assert [(x["index"], x["field"]) for x in r.json()["rejected"]] == [(2, "timestamp")]
    got = {m.event: (at, m.timestamp) for _, at, m in stored(server.db) if m.user_id == user}
    assert got["Far"][1] == got["Far"][0]
    assert got["Past"][1] == datetime.fromisoformat(T0)


@pytest.mark.parametrize("bad", ["yesterday", "2026-13-45T00:00:00Z", 17, True, {"at": 1}, ""])
def test_an_invalid_sent_at_is_a_400_naming_it(server, bad):  # noqa: F811
    user = uid()
    # on a call with a timestamp (sentAt not needed), and on one whose time it corrects
    for body in ({"userId": user, "event": "E", "timestamp": T0, "sentAt": bad},
                 {"userId": user, "event": "E", "originalTimestamp": T0, "sentAt": bad}):
        r = post(server, "/v1/track", body)
        assert r.status_code == 400, (body, r.text)
        assert r.json()["field"] == "sentAt", r.json()
    # a batch's own sentAt: the whole batch is refused, nothing taken
    r = post(server, "/v1/batch", {"sentAt": bad, "batch": [{"type": "track", "userId": user, "event": "E",
                                                               "originalTimestamp": T0}]})
    assert r.status_code == 400 and r.json()["field"] == "sentAt", r.text
    # one call's sentAt in a batch: that call
    r = post(server, "/v1/batch", {"batch": [{"type": "track", "userId": user, "event": "E", "timestamp": T0,
                                              "sentAt": bad},
                                             {"type": "track", "userId": user, "event": "Fine", "timestamp": T0}]})
    assert r.status_code == 400 and [x["field"] for x in r.json()["rejected"]] == ["sentAt"]
    assert [m.event for m in stored_for(server.db, user)] == ["Fine"]


def test_parse_message_holds_every_reader_to_the_same_range():
    base = {"type": "track", "userId": "u", "event": "E", "messageId": "m"}
    for value in ("1999-12-31T23:59:59.999999Z", "0001-01-01T00:00:00Z", "2100-01-01T00:00:00Z",
                  "9999-12-31T00:00:00Z"):
        with pytest.raises(MessageError) as info:
            parse_message({**base, "timestamp": value})
        assert info.value.field == "timestamp"
    assert parse_message({**base, "timestamp": "2000-01-01T00:00:00Z"}).timestamp == EARLIEST
    assert parse_message({**base, "timestamp": "2099-12-31T23:59:59Z"}).timestamp < LATEST
    with pytest.raises(MessageError) as info:
        parse_message({**base, "timestamp": T0, "sentAt": "soon"})
    assert info.value.field == "sentAt"


def test_the_dry_run_skips_implausible_times_instead_of_crashing(tmp_path):
    """`journeys simulate` of a log with years 1 and 9999: before, an OverflowError traceback."""
    log = tmp_path / "events.jsonl"
    good = [json.loads(line) for line in (SHOP / "events" / "sample.jsonl").read_text().splitlines()[:40]]
    bad = [{"type": "track", "userId": "z1", "event": "Product Viewed", "messageId": "z1",
            "timestamp": "9999-12-31T23:00:00Z", "properties": {"name": "x", "category": "beauty"}},
           {"type": "track", "userId": "z2", "event": "Product Viewed", "messageId": "z2",
            "timestamp": "0001-01-01T01:00:00Z", "properties": {"name": "x", "category": "beauty"}},
           {"type": "track", "userId": "z3", "event": "Product Viewed", "messageId": "z3",
            "timestamp": good[0]["timestamp"], "sentAt": "not a time"}]
    log.write_text("\n".join(json.dumps(x) for x in good + bad) + "\n")
    read = read_log(log)
    assert [(s.line, s.field) for s in read.skipped] == [(41, "timestamp"), (42, "timestamp"), (43, "sentAt")]
    done = subprocess.run([sys.executable, "-m", "engine.cli", "simulate", str(SHOP), "--events", str(log),
                           "--store", f"sqlite:///{tmp_path / 'dry.db'}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "Traceback" not in done.stderr


# ---------------------------------------------------------------------- the setting


def test_future_tolerance_seconds_lets_that_much_future_through(tmp_path):
    tolerant = Server(tmp_path / "j.db", {"ingest": {"future_tolerance_seconds": 3600}})
    try:
        in_half_an_hour = datetime.now(UTC) + timedelta(minutes=30)
        in_two_hours = datetime.now(UTC) + timedelta(hours=2)
        for event, at in (("Half", in_half_an_hour), ("Two", in_two_hours)):
            r = post(tolerant, "/v1/track", {"userId": "u", "event": event, "timestamp": at.isoformat()})
            assert r.status_code == 200, r.text
    finally:
        tolerant.stop()
    got = {m.event: (at, m.timestamp) for _, at, m in stored(tolerant.db)}
    assert got["Half"][1] == in_half_an_hour  # within the hour allowed: kept
    assert got["Two"][1] == got["Two"][0]  # beyond it: the receipt time


def test_the_setting_is_checked_in_journeys_toml(tmp_path):
    toml = tmp_path / "journeys.toml"
    toml.write_text("[ingest]\nfuture_tolerance_seconds = -5\n")
    diags = Diagnostics()
    load_config(toml, "journeys.toml", diags)
    assert any("future_tolerance_seconds" in d.message for d in diags.items), [d.message for d in diags.items]
    toml.write_text("[ingest]\nfuture_tolerance_seconds = 86400\n")
    diags = Diagnostics()
    assert load_config(toml, "journeys.toml", diags).ingest.future_tolerance_seconds == 86400
    assert not diags.items


# ---------------------------------------------------------------------- fuzz


odd_strings = st.sampled_from(["", " ", "\x00", "\u202e", "\ud800", "\U0001f600" * 40, "a" * 5000, "null",
                               "track", "Track ", "1e400", "NaN", "-0", "0" * 400])
odd_times = st.one_of(
    st.sampled_from(["0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "9999-12-31T23:59:59-01:00",
                     "0001-01-01T00:00:00+01:00", "1999-12-31T23:59:59Z", "2000-01-01T00:00:00Z",
                     "2100-01-01T00:00:00Z", "2026-02-30T00:00:00Z", "2026-03-02", "2026-03-02T25:00:00Z",
                     "T0", "", "now", "2026-03-02T10:00:00.1234567891234Z", "+002026-03-02T10:00:00Z"]),
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)).map(datetime.isoformat),
    st.integers(min_value=-(2**70), max_value=2**70),
)
huge_numbers = st.one_of(st.integers(min_value=-(10**40), max_value=10**40),
                         st.floats(allow_nan=False, allow_infinity=False), st.just(1.7976931348623157e308))
leaves = st.one_of(st.none(), st.booleans(), huge_numbers, odd_strings, st.text(max_size=20))
json_values = st.recursive(leaves, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)
depths = st.one_of(st.sampled_from([1, 2, MAX_DEPTH - 1, MAX_DEPTH, MAX_DEPTH + 1, 200, 253, 254, 255, 256, 500,
                                     1000, 1022, 1023, 1024, 1025, 1100]),
                   st.integers(min_value=1, max_value=1100))  # the edges: ours, orjson's writing and reading
nested = st.builds(Deep, depths, st.sampled_from(["object", "array"]))
field_values = st.one_of(json_values, odd_times, odd_strings, nested, huge_numbers)
FIELDS = ["type", "userId", "anonymousId", "messageId", "event", "timestamp", "originalTimestamp", "sentAt",
          "receivedAt", "properties", "traits", "context", "previousId", "groupId", "name", "category",
          "integrations", "writeKey"]
good_times = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31),
                         timezones=st.just(UTC)).map(datetime.isoformat)
kept_values = st.one_of(st.dictionaries(st.text(max_size=8), json_values, max_size=4),
                        st.builds(Deep, depths), st.builds(lambda d: Deep(1, inside=Deep(d, "array").text()), depths))


@st.composite
def calls(draw) -> dict:
    """A usable call (every type's fields, deep or not properties and traits) with up to three of
    its fields odd, so that the odd ones get looked at rather than an early error."""
    call = {"userId": "fuzz", "messageId": str(draw(st.uuids())), "event": "E", "timestamp": draw(good_times),
            "groupId": "g", "previousId": "p", "properties": draw(kept_values), "traits": draw(kept_values)}
    for field in draw(st.lists(st.sampled_from(FIELDS), max_size=3), "odd fields"):
        call[field] = draw(field_values, field)
    return call


PATHS = ["/v1/track", "/v1/identify", "/v1/page", "/v1/screen", "/v1/alias", "/v1/group", "/v1/t"]


@settings(max_examples=400, derandomize=True, database=None, deadline=None, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=list(HealthCheck))
@given(data=st.data())
def _fuzz(data, client: httpx.Client) -> None:
    if data.draw(st.booleans(), "batch"):
        batch = data.draw(st.lists(st.one_of(st.builds(lambda c, t: {**c, "type": t}, calls(), st.sampled_from(
            ["track", "identify", "page", "screen", "alias", "group"])), field_values), max_size=5), "calls")
        payload = {"batch": batch, **data.draw(st.fixed_dictionaries(
            {}, optional={"sentAt": field_values, "context": field_values}), "extra")}
        path = data.draw(st.sampled_from(["/v1/batch", "/v1/b"]), "path")
    else:
        payload = data.draw(calls(), "call")
        path = data.draw(st.sampled_from(PATHS), "path")
    payload.pop("writeKey", None)
    content = body(payload)  # Python's json: big integers as they are, lone surrogates escaped
    if data.draw(st.booleans(), "gzip"):
        content, headers = gzip.compress(content), {"Content-Encoding": "gzip"}
    else:
        headers = {}
    r = client.post(path, content=content, headers={**auth(), "Content-Type": "application/json", **headers})
    assert r.status_code in (200, 400, 413), (r.status_code, r.text[:500], content[:500])
    answer = r.json()
    if r.status_code != 200:
        assert answer["code"] and answer["message"] and answer.get("field"), answer


def test_generated_bodies_never_get_a_server_error(server):  # noqa: F811
    before = datetime.now(UTC)
    with httpx.Client(base_url=server.url, timeout=30) as client:
        _fuzz(client=client)
    # whatever was taken has a plausible time: from 2000 to its receipt
    conn = sqlite3.connect(server.db)
    try:
        rows = Inbox(conn).take_received(0, 10**9)
    finally:
        conn.close()
    for _, received, m in rows:
        if received >= before:
            assert EARLIEST <= m.timestamp <= received, (m, received)


def test_the_log_reader_gives_the_same_verdict_as_the_ingest(tmp_path):
    """Same limits on every path: a deep call is skipped by the dry-run with the field the ingest names."""
    log = tmp_path / "e.jsonl"
    log.write_bytes(body({"type": "identify", "userId": "u", "messageId": "m", "timestamp": T0,
                          "context": {"traits": Deep(200)}}) + b"\n")
    (skipped,) = read_log(log).skipped
    assert skipped.field == "context.traits"


def test_replay_of_a_log_in_the_future_is_not_moved_to_the_receipt_time(tmp_path):
    """`journeys replay` sends a recorded log through the ingest: its times are the log's, not the
    receipt's, as in the dry-run (only the engine's range applies), so a log dated after today
    still replays identically."""
    lines = []
    for line in (SHOP / "events" / "sample.jsonl").read_text().splitlines()[:600]:
        call = json.loads(line)
        call["timestamp"] = (datetime.fromisoformat(call["timestamp"]) + timedelta(days=5 * 364)).isoformat()
        lines.append(json.dumps(call))
    assert datetime.fromisoformat(json.loads(lines[0])["timestamp"]) > datetime.now(UTC)
    log = tmp_path / "future.jsonl"
    log.write_text("\n".join(lines) + "\n")
    done = subprocess.run([sys.executable, "-m", "engine.cli", "replay", str(SHOP), "--events", str(log)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0 and "identical" in done.stdout, done.stdout[-2000:] + done.stderr[-2000:]
