"""`TimerWindow`: the first timers of a store, held in memory so that `next_timer` is not a query.

The engine asks a store for its earliest due timer before every message and after every fire.
On SQLite that was an indexed query each time: about a tenth of a timer fire's cost when many
timers fall due together, and a query per message in the dry-run. The window reads the first
`size` timers in (due, user id) order in one query and then answers from memory, which is exact
as long as every change of a timer passes through the store that owns the window:

- invariant: the window holds every timer whose (due, user id) is at most `bound`, the last key
  read (or all timers, when the read returned fewer than `size`);
- `moved(uid, wake)` is called by the store's `save` and `delete`: the user's old entry leaves,
  the new one joins when it falls within the bound (beyond it, the next read finds it);
- `invalidate()` when the store cannot tell what changed (a rolled-back transaction): the next
  question reads again.

It suits a store with one writer (the daemon's SQLite file, the dry-run). A store shared by
several processes (PostgreSQL) cannot trust a window for long: another worker may add a timer.
"""

from __future__ import annotations

import heapq
from datetime import datetime
from typing import Callable

Key = tuple[datetime, str]

_ALL = None  # bound when the last read returned every timer there is


class TimerWindow:
    def __init__(self, read: Callable[[int], list[Key]], size: int = 1024):
        """`read(n)`: the store's first n timers as (due, user id), in that order."""
        self._read, self.size = read, size
        self._due: dict[str, datetime] = {}  # the live entries; the heap may hold stale ones
        self._heap: list[Key] = []
        self._bound: Key | None = _ALL
        self._valid = False

    def next(self, until: datetime) -> Key | None:
        """The earliest timer due at or before `until`."""
        if not self._valid:
            self._fill()
        while True:
            heap, due = self._heap, self._due
            while heap:
                key = heap[0]
                if due.get(key[1]) != key[0]:  # moved or cleared since it was pushed
                    heapq.heappop(heap)
                    continue
                return key if key[0] <= until else None
            if self._bound is _ALL:
                return None
            self._fill()  # everything read has fired: read the next ones
            if not self._heap:
                return None

    def moved(self, user_id: str, wake: datetime | None) -> None:
        """The user's timer is now `wake` (None: no timer, or the user is gone)."""
        if not self._valid:
            return
        due = self._due
        due.pop(user_id, None)
        if wake is None:
            return
        key = (wake, user_id)
        bound = self._bound
        if bound is _ALL or key <= bound:
            due[user_id] = wake
            heapq.heappush(self._heap, key)
            if len(self._heap) > 4 * self.size + 64:  # stale entries pile up: keep only the live ones
                self._heap = sorted((w, u) for u, w in due.items())

    def invalidate(self) -> None:
        self._valid = False

    def _fill(self) -> None:
        rows = self._read(self.size)
        self._heap = list(rows)  # sorted, so a heap already
        self._due = {uid: wake for wake, uid in rows}
        self._bound = rows[-1] if len(rows) >= self.size else _ALL
        self._valid = True
