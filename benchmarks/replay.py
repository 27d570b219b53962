"""Benchmark: `journeys replay` against `journeys simulate` on the same log, peak memory and time (issue 21, item 5).

    python benchmarks/replay.py [--events 317000] [--users 30000] [--seed 1] [--log FILE] [--rounds 1]

Generates a seeded log with `engine.dryrun.generate` (or takes --log), then runs, each in a fresh
process as a user runs them and interleaved when `--rounds` is more than 1, `journeys simulate
examples/shop -e LOG -q` and `journeys replay examples/shop -e LOG`. For each it reads the
process's peak resident set and CPU time from `os.wait4` (the replay is one process: the daemon,
its HTTP ingest and the dry-run are threads and phases of it) and its wall time. Prints the median
of each per command, and the ratios replay / simulate. A replay that does not end with "identical"
stops the benchmark: its time would measure something else.
Not a test: figures go to docs/performance.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHOP = ROOT / "examples" / "shop"
sys.path.insert(0, str(ROOT))

from engine.dryrun.generate import generate  # noqa: E402


def measured(command: list[str]) -> tuple[float, float, float, str]:
    """Run `command`; (wall seconds, CPU seconds, peak RSS in MiB, its stdout). Exits on a failure."""
    began = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - began
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        sys.exit(f"{' '.join(command)} exited {proc.returncode}:\n{stdout}{stderr}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=317_000)
    ap.add_argument("--users", type=int, default=30_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--log", type=Path, help="an existing log instead of a generated one")
    ap.add_argument("--rounds", type=int, default=1, help="runs of each command, interleaved")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        log = args.log
        if log is None:
            log = Path(tmp) / "events.jsonl"
            summary = generate(log, events=args.events, users=args.users, seed=args.seed)
            print(f"generated {summary.events:,} events for {summary.users:,} users")
        cli = [sys.executable, "-m", "engine.cli"]
        commands = {"simulate": [*cli, "simulate", str(SHOP), "-e", str(log), "-q"],
                    "replay": [*cli, "replay", str(SHOP), "-e", str(log)]}
        runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name in commands}
        for round_ in range(args.rounds):
            for name, command in commands.items():
                wall, cpu, peak, stdout = measured(command)
                if name == "replay" and "identical" not in stdout:
                    sys.exit(f"the replay found differences:\n{stdout}")
                runs[name].append((wall, cpu, peak))
                print(f"round {round_ + 1} {name:8} wall {wall:7.1f} s  CPU {cpu:7.1f} s  peak RSS {peak:6.0f} MiB",
                      flush=True)
    medians = {name: [statistics.median(r[i] for r in rs) for i in range(3)] for name, rs in runs.items()}
    for name, (wall, cpu, peak) in medians.items():
        print(f"{name:8} (median of {args.rounds}): wall {wall:7.1f} s  CPU {cpu:7.1f} s  peak RSS {peak:6.0f} MiB")
    (sw, sc, sp), (rw, rc, rp) = medians["simulate"], medians["replay"]
    print(f"replay / simulate: wall {rw / sw:.2f}x  CPU {rc / sc:.2f}x  peak RSS {rp / sp:.2f}x")


if __name__ == "__main__":
    main()
