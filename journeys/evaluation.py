"""The evaluation context: everything a compiled condition may read about one user at one moment.

Compiled expressions (see `journeys.expr`) only ever talk to the small `EvalContext` protocol, and
`Context` is its one implementation, built from plain data. The engine's daemon, its dry-run and
the tests all construct this same class, so the history functions (`count`, `happened`, `sum`,
`avg`, `last`, `days_since`) have exactly one implementation: `journeys.expr` on top of
`Context.events`.

History is indexed by event name once, when the context is built: a condition that counts
"Product Viewed" over 7 days is a dictionary lookup and two binary searches, however long the
user's history is. `Context.replace` derives a context for another moment or another current
event while sharing that index.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from datetime import datetime, timezone as dt_timezone, tzinfo
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence, Union
from zoneinfo import ZoneInfo

from .fast_init import fast_init

_EMPTY: Mapping[str, Any] = MappingProxyType({})


@fast_init
@dataclass(frozen=True, slots=True)
class Event:
    """One event of a user's history: its name, its (timezone-aware) time and its properties.

    Events are values of the language too: a name bound with `as`, or `last(event "X")`, is an
    Event, and `.name` on it reads a property (or one of the special fields, see `journeys.expr`).
    """

    event: str
    timestamp: datetime
    properties: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, value: "Event | Mapping[str, Any]") -> "Event":
        """An Event from an Event or from a dict `{"event", "timestamp", "properties"}`."""
        if isinstance(value, Event):
            value._check()
            return value
        try:
            name, ts = value["event"], value["timestamp"]
        except (KeyError, TypeError):
            raise ValueError(f"an event needs 'event' and 'timestamp': {value!r}") from None
        props = value.get("properties") or {}
        ev = cls(str(name), ts, props)
        ev._check()
        return ev

    def _check(self) -> None:
        if not isinstance(self.timestamp, datetime) or self.timestamp.utcoffset() is None:
            raise ValueError(f"event {self.event!r} needs a timezone-aware datetime, got {self.timestamp!r}")

    def as_dict(self) -> dict[str, Any]:
        return {"event": self.event, "timestamp": self.timestamp, "properties": dict(self.properties)}


EventLike = Union[Event, Mapping[str, Any]]
SegmentOracle = Callable[[str], bool]
# `predict(model, horizon_seconds)`: the user's score from a trained model at the context's moment,
# a probability in [0, 1]; None when the engine has none (no model trained yet, predictions off).
Predictor = Callable[[str, int], "float | None"]


class EvalContext(Protocol):
    """What compiled expressions read. Keep it small: every method is a hot path."""

    now: datetime  # aware; history windows end here
    user_id: str | None
    timezone: tzinfo  # the user's timezone: local_hour, local_weekday
    event: Event | None  # the event being processed, if any

    def trait(self, name: str) -> Any: ...

    def named(self, alias: str) -> Event | None: ...

    def in_segment(self, name: str) -> bool: ...

    def predict(self, model: str, horizon_seconds: int) -> float | None:
        """`predicted MODEL in HORIZON`: a probability in [0, 1], or None when there is none."""
        ...

    def events(self, name: str, since: datetime | None = None) -> Sequence[Event]:
        """The user's events of that name with `since < timestamp <= now`, oldest first."""
        ...


class HistoryIndex:
    """History by event name: events sorted by time (stable) and their timestamps for bisecting.

    Immutable once built: the engine keeps one per user in its state and derives the next one with
    `with_event`, which shares every other name's lists, so recording an event costs a copy of one
    name's (retention-bounded) list, not a rebuild of the index."""

    __slots__ = ("by_name",)

    def __init__(self, history: Iterable[EventLike] = ()):
        groups: dict[str, list[Event]] = {}
        for raw in history:
            ev = Event.of(raw)
            groups.setdefault(ev.event, []).append(ev)
        self.by_name: dict[str, tuple[Sequence[Event], Sequence[datetime]]] = {}
        for name, evs in groups.items():
            evs.sort(key=lambda e: e.timestamp)  # stable: equal times keep the given order
            self.by_name[name] = (tuple(evs), tuple(e.timestamp for e in evs))

    @classmethod
    def _of(cls, by_name: dict[str, tuple[Sequence[Event], Sequence[datetime]]]) -> "HistoryIndex":
        index = cls.__new__(cls)
        index.by_name = by_name
        return index

    def with_event(self, ev: Event, keep_since: datetime | None = None, keep_latest: bool = False
                   ) -> "HistoryIndex":
        """This history plus `ev` (after any events with the same time), dropping events of its
        name older than `keep_since` (None: keep all) except, with `keep_latest`, the newest."""
        evs, times = self.by_name.get(ev.event, ((), ()))
        at = bisect_right(times, ev.timestamp)
        evs = (*evs[:at], ev, *evs[at:])
        times = (*times[:at], ev.timestamp, *times[at:])
        if keep_since is not None:
            cut = bisect_left(times, keep_since)
            if keep_latest:
                cut = min(cut, len(evs) - 1)
            if cut > 0:
                evs, times = evs[cut:], times[cut:]
        by_name = dict(self.by_name)
        by_name[ev.event] = (evs, times)
        return HistoryIndex._of(by_name)

    def merged(self, other: "HistoryIndex") -> "HistoryIndex":
        """Both histories as one (identity stitching); equal times keep this one's events first."""
        by_name = dict(self.by_name)
        for name, (evs, _) in other.by_name.items():
            mine = by_name.get(name, ((), ()))[0]
            joined = sorted((*mine, *evs), key=lambda e: e.timestamp)
            by_name[name] = (tuple(joined), tuple(e.timestamp for e in joined))
        return HistoryIndex._of(by_name)

    def events(self) -> Iterable[Event]:
        for evs, _ in self.by_name.values():
            yield from evs

    def __len__(self) -> int:
        return sum(len(evs) for evs, _ in self.by_name.values())

    def __eq__(self, other: object) -> bool:
        """Two histories are equal when they hold the same events per name (a state read back from
        a store equals the one written)."""
        if not isinstance(other, HistoryIndex):
            return NotImplemented
        mine = {k: v[0] for k, v in self.by_name.items() if v[0]}
        theirs = {k: v[0] for k, v in other.by_name.items() if v[0]}
        return mine == theirs

    __hash__ = None  # type: ignore[assignment]  # equal by content, and not immutable in type


_Index = HistoryIndex  # the name earlier code and tests used


class Context:
    """One user at one moment, from plain data; the one implementation of `EvalContext`.

    - `now`: aware datetime; every history window ends at it (inclusive), later events are ignored.
    - `user_id`: what `user.id` reads.
    - `traits`: the profile; `user.X` reads `traits["X"]` (missing → None).
    - `timezone`: the user's zone (a tzinfo or an IANA name; None → UTC). The engine resolves it
      (the user's `timezone` trait, else the policy's default) before building the context.
    - `history`: the user's events, as `Event`s or dicts `{"event": name, "timestamp": aware
      datetime, "properties": {...}}`, in any order (they are sorted by time, stably, once). Include
      the event being processed if it already counts as history for the engine.
    - `named`: events bound with `as` in the entry (`{"viewed": event}`).
    - `event`: the event being processed, if any.
    - `segments`: the segment oracle: a callable `name -> bool`, or a mapping of segment name to a
      compiled segment (anything with `.predicate`) or to a callable `f(ctx)`. With a mapping the
      context evaluates segments itself, memoised per context, and a segment that (through a cycle)
      asks for itself while being evaluated is not a member.
    - `predict`: what `predicted MODEL in HORIZON` reads, `predict(model, horizon_seconds)` → a
      probability in [0, 1] or None (the engine's scorer for this user at `now`; it must never
      look past `now`). Without one, every prediction is None (null), as for a project whose
      models have not been trained yet.

    A Context is a snapshot: build a new one (cheaply, with `replace`) when the moment, the traits or
    the current event change.
    """

    __slots__ = ("now", "user_id", "timezone", "event", "_traits", "_named", "_index", "_segments",
                 "_memo", "_active", "_predict")

    def __init__(
        self,
        *,
        now: datetime,
        user_id: str | None = None,
        traits: Mapping[str, Any] | None = None,
        timezone: tzinfo | str | None = None,
        history: Iterable[EventLike] = (),
        named: Mapping[str, EventLike] | None = None,
        event: EventLike | None = None,
        segments: SegmentOracle | Mapping[str, Any] | None = None,
        predict: Predictor | None = None,
    ):
        if not isinstance(now, datetime) or now.utcoffset() is None:
            raise ValueError(f"`now` must be a timezone-aware datetime, got {now!r}")
        self.now = now
        self.user_id = user_id
        self.timezone = _zone(timezone)
        self.event = Event.of(event) if event is not None else None
        self._traits = traits if traits is not None else _EMPTY
        self._named = {k: Event.of(v) for k, v in (named or {}).items() if v is not None}
        self._index = history if isinstance(history, HistoryIndex) else HistoryIndex(history)
        self._segments = segments
        self._memo: dict[str, bool] = {}
        self._active: set[str] = set()
        self._predict = predict

    def replace(self, **changes: Any) -> "Context":
        """A context for another moment, event or profile that shares this one's history index."""
        args = {
            "now": self.now, "user_id": self.user_id, "traits": self._traits, "timezone": self.timezone,
            "history": self._index, "named": self._named, "event": self.event, "segments": self._segments,
            "predict": self._predict,
        }
        args.update(changes)
        return Context(**args)

    def with_event(self, named: Mapping[str, Event] | None, event: Event | None) -> "Context":
        """The same user at the same moment, for another journey run's named events and another
        current event. The engine's hot path: it takes `Event`s it built itself, so nothing is
        validated or copied again, and segment memberships already worked out are shared (they
        depend on neither)."""
        ctx = Context.__new__(Context)
        ctx.now, ctx.user_id, ctx.timezone = self.now, self.user_id, self.timezone
        ctx.event = event
        ctx._traits, ctx._index, ctx._segments = self._traits, self._index, self._segments
        ctx._named = named if named is not None else _EMPTY
        ctx._memo, ctx._active = self._memo, self._active
        ctx._predict = self._predict
        return ctx

    # ------------------------------------------------------------------ EvalContext

    def trait(self, name: str) -> Any:
        return self._traits.get(name)

    def named(self, alias: str) -> Event | None:
        return self._named.get(alias)

    def predict(self, model: str, horizon_seconds: int) -> float | None:
        predictor = self._predict
        return predictor(model, horizon_seconds) if predictor is not None else None

    def events(self, name: str, since: datetime | None = None) -> Sequence[Event]:
        entry = self._index.by_name.get(name)
        if entry is None:
            return ()
        evs, times = entry
        lo = 0 if since is None else bisect_right(times, since)
        hi = bisect_right(times, self.now)
        if lo == 0 and hi == len(evs):
            return evs
        return evs[lo:hi]

    def in_segment(self, name: str) -> bool:
        oracle = self._segments
        if oracle is None:
            return False
        if callable(oracle) and not isinstance(oracle, Mapping):
            return bool(oracle(name))
        if name in self._memo:
            return self._memo[name]
        seg = oracle.get(name)
        if seg is None or name in self._active:  # unknown, or a cycle: not a member
            return False
        predicate = getattr(seg, "predicate", seg)
        self._active.add(name)
        try:
            result = bool(predicate(self))
        finally:
            self._active.discard(name)
        self._memo[name] = result
        return result


def _zone(value: tzinfo | str | None) -> tzinfo:
    if value is None:
        return dt_timezone.utc
    if isinstance(value, str):
        return ZoneInfo(value)
    return value


__all__ = ["Context", "EvalContext", "Event", "EventLike", "HistoryIndex", "Predictor", "SegmentOracle"]
