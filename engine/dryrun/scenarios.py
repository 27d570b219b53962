"""`journeys test`: run the scenarios of `tests/*.test` through the engine and check what they expect.

A scenario is a tiny dry-run: its users and events become Segment messages, the daemon's engine
runs them on a virtual clock from an empty in-memory store, and the expectations are checked
against what came out. Nothing here decides anything about journeys; it only sets up inputs and
compares outcomes (docs/language.md, "How a scenario runs"):

- events are processed in time order, timers due at or before an event fire first;
- memberships and traits `at TIME` are read once everything up to and including TIME has run;
- the clock then runs on until no user has a timer left (every journey has ended), and at least
  to the latest time an expectation names;
- a send expectation holds if some action matches it (`within D` widens the moment to ±D); `no`
  holds if none does.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Sequence

from journeys import ast as A
from journeys.diagnostics import Diagnostics
from journeys.evaluation import Context
from journeys.expr import compile_expr
from journeys.scenario_check import timestamp
from journeys.values import BINARY

from ..core.effects import DEFERRED, SENT, SUPPRESSED, Action, ModelsTrained, iso
from ..core.messages import Message
from ..core.program import Program
from ..core.state import UserState
from ..runtime.clock import VirtualClock
from ..runtime.loop import Engine, handle_all
from ..runtime.sinks import Recorder
from ..store.base import MemoryStore
from .trace import Trace

HORIZON = timedelta(days=400)  # a scenario's clock never runs further than this past its last time
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass
class Outcome:
    """One scenario's result: `failures` hold expected-versus-actual texts; `traces` the timelines
    of the users a failure is about."""

    name: str
    file: str
    line: int
    failures: list[str] = field(default_factory=list)
    traces: dict[str, list[str]] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.failures


def _time(ts: A.Timestamp) -> datetime:
    moment = timestamp(ts, Diagnostics())
    if moment is None:  # the checker reports bad times before a scenario ever runs
        raise ValueError(f"bad time in a scenario at {ts.span}")
    return moment


def _value(expr: A.Node) -> Any:
    return compile_expr(expr)(Context(now=EPOCH))


def _pairs(pairs: Sequence[A.Pair]) -> dict[str, Any]:
    return {p.key.value: _value(p.value) for p in pairs}


@dataclass
class _Check:
    """An expectation with the moment it is read at (None: the end of the run)."""

    statement: Any
    at: datetime | None


def _inputs(scenario: A.Scenario) -> tuple[list[Message], list[_Check]]:
    timed: list[tuple[datetime, int, Message]] = []
    users: list[A.TestUser] = []
    checks: list[_Check] = []
    for n, st in enumerate(scenario.statements):
        if isinstance(st, A.TestUser):
            users.append(st)
        elif isinstance(st, A.TestEvent) and st.at is not None:
            at = _time(st.at)
            timed.append((at, n, Message("track", f"scenario-{n}", at, user_id=st.user.value, event=st.event.value,
                                         properties=_pairs(st.properties))))
        elif isinstance(st, A.TestIdentify) and st.at is not None:
            at = _time(st.at)
            timed.append((at, n, Message("identify", f"scenario-{n}", at, user_id=st.user.value,
                                         traits=_pairs(st.traits))))
        elif isinstance(st, (A.ExpectSend, A.ExpectMembership, A.ExpectTrait)):
            checks.append(_Check(st, _time(st.when.at) if st.when is not None else None))
    moments = [t for t, _, _ in timed] + [c.at for c in checks if c.at is not None]
    start = min(moments) if moments else EPOCH
    # users "exist from the start": their traits arrive before anything else happens
    first = [Message("identify", f"scenario-user-{i}", start, user_id=u.user.value, traits=_pairs(u.traits))
             for i, u in enumerate(users)]
    timed.sort(key=lambda x: (x[0], x[1]))
    return first + [m for _, _, m in timed], checks


class _Pinned:
    """The project's models with a scenario's pinned scores (`given user "u" predicted churn in
    60d = 0.9`) in front: every other score, and every other model's answer, is the models' own."""

    def __init__(self, models: Any, pins: dict[tuple[str, str, int], float | None]):
        self._models, self._pins = models, pins

    def predict(self, f: Any, now: int, model: str, horizon_seconds: int, user: str | None = None) -> float | None:
        key = (user or "", model, horizon_seconds)
        if key in self._pins:
            return self._pins[key]
        return self._models.predict(f, now, model, horizon_seconds, user)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._models, name)


def _pins(scenario: A.Scenario) -> dict[tuple[str, str, int], float | None]:
    return {(st.user.value, st.prediction.model.value, st.prediction.horizon.seconds): st.value
            for st in scenario.statements if isinstance(st, A.TestPrediction)}


def run_scenario(program: Program, scenario: A.Scenario, file: str) -> Outcome:
    messages, checks = _inputs(scenario)
    outcome = Outcome(scenario.name.value, file, scenario.span.line if scenario.span else 0)
    if not messages and not checks:
        return outcome
    start = messages[0].timestamp if messages else min(c.at for c in checks if c.at is not None)
    store, recorder = MemoryStore(), Recorder()
    pins = _pins(scenario)
    if pins:
        program = replace(program, models=_Pinned(program.models, pins))
    engine = Engine(program, store, VirtualClock(start), recorder)
    if pins:  # each training's version goes in behind the pins, and is reported as the engine would
        def keep_pins(models: Any, at: datetime) -> None:
            engine.program = replace(engine.program, models=_Pinned(models, pins))
            recorder.emit([ModelsTrained(at, models.version, models.describe())])
        engine.on_trained = keep_pins
    snapshots: dict[tuple[datetime, str], UserState | None] = {}
    pending = sorted({c.at for c in checks if c.at is not None})
    done = 0
    for moment in pending:  # run up to each moment an expectation reads, and take pictures
        upto = [m for m in messages[done:] if m.timestamp <= moment]
        handle_all(engine, upto, moment)
        done += len(upto)
        for c in checks:
            if c.at == moment and not isinstance(c.statement, A.ExpectSend):
                user = c.statement.user.value
                snapshots[(moment, user)] = _state(store, user)
    last = max([m.timestamp for m in messages] + pending)
    handle_all(engine, messages[done:], last)
    while (due := store.next_timer(last + HORIZON)) is not None:  # until every journey has ended
        handle_all(engine, [], due[0])
    actions = recorder.actions
    for c in checks:
        problem = _check(c, actions, snapshots, store)
        if problem is not None:
            outcome.failures.append(problem)
            user = c.statement.user.value
            if user not in outcome.traces:
                trace = Trace(user)
                trace.emit(recorder.effects)
                outcome.traces[user] = trace.lines()
    return outcome


def _state(store: MemoryStore, user: str) -> UserState | None:
    uid = store.resolve(user) or user
    return store.load(uid)


def _where(st: Any) -> str:
    return f"line {st.span.line}" if st.span else "?"


def _check(c: _Check, actions: list[Action], snapshots: dict, store: MemoryStore) -> str | None:
    st = c.statement
    if isinstance(st, A.ExpectSend):
        return _check_send(st, c.at, actions)
    state = snapshots.get((c.at, st.user.value)) if c.at is not None else _state(store, st.user.value)
    when = f" at {iso(c.at)}" if c.at is not None else " at the end"
    if isinstance(st, A.ExpectMembership):
        if st.kind == "journey":
            inst = state.instances.get(st.name.value) if state is not None else None
            member = inst is not None and inst.exiting is None
            actual = f"in it, at step {inst.path}" if member else "not in it"
        else:
            member = state is not None and st.name.value in state.audiences
            actual = "in it" if member else "not in it"
        if member == st.negated:
            want = "not in" if st.negated else "in"
            return (f"{_where(st)}: expected user \"{st.user.value}\" {want} {st.kind} \"{st.name.value}\"{when}; "
                    f"actually {actual}")
        return None
    if isinstance(st, A.ExpectTrait):
        actual = state.traits.get(st.trait.value) if state is not None else None
        expected = _value(st.value)
        if BINARY[st.op](actual, expected) is not True:
            return (f"{_where(st)}: expected user \"{st.user.value}\" has {st.trait.value} {st.op} {expected!r}"
                    f"{when}; actually {st.trait.value} is {actual!r}")
        return None
    return f"{_where(st)}: this expectation is not supported"  # pragma: no cover - the grammar has no other


def _check_send(st: A.ExpectSend, at: datetime | None, actions: list[Action]) -> str | None:
    channel, user = st.channel.value, st.user.value
    template = st.template.value if st.template is not None else None
    reason = st.suppressed.value if st.suppressed is not None else None
    within = timedelta(seconds=st.when.within.seconds) if st.when is not None and st.when.within else timedelta(0)

    def outcome_ok(a: Action) -> bool:
        if reason is None:
            return a.outcome == SENT
        if reason == "quiet hours":
            return a.outcome == DEFERRED
        return a.outcome == SUPPRESSED and a.reason == reason

    def time_ok(a: Action) -> bool:
        return at is None or abs(a.time - at) <= within

    mine = [a for a in actions if a.user == user and a.kind == channel and (template is None or a.target == template)]
    hits = [a for a in mine if outcome_ok(a) and time_ok(a)]
    named = f' "{template}"' if template else ""
    what = f'{channel}{named} to "{user}"'
    if reason is not None:
        what += f" suppressed by {reason}"
    if at is not None:
        what += f" at {iso(at)}" + (f" within {st.when.within}" if st.when and st.when.within else "")
    if st.negated and hits:
        return f"{_where(st)}: expected no {what}; actually: " + "; ".join(_describe(a) for a in hits)
    if not st.negated and not hits:
        seen = "; ".join(_describe(a) for a in mine) or f'no {channel}{named} for "{user}" at all'
        return f"{_where(st)}: expected {what}; actually: {seen}"
    return None


def _describe(a: Action) -> str:
    extra = f" by {a.reason}" if a.reason else ""
    if a.rule:
        extra += f" ({a.rule})"
    return f"{a.kind} \"{a.target}\" {a.outcome}{extra} at {iso(a.time)}"
