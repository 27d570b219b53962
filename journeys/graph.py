"""The compiled journey graph: what the engine runs, the dry-run simulates and traces point into.

Everything here is a frozen value built by `journeys.compiler`. Steps become nodes keyed by their
stable path (`browse_abandonment/1/timeout/1`); control flow is explicit: every node names the
path that follows it (`next`, None when the journey is complete), and nodes that choose (wait for,
if, split) name the path each outcome leads to. A block that is empty leads straight to the
continuation, so the engine never meets an empty step. Conditions are `journeys.expr.Compiled`
callables; event matches are `journeys.expr.EventMatcher`s. Durations are seconds, times of day
minutes since midnight, timezones IANA names (None: the user's own).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import ClassVar, Mapping

from .config import DEDUPE_DAYS, RETRAIN
from .diagnostics import Span
from .expr import Compiled, EventMatcher
from .needs import HistoryNeeds
from .unparse import quote

_SLUG = re.compile(r"[^a-z0-9]+")


def slugify(name: str) -> str:
    """Lower case, runs of anything but ASCII letters and digits become `_`, stripped of `_`.

    `Browse abandonment` → `browse_abandonment`. Paths go into store keys, URLs and logs, hence
    ASCII; it is the rule `journeys.checker.slug` uses to report journeys whose paths collide, and
    the two must stay one rule."""
    return _SLUG.sub("_", name.lower()).strip("_")


def format_duration(seconds: int) -> str:
    """`1h`, `20m`, `14d`, `1h30m`: days, hours, minutes, seconds, largest first."""
    if seconds == 0:
        return "0s"
    out, rest = [], seconds
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest >= size:
            out.append(f"{rest // size}{unit}")
            rest %= size
    return "".join(out)


def format_time(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"


def format_percent(p: float) -> str:
    return f"{p:g}%"


def format_tz(tz: str | None) -> str:
    return "user time" if tz is None else f"in {quote(tz)}"


# ---------------------------------------------------------------------------------- nodes


@dataclass(frozen=True)
class Node:
    """A step. `next`: the path that follows when this step completes (None: journey complete)."""

    kind: ClassVar[str] = "node"
    path: str
    next: str | None
    span: Span | None = field(default=None, compare=False, repr=False, kw_only=True)

    def targets(self) -> list[tuple[str, str | None]]:
        """Outgoing edges as (label, target path or None for the end), for graphs and reachability."""
        return [("", self.next)]

    def describe(self) -> str:
        return self.kind


@dataclass(frozen=True)
class WaitNode(Node):
    kind: ClassVar[str] = "wait"
    seconds: int

    def describe(self) -> str:
        return f"wait {format_duration(self.seconds)}"


@dataclass(frozen=True)
class WaitUntilNode(Node):
    kind: ClassVar[str] = "wait_until"
    minute: int  # minute of the day
    tz: str | None  # None: the user's timezone

    def describe(self) -> str:
        return f"wait until {format_time(self.minute)} {format_tz(self.tz)}"


@dataclass(frozen=True)
class WaitForNode(Node):
    kind: ClassVar[str] = "wait_for"
    match: EventMatcher
    timeout: int
    on_event: str | None  # first step of `on event`, or the continuation
    on_timeout: str | None

    def targets(self) -> list[tuple[str, str | None]]:
        return [("event", self.on_event), ("timeout", self.on_timeout)]

    def describe(self) -> str:
        return f"wait for {self.match} up to {format_duration(self.timeout)}"


@dataclass(frozen=True)
class BranchArm:
    label: str  # then | elif1 | elif2 ... (the path segment of its block)
    condition: Compiled
    target: str | None


@dataclass(frozen=True)
class BranchNode(Node):
    """`if`: the first arm whose condition holds wins; else `else_target`. `next` is the step after
    the whole `if`, where every arm continues."""

    kind: ClassVar[str] = "branch"
    arms: tuple[BranchArm, ...]
    else_target: str | None

    def targets(self) -> list[tuple[str, str | None]]:
        return [(a.label, a.target) for a in self.arms] + [("else", self.else_target)]

    def describe(self) -> str:
        return f"if {self.arms[0].condition.source}" if self.arms else "if"


@dataclass(frozen=True)
class SplitArmNode:
    name: str  # as written
    slug: str  # its path segment
    percent: float
    target: str | None


@dataclass(frozen=True)
class SplitNode(Node):
    """`split`: users are assigned to an arm by a stable hash (the engine's job); the control group
    (`control_percent`, path `<path>/control`) has no steps and continues at `next`."""

    kind: ClassVar[str] = "split"
    arms: tuple[SplitArmNode, ...]
    control_percent: float | None = None

    @property
    def control_path(self) -> str:
        return f"{self.path}/control"

    def targets(self) -> list[tuple[str, str | None]]:
        out = [(f"{a.name} {format_percent(a.percent)}", a.target) for a in self.arms]
        if self.control_percent is not None:
            out.append((f"control {format_percent(self.control_percent)}", self.next))
        return out

    def describe(self) -> str:
        return "split"


@dataclass(frozen=True)
class SendNode(Node):
    kind: ClassVar[str] = "send"
    channel: str
    template: str
    data: tuple[tuple[str, Compiled], ...] = ()
    via: str | None = None
    # `at best time within W`: W in seconds; the engine holds the message until the moment in the
    # next W that the user's model says they engage most (then quiet hours apply). None: send now.
    best_time: int | None = None

    def describe(self) -> str:
        via = f" via {quote(self.via)}" if self.via else ""
        best = f" at best time within {format_duration(self.best_time)}" if self.best_time is not None else ""
        return f"send {self.channel} {quote(self.template)}{via}{best}"


@dataclass(frozen=True)
class AudienceNode(Node):
    kind: ClassVar[str] = "audience"
    op: str  # add | remove
    audience: str

    def describe(self) -> str:
        return f'{self.op} {"to" if self.op == "add" else "from"} audience {quote(self.audience)}'


@dataclass(frozen=True)
class WebhookNode(Node):
    kind: ClassVar[str] = "webhook"
    name: str
    data: tuple[tuple[str, Compiled], ...] = ()

    def describe(self) -> str:
        return f"webhook {quote(self.name)}"


@dataclass(frozen=True)
class SetTraitNode(Node):
    kind: ClassVar[str] = "set_trait"
    trait: str
    value: Compiled

    def describe(self) -> str:
        return f"set user.{self.trait} = {self.value.source}"


@dataclass(frozen=True)
class ExitNode(Node):
    """`exit`: the journey ends here (its `next` is always None)."""

    kind: ClassVar[str] = "exit"

    def targets(self) -> list[tuple[str, str | None]]:
        return [("exit", None)]

    def describe(self) -> str:
        return "exit"


# ---------------------------------------------------------------------------------- declarations


@dataclass(frozen=True)
class Schedule:
    """When a scheduled entry fires: a 5-field cron (minute hour day month weekday), in `tz` (None:
    each user's own timezone). `every`/`at` keep the friendly form for display."""

    cron: str
    tz: str | None = None
    every: str | None = None
    at: int | None = None  # minute of the day

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(self.cron.split())

    def describe(self) -> str:
        if self.every is not None and self.at is not None:
            return f"every {self.every} at {format_time(self.at)} {format_tz(self.tz)}"
        return f"cron {quote(self.cron)} {format_tz(self.tz)}"


@dataclass(frozen=True)
class Entry:
    kind: str  # event | first_event | segment | schedule
    match: EventMatcher | None = None  # event, first_event
    alias: str | None = None  # `as NAME`
    schedule: Schedule | None = None
    segment: str | None = None  # `user enters segment`, or a schedule's `for segment`

    def describe(self) -> str:
        if self.kind in ("event", "first_event"):
            first = "first " if self.kind == "first_event" else ""
            alias = f" as {self.alias}" if self.alias else ""
            return f"entry when {first}{self.match}{alias}"
        if self.kind == "segment":
            return f"entry when user enters segment {quote(self.segment)}"
        seg = f" for segment {quote(self.segment)}" if self.segment else ""
        return f"entry {self.schedule.describe() if self.schedule else ''}{seg}"


@dataclass(frozen=True)
class Exits:
    events: tuple[EventMatcher, ...] = ()
    segments: tuple[str, ...] = ()  # `exit when user leaves segment`
    conditions: tuple[Compiled, ...] = ()  # `exit when COND`


@dataclass(frozen=True)
class Reentry:
    mode: str = "never"  # never | always | after
    seconds: int | None = None  # for `after`


@dataclass(frozen=True)
class Goal:
    name: str
    match: EventMatcher
    seconds: int  # counted when it happens within this long after entry
    reads_named: bool = False  # its `where` reads the journey's `as` events: keep them with the goal


@dataclass(frozen=True)
class CapRule:
    """`count` messages per rolling `seconds`. A learned cap (`push auto per 7d min 2 max 5`) has
    `auto` true: the engine learns each user's count within [`low`, `high`], the bounds the marketer
    set; its `count` is `high`, so code that knows nothing of learned caps still holds the bound.
    A fixed rule has `low == high == count`."""

    channel: str  # email | push | sms | ads | webhook | all (never `all` for a learned cap)
    count: int
    seconds: int  # rolling window
    auto: bool = False
    low: int | None = None  # None: `count` (set so after construction)
    high: int | None = None

    def __post_init__(self) -> None:
        if self.low is None:
            object.__setattr__(self, "low", self.count if not self.auto else 1)
        if self.high is None:
            object.__setattr__(self, "high", self.count)

    def describe(self) -> str:
        if self.auto:
            low = f" min {self.low}" if self.low != 1 else ""
            return f"{self.channel} auto per {format_duration(self.seconds)}{low} max {self.high}"
        return f"{self.channel} {self.count} per {format_duration(self.seconds)}"


@dataclass(frozen=True)
class Cap:
    rules: tuple[CapRule, ...]
    when: Compiled | None = None  # the rules apply only while this holds


@dataclass(frozen=True)
class QuietHours:
    start: int  # minute of the day
    end: int  # may be before start: the quiet time spans midnight
    tz: str | None = None  # None: the user's timezone


# ---------------------------------------------------------------------------------- compiled units


@dataclass(frozen=True)
class CompiledJourney:
    name: str
    slug: str
    version: str
    entry: Entry
    exits: Exits
    reenter: Reentry
    goals: tuple[Goal, ...]
    caps: tuple[Cap, ...]
    quiet_hours: QuietHours | None
    nodes: Mapping[str, Node]  # in source order, depth first; on-exit steps last
    first: str | None  # first step; None: the journey does nothing but enter
    on_exit: tuple[str, ...]  # the top-level on-exit steps in order; run from on_exit[0]
    needs: HistoryNeeds
    segments: tuple[str, ...] = ()  # segments it references, transitively, sorted
    file: str | None = field(default=None, compare=False)
    span: Span | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.nodes, MappingProxyType):
            object.__setattr__(self, "nodes", MappingProxyType(dict(self.nodes)))

    def node(self, path: str) -> Node:
        return self.nodes[path]

    @property
    def on_exit_first(self) -> str | None:
        return self.on_exit[0] if self.on_exit else None


@dataclass(frozen=True)
class CompiledSegment:
    name: str
    predicate: Compiled
    references: tuple[str, ...]  # segments it uses, transitively, sorted (itself only on a cycle)
    needs: HistoryNeeds
    span: Span | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class CompiledPolicy:
    timezone: str = "UTC"  # for users with no timezone trait
    caps: tuple[Cap, ...] = ()
    quiet_hours: QuietHours | None = None


@dataclass(frozen=True)
class CompiledProject:
    journeys: Mapping[str, CompiledJourney]  # by name, in source order
    segments: Mapping[str, CompiledSegment]  # by name, in source order
    policy: CompiledPolicy
    needs: HistoryNeeds  # the union of every journey's, segment's and the policy's
    dedupe_days: int = DEDUPE_DAYS  # journeys.toml's [ingest] dedupe_days: how long a messageId counts
    retrain: str = RETRAIN  # journeys.toml's [models] retrain: when the models train (cron, UTC)
    # (model, horizon seconds) that templates read as `predicted.purchase_30d` (the checker finds
    # them; the expressions' own are in `needs.predictions`)
    template_predictions: frozenset[tuple[str, int]] = frozenset()

    def __post_init__(self) -> None:
        for name in ("journeys", "segments"):
            value = getattr(self, name)
            if not isinstance(value, MappingProxyType):
                object.__setattr__(self, name, MappingProxyType(dict(value)))

    # ------------------------------------------------------------ what the models must serve

    @property
    def predictions(self) -> frozenset[tuple[str, int]]:
        """Every (model, horizon seconds) that a journey, a segment, the policy or a template reads:
        the scores the engine must train and serve (`journeys.functions.prediction_key` names them)."""
        return self.needs.predictions | self.template_predictions

    def _cap_rules(self):
        for cap in self.policy.caps:
            yield from cap.rules
        for journey in self.journeys.values():
            for cap in journey.caps:
                yield from cap.rules

    @property
    def auto_caps(self) -> frozenset[tuple[str, int]]:
        """(channel, window seconds) of every learned cap rule, the policy's and the journeys'."""
        return frozenset((r.channel, r.seconds) for r in self._cap_rules() if r.auto)

    @property
    def auto_cap_channels(self) -> frozenset[str]:
        return frozenset(channel for channel, _ in self.auto_caps)

    @property
    def best_time_channels(self) -> frozenset[str]:
        """The channels of every `send ... at best time`."""
        return frozenset(node.channel for journey in self.journeys.values() for node in journey.nodes.values()
                         if isinstance(node, SendNode) and node.best_time is not None)

    @property
    def uses_models(self) -> bool:
        """Whether anything reads a model: a prediction (in a condition or a template), a send at
        the best time or a learned cap. The engine keeps per-user features only then (unless told
        to), so a project without them pays nothing. The templates' `recommended` does not count:
        the engine serves it from what it keeps anyway, or its popularity fallback."""
        return bool(self.predictions or self.auto_caps or self.best_time_channels)
