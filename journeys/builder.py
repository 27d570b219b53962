"""Turns Lark's parse tree into the typed tree of `journeys.ast`.

The transformer is Lark's non-recursive one: a pathological file (thousands of nested `not`)
must become a diagnostic, not a RecursionError.
"""

from __future__ import annotations

import ast as py_ast

from lark import Token, Transformer_NonRecursive, Tree, v_args

from . import ast as A
from .diagnostics import Span


def unquote(raw: str) -> str:
    """The value of a STRING token: the grammar's escapes are Python's for `\\"` `\\\\` `\\n` `\\t`."""
    try:
        value = py_ast.literal_eval(raw)
        return value if isinstance(value, str) else raw[1:-1]
    except (ValueError, SyntaxError):
        return raw[1:-1]


def parse_time(text: str) -> tuple[int, int]:
    h, m = text.split(":")
    return int(h), int(m)


def split_duration(text: str) -> tuple[int, str]:
    digits = len(text) - len(text.lstrip("0123456789"))
    return int(text[:digits]), text[digits:]


class AstBuilder(Transformer_NonRecursive):
    """One instance per chunk of a file: it knows the file name and the line the chunk starts at."""

    def __init__(self, file: str, line_offset: int = 0):
        super().__init__(visit_tokens=False)
        self.file = file
        self.line_offset = line_offset

    # -------------------------------------------------------------- spans

    def tspan(self, tok: Token) -> Span:
        o = self.line_offset
        return Span(self.file, tok.line + o, tok.column, tok.end_line + o, tok.end_column)

    def mspan(self, meta) -> Span | None:
        if getattr(meta, "empty", True):
            return None
        o = self.line_offset
        return Span(self.file, meta.line + o, meta.column, meta.end_line + o, meta.end_column)

    def text(self, tok: Token | None) -> A.Text | None:
        if tok is None:
            return None
        value = unquote(tok.value) if tok.type == "STRING" else tok.value
        return A.Text(value, span=self.tspan(tok))

    def dur(self, tok: Token | None) -> A.Duration | None:
        if tok is None:
            return None
        if tok.type == "NUMBER":
            return A.Duration(int(float(tok.value)), "", span=self.tspan(tok))
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

    @v_args(meta=True)
    def policy(self, meta, children):
        return A.Policy(tuple(children), span=self.mspan(meta))

    @v_args(meta=True)
    def timezone_decl(self, meta, children):
        return A.TimezoneDecl(self.text(children[0]), span=self.mspan(meta))

    @v_args(meta=True)
    def cap(self, meta, children):
        *rules, when = children
        return A.Cap(tuple(rules), when, span=self.mspan(meta))

    @v_args(meta=True)
    def cap_rule(self, meta, children):
        channel, count, window = children
        return A.CapRule(self.text(channel), int(float(count.value)), self.dur(window), span=self.mspan(meta))

    @v_args(meta=True)
    def quiet_hours(self, meta, children):
        start, end, tz = children
        return A.QuietHours(self.tod(start), self.tod(end), self.zone(tz, self.mspan(meta)), span=self.mspan(meta))

    @v_args(meta=True)
    def tz_user(self, meta, children):
        return A.Timezone(None, span=self.mspan(meta))

    @v_args(meta=True)
    def tz_fixed(self, meta, children):
        return A.Timezone(self.text(children[0]), span=self.mspan(meta))

    @v_args(meta=True)
    def segment(self, meta, children):
        name, cond = children
        return A.Segment(self.text(name), cond, span=self.mspan(meta))

    @v_args(meta=True)
    def journey(self, meta, children):
        name, *items = children
        return A.Journey(self.text(name), tuple(items), span=self.mspan(meta))

    # -------------------------------------------------------------- declarations

    @v_args(meta=True)
    def entry_event(self, meta, children):
        first, match, alias = children
        return A.EntryEvent(match, first is not None, self.text(alias), span=self.mspan(meta))

    @v_args(meta=True)
    def entry_segment(self, meta, children):
        return A.EntrySegment(self.text(children[0]), span=self.mspan(meta))

    @v_args(meta=True)
    def entry_every(self, meta, children):
        day, at, tz, seg = children
        return A.EntrySchedule(self.text(day), self.tod(at), None, self.zone(tz, self.mspan(meta)), seg,
                               span=self.mspan(meta))

    @v_args(meta=True)
    def entry_cron(self, meta, children):
        expr, tz, seg = children
        return A.EntrySchedule(None, None, self.text(expr), self.zone(tz, self.mspan(meta)), seg,
                               span=self.mspan(meta))

    def for_segment(self, children):
        return self.text(children[0])

    @v_args(meta=True)
    def exit_event(self, meta, children):
        return A.ExitEvent(children[0], span=self.mspan(meta))

    @v_args(meta=True)
    def exit_segment(self, meta, children):
        return A.ExitSegment(self.text(children[0]), span=self.mspan(meta))

    @v_args(meta=True)
    def exit_condition(self, meta, children):
        return A.ExitCondition(children[0], span=self.mspan(meta))

    @v_args(meta=True)
    def reenter(self, meta, children):
        mode, after = children
        return A.Reenter(mode.value, self.dur(after), span=self.mspan(meta))

    @v_args(meta=True)
    def goal(self, meta, children):
        name, match, within = children
        return A.Goal(self.text(name), match, self.dur(within), span=self.mspan(meta))

    @v_args(meta=True)
    def on_exit(self, meta, children):
        return A.OnExit(children[0], span=self.mspan(meta))

    # -------------------------------------------------------------- steps

    def block(self, children):
        return tuple(children)

    @v_args(meta=True)
    def wait(self, meta, children):
        return A.Wait(self.dur(children[0]), span=self.mspan(meta))

    @v_args(meta=True)
    def wait_until(self, meta, children):
        at, tz = children
        return A.WaitUntil(self.tod(at), self.zone(tz, self.mspan(meta)), span=self.mspan(meta))

    @v_args(meta=True)
    def wait_for(self, meta, children):
        match, timeout, branches = children
        return A.WaitFor(match, self.dur(timeout), tuple(branches or ()), span=self.mspan(meta))

    def wait_branches(self, children):
        return list(children)

    @v_args(meta=True)
    def wait_branch(self, meta, children):
        outcome, steps = children
        return A.WaitBranch(outcome.value, steps, span=self.mspan(meta))

    @v_args(meta=True)
    def if_step(self, meta, children):
        cond, steps, *rest = children
        branches = [A.IfBranch(cond, steps, span=self.mspan(meta))]
        for item in rest:
            if item is not None:
                branches.append(item)
        return A.If(tuple(branches), span=self.mspan(meta))

    @v_args(meta=True)
    def elif_(self, meta, children):
        cond, steps = children
        return A.IfBranch(cond, steps, span=self.mspan(meta))

    @v_args(meta=True)
    def else_block(self, meta, children):
        return A.IfBranch(None, children[0], span=self.mspan(meta))

    @v_args(meta=True)
    def split(self, meta, children):
        return A.Split(tuple(children), span=self.mspan(meta))

    def _share(self, tok: Token) -> tuple[float, bool]:
        if tok.type == "PERCENT":
            return float(tok.value[:-1]), True
        return float(tok.value), False

    @v_args(meta=True)
    def split_arm(self, meta, children):
        share, name, steps = children
        pct, sign = self._share(share)
        return A.SplitArm(pct, self.text(name), steps, sign, span=self.mspan(meta))

    @v_args(meta=True)
    def split_control(self, meta, children):
        pct, sign = self._share(children[0])
        return A.SplitArm(pct, None, (), sign, span=self.mspan(meta))

    @v_args(meta=True)
    def send(self, meta, children):
        channel, template, data, via = children
        return A.Send(self.text(channel), self.text(template), tuple(data or ()), self.text(via),
                      span=self.mspan(meta))

    def with_clause(self, children):
        return children[0]

    @v_args(meta=True)
    def audience_add(self, meta, children):
        return A.AudienceChange("add", self.text(children[0]), span=self.mspan(meta))

    @v_args(meta=True)
    def audience_remove(self, meta, children):
        return A.AudienceChange("remove", self.text(children[0]), span=self.mspan(meta))

    @v_args(meta=True)
    def webhook(self, meta, children):
        name, data = children
        return A.Webhook(self.text(name), tuple(data or ()), span=self.mspan(meta))

    @v_args(meta=True)
    def set_trait(self, meta, children):
        name, value = children
        return A.SetTrait(self.text(name), value, span=self.mspan(meta))

    @v_args(meta=True)
    def exit_step(self, meta, children):
        return A.ExitStep(span=self.mspan(meta))

    def object(self, children):
        return tuple(c for c in children if c is not None)

    @v_args(meta=True)
    def pair(self, meta, children):
        key, value = children
        return A.Pair(self.text(key), value, span=self.mspan(meta))

    # -------------------------------------------------------------- expressions

    @v_args(meta=True)
    def event_match(self, meta, children):
        event, where = children
        return A.EventMatch(self.text(event), where, span=self.mspan(meta))

    def _binary(op):
        @v_args(meta=True)
        def build(self, meta, children):
            left, right = children[0], children[-1]
            return A.Binary(op, left, right, span=self.mspan(meta))
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

    @v_args(meta=True)
    def compare(self, meta, children):
        left, op, right = children
        return A.Binary(op.value, left, right, span=self.mspan(meta))

    @v_args(meta=True)
    def not_op(self, meta, children):
        return A.Unary("not", children[0], span=self.mspan(meta))

    @v_args(meta=True)
    def neg(self, meta, children):
        return A.Unary("-", children[0], span=self.mspan(meta))

    @v_args(meta=True)
    def in_segment(self, meta, children):
        return A.InSegment(self.text(children[0]), span=self.mspan(meta))

    @v_args(meta=True)
    def attr(self, meta, children):
        obj, name = children
        return A.Attr(obj, name.value, span=self.mspan(meta))

    @v_args(meta=True)
    def index(self, meta, children):
        obj, idx = children
        return A.Index(obj, idx, span=self.mspan(meta))

    def number(self, children):
        tok = children[0]
        value = float(tok.value) if "." in tok.value else int(tok.value)
        return A.Literal(value, span=self.tspan(tok))

    def string(self, children):
        return A.Literal(unquote(children[0].value), span=self.tspan(children[0]))

    def duration_lit(self, children):
        return A.Literal(self.dur(children[0]), span=self.tspan(children[0]))

    def time_lit(self, children):
        return A.Literal(self.tod(children[0]), span=self.tspan(children[0]))

    @v_args(meta=True)
    def true(self, meta, children):
        return A.Literal(True, span=self.mspan(meta))

    @v_args(meta=True)
    def false(self, meta, children):
        return A.Literal(False, span=self.mspan(meta))

    @v_args(meta=True)
    def null(self, meta, children):
        return A.Literal(None, span=self.mspan(meta))

    @v_args(meta=True)
    def list(self, meta, children):
        return A.ListExpr(tuple(c for c in children if c is not None), span=self.mspan(meta))

    def name(self, children):
        tok = children[0]
        return A.Name(tok.value, span=self.tspan(tok))

    @v_args(meta=True)
    def trait(self, meta, children):
        return A.Trait(children[0].value, span=self.mspan(meta))

    @v_args(meta=True)
    def call(self, meta, children):
        func, *args = children
        return A.Call(func.value, tuple(a for a in args if a is not None), span=self.mspan(meta),
                      func_span=self.tspan(func))

    @v_args(meta=True)
    def window(self, meta, children):
        return A.Window(self.dur(children[1]), span=self.mspan(meta))

    # -------------------------------------------------------------- scenarios

    @v_args(meta=True)
    def test(self, meta, children):
        name, *stmts = children
        return A.Scenario(self.text(name), tuple(_pair_times(stmts)), span=self.mspan(meta))

    @v_args(meta=True)
    def test_user(self, meta, children):
        user, traits = children
        return A.TestUser(self.text(user), tuple(traits or ()), span=self.mspan(meta))

    @v_args(meta=True)
    def test_at(self, meta, children):
        at, within = children
        return A.ExpectTime(at, self.dur(within), span=self.mspan(meta))

    @v_args(meta=True)
    def test_event(self, meta, children):
        event, user, props = children
        return A.TestEvent(None, self.text(event), self.text(user), tuple(props or ()), span=self.mspan(meta))

    @v_args(meta=True)
    def test_identify(self, meta, children):
        user, traits = children
        return A.TestIdentify(None, self.text(user), tuple(traits or ()), span=self.mspan(meta))

    @v_args(meta=True)
    def expect_send(self, meta, children):
        channel, template, user, suppressed = children
        return A.ExpectSend(self.text(channel), self.text(template), self.text(user), False, suppressed,
                            span=self.mspan(meta))

    @v_args(meta=True)
    def expect_no_send(self, meta, children):
        channel, template, user = children
        return A.ExpectSend(self.text(channel), self.text(template), self.text(user), True, None,
                            span=self.mspan(meta))

    @v_args(meta=True)
    def suppressed(self, meta, children):
        return A.Text(" ".join(t.value for t in children), span=self.mspan(meta))

    def _membership(kind):
        @v_args(meta=True)
        def build(self, meta, children):
            user, negated, name = children
            return A.ExpectMembership(kind, self.text(user), self.text(name), negated is not None,
                                      span=self.mspan(meta))
        return build

    expect_journey = _membership("journey")
    expect_audience = _membership("audience")
    del _membership

    @v_args(meta=True)
    def expect_trait(self, meta, children):
        user, trait, op, value = children
        return A.ExpectTrait(self.text(user), self.text(trait), op.value, value, span=self.mspan(meta))

    @v_args(meta=True)
    def timestamp(self, meta, children):
        date, time, offset = children
        return A.Timestamp(date.value, self.tod(time), offset.value if offset else None,
                           span=self.mspan(meta))


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


__all__ = ["AstBuilder", "unquote", "Tree"]
