"""Checks of conditions and values: names, functions, arguments, literals and the types of comparisons.

The checker infers a static type where it can (literals, function results, special event fields)
and stays silent where it cannot (traits and event properties are only known at run time): it
reports what is certainly wrong, never what merely might be.
"""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass, field
from functools import lru_cache

from . import ast as A
from .diagnostics import Diagnostics
from .functions import (ANY, BOOL, DURATION, EVENT, EVENT_FIELDS, FUNCTIONS, LIST, NULL, NUMBER, PREDICTION_HORIZON_DAYS,
                        PREDICTION_MODELS, STRING, TIME, WEEKDAYS)
from .suggest import closest, did_you_mean
from .unparse import unparse

UNIT_HINTS = {
    "sec": "s", "secs": "s", "second": "s", "seconds": "s",
    "min": "m", "mins": "m", "minute": "m", "minutes": "m",
    "hr": "h", "hrs": "h", "hour": "h", "hours": "h",
    "day": "d", "days": "d", "week": "w", "weeks": "w", "wk": "w",
}
NO_FIXED_LENGTH = {"mo", "mon", "month", "months", "y", "yr", "year", "years", "q", "quarter"}

MAX_INTEGER = 2**63 - 1  # what the stores keep (MessagePack, PostgreSQL bigint): a number beyond is refused


@dataclass
class Scope:
    """What a bare name can mean where an expression stands."""

    aliases: frozenset[str] = frozenset()  # events named with `as` in the journey's entry
    in_where: bool = False  # inside `event "X" where ...`: bare names are event properties
    matching_alias: str | None = None  # inside the entry's own `where`: the name it is about to bind


@dataclass
class ExprChecker:
    diags: Diagnostics
    segments: set[str]
    segment_refs: list[A.Text] = field(default_factory=list)  # every `user in segment "S"` seen

    # ------------------------------------------------------------ leaves shared with statements

    def duration(self, d: A.Duration | None) -> None:
        if d is None:
            return
        if d.unit == "":
            self.diags.error("J031", f"`{d.amount}` is a duration without a unit", d.span,
                             f"add a unit: `{d.amount}m`, `{d.amount}h`, `{d.amount}d` (s m h d w)")
        elif d.unit not in A.Duration.UNITS:
            unit = d.unit.lower()
            if unit in NO_FIXED_LENGTH:
                help = "months and years have no fixed length: write days or weeks, e.g. `30d` or `52w`"
            elif unit in UNIT_HINTS:
                help = f"write `{d.amount}{UNIT_HINTS[unit]}`"
            else:
                help = "the units are s, m, h, d and w"
            self.diags.error("J043", f"unknown duration unit `{d.unit}` in `{d}`", d.span, help)
        elif d.seconds > A.Duration.MAX_DAYS * 86400:
            self.diags.error("J063", "this duration is longer than the engine can wait or look back: "
                             f"at most {A.Duration.MAX_DAYS}d (100 years)", d.span,
                             f"write at most `{A.Duration.MAX_DAYS}d`; for \"ever\", leave the window out")

    def time_of_day(self, t: A.TimeOfDay | None) -> None:
        if t is not None and not t.valid:
            self.diags.error("J032", f"`{t.hour}:{t.minute:02d}` is not a time of day", t.span,
                             "hours are 0-23 and minutes 0-59; midnight is `00:00`")

    def timezone(self, tz: A.Timezone | A.Text | None) -> None:
        text = tz.name if isinstance(tz, A.Timezone) else tz
        if text is None:
            return
        if not valid_timezone(text.value):
            self.diags.error("J019", f"unknown timezone `{text.value}`", text.span,
                             did_you_mean(text.value, all_timezones(), quote='"',
                                          otherwise='use an IANA zone name such as "Europe/Istanbul"'))

    def segment_ref(self, name: A.Text | None) -> None:
        if name is None:
            return
        self.segment_refs.append(name)
        if name.value not in self.segments:
            self.diags.error("J010", f"unknown segment `{name.value}`", name.span,
                             did_you_mean(name.value, self.segments, quote='"',
                                          otherwise=f'declare it: segment "{name.value}" = ...'))

    # ------------------------------------------------------------ expressions

    def event_match(self, m: A.EventMatch, aliases: frozenset[str] = frozenset(),
                    matching_alias: str | None = None) -> None:
        """`matching_alias`: the `as` name this very match binds (an entry's), which its own
        `where` cannot use: the event is not named until it has matched."""
        if m.where is not None:
            self.expr(m.where, Scope(aliases=aliases, in_where=True, matching_alias=matching_alias))

    def expr(self, e, scope: Scope) -> str:
        method = getattr(self, "_" + type(e).__name__, None)
        if method is None:
            return ANY
        return method(e, scope)

    def _Literal(self, e: A.Literal, scope: Scope) -> str:
        v = e.value
        if isinstance(v, bool):
            return BOOL
        if isinstance(v, (int, float)):
            if not (-MAX_INTEGER <= v <= MAX_INTEGER) or v != v:
                self.diags.error("J063", "this number is too large for the engine to store: at most "
                                 f"{MAX_INTEGER:,} either way (64-bit)", e.span,
                                 "write a smaller number; amounts of money and counts fit easily")
            return NUMBER
        if isinstance(v, str):
            return STRING
        if v is None:
            return NULL
        if isinstance(v, A.Duration):
            self.duration(v)
            return DURATION
        if isinstance(v, A.TimeOfDay):
            self.time_of_day(v)
            return TIME
        return ANY

    def _ListExpr(self, e: A.ListExpr, scope: Scope) -> str:
        for item in e.items:
            self.expr(item, scope)
        return LIST

    def _Name(self, e: A.Name, scope: Scope) -> str:
        if scope.in_where:
            if e.name == scope.matching_alias:
                self.diags.error("J016", f"`{e.name}` is the event this `where` is matching: it has no name yet",
                                 e.span, "inside `where`, read the matched event's properties with bare names: "
                                 "`price`, not `" + e.name + ".price`")
                return ANY
            if e.name in scope.aliases:
                return EVENT  # the journey's named event, also inside `where`
            return EVENT_FIELDS.get(e.name, ANY)
        if e.name in scope.aliases:
            return EVENT
        if e.name == "predicted":
            help = ("a prediction names its model and horizon: `predicted purchase in 30d`, "
                    "`predicted churn in 60d` (a probability between 0 and 1)")
        elif scope.aliases:
            help = did_you_mean(e.name, scope.aliases, otherwise=(
                f"bare names are event properties only inside `event \"...\" where`; here, read a named "
                f"event's property, e.g. `{sorted(scope.aliases)[0]}.{e.name}`"))
        else:
            help = ("bare names are event properties only inside `event \"...\" where`; name the entry "
                    "event with `as` (`entry when event \"X\" as x`) and write `x." + e.name + "`")
        self.diags.error("J016", f"unknown name `{e.name}`", e.span, help)
        return ANY

    def _Trait(self, e: A.Trait, scope: Scope) -> str:
        return ANY

    def _Attr(self, e: A.Attr, scope: Scope) -> str:
        self.expr(e.obj, scope)
        return ANY

    def _Index(self, e: A.Index, scope: Scope) -> str:
        self.expr(e.obj, scope)
        self.expr(e.index, scope)
        return ANY

    def _Unary(self, e: A.Unary, scope: Scope) -> str:
        t = self.expr(e.operand, scope)
        if e.op == "not":
            return BOOL
        return t if t in (NUMBER, DURATION) else ANY

    def _InSegment(self, e: A.InSegment, scope: Scope) -> str:
        self.segment_ref(e.segment)
        return BOOL

    def _Predicted(self, e: A.Predicted, scope: Scope) -> str:
        model = e.model.value
        if model not in PREDICTION_MODELS:
            hit = closest(model, PREDICTION_MODELS)
            known = "; ".join(f"`{m}`: {what}" for m, what in PREDICTION_MODELS.items())
            self.diags.error("J080", f"unknown model `{model}`", e.model.span,
                             (f"did you mean `{hit}`? " if hit else "") + f"the models are {known}")
        self.horizon(e.horizon)
        return NUMBER

    def horizon(self, d: A.Duration) -> None:
        """A prediction's horizon: a valid duration, whole days or hours, 1d to 3650d."""
        before = len(self.diags.items)
        self.duration(d)
        if len(self.diags.items) > before or d.unit not in A.Duration.UNITS:
            return  # the unit is already reported
        low, high = PREDICTION_HORIZON_DAYS
        seconds = d.seconds
        if seconds % 3600:
            self.diags.error("J081", f"a prediction's horizon is whole days or hours, not `{d}`", d.span,
                             f"write days (`30d`) or hours (`36h`), at least `{low}d`")
        elif seconds < low * 86400:
            self.diags.error("J081", f"the horizon `{d}` is too short for a prediction: at least {low}d", d.span,
                             f"write `{low}d` or longer; the models are trained on what users do over days")
        elif seconds > high * 86400:
            self.diags.error("J081", f"the horizon `{d}` is too long for a prediction: at most {high}d (10 years)",
                             d.span, f"write at most `{high}d`; `365d` is a year")

    def _Binary(self, e: A.Binary, scope: Scope) -> str:
        lt = self.expr(e.left, scope)
        rt = self.expr(e.right, scope)
        op = e.op
        if op in ("and", "or"):
            return BOOL
        if op in ("+", "-", "*", "/"):
            if op == "+" and lt == rt == STRING:
                return STRING
            if DURATION in (lt, rt) and {lt, rt} <= {DURATION, NUMBER}:
                return DURATION
            return NUMBER if {lt, rt} <= {NUMBER} else ANY
        if op in ("in", "not in"):
            self._check_membership(e, lt, rt, scope)
            return BOOL
        self._check_comparison(e, lt, rt, scope)
        return BOOL

    def _check_comparison(self, e: A.Binary, lt: str, rt: str, scope: Scope) -> None:
        self._check_probability(e)
        if scope.in_where:
            for side, other in ((e.left, e.right), (e.right, e.left)):
                if isinstance(side, A.Name) and side.name == "local_weekday" and isinstance(other, A.Literal):
                    self._weekday_literal(other)
        if ANY in (lt, rt) or lt == rt:
            return
        if NULL in (lt, rt):
            if e.op in ("==", "!="):
                return
            self.diags.error("J034", f"`{e.op}` with `null` is never true", e.span,
                             "test for a missing value with `== null` or `!= null`")
            return
        self.diags.error("J034", f"this compares a {lt} with a {rt}: it is never true", e.span,
                         _mismatch_help(lt, rt))

    def _check_probability(self, e: A.Binary) -> None:
        """A prediction compared with a number outside [0, 1]: a probability never gets there
        (60 for 60 % is the likely slip)."""
        for side, other in ((e.left, e.right), (e.right, e.left)):
            if not isinstance(side, A.Predicted):
                continue
            value = _number(other)
            if value is None or 0 <= value <= 1:
                continue
            shown = unparse(side)
            where = "above 1" if value > 1 else "below 0"
            help = (f"a probability is between 0 and 1: for {value:g} %, write `{value / 100:g}`"
                    if 1 < value <= 100 else "a probability is between 0 and 1: compare with a number in that range")
            self.diags.warning("J084", f"a probability is never {where}: `{shown}` is between 0 and 1, "
                               f"and this compares it with {value:g}", e.span, help)

    def _check_membership(self, e: A.Binary, lt: str, rt: str, scope: Scope) -> None:
        if rt not in (LIST, STRING, ANY):
            self.diags.error("J034", f"`{e.op}` needs a list or a text on its right, not a {rt}", e.right.span,
                             'write a list: `x in ["a", "b"]`')
            return
        if not isinstance(e.right, A.ListExpr):
            return
        weekday = scope.in_where and isinstance(e.left, A.Name) and e.left.name == "local_weekday"
        for item in e.right.items:
            if not isinstance(item, A.Literal):
                continue
            if weekday:
                self._weekday_literal(item)
            it = self._Literal(item, scope) if not isinstance(item.value, (A.Duration, A.TimeOfDay)) else ANY
            if lt not in (ANY,) and it not in (ANY, NULL) and it != lt:
                self.diags.error("J034", f"this list holds a {it}, but the value is a {lt}: it never matches",
                                 item.span, _mismatch_help(lt, it))

    def _weekday_literal(self, lit: A.Literal) -> None:
        if isinstance(lit.value, str) and lit.value not in WEEKDAYS:
            self.diags.error("J034", f"`local_weekday` is never \"{lit.value}\"", lit.span,
                             did_you_mean(lit.value[:3].lower(), WEEKDAYS, quote='"',
                                          otherwise="weekdays are " + ", ".join(f'"{d}"' for d in WEEKDAYS)))

    def _Call(self, e: A.Call, scope: Scope) -> str:
        sig = FUNCTIONS.get(e.func)
        if sig is None:
            self.diags.error("J017", f"unknown function `{e.func}`", e.func_span or e.span,
                             did_you_mean(e.func, FUNCTIONS, otherwise="the functions are " + ", ".join(FUNCTIONS)))
            for arg in e.args:
                self._arg(arg, "value", scope)
            return ANY
        n = len(e.args)
        if n < sig.min_args or (sig.max_args is not None and n > sig.max_args):
            want = (f"{sig.min_args}" if sig.min_args == sig.max_args else
                    f"{sig.min_args} or more" if sig.max_args is None else f"{sig.min_args} to {sig.max_args}")
            self.diags.error("J018", f"`{e.func}` takes {want} argument{'s' if want != '1' else ''}, not {n}",
                             e.span, f"write `{sig.usage()}`")
        kinds = list(sig.params) + [sig.params[-1]] * max(0, n - len(sig.params)) if sig.variadic else list(sig.params)
        for i, arg in enumerate(e.args):
            kind = kinds[i] if i < len(kinds) else "value"
            if not self._arg(arg, kind, scope):
                self.diags.error("J018", f"argument {i + 1} of `{e.func}` must be {_KIND_TEXT[kind]}",
                                 arg.span, f"write `{sig.usage()}`")
        return sig.returns

    def _arg(self, arg, kind: str, scope: Scope) -> bool:
        """Check one argument; False when it is not of the kind the parameter takes."""
        if isinstance(arg, A.EventMatch):
            self.event_match(arg, scope.aliases)
            return kind == "event"
        if isinstance(arg, A.Window):
            self.duration(arg.duration)
            return kind == "window"
        if kind == "property":
            return isinstance(arg, A.Name) or (isinstance(arg, A.Literal) and isinstance(arg.value, str))
        self.expr(arg, scope)
        return kind == "value"


def _number(e) -> float | None:
    """The value of a number literal (or a negated one), else None."""
    if isinstance(e, A.Unary) and e.op == "-":
        inner = _number(e.operand)
        return -inner if inner is not None else None
    if isinstance(e, A.Literal) and isinstance(e.value, (int, float)) and not isinstance(e.value, bool):
        return float(e.value)
    return None


_KIND_TEXT = {
    "event": 'an event match such as `event "Product Viewed"`',
    "window": "a window such as `last 7d`",
    "property": "a property name such as `revenue`",
    "value": "a value",
}


def _mismatch_help(a: str, b: str) -> str:
    pair = {a, b}
    if pair == {NUMBER, STRING}:
        return 'remove the quotes around the number, or compare with a text: `200`, not `"200"`'
    if pair == {NUMBER, DURATION}:
        return "`days_since` and `count` give plain numbers: compare with `3`, not `3d`"
    if BOOL in pair:
        return "`happened(...)` is already true or false: use it as the condition itself"
    return f"compare a {a} with a {a}"


@lru_cache(maxsize=1)
def all_timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


@lru_cache(maxsize=256)
def valid_timezone(name: str) -> bool:
    if name in all_timezones():
        return True
    try:
        zoneinfo.ZoneInfo(name)
        return True
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        return False


__all__ = ["ExprChecker", "Scope", "closest", "valid_timezone", "all_timezones"]
