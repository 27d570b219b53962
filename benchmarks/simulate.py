"""Benchmark: the dry-run on a large log, against the floor of merely reading it.

    python benchmarks/simulate.py [--events 1000000] [--users 100000] [--log FILE]
    python benchmarks/simulate.py --log FILE --workers 1,2 [--rounds 3] [--no-training]

Generates a seeded log with `engine.dryrun.generate` (or takes --log), then measures in one process:
- the floor: read the file and `orjson.loads` every line, building nothing (`decode_only`);
- indexing: `open_logs` (decode and normalise every line once, keep its time and offset);
- re-reading: iterating the `SortedLog` alone (the second parse, which the run also does);
- the engine: `simulate` streaming the `SortedLog` with the shop's journeys (in-memory store),
  its time including that second reading;
- peak memory (the process's maximum resident set);
- the engine's CPU time (the process's), beside its wall time: on a shared machine the steadier of the two.
Prints events/s for each and the ratio of the end-to-end rate (reading + engine) to the floor.

With `--workers 1,2` it compares instead the partitioned dry-run (`journeys simulate --workers N`,
engine.dryrun.partitioned) at each count, as a user runs it: the command in a process of its own,
writing --json, --sends and --html, `--rounds` times interleaved (1, 2, 1, 2, ...); it prints the
median wall time per count, the ratio of each to the first, and whether every count wrote the same
bytes. Then, in this process, the share of a one-process run spent training the models (which a
partitioned run does once, in its coordinator, while the partitions wait). `--no-training` runs
a copy of the shop without what reads a model (the win-back journey, its segment, the learned
push cap), so nothing trains: the partitions' gain without that serial part.
Not a test: figures go to docs/performance.md.
"""

from __future__ import annotations

import argparse
import gc
import resource
import shutil
import statistics
import subprocess
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
    ap.add_argument("--workers", help="compare `journeys simulate --workers N` for these counts, e.g. 1,2")
    ap.add_argument("--rounds", type=int, default=3, help="runs per count (--workers), interleaved")
    ap.add_argument("--no-training", action="store_true", help="(--workers) the shop without what reads a model")
    args = ap.parse_args()
    if args.workers:
        compare_workers(args)
        return

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


def compare_workers(args: argparse.Namespace) -> None:
    counts = [int(n) for n in args.workers.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        log = args.log
        if log is None:
            log = Path(tmp) / "events.jsonl"
            generate(log, events=args.events, users=args.users, seed=args.seed)
        project = untrained_shop(Path(tmp)) if args.no_training else ROOT / "examples" / "shop"
        seconds: dict[int, list[float]] = {n: [] for n in counts}
        cpu: dict[int, list[float]] = {n: [] for n in counts}  # the command's and its processes' CPU seconds
        outputs: dict[int, set[bytes]] = {n: set() for n in counts}
        for round_ in range(args.rounds):
            for n in counts:
                out = Path(tmp) / f"w{n}-{round_}"
                out.mkdir()
                command = [sys.executable, "-m", "engine.cli", "simulate", str(project), "--events", str(log),
                           "--workers", str(n), "--json", str(out / "r.json"), "--sends", str(out / "s.jsonl"),
                           "--html", str(out / "r.html")]
                began, used = time.perf_counter(), children_cpu()
                done = subprocess.run(command, cwd=ROOT, capture_output=True)
                seconds[n].append(time.perf_counter() - began)
                cpu[n].append(children_cpu() - used)
                if done.returncode != 0:
                    sys.exit(done.stderr.decode())
                outputs[n].add(done.stdout + b"".join((out / f).read_bytes() for f in ("r.json", "s.jsonl", "r.html")))
                print(f"  round {round_ + 1}, --workers {n}: {seconds[n][-1]:6.1f} s, {cpu[n][-1]:6.1f} s CPU",
                      flush=True)
        base = statistics.median(seconds[counts[0]])
        for n in counts:
            median = statistics.median(seconds[n])
            print(f"--workers {n}: median {median:6.1f} s of {args.rounds} "
                  f"({', '.join(f'{s:.1f}' for s in seconds[n])})   x{base / median:.2f}   "
                  f"CPU median {statistics.median(cpu[n]):6.1f} s")
        identical = len(set().union(*outputs.values())) == 1
        print(f"output identical (--json, --sends, --html, summary) across counts and rounds: {'yes' if identical else 'NO'}")
        program = load_program(project)
        critical_path(program, project, log, max(counts))
        read = open_logs([log])
        gc.collect()
        before = resident()
        (trained, total), run = training_share(program, read, project)
        users = len(run.store.users())
        print(f"resident per user at the end of a one-process run: {(resident() - before) / users:,.0f} bytes "
              f"({users:,} users, {(resident() - before) / 2**20:,.0f} MiB over the {before / 2**20:,.0f} MiB "
              f"before the run)")
        if program.features_on:
            print(f"training share of a one-process run: {trained:.1f} s of {total:.1f} s = {100 * trained / total:.0f} %")


def critical_path(program, project: Path, log: Path, parts: int) -> None:
    """A partitioned run in this process, its CPU split: what the coordinator does alone (index,
    plan, trainings, merges) and what each partition does. On `parts` free cores the wall time is
    about the coordinator's part plus the slowest partition's: the ratio a loaded machine hides."""
    from engine.dryrun.partitioned.coordinator import run_partitioned
    from engine.dryrun.partitioned.identity import Links
    from engine.dryrun.partitioned.local import LocalExecutor
    from engine.dryrun.partitioned.partition import PartitionSpec

    began = time.process_time()
    executor = LocalExecutor(program=program)
    executor.start(PartitionSpec(str(project)), parts)
    links = Links()
    read = open_logs([log], observe=links.observe)
    plan = links.plan(read, parts)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            run = run_partitioned(program, plan.logs, executor, start=read.first, end=read.last,
                                  sends=Path(tmp) / "s.jsonl")
        finally:
            executor.close()
    coordinator = time.process_time() - began
    print(f"critical path of --workers {parts}, CPU: coordinator {coordinator:.1f} s + slowest partition "
          f"{max(run.cpu):.1f} s (partitions: {', '.join(f'{c:.1f}' for c in run.cpu)}; "
          f"messages {', '.join(f'{n:,}' for n in plan.messages)})")


def children_cpu() -> float:
    """CPU seconds (user + system) of the processes this one has waited for, and theirs."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def resident() -> int:
    """This process's resident set now, in bytes (Linux)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def training_share(program, read, project: Path):
    """Seconds spent training the models in a one-process run and the run's seconds; the run."""
    import engine.runtime.loop as loop

    spent = [0.0]
    fit = loop.train

    def timed_train(*a, **k):
        began = time.perf_counter()
        try:
            return fit(*a, **k)
        finally:
            spent[0] += time.perf_counter() - began

    loop.train = timed_train
    try:
        run, total = timed(lambda: simulate(program, read, templates=project))
    finally:
        loop.train = fit
    return (spent[0], total), run


def untrained_shop(tmp: Path) -> Path:
    """A copy of the shop without what reads a model: the win-back journey, its `at_risk` segment and
    the learned push cap. Its other journeys are the shop's."""
    shop = tmp / "shop"
    shutil.copytree(ROOT / "examples" / "shop", shop, ignore=shutil.ignore_patterns("tests"))
    (shop / "journeys" / "churn_winback.journey").unlink()
    policy = shop / "journeys" / "policy.journey"
    policy.write_text("".join(line for line in policy.read_text().splitlines(keepends=True) if " auto " not in line))
    segments = shop / "journeys" / "segments.journey"
    text = segments.read_text()
    segments.write_text(text[:text.index("# bought in the last 90 days")])
    config = shop / "journeys.toml"
    config.write_text(config.read_text().replace(', "Churn win-back"', ""))
    assert not load_program(shop).features_on, "the copy still reads a model"
    return shop


if __name__ == "__main__":
    main()
