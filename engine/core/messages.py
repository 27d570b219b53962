"""Segment-spec messages, normalised once at the edge so the engine sees one shape.

The daemon's HTTP ingest and the dry-run's log readers both turn raw Segment JSON into a
`Message` with `parse_message`; the engine never looks at raw JSON. Normalising here means:
`page` and `screen` calls become the events "Page Viewed" and "Screen Viewed", timestamps become
timezone-aware UTC datetimes, and a message without a messageId gets a deterministic one derived
from its content (so a replayed log still deduplicates and the dry-run stays byte-identical).

Parsing rules (`parse_message`), following https://segment.com/docs/connections/spec/ (the common
fields and the six calls), with the choices a journey engine has to make written down:

- `type` is required and read case-insensitively ("Track" is "track").
- `userId` or `anonymousId` is required. Ids are strings; JSON numbers are accepted and turned
  into strings as Segment does (12 -> "12", 12.0 -> "12"); booleans, objects and arrays are
  errors. An empty string or null counts as absent.
- alias needs `userId` and `previousId` (the spec lets an anonymous-only alias through; the engine
  stitches `previousId` onto a known user, so it insists on the userId). group needs `groupId`;
  track needs a non-empty string `event`.
- `messageId` is a string (a number is turned into one). When it is missing, null or empty, the
  id is "auto-" + the first 24 hex digits of sha256 over the canonical JSON of the whole raw object
  (orjson, sorted keys): replaying the same log gives the same ids, and two identical lines are
  the same message (deduplicated downstream, as Segment would).
- The event time is `timestamp`, else `originalTimestamp`, else `sentAt`, else `receivedAt` (the
  first one present and not null; a present but malformed one is an error, not passed over).
  ISO-8601 strings as `datetime.fromisoformat` reads them (Z, offsets, fractional seconds, digits
  beyond microseconds truncated); `datetime` objects are accepted from Python callers. The result
  is aware and in UTC (`datetime.timezone.utc` itself, so sorting compares fast); a naive time is
  taken as UTC. No time at all is an error: the dry-run runs on event time.
- The time must be plausible: from `EARLIEST` (2000-01-01) to before `LATEST` (2100-01-01), UTC;
  outside, an error naming the time's field. Year 1 or 9999 is a sender's bug, not an event, and
  would otherwise overflow the engine's date arithmetic. The bounds are the same for every reader
  (the dry-run's logs, the inbox); the daemon's ingest passes `latest=None` and applies its own
  rule instead, relative to the receipt time (engine/daemon/ingest.py: a future time becomes
  receivedAt). `sentAt`, when present, must be a time too (any year: it measures a device's
  clock, which may be far off), else an error naming it.
- page becomes the event "Page Viewed" and screen "Screen Viewed"; the call's `name` (and, for
  page, `category`) is added to the properties unless they already have that key (the raw
  properties are copied for that, never changed). `name`/`category` must be strings.
- `properties` (track, page, screen) and `traits` (identify, group) must be objects when present;
  null is empty. identify takes top-level `traits`, falling back to `context.traits` (analytics
  libraries put them there). Fields a call does not use are not looked at.
- `context`, when present, must be an object; `context.timezone` becomes `Message.timezone` when
  it is a non-empty string.
- Property and trait values are kept as decoded JSON: plain dicts, shared with the caller, which
  must not mutate them afterwards. They nest at most `MAX_DEPTH` (64) levels of objects and arrays,
  the properties (or traits) object itself the first; deeper is an error naming the field
  (`properties`, `traits`, `context.traits`). The engine stores and serialises what it keeps
  (orjson stops at 255 levels, and recursion in Python code has its own limit); 64 leaves room for
  the levels the stores wrap around them and is far beyond any real event. A message without a
  messageId has its id derived from the whole object, so then every field is held to the limit.
- Bad input only ever raises `MessageError` (a ValueError) naming the Segment field at fault.

`parse_message` is on the dry-run's hot path (a million calls per benchmark run): plain dict
access with the common case first, every rare case (numbers as ids, a missing messageId, an
upper-case type, a non-UTC offset) pushed into a helper.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from hashlib import sha256
from types import MappingProxyType, MemberDescriptorType
from typing import Any, Mapping

import orjson

_EMPTY: Mapping[str, Any] = MappingProxyType({})

TYPES = ("track", "identify", "page", "screen", "alias", "group")
MAX_DEPTH = 64  # levels of objects and arrays a message's properties or traits may nest
EARLIEST = datetime(2000, 1, 1, tzinfo=timezone.utc)  # the plausible range of an event's time
LATEST = datetime(2100, 1, 1, tzinfo=timezone.utc)  # (exclusive)
PAGE_EVENT = "Page Viewed"
SCREEN_EVENT = "Screen Viewed"


@dataclass(frozen=True, slots=True)
class Message:
    """One Segment call, normalised.

    - `type`: track | identify | page | screen | alias | group.
    - `event`: the event name the journeys see: a track's `event`, "Page Viewed" for page,
      "Screen Viewed" for screen; None for identify, alias and group.
    - `properties`: a track's, page's or screen's properties (page/screen `name` is added as the
      property `name` when the properties have none).
    - `traits`: identify's traits; for group, the group's traits.
    - `previous_id`: alias's previousId. `group_id`: group's groupId.
    - `timezone`: `context.timezone` when the sender gave one (an IANA name, not validated here).
    """

    type: str
    message_id: str
    timestamp: datetime
    user_id: str | None = None
    anonymous_id: str | None = None
    event: str | None = None
    # default_factory, not default: before Python 3.12 a mappingproxy is unhashable, and
    # dataclasses refuses unhashable defaults as "mutable". The default is still the one shared
    # empty mapping.
    properties: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    traits: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    previous_id: str | None = None
    group_id: str | None = None
    timezone: str | None = None

    @property
    def actor(self) -> str:
        """The id the message is about before identity stitching: userId, else anonymousId."""
        return self.user_id if self.user_id is not None else self.anonymous_id  # type: ignore[return-value]


_UTC = timezone.utc
_TYPE_SET = frozenset(TYPES)
_FROMISO = datetime.fromisoformat
_TIME_FALLBACKS = ("originalTimestamp", "sentAt", "receivedAt")


# The fields in the order `_build` takes them.
_BUILD_ORDER = (
    "type", "message_id", "timestamp", "user_id", "anonymous_id", "event",
    "properties", "traits", "previous_id", "group_id", "timezone",
)  # fmt: skip


def _builder() -> Any:
    """A positional constructor for `Message`, 2.5x faster than the dataclass's own.

    A frozen dataclass's `__init__` sets each field through `object.__setattr__`; setting the
    slots through their descriptors gives the same object for less than half the time, which
    is a third of `parse_message`. Should `Message` ever gain a field, lose its slots or get a
    `__post_init__`, this falls back to calling the class, so it can never build something the
    class would not.
    """
    names = tuple(f.name for f in dataclasses.fields(Message))
    slotted = all(isinstance(Message.__dict__.get(name), MemberDescriptorType) for name in names)
    if names != _BUILD_ORDER or not slotted or hasattr(Message, "__post_init__"):
        order = _BUILD_ORDER

        def build_slow(*values: Any) -> Message:
            return Message(**dict(zip(order, values)))

        return build_slow

    new = Message.__new__
    (s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10) = (
        Message.__dict__[name].__set__ for name in names
    )

    def build(type, message_id, timestamp, user_id, anonymous_id, event,
              properties, traits, previous_id, group_id, timezone):  # fmt: skip
        m = new(Message)
        s0(m, type)
        s1(m, message_id)
        s2(m, timestamp)
        s3(m, user_id)
        s4(m, anonymous_id)
        s5(m, event)
        s6(m, properties)
        s7(m, traits)
        s8(m, previous_id)
        s9(m, group_id)
        s10(m, timezone)
        return m

    return build


_build = _builder()


class MessageError(ValueError):
    """A raw message that cannot become a `Message`.

    `field` is the Segment field at fault ("userId", "timestamp", "properties", "type", ...; "message"
    when the whole thing is not an object), `message` says what is wrong with it, and `where`
    (e.g. "events.jsonl:12") is the location the caller gave, if any.
    """

    def __init__(self, field: str, message: str, where: str = "") -> None:
        super().__init__(field, message, where)
        self.field = field
        self.message = message
        self.where = where

    def __str__(self) -> str:
        text = f"{self.field}: {self.message}"
        return f"{self.where}: {text}" if self.where else text


def _kind(value: Any) -> str:
    """The JSON-ish name of a value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "an array"
    return type(value).__name__


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _type_of(value: Any, where: str) -> str:
    if value is None:
        raise MessageError("type", "missing: expected one of " + ", ".join(TYPES), where)
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in _TYPE_SET:
            return lowered
        raise MessageError(
            "type", f"unknown type {_short(value)}: expected one of " + ", ".join(TYPES), where
        )
    raise MessageError("type", f"expected a string, got {_kind(value)}", where)


def _id_of(value: Any, field: str, where: str) -> str | None:
    """An id field that is not a plain str: None, a number, a str subclass, or junk."""
    if value is None:
        return None
    if isinstance(value, str):
        return str(value) or None
    if isinstance(value, bool):
        raise MessageError(field, f"expected a string, got {_kind(value)}", where)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise MessageError(field, f"expected a string, got the number {value!r}", where)
        return str(int(value)) if value.is_integer() else repr(value)
    raise MessageError(field, f"expected a string, got {_kind(value)}", where)


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value, key=repr)
    raise TypeError(f"not JSON: {type(value).__name__}")


def auto_message_id(raw: Mapping[str, Any]) -> str:
    """The deterministic id of a message that came without a messageId.

    "auto-" + the first 24 hex digits of sha256 over the raw object's canonical JSON (orjson with
    sorted keys). Raises TypeError when the object is not JSON (orjson's JSONEncodeError).
    """
    data = orjson.dumps(raw, default=_jsonable, option=orjson.OPT_SORT_KEYS)
    return "auto-" + sha256(data).hexdigest()[:24]


def _message_id_of(raw: Mapping[str, Any], value: Any, where: str) -> str:
    mid = _id_of(value, "messageId", where)
    if mid:
        return mid
    for key, item in raw.items():  # the id is derived from every field: each is held to the limit
        if isinstance(item, (Mapping, list, tuple)) and _deeper_than(item, MAX_DEPTH):
            raise _too_deep(str(key), where)
    try:
        return auto_message_id(raw)
    except (TypeError, ValueError, RecursionError) as exc:
        raise MessageError(
            "messageId", f"missing, and the message is not JSON to derive one from ({exc})", where
        ) from None


def _time_of(value: Any, key: str, where: str) -> datetime:
    """A time that is not the common case: a datetime object, junk, or a string with an offset."""
    if isinstance(value, str):
        try:
            dt = _FROMISO(value)
        except ValueError:
            raise MessageError(key, f"not an ISO-8601 time: {_short(value)}", where) from None
    elif isinstance(value, datetime):
        dt = value
    else:
        raise MessageError(key, f"expected an ISO-8601 string, got {_kind(value)}", where)
    return _in_utc(dt, value, key, where)


def _in_utc(dt: datetime, shown: Any, key: str, where: str) -> datetime:
    tz = dt.tzinfo
    if tz is _UTC:
        return dt
    try:
        if tz is None or dt.utcoffset() is None:
            return dt.replace(tzinfo=_UTC)
        return dt.astimezone(_UTC)
    except (OverflowError, ValueError):
        raise MessageError(key, f"out of range in UTC: {_short(shown)}", where) from None


def _object_of(value: Any, field: str, where: str) -> Mapping[str, Any]:
    if value is None:
        return _EMPTY
    if type(value) is dict or isinstance(value, Mapping):
        return value
    raise MessageError(field, f"expected an object, got {_kind(value)}", where)


def _deeper_than(value: Any, levels: int) -> bool:
    """Whether `value`, an object or an array (itself level 1), nests objects and arrays more than
    `levels` levels deep. Stops at `levels`, so a cycle (from a Python caller) is just too deep."""
    if levels < 1:
        return True
    t = type(value)
    items = value.values() if t is dict else value if t is list else (
        value.values() if isinstance(value, Mapping) else value)
    for item in items:
        t = type(item)
        if t is str or t is int or t is float or t is bool or item is None:
            continue
        if (t is dict or t is list or isinstance(item, (Mapping, list, tuple))) and _deeper_than(item, levels - 1):
            return True
    return False


def _too_deep(field: str, where: str) -> MessageError:
    return MessageError(field, f"nested deeper than {MAX_DEPTH} levels of objects and arrays", where)


def _kept(value: Mapping[str, Any], field: str, where: str) -> Mapping[str, Any]:
    """Properties or traits the message keeps, held to `MAX_DEPTH`."""
    if value and _deeper_than(value, MAX_DEPTH):
        raise _too_deep(field, where)
    return value


def _shown(value: Any) -> str:
    return value.isoformat() if isinstance(value, datetime) else _short(value)


def _out_of_range(
    timestamp: datetime, value: Any, key: str, where: str, earliest: datetime | None, latest: datetime | None
) -> MessageError:
    """The error for a time outside [earliest, latest)."""
    if earliest is not None and timestamp < earliest:
        said = f"is before {earliest:%Y-%m-%d}"
    else:
        said = f"is {latest:%Y-%m-%d} or later"
    return MessageError(key, f"{_shown(value)} {said}: not a plausible time for an event", where)


def time_field(value: Any, field: str, where: str = "") -> datetime:
    """A Segment time field's value (an ISO-8601 string, or a datetime from a Python caller) as an
    aware UTC datetime, any year; raises `MessageError` naming `field` for anything else."""
    return _time_of(value, field, where)


def _required_id(raw: Mapping[str, Any], field: str, call: str, where: str) -> str:
    value = raw.get(field)
    if type(value) is not str or not value:
        value = _id_of(value, field, where)
        if not value:
            raise MessageError(field, f"missing: a {call} call needs a {field}", where)
    return value


def _with_names(
    props: Mapping[str, Any], raw: Mapping[str, Any], keys: tuple[str, ...], where: str
) -> Mapping[str, Any]:
    added: dict[str, Any] | None = None
    for key in keys:
        value = raw.get(key)
        if value is None or key in props:
            continue
        if not isinstance(value, str):
            raise MessageError(key, f"expected a string, got {_kind(value)}", where)
        if added is None:
            added = dict(props)
        added[key] = value
    return props if added is None else added


def parse_message(
    raw: Mapping[str, Any],
    *,
    where: str = "",
    earliest: datetime | None = EARLIEST,
    latest: datetime | None = LATEST,
) -> Message:
    """Turn one raw Segment message (decoded JSON) into a `Message`.

    Raises `MessageError` (and nothing else) for anything that is not a usable Segment message;
    `where` (e.g. "events.jsonl:12") is prefixed to the error's text. The rules are in the
    module's docstring. The event's time must be in [earliest, latest) (None: no bound that side).
    """
    if type(raw) is not dict and not isinstance(raw, Mapping):
        raise MessageError("message", f"expected a JSON object, got {_kind(raw)}", where)
    get = raw.get

    kind = get("type")
    if type(kind) is not str or kind not in _TYPE_SET:
        kind = _type_of(kind, where)

    user_id = get("userId")
    if type(user_id) is not str or not user_id:
        user_id = _id_of(user_id, "userId", where)
    anonymous_id = get("anonymousId")
    if type(anonymous_id) is not str or not anonymous_id:
        anonymous_id = _id_of(anonymous_id, "anonymousId", where)
    if user_id is None and anonymous_id is None:
        raise MessageError("userId", "missing: a message needs a userId or an anonymousId", where)

    message_id = get("messageId")
    if type(message_id) is not str or not message_id:
        message_id = _message_id_of(raw, message_id, where)

    stamp = get("timestamp")
    time_key = "timestamp"
    if stamp is None:
        for time_key in _TIME_FALLBACKS:
            stamp = get(time_key)
            if stamp is not None:
                break
        else:
            raise MessageError(
                "timestamp",
                "missing: none of timestamp, originalTimestamp, sentAt, receivedAt is set",
                where,
            )
    if type(stamp) is str:
        try:
            timestamp = _FROMISO(stamp)
        except ValueError:
            raise MessageError(time_key, f"not an ISO-8601 time: {_short(stamp)}", where) from None
        if timestamp.tzinfo is not _UTC:
            timestamp = _in_utc(timestamp, stamp, time_key, where)
    else:
        timestamp = _time_of(stamp, time_key, where)
    if (earliest is not None and timestamp < earliest) or (latest is not None and timestamp >= latest):
        raise _out_of_range(timestamp, stamp, time_key, where, earliest, latest)
    sent = get("sentAt")
    if sent is not None and time_key != "sentAt":  # not the time: still a time, or the sender is broken
        time_field(sent, "sentAt", where)

    context = get("context")
    tz = None
    if context is not None:
        if type(context) is not dict and not isinstance(context, Mapping):
            raise MessageError("context", f"expected an object, got {_kind(context)}", where)
        tz = context.get("timezone")
        if type(tz) is not str or not tz:
            tz = None

    if kind == "track":
        event = get("event")
        if type(event) is not str or not event:
            if event is None or event == "":
                raise MessageError("event", "missing: a track call needs an event name", where)
            if not isinstance(event, str):
                raise MessageError("event", f"expected a string, got {_kind(event)}", where)
            event = str(event)
        properties = get("properties")
        if type(properties) is not dict:
            properties = _object_of(properties, "properties", where)
        if properties:
            _kept(properties, "properties", where)
        return _build(
            kind,  # type
            message_id,  # message_id
            timestamp,  # timestamp
            user_id,  # user_id
            anonymous_id,  # anonymous_id
            event,  # event
            properties,  # properties
            _EMPTY,  # traits
            None,  # previous_id
            None,  # group_id
            tz,  # timezone
        )

    if kind == "identify":
        traits = get("traits")
        if traits is None and context is not None:
            traits = _kept(_object_of(context.get("traits"), "context.traits", where), "context.traits", where)
        else:
            if type(traits) is not dict:
                traits = _object_of(traits, "traits", where)
            if traits:
                _kept(traits, "traits", where)
        return _build(
            kind,  # type
            message_id,  # message_id
            timestamp,  # timestamp
            user_id,  # user_id
            anonymous_id,  # anonymous_id
            None,  # event
            _EMPTY,  # properties
            traits,  # traits
            None,  # previous_id
            None,  # group_id
            tz,  # timezone
        )

    if kind == "page" or kind == "screen":
        properties = get("properties")
        if type(properties) is not dict:
            properties = _object_of(properties, "properties", where)
        if properties:
            _kept(properties, "properties", where)
        if kind == "page":
            event = PAGE_EVENT
            if "name" in raw or "category" in raw:
                properties = _with_names(properties, raw, ("name", "category"), where)
        else:
            event = SCREEN_EVENT
            if "name" in raw:
                properties = _with_names(properties, raw, ("name",), where)
        return _build(
            kind,  # type
            message_id,  # message_id
            timestamp,  # timestamp
            user_id,  # user_id
            anonymous_id,  # anonymous_id
            event,  # event
            properties,  # properties
            _EMPTY,  # traits
            None,  # previous_id
            None,  # group_id
            tz,  # timezone
        )

    if kind == "alias":
        if user_id is None:
            raise MessageError("userId", "missing: an alias call needs a userId", where)
        return _build(
            kind,  # type
            message_id,  # message_id
            timestamp,  # timestamp
            user_id,  # user_id
            anonymous_id,  # anonymous_id
            None,  # event
            _EMPTY,  # properties
            _EMPTY,  # traits
            _required_id(raw, "previousId", "alias", where),  # previous_id
            None,  # group_id
            tz,  # timezone
        )

    # group
    group_id = _required_id(raw, "groupId", "group", where)
    traits = _kept(_object_of(get("traits"), "traits", where), "traits", where)
    return _build(
        kind,  # type
        message_id,  # message_id
        timestamp,  # timestamp
        user_id,  # user_id
        anonymous_id,  # anonymous_id
        None,  # event
        _EMPTY,  # properties
        traits,  # traits
        None,  # previous_id
        group_id,  # group_id
        tz,  # timezone
    )
