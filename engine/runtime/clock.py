"""Where `now` comes from: the one thing besides the store and the sink that the daemon and the
dry-run do differently.

`advance(t)` is how the runtime says "the next thing happens at t": a virtual clock jumps there
(never backwards), the system clock ignores it (real time moves by itself).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...

    def advance(self, moment: datetime) -> None: ...


class SystemClock:
    """Wall-clock time, UTC."""

    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    def advance(self, moment: datetime) -> None:
        pass


class VirtualClock:
    """Simulated time: it is whatever moment the run last advanced to, never earlier."""

    def __init__(self, start: datetime):
        if start.utcoffset() is None:
            raise ValueError("a virtual clock needs a timezone-aware start")
        self._now = start.astimezone(timezone.utc)

    def now(self) -> datetime:
        return self._now

    def advance(self, moment: datetime) -> None:
        if moment > self._now:
            self._now = moment.astimezone(timezone.utc)
