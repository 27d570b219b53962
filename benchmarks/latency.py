"""Benchmark: event to connector call latency through a real `journeys serve`, at half the maximum load.

    python benchmarks/latency.py [--duration 20] [--runs 3] [--rate R] [--tick-ms 2]
                                 [--probe-events 20000] [--probe-runs 1] [--users 1000] [--switch-interval S]

Builds a temporary project: one journey
    journey "Ping" { entry when event "Ping" as ping  reenter always  webhook "sink" with {...} }
whose webhook `sink` points at a receiver on loopback; starts `journeys serve` on it in a subprocess
(`python -m engine.cli serve`, SQLite store in the temporary directory, fsync on, hot reload off,
logs to a file at the default level, as `journeys serve` writes them); and a receiver in a second subprocess (a bare asyncio
HTTP/1.1 server, keep-alive) that notes for every call `time.time_ns()` on arrival minus the send
time carried by the event (same machine, same clock). The load generator is this process.

Phase 1, the maximum rate: `--probe-events` events go into the inbox through `/v1/batch` as fast as
the ingest takes them; the rate at which their webhook calls then arrive (between the 10th and the
90th percentile of arrivals, a backlog being worked off) is the sustained end-to-end maximum.
`--probe-runs N` repeats it and gives the median. Where its CPU goes: the CPU time each process
(the daemon: ingest and worker; its delivery process; the receiver) used during the phase, per
event (from /proc), so a maximum can be read as "which process is out of core".
Phase 2, the latency: an open-loop generator at half that rate (or `--rate`) for `--duration`
seconds: every `--tick-ms` a `POST /v1/batch` carries the events scheduled in that tick, each
stamped with the tick's *scheduled* time (not when the request was actually written, so a
generator or a server that falls behind shows up as latency instead of hiding it: no coordinated
omission), on a pool of keep-alive connections (a new one opens when every one is busy).
Reported: p50, p90, p99, max of (webhook arrival - event send), and that every event produced
exactly one call. `--runs N` repeats phase 2 and gives the median of each figure (`--runs 0`:
phase 1 only). Where the time
goes: the outbox's `created` (the engine's clock when it decided the call) splits each latency in
"send -> decided" (ingest, group commit, worker wake-up, processing) and "decided -> call arrives"
(commit, delivery poke, lease, HTTP call). Not a test: the figures go to docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parent.parent
KEY = "bench-key"
AUTH = "Basic " + base64.b64encode(f"{KEY}:".encode()).decode()

JOURNEY = """\
journey "Ping" {
  entry when event "Ping" as ping
  reenter always
  webhook "sink" with { sent: ping.sent, seq: ping.seq }
}
"""


def project(root: Path, hook_url: str, deliveries: str = "process") -> Path:
    """The one-journey project; `deliveries`: [serve] deliveries, "process" (the default) or "thread"."""
    (root / "journeys").mkdir(parents=True)
    (root / "journeys.toml").write_text(f"""\
[project]
name = "latency"

[serve]
deliveries = "{deliveries}"

[store]
url = "sqlite:///data/latency.db"

[ingest]
write_keys_env = ["JOURNEYS_WRITE_KEY"]

[webhooks.sink]
url = "{hook_url}"
timeout = "10s"
""")
    (root / "journeys" / "ping.journey").write_text(JOURNEY)
    return root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------- the receiver

def receive(port: int) -> None:
    """The webhook receiver (its own process): POST -> note (seq, Idempotency-Key (the action id),
    send time, arrival; and the handling time), answer 200 at once. GET /count: how many so far;
    GET /dump: everything, then forget it."""
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    calls: list[tuple[str, str, int]] = []
    handling: list[int] = []
    seq_re, sent_re, id_re = re.compile(rb'"seq":"([^"]*)"'), re.compile(rb'"sent":"(\d+)"'), re.compile(rb'"id":"([^"]*)"')
    key_re = re.compile(rb"(?i)\r\nidempotency-key: *([^\r]*)")
    ok = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"

    def answer(body: bytes) -> bytes:
        return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                + str(len(body)).encode() + b"\r\n\r\n" + body)

    class Conn(asyncio.Protocol):
        def connection_made(self, transport):
            self.t, self.buf = transport, b""
            transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def data_received(self, data):
            now = time.time_ns()
            self.buf += data
            while True:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = self.buf[:end]
                m = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
                length = int(m.group(1)) if m else 0
                if len(self.buf) < end + 4 + length:
                    return
                body, self.buf = self.buf[end + 4:end + 4 + length], self.buf[end + 4 + length:]
                if head.startswith(b"POST"):
                    sent, seq = sent_re.search(body), seq_re.search(body)
                    aid = key_re.search(head) or id_re.search(body)  # the Idempotency-Key (= the action id)
                    calls.append((seq.group(1).decode() if seq else "?", aid.group(1).decode() if aid else "?",
                                  int(sent.group(1)) if sent else 0, now))
                    self.t.write(ok)
                    handling.append(time.time_ns() - now)
                elif head.startswith(b"GET /count"):
                    self.t.write(answer(str(len(calls)).encode()))
                elif head.startswith(b"GET /dump"):
                    self.t.write(answer(json.dumps({"calls": calls, "handling_ns": handling}).encode()))
                    calls.clear()
                    handling.clear()
                else:
                    self.t.write(answer(b"{}"))

    async def main():
        server = await asyncio.get_running_loop().create_server(Conn, "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


def get(url: str, timeout: float = 30) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


def wait_up(url: str, proc: subprocess.Popen, what: str, log: Path | None = None) -> None:
    for _ in range(600):
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited ({proc.returncode})" + (f":\n{log.read_text()[-3000:]}" if log else ""))
        try:
            get(url, timeout=1)
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{what} did not start")


# ---------------------------------------------------------------------------- the load

def event(run: str, i: int, sent_ns: int, users: int) -> dict:
    return {"type": "track", "userId": f"user-{i % users}", "event": "Ping", "messageId": f"{run}-{i}",
            "properties": {"sent": str(sent_ns), "seq": f"{run}-{i}"}}


class Client:
    """Keep-alive HTTP/1.1 connections to the daemon, one request at a time each (as ingest.py's).
    A connection idle for over `IDLE` seconds is dropped (uvicorn closes them after 5 s), and a
    request on a reused connection that the server closed is sent again on a new one (the engine
    drops a repeated messageId anyway)."""

    IDLE = 3.0

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
        self.opened = 0
        self.failed = 0

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bool]:
        now = time.monotonic()
        while self.idle:
            reader, writer, at = self.idle.pop()
            if now - at < self.IDLE:
                return reader, writer, True
            writer.close()
        reader, writer = await asyncio.open_connection(self.host, self.port)
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.opened += 1
        return reader, writer, False

    async def post(self, path: str, body: bytes) -> None:
        request = (f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nAuthorization: {AUTH}\r\n"
                   f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
        for _ in range(3):
            reader, writer, reused = await self._connection()
            try:
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
                await reader.readexactly(length)
            except (OSError, asyncio.IncompleteReadError):
                writer.close()
                if reused:
                    continue
                break
            if not head.startswith(b"HTTP/1.1 200"):
                self.failed += 1
            self.idle.append((reader, writer, time.monotonic()))
            return
        self.failed += 1

    def close(self) -> None:
        for _, writer, _ in self.idle:
            writer.close()


class RoundRobin:
    """`Client`'s interface over several daemons (a cluster's workers): request k goes to port
    k mod n, each port on its own keep-alive connections."""

    def __init__(self, host: str, ports: Sequence[int]):
        self.clients = [Client(host, p) for p in ports]
        self.k = 0

    async def post(self, path: str, body: bytes) -> None:
        self.k += 1
        await self.clients[self.k % len(self.clients)].post(path, body)

    @property
    def opened(self) -> int:
        return sum(c.opened for c in self.clients)

    @property
    def failed(self) -> int:
        return sum(c.failed for c in self.clients)

    def close(self) -> None:
        for c in self.clients:
            c.close()


def client_for(host: str, port: int | Sequence[int]) -> Client | RoundRobin:
    return Client(host, port) if isinstance(port, int) else RoundRobin(host, port)


async def flood(host: str, port: int | Sequence[int], run: str, n: int, users: int, per_request: int = 100,
                connections: int = 8) -> float:
    """Phase 1: n events through /v1/batch as fast as the ingest takes them; returns seconds taken.
    Several ports: the requests go round robin over them."""
    client = client_for(host, port)
    chunks = [range(s, min(s + per_request, n)) for s in range(0, n, per_request)]
    began = time.perf_counter()

    async def worker() -> None:
        while chunks:
            chunk = chunks.pop()
            now = time.time_ns()
            await client.post("/v1/batch", json.dumps({"batch": [event(run, i, now, users) for i in chunk]}).encode())

    await asyncio.gather(*(worker() for _ in range(connections)))
    client.close()
    if client.failed:
        raise SystemExit(f"{client.failed} batches refused")
    return time.perf_counter() - began


async def paced(host: str, port: int | Sequence[int], run: str, rate: float, duration: float, tick: float,
                users: int) -> dict:
    """Phase 2: open loop. Tick k (at start + k*tick) sends the events scheduled before it, stamped
    with the tick's scheduled time. Requests never wait for each other (round robin over several
    ports)."""
    client = client_for(host, port)
    loop = asyncio.get_running_loop()
    start_mono, start_ns = loop.time() + 0.05, time.time_ns() + 50_000_000
    total = int(rate * duration)
    sent = 0
    k = 0
    pending: set[asyncio.Task] = set()
    late: list[float] = []  # how late each request was written against its schedule (generator health)
    requests = 0
    while sent < total:
        k += 1
        due_mono = start_mono + k * tick
        delay = due_mono - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        upto = min(total, int(rate * k * tick))
        if upto <= sent:
            continue
        stamp = start_ns + int(k * tick * 1e9)
        body = json.dumps({"batch": [event(run, i, stamp, users) for i in range(sent, upto)]}).encode()
        sent = upto
        late.append(loop.time() - due_mono)
        requests += 1
        task = asyncio.ensure_future(client.post("/v1/batch", body))
        pending.add(task)
        task.add_done_callback(pending.discard)
    if pending:
        await asyncio.gather(*pending)
    client.close()
    if client.failed:
        raise SystemExit(f"{client.failed} batches refused")
    late.sort()
    return {"events": total, "requests": requests, "connections": client.opened,
            "late_p99_ms": late[int(0.99 * (len(late) - 1))] * 1000 if late else 0.0,
            "late_max_ms": late[-1] * 1000 if late else 0.0}


# ---------------------------------------------------------------------------- measuring

def wait_calls(receiver: str, n: int, timeout: float) -> int:
    end = time.monotonic() + timeout
    got = 0
    while time.monotonic() < end:
        got = int(get(receiver + "/count"))
        if got >= n:
            return got
        time.sleep(0.05)
    return got


def dump(receiver: str) -> dict:
    return json.loads(get(receiver + "/dump", timeout=60))


def pct(sorted_values: list, q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(round(q * (len(sorted_values) - 1))))]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux /proc; 0 elsewhere or once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def delivery_pids(pid: int) -> list[int]:
    """The daemon's delivery process among its children (Linux /proc; not multiprocessing's resource tracker)."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            children = [int(c) for c in task.read_text().split()]
            out += [c for c in children if b"resource_tracker" not in Path(f"/proc/{c}/cmdline").read_bytes()]
        except OSError:
            pass
    return out


def cpu_now(processes: dict[str, int]) -> dict[str, float]:
    return {name: cpu_seconds(pid) for name, pid in processes.items()}


def created_ns(db: Path) -> dict[str, int]:
    """action id -> the outbox's `created` (the engine's clock when it decided the call), in ns."""
    conn = sqlite3.connect(db.as_uri() + "?mode=ro", uri=True, timeout=10)
    try:
        out = {}
        for aid, created in conn.execute("SELECT action_id, created FROM outbox"):
            out[aid] = int(datetime.fromisoformat(created).timestamp() * 1e9)
        return out
    finally:
        conn.close()


def drain(calls: list) -> tuple[float, float]:
    """Phase 1's figures from its calls: (calls/s between the 10th and the 90th percentile of
    arrivals, while a backlog is worked off; calls/s from the first send to the last arrival)."""
    arrivals = sorted(at for _, _, _, at in calls)
    first_sent = min(sent for _, _, sent, _ in calls)
    a, b = pct(arrivals, 0.1), pct(arrivals, 0.9)
    return 0.8 * len(arrivals) / ((b - a) / 1e9), len(arrivals) / ((arrivals[-1] - first_sent) / 1e9)


def check(calls: list, run: str, n: int) -> tuple[int, int]:
    """(missing, duplicated) among the events `run`-0 .. `run`-(n-1)."""
    seen: dict[str, int] = {}
    for seq, _, _, _ in calls:
        seen[seq] = seen.get(seq, 0) + 1
    expected = {f"{run}-{i}" for i in range(n)}
    missing = len(expected - seen.keys())
    duplicated = sum(c - 1 for s, c in seen.items() if c > 1) + sum(c for s, c in seen.items() if s not in expected)
    return missing, duplicated


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=20, help="seconds of paced load per run (phase 2)")
    ap.add_argument("--runs", type=int, default=1, help="phase 2 runs; the median of each figure is reported")
    ap.add_argument("--rate", type=float, help="events/s for phase 2 (default: half the maximum of phase 1)")
    ap.add_argument("--tick-ms", type=float, default=2.0, help="one /v1/batch request every TICK ms in phase 2")
    ap.add_argument("--probe-events", type=int, default=20000, help="events of phase 1")
    ap.add_argument("--probe-runs", type=int, default=1, help="phase 1 runs; the median maximum sets phase 2's rate")
    ap.add_argument("--users", type=int, default=1000, help="distinct userIds the events cycle over")
    ap.add_argument("--switch-interval", type=float, help="an experiment: the daemon runs with "
                    "sys.setswitchinterval(S) (Python's default is 0.005; journeys serve does not change it)")
    ap.add_argument("--receive", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.receive:
        receive(args.receive)
        return

    procs: list[subprocess.Popen] = []

    def stop_all(*_: object) -> None:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # SIGTERM as Ctrl-C: the finally below stops the daemon and the receiver

    signal.signal(signal.SIGTERM, interrupted)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            run_all(args, Path(tmp), procs)
        finally:
            stop_all()


def run_all(args: argparse.Namespace, tmp: Path, procs: list[subprocess.Popen]) -> None:
    rport, dport = free_port(), free_port()
    receiver = f"http://127.0.0.1:{rport}"
    procs.append(subprocess.Popen([sys.executable, __file__, "--receive", str(rport)]))
    wait_up(receiver + "/count", procs[-1], "the receiver")
    root = project(tmp / "p", receiver + "/hook")
    log = tmp / "daemon.log"
    env = {**os.environ, "JOURNEYS_WRITE_KEY": KEY, "JOURNEYS_RELOAD_POLL": "0", "PYTHONPATH": str(ROOT)}
    with open(log, "wb") as out:
        cmd = ["serve", str(root), "--port", str(dport), "--log-format", "text"]
        if args.switch_interval is None:
            cmd = [sys.executable, "-m", "engine.cli", *cmd]
        else:
            cmd = [sys.executable, "-c", f"import runpy, sys; sys.setswitchinterval({args.switch_interval}); "
                   f"sys.argv[0] = 'journeys'; runpy.run_module('engine.cli', run_name='__main__')", *cmd]
        procs.append(subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=out))
    daemon = f"http://127.0.0.1:{dport}"
    wait_up(daemon + "/healthz", procs[-1], "journeys serve", log)
    db = root / "data" / "latency.db"
    print(f"journeys serve on {daemon} (SQLite {db.name}, fsync on), webhook receiver on {receiver}, "
          f"{os.cpu_count()} cores")

    # the receiver alone, so it is known not to be the limit
    if shutil.which("wrk"):
        script = tmp / "hook.lua"
        script.write_text('wrk.method = "POST"\nwrk.body = \'{"id":"x","data":{"sent":"0","seq":"w"}}\'\n'
                          'wrk.headers["Content-Type"] = "application/json"\n')
        out = subprocess.run(["wrk", "-t1", "-c4", "-d2s", "-s", str(script), receiver + "/hook"],
                             capture_output=True, text=True, check=True).stdout
        per_s = float(re.search(r"Requests/sec: *([\d.]+)", out).group(1))
        print(f"receiver alone (wrk, 4 connections): {per_s:,.0f} calls/s")
        dump(receiver)

    # warm up (imports, first connections, SQLite pages)
    asyncio.run(flood("127.0.0.1", dport, "warm", 500, args.users))
    if wait_calls(receiver, 500, 60) < 500:
        raise SystemExit("warm-up: the webhook calls did not all arrive")
    dump(receiver)

    processes = {"daemon (ingest, worker)": procs[-1].pid}
    processes.update({"deliveries (child process)": pid for pid in delivery_pids(procs[-1].pid)})
    processes.update({"receiver": procs[0].pid, "load generator (this process)": os.getpid()})
    rate = args.rate
    if rate is None:
        rates, cpus = [], []
        for p in range(args.probe_runs):
            n = args.probe_events
            cpu_before = cpu_now(processes)
            took = asyncio.run(flood("127.0.0.1", dport, f"probe{p}", n, args.users))
            if wait_calls(receiver, n, 600) < n:
                raise SystemExit("phase 1: the webhook calls did not all arrive")
            cpus.append({k: (v - cpu_before[k]) / n * 1e6 for k, v in cpu_now(processes).items()})
            calls = dump(receiver)["calls"]
            missing, duplicated = check(calls, f"probe{p}", n)
            drain_rate, overall = drain(calls)
            rates.append(drain_rate)
            print(f"phase 1: {n:,} events into the inbox in {took:.2f} s ({n / took:,.0f}/s); their webhook calls "
                  f"arrived at {drain_rate:,.0f}/s between the 10th and 90th percentile of arrivals "
                  f"({overall:,.0f}/s from the first send to the last call)"
                  + (f"  MISSING {missing} DUPLICATED {duplicated}" if missing or duplicated else ""))
            print("         CPU per event: " + ", ".join(f"{k} {v:,.0f} µs" for k, v in cpus[-1].items()))
        if args.probe_runs > 1:
            print(f"phase 1, median of {len(rates)}: {statistics.median(rates):,.0f} events/s; CPU per event: "
                  + ", ".join(f"{k} {statistics.median(c[k] for c in cpus):,.0f} µs" for k in cpus[0]))
        rate = statistics.median(rates) / 2
    if args.runs < 1:
        return
    print(f"phase 2: {rate:,.0f} events/s open loop, one /v1/batch every {args.tick_ms:g} ms "
          f"({rate * args.tick_ms / 1000:.2f} events per request on average), {args.duration:g} s, {args.runs} run(s)")

    results = []
    for r in range(args.runs):
        run = f"r{r}"
        cpu_before = cpu_now(processes)
        gen = asyncio.run(paced("127.0.0.1", dport, run, rate, args.duration, args.tick_ms / 1000, args.users))
        n = gen["events"]
        got = wait_calls(receiver, n, 120)
        time.sleep(0.5)  # a duplicate would come now
        cpu = {k: (v - cpu_before[k]) / n * 1e6 for k, v in cpu_now(processes).items()}
        data = dump(receiver)
        calls = data["calls"]
        missing, duplicated = check(calls, run, n)
        lat = sorted((at - sent) / 1e6 for _, _, sent, at in calls)
        decided = created_ns(db)
        before, after = [], []  # send -> decided by the engine, decided -> call arrives (ms)
        for _, aid, sent, at in calls:
            c = decided.get(aid)
            if c is not None:
                before.append((c - sent) / 1e6)
                after.append((at - c) / 1e6)
        before, after = sorted(before) or [float("nan")], sorted(after) or [float("nan")]
        handling = sorted(data["handling_ns"])
        res = {"events": n, "calls": got, "missing": missing, "duplicated": duplicated,
               "p50": pct(lat, 0.5), "p90": pct(lat, 0.9), "p99": pct(lat, 0.99), "max": lat[-1],
               "before_p50": pct(before, 0.5), "before_p99": pct(before, 0.99),
               "after_p50": pct(after, 0.5), "after_p99": pct(after, 0.99),
               **gen, "recv_p99_us": pct(handling, 0.99) / 1000 if handling else 0.0}
        results.append(res)
        print(f"  run {r + 1}: {n:,} events, {len(calls):,} calls ({missing} missing, {duplicated} duplicated); "
              f"latency p50 {res['p50']:.1f} ms, p90 {res['p90']:.1f} ms, p99 {res['p99']:.1f} ms, max {res['max']:.1f} ms; "
              f"{gen['requests']:,} requests on {gen['connections']} connections, written late by at most "
              f"{gen['late_max_ms']:.1f} ms (p99 {gen['late_p99_ms']:.1f}); receiver handling p99 {res['recv_p99_us']:.0f} µs")
        print(f"         send -> engine decides p50 {res['before_p50']:.1f} ms, p99 {res['before_p99']:.1f} ms; "
              f"decides -> call arrives p50 {res['after_p50']:.1f} ms, p99 {res['after_p99']:.1f} ms")
        print("         CPU per event: " + ", ".join(f"{k} {v:,.0f} µs" for k, v in cpu.items()))
    med = {k: statistics.median(r[k] for r in results) for k in results[0] if isinstance(results[0][k], float)}
    print(f"\nmedian of {len(results)} run(s) at {rate:,.0f} events/s: p50 {med['p50']:.1f} ms (target <= 5), "
          f"p90 {med['p90']:.1f} ms, p99 {med['p99']:.1f} ms (target <= 25), max {med['max']:.1f} ms; "
          f"lost {sum(r['missing'] for r in results)}, duplicated {sum(r['duplicated'] for r in results)}")
    print(f"  send -> engine decides: p50 {med['before_p50']:.1f} ms, p99 {med['before_p99']:.1f} ms; "
          f"decides -> call arrives: p50 {med['after_p50']:.1f} ms, p99 {med['after_p99']:.1f} ms")
    lines = log.read_text(errors="replace").splitlines()
    httpx_lines = sum("httpx" in line for line in lines)
    print(f"daemon log: {len(lines):,} lines ({httpx_lines:,} of them httpx's INFO line per webhook call)")
    print("reproduce: python benchmarks/latency.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
