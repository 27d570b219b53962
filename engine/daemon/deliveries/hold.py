"""The delivery loop's side of the emergency stop: which outbox entries to hold instead of attempting.

An operator's pause (engine.daemon.admin.pause_store) is a row of the store's `pauses`, written by
whichever worker took the request; every worker's deliveries must stop sending that journey's
messages soon after. So `Hold` reads the table again whenever its view is `POLL` seconds old,
right before it judges an entry (`Dispatcher._admit`, for claimed, handed and probed entries
alike): an entry admitted at t was judged by a view read after t - POLL, so a pause committed
before that holds it, on every worker, whatever the load (a busy loop only reads more often).
One indexed read of a table of a row or two, at most twice a second per loop, and only in rounds
that have entries to judge; nothing else while nothing is paused.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from ...store.outbox import Entry
from ..admin.pause_store import ALL, POLL, create, entry_journey, paused


class Hold:
    def __init__(self, conn: Any, poll: float = POLL, clock: Callable[[], float] = time.monotonic):
        self.conn, self.poll, self.clock = conn, poll, clock
        create(conn)  # a SQLite store the loop opens before any worker did (PostgreSQL: its migration)
        self.journeys: frozenset[str] = frozenset()
        self._read_at = float("-inf")

    def holds(self, entry: Entry) -> bool:
        """Whether `entry` belongs to a paused journey (or every send is paused)."""
        now = self.clock()
        if now - self._read_at >= self.poll:
            self.journeys = paused(self.conn)
            self._read_at = now  # taken before the read: the view is at most `poll` old when used
        if not self.journeys:
            return False
        return ALL in self.journeys or entry_journey(entry) in self.journeys
