"""The history functions, implemented once, on top of `EvalContext.events`.

Each builder takes the pieces `journeys.expr` compiled (event name, optional `where` filter,
window, property expression) and returns the evaluator `f(ctx, scope_event)`. Windows end at
`ctx.now` and are rolling: `last 7d` is `now - 7d < timestamp <= now`, the same rule as caps, so
`wait 14d` then `happened(event E, last 14d)` no longer sees the event that started the wait. Events after `now`
never count (the dry-run may know the future; a condition must not).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Callable

from .evaluation import EvalContext, Event
from .values import is_number

Fn = Callable[[EvalContext, "Event | None"], Any]
Where = Callable[[EvalContext, Event], Any]
DAY = 86400


def _matching(name: str, where: Where | None, seconds: int | None):
    """A function `ctx -> matching events` (oldest first) for one event match and window."""
    delta = timedelta(seconds=seconds) if seconds is not None else None
    if where is None:
        if delta is None:
            return lambda ctx: ctx.events(name)
        return lambda ctx: ctx.events(name, ctx.now - delta)

    def select(ctx: EvalContext) -> list[Event]:
        evs = ctx.events(name) if delta is None else ctx.events(name, ctx.now - delta)
        return [e for e in evs if where(ctx, e)]

    return select


def count(name: str, where: Where | None, seconds: int) -> Fn:
    select = _matching(name, where, seconds)
    return lambda ctx, ev: len(select(ctx))


def happened(name: str, where: Where | None, seconds: int | None) -> Fn:
    delta = timedelta(seconds=seconds) if seconds is not None else None

    def f(ctx: EvalContext, ev: Event | None) -> bool:
        evs = ctx.events(name) if delta is None else ctx.events(name, ctx.now - delta)
        if where is None:
            return len(evs) > 0
        return any(where(ctx, e) for e in evs)  # stops at the first match

    return f


def _numbers(select, prop: Fn):
    def values(ctx: EvalContext) -> list:
        out = []
        for e in select(ctx):
            v = prop(ctx, e)
            if is_number(v):
                out.append(v)
        return out

    return values


def sum_(name: str, where: Where | None, seconds: int, prop: Fn) -> Fn:
    """Sum of the numeric values of `prop` (evaluated with each event as scope); non-numbers skipped."""
    values = _numbers(_matching(name, where, seconds), prop)
    return lambda ctx, ev: sum(values(ctx))


def avg(name: str, where: Where | None, seconds: int, prop: Fn) -> Fn:
    values = _numbers(_matching(name, where, seconds), prop)

    def f(ctx: EvalContext, ev: Event | None) -> Any:
        vs = values(ctx)
        return sum(vs) / len(vs) if vs else None

    return f


def _latest(name: str, where: Where | None) -> Callable[[EvalContext], Event | None]:
    def latest(ctx: EvalContext) -> Event | None:
        evs = ctx.events(name)
        if where is None:
            return evs[-1] if evs else None
        for e in reversed(evs):
            if where(ctx, e):
                return e
        return None

    return latest


def last(name: str, where: Where | None) -> Fn:
    latest = _latest(name, where)
    return lambda ctx, ev: latest(ctx)


def days_since(name: str, where: Where | None) -> Fn:
    """Whole days (rounded down) since the latest matching event; None if there is none."""
    latest = _latest(name, where)

    def f(ctx: EvalContext, ev: Event | None) -> int | None:
        e = latest(ctx)
        if e is None:
            return None
        return int((ctx.now - e.timestamp).total_seconds() // DAY)

    return f
