"""Where a delivery attempt runs, and how its outcome comes back to the dispatcher.

- A connector that delivers as a coroutine (`deliver_async`, the webhook's) runs on the connectors'
  event loop (`connectors.http.io_loop`), at most its `concurrency` at once (a semaphore each). Why: a
  thread per call in flight costs two thread hand-offs per call on top of the HTTP client, and in the
  delivery process every microsecond per call is a call less per second (issue 21, item 4).
- Any other in a pool of `concurrency` threads of its own (rendering, encryption and SMTP block), so a
  provider that hangs fills its own pool and no other's.
- `inline` (the dispatcher's `workers=1`, deterministic tests): on the caller's thread, one at a time.

Every outcome is a `Result` or a `DeliveryError`: an exception that is not one (a connector's bug) is
retried like a failure, so it never stops the other deliveries.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Mapping

from connectors.base import Delivery, Result
from connectors.errors import DeliveryError, RetryableError

Outcome = Result | DeliveryError
DEFAULT_CONCURRENCY = 4


def attempt(connector: Any, delivery: Delivery) -> Outcome:
    """One attempt on this thread."""
    try:
        return connector.deliver(delivery)
    except Exception as err:  # noqa: BLE001 - a DeliveryError, or a bug: an outcome either way
        return outcome_of(err)


def outcome_of(err: BaseException) -> DeliveryError:
    """The outcome an exception of `deliver` stands for."""
    if isinstance(err, DeliveryError):
        return err
    return RetryableError(f"connector error: {type(err).__name__}: {err}")


class Attempts:
    """Starts attempts where each connector's belong and calls `done(outcome)` as each ends (from the
    pool's thread or the loop's)."""

    def __init__(self, concurrency: Mapping[str, int], *, inline: bool = False):
        self.concurrency, self.inline = dict(concurrency), inline
        self._pools: dict[str, ThreadPoolExecutor] = {}
        self._gates: dict[str, asyncio.Semaphore] = {}  # used on the loop only
        self._tasks: set[asyncio.Task] = set()  # on the loop: a task nothing refers to may be collected
        self._on_loop = 0  # attempts handed to the loop and not done
        self._idle = threading.Condition()
        self._handed: list[tuple[str, Any, Delivery, Callable[[Outcome], None]]] = []  # for the loop's next turn

    def start(self, name: str, connector: Any, delivery: Delivery, done: Callable[[Outcome], None]) -> None:
        if self.inline:
            done(attempt(connector, delivery))
        elif getattr(connector, "deliver_async", None) is not None:
            with self._idle:
                self._on_loop += 1
                self._handed.append((name, connector, delivery, done))
                wake = len(self._handed) == 1
            if wake:  # one wake-up of the loop for the attempts a round starts, not one each (a syscall)
                from connectors.http import io_loop

                io_loop().call_soon_threadsafe(self._spawn)
        else:
            self._pool(name).submit(lambda: done(attempt(connector, delivery)))

    def close(self) -> None:
        """Wait for the attempts in flight (their `done` is called)."""
        for pool in self._pools.values():
            pool.shutdown(wait=True)
        self._pools.clear()
        with self._idle:
            self._idle.wait_for(lambda: self._on_loop == 0)

    # ------------------------------------------------------------------ inside

    def _pool(self, name: str) -> ThreadPoolExecutor:
        pool = self._pools.get(name)
        if pool is None:
            pool = self._pools[name] = ThreadPoolExecutor(
                self.concurrency.get(name, DEFAULT_CONCURRENCY), thread_name_prefix=f"journeys-deliver-{name}")
        return pool

    def _spawn(self) -> None:
        """On the loop: each attempt handed over since its last turn as a task, which calls its `done` itself
        (no future chained across threads: fewer hand-offs)."""
        with self._idle:
            handed, self._handed = self._handed, []
        loop = asyncio.get_running_loop()
        for name, connector, delivery, done in handed:
            task = loop.create_task(self._attempt_async(name, connector, delivery, done))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _attempt_async(self, name: str, connector: Any, delivery: Delivery,
                             done: Callable[[Outcome], None]) -> None:
        gate = self._gates.get(name)
        if gate is None:
            gate = self._gates[name] = asyncio.Semaphore(self.concurrency.get(name, DEFAULT_CONCURRENCY))
        outcome: Outcome = RetryableError("the attempt was cancelled")
        try:
            async with gate:
                outcome = await connector.deliver_async(delivery)
        except Exception as err:  # noqa: BLE001 - as `attempt`
            outcome = outcome_of(err)
        finally:
            with self._idle:
                self._on_loop -= 1
                self._idle.notify_all()
            done(outcome)
