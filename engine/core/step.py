"""The engine's core: `step(state, input, now, program) -> (state, effects)`.

One user, one input, one moment. The step decides everything the journeys say should happen —
entries, exits, waits, branches, splits, goals, and each action's delivery decision (consent, caps,
quiet hours, see `engine.core.delivery`) — and returns the user's new state and the effects. It does
no I/O and never reads a clock: the daemon and the dry-run call it identically and differ only in
where `now` comes from, where states are kept and what the sink does with the effects.

Inputs:
- `Track(event)`: an event of the user's (page and screen calls arrive as "Page Viewed" and
  "Screen Viewed" events);
- `Identify(traits)`: a profile update (identify; group calls become traits too);
- `Wake()`: the user's timer is due: every journey whose wait ended by `now` moves on;
- `Scheduled(journey)`: a scheduled entry fires for this user.

Identity stitching is `merge(known, other, now, program)`, also pure.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone, tzinfo
from types import MappingProxyType
from typing import Any, Callable, Mapping

from journeys.evaluation import Context, Event
from journeys.fast_init import fast_init
from journeys.functions import CHANNELS, prediction_key
from journeys.graph import (AudienceNode, BranchNode, CompiledJourney, ExitNode, SendNode, SetTraitNode, SplitNode,
                            WaitForNode, WaitNode, WaitUntilNode, WebhookNode, format_duration)

from ..models.features import merged as merged_features
from ..models.features import observe, observe_send, seconds
from .delivery import (CONSENT_TRAIT, Pending, Situation, cap_channel, channel_consent_trait, decide,
                       feedback_traits)
from .effects import DEFERRED, SENT, SUPPRESSED, Action, Conversion, Effect, TraitChange, Transition, action_id, iso
from .program import Program
from .state import Instance, PendingGoal, SendRecord, UserState
from .timing import next_time_of_day, zone

UNSUBSCRIBED_EVENT = "Unsubscribed"
SUBSCRIBED_EVENT = "Subscribed"


@fast_init
@dataclass(frozen=True, slots=True)
class Track:
    event: Event
    timezone: str | None = None  # the sender's `context.timezone`, used when the profile has none


@fast_init
@dataclass(frozen=True, slots=True)
class Identify:
    traits: Mapping[str, Any] = field(default_factory=dict)
    timezone: str | None = None


@fast_init
@dataclass(frozen=True, slots=True)
class Wake:
    pass


@fast_init
@dataclass(frozen=True, slots=True)
class Scheduled:
    journey: str


Input = Track | Identify | Wake | Scheduled


def step(state: UserState, inp: Input, now: datetime, program: Program,
         reasons: bool = True) -> tuple[UserState, list[Effect]]:
    """`reasons=False`: a refused entry's Transition says `UNEXPLAINED` instead of why (what the
    runtime passes when its sink reads no refusal reason: `engine.runtime.sinks.reads_reasons`);
    every decision and every other effect is the same."""
    run = _Run(state, now, program, reasons)
    if isinstance(inp, Track):
        run.track(inp.event, inp.timezone)
    elif isinstance(inp, Identify):
        run.identify(inp.traits, inp.timezone)
    elif isinstance(inp, Wake):
        run.wake()
    elif isinstance(inp, Scheduled):
        run.scheduled(inp.journey)
    else:  # pragma: no cover - a programming error, not a user's
        raise TypeError(f"unknown input {inp!r}")
    return run.finish()


def user_zone(traits: Mapping[str, Any], program: Program) -> tzinfo:
    """The user's `timezone` trait if it names a zone, else the policy's, else UTC."""
    return zone(traits.get("timezone")) or zone(program.policy.timezone) or timezone.utc


def split_bucket(journey: str, split_key: str, user: str) -> float:
    """A user's place in [0, 100) for one split: stable for (journey, split, user) in every run
    and every version, because it hashes names, never positions or versions."""
    digest = hashlib.sha256("\x1f".join((journey, split_key, user)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * 100


def plain(value: Any) -> Any:
    """A value as JSON can hold it: events become dicts, times ISO strings."""
    if isinstance(value, Event):
        return {"event": value.event, "timestamp": iso(value.timestamp), "properties": plain(dict(value.properties))}
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


UNEXPLAINED = "not entered"  # a refused entry's detail when no sink reads why (`step(reasons=False)`)
PARKED = "parked"  # a run the engine could not go on with for a user (`_Run.isolated`)
_LARGEST = 2**63 - 1  # what the stores can keep of a whole number


def storable(value: Any, trait: str) -> Any:
    """A computed trait value the stores can keep (whole numbers within 64 bits, the JSON values),
    else ValueError: the run that computed it is parked, nothing else is lost."""
    if isinstance(value, int) and not isinstance(value, bool) and not -_LARGEST <= value <= _LARGEST:
        raise ValueError(f"set user.{trait}: {value} does not fit in 64 bits")
    if isinstance(value, float) and value != value:
        raise ValueError(f"set user.{trait}: the value is not a number (NaN)")
    if isinstance(value, Mapping):
        for v in value.values():
            storable(v, trait)
    elif isinstance(value, list):
        for v in value:
            storable(v, trait)
    return value


class _Run:
    """The working copy of one step. Collections are copied on first write, so the input state is
    never touched and unchanged parts are shared with the output state."""

    def __init__(self, state: UserState, now: datetime, program: Program, reasons: bool = True):
        self.state, self.now, self.p = state, now, program
        self.reasons = reasons  # say why an entry is refused (else UNEXPLAINED: nobody reads it)
        self.user = state.user_id
        self.traits: Mapping[str, Any] = state.traits
        self.history = state.history
        self.instances: dict[str, Instance] = dict(state.instances)
        self.entries: Mapping[str, tuple[int, datetime]] = state.entries
        self.goals = state.goals
        self.sends = state.sends
        self.audiences = state.audiences
        self.segments: Mapping[str, bool] = state.segments
        self.features = state.features
        self.effects: list[Effect] = []
        self.tz = user_zone(self.traits, program)
        self._ctx: Context | None = None
        self.traits_changed = False  # a trait was written since segments were last evaluated
        self.recorded: Event | None = None  # the current event as the history keeps it
        self.current: Event | None = None  # the event being processed (templates' `current_event`)

    # ------------------------------------------------------------------ inputs

    def track(self, ev: Event, tz_hint: str | None) -> None:
        self.current = ev
        if tz_hint and "timezone" not in self.traits and zone(tz_hint) is not None:
            self.set_trait("timezone", tz_hint)
        self.consent_event(ev)
        self.record(ev)
        if self.p.features_on:  # before anything reads a prediction: the event counts at its moment
            self.features = observe(self.features, ev.event, ev.timestamp, ev.properties)
        self.goals_reached(ev)
        for inst in self.in_flight():
            j = self.journey_of(inst)
            if j is not None:
                self.isolated(j, inst, lambda: self.react(inst, j, ev))
        changes = self.segment_changes(ev.event)
        self.exit_rules(changes)
        self.new_entries(ev, changes)
        self.settle()

    def react(self, inst: Instance, j: CompiledJourney, ev: Event) -> None:
        """A run in flight sees the event: `exit when event`, or the end of its `wait for`."""
        ctx = self.ctx(inst, ev)
        hit = next((m for m in j.exits.events if m.matches(ctx, ev)), None)
        if hit is not None:
            self.end(inst, j, f"exit when {hit}")
        elif inst.wait == "for" and inst.since is not None and ev.timestamp >= inst.since:
            node = j.nodes[inst.path]  # type: ignore[index]
            assert isinstance(node, WaitForNode)
            if node.match.matches(ctx, ev):
                self.transition(inst, "resumed", inst.path, f"{ev.event} arrived")
                self.advance(self.resume(inst), j, node.on_event, trigger=ev)

    def identify(self, traits: Mapping[str, Any], tz_hint: str | None) -> None:
        for key in sorted(traits):
            self.set_trait(key, plain(traits[key]))
        if tz_hint and "timezone" not in self.traits and zone(tz_hint) is not None:
            self.set_trait("timezone", tz_hint)
        changes = self.segment_changes(None)
        self.exit_rules(changes)
        self.new_entries(None, changes)
        self.settle()

    def wake(self) -> None:
        due = [i for i in self.instances.values() if i.wake is not None and i.wake <= self.now]
        due.sort(key=lambda i: (i.wake, self.p.position(i.journey), i.journey))
        for inst in due:
            inst = self.instances.get(inst.journey, inst)
            j = self.journey_of(inst)
            if j is None:  # its version is no longer loaded: nothing can run it
                self.instances.pop(inst.journey, None)
                self.transition(inst, "exited", inst.path, "this version of the journey is no longer loaded")
                continue
            if inst.wake is None or inst.wake > self.now:
                continue
            self.isolated(j, inst, lambda: self.wake_one(inst, j))
        self.settle()

    def wake_one(self, inst: Instance, j: CompiledJourney) -> None:
        if inst.exiting is None and self.exit_condition(inst, j):
            return
        node = j.nodes[inst.path]  # type: ignore[index]
        if inst.wait == "held":
            self.transition(inst, "resumed", inst.path, "quiet hours are over")
            self.advance(self.resume(inst), j, inst.path, resume=True)
        elif inst.wait == "best":
            self.transition(inst, "resumed", inst.path, "the user's best time has come")
            self.advance(self.resume(inst), j, inst.path, resume=True)
        elif inst.wait == "for":
            assert isinstance(node, WaitForNode)
            self.transition(inst, "resumed", inst.path, f"timeout: no {node.match.event} within "
                            f"{format_duration(node.timeout)}")
            self.advance(self.resume(inst), j, node.on_timeout)
        else:
            self.transition(inst, "resumed", inst.path, "the wait is over")
            self.advance(self.resume(inst), j, node.next)

    def scheduled(self, name: str) -> None:
        j = self.p.journeys.get(name)
        if j is None or j.entry.kind != "schedule":
            return
        if j.entry.segment and not self.ctx().in_segment(j.entry.segment):
            return
        self.isolated(j, None, lambda: self.enter(j, None))
        self.settle()

    # ------------------------------------------------------------------ profile and history

    def set_trait(self, key: str, value: Any, inst: Instance | None = None, path: str | None = None) -> None:
        if key in self.traits and self.traits[key] == value and type(self.traits[key]) is type(value):
            return
        traits = dict(self.traits)
        traits[key] = value
        self.traits = traits
        if key == "timezone":
            self.tz = user_zone(traits, self.p)
        self._ctx = None
        self.traits_changed = True
        self.effects.append(TraitChange(self.now, self.user, key, value, inst.journey if inst else None, path))

    def consent_event(self, ev: Event) -> None:
        """"Unsubscribed" / "Subscribed" events set the consent traits that delivery reads; the
        delivery-feedback events ("Email Bounced", "Email Marked as Spam", "Push Token
        Unregistered") the traits that make a channel undeliverable (`delivery.feedback_traits`)."""
        if ev.event not in (UNSUBSCRIBED_EVENT, SUBSCRIBED_EVENT):
            for key, value in feedback_traits(ev.event, ev.properties, self.traits).items():
                self.set_trait(key, value)
            return
        channel = ev.properties.get("channel")
        trait = channel_consent_trait(channel) if channel in CHANNELS else CONSENT_TRAIT
        self.set_trait(trait, ev.event == UNSUBSCRIBED_EVENT)

    def record(self, ev: Event) -> None:
        """Keep the event in the history if a condition can read it, with only the properties
        conditions can read (the compiler's `HistoryNeeds`): a user's history stays small."""
        keep, seconds, latest = self.p.retention(ev.event)
        if not keep:
            return
        wanted = self.p.kept_properties.get(ev.event)
        if wanted is not None and len(wanted) < len(ev.properties):
            props = ev.properties
            ev = Event(ev.event, ev.timestamp, {k: props[k] for k in wanted if k in props})
        self.recorded = ev
        since = None if seconds is None else self.now - timedelta(seconds=seconds)
        self.history = self.history.with_event(ev, since, latest)
        self._ctx = None

    def ctx(self, inst: Instance | None = None, event: Event | None = None) -> Context:
        if self._ctx is None:
            self._ctx = Context(now=self.now, user_id=self.user, traits=self.traits, timezone=self.tz,
                                history=self.history, segments=self.p.segments,
                                predict=self.predict if self.p.features_on else None)
        if inst is None and event is None:
            return self._ctx
        return self._ctx.with_event(inst.named if inst is not None else None, event)

    # ------------------------------------------------------------------ goals and segments

    def goals_reached(self, ev: Event) -> None:
        if not self.goals:
            return
        kept: list[PendingGoal] = []
        for g in self.goals:
            if g.deadline < self.now:
                continue  # the window closed without a conversion
            j = self.p.journey(g.journey, g.version)
            goal = next((x for x in j.goals if x.name == g.goal), None) if j is not None else None
            if goal is not None and ev.timestamp >= g.entered_at and goal.match.matches(self.goal_ctx(g, ev), ev):
                self.effects.append(Conversion(self.now, self.user, g.journey, g.version, g.entry, g.goal, g.arms))
                continue
            kept.append(g)
        self.goals = tuple(kept)

    def goal_ctx(self, g: PendingGoal, ev: Event) -> Context:
        base = self.ctx()
        return base.with_event(g.named if g.named else None, ev)

    def segment_changes(self, event_name: str | None) -> dict[str, bool]:
        """Watched segments whose membership changed. After a profile update (`event_name` None,
        or any trait written since the last look, by an identify, a consent event or a `set` step)
        every one is evaluated again; after an event, those that read it and those that time alone
        can change (a window that has passed, `days_since`): the event is when the engine sees that."""
        if self.traits_changed:
            event_name, self.traits_changed = None, False
        changes: dict[str, bool] = {}
        for name in self.p.watched_segments:
            seg = self.p.segments.get(name)
            if seg is None:
                continue
            needs = seg.needs
            if event_name is not None and event_name not in needs.events and not (
                    needs.windows or needs.latest or needs.predictions):  # a score moves with any event
                continue
            now_in = self.ctx().in_segment(name)
            if now_in != self.segments.get(name, False):
                changes[name] = now_in
        if changes:
            self.segments = {**self.segments, **changes}
        return changes

    def exit_rules(self, changes: Mapping[str, bool]) -> None:
        for inst in self.in_flight():
            j = self.journey_of(inst)
            if j is not None and (j.exits.conditions or j.exits.segments):  # most journeys have neither
                self.isolated(j, inst, lambda: self.exit_rule(inst, j, changes))

    def exit_rule(self, inst: Instance, j: CompiledJourney, changes: Mapping[str, bool]) -> None:
        left = next((s for s in j.exits.segments if changes.get(s) is False), None)
        if left is not None:
            self.end(inst, j, f'exit when user leaves segment "{left}"')
        else:
            self.exit_condition(inst, j)

    def exit_condition(self, inst: Instance, j: CompiledJourney) -> bool:
        """`exit when CONDITION`: ends the journey if any holds now; True if it ended."""
        if not j.exits.conditions:
            return False
        ctx = self.ctx(inst)
        hit = next((c for c in j.exits.conditions if c(ctx)), None)
        if hit is None:
            return False
        self.end(inst, j, f"exit when {hit.source}")
        return True

    def new_entries(self, ev: Event | None, changes: Mapping[str, bool]) -> None:
        """New entries after an input, in the journeys' order (`[journeys] order`, else file
        order) whatever the kind: a journey entered by this event and one entered by a segment
        this input made the user join take their turns in one sequence."""
        if ev is not None:
            by_event = self.p.entries_by_event.get(ev.event, ())
            joined = [j for j in self.p.segment_entries if changes.get(j.entry.segment or "") is True]
            candidates = sorted([*by_event, *joined], key=lambda j: self.p.position(j.name)) if joined else by_event
        else:
            candidates = [j for j in self.p.segment_entries if changes.get(j.entry.segment or "") is True]
        for j in candidates:
            self.isolated(j, None, lambda: self.enter_if(j, ev))

    def enter_if(self, j: CompiledJourney, ev: Event | None) -> None:
        if j.entry.kind == "segment":
            self.enter(j, None)
        elif j.entry.match is not None and j.entry.match.matches(self.ctx(None, ev), ev):  # type: ignore[arg-type]
            self.enter(j, ev)

    # ------------------------------------------------------------------ one journey's failure

    def isolated(self, j: CompiledJourney, inst: Instance | None, run: Callable[[], None]) -> None:
        """Run one journey's part of this input. If it fails (a value this run cannot take, an engine
        bug), everything it did is undone, the user's run of that journey is parked and the failure
        recorded against the journey and the user: the other journeys still see the input, and the
        daemon sets nothing aside. A parked run waits for nothing: an operator (or an exit) ends it."""
        saved = (self.traits, self.instances.copy(), self.entries, self.goals, self.sends, self.audiences,
                 self.segments, len(self.effects), self.traits_changed, self.tz)
        try:
            run()
        except Exception as e:  # noqa: BLE001 - one journey's failure must not stop the others
            (self.traits, self.instances, self.entries, self.goals, self.sends, self.audiences, self.segments,
             n, self.traits_changed, self.tz) = saved
            del self.effects[n:]
            self._ctx = None
            self.park(j, inst, f"{type(e).__name__}: {e}")

    def park(self, j: CompiledJourney, inst: Instance | None, error: str) -> None:
        detail = f"the engine could not run this journey for this user ({error[:300]})"
        if inst is None:  # it failed on entering: the run starts parked
            count = self.entries.get(j.name, (0, None))[0] + 1
            self.entries = {**self.entries, j.name: (count, self.now)}
            inst = Instance(j.name, j.version, count, self.user, self.now, start=self.current)
        parked = replace(self.instances.get(inst.journey, inst), wait=PARKED, since=self.now, wake=None)
        self.instances[parked.journey] = parked
        self.transition(parked, PARKED, parked.path, detail)

    def settle(self) -> None:
        """Traits written by this input's steps (a `set` step, a consent event) may move the user
        into or out of segments: evaluate them again and let exits and entries follow, until
        nothing changes. Bounded: a round runs only when a trait changed, and each segment's
        journeys can enter or leave at most once per round."""
        for _ in range(len(self.p.watched_segments) + 1):
            if not self.traits_changed:
                return
            changes = self.segment_changes(None)
            if not changes:
                return
            self.exit_rules(changes)
            self.new_entries(None, changes)

    # ------------------------------------------------------------------ entering and ending

    def enter(self, j: CompiledJourney, ev: Event | None) -> None:
        why_not = self.refusal(j, ev)
        version = j.version
        if why_not is not None:
            count = self.entries.get(j.name, (0, None))[0]
            self.effects.append(Transition(self.now, self.user, j.name, version, count, "not_entered",
                                           None, why_not))
            return
        count = self.entries.get(j.name, (0, None))[0] + 1
        self.entries = {**self.entries, j.name: (count, self.now)}
        named = {j.entry.alias: ev} if j.entry.alias and ev is not None else {}
        inst = Instance(j.name, version, count, self.user, self.now, named=MappingProxyType(named),
                        start=ev or self.current)  # a segment entry: the event that made the user join
        self.instances[j.name] = inst
        self.goals = self.goals + tuple(
            PendingGoal(j.name, version, count, self.user, g.name, self.now, self.now + timedelta(seconds=g.seconds),
                        named=inst.named if g.reads_named else MappingProxyType({}))
            for g in j.goals)
        self.transition(inst, "entered", None, j.entry.describe())
        self.advance(inst, j, j.first)

    def refusal(self, j: CompiledJourney, ev: Event | None) -> str | None:
        """Why the user may not enter now, or None; UNEXPLAINED instead of why when `self.reasons`
        is off (the formatting was 7 % of a dry-run's time, for words only a trace reads)."""
        if j.name in self.instances:
            return "already in the journey"
        count, last = self.entries.get(j.name, (0, None))
        if count and last is not None:
            mode = j.reenter.mode
            if mode == "never":
                return f"reenter never: entered before, at {iso(last)}" if self.reasons else UNEXPLAINED
            if mode == "after" and self.now - last < timedelta(seconds=j.reenter.seconds or 0):
                if not self.reasons:
                    return UNEXPLAINED
                return f"reenter after {format_duration(j.reenter.seconds or 0)}: last entry at {iso(last)}"
        if j.entry.kind == "first_event" and ev is not None and j.entry.match is not None:
            ctx = self.ctx(None, ev)
            earlier = [e for e in ctx.events(ev.event) if e is not self.recorded and e.timestamp <= ev.timestamp
                       and j.entry.match.matches(ctx, e)]
            if earlier:
                if not self.reasons:
                    return UNEXPLAINED
                return f"not the first {ev.event}: the first was at {iso(earlier[0].timestamp)}"
        return None

    def end(self, inst: Instance, j: CompiledJourney, reason: str) -> None:
        """The journey ends for this user: a held send is dropped (suppressed by exit), the end
        is reported, and `on exit` runs (unless it is what is running now)."""
        if inst.wait == "held" and inst.path is not None and inst.exiting is None:
            node = j.nodes[inst.path]
            self.act(inst, j, node, outcome=(SUPPRESSED, "exit", reason, None))
        self.instances.pop(inst.journey, None)
        if inst.exiting is not None:
            return
        kind = "completed" if reason == "completed" else "exited"
        self.transition(inst, kind, None, reason)
        if j.on_exit:
            closing = replace(inst, exiting=reason, path=None, wait=None, since=None, wake=None)
            self.instances[inst.journey] = closing
            self.advance(closing, j, j.on_exit_first)

    # ------------------------------------------------------------------ running steps

    def resume(self, inst: Instance) -> Instance:
        inst = replace(inst, wait=None, since=None, wake=None)
        self.instances[inst.journey] = inst
        return inst

    def advance(self, inst: Instance, j: CompiledJourney, path: str | None, *, resume: bool = False,
                trigger: Event | None = None) -> None:
        """Run steps from `path` until the user waits or the journey ends."""
        while True:
            if path is None:
                if inst.exiting is not None:
                    self.instances.pop(inst.journey, None)
                else:
                    self.end(inst, j, "completed")
                return
            node = j.nodes[path]
            if not resume:
                self.transition(inst, "step", path, node.describe())
            resumed, resume = resume, False  # `resumed`: this step waited already (quiet hours, best time)
            if isinstance(node, WaitNode):
                self.wait(inst, path, "wait", self.now + timedelta(seconds=node.seconds))
                return
            if isinstance(node, WaitUntilNode):
                moment = next_time_of_day(self.now, node.minute, zone(node.tz) or self.tz)
                if moment > self.now:
                    self.wait(inst, path, "until", moment)
                    return
                path = node.next
            elif isinstance(node, WaitForNode):
                self.wait(inst, path, "for", self.now + timedelta(seconds=node.timeout))
                return
            elif isinstance(node, BranchNode):
                path = self.branch(inst, node)
            elif isinstance(node, SplitNode):
                inst, path = self.split(inst, j, node)
            elif isinstance(node, (SendNode, AudienceNode, WebhookNode)):
                if inst.exiting is None and isinstance(node, SendNode) and self.exit_condition(inst, j):
                    return  # `exit when` is checked again before every send
                if isinstance(node, SendNode) and node.best_time is not None and not resumed:
                    moment = self.best_moment(node)
                    if moment > self.now:  # the user's best time comes later: wait for it, then decide
                        self.wait(inst, path, "best", moment)
                        return
                held = self.act(inst, j, node)
                if held is not None:
                    self.wait(inst, path, "held", held)
                    return
                path = node.next
            elif isinstance(node, SetTraitNode):
                self.set_trait(node.trait, storable(plain(node.value(self.ctx(inst, trigger))), node.trait), inst, path)
                path = node.next
            elif isinstance(node, ExitNode):
                self.end(inst, j, "exit step")
                return
            else:  # pragma: no cover - the compiler makes no other nodes
                raise TypeError(f"unknown node {node!r}")
            inst = self.instances.get(inst.journey, inst)

    def wait(self, inst: Instance, path: str, kind: str, until: datetime) -> None:
        current = (self.current or inst.current) if kind in ("held", "best") else None  # a held send keeps its event
        self.instances[inst.journey] = replace(inst, path=path, wait=kind, since=self.now, wake=until, current=current)
        self.transition(inst, "waiting", path, f"until {iso(until)}")

    def branch(self, inst: Instance, node: BranchNode) -> str | None:
        ctx = self.ctx(inst)
        for arm in node.arms:
            if arm.condition(ctx) is True:
                self.transition(inst, "branch", node.path, f"{arm.label}: {arm.condition.source} is true")
                return arm.target
        self.transition(inst, "branch", node.path, "else: no condition holds")
        return node.else_target

    def split(self, inst: Instance, j: CompiledJourney, node: SplitNode) -> tuple[Instance, str | None]:
        key = "|".join(a.name for a in node.arms)
        bucket = split_bucket(j.name, key, self.user)
        edge, chosen = 0.0, None
        for arm in node.arms:
            edge += arm.percent
            if bucket < edge:
                chosen = arm
                break
        label = chosen.slug if chosen is not None else "control"
        inst = replace(inst, arms=inst.arms + ((node.path, label),))
        self.instances[inst.journey] = inst
        self.goals = tuple(replace(g, arms=inst.arms) if (g.journey, g.entry, g.origin) ==
                           (inst.journey, inst.entry, inst.origin) else g for g in self.goals)
        if chosen is None:
            self.transition(inst, "split", node.control_path, f"control group (bucket {bucket:.2f})")
            return inst, node.next
        self.transition(inst, "split", f"{node.path}/{chosen.slug}", f'arm "{chosen.name}" (bucket {bucket:.2f})')
        return inst, chosen.target

    # ------------------------------------------------------------------ actions

    def act(self, inst: Instance, j: CompiledJourney, node: Any,
            outcome: tuple[str, str, str | None, datetime | None] | None = None) -> datetime | None:
        """Build the action of a send/audience/webhook step, pass it through delivery, emit it.
        Returns the moment a deferred (quiet hours) send is held until; None otherwise."""
        ctx = self.ctx(inst)
        if isinstance(node, SendNode):
            kind, target, via = node.channel, node.template, node.via
            data = {k: plain(f(ctx)) for k, f in node.data}
        elif isinstance(node, AudienceNode):
            kind, target, via, data = f"audience_{node.op}", node.audience, None, {}
        else:
            kind, target, via = "webhook", node.name, None
            data = {k: plain(f(ctx)) for k, f in node.data}
        channel = cap_channel(kind)
        if outcome is None:
            verdict = decide(Pending(kind, channel), Situation(self._state_view(), j, self.p.policy, ctx, self.tz,
                                                               self.now, self.p.models))
            outcome = (SENT, None, None, None) if verdict is None else (
                verdict.outcome, verdict.reason, verdict.rule, verdict.until)
        result, reason, rule, until = outcome
        predictions = self.predictions() if self.p.features_on and kind in CHANNELS else None
        self.effects.append(Action(
            id=action_id(inst.journey, inst.version, inst.origin, inst.entry, node.path),
            time=self.now, user=self.user, journey=inst.journey, version=inst.version, entry=inst.entry,
            path=node.path, kind=kind, channel=channel, target=target, outcome=result, reason=reason, rule=rule,
            until=until, via=via, data=data, named={k: plain(v) for k, v in inst.named.items()},
            event=plain(inst.start), current_event=plain(self.current or inst.current), predictions=predictions))
        if result == SENT:
            if channel is not None:
                self.sends = self._trimmed_sends() + (SendRecord(self.now, channel, inst.journey),)
                if self.p.features_on and kind in CHANNELS:
                    self.features = observe_send(self.features, kind, self.now)
            if kind == "audience_add":
                self.audiences = self.audiences | {target}
            elif kind == "audience_remove":
                self.audiences = self.audiences - {target}
        return until if result == DEFERRED else None

    def predictions(self) -> dict[str, Any]:
        """What a message's template reads as `recommended` and `predicted`, scored now."""
        models, now = self.p.models, seconds(self.now)
        return {"recommended": models.recommended(self.features, now, 10),
                "predicted": {prediction_key(m, h): models.predict(self.features, now, m, h, self.user)
                              for m, h in self.p.predictions}}

    def best_moment(self, node: SendNode) -> datetime:
        """When a send `at best time within W` goes out: the start of the user's best hour for the
        channel within W (engine.models.sendtime), never before now; now without a trained model."""
        assert node.best_time is not None
        now = seconds(self.now)
        at = self.p.models.best_time(self.features, self.tz, node.channel, now, node.best_time)
        if at <= now:
            return self.now
        return self.now + timedelta(seconds=min(at - now, node.best_time))

    def predict(self, model: str, horizon_seconds: int) -> float | None:
        """`predicted MODEL in HORIZON` (the language's Context calls it)."""
        return self.p.models.predict(self.features, seconds(self.now), model, horizon_seconds, self.user)

    def _trimmed_sends(self) -> tuple[SendRecord, ...]:
        since = self.now - timedelta(seconds=self.p.cap_window)
        return tuple(r for r in self.sends if r.time > since)

    def _state_view(self) -> UserState:
        return replace(self.state, traits=self.traits, sends=self.sends, features=self.features)

    # ------------------------------------------------------------------ bookkeeping

    def in_flight(self) -> list[Instance]:
        """Journeys in flight (not already ending), in the project's order: deterministic."""
        if not self.instances:
            return []
        live = [i for i in self.instances.values() if i.exiting is None]
        if len(live) > 1:
            live.sort(key=lambda i: (self.p.position(i.journey), i.journey))
        return live

    def journey_of(self, inst: Instance) -> CompiledJourney | None:
        return self.p.journey(inst.journey, inst.version)

    def transition(self, inst: Instance, kind: str, path: str | None, detail: str) -> None:
        self.effects.append(Transition(self.now, self.user, inst.journey, inst.version, inst.entry, kind, path,
                                       detail))

    def finish(self) -> tuple[UserState, list[Effect]]:
        # The context refers back to this run (its `predict`): dropped here, the run and all it
        # built die by reference counting, not at the cyclic collector's next pass (issue 21).
        self._ctx = None
        s = self.state
        if (not self.effects and self.history is s.history and self.traits is s.traits
                and self.segments is s.segments and self.goals is s.goals and self.features is s.features):
            return s, []  # nothing happened (instances, entries and sends only change with effects)
        state = UserState(
            user_id=s.user_id, traits=self.traits, history=self.history,
            instances=MappingProxyType(self.instances), entries=self.entries, goals=self.goals,
            sends=self.sends, audiences=self.audiences, segments=self.segments, aliases=s.aliases,
            features=self.features)
        return state, self.effects


# ---------------------------------------------------------------------------------- identity


def merge(known: UserState, other: UserState, now: datetime, program: Program) -> tuple[UserState, list[Effect]]:
    """Stitch `other` (an anonymous or previous id) into `known`: one profile from both.

    Traits: both, the known profile's values winning. History, sends, goals, audiences: the union.
    Journeys in flight on both ids: each journey keeps the run that entered first; the other run is
    reported as `merged` and dropped without its `on exit` (the kept run still owns whatever that
    would undo)."""
    effects: list[Effect] = []
    instances = dict(known.instances)
    dropped: list[Instance] = []
    for name, theirs in sorted(other.instances.items()):
        mine = instances.get(name)
        if mine is None:
            instances[name] = theirs
            continue
        keep, drop = (mine, theirs) if mine.entered_at <= theirs.entered_at else (theirs, mine)
        instances[name] = keep
        dropped.append(drop)
        effects.append(Transition(now, known.user_id, drop.journey, drop.version, drop.entry, "merged", drop.path,
                                  f"identity {other.user_id} joined {known.user_id}; the run that entered first "
                                  "carries on"))
    entries = dict(known.entries)
    for name, (count, last) in other.entries.items():
        mine_count, mine_last = entries.get(name, (0, last))
        entries[name] = (max(count, mine_count), max(last, mine_last))
    goals = known.goals + tuple(g for g in other.goals if g not in known.goals)
    state = UserState(
        user_id=known.user_id,
        traits=MappingProxyType({**other.traits, **known.traits}),
        history=known.history.merged(other.history),
        instances=MappingProxyType(instances),
        entries=MappingProxyType(entries),
        goals=goals,
        sends=tuple(sorted(known.sends + other.sends, key=lambda r: r.time)),
        audiences=known.audiences | other.audiences,
        segments=known.segments,
        aliases=known.aliases | other.aliases | {other.user_id},
        features=merged_features(known.features, other.features),
    )
    held = [d for d in dropped if d.wait == "held" and d.path is not None and d.exiting is None]
    if held:  # a dropped run's send held by quiet hours is recorded, never lost without a word
        run = _Run(state, now, program)
        for d in held:
            j = program.journey(d.journey, d.version)
            if j is not None:
                run.act(d, j, j.nodes[d.path], outcome=(SUPPRESSED, "exit", "merged with another identity", None))
        effects.extend(run.effects)
    return state, effects
