"""Expressions → Python closures, composed once at compile time.

Evaluating a condition never walks the tree: each node becomes a closure `f(ctx, scope)` that
calls its children's closures directly, and subtrees made only of constants are folded into one
constant when compiled. `scope` is the event whose properties bare names read inside
`event "X" where COND` (None elsewhere); that is why the internal signature has two arguments,
while the public `Compiled` object is called as `f(ctx)`.

Name resolution is decided here, statically:
- inside `where`, a bare name is a special field of the matched event (`functions.EVENT_FIELDS`:
  local_hour, local_weekday, timestamp, event), else its property;
- elsewhere, a bare name is an event bound with `as` (`viewed`), and `viewed.category` reads it;
- `user.X` is a trait (`user.id` the user id); `user in segment "S"` asks the context, and so
  does `predicted MODEL in HORIZON` (`ctx.predict(model, horizon_seconds)`).
Durations evaluate to seconds and times of day to minutes since midnight. Value semantics (null
handling, operators) live in `journeys.values`; history functions in `journeys.history`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timezone as dt_timezone
from typing import Any, Callable

from . import ast as A
from . import history, values
from .diagnostics import Span
from .evaluation import EvalContext, Event
from .functions import FUNCTIONS, PREDICTION_HORIZON_DAYS, PREDICTION_MODELS, Signature
from .unparse import unparse

Fn = Callable[[EvalContext, "Event | None"], Any]


class CompileError(Exception):
    """Something the checker should have rejected reached the compiler. Never a crash."""

    def __init__(self, message: str, span: Span | None = None):
        super().__init__(f"{span}: {message}" if span is not None else message)
        self.message = message
        self.span = span


class Compiled:
    """A compiled expression: call it with a context. `fn(ctx, scope)` is the raw closure."""

    __slots__ = ("fn", "source")

    def __init__(self, fn: Fn, source: str):
        self.fn = fn
        self.source = source

    def __call__(self, ctx: EvalContext) -> Any:
        return self.fn(ctx, None)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Compiled) and other.source == self.source

    def __hash__(self) -> int:
        return hash(self.source)

    def __repr__(self) -> str:
        return f"Compiled({self.source!r})"


@dataclass(frozen=True)
class EventMatcher:
    """`event "X" [where COND]` compiled: does an incoming or past event match?"""

    event: str
    where: Fn | None = None  # `f(ctx, event)`, truthy when the event matches
    source: str = ""

    def matches(self, ctx: EvalContext, event: Event) -> bool:
        if event.event != self.event:
            return False
        return self.where is None or bool(self.where(ctx, event))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, EventMatcher) and other.source == self.source

    def __hash__(self) -> int:
        return hash(self.source)

    def __str__(self) -> str:
        return self.source


# ------------------------------------------------------------------------------- public API


class _Scope:
    """Where an expression stands: inside a `where` or not (its truth value, so handlers test it
    as a flag), and the journey's `as` names, which keep meaning the named events even inside a
    `where` (`wait for event "Product Added" where product_id == viewed.product_id`)."""

    __slots__ = ("in_where", "aliases")

    def __init__(self, in_where: bool, aliases: frozenset[str] = frozenset()):
        self.in_where, self.aliases = in_where, aliases

    def __bool__(self) -> bool:
        return self.in_where

    def where(self) -> "_Scope":
        return _Scope(True, self.aliases)


def compile_expr(expr: A.Node, aliases: frozenset[str] = frozenset()) -> Compiled:
    """A condition or value outside any `where`: bare names are events bound with `as`."""
    return Compiled(_compile(expr, _Scope(False, aliases)), unparse(expr))


def compile_where(expr: A.Node, aliases: frozenset[str] = frozenset()) -> Fn:
    """A `where` condition: `f(ctx, event)`; bare names are the event's fields and properties,
    except the journey's `as` names (`aliases`), which are the named events."""
    return _compile(expr, _Scope(True, aliases))


def compile_match(match: A.EventMatch, aliases: frozenset[str] = frozenset()) -> EventMatcher:
    where = compile_where(match.where, aliases) if match.where is not None else None
    return EventMatcher(match.event.value, where, unparse(match))


def window_seconds(duration: A.Duration) -> int:
    if duration.unit not in A.Duration.UNITS:
        raise CompileError(f"the duration `{duration}` has no valid unit (s, m, h, d, w)", duration.span)
    return duration.seconds


# ------------------------------------------------------------------------------- constants


def _const(value: Any) -> Fn:
    def constant(ctx: EvalContext, scope: Event | None) -> Any:
        return value

    constant.const_value = value  # type: ignore[attr-defined]  # marks it foldable
    return constant


def _is_const(f: Fn) -> bool:
    return hasattr(f, "const_value")


class _FoldContext:
    """The context constants are folded with: a part that reads anything but the timezone is no
    constant, so nothing else is ever asked."""

    timezone = dt_timezone.utc


def _fold(f: Fn, *parts: Fn) -> Fn:
    """Replace `f` by its value when all its parts are constants (none reads the context)."""
    if parts and all(_is_const(p) for p in parts):
        value = f(_FoldContext(), None)  # type: ignore[arg-type]
        return _const(tuple(value) if isinstance(value, list) else value)  # shared, so immutable
    return f


# ------------------------------------------------------------------------------- nodes


def _compile(node: A.Node, in_where: _Scope) -> Fn:
    handler = _HANDLERS.get(type(node))
    if handler is None:
        what = "an event match" if isinstance(node, A.EventMatch) else \
            "a window (`last 7d`)" if isinstance(node, A.Window) else type(node).__name__
        raise CompileError(f"{what} cannot stand here: only as an argument of a history function",
                           getattr(node, "span", None))
    return handler(node, in_where)


def _literal(node: A.Literal, in_where: _Scope) -> Fn:
    v = node.value
    if isinstance(v, A.Duration):
        return _const(window_seconds(v))
    if isinstance(v, A.TimeOfDay):
        return _const(v.hour * 60 + v.minute)
    return _const(v)


def _list(node: A.ListExpr, in_where: _Scope) -> Fn:
    items = [_compile(i, in_where) for i in node.items]
    if all(_is_const(i) for i in items):
        return _const(tuple(i.const_value for i in items))  # shared, so immutable
    return lambda ctx, scope: [i(ctx, scope) for i in items]


def _name(node: A.Name, in_where: _Scope) -> Fn:
    name = node.name
    if in_where and name not in in_where.aliases:
        special = values.SPECIAL_FIELDS.get(name)
        if special is not None:
            return lambda ctx, scope: special(scope, ctx.timezone) if scope is not None else None
        return lambda ctx, scope: scope.properties.get(name) if scope is not None else None
    return lambda ctx, scope: ctx.named(name)


def _trait(node: A.Trait, in_where: _Scope) -> Fn:
    name = node.name
    if name == "id":
        return lambda ctx, scope: ctx.user_id
    return lambda ctx, scope: ctx.trait(name)


def _attr(node: A.Attr, in_where: _Scope) -> Fn:
    obj, name, attr = _compile(node.obj, in_where), node.name, values.attr
    return _fold(lambda ctx, scope: attr(obj(ctx, scope), name, ctx.timezone), obj)


def _index(node: A.Index, in_where: _Scope) -> Fn:
    obj, key, index = _compile(node.obj, in_where), _compile(node.index, in_where), values.index
    return _fold(lambda ctx, scope: index(obj(ctx, scope), key(ctx, scope), ctx.timezone), obj, key)


def _unary(node: A.Unary, in_where: _Scope) -> Fn:
    operand = _compile(node.operand, in_where)
    if node.op == "not":
        return _fold(lambda ctx, scope: not operand(ctx, scope), operand)
    if node.op == "-":
        neg = values.neg
        return _fold(lambda ctx, scope: neg(operand(ctx, scope)), operand)
    raise CompileError(f"unknown operator `{node.op}`", node.span)


def _binary(node: A.Binary, in_where: _Scope) -> Fn:
    left, right = _compile(node.left, in_where), _compile(node.right, in_where)
    op = node.op
    if op == "and":
        f = lambda ctx, scope: bool(left(ctx, scope)) and bool(right(ctx, scope))  # noqa: E731
    elif op == "or":
        f = lambda ctx, scope: bool(left(ctx, scope)) or bool(right(ctx, scope))  # noqa: E731
    elif op in ("in", "not in") and _is_const(right) and _all_strings(right.const_value):
        # `local_weekday in ["sat", "sun"]`: a set lookup, same answer as values.contains
        members, negate = frozenset(right.const_value), op == "not in"
        f = lambda ctx, scope: (isinstance(v := left(ctx, scope), str) and v in members) != negate  # noqa: E731
    else:
        fn = values.BINARY.get(op)
        if fn is None:
            raise CompileError(f"unknown operator `{op}`", node.span)
        f = lambda ctx, scope: fn(left(ctx, scope), right(ctx, scope))  # noqa: E731
    return _fold(f, left, right)


def _all_strings(value: Any) -> bool:
    return isinstance(value, tuple) and all(isinstance(v, str) for v in value)


def _in_segment(node: A.InSegment, in_where: _Scope) -> Fn:
    name = node.segment.value
    return lambda ctx, scope: ctx.in_segment(name)


def _predicted(node: A.Predicted, in_where: _Scope) -> Fn:
    """`predicted MODEL in HORIZON`: the context's score (the engine's model), never a constant."""
    model = node.model.value
    if model not in PREDICTION_MODELS:
        raise CompileError(f"unknown model `{model}` (known: {', '.join(PREDICTION_MODELS)})", node.model.span)
    seconds = window_seconds(node.horizon)
    low, high = PREDICTION_HORIZON_DAYS
    if not (low * 86400 <= seconds <= high * 86400) or seconds % 3600:
        raise CompileError(f"the horizon `{node.horizon}` is not whole days or hours from {low}d to {high}d",
                           node.horizon.span)
    return lambda ctx, scope: ctx.predict(model, seconds)


# ------------------------------------------------------------------------------- calls


def _call(node: A.Call, in_where: _Scope) -> Fn:
    sig = FUNCTIONS.get(node.func)
    if sig is None:
        raise CompileError(f"unknown function `{node.func}`", node.func_span or node.span)
    args = node.args
    if len(args) < sig.min_args or (sig.max_args is not None and len(args) > sig.max_args):
        raise CompileError(f"`{node.func}` takes {sig.usage()}, got {len(args)} argument(s)", node.span)
    kinds = [sig.params[min(i, len(sig.params) - 1)] for i in range(len(args))]
    for kind, arg in zip(kinds, args):
        _check_arg(sig, kind, arg, node)
    if sig.history:
        return _history_call(node, args, kinds, in_where)
    compiled = [_compile(a, in_where) for a in args]
    if node.func == "coalesce":
        def coalesce(ctx: EvalContext, scope: Event | None) -> Any:
            for a in compiled:
                v = a(ctx, scope)
                if v is not None:
                    return v
            return None
        return _fold(coalesce, *compiled)
    fn = values.SCALAR[node.func]
    if len(compiled) == 1:
        (a,) = compiled
        return _fold(lambda ctx, scope: fn(a(ctx, scope)), a)
    return _fold(lambda ctx, scope: fn(*[a(ctx, scope) for a in compiled]), *compiled)


def _check_arg(sig: Signature, kind: str, arg: A.Node, call: A.Call) -> None:
    expected = {"event": A.EventMatch, "window": A.Window}.get(kind)
    if expected is not None and not isinstance(arg, expected):
        shown = 'event "Name"' if kind == "event" else "last 7d"
        raise CompileError(f"`{call.func}` expects `{shown}` here (usage: {sig.usage()})",
                           getattr(arg, "span", None) or call.span)
    if expected is None and isinstance(arg, (A.EventMatch, A.Window)):
        raise CompileError(f"`{call.func}` expects a value here, not `{unparse(arg)}` (usage: {sig.usage()})",
                           arg.span or call.span)


def _history_call(node: A.Call, args: tuple, kinds: list[str], scope: _Scope) -> Fn:
    match = next(a for a, k in zip(args, kinds) if k == "event")
    window = next((a for a, k in zip(args, kinds) if k == "window"), None)
    prop = next((a for a, k in zip(args, kinds) if k == "property"), None)
    name = match.event.value
    where = _compile(match.where, scope.where()) if match.where is not None else None
    seconds = window_seconds(window.duration) if window is not None else None
    # the property is read from each matched event: it is compiled in that event's scope
    prop_fn = _compile(prop, scope.where()) if prop is not None else None
    func = node.func
    if func == "count":
        return history.count(name, where, seconds)
    if func == "happened":
        return history.happened(name, where, seconds)
    if func == "sum":
        return history.sum_(name, where, seconds, prop_fn)
    if func == "avg":
        return history.avg(name, where, seconds, prop_fn)
    if func == "last":
        return history.last(name, where)
    if func == "days_since":
        return history.days_since(name, where)
    raise CompileError(f"no evaluator for the history function `{func}`", node.span)


_HANDLERS: dict[type, Callable[[Any, _Scope], Fn]] = {
    A.Literal: _literal, A.ListExpr: _list, A.Name: _name, A.Trait: _trait, A.Attr: _attr,
    A.Index: _index, A.Unary: _unary, A.Binary: _binary, A.InSegment: _in_segment, A.Call: _call,
    A.Predicted: _predicted,
}

__all__ = ["CompileError", "Compiled", "EventMatcher", "compile_expr", "compile_where", "compile_match",
           "window_seconds"]
