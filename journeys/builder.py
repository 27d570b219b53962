"""The typed tree of `journeys.ast`, built rule by rule while Lark's LALR parser reduces.

Each method is named after a grammar rule (or its alias) and receives the rule's children as Lark
filters them (anonymous keywords dropped, `[optional]` parts as None). `journeys.lalr` calls it
at each reduction, so no parse tree is ever built and walked again; the parser keeps its own
stacks, so a pathological file (thousands of nested `not`) cannot exhaust Python's.

A rule's span runs from the first token of its text to the last, keywords and brackets included
(the keywords are not among the children): `journeys.lalr` measures it before calling the method
and `span()` returns it.
"""

from __future__ import annotations

import ast as py_ast

from lark import Token

from . import ast as A
from .diagnostics import Span


def unquote(raw: str) -> str:
    """The value of a STRING token: the grammar's escapes are Python's for `\\"` `\\\\` `\\n` `\\t`."""
    if "\\" not in raw:
        return raw[1:-1]  # nothing to unescape (most strings): skip Python's literal parser
    try:
        value = py_ast.literal_eval(raw)
        return value if isinstance(value, str) else raw[1:-1]
    except (ValueError, SyntaxError):
        return raw[1:-1]


def parse_time(text: str) -> tuple[int, int]:
    h, m = text.split(":")
    return int(h), int(m)


# Past this many digits Python refuses to read a whole number (int_max_str_digits); the checker
# rejects anything this long anyway (J063), so such a number is kept as one that is too large.
_MAX_DIGITS = 4000
_TOO_LARGE = 10 ** 30


def whole(digits: str) -> int:
    return int(digits) if len(digits) <= _MAX_DIGITS else _TOO_LARGE


def split_duration(text: str) -> tuple[int, str]:
    digits = len(text) - len(text.lstrip("0123456789"))
    return whole(text[:digits]), text[digits:]


class AstBuilder:
    """Turns reductions into typed nodes; `reset` it for each chunk of a file (its name and the
    line the chunk starts at)."""

    def __init__(self, file: str = "<string>", line_offset: int = 0):
        self.reset(file, line_offset)

    def reset(self, file: str, line_offset: int) -> None:
        self.file = file
        self.line_offset = line_offset
        self.extent: tuple[int, int, int, int] | None = None  # set by journeys.lalr before each call

    # -------------------------------------------------------------- spans

    def span(self) -> Span | None:
        """The span of the rule being reduced; None for a rule that matched no text."""
        e = self.extent
        if e is None:
            return None
        o = self.line_offset
        return Span(self.file, e[0] + o, e[1], e[2] + o, e[3])

    def tspan(self, tok: Token) -> Span:
        o = self.line_offset
        return Span(self.file, tok.line + o, tok.column, tok.end_line + o, tok.end_column)

    def text(self, tok: Token | None) -> A.Text | None:
        if tok is None:
            return None
        value = unquote(tok.value) if tok.type == "STRING" else tok.value
        return A.Text(value, span=self.tspan(tok))

    def dur(self, tok: Token | None) -> A.Duration | None:
        if tok is None:
            return None
        if tok.type == "NUMBER":
            return A.Duration(whole(tok.value) if tok.value.isdigit() else int(float(tok.value)), "", span=self.tspan(tok))
        amount, unit = split_duration(tok.value)
        return A.Duration(amount, unit, span=self.tspan(tok))

    def tod(self, tok: Token) -> A.TimeOfDay:
        h, m = parse_time(tok.value)
        return A.TimeOfDay(h, m, span=self.tspan(tok))

    def zone(self, tz, fallback_span: Span | None = None) -> A.Timezone:
        return tz if tz is not None else A.Timezone(None, span=fallback_span)

    # -------------------------------------------------------------- top level

    def start(self, children):
        return list(children)

    def policy(self, children):
        return A.Policy(tuple(children), span=self.span())

    def timezone_decl(self, children):
        return A.TimezoneDecl(self.text(children[0]), span=self.span())

    def cap(self, children):
        *rules, when = children
        return A.Cap(tuple(rules), when, span=self.span())

    def cap_rule(self, children):
        channel, count, window = children
        return A.CapRule(self.text(channel), int(float(count.value)), self.dur(window), span=self.span())

    def cap_auto(self, children):
        channel, window, *bounds = children
        bounds.sort(key=lambda b: b.kind != "min")  # `min` first, as `journeys fmt` prints them
        return A.CapRule(self.text(channel), 0, self.dur(window), span=self.span(), auto=True, bounds=tuple(bounds))

    def _bound(kind):
        def build(self, children):
            return A.CapBound(kind, whole(children[0].value) if children[0].value.isdigit()
                              else int(float(children[0].value)), span=self.span())
        return build

    cap_min = _bound("min")
    cap_max = _bound("max")
    del _bound

    def quiet_hours(self, children):
        start, end, tz = children
        return A.QuietHours(self.tod(start), self.tod(end), self.zone(tz, self.span()), span=self.span())

    def tz_user(self, children):
        return A.Timezone(None, span=self.span())

    def tz_fixed(self, children):
        return A.Timezone(self.text(children[0]), span=self.span())

    def segment(self, children):
        name, cond = children
        return A.Segment(self.text(name), cond, span=self.span())

    def journey(self, children):
        name, *items = children
        return A.Journey(self.text(name), tuple(items), span=self.span())

    # -------------------------------------------------------------- declarations

    def entry_event(self, children):
        first, match, alias = children
        return A.EntryEvent(match, first is not None, self.text(alias), span=self.span())

    def entry_segment(self, children):
        return A.EntrySegment(self.text(children[0]), span=self.span())

    def entry_every(self, children):
        day, at, tz, seg = children
        return A.EntrySchedule(self.text(day), self.tod(at), None, self.zone(tz, self.span()), seg,
                               span=self.span())

    def entry_cron(self, children):
        expr, tz, seg = children
        return A.EntrySchedule(None, None, self.text(expr), self.zone(tz, self.span()), seg,
                               span=self.span())

    def for_segment(self, children):
        return self.text(children[0])

    def exit_event(self, children):
        return A.ExitEvent(children[0], span=self.span())

    def exit_segment(self, children):
        return A.ExitSegment(self.text(children[0]), span=self.span())

    def exit_condition(self, children):
        return A.ExitCondition(children[0], span=self.span())

    def reenter(self, children):
        mode, after = children
        return A.Reenter(mode.value, self.dur(after), span=self.span())

    def goal(self, children):
        name, match, within = children
        return A.Goal(self.text(name), match, self.dur(within), span=self.span())

    def on_exit(self, children):
        return A.OnExit(children[0], span=self.span())

    # -------------------------------------------------------------- steps

    def block(self, children):
        return tuple(children)

    def wait(self, children):
        return A.Wait(self.dur(children[0]), span=self.span())

    def wait_until(self, children):
        at, tz = children
        return A.WaitUntil(self.tod(at), self.zone(tz, self.span()), span=self.span())

    def wait_for(self, children):
        match, timeout, branches = children
        return A.WaitFor(match, self.dur(timeout), tuple(branches or ()), span=self.span())

    def wait_branches(self, children):
        return list(children)

    def wait_branch(self, children):
        outcome, steps = children
        return A.WaitBranch(outcome.value, steps, span=self.span())

    def if_step(self, children):
        return A.If(tuple(c for c in children if c is not None), span=self.span())

    def if_branch(self, children):
        cond, steps = children
        return A.IfBranch(cond, steps, span=self.span())

    def elif_(self, children):
        cond, steps = children
        return A.IfBranch(cond, steps, span=self.span())

    def else_block(self, children):
        return A.IfBranch(None, children[0], span=self.span())

    def split(self, children):
        return A.Split(tuple(children), span=self.span())

    def _share(self, tok: Token) -> tuple[float, bool]:
        if tok.type == "PERCENT":
            return float(tok.value[:-1]), True
        return float(tok.value), False

    def split_arm(self, children):
        share, name, steps = children
        pct, sign = self._share(share)
        return A.SplitArm(pct, self.text(name), steps, sign, span=self.span())

    def split_control(self, children):
        pct, sign = self._share(children[0])
        return A.SplitArm(pct, None, (), sign, span=self.span())

    def send(self, children):
        channel, template, data, via, best_time = children
        return A.Send(self.text(channel), self.text(template), tuple(data or ()), self.text(via),
                      span=self.span(), best_time=best_time)

    def best_time(self, children):
        return self.dur(children[0])

    def with_clause(self, children):
        return children[0]

    def audience_add(self, children):
        return A.AudienceChange("add", self.text(children[0]), span=self.span())

    def audience_remove(self, children):
        return A.AudienceChange("remove", self.text(children[0]), span=self.span())

    def webhook(self, children):
        name, data = children
        return A.Webhook(self.text(name), tuple(data or ()), span=self.span())

    def set_trait(self, children):
        name, value = children
        return A.SetTrait(self.text(name), value, span=self.span())

    def exit_step(self, children):
        return A.ExitStep(span=self.span())

    def object(self, children):
        return tuple(c for c in children if c is not None)

    def pair(self, children):
        key, value = children
        return A.Pair(self.text(key), value, span=self.span())

    # -------------------------------------------------------------- expressions

    def event_match(self, children):
        event, where = children
        return A.EventMatch(self.text(event), where, span=self.span())

    def _binary(op):
        def build(self, children):
            left, right = children[0], children[-1]
            return A.Binary(op, left, right, span=self.span())
        return build

    or_op = _binary("or")
    and_op = _binary("and")
    add = _binary("+")
    sub = _binary("-")
    mul = _binary("*")
    div = _binary("/")
    in_op = _binary("in")
    not_in_op = _binary("not in")
    del _binary

    def compare(self, children):
        left, op, right = children
        return A.Binary(op.value, left, right, span=self.span())

    def not_op(self, children):
        return A.Unary("not", children[0], span=self.span())

    def neg(self, children):
        return A.Unary("-", children[0], span=self.span())

    def in_segment(self, children):
        return A.InSegment(self.text(children[0]), span=self.span())

    def attr(self, children):
        obj, name = children
        return A.Attr(obj, name.value, span=self.span())

    def index(self, children):
        obj, idx = children
        return A.Index(obj, idx, span=self.span())

    def number(self, children):
        tok = children[0]
        value = float(tok.value) if "." in tok.value else whole(tok.value)
        return A.Literal(value, span=self.tspan(tok))

    def string(self, children):
        return A.Literal(unquote(children[0].value), span=self.tspan(children[0]))

    def duration_lit(self, children):
        return A.Literal(self.dur(children[0]), span=self.tspan(children[0]))

    def time_lit(self, children):
        return A.Literal(self.tod(children[0]), span=self.tspan(children[0]))

    def true(self, children):
        return A.Literal(True, span=self.span())

    def false(self, children):
        return A.Literal(False, span=self.span())

    def null(self, children):
        return A.Literal(None, span=self.span())

    def list(self, children):
        return A.ListExpr(tuple(c for c in children if c is not None), span=self.span())

    def name(self, children):
        tok = children[0]
        if not tok.value:  # the operand error recovery puts in (journeys.parser)
            return A.Missing(span=self.tspan(tok))
        return A.Name(tok.value, span=self.tspan(tok))

    def event_name(self, children):
        """`event` where an expression stands: the special field naming the matched event. The
        word is a keyword where an event match may start (a function's arguments), so the grammar
        takes it back as a name when no string follows."""
        return A.Name("event", span=self.span())

    def predicted(self, children):
        model, horizon = children
        return A.Predicted(self.text(model), self.dur(horizon), span=self.span())

    def predicted_name(self, children):
        """`predicted` where an expression stands, with no model after it: a plain name (an event
        property inside `where`, an event named with `as` elsewhere), as `event` is."""
        return A.Name("predicted", span=self.span())

    def trait(self, children):
        return A.Trait(children[0].value, span=self.span())

    def call(self, children):
        func, *args = children
        return A.Call(func.value, tuple(a for a in args if a is not None), span=self.span(),
                      func_span=self.tspan(func))

    def window(self, children):
        return A.Window(self.dur(children[1]), span=self.span())

    # -------------------------------------------------------------- scenarios

    def test(self, children):
        name, *stmts = children
        return A.Scenario(self.text(name), tuple(_pair_times(stmts)), span=self.span())

    def test_user(self, children):
        user, traits = children
        return A.TestUser(self.text(user), tuple(traits or ()), span=self.span())

    def test_at(self, children):
        at, within = children
        return A.ExpectTime(at, self.dur(within), span=self.span())

    def test_event(self, children):
        event, user, props = children
        return A.TestEvent(None, self.text(event), self.text(user), tuple(props or ()), span=self.span())

    def test_identify(self, children):
        user, traits = children
        return A.TestIdentify(None, self.text(user), tuple(traits or ()), span=self.span())

    def test_given(self, children):
        user, model, horizon, value = children
        predicted = A.Predicted(self.text(model), self.dur(horizon), span=self.span())
        score = None if value.type == "NULL_SCORE" else float(value.value)
        return A.TestPrediction(self.text(user), predicted, score, span=self.span())

    def expect_send(self, children):
        channel, template, user, suppressed = children
        return A.ExpectSend(self.text(channel), self.text(template), self.text(user), False, suppressed,
                            span=self.span())

    def expect_no_send(self, children):
        channel, template, user = children
        return A.ExpectSend(self.text(channel), self.text(template), self.text(user), True, None,
                            span=self.span())

    def suppressed(self, children):
        return A.Text(" ".join(t.value for t in children), span=self.span())

    def _membership(kind):
        def build(self, children):
            user, negated, name = children
            return A.ExpectMembership(kind, self.text(user), self.text(name), negated is not None,
                                      span=self.span())
        return build

    expect_journey = _membership("journey")
    expect_audience = _membership("audience")
    del _membership

    def expect_trait(self, children):
        user, trait, op, value = children
        return A.ExpectTrait(self.text(user), self.text(trait), op.value, value, span=self.span())

    def timestamp(self, children):
        date, time, offset = children
        return A.Timestamp(date.value, self.tod(time), offset.value if offset else None,
                           span=self.span())


# `elif` is a Python keyword, so the rule's callback is registered under another name.
setattr(AstBuilder, "elif", AstBuilder.elif_)


def _pair_times(stmts: list) -> list:
    """Attach each `at TIME` clause to the event after it, or else to the expectation before it.

    A dangling `at` (nothing to time) is kept as an `ExpectTime` so the checker can point at it.
    """
    out: list = []
    i = 0
    while i < len(stmts):
        s = stmts[i]
        if isinstance(s, A.ExpectTime):
            nxt = stmts[i + 1] if i + 1 < len(stmts) else None
            if isinstance(nxt, (A.TestEvent, A.TestIdentify)) and nxt.at is None and s.within is None:
                out.append(_replace(nxt, at=s.at, span=_join(s.span, nxt.span)))
                i += 2
                continue
            prev = out[-1] if out else None
            if isinstance(prev, (A.ExpectSend, A.ExpectMembership, A.ExpectTrait)) and prev.when is None:
                out[-1] = _replace(prev, when=s, span=_join(prev.span, s.span))
                i += 1
                continue
        out.append(s)
        i += 1
    return out


def _replace(node, **changes):
    import dataclasses

    return dataclasses.replace(node, **changes)


def _join(a: Span | None, b: Span | None) -> Span | None:
    if a is None or b is None:
        return a or b
    return Span(a.file, a.line, a.col, b.end_line, b.end_col)


__all__ = ["AstBuilder", "unquote"]
