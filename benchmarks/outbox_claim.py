"""Benchmark: the delivery process's claim round while a slow provider's connector is at its limit.

    python benchmarks/outbox_claim.py [--store sqlite,postgres] [--backlog 50000] [--runs 3] [--rounds 30]
    python benchmarks/outbox_claim.py --before REV    # the same, alternately on REV's code (git archive)

Each run, on a fresh store (SQLite file, or a PostgreSQL schema of its own on `--pg`, dropped
after): `--backlog` pending entries of connector "slow", all due, spread over the past hour; a
real `Dispatcher` (concurrency 4 each, so 8 leased at once) whose "slow" connector never answers
during the run, so its pool is full after the first round; then two phases of `--rounds` claim
rounds, each timed as the delivery loop runs one (`settle_done` + `start_due` in one
transaction, PostgreSQL claiming with SKIP LOCKED):

- idle: nothing else is due, the round claims nothing;
- trickle: one entry of connector "fast" (which answers at once) per 100 slow ones, interleaved
  in time; each round claims the next 8 of them (they must come in order).

Per run and phase the median round; printed per store and phase: the median of the runs, and
every run. With `--before REV` each run is made on REV's code and then on the working tree's,
alternately, and the ratio of the medians is printed. Not a test: figures go to docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=timezone.utc)
PG = "postgresql://postgres@127.0.0.1:5432/test"
PHASES = ("idle", "trickle")
PAYLOAD = {  # an action as the outbox holds it (Action.to_json), about 600 bytes
    "channel": None, "current_event": None, "entry": 1, "journey": "Browse abandonment", "kind": "webhook",
    "named": {}, "outcome": "sent", "path": "browse_abandonment/2/on_timeout/1", "reason": None, "rule": None,
    "target": "hook", "until": None, "version": "v3f9c1a2b", "via": None,
    "data": {"product": "Walnut side table", "category": "furniture", "price": 149.0, "url": "https://shop.example.com/p/walnut-side-table"},
    "event": {"event": "Product Viewed", "type": "track", "messageId": "m-0123456789abcdef",
              "properties": {"name": "Walnut side table", "category": "furniture", "price": 149.0, "sku": "WST-001"}},
}


class Hanging:
    """A provider that does not answer until the run ends."""

    name, channel = "slow", "webhook"
    uses_profile = False

    def __init__(self) -> None:
        self.release = threading.Event()

    def deliver(self, delivery):
        from connectors.base import Result

        self.release.wait(600)
        return Result(provider_id="late")


def open_store(kind: str, pg: str, tmp: Path):
    """(store, outbox as the delivery loop opens it, cleanup)."""
    if kind == "sqlite":
        from engine.store.outbox import SqliteOutbox
        from engine.store.sqlite_store import SqliteStore

        store = SqliteStore(str(tmp / f"{uuid.uuid4().hex}.db"))
        return store, SqliteOutbox(store.conn), store.close
    import psycopg
    from psycopg import sql

    from engine.store.pg_outbox import PostgresOutbox
    from engine.store.pg_store import PostgresStore
    from engine.store.urls import with_schema

    schema = f"bench_claim_{uuid.uuid4().hex[:12]}"
    store = PostgresStore(with_schema(pg, schema))

    def drop() -> None:
        store.close()
        with psycopg.connect(pg, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))

    return store, PostgresOutbox(store.conn, claim=True), drop


def fill(store, outbox, connector: str, n: int, every: int = 1, offset: int = 0) -> None:
    """`n` pending entries of `connector`, due over the hour before T0 (the i-th at slot i * every)."""
    from engine.store.outbox import Entry

    span = 3600.0 / max(1, n * every)
    for start in range(0, n, 5000):
        batch = []
        for i in range(start, min(n, start + 5000)):
            at = T0 - timedelta(hours=1) + timedelta(seconds=(i * every + offset) * span)
            action_id = f"{connector}-{i:06d}"
            payload = json.dumps({**PAYLOAD, "id": action_id, "user": f"u{i}", "time": at.isoformat()})
            batch.append(Entry(action_id, connector, f"u{i}", "webhook", "hook", payload, at, at))
        with store.transaction():
            outbox.add(batch)


def one_run(kind: str, pg: str, backlog: int, rounds: int) -> dict[str, float]:
    """Median seconds per claim round of each phase, on a fresh store."""
    from connectors.recording import RecordingConnector
    from engine.daemon.deliveries.dispatch import Dispatcher

    with tempfile.TemporaryDirectory() as tmp:
        store, outbox, cleanup = open_store(kind, pg, Path(tmp))
        slow, fast = Hanging(), RecordingConnector("fast", "webhook")
        dispatcher = None
        try:
            fill(store, outbox, "slow", backlog)
            if kind == "postgres":
                store.conn.execute("ANALYZE outbox")
            dispatcher = Dispatcher(outbox, {"slow": slow, "fast": fast}, profiles=lambda uid: {},
                                    transaction=store.transaction, workers=8,
                                    concurrency={"slow": 4, "fast": 4})
            finished = threading.Semaphore(0)
            now = T0 + timedelta(seconds=1)
            with store.transaction():
                assert dispatcher.start_due(now, on_done=finished.release) == 8  # the slow pool is full

            def phase(expect: int) -> float:
                times = []
                for _ in range(rounds):
                    began = time.perf_counter()
                    with store.transaction():  # as the delivery loop's round
                        dispatcher.settle_done(now)
                        started = dispatcher.start_due(now, on_done=finished.release)
                    times.append(time.perf_counter() - began)
                    assert started == expect, (started, expect)
                    for _ in range(started):
                        finished.acquire()
                return statistics.median(times)

            idle = phase(0)
            fill(store, outbox, "fast", backlog // 100, every=100, offset=50)
            trickle = phase(8)
            with store.transaction():
                dispatcher.settle_done(now)
            got = [d.action_id for d in fast.delivered]
            assert got == sorted(got) and len(got) == 8 * rounds, "the fast entries came out of order"
            return {"idle": idle, "trickle": trickle}
        finally:
            slow.release.set()
            if dispatcher is not None:
                dispatcher.close()
            cleanup()


def checkout(rev: str, into: Path) -> Path:
    """REV's tree (read from git, the working tree untouched), with this benchmark file in it."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    (into / "benchmarks").mkdir(exist_ok=True)
    (into / "benchmarks" / "outbox_claim.py").write_text(Path(__file__).read_text())
    return into


def in_process(root: Path, kind: str, args) -> dict[str, float]:
    out = subprocess.run([sys.executable, str(root / "benchmarks" / "outbox_claim.py"), "--one", kind,
                          "--backlog", str(args.backlog), "--rounds", str(args.rounds), "--pg", args.pg],
                         check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.splitlines()[-1])


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", default="sqlite,postgres")
    ap.add_argument("--backlog", type=int, default=50_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--pg", default=PG)
    ap.add_argument("--before", metavar="REV", help="also run REV's code, alternately, and print the ratio")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # one run on this tree, as JSON (for --before)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one_run(args.one, args.pg, args.backlog, args.rounds)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"now": ROOT}
        if args.before:
            trees = {args.before: checkout(args.before, Path(tmp)), "now": ROOT}
        for kind in args.store.split(","):
            runs: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
            for _ in range(args.runs):
                for name, root in trees.items():
                    runs[name].append(in_process(root, kind, args))
            for p in PHASES:
                medians = {}
                for name in trees:
                    each = [r[p] for r in runs[name]]
                    medians[name] = statistics.median(each)
                    print(f"{kind:8} {p:7} {name:10} median {ms(medians[name]):>10} per round "
                          f"(runs: {', '.join(ms(x) for x in each)})")
                if args.before:
                    print(f"{kind:8} {p:7} ratio      {medians[args.before] / medians['now']:.1f}x")


if __name__ == "__main__":
    main()
