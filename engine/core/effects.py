"""What a step asks the world to do, and what it reports having decided.

`engine.core.step.step` returns these; it performs none of them. The runtime hands every effect to
its sink: the dry-run's sink records and reports, the daemon's delivers actions and logs the rest.
Each effect is a plain frozen value with a `to_json()` giving the stable, sorted form that
reports, `--sends` files and traces print (byte-identical across runs).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Mapping

from journeys.fast_init import fast_init

# Outcomes of an action
SENT = "sent"  # passed every delivery step: the sink delivers it
SUPPRESSED = "suppressed"  # stopped before the sink: `reason` (and `rule` for caps) say why
DEFERRED = "deferred"  # held by quiet hours until `until`; the same action id is decided again then
# A message the engine sent whose template cannot be rendered, or the user not addressed: what the
# daemon's delivery would fail with, as the dry-run reports it (`reason`: the error). The engine
# itself never decides it (engine.dryrun.render_check).
FAILED = "failed"
# What reports, the admin API and the metrics call an audience change that passed: an audience
# update, not a send (it syncs ad platforms' audiences; the user receives nothing). The engine's
# outcome stays SENT: the sink delivers it, the action log and `journeys replay` keep the decision.
UPDATED = "updated"
AUDIENCE_KINDS = frozenset({"audience_add", "audience_remove"})


def reported_outcome(kind: str, outcome: str) -> str:
    """An action's outcome as people read it: `updated` for an audience change that passed, else
    the engine's outcome (sent, suppressed, deferred)."""
    return UPDATED if outcome == SENT and kind in AUDIENCE_KINDS else outcome


def iso(t: datetime | None) -> str | None:
    """UTC, seconds precision unless there are microseconds: the one time format of all outputs."""
    if t is None:
        return None
    return t.isoformat().replace("+00:00", "Z")


def action_id(journey: str, version: str, user: str, entry: int, path: str) -> str:
    """Deterministic: the same action of the same run of a journey always has the same id, so
    a retry, a crash or a replay can never make it a second message."""
    raw = "\x1f".join((journey, version, user, str(entry), path)).encode()
    return hashlib.sha256(raw).hexdigest()[:24]


@fast_init
@dataclass(frozen=True, slots=True)
class Action:
    """An action a journey step produced, with the delivery decision.

    `kind`: email | push | sms | audience_add | audience_remove | webhook. `channel`: what caps
    count it as (email, push, sms, ads, webhook; None for removals, never capped). `target`: the
    template, audience or webhook name. `data`: the evaluated `with {...}` values. `named`: the
    journey's `as` events, as plain dicts (what templates may read). `event`: the event that started
    the run, in every action of it (after waits, released from quiet hours, in `on exit`); None
    for a scheduled entry or a segment entry a profile update caused. `current_event`: the event
    the step ran on (the one that started the run, ended a `wait for`, or ended the run); None
    after a timer; a send held by quiet hours keeps the one it had. `predictions`: what templates
    read as `recommended` and `predicted`, scored when the step decided the message (so the
    daemon's delivery and the dry-run render the same); None when the project predicts nothing."""

    id: str
    time: datetime
    user: str
    journey: str
    version: str
    entry: int
    path: str
    kind: str
    channel: str | None
    target: str
    outcome: str
    reason: str | None = None
    rule: str | None = None
    until: datetime | None = None
    via: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    named: Mapping[str, Any] = field(default_factory=dict)
    event: Mapping[str, Any] | None = None  # the event that started the run (templates' `event`)
    current_event: Mapping[str, Any] | None = None  # the event the step ran on (`current_event`)
    predictions: Mapping[str, Any] | None = None  # templates' `recommended` and `predicted`

    @property
    def is_message(self) -> bool:
        return self.kind in ("email", "push", "sms")

    def to_json(self) -> dict[str, Any]:
        out = {
            "id": self.id, "time": iso(self.time), "user": self.user, "journey": self.journey,
            "version": self.version, "entry": self.entry, "path": self.path, "kind": self.kind,
            "channel": self.channel, "target": self.target, "outcome": self.outcome,
            "reason": self.reason, "rule": self.rule, "until": iso(self.until), "via": self.via,
            "data": dict(self.data), "named": dict(self.named), "event": self.event,
            "current_event": self.current_event,
        }
        if self.predictions is not None:  # left out when absent: outputs of projects without models stay as they were
            out["predictions"] = dict(self.predictions)
        return out


@fast_init
@dataclass(frozen=True, slots=True)
class Transition:
    """A user moved in a journey; `detail` says why, in words a marketer reads in a trace.

    `kind`: entered | not_entered | step | waiting | resumed | branch | split | exited |
    completed | merged. `path` is the step concerned (None for entries and ends); a split's is the
    arm's path (`<split>/<arm>`, `<split>/control`)."""

    time: datetime
    user: str
    journey: str
    version: str
    entry: int
    kind: str
    path: str | None = None
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"time": iso(self.time), "user": self.user, "journey": self.journey, "version": self.version,
                "entry": self.entry, "kind": self.kind, "path": self.path, "detail": self.detail}


@fast_init
@dataclass(frozen=True, slots=True)
class TraitChange:
    """A trait was written: by an identify call (journey None) or a `set` step."""

    time: datetime
    user: str
    trait: str
    value: Any
    journey: str | None = None
    path: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"time": iso(self.time), "user": self.user, "trait": self.trait, "value": self.value,
                "journey": self.journey, "path": self.path}


@fast_init
@dataclass(frozen=True, slots=True)
class Conversion:
    """A goal was reached within its window after an entry (in flight, ended, or in control)."""

    time: datetime
    user: str
    journey: str
    version: str
    entry: int
    goal: str
    arms: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"time": iso(self.time), "user": self.user, "journey": self.journey, "version": self.version,
                "entry": self.entry, "goal": self.goal, "arms": [list(a) for a in self.arms]}


@fast_init
@dataclass(frozen=True, slots=True)
class Received:
    """An input reached a user (for traces): an event, a profile update, a merge, a schedule."""

    time: datetime
    user: str
    kind: str  # track | identify | alias | group | schedule | duplicate
    name: str | None = None
    detail: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"time": iso(self.time), "user": self.user, "kind": self.kind, "name": self.name,
                "detail": self.detail}


@dataclass(frozen=True, slots=True)
class ModelsTrained:
    """The models were trained as of `time` (engine.models.modelset): `summary` is the version's
    description (status, evidence and metrics per family), for reports, logs and traces."""

    time: datetime
    version: str
    summary: Mapping[str, Any]

    @property
    def user(self) -> str:
        return ""

    def to_json(self) -> dict[str, Any]:
        return {"time": iso(self.time), "version": self.version, "summary": dict(self.summary)}


Effect = Action | Transition | TraitChange | Conversion | Received | ModelsTrained


def format_effect(e: Effect) -> str:
    """One line of a user's timeline, for people: the dry-run's `--trace` and the daemon's trail
    (`GET /admin/users/{id}/trace`) print effects with this, so they read the same."""
    when = iso(e.time)
    if isinstance(e, Received):
        what = {"track": f"event {e.name}", "page": f"event {e.name}", "screen": f"event {e.name}",
                "identify": "profile update", "group": "group", "schedule": f"schedule of {e.name}",
                }.get(e.kind, e.kind)
        detail = f"  ({e.detail})" if e.detail else ""
        return f"{when}  {e.user}  {what}{detail}"
    if isinstance(e, Transition):
        where = f" {e.path}" if e.path else ""
        return f"{when}  {e.journey} #{e.entry}  {e.kind}{where}: {e.detail}"
    if isinstance(e, Action):
        extra = ""
        if e.reason:
            extra = f" by {e.reason}" + (f" ({e.rule})" if e.rule else "")
        if e.until is not None:
            extra += f" until {iso(e.until)}"
        return f"{when}  {e.journey} #{e.entry}  {e.kind} \"{e.target}\" {e.outcome}{extra}  [{e.path}, id {e.id}]"
    if isinstance(e, Conversion):
        return f"{when}  {e.journey} #{e.entry}  goal \"{e.goal}\" reached"
    if isinstance(e, TraitChange):
        by = f" by {e.path}" if e.path else ""
        return f"{when}  {e.user}  trait {e.trait} = {e.value!r}{by}"
    if isinstance(e, ModelsTrained):
        return f"{when}  models trained: version {e.version}"
    return f"{when}  {e!r}"  # pragma: no cover
