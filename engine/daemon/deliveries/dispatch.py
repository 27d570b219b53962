"""From the outbox to the connectors: routing, attempts, retries with backoff, rate limits, batches
and dead letters.

- `route` says which connectors an action goes to: a message to its `via` connector or its
  channel's default, an audience change to every connector the audience syncs to, a webhook to
  its own endpoint (`connectors.registry`, where the delivery preflight routes the journeys' steps
  the same way before the daemon starts).
- `OutboxSink` is the daemon's sink: it writes each action that passed the delivery steps into the
  outbox (one entry per connector), in the transaction of the state that produced it.
- `Dispatcher.run_due(now)` attempts what is due. A retryable error reschedules the entry with
  exponential backoff and jitter (or the provider's Retry-After when it is longer), never past its
  deadline: its action's time plus its connector's `retry_for` (`connectors.registry.RetryPolicy`,
  48 h by default); a retryable failure at the deadline makes it dead, and `retry_dead` puts it
  back. A permanent error is recorded with the provider's answer; an invalid recipient (a hard
  bounce, a dead push token) also becomes a feedback event on the user, written in the settle's
  transaction (`engine.daemon.deliveries.feedback`), as do the dead devices of a push that reached
  others: the engine, taking the event, removes the token from the profile. A token bucket per
  connector holds entries back (without counting an attempt) when the connector's rate is used up.
- A circuit per connector (`Circuit`): after `circuit_failures` consecutive retryable failures it
  opens, and none of the connector's entries is taken (they stay pending, no attempt counted) but
  one probe per cool-down (15 s, doubling up to `circuit_wait_max`, or the provider's Retry-After);
  a success closes it. Claims skip an open connector, so its backlog never holds up another's
  deliveries; the entries it holds back past their deadline become dead letters as its probe
  rounds reach them. A permanent error neither opens nor closes it.
- Batching connectors take deliveries into batches (`queued`); `flush` sends them and settles
  each entry by its result.
- An operator's pause (engine.daemon.admin.pause_store) holds the entries of a paused journey: `hold`
  (engine.daemon.deliveries.hold.Hold) is asked before every other rule, and a held entry is
  written `held` (no attempt counted, its pool's room untouched) until a resume releases or drops it.
"""

from __future__ import annotations

import json
import logging
import queue
import random
import threading
from collections import Counter
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable, Mapping, Sequence

from connectors.base import Delivery, Result, delivery_of
from connectors.errors import DeliveryError, RetryableError
from connectors.registry import RetryPolicy, Routes, RoutingError, route  # noqa: F401 - the routing, shared with connectors.preflight

from ...core.effects import SENT, Action, Effect
from ...store.outbox import DEAD, DELIVERED, FAILED, HELD, PENDING, QUEUED, SENDING, Entry, Outbox, payload_json
from .attempts import Attempts

log = logging.getLogger("journeys.delivery")

FULL = object()  # Dispatcher._admit: the connector's pool has no room
LEASE = 120.0  # seconds an attempt may take before its entry can be taken again (longer than any timeout)
MAX_HELD = 10_000  # handed entries waiting in memory for room in their pool; the rest go back to the outbox
FIRST_PROBE = 15.0  # seconds from a circuit's opening to its first probe; each failed probe doubles it
PROBE_LOOK = 100  # entries of an open connector a probe round reads: the probe, and those past their deadline
DEFAULT_POLICY = RetryPolicy()  # a connector's without settings of its own (a webhook's)
ON_LOOP_ROOM = 8  # a coroutine connector's leased entries per unit of concurrency (Dispatcher._room)


def lease_seconds(environ: Mapping[str, str] | None = None) -> float:
    """The delivery lease: LEASE, or JOURNEYS_DELIVERY_LEASE seconds (tests shorten it)."""
    import os

    return float((os.environ if environ is None else environ).get("JOURNEYS_DELIVERY_LEASE", LEASE))


class OutboxSink:
    """The daemon's sink for actions: each sent action becomes outbox entries, due at once.

    Handed straight to the deliveries (`handoff(lease, now)`): the entries are written already
    leased (`sending` until `now() + lease`) and their ids kept in `fresh`, which the worker hands
    to its delivery loop after the commit, so a delivery starts without a claim transaction of its
    own (on the latency's path). The loop reads the rows back before it attempts them, so an id
    from a transaction that rolled back is skipped; an entry whose pool is full waits in the loop,
    still leased (`Dispatcher.start_handed`); if the deliveries die, the lease runs out and the
    entry is due again like any other."""

    def __init__(self, outbox: Outbox, routes: Routes, on_unroutable: Callable[[Action, str], None] | None = None,
                 defer: Callable[[Callable[[list[Entry]], None], list[Entry]], None] | None = None):
        """`defer`: the store's write-behind (engine.store.write_behind), on a store where a statement
        is a round trip: a transaction's entries are then written in one statement at its commit
        (the outbox's `add_new` says which were new)."""
        self.outbox, self.routes, self.on_unroutable, self.defer = outbox, routes, on_unroutable, defer
        self.lease: timedelta | None = None
        self.now: Callable[[], datetime] | None = None
        self.fresh: list[str] = []

    def handoff(self, lease: float, now: Callable[[], datetime]) -> None:
        self.lease, self.now = timedelta(seconds=lease), now

    def take_fresh(self) -> list[str]:
        """The ids written leased since the last call (the worker hands them over after a commit)."""
        fresh, self.fresh = self.fresh, []
        return fresh

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
            payload = payload_json(e.to_json())
            if self.lease is None:
                entries += [Entry(e.id, n, e.user, e.kind, e.target, payload, e.time, e.time) for n in names]
            else:
                until = max(e.time, self.now()) + self.lease  # type: ignore[misc]
                entries += [Entry(e.id, n, e.user, e.kind, e.target, payload, e.time, until, SENDING) for n in names]
        if not entries:
            return
        if self.defer is not None:
            self.defer(self._add_new, entries)
        elif self.outbox.add(entries) and self.lease is not None:
            self.fresh += [entry.id for entry in entries]

    def _add_new(self, entries: list[Entry]) -> None:
        new = self.outbox.add_new(entries)  # type: ignore[attr-defined]
        if self.lease is not None:
            self.fresh += new


def retry_dead(outbox: Outbox, entry_id: str, now: datetime) -> bool:
    """An operator's retry of a dead (or failed) entry: pending again, attempts reset. One past its
    connector's `retry_for` gets one attempt (none while the connector's circuit is open: it is dead
    again at the circuit's next probe round)."""
    entry = outbox.get(entry_id)
    if entry is None or entry.state not in (DEAD, FAILED):
        return False
    outbox.save(entry.evolve(state=PENDING, attempts=0, next_at=now))
    return True


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
        d = min(self.cap, self.base * 2 ** min(max(0, attempts - 1), 64))  # (a week of retries: no float overflow)
        d = d / 2 + self.rng.uniform(0, d / 2)
        return max(d, retry_after or 0.0)


@dataclass
class Circuit:
    """A connector's circuit breaker. Closed (`opened == 0`), its deliveries go out. After its
    policy's `circuit_failures` consecutive retryable failures it opens: none of its entries is
    taken until `probe_at`, when one goes alone as the probe; the probe's failure opens it again
    for twice as long (up to `circuit_wait_max`), any success closes it."""

    failures: int = 0  # consecutive retryable failures
    down_since: datetime | None = None  # the first of them
    error: str = ""  # the last one's answer
    opened: int = 0  # times opened since the last success: the cool-down doubles with each
    probe_at: datetime | None = None  # when the next probe may go
    probe: str | None = None  # the entry id of the probe in flight
    probe_until: datetime | None = None  # its lease: a probe never settled (a batch never flushed) is given up
    look_at: datetime | None = None  # when the entries it holds back are next read for their deadlines

    def waiting(self, now: datetime) -> bool:
        """Open, and no probe may go now (one is in flight, or the cool-down is not over)."""
        return self.opened > 0 and now < self._probe_time()

    def _probe_time(self) -> datetime:
        return self.probe_until if self.probe is not None else self.probe_at

    def next_round(self) -> datetime | None:
        """Open: when its next probe may go or its held entries are next read, whichever is first."""
        return min(self._probe_time(), self.look_at) if self.opened else None


class Circuits:
    """The circuits of a delivery loop's connectors, kept across a reload's new dispatcher. Only
    the delivery thread changes them; `view` is replaced whole after each change, for /metrics to
    read from another thread."""

    def __init__(self) -> None:
        self.by_name: dict[str, Circuit] = {}
        self.view: dict[str, dict[str, float]] = {}

    def publish(self) -> None:
        self.view = {name: {"open": 1 if c.opened else 0,
                            "down_since": c.down_since.timestamp() if c.opened and c.down_since else 0.0,
                            "failures": c.failures} for name, c in self.by_name.items()}


CLOSED = {"open": 0, "down_since": 0.0, "failures": 0}  # a circuit's view with nothing to report


ProfileLookup = Callable[[str], Mapping[str, Any]]


class Dispatcher:
    """Attempts outbox entries through their connectors and settles each by its outcome.

    Two ways to drive it: `run_due(now)` attempts what is due and returns when every attempt is
    settled (tests, tools); the daemon's delivery thread calls `start_due(now, on_done)`, which
    hands the attempts to the connectors' pools and returns at once, and `settle_done(now)` when
    `on_done` says some finished, so one slow provider never holds up another's deliveries.

    An entry taken for an attempt is leased (`sending`, `next_at` = the lease's end) in the
    outbox before the provider is called: no other round or worker takes it meanwhile, and if the
    process dies the lease runs out and the entry is attempted again, with the same idempotency
    key. Each connector has `concurrency[connector]` attempts in flight at most (default 4: threads
    of its own, or coroutines on the connectors' loop for one that delivers as a coroutine; see
    `engine.daemon.deliveries.attempts`) and at most twice that many entries leased at once (eight
    times for a coroutine connector: `_room`). The outbox is read and written on the caller's thread
    only, so a store whose connection belongs to one thread (SQLite) is never touched from another.
    """

    def __init__(self, outbox: Outbox, connectors: Mapping[str, Any], *, profiles: ProfileLookup,
                 policies: Mapping[str, RetryPolicy] | None = None, rng: random.Random | None = None,
                 limits: Mapping[str, TokenBucket] | None = None,
                 workers: int = 1, concurrency: Mapping[str, int] | None = None,
                 transaction: Callable[[], AbstractContextManager] = nullcontext, lease: float = LEASE,
                 circuits: Circuits | None = None, tally: Any = None, hold: Any = None, feedback: Any = None):
        """`transaction`: the outbox's, so a round's claims and outcomes are each one commit (never
        held open across a provider's call). `workers=1`: attempts run on the caller's thread,
        one at a time (deterministic tests). `policies`: each connector's retries and circuit (a
        connector not named has the defaults); `rng`: the backoff's jitter. `circuits`: those of
        the dispatcher this one replaces (a reload), so a provider that is down stays so. `tally`: an
        engine.daemon.metrics.Tally counting each attempt by connector and outcome (/metrics), kept
        by the delivery loop across reloads. `hold`: the paused journeys' check (`hold.holds(entry)`,
        engine.daemon.deliveries.hold.Hold); None: nothing is ever held. `feedback`: an
        engine.daemon.deliveries.feedback.FeedbackWriter, which writes what the outcomes report (a
        hard bounce, a dead push token) as events into the inbox in the transaction that settles
        them (the engine removes dead tokens as it takes them); None: nothing is reported (tests
        and tools that only look at the outbox)."""
        self.outbox, self.connectors, self.profiles = outbox, connectors, profiles
        self.feedback = feedback
        self.hold = hold
        self.transaction = transaction
        self.policies = dict(policies or {})
        self.rng = rng or random.Random()
        self._backoffs: dict[str, Backoff] = {}
        self.circuits = circuits or Circuits()
        self.tally = tally
        self.limits = dict(limits or {})
        self.workers = workers
        self.concurrency = dict(concurrency or {})
        self.lease = timedelta(seconds=lease)
        self.in_flight: dict[str, str] = {}  # entry id → connector, leased and not settled yet
        # handed over, leased to us, waiting for room in their pool: by connector, in hand-over order
        self.held: dict[str, dict[str, Entry]] = {}
        self._done: queue.SimpleQueue[tuple[Entry, Result | DeliveryError]] = queue.SimpleQueue()
        self.attempts = Attempts(self.concurrency, inline=workers <= 1)

    def delivery(self, entry: Entry, connector: Any = None) -> Delivery:
        profile = self.profiles(entry.user_id) if getattr(connector, "uses_profile", True) else {}
        return delivery_of(json.loads(entry.payload), profile)

    def run_due(self, now: datetime, limit: int = 100) -> int:
        """Attempt the entries due at `now` and settle them; returns how many were attempted."""
        finished = threading.Semaphore(0)
        started = self.start_due(now, limit, on_done=finished.release, bounded=False)
        for _ in range(started):
            finished.acquire()
        self.settle_done(now)
        return started

    def start_due(self, now: datetime, limit: int = 100, on_done: Callable[[], None] = lambda: None,
                  bounded: bool = True) -> int:
        """Lease the entries due at `now` and start their attempts; `on_done()` is called (from a
        pool thread) as each finishes. Returns how many were started. `bounded`: at most twice a
        connector's concurrency leased at once (the rest wait, unleased, for a later round)."""
        ready = self._claim(now, limit, bounded)
        for entry, connector in ready:
            self._start(entry, connector, on_done)
        return len(ready) + self._start_probes(now, on_done)

    def _start(self, entry: Entry, connector: Any, on_done: Callable[[], None]) -> None:
        self.in_flight[entry.id] = entry.connector

        def done(outcome: Result | DeliveryError) -> None:
            self._done.put((entry, outcome))
            on_done()

        self.attempts.start(entry.connector, connector, self.delivery(entry, connector), done)

    def start_handed(self, ids: Sequence[str], now: datetime,
                     on_done: Callable[[], None] = lambda: None) -> tuple[int, list[Entry]]:
        """Start the entries the worker wrote leased and handed over (`OutboxSink.handoff`), and
        those handed before that waited for room, without a claim transaction. They are read back
        first, in one query: one whose transaction rolled back is not there, one settled or taken
        by another worker is no longer ours. An entry whose pool is full waits here, still leased
        to us, for a round with room: writing it back pending and claiming it again cost two
        updates and a claim per entry under load. One that has waited half its lease (a provider
        that hangs), or beyond `MAX_HELD`, goes back to the outbox for whoever has room.

        Returns how many started, and the entries to write back in the caller's next transaction
        (given back or held by a rate limit: pending; no connector: failed)."""
        if ids:
            found = self.outbox.get_many(ids)
            for entry_id in ids:
                entry = found.get(entry_id)
                if (entry is not None and entry.state == SENDING and entry.next_at > now
                        and entry_id not in self.in_flight):
                    self.held.setdefault(entry.connector, {})[entry_id] = entry
        busy = Counter(self.in_flight.values())
        room = self._room
        full = {name for name, n in busy.items() if n >= room(name)}
        back: list[Entry] = []
        started = 0
        stale = now + self.lease / 2  # a lease ending before this is too short to start an attempt on
        waiting = sum(map(len, self.held.values()))
        for connector, line in list(self.held.items()):
            # only the front of each line is looked at: a round costs what it starts, not what waits
            while line:
                entry_id, entry = next(iter(line.items()))
                if entry.next_at < stale or waiting > MAX_HELD:  # (beyond the cap: the oldest, due first)
                    del line[entry_id]
                    waiting -= 1
                    back.append(entry.evolve(state=PENDING, next_at=now))
                    continue
                verdict = FULL if connector in full else self._admit(entry, now, busy, full, room)
                if verdict is FULL:
                    break
                del line[entry_id]
                waiting -= 1
                if isinstance(verdict, Entry):
                    back.append(verdict)
                else:
                    self._start(entry, verdict, on_done)
                    started += 1
            if not line:
                del self.held[connector]
        return started, back

    def waiting(self) -> list[str]:
        """The ids of the handed entries waiting for room, by connector, oldest first."""
        return [entry_id for line in self.held.values() for entry_id in line]

    def give_back(self, now: datetime) -> list[Entry]:
        """At a stop: the entries still waiting, pending again, for the caller to write back, so
        a successor takes them at once instead of after their lease."""
        held, self.held = self.held, {}
        return [entry.evolve(state=PENDING, next_at=now) for line in held.values() for entry in line.values()]

    def _room(self, connector: str) -> int:
        """How many entries of a connector may be leased at once: twice its pool; ON_LOOP_ROOM times its
        concurrency for one that delivers as a coroutine, whose attempts wait on the loop for a free slot
        and go the moment one frees, not at the delivery loop's next round (whose SQLite commit takes
        milliseconds: with 8 leased at 4 in flight the rounds, not the provider, set the pace)."""
        n = self.concurrency.get(connector, 4)
        return ON_LOOP_ROOM * n if getattr(self.connectors.get(connector), "deliver_async", None) else 2 * n

    def finished(self) -> bool:
        """Attempts finished and not settled yet."""
        return not self._done.empty()

    def settle(self, entries: Sequence[Entry]) -> None:
        """Write entries back (inside the caller's transaction): what `start_handed` returned."""
        if entries:
            self.outbox.save_many(entries)

    def settle_done(self, now: datetime) -> int:
        """Record the outcomes of the attempts that finished; returns how many."""
        done: list[tuple[Entry, Result | DeliveryError]] = []
        while True:
            try:
                done.append(self._done.get_nowait())
            except queue.Empty:
                break
        if not done:
            return 0
        settled = []
        for entry, outcome in done:
            self.in_flight.pop(entry.id, None)
            settled.append(self._settled(entry, outcome, now))
        with self.transaction():  # one statement for the round's outcomes, and the feedback they report
            self.outbox.save_many(settled)
            if self.feedback is not None:
                self.feedback.record(done, now)
        return len(done)

    def _claim(self, now: datetime, limit: int, bounded: bool) -> list[tuple[Entry, Any]]:
        busy = Counter(self.in_flight.values())
        room = self._room if bounded else (lambda name: limit)
        full = {name for name, n in busy.items() if n >= room(name)}
        # what each pool can take: the claim reads no more of a connector, however many of its
        # entries wait, and one connector's backlog leaves room in the round for the others' (an
        # entry of a connector not configured is failed at once: up to `limit` of those)
        free = {name: room(name) - busy[name] for name in self.connectors} if bounded else None
        ready: list[tuple[Entry, Any]] = []
        writes: list[Entry] = []  # the leases, and what is held back or failed: one statement
        with self.transaction():
            for entry in self.outbox.due(now, limit, skip=full | self.down(), room=free):
                if entry.id in self.in_flight:
                    continue  # still in flight here (its lease ran out first)
                self.held.get(entry.connector, {}).pop(entry.id, None)  # its lease ran out while it waited
                verdict = self._admit(entry, now, busy, full, room)
                if verdict is FULL:
                    continue  # it waits, as it is, for a later round
                if isinstance(verdict, Entry):  # held back or failed
                    writes.append(verdict)
                    continue
                writes.append(entry.evolve(state=SENDING, next_at=now + self.lease))
                ready.append((entry, verdict))
            if writes:
                self.outbox.save_many(writes)
        return ready

    def _admit(self, entry: Entry, now: datetime, busy: Counter, full: set[str],
               room: Callable[[str], int]) -> Any:
        """The rules before an attempt, for claimed and handed entries alike: the connector to
        attempt it with (counted as busy), FULL when its connector's pool is, or the entry as it
        must be written instead (held by a pause; failed without a connector; pending until the rate
        limit allows)."""
        if self.hold is not None and self.hold.holds(entry):
            return entry.evolve(state=HELD)
        if entry.connector in full:
            return FULL
        connector = self.connectors.get(entry.connector)
        if connector is None:
            return entry.evolve(state=FAILED, last_error=f'no connector named "{entry.connector}"')
        circuit = self.circuits.by_name.get(entry.connector)
        if circuit is not None and circuit.opened:
            if now >= self._deadline(entry):  # held back by the circuit until its time ran out
                log.warning("%s: not delivered within retry_for while %s is down (dead letter): %s", entry.id,
                            entry.connector, circuit.error)
                return entry.evolve(state=DEAD, last_error=entry.last_error or circuit.error)
            if circuit.waiting(now):
                return FULL
        bucket = self.limits.get(entry.connector)
        if bucket is not None:
            wait = bucket.take(now)
            if wait > 0:
                return entry.evolve(state=PENDING, next_at=now + timedelta(seconds=wait))
        if circuit is not None and circuit.opened:  # the one attempt an open circuit lets through
            circuit.probe, circuit.probe_until = entry.id, now + self.lease
        busy[entry.connector] += 1
        if busy[entry.connector] >= room(entry.connector):
            full.add(entry.connector)
        return connector

    def close(self) -> None:
        """Wait for the attempts in flight (`settle_done` then records them)."""
        self.attempts.close()

    def flush(self, now: datetime) -> None:
        """Send the batches of batching connectors and settle their entries."""
        for name, connector in self.connectors.items():
            flush = getattr(connector, "flush", None)
            if flush is None:
                continue
            waiting = {e.action_id: e for e in self.outbox.queued(name)}
            outcomes = list(flush())  # the provider calls happen here, outside the transaction
            settled = []
            for action_id, outcome in outcomes:
                entry = waiting.get(action_id)
                if entry is None:
                    continue
                if isinstance(outcome, Exception) and not isinstance(outcome, DeliveryError):
                    outcome = RetryableError(f"connector error: {outcome}")
                settled.append(self._settled(entry, outcome, now))
            with self.transaction():
                self.outbox.save_many(settled)

    def retry_dead(self, entry_id: str, now: datetime) -> bool:
        return retry_dead(self.outbox, entry_id, now)

    # ------------------------------------------------------------------ circuits

    def down(self) -> set[str]:
        """The connectors whose circuits are open: claims skip them (`_start_probes` probes them)."""
        return {name for name, c in self.circuits.by_name.items() if c.opened and name in self.connectors}

    def next_probe(self) -> datetime | None:
        """When `start_due` has the next probe round of an open circuit to run (None: no circuit is open)."""
        return min(filter(None, (c.next_round() for c in self.circuits.by_name.values())), default=None)

    def circuit_view(self) -> dict[str, dict[str, float]]:
        """Each connector's circuit for /metrics: open (1 or 0), down since (Unix time, 0 while
        closed) and consecutive retryable failures. Safe to call from any thread."""
        view = self.circuits.view
        return {name: view.get(name, CLOSED) for name in sorted(self.connectors)}

    def _start_probes(self, now: datetime, on_done: Callable[[], None]) -> int:
        """For each open circuit whose cool-down is over: its oldest due entry, alone, as the probe.
        The entries read with it that are past their deadline become dead letters on the way; they
        are read every `circuit_wait_max` too, however long the provider's Retry-After keeps the
        probe back, and round after round while each read finds some."""
        started = 0
        for name in sorted(self.down()):
            circuit = self.circuits.by_name[name]
            if circuit.waiting(now) and now < circuit.look_at:
                continue
            circuit.look_at = now + timedelta(seconds=self._policy(name).circuit_wait_max)
            others = (self.connectors.keys() | self.circuits.by_name.keys()) - {name}
            busy = Counter(self.in_flight.values())
            writes: list[Entry] = []
            probe: tuple[Entry, Any] | None = None
            with self.transaction():
                read = self.outbox.due(now, PROBE_LOOK, skip=others)
                for entry in read:
                    if entry.connector != name or entry.id in self.in_flight:
                        continue
                    verdict = self._admit(entry, now, busy, set(), self._room)
                    if isinstance(verdict, Entry):  # dead, or held back by the rate limit
                        writes.append(verdict)
                    elif verdict is not FULL:
                        probe = (entry, verdict)
                        writes.append(entry.evolve(state=SENDING, next_at=now + self.lease))
                if writes:
                    self.outbox.save_many(writes)
            if len(read) == PROBE_LOOK and any(e.state == DEAD for e in writes):
                circuit.look_at = now  # more may be past their deadline: the next round reads on
            if probe is not None:
                self._start(*probe, on_done)
                started += 1
            elif not circuit.waiting(now):  # nothing of it is due: the next probe with the next look
                circuit.probe_at = circuit.look_at
        return started

    def _tell_circuit(self, entry: Entry, outcome: Result | DeliveryError, now: datetime) -> None:
        """An attempt's outcome, as the connector's circuit counts it: a retryable failure is one
        more in a row (opening it at the policy's `circuit_failures`; a failed probe opens it again
        for longer); a success closes it; a permanent error, or an entry queued for a batch (its
        flush tells), changes nothing but the end of a probe."""
        name = entry.connector
        circuit = self.circuits.by_name.get(name)
        queued = isinstance(outcome, Result) and outcome.queued
        if circuit is None:
            if not isinstance(outcome, RetryableError):
                return
            circuit = self.circuits.by_name[name] = Circuit()
        was_probe = circuit.probe == entry.id and not queued
        if was_probe:
            circuit.probe = None
        if isinstance(outcome, RetryableError):
            policy = self._policy(name)
            circuit.failures += 1
            circuit.down_since = circuit.down_since or now
            circuit.error = _answer(outcome)
            # (a failure of an attempt that started before it opened changes nothing more)
            if was_probe or (not circuit.opened and 0 < policy.circuit_failures <= circuit.failures):
                circuit.opened += 1
                wait = max(min(policy.circuit_wait_max, FIRST_PROBE * 2 ** min(circuit.opened - 1, 64)),
                           min(outcome.retry_after or 0.0, policy.backoff_max))
                circuit.probe_at = now + timedelta(seconds=wait)
                circuit.look_at = min(circuit.probe_at, now + timedelta(seconds=policy.circuit_wait_max))
                if circuit.opened == 1:
                    log.warning("%s: circuit open after %d failures in a row since %s: its deliveries wait, "
                                "one probe every %s at most: %s", name, circuit.failures,
                                circuit.down_since.isoformat(timespec="seconds"),
                                timedelta(seconds=policy.circuit_wait_max), circuit.error)
                else:
                    log.debug("%s: the probe failed, the next in %.0f s: %s", name, wait, circuit.error)
        elif isinstance(outcome, Result) and not queued:
            del self.circuits.by_name[name]
            if circuit.opened:
                log.info("%s: circuit closed: delivering again after %s down", name,
                         timedelta(seconds=round((now - (circuit.down_since or now)).total_seconds())))
        self.circuits.publish()

    # ------------------------------------------------------------------ outcomes

    def _policy(self, connector: str) -> RetryPolicy:
        return self.policies.get(connector, DEFAULT_POLICY)

    def _deadline(self, entry: Entry) -> datetime:
        """The moment an entry's retries end: its action's time plus its connector's `retry_for`."""
        return entry.created + timedelta(seconds=self._policy(entry.connector).retry_for)

    def _settled(self, entry: Entry, outcome: Result | DeliveryError, now: datetime) -> Entry:
        """The entry as an attempt's (or a batch's) outcome leaves it, its circuit told."""
        settled = self._failed(entry, outcome, now) if isinstance(outcome, DeliveryError) else \
            self._succeeded(entry, outcome)
        self._tell_circuit(entry, outcome, now)
        if self.tally is not None and settled.attempts > entry.attempts:  # not one queued for a batch
            self.tally.add(("attempt", entry.connector, ATTEMPTED.get(settled.state, settled.state)))
            if entry.attempts:
                self.tally.add(("retry", entry.connector))
        return settled

    def _succeeded(self, entry: Entry, result: Result) -> Entry:
        """The entry as its success leaves it (to write)."""
        state = QUEUED if result.queued else DELIVERED
        return entry.evolve(state=state, attempts=entry.attempts + (0 if result.queued else 1),
                            provider_id=result.provider_id, last_error=None)

    def _failed(self, entry: Entry, err: DeliveryError, now: datetime) -> Entry:
        """The entry as this failure leaves it (to write): retried later, dead or failed."""
        attempts = entry.attempts + 1
        answer = _answer(err)
        if isinstance(err, RetryableError):
            deadline = self._deadline(entry)
            if now >= deadline:
                log.warning("%s: attempt %d failed at the end of its retries (retry_for): dead letter: %s", entry.id,
                            attempts, answer)
                return entry.evolve(state=DEAD, attempts=attempts, last_error=answer)
            backoff = self._backoffs.get(entry.connector)
            if backoff is None:
                policy = self._policy(entry.connector)
                backoff = self._backoffs[entry.connector] = Backoff(policy.backoff_base, policy.backoff_max, self.rng)
            # Retry-After too, but the last attempt is at the deadline
            next_at = min(now + timedelta(seconds=backoff.delay(attempts, err.retry_after)), deadline)
            # an operator sees a provider failing here (once per connector while its circuit is
            # open: `_tell_circuit`); the same Idempotency-Key goes with the retry
            down = entry.connector in self.down()
            log.log(logging.DEBUG if down else logging.WARNING, "%s: attempt %d failed, retried in %.1f s: %s",
                    entry.id, attempts, (next_at - now).total_seconds(), answer)
            return entry.evolve(state=PENDING, attempts=attempts, last_error=answer, next_at=next_at)
        log.warning("%s: failed for good: %s", entry.id, answer)
        return entry.evolve(state=FAILED, attempts=attempts, last_error=answer)


ATTEMPTED = {PENDING: "retrying"}  # an attempt's outcome for /metrics: the state it left, a retry to come named so


def _answer(err: DeliveryError) -> str:
    """An error as the outbox records it: what went wrong, and the provider's own words."""
    return f"{err}" + (f": {err.answer}" if err.answer else "")
