"""What the engine remembers about one user: the state that `engine.core.step.step` takes and returns.

Everything is an immutable value: a step never changes the state it was given, so the daemon can
write the new state and its effects in one transaction (or throw both away), and the dry-run can
keep old states for traces. Times are aware UTC datetimes throughout.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from types import MappingProxyType
from typing import Any, Mapping

from journeys.evaluation import Event, HistoryIndex
from journeys.fast_init import fast_init

from ..models.features import Features

_EMPTY: Mapping[str, Any] = MappingProxyType({})


@fast_init
@dataclass(frozen=True, slots=True)
class Instance:
    """One user's run through one journey.

    - `version`: the journey version entered; the user stays on it to the end.
    - `entry`: the entry number (1, 2, ... per user and journey); with `origin` (the user id at
      entry, which identity stitching never rewrites) it makes action ids unique and stable.
    - `path`/`wait`: where the user waits: `wait` (a duration), `until` (a time of day), `for` (an
      event, since `since`), `held` (a send held by quiet hours), `best` (a send waiting for the
      user's best time, `at best time within`). None while running.
    - `wake`: when the wait ends (the timer); None when not waiting.
    - `named`: the events bound with `as`.
    - `arms`: the split arms taken, as (split path, arm slug or "control").
    - `exiting`: the reason the journey ended while its `on exit` steps still run (a held send).
    - `start`: the event that started the run (templates' `event` in every action of it); None for
      a scheduled entry, or a segment entry a profile update caused.
    - `current`: while a send is held by quiet hours, the event its step ran on (templates'
      `current_event` when it is released); None otherwise.
    """

    journey: str
    version: str
    entry: int
    origin: str
    entered_at: datetime
    path: str | None = None
    wait: str | None = None
    since: datetime | None = None
    wake: datetime | None = None
    named: Mapping[str, Event] = field(default_factory=lambda: _EMPTY)
    arms: tuple[tuple[str, str], ...] = ()
    exiting: str | None = None
    start: Event | None = None
    current: Event | None = None


@fast_init
@dataclass(frozen=True, slots=True)
class PendingGoal:
    """A goal that may still convert: counted if its event comes by `deadline`, in flight or not."""

    journey: str
    version: str
    entry: int
    origin: str
    goal: str
    entered_at: datetime
    deadline: datetime
    arms: tuple[tuple[str, str], ...] = ()
    named: Mapping[str, Event] = field(default_factory=lambda: _EMPTY)  # the run's `as` events:
    # a goal's `where` may read them (`where product_id == viewed.product_id`), after the run too


@fast_init
@dataclass(frozen=True, slots=True)
class SendRecord:
    """A delivered action that caps count: its cap channel (email, push, sms, ads, webhook)."""

    time: datetime
    channel: str
    journey: str


@fast_init
@dataclass(frozen=True, slots=True)
class UserState:
    """One profile.

    - `traits`: the profile's traits (identify calls, `set user.X`, consent).
    - `history`: the events the project's conditions can read, and no more (see `HistoryNeeds`).
    - `instances`: journeys in flight, by journey name.
    - `entries`: per journey, (number of entries so far, time of the latest entry): reenter rules.
    - `goals`: goals that may still convert. `sends`: what caps count, within the longest window.
    - `audiences`: ad audiences the user is in. `segments`: memberships of the segments that
      journeys enter or exit on, as of the last evaluation (entry and exit happen on a change).
    - `aliases`: other ids stitched into this profile (anonymous ids, previous ids).
    - `features`: what the predictive models read (engine.models.features); None while the
      project uses no prediction and none is asked for, so those projects pay nothing.
    """

    user_id: str
    traits: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    history: HistoryIndex = field(default_factory=HistoryIndex)
    instances: Mapping[str, Instance] = field(default_factory=lambda: _EMPTY)
    entries: Mapping[str, tuple[int, datetime]] = field(default_factory=lambda: _EMPTY)
    goals: tuple[PendingGoal, ...] = ()
    sends: tuple[SendRecord, ...] = ()
    audiences: frozenset[str] = frozenset()
    segments: Mapping[str, bool] = field(default_factory=lambda: _EMPTY)
    aliases: frozenset[str] = frozenset()
    features: Features | None = None

    @property
    def wake(self) -> datetime | None:
        """The earliest timer of any journey in flight: when the engine must look at this user
        again without an event."""
        wakes = [i.wake for i in self.instances.values() if i.wake is not None]
        return min(wakes) if wakes else None

    def evolve(self, **changes: Any) -> "UserState":
        return replace(self, **changes)


def new_user(user_id: str) -> UserState:
    return UserState(user_id)
