"""parse_message: raw Segment JSON -> Message, and the errors it gives for everything else."""

from __future__ import annotations

import hashlib
import pickle
import re
from datetime import datetime, timedelta, timezone
from types import MappingProxyType

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.core.messages import (
    PAGE_EVENT,
    SCREEN_EVENT,
    Message,
    MessageError,
    _build,
    auto_message_id,
    parse_message,
)

TS = "2026-03-01T12:00:00Z"
WHEN = datetime(2026, 3, 1, 12, tzinfo=timezone.utc)


def track(**fields):
    raw = {"type": "track", "userId": "u1", "event": "Order Completed", "timestamp": TS, "messageId": "m1"}
    raw.update(fields)
    return {k: v for k, v in raw.items() if v is not ...}


def error(raw, **kw) -> MessageError:
    with pytest.raises(MessageError) as info:
        parse_message(raw, **kw)
    return info.value


# ------------------------------------------------------------------------------ each call type


def test_track():
    props = {"price": 250, "items": [{"sku": "A"}]}
    m = parse_message(track(properties=props, anonymousId="a1"))
    assert m == Message(
        type="track",
        message_id="m1",
        timestamp=WHEN,
        user_id="u1",
        anonymous_id="a1",
        event="Order Completed",
        properties=props,
    )
    assert m.timestamp.tzinfo is timezone.utc
    assert m.actor == "u1"
    assert m.traits == {}


def test_type_is_case_insensitive():
    assert parse_message(track(type="Track")).type == "track"
    assert parse_message(track(type="IDENTIFY")).type == "identify"


def test_page_becomes_page_viewed_with_name_and_category():
    props = {"path": "/pricing"}
    raw = {"type": "page", "anonymousId": "a1", "name": "Pricing", "category": "Docs",
           "properties": props, "timestamp": TS}
    m = parse_message(raw)
    assert (m.type, m.event, m.user_id, m.anonymous_id) == ("page", PAGE_EVENT, None, "a1")
    assert m.event == "Page Viewed"
    assert m.properties == {"path": "/pricing", "name": "Pricing", "category": "Docs"}
    assert props == {"path": "/pricing"}  # the raw properties are not changed
    assert m.actor == "a1"


def test_page_properties_win_over_name():
    raw = {"type": "page", "userId": "u", "name": "Call name", "properties": {"name": "Prop name"},
           "timestamp": TS}
    assert parse_message(raw).properties == {"name": "Prop name"}


def test_page_without_properties_or_name():
    m = parse_message({"type": "page", "userId": "u", "timestamp": TS, "properties": None})
    assert m.event == PAGE_EVENT and m.properties == {}


def test_screen_becomes_screen_viewed_with_name_only():
    raw = {"type": "screen", "userId": "u", "name": "Home", "category": "ignored", "timestamp": TS}
    m = parse_message(raw)
    assert m.event == SCREEN_EVENT == "Screen Viewed"
    assert m.properties == {"name": "Home"}


def test_identify_with_traits():
    m = parse_message({"type": "identify", "userId": "u", "traits": {"plan": "pro"}, "timestamp": TS})
    assert (m.type, m.event, m.traits, m.properties) == ("identify", None, {"plan": "pro"}, {})


def test_identify_falls_back_to_context_traits():
    raw = {"type": "identify", "userId": "u", "timestamp": TS, "context": {"traits": {"email": "a@b.c"}}}
    assert parse_message(raw).traits == {"email": "a@b.c"}


def test_identify_prefers_top_level_traits():
    raw = {"type": "identify", "userId": "u", "timestamp": TS, "traits": {"plan": "pro"},
           "context": {"traits": {"email": "a@b.c"}}}
    assert parse_message(raw).traits == {"plan": "pro"}


def test_identify_without_traits():
    assert parse_message({"type": "identify", "userId": "u", "timestamp": TS}).traits == {}


def test_alias():
    m = parse_message({"type": "alias", "userId": "u", "previousId": "anon-1", "timestamp": TS})
    assert (m.type, m.user_id, m.previous_id, m.event) == ("alias", "u", "anon-1", None)


def test_group():
    raw = {"type": "group", "userId": "u", "groupId": 77, "traits": {"name": "Initech"}, "timestamp": TS}
    m = parse_message(raw)
    assert (m.type, m.group_id, m.traits, m.event) == ("group", "77", {"name": "Initech"}, None)


def test_context_timezone():
    assert parse_message(track(context={"timezone": "Europe/Paris"})).timezone == "Europe/Paris"
    assert parse_message(track(context={"timezone": 3})).timezone is None
    assert parse_message(track(context={"ip": "1.2.3.4"})).timezone is None
    assert parse_message(track()).timezone is None


# ------------------------------------------------------------------------------ ids


@pytest.mark.parametrize(
    ("value", "expected"),
    [("u-1", "u-1"), (42, "42"), (42.0, "42"), (1.5, "1.5"), (-3, "-3"), (10**20, str(10**20))],
)
def test_user_id_numbers_become_strings(value, expected):
    assert parse_message(track(userId=value)).user_id == expected


def test_empty_user_id_counts_as_absent():
    m = parse_message(track(userId="", anonymousId="a1"))
    assert (m.user_id, m.anonymous_id) == (None, "a1")


def test_message_id_number_becomes_string():
    assert parse_message(track(messageId=123)).message_id == "123"


def test_missing_message_id_is_deterministic():
    raw = track(messageId=...)
    expected = "auto-" + hashlib.sha256(orjson.dumps(raw, option=orjson.OPT_SORT_KEYS)).hexdigest()[:24]
    m = parse_message(raw)
    assert m.message_id == expected
    assert re.fullmatch(r"auto-[0-9a-f]{24}", m.message_id)
    # key order does not matter, content does
    assert parse_message(dict(reversed(list(raw.items())))).message_id == expected
    assert parse_message(track(messageId=..., event="Other")).message_id != expected
    assert auto_message_id(raw) == expected


@pytest.mark.parametrize("value", [None, ""])
def test_null_or_empty_message_id_gets_an_auto_id(value):
    assert parse_message(track(messageId=value)).message_id.startswith("auto-")


def test_auto_id_of_a_non_dict_mapping():
    raw = track(messageId=...)
    proxied = MappingProxyType({**raw, "properties": MappingProxyType({"a": 1})})
    plain = {**raw, "properties": {"a": 1}}
    assert parse_message(proxied).message_id == parse_message(plain).message_id


# ------------------------------------------------------------------------------ timestamps


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-03-01T12:00:00Z", WHEN),
        ("2026-03-01T12:00:00.250Z", WHEN + timedelta(milliseconds=250)),
        ("2026-03-01T12:00:00.123456789Z", WHEN + timedelta(microseconds=123456)),
        ("2026-03-01T14:00:00+02:00", WHEN),
        ("2026-03-01T07:30:00-04:30", WHEN),
        ("2026-03-01T12:00:00", WHEN),  # naive is UTC
        ("2026-03-01 12:00:00.5", WHEN + timedelta(milliseconds=500)),
        ("2026-03-01T12:00:00+00:00", WHEN),
        ("2026-03-01", WHEN.replace(hour=0)),
    ],
)
def test_timestamps(text, expected):
    ts = parse_message(track(timestamp=text)).timestamp
    assert ts == expected
    assert ts.tzinfo is timezone.utc


def test_datetime_objects_are_accepted():
    paris = timezone(timedelta(hours=1))
    assert parse_message(track(timestamp=datetime(2026, 3, 1, 13, tzinfo=paris))).timestamp == WHEN
    assert parse_message(track(timestamp=datetime(2026, 3, 1, 12))).timestamp.tzinfo is timezone.utc


def test_timestamp_fallbacks_in_order():
    base = track(timestamp=...)
    times = {
        "originalTimestamp": "2026-01-01T00:00:00Z",
        "sentAt": "2026-01-02T00:00:00Z",
        "receivedAt": "2026-01-03T00:00:00Z",
    }
    assert parse_message({**base, **times}).timestamp.day == 1
    assert parse_message({**base, **times, "originalTimestamp": None}).timestamp.day == 2
    assert parse_message({**base, "receivedAt": times["receivedAt"]}).timestamp.day == 3
    assert parse_message({**base, **times, "timestamp": TS}).timestamp == WHEN
    assert parse_message({**base, "timestamp": None, "sentAt": TS}).timestamp == WHEN


def test_bad_timestamp_message_and_where():
    e = error(track(timestamp="2026-13-01"))
    assert (e.field, e.message) == ("timestamp", "not an ISO-8601 time: '2026-13-01'")
    assert str(e) == "timestamp: not an ISO-8601 time: '2026-13-01'"
    e = error(track(timestamp="2026-13-01"), where="events.jsonl:12")
    assert str(e) == "events.jsonl:12: timestamp: not an ISO-8601 time: '2026-13-01'"
    assert e.where == "events.jsonl:12"


def test_bad_fallback_timestamp_names_its_field():
    e = error(track(timestamp=..., originalTimestamp="yesterday", sentAt=TS))
    assert e.field == "originalTimestamp"


def test_missing_timestamp():
    e = error(track(timestamp=...))
    assert e.field == "timestamp" and "missing" in e.message


@pytest.mark.parametrize("text", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_timestamp_out_of_range_in_utc(text):
    assert error(track(timestamp=text)).field == "timestamp"


# ------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (track(type=...), "type"),
        (track(type="click"), "type"),
        (track(type=5), "type"),
        (track(type=["track"]), "type"),
        (track(userId=...), "userId"),
        (track(userId=None, anonymousId=None), "userId"),
        (track(userId=["u"]), "userId"),
        (track(userId=True), "userId"),
        (track(userId=float("nan")), "userId"),
        (track(anonymousId={"a": 1}), "anonymousId"),
        (track(messageId=[1]), "messageId"),
        (track(event=...), "event"),
        (track(event=""), "event"),
        (track(event=5), "event"),
        (track(properties=[1, 2]), "properties"),
        (track(properties="price=5"), "properties"),
        (track(timestamp=1767225600), "timestamp"),
        (track(timestamp="now"), "timestamp"),
        (track(context="web"), "context"),
        ({"type": "identify", "userId": "u", "timestamp": TS, "traits": "vip"}, "traits"),
        ({"type": "identify", "userId": "u", "timestamp": TS, "context": {"traits": [1]}}, "context.traits"),
        ({"type": "page", "userId": "u", "timestamp": TS, "name": 5}, "name"),
        ({"type": "page", "userId": "u", "timestamp": TS, "category": {}}, "category"),
        ({"type": "alias", "userId": "u", "timestamp": TS}, "previousId"),
        ({"type": "alias", "anonymousId": "a", "previousId": "p", "timestamp": TS}, "userId"),
        ({"type": "alias", "userId": "u", "previousId": [], "timestamp": TS}, "previousId"),
        ({"type": "group", "userId": "u", "timestamp": TS}, "groupId"),
        ({"type": "group", "userId": "u", "groupId": "", "timestamp": TS}, "groupId"),
        ({"type": "group", "userId": "u", "groupId": "g", "traits": 1, "timestamp": TS}, "traits"),
    ],
)
def test_each_error_names_its_field(raw, field):
    e = error(raw)
    assert isinstance(e, ValueError)
    assert e.field == field
    assert str(e).startswith(f"{field}: ")


@pytest.mark.parametrize("raw", [None, 5, 1.5, "track", b"{}", [], [{"type": "track"}], (), {1, 2}])
def test_non_objects(raw):
    e = error(raw)
    assert e.field == "message"
    assert "expected a JSON object" in e.message


def test_unserialisable_message_without_id_is_a_message_error():
    assert error(track(messageId=..., properties={"when": object()})).field == "messageId"
    assert error(track(messageId=..., properties={"n": 10**30})).field == "messageId"


def test_fields_a_call_does_not_use_are_not_checked():
    raw = {"type": "identify", "userId": "u", "timestamp": TS, "properties": "junk", "event": 5}
    assert parse_message(raw).type == "identify"


def test_message_error_pickles():
    e = pickle.loads(pickle.dumps(MessageError("userId", "missing", "f:1")))
    assert (e.field, e.message, e.where, str(e)) == ("userId", "missing", "f:1", "f:1: userId: missing")


# ------------------------------------------------------------------------------ the Message class


def test_message_defaults_are_the_shared_empty_mapping():
    a = Message(type="identify", message_id="m", timestamp=WHEN, user_id="u")
    b = Message(type="identify", message_id="n", timestamp=WHEN, user_id="u")
    assert a.properties == {} and a.traits == {}
    assert a.properties is b.properties is a.traits
    with pytest.raises(TypeError):
        a.properties["x"] = 1  # type: ignore[index]


def test_fast_builder_builds_what_the_class_builds():
    values = ("group", "m", WHEN, "u", "a", None, {}, {"t": 1}, None, "g", "UTC")
    built = _build(*values)
    assert type(built) is Message
    assert built == Message(*values)
    with pytest.raises(AttributeError):
        built.user_id = "other"  # type: ignore[misc]


# ------------------------------------------------------------------------------ junk never crashes

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=12,
)
keys = st.sampled_from(
    ["type", "userId", "anonymousId", "messageId", "event", "timestamp", "originalTimestamp",
     "sentAt", "receivedAt", "properties", "traits", "context", "previousId", "groupId", "name",
     "category"]
)
field_values = (
    json_values
    | st.sampled_from(["track", "Page", "screen", "identify", "alias", "group", "", "2026-01-01T00:00:00Z",
                       "2026-01-01T00:00:00+14:00", "0001-01-01T00:00:00+05:00", "u1"])
    | st.datetimes(timezones=st.none() | st.timezones())
    | st.dictionaries(st.sampled_from(["traits", "timezone"]), json_values, max_size=2)
)
messages_ish = st.dictionaries(keys, field_values, max_size=10)


@settings(max_examples=400, deadline=None)
@given(st.one_of(json_values, messages_ish))
def test_junk_only_ever_raises_message_error(raw):
    try:
        m = parse_message(raw, where="junk:1")
    except MessageError as e:
        assert e.field and str(e).startswith("junk:1: ")
        return
    assert m.type in ("track", "identify", "page", "screen", "alias", "group")
    assert isinstance(m.message_id, str) and m.message_id
    assert m.timestamp.tzinfo is timezone.utc
    assert isinstance(m.actor, str) and m.actor
    if m.type in ("track", "page", "screen"):
        assert isinstance(m.event, str) and m.event
