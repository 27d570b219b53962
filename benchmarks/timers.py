"""Benchmark: timers. Many users wait in a journey; how fast and how late their waits end.

    python benchmarks/timers.py [--users 1000000] [--store sqlite|memory]
    python benchmarks/timers.py [--users 1000000] --spread 10000 [--window 30]

Every user enters `journey "T" { entry when event "A"  wait 1h  set user.done = true }`, written
straight through the engine (one event per user, GROUP_COMMIT per transaction). Two modes:

- at once (the default): all N users enter at the same moment, so every wait is due at the same
  instant; `Engine.run_due` fires them all on the daemon's SQLite store (or the memory store),
  TIMER_BATCH per transaction as the daemon does. Reports fires/s; its "lateness" is only how
  long the drain takes to reach a timer.
- spread (`--spread RATE`): the first RATE*WINDOW users' waits end evenly at RATE per second over
  WINDOW seconds, the others' long after (pending, they keep the timer index large). The real
  daemon worker (`engine.daemon.worker.Worker`) then runs on that store in real time, its clock laid
  onto the virtual timeline, and each fire's lateness (clock now − due time) is recorded: the
  lateness a daemon sees under a sustained rate of timers (issue 6's target).

Not a test: figures go to docs/performance.md.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.core.effects import Transition  # noqa: E402
from engine.core.messages import Message  # noqa: E402
from engine.core.program import Program  # noqa: E402
from engine.daemon.worker import TIMER_BATCH, Worker  # noqa: E402
from engine.runtime.clock import VirtualClock  # noqa: E402
from engine.runtime.loop import GROUP_COMMIT, Engine  # noqa: E402
from engine.store.base import MemoryStore  # noqa: E402
from journeys.checker import check_and_compile  # noqa: E402
from journeys.project import Project, load_project  # noqa: E402

SOURCE = 'journey "T" {\n  entry when event "A"\n  wait 1h\n  set user.done = true\n}\n'
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=timezone.utc)
WAIT = timedelta(hours=1)
LEAD = 2.0  # real seconds between the worker's start and the first spread timer falling due


class Fires:
    """A sink noting when each wait ends (the `resumed` transition), in seconds from `start`."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.at: list[float] = []

    def emit(self, effects) -> None:
        for e in effects:
            if isinstance(e, Transition) and e.kind == "resumed":
                self.at.append(time.perf_counter() - self.start)


class RealTime:
    """The worker's clock in spread mode: real time laid onto the virtual timeline, `now()` being
    `start` plus the real seconds since the clock was made, so the timers fall due in real time
    as in production. The engine calls `advance(due)` right before firing each timer (through
    engine.daemon.metrics.TimedClock): that is where a fire's lateness is noted."""

    def __init__(self, start: datetime) -> None:
        self.start, self.began = start, time.perf_counter()
        self.late: list[float] = []  # seconds, one per fire
        self.last = 0.0  # real seconds from the start to the last fire

    def now(self) -> datetime:
        return self.start + timedelta(seconds=time.perf_counter() - self.began)

    def advance(self, moment: datetime) -> None:
        self.last = time.perf_counter() - self.began
        self.late.append((self.start + timedelta(seconds=self.last) - moment).total_seconds())


def write_project(root: Path) -> tuple[Project, Program]:
    """The one-journey project; its journeys.toml (a name only) makes `root` the Worker's root."""
    (root / "journeys").mkdir(parents=True)
    (root / "journeys.toml").write_text('[project]\nname = "timers"\n')
    (root / "journeys" / "t.journey").write_text(SOURCE)
    project = load_project(root)
    diags, compiled = check_and_compile(project)
    assert compiled is not None, list(diags)
    return project, Program.build(compiled)


def enter(engine: Engine, store: Any, clock: VirtualClock, users: int, at: Callable[[int], datetime]) -> float:
    """User i sends event "A" at `at(i)` (nondecreasing), GROUP_COMMIT per transaction, as the
    worker's processor would take it; the seconds it took."""
    began = time.perf_counter()
    for start in range(0, users, GROUP_COMMIT):
        with store.transaction():
            for i in range(start, min(start + GROUP_COMMIT, users)):
                moment = at(i)
                clock.advance(moment)
                engine.handle(Message("track", f"m{i}", moment, user_id=f"u{i:07d}", event="A"))
    entering = time.perf_counter() - began
    print(f"{users:,} users waiting, entered in {entering:.1f} s ({users / entering:,.0f}/s)")
    return entering


def at_once(args: argparse.Namespace, tmp: Path) -> None:
    """Every wait due at one instant, drained TIMER_BATCH per transaction."""
    _, program = write_project(tmp / "p")
    if args.store == "sqlite":
        from engine.store.sqlite_store import SqliteStore

        store = SqliteStore(str(tmp / "t.db"))
    else:
        store = MemoryStore(keep_actions=False)
    clock = VirtualClock(T0)
    fires = Fires()
    engine = Engine(program, store, clock, fires)
    enter(engine, store, clock, args.users, lambda i: T0)
    fires.start = time.perf_counter()
    more = True
    while more:  # as the daemon's worker fires them: TIMER_BATCH per transaction
        with store.transaction():
            more = engine.run_due(T0 + WAIT, limit=TIMER_BATCH)
    firing = time.perf_counter() - fires.start
    n = len(fires.at)
    print(f"fired {n:,} timers in {firing:.1f} s: {n / firing:,.0f} fires/s ({args.store} store)")
    q = statistics.quantiles(fires.at, n=100) if n > 1 else [0.0] * 99
    print(f"lateness when all are due at once: p50 {q[49]:.2f} s, p99 {q[98]:.2f} s, last {fires.at[-1]:.2f} s")


def spread(args: argparse.Namespace, tmp: Path) -> None:
    """Timers due at a sustained rate, fired by the real daemon worker in real time."""
    from engine.store.sqlite_store import SqliteStore

    project, program = write_project(tmp / "p")
    path = str(tmp / "t.db")
    due = min(args.users, int(args.spread * args.window))  # the timers falling due in the window
    later = T0 + timedelta(seconds=args.window) + WAIT  # the others enter after the window's are due

    def at(i: int) -> datetime:
        first, k = (T0, i) if i < due else (later, i - due)
        return first + timedelta(seconds=k / args.spread)

    store = SqliteStore(path)
    clock = VirtualClock(T0)
    enter(Engine(program, store, clock, Fires()), store, clock, args.users, at)
    store.close()
    real = RealTime(T0 + WAIT - timedelta(seconds=LEAD))
    worker = Worker(project.root, project.config, program, path, clock=real, environ={}, deliver=False)
    worker.start()
    try:
        deadline = time.perf_counter() + args.window + 60
        while len(real.late) < due and time.perf_counter() < deadline:
            time.sleep(0.05)
    finally:
        worker.stop()
    report_spread(args, real, due, path)


def report_spread(args: argparse.Namespace, real: RealTime, due: int, path: str) -> None:
    """Fires, rate and lateness quantiles of the window; the users still waiting are counted in
    the file itself, so a fire the clock did not see would show."""
    late = real.late[:due]  # a fire after the window's last (none expected) is not the window's
    n = len(late)
    span = real.last - LEAD  # from the first timer falling due to the last fire
    conn = sqlite3.connect(path)
    (pending,) = conn.execute("SELECT count(*) FROM profiles WHERE wake IS NOT NULL").fetchone()
    conn.close()
    print(f"fired {n:,} of {due:,} timers due at {_num(args.spread)}/s over {_num(args.window)} s: "
          f"{n / span if span > 0 else 0:,.0f} fires/s achieved (daemon worker, sqlite store)")
    q = [x * 1000 for x in statistics.quantiles(late, n=100)] if n > 1 else [0.0] * 99
    print(f"lateness: p50 {q[49]:.1f} ms, p90 {q[89]:.1f} ms, p99 {q[98]:.1f} ms, "
          f"max {max(late, default=0) * 1000:.1f} ms; {pending:,} users still waiting")
    print("target (issue 6): p99 lateness <= 100 ms at a sustained rate")
    print(f"reproduce: python benchmarks/timers.py --users {args.users} --spread {_num(args.spread)} "
          f"--window {_num(args.window)}")


def _num(x: float) -> str:
    return f"{x:.0f}" if x == int(x) else repr(x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=1_000_000)
    ap.add_argument("--store", choices=("sqlite", "memory"), default="sqlite")
    ap.add_argument("--spread", type=float, metavar="RATE",
                    help="timers due at RATE per second, fired by the daemon worker in real time")
    ap.add_argument("--window", type=float, default=30.0, metavar="SECONDS",
                    help="with --spread: the seconds over which the timers fall due")
    args = ap.parse_args()
    if args.spread is not None and (args.store != "sqlite" or args.spread <= 0 or args.window <= 0):
        ap.error("--spread needs a positive RATE and --window, and the sqlite store (the daemon's worker)")
    with tempfile.TemporaryDirectory() as tmp:
        (spread if args.spread is not None else at_once)(args, Path(tmp))


if __name__ == "__main__":
    main()
