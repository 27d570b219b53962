"""The `Store` protocol, and the in-memory store the dry-run uses.

A store keeps, per profile, the `UserState` the core returns (traits, history, journeys in flight,
goals, sends for caps, audiences), plus what spans profiles: the identity links (anonymous and
previous ids → profile), the messageIds already taken, the timers (each profile's next wake-up,
indexed by due time), the zone of each profile (for schedules in user time) and the action log.

Timers are derived from states: `save` sets the profile's timer to `state.wake`, so a state and
its timer can never disagree. Every implementation returns users and timers in a deterministic
order (by due time, then user id) so that runs are reproducible.
"""

from __future__ import annotations

import heapq
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime, timedelta
from typing import Iterable, Protocol, Sequence

from ..core.effects import Action
from ..core.state import UserState


class StoreError(Exception):
    """A store cannot be opened or used as asked: an unreachable server, a schema newer than this
    engine, a store that is not the caller's. The message is for a person (it names the store, never
    a password); command lines print it without a traceback."""


class Store(Protocol):
    def load(self, user_id: str) -> UserState | None: ...

    def save(self, state: UserState, zone: str) -> None:
        """Write the profile, its zone name and its timer (`state.wake`)."""
        ...

    def delete(self, user_id: str) -> None: ...

    def resolve(self, any_id: str) -> str | None:
        """The profile an anonymous or previous id was stitched into, if any."""
        ...

    def link(self, alias: str, user_id: str) -> None: ...

    def seen(self, message_id: str, at: datetime | None = None, since: datetime | None = None) -> bool:
        """True if this messageId was taken before (at or after `since`, when given); otherwise
        remember it as taken `at` and return False. A sighting before `since` is forgotten: the
        message is new again (the dedupe window, `[ingest] dedupe_days`)."""
        ...

    def next_timer(self, until: datetime) -> tuple[datetime, str] | None:
        """The earliest timer due at or before `until`, as (due, user id); it stays until `save`
        moves it."""
        ...

    def users(self) -> Iterable[str]:
        """Every profile id, sorted."""
        ...

    def users_in_zone(self, zone: str) -> Iterable[str]:
        """Profile ids whose zone is `zone`, sorted."""
        ...

    def zones(self) -> set[str]: ...

    def record(self, actions: Sequence[Action]) -> None:
        """Append to the action log; an id already logged is replaced (the latest decision)."""
        ...

    def save_models(self, version: str, trained_at: datetime, body: bytes) -> None:
        """Keep a trained version of the models (`ModelSet.to_plain` as JSON), the latest few."""
        ...

    def latest_models(self) -> bytes | None:
        """The latest version kept by `save_models`, None when there is none."""
        ...

    def models_at(self, trained_at: datetime) -> bytes | None:
        """The version kept for exactly the moment `trained_at`, None when there is none."""
        ...

    def claim_training(self, moment: datetime, owner: str, now: datetime, until: datetime) -> bool:
        """Take the training of `moment` for `owner` until `until`: True when it is ours now (new,
        already ours, or its previous holder's claim expired before `now`). Several workers on one
        store train each moment once: the others wait for its version (`models_at`)."""
        ...

    def transaction(self) -> AbstractContextManager:
        """Everything written inside commits together, or nothing does (group commit)."""
        ...


KEPT_MODELS = 10  # trained versions of the models a store keeps (the daemon reads the latest at start)
CLAIMS_KEPT = timedelta(days=7)  # a training's claim is deleted this long after it expired


class MemoryStore:
    """Everything in dictionaries: the dry-run's store, and the reference the others must match."""

    def __init__(self, keep_actions: bool = True) -> None:
        """`keep_actions=False`: the action log keeps only ids (the dry-run, whose report and
        `--sends` file are its log, need not hold every action of a long run in memory)."""
        self.keep_actions = keep_actions
        self.profiles: dict[str, UserState] = {}
        self.zone_of: dict[str, str] = {}
        self.links: dict[str, str] = {}
        self.message_ids: dict[str, datetime | None] = {}  # messageId -> when it was taken
        self.wakes: dict[str, datetime] = {}
        self._heap: list[tuple[datetime, str]] = []
        self.actions: dict[str, Action | None] = {}

    def load(self, user_id: str) -> UserState | None:
        return self.profiles.get(user_id)

    def save(self, state: UserState, zone: str) -> None:
        uid = state.user_id
        self.profiles[uid] = state
        self.zone_of[uid] = zone
        wake = state.wake
        if wake is None:
            self.wakes.pop(uid, None)
        elif self.wakes.get(uid) != wake:
            self.wakes[uid] = wake
            heapq.heappush(self._heap, (wake, uid))

    def delete(self, user_id: str) -> None:
        self.profiles.pop(user_id, None)
        self.zone_of.pop(user_id, None)
        self.wakes.pop(user_id, None)

    def resolve(self, any_id: str) -> str | None:
        return self.links.get(any_id)

    def link(self, alias: str, user_id: str) -> None:
        if alias != user_id:
            self.links[alias] = user_id

    def seen(self, message_id: str, at: datetime | None = None, since: datetime | None = None) -> bool:
        ids = self.message_ids
        if message_id in ids:
            before = ids[message_id]
            if since is None or before is None or before >= since:
                return True
        ids[message_id] = at
        return False

    def next_timer(self, until: datetime) -> tuple[datetime, str] | None:
        heap = self._heap
        while heap:
            due, uid = heap[0]
            if self.wakes.get(uid) != due:  # moved or cleared since it was pushed
                heapq.heappop(heap)
                continue
            return (due, uid) if due <= until else None
        return None

    def users(self) -> Iterable[str]:
        return sorted(self.profiles)

    def users_in_zone(self, zone: str) -> Iterable[str]:
        return sorted(u for u, z in self.zone_of.items() if z == zone)

    def zones(self) -> set[str]:
        return set(self.zone_of.values())

    def record(self, actions: Sequence[Action]) -> None:
        for a in actions:
            self.actions[a.id] = a if self.keep_actions else None  # type: ignore[assignment]

    def save_models(self, version: str, trained_at: datetime, body: bytes) -> None:
        self.models = body
        self.models_by_moment = {trained_at: body}

    def latest_models(self) -> bytes | None:
        return getattr(self, "models", None)

    def models_at(self, trained_at: datetime) -> bytes | None:
        return getattr(self, "models_by_moment", {}).get(trained_at)

    def claim_training(self, moment: datetime, owner: str, now: datetime, until: datetime) -> bool:
        return True  # one process: nobody to share the training with

    def transaction(self) -> AbstractContextManager:
        return nullcontext()  # nothing to commit: the dry-run's state lives and dies with the run
