"""Benchmark: what the daemon's trail (engine/daemon/trail.py) adds per event on the worker.

    python benchmarks/trail_cost.py [--store sqlite|postgres] [--pg URL] [--repeat 3]

Runs the shop's sample log (examples/shop/events/sample.jsonl) through the engine on a fresh
store, in group commits as the dry-run and the daemon do, once without and once with the `Trail`
sink, best of `--repeat` runs each; prints µs per event for both, the difference, the trail rows
per event and their bytes. PostgreSQL: a schema of its own on `--pg` (default the tests' server),
dropped after. Not a test: the figures go to engine/daemon/trail.py's docstring.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.daemon.trail import Trail  # noqa: E402
from engine.dryrun.eventlog import open_logs  # noqa: E402
from engine.dryrun.simulate import load_program  # noqa: E402
from engine.runtime.clock import VirtualClock  # noqa: E402
from engine.runtime.loop import Engine, handle_all  # noqa: E402
from engine.runtime.sinks import FanOut  # noqa: E402

LOG = ROOT / "examples" / "shop" / "events" / "sample.jsonl"


def open_store(kind: str, pg: str, tmp: Path):
    if kind == "sqlite":
        from engine.store.sqlite_store import SqliteStore

        return SqliteStore(str(tmp / f"{uuid.uuid4().hex}.db")), lambda: None
    import psycopg
    from psycopg import sql

    from engine.store.pg_store import PostgresStore
    from engine.store.urls import with_schema

    schema = f"bench_{uuid.uuid4().hex}"

    def drop() -> None:
        with psycopg.connect(pg, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))

    return PostgresStore(with_schema(pg, schema)), drop


def run(kind: str, pg: str, messages: list, with_trail: bool) -> tuple[float, int, int]:
    """(seconds, trail rows, trail bytes) of one run on a fresh store."""
    program = load_program(ROOT / "examples" / "shop")
    with tempfile.TemporaryDirectory() as tmp:
        store, drop = open_store(kind, pg, Path(tmp))
        try:
            sinks = [Trail(store)] if with_trail else []
            engine = Engine(program, store, VirtualClock(messages[0].timestamp), FanOut(*sinks))
            began = time.perf_counter()
            handle_all(engine, messages, None)
            seconds = time.perf_counter() - began
            rows = size = 0
            if with_trail:
                from engine.store import sql

                rows, size = sql.execute(store.conn, "SELECT count(*), coalesce(sum(length(json)), 0) FROM trail"
                                         ).fetchone()
            return seconds, rows, size
        finally:
            store.close()
            drop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    ap.add_argument("--pg", default="postgresql://postgres@127.0.0.1:5432/test")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    messages = list(open_logs([LOG]))
    n = len(messages)
    without = min(run(args.store, args.pg, messages, False)[0] for _ in range(args.repeat))
    runs = [run(args.store, args.pg, messages, True) for _ in range(args.repeat)]
    best, rows, size = min(runs)
    print(f"{args.store}: {n:,} events; without the trail {without / n * 1e6:.0f} µs/event, "
          f"with it {best / n * 1e6:.0f} µs/event: +{(best - without) / n * 1e6:.0f} µs/event; "
          f"{rows / n:.2f} trail rows/event, {size / n:.0f} bytes of json/event")


if __name__ == "__main__":
    main()
