"""Value semantics of the language: operators and scalar functions, null-safe and exception-free.

A marketer's condition must never crash a journey at run time because a property is missing or
has an unexpected type. So, like a small SQL:

- a missing property or trait is `None` (`null`);
- `==` / `!=` compare with `null` normally, and never equate a boolean with a number
  (`true == 1` is false, unlike Python);
- `< <= > >=` compare two numbers or two strings; with `null` or mixed types they give `None`;
- `+ - * /` work on numbers (`+` also joins two strings or two lists); with `null`, mixed types or a
  division by zero they give `None`;
- `in` / `not in` test membership in a list (with `==` above), a substring in a string, a key in an
  object; a `null` or non-container right side is an empty container, so `not in` is always
  `not (x in y)`;
- `and` / `or` / `not` use truthiness and give booleans.
"""

from __future__ import annotations

import math
import operator
from datetime import datetime, timezone, tzinfo
from collections.abc import Mapping
from typing import Any, Callable

from .evaluation import Event
from .functions import EVENT_FIELDS, WEEKDAYS

LISTS = (list, tuple)  # a list literal with constant items evaluates to a tuple: it is shared, so immutable


def is_number(v: Any) -> bool:
    t = type(v)
    if t is int or t is float:
        return True
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# ------------------------------------------------------------------------- events as values


def iso_utc(ts: datetime) -> str:
    """`2026-03-02T10:00:00Z`; sub-second digits only when there are any."""
    spec = "microseconds" if ts.microsecond else "seconds"
    return ts.astimezone(timezone.utc).replace(tzinfo=None).isoformat(timespec=spec) + "Z"


SPECIAL_FIELDS: dict[str, Callable[[Event, tzinfo], Any]] = {
    "local_hour": lambda ev, tz: ev.timestamp.astimezone(tz).hour,
    "local_weekday": lambda ev, tz: WEEKDAYS[ev.timestamp.astimezone(tz).weekday()],
    "timestamp": lambda ev, tz: iso_utc(ev.timestamp),
    "event": lambda ev, tz: ev.event,
}
assert SPECIAL_FIELDS.keys() == EVENT_FIELDS.keys(), "functions.EVENT_FIELDS and the evaluator disagree"


def event_field(ev: Event, name: str, tz: tzinfo) -> Any:
    """A special field (they win over a property of the same name, so they always mean one thing),
    else the property, else None."""
    special = SPECIAL_FIELDS.get(name)
    if special is not None:
        return special(ev, tz)
    return ev.properties.get(name)


def eq(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is b
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, LISTS) and isinstance(b, LISTS):
        return len(a) == len(b) and all(eq(x, y) for x, y in zip(a, b))
    if is_number(a) and is_number(b):
        return a == b
    if type(a) is not type(b) and (is_number(a) or is_number(b)):
        return False
    try:
        return bool(a == b)
    except Exception:  # exotic property values: unequal rather than a crash
        return False


def ne(a: Any, b: Any) -> bool:
    return not eq(a, b)


def _ordering(op: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool | None]:
    def compare(a: Any, b: Any) -> bool | None:
        if is_number(a) and is_number(b):
            return op(a, b)
        if isinstance(a, str) and isinstance(b, str):
            return op(a, b)
        return None

    return compare


lt = _ordering(operator.lt)
le = _ordering(operator.le)
gt = _ordering(operator.gt)
ge = _ordering(operator.ge)


def _arith(op: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    def apply(a: Any, b: Any) -> Any:
        if not (is_number(a) and is_number(b)):
            return None
        try:
            return op(a, b)
        except (OverflowError, ZeroDivisionError):  # 10**400 + 0.5, x / 0
            return None

    return apply


_add_numbers = _arith(operator.add)
sub = _arith(operator.sub)
mul = _arith(operator.mul)
div = _arith(operator.truediv)


def add(a: Any, b: Any) -> Any:
    if isinstance(a, str) and isinstance(b, str):
        return a + b
    if isinstance(a, LISTS) and isinstance(b, LISTS):
        return [*a, *b]
    return _add_numbers(a, b)


def neg(a: Any) -> Any:
    return -a if is_number(a) else None


def contains(container: Any, item: Any) -> bool:
    """`item in container`: never raises, `None` is an empty container."""
    if isinstance(container, LISTS):
        return any(eq(item, x) for x in container)
    if isinstance(container, str):
        return isinstance(item, str) and item in container
    if isinstance(container, Mapping):
        return isinstance(item, str) and item in container
    return False


def in_(a: Any, b: Any) -> bool:
    return contains(b, a)


def not_in(a: Any, b: Any) -> bool:
    return not contains(b, a)


BINARY: dict[str, Callable[[Any, Any], Any]] = {
    "==": eq, "!=": ne, "<": lt, "<=": le, ">": gt, ">=": ge,
    "+": add, "-": sub, "*": mul, "/": div, "in": in_, "not in": not_in,
}


def attr(value: Any, name: str, tz: tzinfo) -> Any:
    """`value.name`: a field of an event, a key of an object, else None."""
    if isinstance(value, Event):
        return event_field(value, name, tz)
    if isinstance(value, Mapping):
        return value.get(name)
    return None


def index(value: Any, key: Any, tz: tzinfo) -> Any:
    """`value[key]`: list/string by whole number (negative from the end), object/event by name."""
    if isinstance(value, (list, tuple, str)):
        if type(key) is int and -len(value) <= key < len(value):
            return value[key]
        return None
    if isinstance(key, str):
        return attr(value, key, tz)
    return None


# ------------------------------------------------------------------------- scalar functions


def f_lower(v: Any) -> Any:
    return v.lower() if isinstance(v, str) else None


def f_upper(v: Any) -> Any:
    return v.upper() if isinstance(v, str) else None


def f_len(v: Any) -> Any:
    return len(v) if isinstance(v, (str, list, tuple, Mapping)) else None


def f_contains(container: Any, item: Any) -> bool:
    return contains(container, item)


def f_starts_with(text: Any, prefix: Any) -> bool:
    return isinstance(text, str) and isinstance(prefix, str) and text.startswith(prefix)


def f_round(v: Any) -> Any:
    """Half away from zero (2.5 → 3, -2.5 → -3): what people expect, unlike Python's banker's rounding."""
    if not is_number(v) or (isinstance(v, float) and not math.isfinite(v)):
        return None
    if isinstance(v, int):
        return v
    return int(math.floor(abs(v) + 0.5)) * (1 if v >= 0 else -1)


def f_abs(v: Any) -> Any:
    return abs(v) if is_number(v) else None


SCALAR: dict[str, Callable[..., Any]] = {
    "lower": f_lower, "upper": f_upper, "len": f_len, "contains": f_contains,
    "starts_with": f_starts_with, "round": f_round, "abs": f_abs,
}
# `coalesce` is lazy (it stops at the first non-null argument), so `journeys.expr` compiles it itself.
