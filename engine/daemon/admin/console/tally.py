"""What happened per journey and step in the last hour and day, for the console: users entered,
actions sent (or updated, for an audience), capped, suppressed, deferred, and goals converted.

Why the trail: it is the one record the daemon keeps of every effect with its journey, step and
time (engine.daemon.trail), entries and conversions included, which the action log has not. It is
read incrementally: each refresh reads the rows written since the last one (by id, the primary
key), counts their effects into per-minute buckets held here, and forgets buckets older than a
day, so a console that refreshes every 2 s costs a few rows a time, not a scan of the day. The
first refresh finds where the last day starts (a binary search over ids: rows are written in the
daemon clock's order) and reads it in chunks of READ_ROWS, for at most READ_SECONDS per refresh,
so a busy store's day is caught up over a few refreshes without holding a connection for long.

Several workers on PostgreSQL: a row's id is taken just before its transaction commits, so a row
of another worker may become visible after a higher id was read. Every gap between the ids read is
kept (`_missing`) and asked for again on each refresh for RECHECK seconds; a gap that stays empty
was a rolled back transaction. Each worker's console counts the same rows: the counts agree.

The counts are numbers only: no user id is kept. The newest actions' ids are (`recent`), for the
console's recent actions, which reads each action's row (whose user is a keyed hash once the user
is forgotten) when it shows them.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from ....core.effects import Action, Conversion, Transition, reported_outcome
from ....store import sql
from ... import trail

WINDOWS = (("1h", 3600), ("1d", 86400))
BUCKET = 60  # seconds per bucket
READ_ROWS = 2000  # trail rows per query
READ_SECONDS = 0.3  # a refresh reads at most this long (the rest of a backfill waits for the next)
RECHECK = 30.0  # seconds a gap in the ids is asked for again (a PostgreSQL row committed late)
MAX_MISSING = 5000  # gaps kept at most (a burst of rolled back transactions)
RECENT = 50  # actions' ids kept, newest last


def what(e: Any) -> str | None:
    """The name an effect is counted under, None for one the console does not count."""
    if isinstance(e, Action):
        outcome = reported_outcome(e.kind, e.outcome)
        return "capped" if outcome == "suppressed" and e.reason == "cap" else outcome
    if isinstance(e, Transition):
        return "entered" if e.kind == "entered" else None
    if isinstance(e, Conversion):
        return "converted"
    return None


class Tally:
    """Per-minute counts of (journey, step path or "", what) from the trail (see the module's docstring)."""

    def __init__(self, clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)):
        self.clock = clock
        self.buckets: dict[int, Counter[tuple[str, str, str]]] = {}
        self.recent: deque[tuple[datetime, str]] = deque(maxlen=RECENT)  # (time, action id)
        self.caught_up = False  # the last day is read whole
        self._cursor: int | None = None  # the highest id read
        self._missing: dict[int, float] = {}  # id of a gap -> time.monotonic() it was seen
        self._lock = threading.Lock()

    def refresh(self, conn: Any) -> None:
        """Read the rows written since the last refresh on `conn` (a reader's: SQLite or PostgreSQL)."""
        with self._lock:
            since = self.clock() - timedelta(seconds=WINDOWS[-1][1])
            if self._cursor is None:
                self._cursor = _first_id_since(conn, since) - 1
            self._recheck(conn, since)
            deadline = time.monotonic() + READ_SECONDS
            while True:
                rows = sql.execute(conn, "SELECT id, json FROM trail WHERE id > ? ORDER BY id LIMIT ?",
                                   (self._cursor, READ_ROWS)).fetchall()
                for row_id, raw in rows:
                    self._gaps(row_id)
                    self._count(raw, since)
                if len(rows) < READ_ROWS:
                    self.caught_up = True
                    break
                if time.monotonic() > deadline:
                    break
            oldest = int(since.timestamp()) // BUCKET
            for minute in [m for m in self.buckets if m < oldest]:
                del self.buckets[minute]

    def _gaps(self, row_id: int) -> None:
        """Move the cursor to `row_id`, keeping the ids skipped as gaps once the backfill is done
        (the backfill's rows are old: its gaps are deleted rows, not late commits)."""
        if self.caught_up:
            now = time.monotonic()
            for gap in range(self._cursor + 1, min(row_id, self._cursor + 1 + MAX_MISSING)):
                self._missing[gap] = now
        self._cursor = row_id

    def _recheck(self, conn: Any, since: datetime) -> None:
        """The rows of earlier gaps that have been committed since; gaps older than RECHECK go."""
        now = time.monotonic()
        for gap in [g for g, seen in self._missing.items() if now - seen > RECHECK]:
            del self._missing[gap]
        while len(self._missing) > MAX_MISSING:
            del self._missing[min(self._missing)]
        gaps = sorted(self._missing)
        for chunk in sql.chunks(gaps):
            for row_id, raw in sql.execute(conn, f"SELECT id, json FROM trail WHERE id IN ({sql.marks(len(chunk))})",
                                           chunk).fetchall():
                del self._missing[row_id]
                self._count(raw, since)

    def _count(self, raw: Any, since: datetime) -> None:
        for e in trail.effects(raw):
            name = what(e)
            if name is None or e.time < since:
                continue
            path = (e.path or "") if isinstance(e, Action) else ""
            minute = int(e.time.timestamp()) // BUCKET
            self.buckets.setdefault(minute, Counter())[(e.journey, path, name)] += 1
            if isinstance(e, Action):
                self.recent.append((e.time, e.id))

    def counts(self) -> dict[str, dict[tuple[str, str], dict[str, int]]]:
        """{window name: {(journey, step path or ""): {what: count}}} as of now."""
        now = int(self.clock().timestamp()) // BUCKET
        with self._lock:
            out: dict[str, dict[tuple[str, str], dict[str, int]]] = {}
            for name, seconds in WINDOWS:
                total: Counter[tuple[str, str, str]] = Counter()
                for minute, counter in self.buckets.items():
                    if minute > now - seconds // BUCKET:
                        total.update(counter)
                window: dict[tuple[str, str], dict[str, int]] = {}
                for (journey, path, name_), n in total.items():
                    window.setdefault((journey, path), {})[name_] = n
                out[name] = window
            return out

    def newest_actions(self) -> list[str]:
        """The ids of the newest actions, newest first, each once."""
        with self._lock:
            ordered = sorted(self.recent, reverse=True)
        return list(dict.fromkeys(action_id for _, action_id in ordered))


def _first_id_since(conn: Any, since: datetime) -> int:
    """The first trail id whose row is at or after `since` (one past the last when none): a binary
    search over ids, the rows being in time order (no index on time is needed)."""
    low, high = sql.execute(conn, "SELECT coalesce(min(id), 1), coalesce(max(id), 0) FROM trail").fetchone()
    bound = sql.moment(conn, since)
    answer = high + 1
    while low <= high:
        middle = (low + high) // 2
        row = sql.execute(conn, "SELECT id, time FROM trail WHERE id >= ? ORDER BY id LIMIT 1", (middle,)).fetchone()
        if row is None:
            high = middle - 1
        elif row[1] >= bound:
            answer = min(answer, row[0])
            high = middle - 1
        else:
            low = row[0] + 1
    return answer
