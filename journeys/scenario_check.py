"""Checks of scenario files (tests/*.test): what they name must exist, what they time must be a time."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from . import ast as A
from .diagnostics import Diagnostics
from .expr_check import ExprChecker, Scope
from .functions import CHANNELS, SUPPRESSION_REASONS
from .suggest import did_you_mean

if TYPE_CHECKING:
    from .project import Project


def check_scenarios(project: "Project", diags: Diagnostics) -> None:
    journeys = {j.name.value for j in project.journeys}
    audiences = project.declared.get("audiences", set())
    names: dict[str, A.Scenario] = {}
    for sc in project.scenarios:
        if sc.name.value in names:
            diags.error("J024", f"scenario `{sc.name.value}` is declared twice", sc.name.span,
                        f"the first one is at {names[sc.name.value].name.span}")
        names.setdefault(sc.name.value, sc)
        for st in sc.statements:
            _statement(st, project, journeys, audiences, diags)


def _statement(st, project: "Project", journeys: set[str], audiences: set[str], diags: Diagnostics) -> None:
    if isinstance(st, (A.TestEvent, A.TestIdentify)):
        if st.at is None:
            diags.error("J041", "this event has no time", st.span, "start it with `at 2026-03-02 10:00`")
        else:
            timestamp(st.at, diags)
    elif isinstance(st, A.TestPrediction):
        ExprChecker(diags, set()).expr(st.prediction, Scope())  # the model and horizon, as in a journey
        if st.value is not None and not 0.0 <= st.value <= 1.0:
            diags.error("J041", f"a prediction is a probability between 0 and 1, not {st.value:g}", st.span,
                        "write a value from 0 to 1 (`0.85`), or `null` for \"no score yet\"")
    elif isinstance(st, A.ExpectTime):
        diags.error("J041", "this `at` times nothing", st.span,
                    "put it before an event (`at ... event \"X\" user \"u\"`) or after an expectation")
    elif isinstance(st, A.ExpectSend):
        _when(st.when, diags)
        channel = st.channel.value
        if channel not in CHANNELS:
            diags.error("J015", f"unknown channel `{channel}`", st.channel.span,
                        did_you_mean(channel, CHANNELS, otherwise="channels are " + ", ".join(CHANNELS)))
        elif st.template is not None and (channel, st.template.value) not in project.templates:
            names = [n for (c, n) in project.templates if c == channel]
            diags.error("J011", f"unknown {channel} template `{st.template.value}`", st.template.span,
                        did_you_mean(st.template.value, names, quote='"'))
        if st.suppressed is not None and st.suppressed.value not in SUPPRESSION_REASONS:
            diags.error("J041", f"unknown suppression reason `{st.suppressed.value}`", st.suppressed.span,
                        did_you_mean(st.suppressed.value, SUPPRESSION_REASONS,
                                     otherwise="reasons are " + ", ".join(SUPPRESSION_REASONS)))
    elif isinstance(st, A.ExpectMembership):
        _when(st.when, diags)
        pool, code = (journeys, "J042") if st.kind == "journey" else (audiences, "J012")
        if st.name.value not in pool:
            diags.error(code, f"unknown {st.kind} `{st.name.value}`", st.name.span,
                        did_you_mean(st.name.value, pool, quote='"'))
    elif isinstance(st, A.ExpectTrait):
        _when(st.when, diags)


def _when(when: A.ExpectTime | None, diags: Diagnostics) -> None:
    if when is not None:
        timestamp(when.at, diags)


def timestamp(ts: A.Timestamp, diags: Diagnostics) -> dt.datetime | None:
    """The UTC instant of a scenario timestamp (no offset means UTC), or None after a diagnostic."""
    try:
        day = dt.date.fromisoformat(ts.date)
    except ValueError:
        diags.error("J041", f"`{ts.date}` is not a date", ts.span, "write dates as YYYY-MM-DD, e.g. 2026-03-02")
        return None
    if not ts.time.valid:
        diags.error("J032", f"`{ts.time.hour}:{ts.time.minute:02d}` is not a time of day", ts.time.span,
                    "hours are 0-23 and minutes 0-59")
        return None
    tz = dt.timezone.utc
    if ts.offset and ts.offset != "Z":
        sign = 1 if ts.offset[0] == "+" else -1
        hours, minutes = int(ts.offset[1:3]), int(ts.offset[4:6])
        if hours > 14 or minutes > 59:
            diags.error("J041", f"`{ts.offset}` is not a UTC offset", ts.span, "offsets run from -12:00 to +14:00")
            return None
        tz = dt.timezone(sign * dt.timedelta(hours=hours, minutes=minutes))
    return dt.datetime.combine(day, dt.time(ts.time.hour, ts.time.minute), tz).astimezone(dt.timezone.utc)
