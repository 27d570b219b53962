"""An outbox entry's payload (`engine.store.outbox.payload_json`): orjson for a plain action, and what
`json.dumps(sort_keys=True, default=str)` wrote before, read back, for every action. Anything orjson
would write otherwise (a NaN, a date, an int past 64 bits, a lone surrogate) is written by json itself,
byte for byte: a webhook, an email or an operator's listing sees what it saw before."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone
from enum import Enum
from types import MappingProxyType
from typing import NamedTuple

import pytest

from engine.core.effects import Action
from engine.daemon.deliveries.dispatch import OutboxSink, Routes
from engine.store.outbox import Entry, MemoryOutbox, SqliteOutbox, payload_json
from engine.store.sqlite_store import SqliteStore

T0 = datetime(2026, 3, 2, 10, 0, 0, 123456, tzinfo=timezone.utc)


def before(document: object) -> str:
    """What the outbox sink wrote until 2026-12-08."""
    return json.dumps(document, sort_keys=True, default=str)


class Colour(Enum):
    RED = "red"


class Point(NamedTuple):
    x: int
    y: int


PLAIN = [
    {},
    {"b": 1, "a": [1, 2.5, -0.0, 1e16, 5e-324, 1.7976931348623157e308], "c": None, "d": True, "e": False},
    {"text": "é ü 漢字 🎉 \"quoted\" \\ \n\t\u0000 \u2028", "nested": {"z": {"y": [{"x": ()}]}}},
    {"ints": [0, -1, 2**63 - 1, -2**63, 2**64 - 1], "tuple": (1, "two", 3.0)},
    {"β": 1, "a": 2, "Z": 3, "10": 4, "9": 5},  # keys sorted by code point either way
]

SPECIAL = [
    {"nan": math.nan},
    {"inf": [1, {"x": math.inf}]},
    {"minus_inf": -math.inf},
    {"when": T0},  # json: str(T0), "2026-03-02 10:00:00.123456+00:00"; orjson would write RFC 3339
    {"big": 2**64},
    {"small": -2**63 - 1},
    {"surrogate": "\ud800"},
    {"enum": Colour.RED},
    {"named": Point(1, 2)},  # json: a list; orjson: not at all
    {"proxy": MappingProxyType({"a": 1})},
    {1: "an int key"},
    {"flag_subclass": [True], "sub": type("S", (str,), {})("x")},
]


@pytest.mark.parametrize("document", PLAIN)
def test_a_plain_action_reads_back_as_before(document):
    assert json.loads(payload_json(document)) == json.loads(before(document))


@pytest.mark.parametrize("document", SPECIAL)
def test_anything_else_is_written_as_before_byte_for_byte(document):
    assert payload_json(document) == before(document)


def test_a_cycle_fails_as_before():
    document: dict = {}
    document["self"] = document
    with pytest.raises(ValueError, match="Circular reference"):
        payload_json(document)


def test_nesting_past_orjsons_depth_is_written_as_before():
    document: list = []
    for _ in range(300):  # orjson stops at 255 levels
        document = [document]
    assert payload_json(document) == before(document)


def webhook(data: dict, action_id: str = "a1") -> Action:
    return Action(id=action_id, time=T0, user="u1", journey="J", version="v1", entry=1, path="j/1", kind="webhook",
                  channel="webhook", target="crm", outcome="sent", data=data)


def test_the_sink_writes_an_action_that_reads_back_as_to_json_and_a_nan_as_before(tmp_path):
    """Through the sink into a SQLite outbox: the plain action reads back as its `to_json`; one
    with a NaN in its data keeps json's NaN (the webhook connector refuses it, as it did), not orjson's null."""
    routes = Routes({}, {}, frozenset({"crm"}))
    store = SqliteStore(str(tmp_path / "s.db"))
    box = SqliteOutbox(store.conn)
    plain, odd = webhook({"n": 1, "s": "é"}), webhook({"n": math.nan}, "a2")
    OutboxSink(box, routes).emit([plain, odd])
    entries = box.of_actions(["a1", "a2"])
    assert json.loads(entries[0].payload) == json.loads(before(plain.to_json())) == json.loads(
        json.dumps(plain.to_json()))
    assert entries[1].payload == before(odd.to_json())
    assert '"n": NaN' in entries[1].payload
    store.close()


def test_the_memory_outbox_gets_the_same_payload():
    routes = Routes({}, {}, frozenset({"crm"}))
    box = MemoryOutbox()
    action = webhook({"n": 2.5})
    OutboxSink(box, routes).emit([action])
    (entry,) = box.entries.values()
    assert entry.payload == payload_json(action.to_json())


ACTIONS = [  # an action's keys, `channel` first once sorted, as the dispatcher reads them back
    {"channel": "webhook", "data": {"n": 1, "s": "é", "f": 0.1, "top": 2**64 - 1}, "id": "a1", "user": "u1"},
    {"channel": None, "data": {}, "event": {"properties": {"x": [1, 2.5e-7, None, True]}}},
]
NOT_ORJSONS = [  # orjson would write them otherwise (or refuse them): json writes them, as before
    {"channel": "webhook", "data": {"big": 2**70, "negative": -2**65}},
    {"channel": "webhook", "data": {"nan": math.nan, "inf": math.inf}},
    {"channel": "webhook", "data": {"surrogate": "\ud800"}},
]


@pytest.mark.parametrize("document", PLAIN + ACTIONS)
def test_what_orjson_wrote_reads_back_as_json_would_read_it(document):
    payload = payload_json(document)
    assert json.loads(payload) == json.loads(before(document))


@pytest.mark.parametrize("document", NOT_ORJSONS)
def test_what_orjson_cannot_write_as_json_does_is_written_by_json(document):
    """A NaN, a big int, a lone surrogate, an erasure's removal: the very bytes json wrote before."""
    assert payload_json(document) == before(document)
    big = json.loads(payload_json(NOT_ORJSONS[0]))["data"]["big"]
    assert big == 2**70 and isinstance(big, int)


@pytest.mark.parametrize("moment", [T0, T0.replace(microsecond=0), datetime(2026, 3, 2, 23, 30, tzinfo=timezone(
    timedelta(hours=-5))), datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=timezone(timedelta(hours=14)))])
def test_an_entrys_dates_are_stored_as_before(tmp_path, moment):
    """`created` and `next_at` in the file: the text `strftime` wrote until 2026-12-08 (six digits, Z)."""
    store = SqliteStore(str(tmp_path / "s.db"))
    box = SqliteOutbox(store.conn)
    box.add([Entry("a1", "crm", "u1", "webhook", "crm", "{}", moment, moment + timedelta(seconds=1))])
    created, next_at = store.conn.execute("SELECT created, next_at FROM outbox").fetchone()
    utc = moment.astimezone(timezone.utc)
    assert created == utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert next_at == (utc + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert box.get("a1:crm").created == moment
    store.close()
