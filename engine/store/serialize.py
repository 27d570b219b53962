"""`UserState` and `Action` to and from bytes: what a persistent store writes.

The daemon serialises one state per event and per timer fire, so the format is MessagePack
(ormsgpack, orjson's sibling: a third of orjson's time to encode, about the same to decode, and
29 % fewer bytes than the JSON it replaced on the shop's users: no quotes, binary integers for
the many timestamps) laid out for a decoder that knows where every datetime is (no tagging, no
walking of arbitrary values):

    {"v": 4,                                   format version
     "u": user_id,
     "t": {traits},                            any JSON values, written and read as they are
     "h": {event name: [[times...], [properties...]]},   history, one entry per name, oldest first
     "i": {journey: [version, entry, origin, entered_at, path, wait, since, wake,
                     {alias: [event, timestamp, properties]}, [[path, arm]...], exiting,
                     start, current]},      start: [event, timestamp, properties], or the `as` name
                                            bound to it, or null; current: the same (both left out
                                            when null; a run stored before they existed has neither)
     "e": {journey: [count, latest entry time]},
     "g": [[journey, version, entry, origin, goal, entered_at, deadline, [[path, arm]...], named]...],
     "s": [[time, channel, journey]...],
     "a": [audiences...], "seg": {segment: bool}, "al": [aliases...],
     "f": [features...]}                       the models' timelines (engine.models.features.to_plain)

Empty fields are left out, and so is an `origin` equal to the user id (null). Datetimes are
integers: microseconds since 1970-01-01 UTC, exact both ways for the aware UTC datetimes the
engine uses throughout (read back as `timezone.utc` datetimes). Version 3, the same layout as
JSON text, is still read (a store written by an earlier daemon); every save writes version 4.

What comes back, so that `state_from_bytes(state_to_bytes(s))` equals `s` field by field:
- `traits`, `instances`, `entries`, `segments` and each instance's `named` are read-only
  `MappingProxyType`s (the empty ones the shared empty mapping); `goals`, `sends`, `arms` and
  `entries` values are tuples; `audiences` and `aliases` frozensets (written sorted, so equal
  states give equal bytes).
- Event properties and trait values are the decoded JSON (dicts, lists, str, int, float, bool,
  None), as `engine.core.messages.parse_message` hands them to the engine in the first place. The
  engine stores trait values through `core.plain`, so they are JSON already.
- The history comes back as a `HistoryIndex` with the same names in the same order and the same
  events; the named events of instances are equal to, but no longer the same objects as, the ones
  in the history (nothing in the engine relies on that identity across steps).

Limits: integers beyond 64 bits raise `TypeError` rather than being written wrong. Neither that
nor a value JSON cannot hold can come from a Segment message decoded by orjson.
"""

from __future__ import annotations

from collections.abc import Mapping as _AbcMapping
from datetime import datetime, timedelta, timezone
from itertools import repeat
from types import MappingProxyType
from typing import Any, Mapping

import orjson
import ormsgpack

from journeys.evaluation import Event, HistoryIndex

from ..core.effects import Action
from ..core.state import Instance, PendingGoal, SendRecord, UserState
from ..models.features import from_plain as features_from_plain
from ..models.features import to_plain as features_to_plain

FORMAT_VERSION = 4  # 2: pending goals keep the run's named events; 3: times as integers, origin elided;
#                    4: MessagePack instead of JSON text
_JSON_VERSION = 3  # the last version written as JSON text, still read

_EMPTY: Mapping[str, Any] = MappingProxyType({})
_UTC = timezone.utc
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_MICROSECOND = timedelta(microseconds=1)


def _at(us: int) -> datetime:
    """A state's time back from its microseconds since 1970: an aware UTC datetime, exactly."""
    return _EPOCH + timedelta(microseconds=us)
_fromiso = datetime.fromisoformat
_proxy = MappingProxyType
_dumps = orjson.dumps
_loads = orjson.loads
_pack = ormsgpack.packb
_unpack = ormsgpack.unpackb
_PASSTHROUGH = ormsgpack.OPT_PASSTHROUGH_DATETIME


def _default(obj: Any) -> Any:
    """What the encoders do not write by themselves: read-only mappings, sets, datetimes, Events."""
    if type(obj) is MappingProxyType or isinstance(obj, _AbcMapping):  # typing.Mapping's check is slow
        return dict(obj)
    if isinstance(obj, (frozenset, set)):
        return sorted(obj)
    if isinstance(obj, datetime):  # states only (passed through): microseconds since 1970 UTC
        return (obj - _EPOCH) // _MICROSECOND
    if isinstance(obj, Event):
        return [obj.event, obj.timestamp, obj.properties]
    raise TypeError(f"cannot store a {type(obj).__name__} in a user state: {obj!r}")


# ----------------------------------------------------------------------------------- encoding


def _event(ev: Event) -> list[Any]:
    return [ev.event, ev.timestamp, ev.properties]


def _named(named: Mapping[str, Event]) -> dict[str, list[Any]] | None:
    return {k: [e.event, e.timestamp, e.properties] for k, e in named.items()} if named else None


def _instance(i: Instance, uid: str) -> list[Any]:
    out = [i.version, i.entry, None if i.origin == uid else i.origin, i.entered_at, i.path, i.wait,
           i.since, i.wake, _named(i.named), i.arms or None, i.exiting]  # the journey is the key
    if i.start is not None or i.current is not None:
        out.append(_started(i))
        if i.current is not None:
            out.append(_event(i.current))
    return out


def _started(i: Instance) -> Any:
    """The starting event, or the name it is bound to with `as` (kept once, not twice)."""
    for alias, ev in i.named.items():
        if ev is i.start or ev == i.start:
            return alias
    return None if i.start is None else _event(i.start)


def state_to_bytes(state: UserState) -> bytes:
    """The state as MessagePack bytes (see the module docstring for the layout)."""
    d: dict[str, Any] = {"v": FORMAT_VERSION, "u": state.user_id}
    if state.traits:
        d["t"] = state.traits
    by_name = state.history.by_name
    if by_name:
        d["h"] = {name: (times, [e.properties for e in evs]) for name, (evs, times) in by_name.items()}
    if state.instances:
        d["i"] = {k: _instance(i, state.user_id) for k, i in state.instances.items()}
    if state.entries:
        d["e"] = state.entries
    if state.goals:
        d["g"] = [(g.journey, g.version, g.entry, None if g.origin == state.user_id else g.origin, g.goal,
                   g.entered_at, g.deadline, g.arms, _named(g.named)) for g in state.goals]
    if state.sends:
        d["s"] = [(r.time, r.channel, r.journey) for r in state.sends]
    if state.audiences:
        d["a"] = sorted(state.audiences)
    if state.segments:
        d["seg"] = state.segments
    if state.aliases:
        d["al"] = sorted(state.aliases)
    if state.features is not None:
        d["f"] = features_to_plain(state.features)
    return _pack(d, default=_default, option=_PASSTHROUGH)


# ----------------------------------------------------------------------------------- decoding


def _time(s: str | None) -> datetime | None:
    return None if s is None else _fromiso(s)


def _arms(raw: list[list[str]] | None) -> tuple[tuple[str, str], ...]:
    return tuple(tuple(a) for a in raw) if raw else ()  # type: ignore[misc]


def _instance_from(journey: str, raw: list[Any], uid: str) -> Instance:
    (version, entry, origin, entered_at, path, wait, since, wake, named, arms, exiting, *events) = raw
    bound = _named_from(named)
    start = current = None
    if events:  # a run of an earlier format has neither (its actions carry no starting event)
        first = events[0]
        start = bound[first] if isinstance(first, str) else None if first is None else Event(
            first[0], _at(first[1]), first[2])
        if len(events) > 1:
            current = Event(events[1][0], _at(events[1][1]), events[1][2])
    return Instance(
        journey, version, entry, uid if origin is None else origin, _at(entered_at), path, wait,
        None if since is None else _at(since), None if wake is None else _at(wake),
        bound, _arms(arms), exiting, start, current)


def _named_from(named: dict[str, list[Any]] | None) -> Mapping[str, Event]:
    return _proxy({k: Event(n, _at(t), p) for k, (n, t, p) in named.items()}) if named else _EMPTY


def _history(raw: dict[str, list[Any]]) -> HistoryIndex:
    by_name: dict[str, tuple[tuple[Event, ...], tuple[datetime, ...]]] = {}
    for name, (stamps, props) in raw.items():
        times = tuple(map(_at, stamps))
        by_name[name] = (tuple(map(Event, repeat(name), times, props)), times)
    return HistoryIndex._of(by_name)  # type: ignore[arg-type]


def state_from_bytes(data: bytes | str) -> UserState:
    """The state `state_to_bytes` wrote (or, as JSON text, an earlier daemon)."""
    if data[:1] in (b"{", "{"):  # JSON text: MessagePack never starts a map with 0x7b
        d, version = _loads(data), _JSON_VERSION
    else:
        d, version = _unpack(data), FORMAT_VERSION
    if type(d) is not dict or d.get("v") != version:
        raise ValueError(f"user state format {d.get('v') if type(d) is dict else d!r} is not {version}")
    get = d.get
    raw = get("t")
    traits = _proxy(raw) if raw else _EMPTY
    raw = get("h")
    history = _history(raw) if raw else HistoryIndex()
    raw = get("i")
    uid = d["u"]
    instances = _proxy({k: _instance_from(k, v, uid) for k, v in raw.items()}) if raw else _EMPTY
    raw = get("e")
    entries = _proxy({k: (n, _at(t)) for k, (n, t) in raw.items()}) if raw else _EMPTY
    raw = get("g")
    goals = tuple(PendingGoal(j, v, n, uid if o is None else o, g, _at(a), _at(b), _arms(arms), _named_from(named))
                  for j, v, n, o, g, a, b, arms, named in raw) if raw else ()
    raw = get("s")
    sends = tuple(SendRecord(_at(t), c, j) for t, c, j in raw) if raw else ()
    raw = get("a")
    audiences = frozenset(raw) if raw else frozenset()
    raw = get("seg")
    segments = _proxy(raw) if raw else _EMPTY
    raw = get("al")
    aliases = frozenset(raw) if raw else frozenset()
    raw = get("f")
    features = features_from_plain(raw) if raw else None
    return UserState(d["u"], traits, history, instances, entries, goals, sends, audiences, segments, aliases,
                     features)


# ----------------------------------------------------------------------------------- actions


def utc_text(t: datetime) -> str:
    """Fixed-width ISO-8601 UTC, `2026-03-02T10:00:00.000000Z`: sorts as text the way the times
    sort (years 1000-9999), so SQL can index and compare it."""
    if t.tzinfo is not _UTC:
        t = t.astimezone(_UTC)
    return t.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"  # C, not seven formats


def action_to_row(action: Action) -> dict[str, Any]:
    """One row of the action log: the columns admin queries filter on, and the whole action as
    JSON (`Action.to_json`, so the log reads like the dry-run's reports)."""
    return {
        "id": action.id, "time": utc_text(action.time), "user": action.user, "journey": action.journey,
        "version": action.version, "path": action.path, "kind": action.kind, "target": action.target,
        "outcome": action.outcome, "reason": action.reason, "rule": action.rule,
        "json": _dumps(action.to_json(), default=_default).decode(),
    }


def action_from_row(row: Mapping[str, Any]) -> Action:
    """The Action of a row `action_to_row` made. `data` and `named` come back as decoded JSON
    (a tuple in `data` comes back as a list)."""
    d = _loads(row["json"])
    return Action(
        id=d["id"], time=_fromiso(d["time"]), user=d["user"], journey=d["journey"], version=d["version"],
        entry=d["entry"], path=d["path"], kind=d["kind"], channel=d["channel"], target=d["target"],
        outcome=d["outcome"], reason=d["reason"], rule=d["rule"], until=_time(d["until"]), via=d["via"],
        data=d["data"], named=d["named"], event=d.get("event"), current_event=d.get("current_event"),
        predictions=d.get("predictions"))
