"""Benchmark: 1, 2 and 4 `journeys serve` workers on one PostgreSQL schema (issue 7).

    python benchmarks/cluster.py [--workers 1,2,4] [--runs 2] [--duration 15] [--probe-events 10000]
                                 [--store postgresql://postgres@127.0.0.1:5432/test] [--no-profile]
                                 [--quiet-wait 60] [--vacuum] [--keep DIR]

The project, the webhook receiver, the load and the measures are those of benchmarks/latency.py
(imported from it): one journey `entry when event "Ping"`, `reenter always`, one webhook call per
event to a receiver on loopback (its own process), that notes each call's Idempotency-Key, the
send time the event carries and its arrival time. For each worker count N, a fresh schema
(`?schema=bench_cluster_<pid>_<N>w`, dropped afterwards) and N real `journeys serve` subprocesses
(`python -m engine.cli serve PROJECT --store ...?schema=... --port P`, JOURNEYS_WRITE_KEY,
JOURNEYS_RELOAD_POLL=0, PGAPPNAME=jbench-<i> so their sessions can be told apart in
pg_stat_activity); the benchmark waits until the 64 partitions are spread over all N, then:

- (a) the maximum: `--probe-events` events through `/v1/batch`, requests round robin over the
  workers, as fast as the ingests take them; the rate at which their webhook calls arrive between
  the 10th and 90th percentile of arrivals (a backlog being worked off) is the sustained
  end-to-end maximum. `--runs` times; the median is used. Measured meanwhile from /proc: the CPU
  seconds of the workers, of their PostgreSQL backends, of PostgreSQL's own processes, of the load
  generator and of the receiver, per event; the workers' memory (RSS) at the end.
- (b) the latency: open loop at half that maximum for `--duration` s (`--runs` times, medians):
  p50/p99 of webhook arrival - event send, split by the outbox's `created` in "send -> decided"
  and "decided -> call arrives".
- (c) every event produced exactly one call: no event without a call, no Idempotency-Key twice,
  no event with two keys; and at the end, in the schema: the inbox empty, nothing set aside, every
  outbox entry delivered.
- where the time goes (not part of the figures: a separate backlog of the same size, since
  sampling costs CPU on a small machine): `py-spy record --nonblocking --idle --threads -f raw` on
  worker 0, its samples split by thread and by state (waiting on PostgreSQL inside psycopg, in
  psycopg's Python, idle, computing); and pg_stat_activity sampled every 20 ms for the workers'
  sessions (active on CPU, waiting on what, idle in transaction; the statements seen active).

`--vacuum` (an experiment) runs VACUUM ANALYZE on the outbox before each run; `--quiet-wait` waits
for a quiet second before each run on a shared machine; `--keep DIR` keeps the workers' logs and
py-spy's raw samples.

Every subprocess (workers, receiver, py-spy) is stopped at the end, also on errors, Ctrl-C or
SIGTERM, and the schemas are dropped. Not a test: the figures go to docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import latency as L  # noqa: E402 - the receiver, the load, the measures

ROOT = L.ROOT
PY_SPY = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
TICK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------- CPU and memory from /proc

def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process so far; 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except (OSError, IndexError):
        return 0.0


def with_children(pids: list[int]) -> list[int]:
    """The processes and their children (a worker's delivery process: its CPU is the worker's)."""
    out = list(pids)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid in pids:
                out.append(int(entry))
    return out


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the machine so far, all cores."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    total = sum(v[:8])
    return (total - idle) / TICK, total / TICK


def rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MB."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    k, v = line.split(":")
                    out[k] = int(v.split()[0]) / 1024
    except OSError:
        pass
    return out.get("VmRSS", 0.0), out.get("VmHWM", 0.0)


def wait_quiet(limit: float, most: float = 0.25) -> float:
    """Wait up to `limit` s for a second in which the machine is less than `most` busy (other work
    on a shared machine); returns the busy share of the last second."""
    end = time.monotonic() + limit
    while True:
        b0, t0 = machine_cpu()
        time.sleep(1.0)
        b1, t1 = machine_cpu()
        busy = (b1 - b0) / max(1e-9, t1 - t0)
        if busy < most or time.monotonic() > end:
            return busy


class CpuMeter:
    """CPU seconds spent between start() and stop() by groups of processes, and by the machine."""

    def __init__(self, groups: dict[str, list[int]]):
        self.groups = groups

    def snapshot(self) -> dict[str, float]:
        snap = {g: sum(proc_cpu(p) for p in pids) for g, pids in self.groups.items()}
        snap["generator"] = time.process_time()
        snap["machine busy"], snap["machine total"] = machine_cpu()
        return snap

    def start(self) -> None:
        self.before, self.t0 = self.snapshot(), time.monotonic()

    def stop(self) -> dict[str, float]:
        after = self.snapshot()
        out = {k: after[k] - self.before[k] for k in after}
        out["wall"] = time.monotonic() - self.t0
        return out


# ---------------------------------------------------------------------------- PostgreSQL

def admin(base: str):
    import psycopg

    return psycopg.connect(base, autocommit=True)


def pg_pids(conn) -> tuple[list[int], list[int]]:
    """(the workers' backends, PostgreSQL's own processes: checkpointer, walwriter, ...)."""
    rows = conn.execute("SELECT pid, backend_type, application_name FROM pg_stat_activity").fetchall()
    ours = [pid for pid, kind, app in rows if kind == "client backend" and (app or "").startswith("jbench-")]
    aux = [pid for pid, kind, _ in rows if kind not in ("client backend", "autovacuum worker")]
    return ours, aux


class ActivitySampler:
    """pg_stat_activity every `every` s for the workers' sessions (application_name jbench-*)."""

    def __init__(self, base: str, every: float = 0.02):
        self.conn = admin(base)
        self.every = every
        self.states: Counter = Counter()  # (state, wait) -> samples of one session
        self.active: Counter = Counter()  # statement -> samples active
        self.samples = 0
        self.sessions = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping.is_set():
            rows = self.conn.execute(
                "SELECT state, wait_event_type, wait_event, regexp_replace(left(query, 90), '\\s+', ' ', 'g') "
                "FROM pg_stat_activity WHERE application_name LIKE 'jbench-%%' AND pid <> pg_backend_pid()"
            ).fetchall()
            self.samples += 1
            self.sessions = max(self.sessions, len(rows))
            for state, wtype, wevent, query in rows:
                if state == "active":
                    wait = f"{wtype}:{wevent}" if wtype else "CPU"
                    self.states[("active", wait)] += 1
                    self.active[query] += 1
                else:
                    self.states[(state, f"{wtype}:{wevent}" if wtype else "")] += 1
            time.sleep(self.every)

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(5)
        self.conn.close()

    def report(self) -> list[str]:
        n = max(1, self.samples)
        lines = [f"pg_stat_activity, {self.samples} samples of the workers' {self.sessions} sessions "
                 f"(average sessions in each state):"]
        for (state, wait), c in self.states.most_common(8):
            lines.append(f"    {c / n:5.2f}  {state}{' ' + wait if wait else ''}")
        total = sum(self.active.values()) or 1
        lines.append("  statements seen active (share of active samples):")
        for q, c in self.active.most_common(8):
            lines.append(f"    {100 * c / total:4.0f}%  {q}")
        return lines


# ---------------------------------------------------------------------------- py-spy's samples

ROLES = [  # (the thread's name starts with, what it does)
    ("journeys-worker", "processor (journeys, timers: the engine)"),
    ("journeys-delivery-pipe", "the pipe to the delivery process"),
    ("journeys-delivery", "delivery loop (claims, settles)"),
    ("journeys-deliver-", "connector pool (httpx POSTs)"),
    ("journeys-inbox", "ingest group commit"),
    ("MainThread", "HTTP (uvicorn on uvloop)"),
    ("journeys-listen", "LISTEN"),
]
IDLE_LEAVES = ("wait (threading.py", "_worker (concurrent/futures/thread.py", "get (queue.py", "sleep",
               "_recv (multiprocessing/connection.py")


def unqualified(frame: str) -> str:
    """`Connection.wait (psycopg/connection.py:495)` -> `wait (psycopg/connection.py:495)`: py-spy
    0.4 names a method with its class, which the checks below do not expect."""
    function, sep, where = frame.partition(" (")
    return function.rsplit(".", 1)[-1] + sep + where


def profile_report(raw: Path) -> list[str]:
    """py-spy's raw (collapsed) stacks, one line per stack with its thread's name first, split by
    thread and by state: waiting on PostgreSQL (the innermost psycopg frame is a wait), in psycopg's
    Python (building queries, adapting parameters and rows), idle (waiting on an event or a queue),
    computing. The main thread's stack ends in uvloop's C loop when it is idle and when it does
    socket I/O: those samples are counted apart."""
    per: dict[str, Counter] = {}
    hot: Counter = Counter()
    total = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        frames = [frames_0 := stack.split(";")[0]] + [unqualified(f) for f in stack.split(";")[1:]]
        name = frames_0.split(": ", 1)[-1]
        role = next((r for key, r in ROLES if name.startswith(key)), "other threads")
        leaf = frames[-1]
        in_pg = [f for f in frames if "psycopg/" in f]
        if in_pg and in_pg[-1].startswith("wait"):
            state = "idle" if "notifies" in stack else "waits on PostgreSQL"
        elif in_pg:
            state = "psycopg Python"
        elif any(leaf.startswith(k) for k in IDLE_LEAVES):
            state = "idle"
        elif leaf.startswith("run (asyncio/runners.py"):
            state = "in uvloop (C: socket I/O or idle)"
        else:
            state = "computes"
        total += n
        per.setdefault(role, Counter())[state] += n
        if role.startswith("processor") and state == "computes":
            ours = [f for f in frames[1:] if f.split(" (")[-1].startswith(("engine/", "connectors/"))]
            hot[ours[-1] if ours else leaf] += n
    if not total:
        return ["py-spy: no samples"]
    lines = [f"py-spy on worker 0, 100 samples/s per thread (idle threads included), {total} samples:"]
    for role, c in sorted(per.items(), key=lambda kv: -sum(v for k, v in kv[1].items() if k != "idle")):
        busy = sum(v for k, v in c.items() if k != "idle")
        if not busy:
            continue
        lines.append(f"  {role}: {busy} samples not idle: " + ", ".join(
            f"{k} {100 * v / busy:.0f}%" for k, v in c.most_common() if k != "idle"))
    ptotal = sum(hot.values()) or 1
    lines.append("  processor computing, by innermost engine frame:")
    for frame, c in hot.most_common(10):
        lines.append(f"    {100 * c / ptotal:4.0f}%  {frame}")
    return lines


# ---------------------------------------------------------------------------- the cluster

class Cluster:
    def __init__(self, n: int, base: str, root: Path, tmp: Path, procs: list[subprocess.Popen]):
        self.n, self.schema = n, f"bench_cluster_{os.getpid()}_{n}w"
        self.url = f"{base}?schema={self.schema}"
        self.ports = [L.free_port() for _ in range(n)]
        self.logs = [tmp / f"{self.schema}-w{i}.log" for i in range(n)]
        self.procs: list[subprocess.Popen] = []
        for i in range(n):
            env = {**os.environ, "JOURNEYS_WRITE_KEY": L.KEY, "JOURNEYS_RELOAD_POLL": "0",
                   "PYTHONPATH": str(ROOT), "PGAPPNAME": f"jbench-{i}"}
            with open(self.logs[i], "wb") as out:
                p = subprocess.Popen([sys.executable, "-m", "engine.cli", "serve", str(root), "--store", self.url,
                                      "--port", str(self.ports[i]), "--log-format", "text"],
                                     cwd=ROOT, env=env, stdout=out, stderr=out)
            procs.append(p)
            self.procs.append(p)
            if i == 0:  # the first one migrates the schema; the others then start together
                L.wait_up(f"http://127.0.0.1:{self.ports[0]}/healthz", p, "worker 0", self.logs[0])
        for i, p in enumerate(self.procs):
            L.wait_up(f"http://127.0.0.1:{self.ports[i]}/healthz", p, f"worker {i}", self.logs[i])

    def balanced(self, conn, timeout: float = 60) -> dict[str, int]:
        """Wait until every worker holds its fair share of the partitions."""
        share = math.ceil(64 / self.n)
        end = time.monotonic() + timeout
        held: dict[str, int] = {}
        while time.monotonic() < end:
            held = dict(conn.execute(f'SELECT owner, count(*) FROM "{self.schema}".partitions '
                                     "WHERE owner IS NOT NULL AND expires > now() GROUP BY owner").fetchall())
            if len(held) == self.n and sum(held.values()) == 64 and max(held.values()) <= share:
                return held
            time.sleep(0.2)
        raise SystemExit(f"{self.n} workers: the partitions are not spread after {timeout:.0f} s: {held}")

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def vacuum(conn, schema: str, on: bool) -> None:
    """An experiment (--vacuum): VACUUM ANALYZE the outbox before each run, so the delivery claims
    do not wade through the index entries of rows that were pending or sending before."""
    if on:
        conn.execute(f'VACUUM (ANALYZE) "{schema}".outbox')


def verify(calls: list, run: str, n: int) -> dict[str, int]:
    """(c): events without a call, Idempotency-Keys received more than once (the repeats), events
    with more than one key (processed twice)."""
    missing, _ = L.check(calls, run, n)
    keys = Counter(key for _, key, _, _ in calls)
    per_event: dict[str, set] = {}
    for seq, key, _, _ in calls:
        per_event.setdefault(seq, set()).add(key)
    repeats = [(key, [arrived for _, k, _, arrived in calls if k == key]) for key, c in keys.items() if c > 1]
    REPEATS.extend(repeats[:5])
    return {"missing": missing, "repeated": sum(c - 1 for c in keys.values() if c > 1),
            "twice": sum(1 for s in per_event.values() if len(s) > 1)}


REPEATS: list[tuple[str, list[int]]] = []  # (Idempotency-Key, arrival ns of each call): explained in (c)


def explain_repeats(conn, schema: str) -> list[str]:
    """For each repeated Idempotency-Key: when its calls arrived and how its outbox entry ended
    (attempts above 1: a retried attempt, the provider's side of at-least-once; 1: two
    deliveries of one lease, a bug)."""
    lines = []
    for key, arrivals in REPEATS:
        row = conn.execute(f'SELECT id, attempts, state, last_error, created, next_at FROM "{schema}".outbox '
                           "WHERE action_id = %s", (key,)).fetchall()
        gaps = ", ".join(f"+{(a - arrivals[0]) / 1e6:.1f} ms" for a in arrivals[1:])
        lines.append(f"    repeated {key}: calls {gaps} after the first; outbox {row}")
    REPEATS.clear()
    return lines


def created_ns(conn, schema: str) -> dict[str, int]:
    return {aid: int(ns) for aid, ns in conn.execute(
        f'SELECT action_id, (extract(epoch FROM created) * 1e9)::bigint FROM "{schema}".outbox')}


def settle(conn, schema: str, timeout: float = 30) -> dict:
    """The schema at the end: the inbox empty, nothing set aside, every outbox entry delivered."""
    end = time.monotonic() + timeout
    while True:
        inbox = conn.execute(f'SELECT count(*) FROM "{schema}".inbox').fetchone()[0]
        states = dict(conn.execute(f'SELECT state, count(*) FROM "{schema}".outbox GROUP BY state').fetchall())
        if (inbox == 0 and set(states) <= {"delivered"}) or time.monotonic() > end:
            break
        time.sleep(0.2)
    failed = conn.execute(f'SELECT count(*) FROM "{schema}".inbox_failed').fetchone()[0]
    messages = conn.execute(f'SELECT count(*) FROM "{schema}".messages').fetchone()[0]
    return {"inbox": inbox, "inbox_failed": failed, "outbox": states, "messages": messages}


def measure(n: int, args: argparse.Namespace, root: Path, tmp: Path, procs: list[subprocess.Popen],
            receiver: str, receiver_pid: int, conn) -> dict:
    cluster = Cluster(n, args.store, root, tmp, procs)
    try:
        held = cluster.balanced(conn)
        ports = cluster.ports
        print(f"\n== {n} worker(s), schema {cluster.schema}: partitions held {sorted(held.values())}; "
              f"load average {os.getloadavg()[0]:.2f}")
        sent = 0

        def flood(run: str, events: int) -> float:
            nonlocal sent
            took = asyncio.run(L.flood("127.0.0.1", ports, run, events, args.users, connections=8))
            sent += events
            if L.wait_calls(receiver, events, 900) < events:
                raise SystemExit(f"{n} workers, {run}: the webhook calls did not all arrive")
            return took

        flood("warm", 500)
        L.dump(receiver)

        ours, aux = pg_pids(conn)
        workers = [p.pid for p in cluster.procs]
        meter = CpuMeter({"workers": with_children(workers), "pg backends": ours, "pg own": aux, "receiver": [receiver_pid]})
        probes, cpu, problems = [], [], Counter()
        for r in range(args.runs):
            vacuum(conn, cluster.schema, args.vacuum)
            idle = wait_quiet(args.quiet_wait)
            meter.start()
            took = flood(f"p{r}", args.probe_events)
            cpu.append(meter.stop())
            calls = L.dump(receiver)["calls"]
            problems.update(verify(calls, f"p{r}", args.probe_events))
            rate, overall = L.drain(calls)
            probes.append(rate)
            c = cpu[-1]
            print(f"(a) run {r + 1}: {args.probe_events:,} events accepted in {took:.2f} s "
                  f"({args.probe_events / took:,.0f}/s); calls arrived at {rate:,.0f}/s (10th-90th percentile), "
                  f"{overall:,.0f}/s first send to last call; machine {100 * c['machine busy'] / c['machine total']:.0f}% busy "
                  f"(the second before: {100 * idle:.0f}%)")
        rss = [rss_mb(p) for p in workers]
        maximum = statistics.median(probes)
        c = {k: statistics.median(x[k] for x in cpu) for k in cpu[0]}
        c["others"] = c["machine busy"] - sum(c[k] for k in ("workers", "pg backends", "pg own", "generator", "receiver"))
        per_event = {k: 1000 * c[k] / args.probe_events
                     for k in ("workers", "pg backends", "pg own", "generator", "receiver", "others")}
        print(f"    maximum (median) {maximum:,.0f} events/s; CPU ms per event: "
              + ", ".join(f"{k} {v:.2f}" for k, v in per_event.items())
              + f"; machine busy {100 * c['machine busy'] / c['machine total']:.0f}% of {os.cpu_count()} cores over "
              f"{c['wall']:.1f} s; workers' RSS " + ", ".join(f"{a:.0f} MB (peak {b:.0f})" for a, b in rss))

        rate = args.rate or maximum / 2
        lat = []
        for r in range(args.runs):
            vacuum(conn, cluster.schema, args.vacuum)
            wait_quiet(args.quiet_wait)
            run = f"r{r}"
            gen = asyncio.run(L.paced("127.0.0.1", ports, run, rate, args.duration, args.tick_ms / 1000, args.users))
            sent += gen["events"]
            L.wait_calls(receiver, gen["events"], 300)
            time.sleep(0.5)  # a repeat would come now
            calls = L.dump(receiver)["calls"]
            v = verify(calls, run, gen["events"])
            problems.update(v)
            ms = sorted((at - s) / 1e6 for _, _, s, at in calls)
            decided = created_ns(conn, cluster.schema)
            before = sorted((decided[k] - s) / 1e6 for _, k, s, _ in calls if k in decided) or [math.nan]
            after = sorted((at - decided[k]) / 1e6 for _, k, _, at in calls if k in decided) or [math.nan]
            res = {"p50": L.pct(ms, 0.5), "p99": L.pct(ms, 0.99), "lat_max": ms[-1],
                   "before_p50": L.pct(before, 0.5), "before_p99": L.pct(before, 0.99),
                   "after_p50": L.pct(after, 0.5), "after_p99": L.pct(after, 0.99)}
            lat.append(res)
            print(f"(b) run {r + 1}: {gen['events']:,} events at {rate:,.0f}/s open loop, {len(calls):,} calls; "
                  f"p50 {res['p50']:.1f} ms, p99 {res['p99']:.1f} ms, max {res['lat_max']:.1f} ms; send -> decided "
                  f"p50 {res['before_p50']:.1f} / p99 {res['before_p99']:.1f} ms, decided -> arrives p50 "
                  f"{res['after_p50']:.1f} / p99 {res['after_p99']:.1f} ms; generator late p99 {gen['late_p99_ms']:.1f} ms"
                  + (f"  {v}" if any(v.values()) else ""))
        med = {k: statistics.median(x[k] for x in lat) for k in lat[0]}

        profile: list[str] = []
        if args.profile:
            sampler = ActivitySampler(args.store)
            raw = tmp / f"{cluster.schema}.raw"
            spy = subprocess.Popen([PY_SPY, "record", "--nonblocking", "--idle", "--threads", "-f", "raw", "-r", "100",
                                    "-o", str(raw), "-p", str(workers[0])],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            procs.append(spy)
            try:
                time.sleep(1.0)
                flood("prof", args.probe_events)
                problems.update(verify(L.dump(receiver)["calls"], "prof", args.probe_events))
            finally:
                spy.send_signal(signal.SIGINT)
                try:
                    spy.wait(60)
                except subprocess.TimeoutExpired:
                    spy.kill()
                sampler.stop()
            if args.keep:
                shutil.copy(raw, args.keep / raw.name)
            profile = (profile_report(raw) if raw.exists() else ["py-spy wrote nothing"]) + sampler.report()
            for line in profile:
                print("    " + line)

        final = settle(conn, cluster.schema)
        time.sleep(1.0)  # PostgreSQL 15 flushes its table statistics about every second
        scans = conn.execute(
            "SELECT relname, coalesce(seq_scan, 0) + coalesce(idx_scan, 0), n_tup_ins, n_tup_upd, n_tup_del "
            "FROM pg_stat_user_tables WHERE schemaname = %s ORDER BY 2 DESC", (cluster.schema,)).fetchall()
        print(f"    per event sent, by table: scans (index or sequential) / rows inserted / updated / deleted: "
              + "; ".join(f"{t} {a / sent:.2f}/{i / sent:.2f}/{u / sent:.2f}/{d / sent:.2f}"
                          for t, a, i, u, d in scans if a + i + u + d >= sent / 100))
        ok = final["inbox"] == 0 and final["inbox_failed"] == 0 and set(final["outbox"]) <= {"delivered"} \
            and final["outbox"].get("delivered") == sent and final["messages"] >= sent
        for line in explain_repeats(conn, cluster.schema):
            print(line)
        print(f"(c) {sent:,} events sent; calls: {problems['missing']} events without a call, "
              f"{problems['repeated']} repeated Idempotency-Keys, {problems['twice']} events with two keys; "
              f"schema: {final}{'' if ok else '  NOT SETTLED'}")
        return {"workers": n, "max": maximum, "probes": probes, "rate": rate, **med, "cpu": per_event,
                "busy": c["machine busy"] / c["machine total"], "rss": rss, "problems": dict(problems),
                "settled": ok, "profile": profile}
    finally:
        cluster.stop()
        if args.keep:
            for log in cluster.logs:
                if log.exists():
                    shutil.copy(log, args.keep / log.name)
        conn.execute(f'DROP SCHEMA IF EXISTS "{cluster.schema}" CASCADE')


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", default="1,2,4", help="worker counts, comma-separated")
    ap.add_argument("--runs", type=int, default=2, help="runs of (a) and of (b) per worker count; medians reported")
    ap.add_argument("--duration", type=float, default=15, help="seconds of open-loop load per run of (b)")
    ap.add_argument("--probe-events", type=int, default=10000, help="events of each backlog of (a)")
    ap.add_argument("--rate", type=float, help="events/s for (b) (default: half the maximum of (a))")
    ap.add_argument("--tick-ms", type=float, default=2.0, help="one /v1/batch request every TICK ms in (b)")
    ap.add_argument("--users", type=int, default=1000, help="distinct userIds the events cycle over")
    ap.add_argument("--store", default="postgresql://postgres@127.0.0.1:5432/test",
                    help="the PostgreSQL database (a schema per worker count is created in it and dropped)")
    ap.add_argument("--no-profile", dest="profile", action="store_false", help="no py-spy / pg_stat_activity pass")
    ap.add_argument("--quiet-wait", type=float, default=60, help="before each run, wait up to this many seconds "
                    "for the machine to be under 25%% busy (other work on a shared machine)")
    ap.add_argument("--vacuum", action="store_true", help="an experiment: VACUUM ANALYZE the outbox before each run")
    ap.add_argument("--deliveries", choices=("process", "thread"), default="process",
                    help="[serve] deliveries of the workers: each worker's deliveries in a child process "
                         "(the default) or on a thread of the worker's process")
    ap.add_argument("--keep", type=Path, help="copy the workers' logs and py-spy's raw samples to this directory")
    args = ap.parse_args()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    counts = [int(x) for x in args.workers.split(",")]

    procs: list[subprocess.Popen] = []

    def stop_all() -> None:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # SIGTERM as Ctrl-C: the finally below stops everything

    signal.signal(signal.SIGTERM, interrupted)
    results = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        conn = admin(args.store)
        try:
            rport = L.free_port()
            receiver = f"http://127.0.0.1:{rport}"
            rproc = subprocess.Popen([sys.executable, L.__file__, "--receive", str(rport)])
            procs.append(rproc)
            L.wait_up(receiver + "/count", rproc, "the receiver")
            root = L.project(tmp / "p", receiver + "/hook", args.deliveries)
            version = conn.execute("SHOW server_version").fetchone()[0]
            print(f"PostgreSQL {version} at {args.store}; {os.cpu_count()} cores shared by PostgreSQL, the workers, "
                  f"the load generator and the receiver; load average before: {os.getloadavg()[0]:.2f}")
            for n in counts:
                results.append(measure(n, args, root, tmp, procs, receiver, rproc.pid, conn))
        finally:
            stop_all()
            for n in counts:  # a schema left by an interrupted measure
                try:
                    conn.execute(f'DROP SCHEMA IF EXISTS "bench_cluster_{os.getpid()}_{n}w" CASCADE')
                except Exception:  # noqa: BLE001
                    pass
            conn.close()

    print(f"\n| workers | maximum events/s (runs) | (b) rate | p50 | p99 | CPU ms/event workers + PG | machine busy "
          f"| worker RSS | lost / repeated |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        p = r["problems"]
        print(f"| {r['workers']} | {r['max']:,.0f} ({', '.join(f'{x:,.0f}' for x in r['probes'])}) | {r['rate']:,.0f} "
              f"| {r['p50']:.1f} ms | {r['p99']:.1f} ms | {r['cpu']['workers']:.2f} + "
              f"{r['cpu']['pg backends'] + r['cpu']['pg own']:.2f} | {100 * r['busy']:.0f}% "
              f"| {max(a for a, _ in r['rss']):.0f} MB | {p.get('missing', 0)} / {p.get('repeated', 0) + p.get('twice', 0)}"
              f"{'' if r['settled'] else ' NOT SETTLED'} |")
    by = {r["workers"]: r["max"] for r in results}
    if 1 in by:
        for n in sorted(by):
            if n != 1:
                print(f"{n} workers / 1 worker: {by[n] / by[1]:.2f}x" + ("  (issue 7's target: at least 1.7x)" if n == 2 else ""))
    print(json.dumps([{k: v for k, v in r.items() if k != "profile"} for r in results]))
    print("reproduce: python benchmarks/cluster.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
