"""The runtime: messages and due timers in, `step` per user, states to the store, effects to the sink.

This is the code the daemon and the dry-run share. Given a clock, a store and a sink, `Engine`
- deduplicates messages by messageId,
- stitches identities (an identify with both ids, or an alias, merges the profiles),
- turns each Segment message into the core's input for the right profile and runs `step`,
- fires due timers and scheduled entries, each at its own moment, in time order.

The dry-run drives it with a virtual clock: before handling an event at time t it calls
`run_due(t)`, so every timer due at or before t fires first (the daemon's rule, because the daemon
fires timers as real time passes).
"""

from __future__ import annotations

import heapq
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from itertools import islice
from typing import Any, Callable, Iterable, Mapping

from journeys.evaluation import Event

from ..core.effects import Action, Effect, ModelsTrained, Received
from ..core.messages import Message
from ..core.program import Program
from ..core.state import UserState, new_user
from ..core.step import Identify, Input, Scheduled, Track, Wake, merge, step, user_zone
from ..core.timing import next_fire
from ..models.features import seconds
from ..models.modelset import ModelSet, train
from ..store.base import Store
from .clock import Clock
from .sinks import Sink, reads_reasons

GROUP_COMMIT = 1000  # messages per transaction in the dry-run's loop
_NEVER = datetime.max.replace(tzinfo=timezone.utc)


def zone_name(state: UserState, program: Program) -> str:
    tz = user_zone(state.traits, program)
    return getattr(tz, "key", None) or "UTC"


class Engine:
    """`train_inline`: the models retrain inside `run_due` at each moment of `program.retrain`, as
    one more thing due (the dry-run, `journeys replay`, `journeys score`); the daemon trains in the
    background instead (engine.daemon.training.Training) and hands versions to `use_models`."""

    def __init__(self, program: Program, store: Store, clock: Clock, sink: Sink, train_inline: bool = True,
                 trainer: Callable[[datetime], ModelSet] | None = None):
        self.program, self.store, self.clock, self.sink = program, store, clock, sink
        self.train_inline = train_inline
        self.trainer = trainer  # see train_models
        # Refused entries say why only when the sink reads it (a trace, the daemon's trail).
        self.reasons = reads_reasons(sink)
        self.on_trained: Callable[[ModelSet, datetime], None] | None = None
        self._next_train: datetime | None = None
        self._schedules: list[tuple[datetime, int, str, str | None]] = []  # (fire, position, journey, zone)
        self._zones_scheduled: set[str] = set()
        self._started = False
        # Nothing (timer, scheduled entry, training) is due before this moment; None: not known.
        # Set when `run_due` finds nothing more due, lowered by every timer or schedule this engine
        # adds (`_save`, `_push_schedule`): `take_alone` skips `run_due` for a message before it.
        self._quiet_until: datetime | None = None
        # A store shared by several workers locks the profile ids a step reads and writes, until
        # its transaction ends (engine.daemon.partitions); the others have nothing to lock.
        self._lock: Callable[[Iterable[str | None]], None] | None = getattr(store, "lock", None)
        # ... and claims each scheduled entry's users, so an entry fires once across the workers.
        self._schedule_users: Callable[[str, str | None, datetime], Iterable[str]] | None = getattr(
            store, "schedule_users", None)

    # ------------------------------------------------------------------ messages

    def handle(self, msg: Message) -> None:
        """Take one message at the clock's current time."""
        self._start()
        now = self.clock.now()
        if self.store.seen(msg.message_id, now, now - self.program.dedupe):
            self.sink.emit([Received(now, msg.actor, "duplicate", msg.event, f"messageId {msg.message_id} seen before")])
            return
        if self._lock is not None:
            self._lock((msg.user_id, msg.anonymous_id, msg.previous_id))
        if msg.type == "alias":
            uid = self._resolve(msg.user_id)  # type: ignore[arg-type]
            self._stitch(msg.previous_id, uid, now, explicit=True)  # type: ignore[arg-type]
            self.sink.emit([Received(now, uid, "alias", msg.previous_id, f"{msg.previous_id} is {uid}")])
            return
        uid = self._profile(msg, now)
        inp: Input
        if msg.type in ("track", "page", "screen"):
            inp = Track(Event(msg.event or "", msg.timestamp, msg.properties), msg.timezone)
        elif msg.type == "identify":
            inp = Identify(msg.traits, msg.timezone)
        elif msg.type == "group":
            inp = Identify({"group_id": msg.group_id, "group": dict(msg.traits)}, msg.timezone)
        else:  # parse_message admits no other types
            raise ValueError(f"unknown message type {msg.type!r}")
        self._run(uid, inp, now, [Received(now, uid, msg.type, msg.event)])

    def take(self, msg: Message, at: datetime) -> None:
        """The one rule for an arriving message, in the daemon and the dry-run alike: every timer
        due at or before `at` fires first, then the message is handled at `at` (the dry-run
        passes the event's own time, the daemon the time now)."""
        self.run_due(at)
        self.clock.advance(at)
        self.handle(msg)

    def take_alone(self, msg: Message, at: datetime) -> None:
        """`take` for a loop in which this engine is its store's only writer (the dry-run's
        `handle_all`): when nothing can be due by `at` (`_quiet_until`), `run_due` is not called,
        which would find nothing. A daemon's store can gain timers from others (workers sharing
        it, the admin API), so the daemon calls `take`."""
        quiet = self._quiet_until
        if quiet is None or quiet <= at:
            self.run_due(at)
        self.clock.advance(at)
        self.handle(msg)

    def update_profile(self, user_id: str, traits: Mapping[str, Any], why: str) -> None:
        """A profile update that comes from delivery, not from a sender (a push token the provider
        says is gone): it runs through the engine like an identify call, so segments and exit
        rules see it and the trace says why."""
        if not traits:
            return
        now = self.clock.now()
        uid = self._resolve(user_id)
        self._run(uid, Identify(traits), now, [Received(now, uid, "identify", None, why)])

    def _profile(self, msg: Message, now: datetime) -> str:
        if msg.user_id is not None:
            uid = self._resolve(msg.user_id)
            if msg.anonymous_id is not None:
                self._stitch(msg.anonymous_id, uid, now)
            return uid
        return self._resolve(msg.anonymous_id)  # type: ignore[arg-type]

    def _resolve(self, any_id: str) -> str:
        uid = self.store.resolve(any_id) or any_id
        if uid != any_id and self._lock is not None:
            self._lock((uid,))
        return uid

    def _stitch(self, other_id: str, uid: str, now: datetime, explicit: bool = False) -> None:
        """Make `other_id` (and its profile, if it has one) part of profile `uid`.

        An anonymous id already stitched to another known user is a shared device (a family
        laptop): its later anonymous events go to `uid` from now on, but the two known people are
        never merged. Only an alias call (`explicit`) merges one known profile into another."""
        source = self._resolve(other_id)
        self.store.link(other_id, uid)
        if source == uid:
            return
        if source != other_id and not explicit:
            self.sink.emit([Received(now, uid, "relink", other_id,
                                     f"{other_id} was {source}'s; its anonymous events now go to {uid}")])
            return
        other = self.store.load(source)
        if other is None:
            return
        known = self.store.load(uid) or new_user(uid)
        merged, effects = merge(known, other, now, self.program)
        for alias in merged.aliases:
            self.store.link(alias, uid)
        self.store.delete(source)
        self._save(merged)
        self.sink.emit([Received(now, uid, "merge", source, f"{source} joined {uid}"), *effects])

    # ------------------------------------------------------------------ time

    def has_due(self, until: datetime) -> bool:
        """Is a timer or a scheduled entry due by `until`? (No write: a daemon asks before it
        opens a transaction for them, which most of its rounds then need not.)"""
        self._start()
        return (self.store.next_timer(until) is not None or bool(self._schedules and self._schedules[0][0] <= until)
                or (self._next_train is not None and self._next_train <= until))

    def run_due(self, until: datetime, limit: int | None = None) -> bool:
        """Fire every timer and scheduled entry due at or before `until`, each at its moment.
        With `limit`, stop after that many (a daemon's transaction stays short while a flood of
        timers drains, and events interleave); True when it stopped there with more perhaps due."""
        self._start()
        self._quiet_until = None
        last: tuple[datetime, str] | None = None
        fired = 0
        while True:
            if limit is not None and fired >= limit:
                return True
            fired += 1
            if self._next_train is not None and self._next_train <= until:
                due = [t for t in (self.store.next_timer(until), self._schedules[0] if self._schedules else None)
                       if t is not None and t[0] < self._next_train]
                if not due:  # the models train before anything else due at their moment
                    at = self._next_train
                    self.clock.advance(at)
                    self.train_models(at)
                    self._next_train = next_fire(self.program.retrain, "UTC", at)
                    continue
            timer = self.store.next_timer(until)
            sched = self._schedules[0] if self._schedules and self._schedules[0][0] <= until else None
            if timer is None and sched is None:
                self._quiet_until = self._next_due()
                return False
            if timer is not None and (sched is None or timer[0] <= sched[0]):
                if timer == last:  # a step that does not move its own timer would loop forever
                    raise RuntimeError(f"timer of {timer[1]} at {timer[0]} did not move")
                last = timer
                self._fire_at(timer[0])
                self._run(timer[1], Wake(), self.clock.now(), [])
            else:
                heapq.heappop(self._schedules)
                fire, pos, name, zone = sched  # type: ignore[misc]
                self._fire_at(fire)
                self._fire_schedule(name, zone, fire)
                self._push_schedule(pos, name, zone, fire)

    def _next_due(self) -> datetime:
        """The earliest moment anything is due (a timer, a scheduled entry, a training)."""
        timer = self.store.next_timer(_NEVER)
        moments = [m for m in (timer[0] if timer is not None else None,
                               self._schedules[0][0] if self._schedules else None, self._next_train) if m is not None]
        return min(moments) if moments else _NEVER

    def _fire_at(self, moment: datetime) -> None:
        """The clock to a timer's or scheduled entry's moment, right before it fires: a clock that
        measures how late fires are (the daemon's, engine.daemon.metrics.TimedClock) is told it is one."""
        getattr(self.clock, "fire", self.clock.advance)(moment)

    def catch_up(self, since: datetime) -> None:
        """Fire the scheduled entries due in (`since`, now] again, for whoever has not had them.
        A worker that takes over partitions of a cluster calls it: a firing that came while they
        had no live owner reached none of their users. The store's claims count each firing once
        per partition, so one the last owner did fire is not repeated (a store without claims
        has nothing to catch up: one process fires everything)."""
        if self._schedule_users is None:
            return
        self._start()
        now = self.clock.now()
        for zone in sorted(self.store.zones()):  # the new partitions' users may live in new zones
            self._plan_zone(zone, now)
        for j in self.program.scheduled:
            schedule = j.entry.schedule
            assert schedule is not None
            zones = [None] if schedule.tz is not None else sorted(self._zones_scheduled)
            for zone in zones:
                fire = _next_fire(schedule, zone, since)
                while fire is not None and fire <= now:
                    self._fire_schedule(j.name, zone, fire)
                    fire = _next_fire(schedule, zone, fire)

    def _start(self) -> None:
        """Plan the scheduled entries from the first moment the engine sees."""
        if self._started:
            return
        self._started = True
        now = self.clock.now() - timedelta(microseconds=1)
        if self.program.features_on and self.train_inline:
            self._next_train = next_fire(self.program.retrain, "UTC", now)
        for pos, j in enumerate(self.program.scheduled):
            if j.entry.schedule is not None and j.entry.schedule.tz is not None:
                self._push_schedule(pos, j.name, None, now)
        for zone in sorted(self.store.zones()):
            self._plan_zone(zone, now)

    def _plan_zone(self, zone: str, after: datetime) -> None:
        """Schedules in user time fire per zone: plan them for a zone the first time it has a user."""
        if zone in self._zones_scheduled:
            return
        self._zones_scheduled.add(zone)
        for pos, j in enumerate(self.program.scheduled):
            if j.entry.schedule is not None and j.entry.schedule.tz is None:
                self._push_schedule(pos, j.name, zone, after)

    def _push_schedule(self, pos: int, name: str, zone: str | None, after: datetime) -> None:
        j = self.program.journeys[name]
        schedule = j.entry.schedule
        assert schedule is not None
        fire = _next_fire(schedule, zone, after)
        if fire is not None:
            heapq.heappush(self._schedules, (fire, pos, name, zone))
            if self._quiet_until is not None and fire < self._quiet_until:
                self._quiet_until = fire

    def _fire_schedule(self, name: str, zone: str | None, fire: datetime) -> None:
        """The entry's firing of `fire` (its cron moment, which names it in the claims of a
        cluster's workers whatever their clocks say), taken by its users now."""
        now = self.clock.now()
        if self._schedule_users is not None:
            users = self._schedule_users(name, zone, fire)
        else:
            users = self.store.users() if zone is None else self.store.users_in_zone(zone)
        for uid in list(users):
            self._run(uid, Scheduled(name), now, [Received(now, uid, "schedule", name)], only_if_effects=True)

    # ------------------------------------------------------------------ models

    def training_rows(self, at: datetime, users: Iterable[str] | None = None) -> list[tuple[str, Any, Any]]:
        """Every user's features (or those of `users`: the daemon reads a chunk at a time) as they
        stood at `at` (nothing later, whatever the store holds), with the user's zone: what the
        models train on."""
        t = seconds(at)
        rows = []
        for uid in sorted(self.store.users() if users is None else users):
            state = self.store.load(uid)
            if state is None or state.features is None:
                continue
            f = state.features.as_of(t)
            if f is not None:
                rows.append((uid, f, user_zone(state.traits, self.program)))
        return rows

    def train_models(self, at: datetime) -> ModelSet:
        """Train every model as of `at` from the store and score with the new version from now on.
        With a `trainer`, the version comes from it instead: a partition of a dry-run over several
        processes has only its own users, so the models, trained on everyone's rows, come from
        the run's coordinator (engine.dryrun.partitioned)."""
        if self.trainer is not None:
            models = self.trainer(at)
        else:
            models = train(self.training_rows(at), seconds(at), previous=self.program.models)
        self.use_models(models, at)
        return models

    def use_models(self, models: ModelSet, at: datetime) -> None:
        """Score with `models` from the next step on, and say so: to `on_trained` when set (the
        daemon logs a training, engine.daemon.housekeeping), else to the sink (the dry-run's report)."""
        self.program = replace(self.program, models=models)
        if self.on_trained is not None:
            self.on_trained(models, at)
        else:
            self.sink.emit([ModelsTrained(at, models.version, models.describe())])

    # ------------------------------------------------------------------ one step

    def _run(self, uid: str, inp: Input, now: datetime, before: list[Effect], only_if_effects: bool = False) -> None:
        """Step one user. `only_if_effects`: an input that changed nothing is not reported (a
        schedule reaching a user outside its segment would otherwise fill traces and reports)."""
        if self._lock is not None:
            self._lock((uid,))
        state = self.store.load(uid) or new_user(uid)
        new_state, effects = step(state, inp, now, self.program, self.reasons)
        if new_state is state and only_if_effects:
            return
        if new_state is not state:
            self._save(new_state)
        actions = [e for e in effects if isinstance(e, Action)]
        if actions:
            self.store.record(actions)
        self.sink.emit(before + effects if before else effects)

    def _save(self, state: UserState) -> None:
        zone = zone_name(state, self.program)
        self.store.save(state, zone)
        wake = state.wake
        if wake is not None and self._quiet_until is not None and wake < self._quiet_until:
            self._quiet_until = wake
        if zone not in self._zones_scheduled and self._started:
            self._plan_zone(zone, self.clock.now())


def _next_fire(schedule: Any, zone: str | None, after: datetime) -> datetime | None:
    """A schedule's first firing after `after`: in `zone` (user time), else in its own zone."""
    return next_fire(schedule.cron, zone or schedule.tz or "UTC", after)


def moments(now: datetime, times: Iterable[datetime]) -> list[datetime]:
    """The engine's time as it takes messages at these times, starting at `now`: each message's
    own, except that the clock never goes back (engine.runtime.clock.VirtualClock)."""
    out = []
    for t in times:
        now = t if t > now else now
        out.append(now)
    return out


def handle_all(engine: Engine, messages: Iterable[Message], until: datetime | None,
               progress: Callable[[int], None] | None = None) -> None:
    """The dry-run's loop: each message at its own time, timers in between, then run to `until`.
    Messages (any iterable, in time order) are taken GROUP_COMMIT at a time, so a long log is
    never held whole; `progress`, if given, hears the number handled after each group commit."""
    stream, done = iter(messages), 0
    prefetch = getattr(engine.store, "prefetch", None)  # a server store reads a group's rows at once
    while chunk := list(islice(stream, GROUP_COMMIT)):
        with engine.store.transaction():  # a durable store commits once per group, not per message
            if prefetch is not None:
                prefetch(chunk, moments(engine.clock.now(), (m.timestamp for m in chunk)))
            for msg in chunk:
                engine.take_alone(msg, msg.timestamp)
        done += len(chunk)
        if progress is not None:
            progress(done)
    run_until(engine, until)


def run_until(engine: Engine, until: datetime | None) -> None:
    """What follows the last message, in the dry-run and in `journeys replay`'s daemon alike:
    every timer and scheduled entry due by `until` fires, in one transaction."""
    if until is None:
        return
    with engine.store.transaction():
        engine.run_due(until)
        engine.clock.advance(until)
