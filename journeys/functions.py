"""The functions a condition may call: their names, parameters and result types.

One table serves the checker (unknown function, wrong arity, wrong kind of argument, types of
comparisons) and the compiler (which history each call needs). Parameter kinds:

- `event`    an `event "Name" [where ...]` match
- `window`   `last 7d`
- `property` a bare property name of the matched event (`sum(event "Order Completed", revenue, last 30d)`)
- `value`    any expression
"""

from __future__ import annotations

from dataclasses import dataclass

# Result types known statically; "any" means unknown until run time (traits, properties).
NUMBER, STRING, BOOL, EVENT, LIST, DURATION, TIME, NULL, ANY = (
    "number", "string", "bool", "event", "list", "duration", "time", "null", "any",
)


@dataclass(frozen=True)
class Signature:
    name: str
    params: tuple[str, ...]  # kinds, in order
    optional: int = 0  # how many trailing params may be left out
    variadic: bool = False  # the last param repeats
    returns: str = ANY
    history: bool = False  # reads the user's event history
    doc: str = ""

    @property
    def min_args(self) -> int:
        return len(self.params) - self.optional

    @property
    def max_args(self) -> int | None:
        return None if self.variadic else len(self.params)

    def usage(self) -> str:
        shown = {"event": 'event "Name"', "window": "last 7d", "property": "property", "value": "x"}
        parts = [shown[k] for k in self.params]
        if self.optional:
            parts = parts[: -self.optional] + [f"[{p}]" for p in parts[-self.optional :]]
        if self.variadic:
            parts.append("...")
        return f"{self.name}({', '.join(parts)})"


FUNCTIONS: dict[str, Signature] = {
    s.name: s
    for s in (
        Signature("count", ("event", "window"), returns=NUMBER, history=True,
                  doc="How many matching events the user had in the window."),
        Signature("happened", ("event", "window"), optional=1, returns=BOOL, history=True,
                  doc="Whether the user had at least one matching event in the window (ever, without one)."),
        Signature("sum", ("event", "property", "window"), returns=NUMBER, history=True,
                  doc="The sum of a numeric property over matching events in the window."),
        Signature("avg", ("event", "property", "window"), returns=NUMBER, history=True,
                  doc="The mean of a numeric property over matching events in the window (null if none)."),
        Signature("last", ("event",), returns=EVENT, history=True,
                  doc="The most recent matching event; read its properties with `.name`."),
        Signature("days_since", ("event",), returns=NUMBER, history=True,
                  doc="Whole days since the most recent matching event (null if it never happened)."),
        Signature("lower", ("value",), returns=STRING, doc="The text in lower case."),
        Signature("upper", ("value",), returns=STRING, doc="The text in upper case."),
        Signature("len", ("value",), returns=NUMBER, doc="The length of a text or a list."),
        Signature("contains", ("value", "value"), returns=BOOL, doc="Whether a text contains another, or a list an item."),
        Signature("starts_with", ("value", "value"), returns=BOOL, doc="Whether a text starts with another."),
        Signature("coalesce", ("value",), variadic=True, returns=ANY, doc="The first argument that is not null."),
        Signature("round", ("value",), returns=NUMBER, doc="The number rounded to the nearest whole number."),
        Signature("abs", ("value",), returns=NUMBER, doc="The absolute value of a number."),
    )
}

# Names that mean something inside `where` besides the event's own properties.
EVENT_FIELDS: dict[str, str] = {
    "local_hour": NUMBER,  # 0-23, the event's time in the user's timezone
    "local_weekday": STRING,  # "mon" ... "sun"
    "timestamp": STRING,  # ISO 8601, UTC
    "event": STRING,  # the event's name
}

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

# `entry every DAY at ...`
EVERY_DAYS = {
    "day": "*", "weekday": "mon-fri", "weekend": "sat,sun",
    "monday": "mon", "tuesday": "tue", "wednesday": "wed", "thursday": "thu", "friday": "fri",
    "saturday": "sat", "sunday": "sun",
}

CHANNELS = ("email", "push", "sms")  # sendable channels (`send CHANNEL "template"`)
CAP_CHANNELS = CHANNELS + ("ads", "webhook", "all")  # what a cap can count
SUPPRESSION_REASONS = ("cap", "quiet hours", "consent", "undeliverable", "exit")

# `predicted MODEL in HORIZON`: the models a condition can read, each a probability in [0, 1].
PREDICTION_MODELS: dict[str, str] = {
    "purchase": "the probability that the user buys (an `Order Completed`) within the horizon",
    "churn": "the probability that the user shows no activity at all within the horizon",
}
PREDICTION_HORIZON_DAYS = (1, 3650)  # a horizon is a whole number of days or hours in this range
BEST_TIME_WINDOW_SECONDS = (3600, 7 * 86400)  # `at best time within W`: 1h to 7d
AUTO_CAP_CHANNELS = CHANNELS  # a learned cap learns from the engagement that follows messages
AUTO_CAP_LIMIT = 1000  # the largest `max` of a learned cap


def prediction_key(model: str, horizon_seconds: int) -> str:
    """The name of a prediction in a template's `predicted` mapping and in `journeys score`'s
    columns: `purchase_30d`, `churn_36h` (days when the horizon is whole days, else hours)."""
    if horizon_seconds % 86400 == 0:
        return f"{model}_{horizon_seconds // 86400}d"
    return f"{model}_{horizon_seconds // 3600}h"


def parse_prediction_key(key: str) -> tuple[str, int] | None:
    """`purchase_30d` → ("purchase", 2592000); None when it is not MODEL_<n>d or MODEL_<n>h (the
    model is not checked here)."""
    model, _, horizon = key.rpartition("_")
    if not model or len(horizon) < 2 or horizon[-1] not in "dh" or not horizon[:-1].isdigit():
        return None
    return model, int(horizon[:-1]) * (86400 if horizon[-1] == "d" else 3600)
