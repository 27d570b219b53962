"""Typed syntax tree of journey files.

Every node is a frozen dataclass that carries the `Span` it came from. Spans never take part in
equality, so two trees that differ only in layout or comments compare equal; that is what makes a
journey's version id a hash of its meaning. `Node.children()` walks the declared fields, so
checks and the compiler traverse the tree without knowing every node type.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Iterator, Union

from .diagnostics import Span



def _span():
    return field(default=None, compare=False, repr=False)



_FIELDS: dict[type, tuple[str, ...]] = {}


def child_fields(cls: type) -> tuple[str, ...]:
    """The fields of a node type that take part in its meaning (not its spans), cached per type:
    `dataclasses.fields` is too slow to call on every node of every walk."""
    names = _FIELDS.get(cls)
    if names is None:
        names = _FIELDS[cls] = tuple(f.name for f in fields(cls) if f.compare)
    return names


@dataclass(frozen=True, slots=True)
class Node:
    def children(self) -> Iterator["Node"]:
        for name in child_fields(type(self)):
            value = getattr(self, name)
            if isinstance(value, Node):
                yield value
            elif isinstance(value, tuple):
                for item in value:
                    if isinstance(item, Node):
                        yield item
                    elif isinstance(item, tuple):
                        yield from (i for i in item if isinstance(i, Node))

    def walk(self) -> Iterator["Node"]:
        """Every node below and including this one, depth first, without recursion.

        The order is that of `children()`, which this inlines: checks and the compiler walk every
        journey several times, and a generator per node was most of the cost of a walk."""
        stack: list[Node] = [self]
        pop, push = stack.pop, stack.append
        while stack:
            node = pop()
            yield node
            cls = type(node)
            names = _FIELDS.get(cls) or child_fields(cls)
            mark = len(stack)
            for name in names:
                value = getattr(node, name)
                if isinstance(value, Node):
                    push(value)
                elif isinstance(value, tuple):
                    for item in value:
                        if isinstance(item, Node):
                            push(item)
                        elif isinstance(item, tuple):
                            for i in item:
                                if isinstance(i, Node):
                                    push(i)
            if len(stack) - mark > 1:
                stack[mark:] = stack[mark:][::-1]  # so the first child is walked first


# ---------------------------------------------------------------------------------- leaves


@dataclass(frozen=True, slots=True)
class Text(Node):
    """A quoted string or a name used as a reference (segment, template, channel...)."""

    value: str
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class Duration(Node):
    amount: int
    unit: str  # "" when the author forgot it; the checker reports that
    span: Span | None = _span()

    UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    MAX_DAYS = 36500  # the longest wait, window or deadline: 100 years, far inside what dates can hold

    @property
    def seconds(self) -> int:
        return self.amount * self.UNITS.get(self.unit, 0)

    def __str__(self) -> str:
        return f"{self.amount}{self.unit}"


@dataclass(frozen=True, slots=True)
class TimeOfDay(Node):
    hour: int
    minute: int
    span: Span | None = _span()

    @property
    def valid(self) -> bool:
        return 0 <= self.hour <= 23 and 0 <= self.minute <= 59

    def __str__(self) -> str:
        return f"{self.hour:02d}:{self.minute:02d}"


@dataclass(frozen=True, slots=True)
class Timezone(Node):
    """`user time` (name is None) or `in "Area/City"`."""

    name: Text | None
    span: Span | None = _span()

    @property
    def is_user(self) -> bool:
        return self.name is None


# ---------------------------------------------------------------------------------- expressions


@dataclass(frozen=True, slots=True)
class Literal(Node):
    value: Any  # int | float | str | bool | None | Duration | TimeOfDay
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class ListExpr(Node):
    items: tuple["Expr", ...]
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class Name(Node):
    """A bare name: an event property inside `where`, or an event named with `as`."""

    name: str
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class Missing(Node):
    """An operand the text lacks (`a and` with nothing after it): the parser puts one in so that
    it can read on after reporting the syntax error. Only a file with errors holds one; checks
    take it as a value of any type and say nothing more about it."""

    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class Trait(Node):
    """`user.NAME`: a profile trait."""

    name: str
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class Attr(Node):
    obj: "Expr"
    name: str
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class Index(Node):
    obj: "Expr"
    index: "Expr"
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class Unary(Node):
    op: str  # "-" | "not"
    operand: "Expr"
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class Binary(Node):
    op: str  # "and" "or" "+" "-" "*" "/" "==" "!=" "<" "<=" ">" ">=" "in" "not in"
    left: "Expr"
    right: "Expr"
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class InSegment(Node):
    segment: Text
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class Predicted(Node):
    """`predicted MODEL in HORIZON`: the user's score from a trained model, a probability in
    [0, 1] (`predicted purchase in 30d`), or null while the engine has none to give. The model's
    name is kept as written; the checker knows which models exist."""

    model: Text
    horizon: Duration
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class EventMatch(Node):
    """`event "Name" [where CONDITION]`; inside the condition bare names are event properties."""

    event: Text
    where: "Expr | None" = None
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class Window(Node):
    """`last 7d` as a history function argument."""

    duration: Duration
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class Call(Node):
    func: str
    args: tuple["Expr | EventMatch | Window", ...]
    span: Span | None = _span()
    func_span: Span | None = _span()


Expr = Union[Literal, ListExpr, Name, Trait, Attr, Index, Unary, Binary, InSegment, Predicted, Call]

# ---------------------------------------------------------------------------------- policy


@dataclass(frozen=True, slots=True)
class CapBound(Node):
    """`min N` or `max N` of a learned cap, kept as written so the checker can point at each."""

    kind: str  # min | max
    value: int
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class CapRule(Node):
    """`CHANNEL COUNT per WINDOW`, or a learned cap `CHANNEL auto per WINDOW max N [min N]`
    (`auto` true, `count` 0: the engine learns each user's count within the bounds)."""

    channel: Text  # email | push | ads | webhook | all
    count: int
    window: Duration
    span: Span | None = _span()
    auto: bool = False
    bounds: tuple[CapBound, ...] = ()

    def bound(self, kind: str) -> int | None:
        """The first `min` or `max` given (the checker reports a second one)."""
        return next((b.value for b in self.bounds if b.kind == kind), None)


@dataclass(frozen=True, slots=True)
class Cap(Node):
    rules: tuple[CapRule, ...]
    when: Expr | None = None
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class QuietHours(Node):
    start: TimeOfDay
    end: TimeOfDay
    tz: Timezone
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class TimezoneDecl(Node):
    name: Text
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class Policy(Node):
    statements: tuple[Node, ...]
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class Segment(Node):
    name: Text
    condition: Expr
    span: Span | None = _span()


# ---------------------------------------------------------------------------------- declarations


@dataclass(frozen=True, slots=True)
class EntryEvent(Node):
    match: EventMatch
    first: bool = False
    alias: Text | None = None
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class EntrySegment(Node):
    segment: Text
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class EntrySchedule(Node):
    """`entry every DAY at TIME` or `entry on cron "EXPR"`, optionally for a segment."""

    every: Text | None
    at: TimeOfDay | None
    cron: Text | None
    tz: Timezone
    segment: Text | None = None
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class ExitEvent(Node):
    match: EventMatch
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class ExitSegment(Node):
    segment: Text
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class ExitCondition(Node):
    condition: Expr
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class Reenter(Node):
    mode: str  # never | always | after
    after: Duration | None = None
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class Goal(Node):
    name: Text
    match: EventMatch
    within: Duration
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class OnExit(Node):
    steps: tuple["Step", ...]
    span: Span | None = _span()


Declaration = Union[
    EntryEvent, EntrySegment, EntrySchedule, ExitEvent, ExitSegment, ExitCondition,
    Reenter, Goal, Cap, QuietHours, OnExit,
]

# ---------------------------------------------------------------------------------- steps


@dataclass(frozen=True, slots=True)
class Wait(Node):
    duration: Duration
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class WaitUntil(Node):
    at: TimeOfDay
    tz: Timezone
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class WaitBranch(Node):
    outcome: str  # event | timeout
    steps: tuple["Step", ...]
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class WaitFor(Node):
    match: EventMatch
    timeout: Duration
    branches: tuple[WaitBranch, ...] = ()
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class IfBranch(Node):
    condition: Expr | None  # None for `else`
    steps: tuple["Step", ...]
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class If(Node):
    branches: tuple[IfBranch, ...]
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class SplitArm(Node):
    percent: float
    name: Text | None  # None for the control group
    steps: tuple["Step", ...]
    has_percent_sign: bool = True
    span: Span | None = _span()

    @property
    def is_control(self) -> bool:
        return self.name is None


@dataclass(frozen=True, slots=True)
class Split(Node):
    arms: tuple[SplitArm, ...]
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class Pair(Node):
    key: Text
    value: Expr
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class Send(Node):
    channel: Text
    template: Text
    data: tuple[Pair, ...] = ()
    via: Text | None = None
    span: Span | None = _span()
    best_time: Duration | None = None  # `at best time within WINDOW`: the window to choose the moment in


@dataclass(frozen=True, slots=True)
class AudienceChange(Node):
    op: str  # add | remove
    audience: Text
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class Webhook(Node):
    name: Text
    data: tuple[Pair, ...] = ()
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class SetTrait(Node):
    trait: Text
    value: Expr
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class ExitStep(Node):
    span: Span | None = _span()


Step = Union[Wait, WaitUntil, WaitFor, If, Split, Send, AudienceChange, Webhook, SetTrait, ExitStep]
STEP_TYPES = (Wait, WaitUntil, WaitFor, If, Split, Send, AudienceChange, Webhook, SetTrait, ExitStep)


@dataclass(frozen=True, slots=True)
class Journey(Node):
    name: Text
    items: tuple[Node, ...]  # declarations and steps in source order (the checker wants the order)
    span: Span | None = _span()

    @property
    def declarations(self) -> tuple[Node, ...]:
        return tuple(i for i in self.items if not isinstance(i, STEP_TYPES))

    @property
    def steps(self) -> tuple[Step, ...]:
        return tuple(i for i in self.items if isinstance(i, STEP_TYPES))


# ---------------------------------------------------------------------------------- scenarios


@dataclass(frozen=True, slots=True)
class Timestamp(Node):
    date: str  # YYYY-MM-DD
    time: TimeOfDay
    offset: str | None  # "+03:00", "Z" or None (UTC)
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class TestUser(Node):
    user: Text
    traits: tuple[Pair, ...] = ()
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class TestEvent(Node):
    at: Timestamp | None
    event: Text
    user: Text
    properties: tuple[Pair, ...] = ()
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class TestIdentify(Node):
    at: Timestamp | None
    user: Text
    traits: tuple[Pair, ...] = ()
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class TestPrediction(Node):
    """`given user "u" predicted churn in 60d = 0.9`: for the whole scenario, the user's score from
    that model and horizon is this one (None: `= null`, no score yet), whatever the models would
    say of a handful of scenario events. Journeys that branch on a prediction become testable."""

    user: Text
    prediction: Predicted
    value: float | None
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class ExpectTime(Node):
    at: Timestamp
    within: Duration | None = None
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class ExpectSend(Node):
    channel: Text
    template: Text | None
    user: Text
    negated: bool = False  # `expect no ...`
    suppressed: Text | None = None  # cap | quiet hours | consent
    when: ExpectTime | None = None
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class ExpectMembership(Node):
    kind: str  # journey | audience
    user: Text
    name: Text
    negated: bool = False
    when: ExpectTime | None = None
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class ExpectTrait(Node):
    user: Text
    trait: Text
    op: str
    value: Expr
    when: ExpectTime | None = None
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class Scenario(Node):
    name: Text
    statements: tuple[Node, ...]
    span: Span | None = _span()


@dataclass(frozen=True, slots=True)
class SourceFile(Node):
    path: str
    items: tuple[Node, ...]  # Policy | Segment | Journey | Scenario
    span: Span | None = _span()
