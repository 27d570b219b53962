"""Benchmark: the dry-run on a large log, against the floor of merely reading it.

    python benchmarks/simulate.py [--events 1000000] [--users 100000] [--log FILE]

Generates a seeded log with `engine.dryrun.generate` (or takes --log), then measures in one process:
- the floor: read the file and `orjson.loads` every line, building nothing (`decode_only`);
- indexing: `open_logs` (decode and normalise every line once, keep its time and offset);
- re-reading: iterating the `SortedLog` alone (the second parse, which the run also does);
- the engine: `simulate` streaming the `SortedLog` with the shop's journeys (in-memory store),
  its time including that second reading;
- peak memory (the process's maximum resident set);
- the engine's CPU time (the process's), beside its wall time: on a shared machine the steadier of the two.
Prints events/s for each and the ratio of the end-to-end rate (reading + engine) to the floor.
Not a test: figures go to docs/performance.md.
"""

from __future__ import annotations

import argparse
import gc
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.dryrun.eventlog import decode_only, open_logs  # noqa: E402
from engine.dryrun.generate import generate  # noqa: E402
from engine.dryrun.simulate import load_program, simulate  # noqa: E402


def timed(fn):
    began = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - began


def cpu_timed(fn):
    """`timed`, and the process's CPU time: on a machine shared with other work the CPU time
    moves less than the wall time, so A/B comparisons read both."""
    cpu = time.process_time()
    result, seconds = timed(fn)
    return result, seconds, time.process_time() - cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--log", type=Path, help="an existing JSONL log instead of a generated one")
    args = ap.parse_args()

    program = load_program(ROOT / "examples" / "shop")
    with tempfile.TemporaryDirectory() as tmp:
        log = args.log
        if log is None:
            log = Path(tmp) / "events.jsonl"
            summary, seconds = timed(lambda: generate(log, events=args.events, users=args.users, seed=args.seed))
            print(f"generated {summary.events:,} events for {summary.users:,} users in {seconds:.1f} s")
        lines, floor = timed(lambda: decode_only(log))
        read, reading = timed(lambda: open_logs([log]))
        n = read.count
        _, rereading = timed(lambda: sum(1 for _ in read))
        gc.collect()
        gc.freeze()  # what lives to the end (the program): keep the collector from walking it again and again
        run, engine, engine_cpu = cpu_timed(lambda: simulate(program, read))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    total = reading + engine
    print(f"floor (read + JSON-decode):  {lines / floor:>10,.0f} lines/s   {floor:6.1f} s")
    print(f"indexing (open_logs):        {n / reading:>10,.0f} events/s  {reading:6.1f} s")
    print(f"re-reading (iterate alone):  {n / rereading:>10,.0f} events/s  {rereading:6.1f} s")
    print(f"engine (simulate + re-read): {n / engine:>10,.0f} events/s  {engine:6.1f} s")
    print(f"engine per CPU second:       {n / engine_cpu:>10,.0f} events/s  {engine_cpu:6.1f} s CPU")
    print(f"end to end (read + engine):  {n / total:>10,.0f} events/s  {total:6.1f} s"
          f"   = {100 * (n / total) / (lines / floor):.1f} % of the floor")
    print(f"peak memory (max RSS):       {peak:>10,.0f} MiB")
    print(f"users {len(run.report.users):,}; entries "
          f"{sum(j['entered'] for j in run.report.to_json()['journeys'].values()):,}")


if __name__ == "__main__":
    main()
