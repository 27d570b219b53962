"""From the outbox to the connectors: routing, attempts, retries with backoff, rate limits, batches
and dead letters.

- `route` says which connectors an action goes to: a message to its `via` connector or its
  channel's default, an audience change to every connector the audience syncs to, a webhook to
  its own endpoint.
- `OutboxSink` is the daemon's sink: it writes each action that passed the delivery steps into the
  outbox (one entry per connector), in the transaction of the state that produced it.
- `Dispatcher.run_due(now)` attempts what is due. A retryable error reschedules the entry with
  exponential backoff and jitter (or the provider's Retry-After when it is longer); a permanent
  error is recorded with the provider's answer; an invalid recipient also tells `on_stale` which
  address or token to remove from the profile; after `max_attempts` an entry is dead, and
  `retry_dead` puts it back. A token bucket per connector holds entries back (without counting an
  attempt) when the connector's rate is used up.
- Batching connectors take deliveries into batches (`queued`); `flush` sends them and settles
  each entry by its result.
"""

from __future__ import annotations

import json
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable, Mapping, Sequence

from connectors.base import Delivery, Result
from connectors.errors import DeliveryError, InvalidRecipient, RetryableError

from .effects import SENT, Action, Effect
from .outbox import DEAD, DELIVERED, FAILED, PENDING, QUEUED, Entry, Outbox


class RoutingError(Exception):
    """No connector is configured for an action (the checker reports this before a run)."""


@dataclass(frozen=True)
class Routes:
    """Which connector names serve what, from journeys.toml."""

    defaults: Mapping[str, str]  # channel → its default connector
    audiences: Mapping[str, Sequence[str]]  # audience → connectors it syncs to
    webhooks: frozenset[str] = frozenset()  # webhook names; each is its own connector "webhook:NAME"

    @classmethod
    def from_config(cls, config: Any) -> "Routes":
        channels = sorted({c.channel for c in config.connectors.values()})
        defaults = {ch: name for ch in channels if (name := config.default_connector(ch)) is not None}
        return cls(defaults, {a: tuple(v.sync) for a, v in config.audiences.items()}, frozenset(config.webhooks))


def route(action: Action, routes: Routes) -> list[str]:
    if action.kind in ("email", "push", "sms"):
        name = action.via or routes.defaults.get(action.kind)
        if name is None:
            raise RoutingError(f"no {action.kind} connector is configured")
        return [name]
    if action.kind in ("audience_add", "audience_remove"):
        names = list(routes.audiences.get(action.target, ()))
        if not names:
            raise RoutingError(f'audience "{action.target}" syncs to no connector')
        return names
    if action.kind == "webhook":
        if action.target not in routes.webhooks:
            raise RoutingError(f'webhook "{action.target}" is not configured')
        return [f"webhook:{action.target}"]
    raise RoutingError(f"no route for {action.kind}")


class OutboxSink:
    """The daemon's sink for actions: each sent action becomes outbox entries, due at once."""

    def __init__(self, outbox: Outbox, routes: Routes, on_unroutable: Callable[[Action, str], None] | None = None):
        self.outbox, self.routes, self.on_unroutable = outbox, routes, on_unroutable

    def emit(self, effects: Sequence[Effect]) -> None:
        entries = []
        for e in effects:
            if not isinstance(e, Action) or e.outcome != SENT:
                continue
            try:
                names = route(e, self.routes)
            except RoutingError as err:
                if self.on_unroutable is not None:
                    self.on_unroutable(e, str(err))
                continue
            payload = json.dumps(e.to_json(), sort_keys=True, default=str)
            entries += [Entry(e.id, n, e.user, e.kind, e.target, payload, e.time, e.time) for n in names]
        if entries:
            self.outbox.add(entries)


def forget_address(traits: Mapping[str, Any], dead: str) -> dict[str, Any]:
    """The trait updates that remove a dead push token or Web Push endpoint from a profile."""
    updates: dict[str, Any] = {}
    if traits.get("push_token") == dead:
        updates["push_token"] = None
    tokens = traits.get("push_tokens")
    if isinstance(tokens, list) and dead in tokens:
        updates["push_tokens"] = [t for t in tokens if t != dead]
    subs = traits.get("webpush_subscriptions")
    if isinstance(subs, list):
        kept = [s for s in subs if not (s == dead or (isinstance(s, Mapping) and s.get("endpoint") == dead))]
        if len(kept) != len(subs):
            updates["webpush_subscriptions"] = kept
    return updates


class TokenBucket:
    """`rate` deliveries per second on average, bursts of up to `burst`."""

    def __init__(self, rate: float, burst: int):
        self.rate, self.burst = rate, burst
        self.tokens = float(burst)
        self.at: datetime | None = None

    def take(self, now: datetime) -> float:
        """0 and a token taken, or the seconds until one is available (nothing taken)."""
        if self.at is not None:
            self.tokens = min(self.burst, self.tokens + (now - self.at).total_seconds() * self.rate)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


@dataclass
class Backoff:
    """Exponential backoff with "equal jitter": half the delay fixed, half random, so retries of
    many actions failing together spread out instead of returning in a wave."""

    base: float = 2.0
    cap: float = 3600.0
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, attempts: int, retry_after: float | None = None) -> float:
        d = min(self.cap, self.base * 2 ** max(0, attempts - 1))
        d = d / 2 + self.rng.uniform(0, d / 2)
        return max(d, retry_after or 0.0)


ProfileLookup = Callable[[str], Mapping[str, Any]]
StaleHandler = Callable[[str, str, str], None]  # (user id, connector, stale address or token)


class Dispatcher:
    def __init__(self, outbox: Outbox, connectors: Mapping[str, Any], *, profiles: ProfileLookup,
                 max_attempts: int = 8, backoff: Backoff | None = None,
                 limits: Mapping[str, TokenBucket] | None = None, on_stale: StaleHandler | None = None,
                 workers: int = 1, concurrency: Mapping[str, int] | None = None):
        self.outbox, self.connectors, self.profiles = outbox, connectors, profiles
        self.max_attempts = max_attempts
        self.backoff = backoff or Backoff()
        self.limits = dict(limits or {})
        self.on_stale = on_stale
        self.workers = workers
        self.concurrency = dict(concurrency or {})
        self._gates: dict[str, threading.BoundedSemaphore] = {}
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None

    def delivery(self, entry: Entry) -> Delivery:
        a = json.loads(entry.payload)
        return Delivery(action_id=entry.action_id, kind=entry.kind, target=entry.target, user_id=entry.user_id,
                        profile=self.profiles(entry.user_id), data=a.get("data") or {}, named=a.get("named") or {},
                        event=a.get("event"), journey=a.get("journey", ""), step=a.get("path", ""))

    def run_due(self, now: datetime, limit: int = 100) -> int:
        """Attempt the entries due at `now`; returns how many were attempted.

        Deliveries run on the worker threads (at most `concurrency[connector]` at once per
        connector, default 4); the outbox is read and written on this thread only, so a store
        whose connection belongs to one thread (SQLite) is never touched from another."""
        ready: list[tuple[Entry, Any]] = []
        for entry in self.outbox.due(now, limit):
            connector = self.connectors.get(entry.connector)
            if connector is None:
                self._settle(entry.evolve(state=FAILED, last_error=f'no connector named "{entry.connector}"'))
                continue
            bucket = self.limits.get(entry.connector)
            if bucket is not None:
                wait = bucket.take(now)
                if wait > 0:
                    self._settle(entry.evolve(next_at=now + timedelta(seconds=wait)))
                    continue
            ready.append((entry, connector))
        deliveries = [(entry, connector, self.delivery(entry)) for entry, connector in ready]
        if self.workers <= 1 or len(deliveries) <= 1:
            outcomes = [self._attempt(e.connector, c, d) for e, c, d in deliveries]
        else:
            outcomes = list(self._pool().map(lambda x: self._attempt(x[0].connector, x[1], x[2]), deliveries))
        for (entry, _, _), outcome in zip(deliveries, outcomes):
            if isinstance(outcome, DeliveryError):
                self._failed(entry, outcome, now)
            else:
                self._succeeded(entry, outcome)
        return len(deliveries)

    def _attempt(self, name: str, connector: Any, delivery: Delivery) -> Result | DeliveryError:
        with self._gate(name):
            try:
                return connector.deliver(delivery)
            except DeliveryError as err:
                return err
            except Exception as err:  # a connector bug must not stop the others: retried like a failure
                return RetryableError(f"connector error: {type(err).__name__}: {err}")

    def _gate(self, name: str) -> threading.Semaphore:
        with self._lock:
            gate = self._gates.get(name)
            if gate is None:
                gate = self._gates[name] = threading.BoundedSemaphore(self.concurrency.get(name, 4))
            return gate

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.workers, thread_name_prefix="journeys-deliver")
        return self._executor

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def flush(self, now: datetime) -> None:
        """Send the batches of batching connectors and settle their entries."""
        for name, connector in self.connectors.items():
            flush = getattr(connector, "flush", None)
            if flush is None:
                continue
            waiting = {e.action_id: e for e in self.outbox.queued(name)}
            for action_id, outcome in flush():
                entry = waiting.get(action_id)
                if entry is None:
                    continue
                if isinstance(outcome, DeliveryError):
                    self._failed(entry, outcome, now)
                elif isinstance(outcome, Exception):
                    self._failed(entry, RetryableError(f"connector error: {outcome}"), now)
                else:
                    self._succeeded(entry, outcome)

    def retry_dead(self, entry_id: str, now: datetime) -> bool:
        """An operator's retry of a dead (or failed) entry: pending again, attempts reset."""
        entry = self.outbox.get(entry_id)
        if entry is None or entry.state not in (DEAD, FAILED):
            return False
        self._settle(entry.evolve(state=PENDING, attempts=0, next_at=now))
        return True

    # ------------------------------------------------------------------ outcomes

    def _succeeded(self, entry: Entry, result: Result) -> None:
        if self.on_stale is not None:  # delivered to some devices; others are gone (PushResult.stale)
            for dead in getattr(result, "stale", ()) or ():
                self.on_stale(entry.user_id, entry.connector, dead)
        state = QUEUED if result.queued else DELIVERED
        self._settle(entry.evolve(state=state, attempts=entry.attempts + (0 if result.queued else 1),
                                  provider_id=result.provider_id, last_error=None))

    def _failed(self, entry: Entry, err: DeliveryError, now: datetime) -> None:
        attempts = entry.attempts + 1
        answer = f"{err}" + (f": {err.answer}" if err.answer else "")
        if isinstance(err, RetryableError):
            if attempts >= self.max_attempts:
                self._settle(entry.evolve(state=DEAD, attempts=attempts, last_error=answer))
            else:
                delay = self.backoff.delay(attempts, err.retry_after)
                self._settle(entry.evolve(state=PENDING, attempts=attempts, last_error=answer,
                                          next_at=now + timedelta(seconds=delay)))
            return
        if isinstance(err, InvalidRecipient) and err.stale and self.on_stale is not None:
            self.on_stale(entry.user_id, entry.connector, err.stale)
        self._settle(entry.evolve(state=FAILED, attempts=attempts, last_error=answer))

    def _settle(self, entry: Entry) -> None:
        self.outbox.save(entry)
