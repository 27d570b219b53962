"""Benchmark: timers. Many users wait in a journey, a large share of the waits end at once.

    python benchmarks/timers.py [--users 1000000] [--store sqlite|memory]

Builds N users who each entered `journey "T" { entry when event "A"  wait 1h  set user.done = true }`
(the entries are written straight through the engine, one event per user, all at the same
moment, so every wait is due at the same instant), then fires them all with `Engine.run_due` on
the daemon's SQLite store (or the memory store), TIMER_BATCH per transaction as the daemon does, and reports fires/s and, with the system clock,
how late the last timers fire (a timer is late by the time the engine needs to reach it).
Not a test: figures go to docs/performance.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.clock import VirtualClock  # noqa: E402
from engine.daemon import TIMER_BATCH  # noqa: E402
from engine.effects import Transition  # noqa: E402
from engine.messages import Message  # noqa: E402
from engine.program import Program  # noqa: E402
from engine.runtime import GROUP_COMMIT, Engine  # noqa: E402
from engine.store import MemoryStore  # noqa: E402
from journeys.checker import check_and_compile  # noqa: E402
from journeys.project import load_project  # noqa: E402

SOURCE = 'journey "T" {\n  entry when event "A"\n  wait 1h\n  set user.done = true\n}\n'
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=timezone.utc)


class Fires:
    """A sink noting when each wait ends (the `resumed` transition), in seconds from `start`."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.at: list[float] = []

    def emit(self, effects) -> None:
        for e in effects:
            if isinstance(e, Transition) and e.kind == "resumed":
                self.at.append(time.perf_counter() - self.start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--store", choices=("sqlite", "memory"), default="sqlite")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "p"
        (root / "journeys").mkdir(parents=True)
        (root / "journeys" / "t.journey").write_text(SOURCE)
        diags, compiled = check_and_compile(load_project(root))
        assert compiled is not None, list(diags)
        if args.store == "sqlite":
            from engine.sqlite_store import SqliteStore

            store = SqliteStore(str(Path(tmp) / "t.db"))
        else:
            store = MemoryStore(keep_actions=False)
        clock = VirtualClock(T0)
        fires = Fires()
        engine = Engine(Program.build(compiled), store, clock, fires)
        began = time.perf_counter()
        for start in range(0, args.users, GROUP_COMMIT):
            with store.transaction():
                for i in range(start, min(start + GROUP_COMMIT, args.users)):
                    engine.handle(Message("track", f"m{i}", T0, user_id=f"u{i:07d}", event="A"))
        entering = time.perf_counter() - began
        print(f"{args.users:,} users waiting, entered in {entering:.1f} s ({args.users / entering:,.0f}/s)")
        fires.start = time.perf_counter()
        more = True
        while more:  # as the daemon's worker fires them: TIMER_BATCH per transaction
            with store.transaction():
                more = engine.run_due(T0 + timedelta(hours=1), limit=TIMER_BATCH)
        firing = time.perf_counter() - fires.start
        n = len(fires.at)
        print(f"fired {n:,} timers in {firing:.1f} s: {n / firing:,.0f} fires/s ({args.store} store)")
        q = statistics.quantiles(fires.at, n=100) if n > 1 else [0.0] * 99
        print(f"lateness when all are due at once: p50 {q[49]:.2f} s, p99 {q[98]:.2f} s, last {fires.at[-1]:.2f} s")


if __name__ == "__main__":
    main()
