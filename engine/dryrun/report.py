"""The dry-run's report: a sink that counts effects as they stream past, per journey and step.

It keeps counters, not effects, so a report over millions of events costs a few dictionaries.
`Report.to_json()` is the machine-readable form (`journeys simulate --json`); its keys are sorted
and its numbers rounded, so the same inputs give byte-identical files.

A message the dry-run's render check found the daemon could not deliver (its template fails to
render, or the user has no address) is `failed`, with the error, never `sent`.

Sends and audience updates are counted apart: an audience change that passed (`audience_add`,
`audience_remove`) syncs an ad platform's audience and sends the user nothing, so it is an audience
update (`audience_updates`, `updated` per step, `audience_updates_per_day`), never a send.

Uplift: for each split, each arm's conversion rate per goal (conversions / users assigned) is
compared with the control group's: `uplift` is the relative change ((arm - control) / control),
None when the control group has no conversions to compare with.

Order: every mapping of the JSON form is in a fixed order (steps by path, their numbers as numbers;
everything else by key), never in the order things first happened: a run split over several
processes (engine.dryrun.partitioned) adds its partitions' reports with `Report.absorb`, and the
summary table, which lists steps as the mapping holds them, must read the same either way.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from ..core.effects import (DEFERRED, FAILED, SENT, SUPPRESSED, UPDATED, Action, Conversion, Effect, ModelsTrained,
                            Received, Transition, reported_outcome)
from ..core.program import Program
from ..core.state import UserState


@dataclass
class JourneyCounts:
    name: str
    version: str
    entered: int = 0
    completed: int = 0
    still_in: int = 0
    exited: Counter = field(default_factory=Counter)  # reason → n
    reached: Counter = field(default_factory=Counter)  # step path → n
    sent: Counter = field(default_factory=Counter)  # kind → n (messages and webhooks)
    audience_updates: Counter = field(default_factory=Counter)  # audience_add | audience_remove → n
    templates: Counter = field(default_factory=Counter)  # "kind target" → n, sent or updated
    suppressed: Counter = field(default_factory=Counter)  # reason → n
    failed: Counter = field(default_factory=Counter)  # 'kind "target": error' → n (the dry-run's render check)
    parked: Counter = field(default_factory=Counter)  # why the engine could not run a step → runs parked
    capped: Counter = field(default_factory=Counter)  # rule → n
    deferred: Counter = field(default_factory=Counter)  # quiet-hours rule → n
    conversions: Counter = field(default_factory=Counter)  # goal → n
    step_actions: Counter = field(default_factory=Counter)  # (path, "sent" | "updated" | reason | "deferred") → n
    arm_users: Counter = field(default_factory=Counter)  # (split path, arm) → n
    arm_conversions: Counter = field(default_factory=Counter)  # (split path, arm, goal) → n

    COUNTERS = ("exited", "reached", "sent", "audience_updates", "templates", "suppressed", "failed", "parked",
                "capped", "deferred", "conversions", "step_actions", "arm_users", "arm_conversions")

    def add(self, other: JourneyCounts) -> None:
        """Count `other`'s numbers too (the same journey, other users)."""
        self.entered += other.entered
        self.completed += other.completed
        self.still_in += other.still_in
        for name in self.COUNTERS:
            getattr(self, name).update(getattr(other, name))

    def to_json(self, goals: Sequence[str]) -> dict[str, Any]:
        return {
            "version": self.version,
            "entered": self.entered,
            "still_in": self.still_in,
            "completed": self.completed,
            "exited": _sorted(self.exited),
            "reached": dict(sorted(self.reached.items(), key=lambda kv: _path_order(kv[0]))),
            "sent": _sorted(self.sent),
            "audience_updates": _sorted(self.audience_updates),
            "templates": _sorted(self.templates),
            "suppressed": _sorted(self.suppressed),
            "failed": _sorted(self.failed),
            "parked": _sorted(self.parked),
            "capped_by_rule": _sorted(self.capped),
            "deferred_by_quiet_hours": _sorted(self.deferred),
            "conversions": {g: self.conversions.get(g, 0) for g in goals},
            "actions_by_step": self._by_step(),
            "splits": self._splits(goals),
        }

    def _by_step(self) -> dict[str, dict[str, int]]:
        """Per action step: sent (updated for an audience step), deferred, and suppressed by reason
        (`cap`, `consent`, `exit`)."""
        out: dict[str, dict[str, int]] = {}
        for (path, what), n in sorted(self.step_actions.items(), key=lambda kv: (_path_order(kv[0][0]), kv[0][1])):
            out.setdefault(path, {})[what] = n
        return out

    def _splits(self, goals: Sequence[str]) -> dict[str, Any]:
        out: dict[str, dict[str, Any]] = {}
        for (split, arm), users in sorted(self.arm_users.items(), key=lambda kv: (_path_order(kv[0][0]), kv[0][1])):
            conv = {g: self.arm_conversions.get((split, arm, g), 0) for g in goals}
            rate = {g: _ratio(conv[g], users) for g in goals}
            out.setdefault(split, {})[arm] = {"users": users, "conversions": conv, "rate": rate}
        for split, arms in out.items():
            control = arms.get("control")
            for arm, row in arms.items():
                if arm == "control" or control is None:
                    continue
                row["uplift"] = {g: _uplift(row["rate"][g], control["rate"][g]) for g in goals}
        return out


def _sorted(counts: Mapping[str, int]) -> dict[str, int]:
    return dict(sorted(counts.items()))


def _path_order(path: str | None) -> tuple[tuple[int, int, str], ...]:
    """A step path's place among its journey's: part by part, numbers as numbers (`j/2` before
    `j/10`), so steps list in the order they come."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in (path or "").split("/"))


def _ratio(n: int, d: int) -> float | None:
    return round(n / d, 6) if d else None


def _uplift(rate: float | None, control: float | None) -> float | None:
    if rate is None or not control:
        return None
    return round((rate - control) / control, 6)


class Report:
    """A sink: give it every effect of a run, then `finish(states)` with the final states."""

    reads_reasons = False  # it counts refused entries by nothing (engine.runtime.sinks.reads_reasons)

    def __init__(self, program: Program):
        self.program = program
        self.journeys: dict[str, JourneyCounts] = {
            name: JourneyCounts(name, j.version) for name, j in program.journeys.items()}
        self.inputs: Counter = Counter()  # input kind → n
        self.users: set[str] = set()
        self.sends_per_day: dict[str, Counter] = defaultdict(Counter)
        self.audience_updates_per_day: dict[str, Counter] = defaultdict(Counter)
        self.models: list[dict[str, Any]] = []  # each training of the models (ModelsTrained.to_json)
        self._handlers = {Transition: self._transition, Action: self._action, Conversion: self._conversion,
                          Received: self._received, ModelsTrained: self._trained}  # by exact type: the hot path

    def __getstate__(self) -> dict[str, Any]:
        """A partition's report crosses to the coordinator as its counts: not the program (its
        conditions are closures), which the coordinator's own report holds."""
        state = dict(self.__dict__)
        del state["program"], state["_handlers"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.program = None  # type: ignore[assignment]  # only absorbed, never rendered alone

    def absorb(self, other: Report) -> None:
        """Add the report of another part of the same run (a partition: other users, the same
        program and clock): counters add, users join; the models trained are the same run's
        trainings, seen by every part, so they are kept once."""
        for name, theirs in other.journeys.items():
            self._counts(name, theirs.version).add(theirs)
        self.inputs.update(other.inputs)
        self.users |= other.users
        for mine, theirs in ((self.sends_per_day, other.sends_per_day),
                             (self.audience_updates_per_day, other.audience_updates_per_day)):
            for day, counts in theirs.items():
                mine[day].update(counts)
        if not self.models:
            self.models = list(other.models)
        elif other.models and other.models != self.models:
            raise ValueError("the parts of a run trained different models")

    def emit(self, effects: Sequence[Effect]) -> None:
        handlers = self._handlers
        for e in effects:
            handler = handlers.get(type(e))
            if handler is not None:
                handler(e)

    def _conversion(self, e: Conversion) -> None:
        c = self._counts(e.journey, e.version)
        c.conversions[e.goal] += 1
        for split, arm in e.arms:
            c.arm_conversions[(split, arm, e.goal)] += 1

    def _trained(self, e: ModelsTrained) -> None:
        self.models.append(e.to_json())

    def _received(self, e: Received) -> None:
        self.inputs[e.kind] += 1
        self.users.add(e.user)

    def _counts(self, journey: str, version: str) -> JourneyCounts:
        c = self.journeys.get(journey)
        if c is None:  # an older version's run, in the daemon's reports
            c = self.journeys[journey] = JourneyCounts(journey, version)
        return c

    def _transition(self, t: Transition) -> None:
        c = self._counts(t.journey, t.version)
        kind = t.kind
        if kind == "step":
            c.reached[t.path] += 1
        elif kind == "entered":
            c.entered += 1
        elif kind == "completed":
            c.completed += 1
        elif kind in ("exited", "merged"):
            c.exited[t.detail if kind == "exited" else "merged with another identity"] += 1
        elif kind == "parked":
            c.parked[t.detail] += 1
        elif kind == "split":
            c.reached[t.path] += 1
            split, _, arm = (t.path or "").rpartition("/")
            c.arm_users[(split, arm)] += 1

    def _action(self, a: Action) -> None:
        c = self._counts(a.journey, a.version)
        outcome = reported_outcome(a.kind, a.outcome)
        c.step_actions[(a.path, outcome if outcome != SUPPRESSED else f"suppressed by {a.reason}")] += 1
        if outcome == SENT or outcome == UPDATED:
            counts, per_day = (c.sent, self.sends_per_day) if outcome == SENT else (
                c.audience_updates, self.audience_updates_per_day)
            counts[a.kind] += 1
            c.templates[f"{a.kind} {a.target}"] += 1
            per_day[a.time.date().isoformat()][a.kind] += 1
        elif outcome == SUPPRESSED:
            c.suppressed[a.reason or "unknown"] += 1
            if a.reason == "cap" and a.rule:
                c.capped[a.rule] += 1
        elif a.outcome == DEFERRED:
            c.deferred[a.rule or "quiet hours"] += 1
        elif a.outcome == FAILED:
            c.failed[f'{a.kind} "{a.target}": {a.reason}'] += 1

    def finish(self, states: Iterable[UserState]) -> None:
        """Count who is still in each journey at the end of the run."""
        for state in states:
            for inst in state.instances.values():
                if inst.exiting is None:
                    self._counts(inst.journey, inst.version).still_in += 1

    def to_json(self, parameters: Mapping[str, Any] | None = None) -> dict[str, Any]:
        goals = {name: [g.name for g in j.goals] for name, j in self.program.journeys.items()}
        return {
            "parameters": dict(parameters or {}),
            "inputs": _sorted(self.inputs),
            "users": len(self.users),
            "journeys": {name: c.to_json(goals.get(name, [])) for name, c in self.journeys.items()},
            "sends_per_day": _by_day(self.sends_per_day),
            "audience_updates_per_day": _by_day(self.audience_updates_per_day),
            **({"models": self.models} if self.models else {}),  # a project that predicts nothing: as before
        }


def _by_day(counts: Mapping[str, Counter]) -> dict[str, dict[str, int]]:
    return {day: _sorted(v) for day, v in sorted(counts.items())}
