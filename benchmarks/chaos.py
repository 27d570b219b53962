"""Benchmark: chaos. Real `journeys serve` daemons under kill -9, a provider outage, and fuzzed input (issue 18).

    python benchmarks/chaos.py kill   [--kills 20] [--store sqlite|postgres] [--workers N] [--rate 150] ...
    python benchmarks/chaos.py outage [--minutes 2] [--fault 503|429|hang] [--store ...] [--workers N] ...
    python benchmarks/chaos.py fuzz   [--examples 10000] [--mutations 1000] [--only http|journeys]

Every mode ends with one line of counts and a JSON line (`RESULT {...}`):

    accepted / processed / delivered / lost / duplicated / stuck / tracebacks

- accepted: events the daemons answered 200 for (the load generator keeps each messageId of a
  batch answered 200); processed: those of them in the store's `messages` (taken by the engine);
  delivered: distinct Idempotency-Keys the webhook receiver answered 2xx for.
- lost: accepted events whose effect never reached the receiver (a "Ping" sends one webhook at
  once, a "Signed Up" one after a wait: both are expected for every accepted event).
- duplicated: Idempotency-Keys (the action id, which the body's `id` repeats) the receiver took
  more than once. The outbox delivers exactly once up to the provider's door and at least once
  through it: a daemon killed between the provider's 2xx and the commit of the outcome calls again
  with the same key after the restart, which is what the key is for. So the repeats are split:
  across a kill (expected, at most what was in flight) or not; and "processed twice" counts events
  that produced two different keys for one step (the engine repeating an event: a real bug).
- stuck: after the drain, inbox rows not processed plus users whose timer was due over 60 s ago
  and has not fired; open outbox entries (neither delivered nor dead nor failed) are shown apart.
- tracebacks: "Traceback" in the daemons' logs (appended across restarts).

Modes:

- `kill`: a project with two journeys (`Ping` sends a webhook at once, `Signed Up` waits `--wait`
  then sends one: timers), a webhook receiver on loopback in its own process (verifies every
  call's X-Journeys-Signature with the secret and notes its Idempotency-Key), a load generator
  posting Segment batches (identify + "Signed Up" for new users, "Ping" for known ones, each call
  with a messageId) that retries a batch on connection errors, 429 and 5xx (as the official
  libraries do; with several workers the retry goes to the next worker, as a load balancer
  would), and `--kills` times: a seeded random pause under load, kill -9 of a random daemon (its
  delivery process dies with it: checked, orphans counted and killed), a random pause down,
  restart. On SQLite one daemon; on PostgreSQL (`--store postgres --workers N`) N `journeys serve`
  processes on one fresh schema (`chaos_<pid>`, dropped at the end), started as
  benchmarks/cluster.py starts them, with `JOURNEYS_LEASE_TTL=3` and `JOURNEYS_DELIVERY_LEASE=15`
  (`--lease-ttl`, `--delivery-lease`) so a dead worker's partitions and attempts move in seconds.
  After the last restart the load stops and the run drains: every accepted event processed, the
  inbox empty, no timer waiting, no open outbox entry (bounded by `--drain-timeout`); then it counts.
- `outage`: the same project, daemons and load (`--rate`, default 10 events/s); the receiver
  answers normally for `--warm` s, then fails for `--minutes` (503, or 429 with `Retry-After:
  --retry-after`, or `hang`: holds the request past the webhook's timeout and closes it unanswered),
  then recovers; the load goes on `--after` s past the recovery. Counted after the drain: dead
  letters (outbox entries `dead` or `failed`, and any other state that is not delivered and not
  open), deliveries after the recovery, how long after it the last one came, entries still open
  (a retry scheduled past the drain) and the counts above. A 30-minute outage takes 30 minutes
  of wall time plus the drain.
- `fuzz`: (1) the HTTP fuzz: `--examples` Hypothesis-generated Segment requests (every endpoint;
  nested and deeply nested properties, huge and non-finite numbers, odd timestamps, zones and
  strings, lone surrogates, gzip bodies) to a `journeys serve` of the example shop (its
  journeys.toml pointed at loopback: an SMTP sink and the webhook receiver; no provider secrets,
  so no other connector calls out), counting answers by status, 5xx, dropped connections, then
  the inbox drained, messages set aside (`inbox_failed`) and tracebacks; (2) the journey-file fuzz:
  `--mutations` seeded mutations of the shop's journey files, each checked by the `journeys check`
  command (its Typer app, in this process, 10 s alarm each), counting crashes (an exception or an
  exit code other than 0 or 1), hangs, tracebacks and J000 internal errors, by kind; the first
  case of each kind runs again as a real `journeys check` process, and every case is kept.

Bounded: every loop has a count and a time limit; every daemon, the receiver and the SMTP sink
are stopped at the end, also on errors, Ctrl-C or SIGTERM. All traffic is to 127.0.0.1. Exit 1
when anything was lost, processed twice or stuck, or (fuzz) a 5xx, a crash or a J000 was seen.
Not a test (tests/test_chaos.py runs the smallest `kill` to keep it working); the figures go to
docs/reliability.md.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import hmac
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections import Counter, defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))
import cluster as C  # noqa: E402 - PostgreSQL admin connections, a process's children
import latency as L  # noqa: E402 - ports, start-up waits, the write key

ROOT = L.ROOT
SHOP = ROOT / "examples" / "shop"
PG = "postgresql://postgres@127.0.0.1:5432/test"
SECRET = "chaos-webhook-secret"
OPEN = ("pending", "sending", "queued")  # outbox states still to be attempted
DONE = ("delivered",)
SECRETS_ENV = ("SMTP_USER", "SMTP_PASSWORD", "FCM_CREDENTIALS", "META_ACCESS_TOKEN", "GOOGLE_ADS_DEVELOPER_TOKEN",
               "GOOGLE_ADS_CLIENT_ID", "GOOGLE_ADS_CLIENT_SECRET", "GOOGLE_ADS_REFRESH_TOKEN", "CRM_WEBHOOK_SECRET",
               "RESEND_API_KEY")

JOURNEYS = """\
journey "Now" {
  entry when event "Ping" as p
  reenter always
  webhook "sink" with { seq: p.seq, kind: "now" }
}

journey "Later" {
  entry when event "Signed Up" as s
  wait WAIT
  webhook "sink" with { seq: s.seq, kind: "later", plan: user.plan }
}
"""


def project(root: Path, hook_url: str, timeout: str, wait: str) -> Path:
    (root / "journeys").mkdir(parents=True)
    (root / "journeys.toml").write_text(f"""\
[project]
name = "chaos"

[store]
url = "sqlite:///data/chaos.db"

[ingest]
write_keys_env = ["JOURNEYS_WRITE_KEY"]

[webhooks.sink]
url = "{hook_url}"
secret_env = "CHAOS_WEBHOOK_SECRET"
timeout = "{timeout}"
""")
    (root / "journeys" / "chaos.journey").write_text(JOURNEYS.replace("WAIT", wait))
    return root


# ---------------------------------------------------------------------------- the webhook receiver

def receive(port: int) -> None:
    """The provider (its own process): POST -> note (Idempotency-Key, data.seq, data.kind,
    data.plan, arrival ns, signature valid) and answer 200, or fail as /fault says: 503, 429 with
    Retry-After, or hang (no answer; the connection closed after `hang` s). GET /fault?mode=ok|503|429|hang
    &retry_after=S&hang=S; GET /count: calls taken; GET /dump: everything (kept)."""
    import asyncio

    records: list[list] = []
    state = {"mode": "ok", "retry_after": "30", "hang": 10.0}
    refused: Counter = Counter()
    ok = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"

    def answer(status: str, body: bytes, extra: str = "") -> bytes:
        return (f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{extra}Content-Length: {len(body)}\r\n\r\n"
                .encode() + body)

    def signed(head: dict[str, str], body: bytes) -> bool:
        stamp = head.get("x-journeys-timestamp", "")
        mac = hmac.new(SECRET.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(head.get("x-journeys-signature", ""), "sha256=" + mac)

    class Conn(asyncio.Protocol):
        def connection_made(self, transport):
            self.t, self.buf, self.hung = transport, b"", False

        def data_received(self, data):
            self.buf += data
            while not self.hung:
                end = self.buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                lines = self.buf[:end].decode("latin-1").split("\r\n")
                head = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
                length = int(head.get("content-length", "0"))
                if len(self.buf) < end + 4 + length:
                    return
                body, self.buf = self.buf[end + 4:end + 4 + length], self.buf[end + 4 + length:]
                method, target = lines[0].split(" ")[:2]
                if method == "POST":
                    self.post(head, body)
                elif target.startswith("/fault"):
                    q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(target).query))
                    state.update(mode=q.get("mode", "ok"), retry_after=q.get("retry_after", "30"),
                                 hang=float(q.get("hang", "10")))
                    self.t.write(answer("200 OK", json.dumps(state).encode()))
                elif target.startswith("/count"):
                    self.t.write(answer("200 OK", str(len(records)).encode()))
                elif target.startswith("/dump"):
                    self.t.write(answer("200 OK", json.dumps({"records": records, "refused": refused}).encode()))
                else:
                    self.t.write(answer("404 Not Found", b"{}"))

        def post(self, head: dict[str, str], body: bytes) -> None:
            mode = state["mode"]
            if mode == "503":
                refused["503"] += 1
                self.t.write(answer("503 Service Unavailable", b'{"error":"down"}'))
            elif mode == "429":
                refused["429"] += 1
                self.t.write(answer("429 Too Many Requests", b'{"error":"slow down"}',
                                    f"Retry-After: {state['retry_after']}\r\n"))
            elif mode == "hang":
                refused["hang"] += 1
                self.hung = True
                asyncio.get_running_loop().call_later(state["hang"], self.t.close)
            else:
                try:
                    doc = json.loads(body)
                    data = doc.get("data") or {}
                except ValueError:
                    doc, data = {}, {}
                key = head.get("idempotency-key") or doc.get("id") or "?"
                if doc.get("id") != key:
                    refused["key differs from id"] += 1
                records.append([key, data.get("seq"), data.get("kind"), data.get("plan"), time.time_ns(),
                                signed(head, body)])
                self.t.write(ok)

    async def main():
        server = await asyncio.get_running_loop().create_server(Conn, "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    asyncio.run(main())


class Receiver:
    def __init__(self, procs: list[subprocess.Popen]):
        self.port = L.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen([sys.executable, __file__, "--receive", str(self.port)], cwd=ROOT)
        procs.append(self.proc)
        L.wait_up(self.url + "/count", self.proc, "the webhook receiver")

    def fault(self, mode: str, retry_after: int = 30, hang: float = 10.0) -> None:
        L.get(f"{self.url}/fault?mode={mode}&retry_after={retry_after}&hang={hang}")

    def count(self) -> int:
        return int(L.get(self.url + "/count"))

    def dump(self) -> dict:
        return json.loads(L.get(self.url + "/dump", timeout=120))


# ---------------------------------------------------------------------------- the daemons

class Daemons:
    """The `journeys serve` processes of a run: one on SQLite, or N on one PostgreSQL schema (the
    command of benchmarks/cluster.py's workers), each on a port of its own kept across restarts,
    its log appended to across restarts."""

    def __init__(self, root: Path, store: str, n: int, logs: Path, procs: list[subprocess.Popen],
                 env: dict[str, str]):
        self.root, self.store, self.n, self.all = root, store, n, procs
        self.ports = [L.free_port() for _ in range(n)]
        self.urls = [f"http://127.0.0.1:{p}" for p in self.ports]
        self.logs = [logs / f"daemon-{i}.log" for i in range(n)]
        for log in self.logs:  # a kept log of an earlier run
            log.unlink(missing_ok=True)
        self.procs: list[subprocess.Popen | None] = [None] * n
        base = {k: v for k, v in os.environ.items() if k not in SECRETS_ENV}
        self.env = {**base, "JOURNEYS_WRITE_KEY": L.KEY, "JOURNEYS_RELOAD_POLL": "0", "PYTHONPATH": str(ROOT), **env}
        self.orphans = 0
        self.starts = 0

    def start(self, i: int) -> None:
        with open(self.logs[i], "ab") as out:
            p = subprocess.Popen([sys.executable, "-m", "engine.cli", "serve", str(self.root), "--store", self.store,
                                  "--port", str(self.ports[i]), "--log-format", "text"],
                                 cwd=ROOT, env={**self.env, "PGAPPNAME": f"jchaos-{i}"}, stdout=out, stderr=out)
        self.all.append(p)
        self.procs[i] = p
        self.starts += 1
        L.wait_up(self.urls[i] + "/healthz", p, f"journeys serve {i}", self.logs[i])

    def start_all(self) -> None:
        for i in range(self.n):  # one at a time: the first migrates a PostgreSQL schema
            self.start(i)

    def kill(self, i: int) -> None:
        """kill -9 of daemon i; its children (the delivery process) must die with it."""
        p = self.procs[i]
        children = C.with_children([p.pid])[1:]
        p.kill()
        p.wait()
        end = time.monotonic() + 5
        alive = children
        while alive and time.monotonic() < end:
            time.sleep(0.05)
            alive = [c for c in alive if _alive(c)]
        for c in alive:  # an orphan still delivering: counted, then stopped (it is one of ours)
            self.orphans += 1
            try:
                os.kill(c, signal.SIGKILL)
            except OSError:
                pass

    def stop(self) -> None:
        stop([p for p in self.procs if p is not None])

    def tracebacks(self) -> tuple[int, Counter]:
        """("Traceback" lines in the logs, the exception lines that end them, counted)."""
        n, last = 0, Counter()
        for log in self.logs:
            if not log.exists():
                continue
            lines = log.read_text(errors="replace").splitlines()
            for k, line in enumerate(lines):
                if "Traceback" in line:
                    n += 1
                    j = k + 1
                    while j < len(lines) and (lines[j].startswith((" ", "\t")) or not lines[j].strip()):
                        j += 1
                    last[lines[j][:200] if j < len(lines) else "?"] += 1
        return n, last

    def grep(self, pattern: str) -> int:
        rx = re.compile(pattern)
        return sum(len(rx.findall(log.read_text(errors="replace"))) for log in self.logs if log.exists())


def stop(procs: list[subprocess.Popen]) -> None:
    """SIGTERM to each process still running, then up to 30 s each before a SIGKILL: the stop of
    benchmarks/cluster.py's workers (`Cluster.stop` reads nothing but `procs`)."""
    C.Cluster.stop(SimpleNamespace(procs=procs))


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


# ---------------------------------------------------------------------------- the store, read from outside

class StoreView:
    """What the drain waits for and the counts read, from the store itself: SQLite read-only
    (WAL: the daemon keeps writing), or the run's PostgreSQL schema."""

    def __init__(self, url: str):
        self.url = url
        self.pg = None
        if url.startswith("postgresql"):
            self.pg = C.admin(url.split("?")[0])
            self.pg.execute(f'SET search_path TO "{url.split("schema=")[1]}"')

    def rows(self, sql: str, args: tuple = ()) -> list[tuple]:
        if self.pg is not None:
            return self.pg.execute(sql.replace("?", "%s"), args).fetchall()
        import sqlite3

        path = Path(self.url.removeprefix("sqlite:///"))
        if not path.exists():
            return []
        conn = sqlite3.connect(path.as_uri() + "?mode=ro", uri=True, timeout=10)
        try:
            return conn.execute(sql, args).fetchall()
        except sqlite3.OperationalError as e:
            if "no such table" in str(e):
                return []
            raise
        finally:
            conn.close()

    def seen(self) -> set[str]:
        return {m for (m,) in self.rows("SELECT message_id FROM messages")}

    def inbox_left(self) -> int:
        if self.pg is not None:
            return self.rows("SELECT count(*) FROM inbox")[0][0]
        last = self.rows("SELECT seq FROM sqlite_sequence WHERE name = 'inbox'")
        done = self.rows("SELECT processed FROM inbox_cursor")
        return (last[0][0] if last else 0) - (done[0][0] if done else 0)

    def inbox_failed(self) -> int:
        r = self.rows("SELECT count(*) FROM inbox_failed")
        return r[0][0] if r else 0

    def outbox(self) -> Counter:
        return Counter(dict(self.rows("SELECT state, count(*) FROM outbox GROUP BY state")))

    def open_entries(self) -> tuple[int, datetime | None]:
        marks = ",".join("?" * len(OPEN))
        rows = self.rows(f"SELECT count(*), min(next_at) FROM outbox WHERE state IN ({marks})", OPEN)
        (n, first), = rows or [(0, None)]
        return n, _when(first)

    def timers(self) -> list[datetime]:
        """The waits not fired yet: each waiting user's due time."""
        return [_when(w) for (w,) in self.rows("SELECT wake FROM profiles WHERE wake IS NOT NULL")]

    def entries_of(self, key: str) -> list[tuple]:
        return self.rows("SELECT state, attempts, last_error FROM outbox WHERE action_id = ?", (key,))

    def entries_of_user(self, user: str) -> list[tuple]:
        return self.rows("SELECT action_id, state, attempts, last_error FROM outbox WHERE user_id = ?", (user,))

    def close(self) -> None:
        if self.pg is not None:
            self.pg.close()


def _when(value) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    t = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


# ---------------------------------------------------------------------------- the load

class Load:
    """`senders` threads posting Segment batches to the daemons at `rate` events/s in all. A batch:
    `new` new users (identify with plan "pro", then "Signed Up") and `pings` "Ping" events of users
    this thread made before; every call has a messageId. A batch that fails (connection error, 429,
    5xx) is sent again, the same body, after a backoff (50 ms doubling to 2 s, jittered), to the
    next daemon, until answered or for `give_up` s; a 4xx other than 429 is not retried (counted)."""

    def __init__(self, urls: list[str], rate: float, senders: int, seed: int, give_up: float = 120.0,
                 new: int = 4, pings: int = 12):
        self.urls, self.senders, self.seed, self.give_up = urls, senders, seed, give_up
        self.new, self.pings = new, pings
        self.interval = senders * (2 * new + pings) / rate  # s between one sender's batches (identifies count)
        self.now: set[str] = set()  # accepted "Ping" messageIds: one call each at once
        self.later: set[str] = set()  # accepted "Signed Up" messageIds: one call each after the wait
        self.user: dict[str, str] = {}  # messageId -> userId
        self.stats: Counter = Counter()
        self.refusals: list[str] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.threads = [threading.Thread(target=self._sender, args=(n,), daemon=True) for n in range(senders)]

    def start(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(self.give_up + 30)

    @property
    def accepted(self) -> int:
        return len(self.now) + len(self.later)

    def _sender(self, n: int) -> None:
        import httpx

        rng = random.Random(self.seed * 1000 + n)
        users: list[str] = []
        k = 0
        next_at = time.monotonic()
        with httpx.Client(timeout=10, auth=(L.KEY, "")) as client:
            while not self.stopping.is_set():
                k += 1
                calls, now, later = [], [], []
                for j in range(self.new):
                    uid = f"s{n}-u{k}-{j}"
                    mid = f"s{n}-{k}-n{j}"
                    calls += [{"type": "identify", "userId": uid, "traits": {"plan": "pro"}, "messageId": mid + "-id"},
                              {"type": "track", "userId": uid, "event": "Signed Up", "messageId": mid,
                               "properties": {"seq": mid}}]
                    later.append((mid, uid))
                    users.append(uid)
                for j in range(self.pings):
                    uid = rng.choice(users)
                    mid = f"s{n}-{k}-p{j}"
                    calls.append({"type": "track", "userId": uid, "event": "Ping", "messageId": mid,
                                  "properties": {"seq": mid}})
                    now.append((mid, uid))
                if self._post(client, json.dumps({"batch": calls}).encode(), n + k, rng):
                    with self.lock:
                        self.now.update(m for m, _ in now)
                        self.later.update(m for m, _ in later)
                        self.user.update(now + later)
                next_at = max(next_at + self.interval, time.monotonic() - 1.0)
                self.stopping.wait(max(0.0, next_at - time.monotonic()))

    def _post(self, client, body: bytes, w: int, rng: random.Random) -> bool:
        import httpx

        end = time.monotonic() + self.give_up
        for attempt in range(10_000):
            url = self.urls[(w + attempt) % len(self.urls)]
            try:
                r = client.post(url + "/v1/batch", content=body, headers={"Content-Type": "application/json"})
            except httpx.TransportError as e:
                self._count(f"retried: {type(e).__name__}")
            else:
                if r.status_code == 200:
                    self._count("batches accepted")
                    return True
                if r.status_code != 429 and r.status_code < 500:
                    self._count(f"refused: HTTP {r.status_code}")
                    with self.lock:
                        self.refusals.append(r.text[:300])
                    return False
                self._count(f"retried: HTTP {r.status_code}")
            if time.monotonic() > end:
                break
            time.sleep(min(2.0, 0.05 * 2 ** attempt) * rng.uniform(0.5, 1.0))
        self._count("given up")
        return False

    def _count(self, what: str) -> None:
        with self.lock:
            self.stats[what] += 1


# ---------------------------------------------------------------------------- drain and count

def drain(view: StoreView, load: Load, timeout: float, every: float = 30.0) -> tuple[bool, float]:
    """Wait until every accepted event is processed, the inbox is empty, no timer is waiting and
    no outbox entry is open; (drained, seconds taken)."""
    began = time.monotonic()
    end, said = began + timeout, began
    wanted = load.now | load.later
    while True:
        left = len(wanted - view.seen())
        inbox, timers, (open_, first) = view.inbox_left(), len(view.timers()), view.open_entries()
        if left == 0 and inbox == 0 and timers == 0 and open_ == 0:
            return True, time.monotonic() - began
        if time.monotonic() > end:
            print(f"    not drained after {timeout:.0f} s: {left} accepted events not processed, inbox {inbox}, "
                  f"{timers} timers waiting, {open_} outbox entries open (next attempt {first})")
            return False, time.monotonic() - began
        if time.monotonic() - said > every:
            said = time.monotonic()
            print(f"    draining, {said - began:.0f} s: {left} events to process, inbox {inbox}, {timers} timers, "
                  f"{open_} outbox entries open (next attempt {first}), outbox {dict(view.outbox())}", flush=True)
        time.sleep(0.5)


def tally(load: Load, dump: dict, view: StoreView, daemons: Daemons, kills: list[tuple[int, int]]) -> dict:
    """The counts of a run (see the module docstring) and what explains them."""
    records = dump["records"]  # [key, seq, kind, plan, arrival ns, signature valid]
    arrivals: dict[str, list[int]] = defaultdict(list)
    keys_of: dict[tuple, set] = defaultdict(set)
    for key, seq, kind, _, at, _ in records:
        arrivals[key].append(at)
        keys_of[(kind, seq)].add(key)
    expected = {("now", m) for m in load.now} | {("later", m) for m in load.later}
    lost = sorted(expected - keys_of.keys())
    repeats = {k: sorted(a) for k, a in arrivals.items() if len(a) > 1}
    # a repeat "across a kill": its calls straddle a daemon's down time (from the kill to the restart
    # answering), or one came in it (a call the dead daemon had sent before the kill, and the retry)
    across = {k for k, a in repeats.items() if any(a[0] <= up and a[-1] >= down for down, up in kills)}
    seen = view.seen()
    now = datetime.now(timezone.utc)
    overdue = sum(1 for w in view.timers() if w < now - timedelta(seconds=60))
    inbox = view.inbox_left()
    tb, tb_lines = daemons.tracebacks()
    open_, _ = view.open_entries()
    outbox = view.outbox()
    out = {
        "accepted": load.accepted, "processed": len((load.now | load.later) & seen),
        "delivered": len(arrivals), "lost": len(lost),
        "duplicated": sum(len(a) - 1 for a in repeats.values()), "duplicated_across_kill": len(across),
        "processed_twice": sum(1 for ks in keys_of.values() if len(ks) > 1),
        "stuck": inbox + overdue, "tracebacks": tb,
        "stuck_inbox": inbox, "stuck_timers": overdue, "outbox_open": open_, "outbox": dict(outbox),
        "dead_letters": sum(c for s, c in outbox.items() if s not in OPEN and s not in DONE),
        "inbox_failed": view.inbox_failed(), "calls": len(records),
        "bad_signatures": sum(1 for r in records if not r[5]), "out_of_order": sum(
            1 for r in records if r[2] == "later" and r[3] != "pro"),
        "unexpected": len(keys_of.keys() - expected), "orphans": daemons.orphans,
        "load": dict(load.stats), "receiver": dump["refused"],
    }
    explain = []
    for kind, seq in lost[:5]:
        user = load.user.get(seq, "?")
        explain.append(f"    lost {kind} {seq} (user {user}): taken by the engine: {seq in seen}; "
                       f"the user's outbox entries: {view.entries_of_user(user)}")
    for key in sorted(set(repeats) - across)[:5] + sorted(across)[:3]:
        a = repeats[key]
        gaps = ", ".join(f"+{(x - a[0]) / 1e6:.0f} ms" for x in a[1:])
        explain.append(f"    repeated {key}: calls {gaps} after the first; "
                       f"{'a kill in between' if key in across else 'NO kill in between'}; "
                       f"outbox {view.entries_of(key)}")
    for line, c in tb_lines.most_common(8):
        explain.append(f"    traceback x{c}: {line}")
    for text in load.refusals[:3]:
        explain.append(f"    refused batch: {text}")
    out["explain"] = explain
    return out


def report(mode: str, what: str, r: dict) -> None:
    print(f"\n{mode} ({what}): accepted {r['accepted']:,} / processed {r['processed']:,} / delivered "
          f"{r['delivered']:,} / lost {r['lost']} / duplicated {r['duplicated']} / stuck {r['stuck']} / "
          f"tracebacks {r['tracebacks']}")
    rest = {k: v for k, v in r.items() if k not in ("accepted", "processed", "delivered", "lost", "duplicated",
                                                   "stuck", "tracebacks", "explain")}
    print("  " + "; ".join(f"{k} {v}" for k, v in rest.items()))
    for line in r.get("explain", []):
        print(line)
    print("RESULT " + json.dumps({"mode": mode, **{k: v for k, v in r.items() if k != "explain"}}))


def failed(r: dict) -> bool:
    return bool(r.get("lost") or r.get("stuck") or r.get("processed_twice") or r.get("server_errors")
                or r.get("crashes") or r.get("j000") or r.get("hangs"))


# ---------------------------------------------------------------------------- kill and outage: the setup

class Run:
    """The receiver, the project, the store and the daemons of a kill or outage run."""

    def __init__(self, args: argparse.Namespace, tmp: Path, procs: list[subprocess.Popen]):
        self.receiver = Receiver(procs)
        self.root = project(tmp / "project", self.receiver.url + "/hook", args.timeout, args.wait)
        self.schema = None
        if args.store == "postgres":
            self.schema = f"chaos_{os.getpid()}"
            store = f"{args.pg}?schema={self.schema}"
        else:
            args.workers = 1
            store = f"sqlite:///{tmp / 'chaos.db'}"
        logs = args.keep or tmp
        env = {"CHAOS_WEBHOOK_SECRET": SECRET, "JOURNEYS_LEASE_TTL": str(args.lease_ttl),
               "JOURNEYS_DELIVERY_LEASE": str(args.delivery_lease)}
        self.daemons = Daemons(self.root, store, args.workers, logs, procs, env)
        self.daemons.start_all()
        self.view = StoreView(store)
        self.load = Load(self.daemons.urls, args.rate, args.senders, args.seed)

    def close(self, args: argparse.Namespace) -> None:
        self.view.close()
        self.daemons.stop()
        if self.schema and not args.keep:
            conn = C.admin(args.pg)
            conn.execute(f'DROP SCHEMA IF EXISTS "{self.schema}" CASCADE')
            conn.close()


def finish(run: Run, args: argparse.Namespace, kills: list[tuple[int, int]]) -> tuple[dict, dict]:
    """Stop the load, drain, count: (the counts, the receiver's records)."""
    run.load.stop()
    drained, took = drain(run.view, run.load, args.drain_timeout)
    time.sleep(1.0)  # a repeat would come now
    dump = run.receiver.dump()
    r = tally(run.load, dump, run.view, run.daemons, kills)
    r["drained"], r["drain_s"] = drained, round(took, 1)
    return r, dump


def kill_mode(args: argparse.Namespace, tmp: Path, procs: list[subprocess.Popen]) -> dict:
    rng = random.Random(args.seed)
    run = Run(args, tmp, procs)
    kills: list[tuple[int, int]] = []  # (killed, answering again), ns
    try:
        print(f"kill: {args.workers} journeys serve on {args.store}, receiver {run.receiver.url}, load "
              f"{args.rate:g} events/s; {args.kills} kills -9 after {args.up[0]:g}-{args.up[1]:g} s up, "
              f"down {args.down:g} s at most (seed {args.seed})", flush=True)
        began = time.monotonic()
        run.load.start()
        for k in range(args.kills):
            run.load.stopping.wait(rng.uniform(*args.up))
            i = rng.randrange(args.workers)
            down = time.time_ns()
            run.daemons.kill(i)
            time.sleep(rng.uniform(0, args.down))
            run.daemons.start(i)
            kills.append((down, time.time_ns()))
            print(f"  kill {k + 1}: daemon {i}, down {(kills[-1][1] - down) / 1e9:.1f} s; accepted so far "
                  f"{run.load.accepted:,}; calls {run.receiver.count():,}", flush=True)
            if time.monotonic() - began > args.max_minutes * 60:
                print(f"  stopped after {args.max_minutes:g} minutes ({k + 1} kills)")
                break
        time.sleep(args.up[0])
        r, _ = finish(run, args, kills)
        r["kills"] = len(kills)
        r["starts"] = run.daemons.starts
        report("kill", f"{args.store}, {args.workers} worker(s), {len(kills)} kills", r)
        return r
    finally:
        run.close(args)


def outage_mode(args: argparse.Namespace, tmp: Path, procs: list[subprocess.Popen]) -> dict:
    run = Run(args, tmp, procs)
    try:
        hang = parse_seconds(args.timeout) + 2
        print(f"outage: {args.workers} journeys serve on {args.store}, load {args.rate:g} events/s; the receiver "
              f"answers for {args.warm:g} s, then {args.fault} for {args.minutes:g} min"
              + (f" (Retry-After: {args.retry_after})" if args.fault == "429" else "")
              + (f" (held {hang:g} s, past the webhook's {args.timeout} timeout)" if args.fault == "hang" else "")
              + f", then recovers; load until {args.after:g} s after", flush=True)
        run.load.start()
        time.sleep(args.warm)
        started = time.time_ns()
        run.receiver.fault(args.fault, args.retry_after, hang)
        end = time.monotonic() + args.minutes * 60
        while time.monotonic() < end:
            time.sleep(min(30.0, max(0.0, end - time.monotonic())))
            print(f"  outage, {(time.time_ns() - started) / 6e10:.1f} min: accepted {run.load.accepted:,}, outbox "
                  f"{dict(run.view.outbox())}", flush=True)
        run.receiver.fault("ok")
        recovered = time.time_ns()
        print(f"  recovered after {(recovered - started) / 6e10:.2f} min; outbox {dict(run.view.outbox())}", flush=True)
        time.sleep(args.after)
        r, dump = finish(run, args, [])
        records = dump["records"]
        first_at: dict[str, int] = {}
        for key, *_, at, _ in records:
            first_at[key] = min(at, first_at.get(key, at))
        after = [at for at in first_at.values() if at >= recovered]
        r["delivered_during_outage"] = sum(1 for at in first_at.values() if started <= at < recovered)
        r["delivered_after_recovery"] = len(after)
        r["last_delivery_after_recovery_s"] = round((max(after) - recovered) / 1e9, 1) if after else 0.0
        r["refused_during_outage"] = sum(dump["refused"].get(k, 0) for k in ("503", "429", "hang"))
        report("outage", f"{args.fault} for {args.minutes:g} min, {args.store}, {args.workers} worker(s)", r)
        return r
    finally:
        run.close(args)


def parse_seconds(text: str) -> float:
    from connectors.webhook import parse_duration

    return parse_duration(text)


# ---------------------------------------------------------------------------- fuzz: HTTP

ODD_TIMES = ["", "0", "-1", "1e20", "NaN", "yesterday", "2026-02-30T00:00:00Z", "2026-13-01T00:00:00Z",
             "0000-01-01T00:00:00Z", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999999Z", "10000-01-01T00:00:00Z",
             "2026-06-30T23:59:60Z", "2026-03-29T02:30:00+01:00", "2026-01-01T00:00:00+24:00",
             "2026-01-01T00:00:00-23:59", "2026-01-01", "2026-01-01T00:00:00", "2026-01-01 00:00:00",
             "2026-01-01T00:00:00.123456789Z", "1970-01-01T00:00:00Z", "1969-12-31T23:59:59Z", "2038-01-19T03:14:08Z",
             "2262-04-11T23:47:16.854775808Z", "+002026-01-01T00:00:00Z", "\uff12\uff10\uff12\uff16-01-01T00:00:00Z",
             "2026-W01-1", "2026-001", "20260101T000000Z", "2026-01-01T00:00:00Z\x00"]
ODD_ZONES = ["", "UTC", "Europe/Paris", "Mars/Olympus", "../../etc/passwd", "+05:30", "Etc/GMT+14", "Etc/GMT-14",
             "America/New_York\x00", "a" * 1000, "EST5EDT", "posixrules", "localtime", "Factory", "right/UTC", "Z"]
ODD_STRINGS = ["", " ", "\x00", "null", "None", "true", "\ud800", "\udfff", "\U0001f642" * 3, "\u202e", "a" * 10000,
               "' OR 1=1 --", "%s%s%n", "{{ 7*7 }}", "{% raw %}", "${jndi:ldap://127.0.0.1/a}", "\\", "\"", "\r\n",
               "é" * 100, "user.id", "__proto__", "constructor"]
HUGE = [10 ** 400, -10 ** 400, 2 ** 63, 2 ** 63 - 1, -2 ** 63 - 1, 2 ** 64, 1e308, -1e308, 5e-324, -0.0,
        float("inf"), float("-inf"), float("nan"), 0.1 + 0.2, 1e16 + 1]
DEEP = "@@deep@@"  # "@@deep@@N": replaced in the JSON text by objects nested N levels deep


def http_strategy(events: list[str], props: list[str]):
    from hypothesis import strategies as st

    def values(strict: bool):
        """(text, JSON values, properties): with `strict`, only what the ingest's JSON parser takes (no
        NaN, no lone surrogate, integers in 64 bits, under 1,024 levels), so the values reach the engine."""
        odd = [x for x in ODD_STRINGS if not (strict and "\ud800" <= x[:1] <= "\udfff")]
        text = st.one_of(st.text(max_size=30), st.sampled_from(odd))
        fits = (lambda x: x - x == 0 and -2 ** 63 <= x < 2 ** 64) if strict else (lambda x: True)  # orjson's
        number = st.one_of(st.integers(-2 ** 63, 2 ** 64 - 1) if strict else st.integers(),
                           st.floats(allow_nan=not strict, allow_infinity=not strict),
                           st.sampled_from([x for x in HUGE if fits(x)]))
        scalar = st.one_of(st.none(), st.booleans(), number, text)
        value = st.recursive(scalar, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(text, kids, max_size=4),
                             max_leaves=20)
        deep = st.integers(10, 1000 if strict else 5000).map(lambda d: f"{DEEP}{d}")  # orjson takes 1,024 levels
        properties = st.dictionaries(st.one_of(st.sampled_from(props), text), st.one_of(value, value, deep), max_size=8)
        return text, value, properties

    text, value, properties = values(strict=False)
    properties = st.one_of(properties, value)
    ident = st.one_of(st.text(max_size=20), st.sampled_from(ODD_STRINGS), st.integers(), st.sampled_from(["u1", "u2"]),
                      st.none())
    when = st.one_of(st.sampled_from(ODD_TIMES), st.integers(), st.floats(),
                     st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                                  timezones=st.none() | st.timezones()).map(lambda d: d.isoformat()))
    context = st.fixed_dictionaries({}, optional={"timezone": st.one_of(st.sampled_from(ODD_ZONES), text, value),
                                                  "traits": properties, "ip": text, "library": value})
    call = st.fixed_dictionaries(
        {"type": st.one_of(st.sampled_from(["track", "identify", "page", "screen", "alias", "group"]), text)},
        optional={"userId": ident, "anonymousId": ident, "messageId": st.one_of(text, st.uuids().map(str)),
                  "event": st.one_of(st.sampled_from(events), text), "properties": properties,
                  "traits": properties, "timestamp": when, "sentAt": when, "originalTimestamp": when,
                  "context": context, "previousId": ident, "groupId": ident, "name": text, "category": text,
                  "integrations": value})
    # well-formed calls (the right type for the endpoint, a user of a small pool or any string, a
    # known event, a valid time most of the time) with odd values inside: they reach the engine
    text, value, properties = values(strict=True)
    users = st.one_of(st.sampled_from([f"fuzz-{i}" for i in range(30)]), st.text(min_size=1, max_size=40))
    valid_time = st.datetimes(min_value=datetime(2025, 1, 1), max_value=datetime(2027, 1, 1),
                              timezones=st.timezones()).map(lambda d: d.isoformat())
    zones = st.sampled_from(["Europe/Paris", "America/New_York", "Asia/Kathmandu", "Pacific/Kiritimati", "UTC"])
    traits = st.dictionaries(st.one_of(st.sampled_from(["email", "first_name", "plan", "phone", "push_token"] + props),
                                       text),
                             st.one_of(st.emails(), value), max_size=6)

    def shaped(kind: str):
        fields = {"type": st.just(kind), "userId": users, "messageId": st.uuids().map(str)}
        fields.update({"track": {"event": st.sampled_from(events), "properties": properties},
                       "identify": {"traits": traits}, "page": {"name": text, "properties": properties},
                       "screen": {"name": text, "properties": properties}, "alias": {"previousId": users},
                       "group": {"groupId": users, "traits": traits}}[kind])
        return st.fixed_dictionaries(fields, optional={
            "timestamp": st.one_of(valid_time, valid_time, when),
            "context": st.fixed_dictionaries({}, optional={
                "timezone": st.one_of(zones, zones, st.sampled_from(ODD_ZONES)), "traits": traits})})

    kinds = ["track", "track", "track", "identify", "identify", "page", "screen", "alias", "group"]
    good = st.one_of(*(st.tuples(st.just(f"/v1/{k}"), shaped(k)) for k in sorted(set(kinds))),
                     st.tuples(st.just("/v1/batch"), st.fixed_dictionaries(
                         {"batch": st.lists(st.one_of(*(shaped(k) for k in kinds)), min_size=1, max_size=20)})))
    batch = st.fixed_dictionaries({"batch": st.lists(st.one_of(call, shaped("track")), max_size=12)},
                                  optional={"context": context, "sentAt": when})
    one = st.tuples(st.sampled_from(["/v1/track", "/v1/identify", "/v1/page", "/v1/screen", "/v1/alias", "/v1/group",
                                     "/v1/t", "/v1/i"]), call)
    odd = st.one_of(one, st.tuples(st.sampled_from(["/v1/batch", "/v1/b"]), batch))
    return st.tuples(st.one_of(good, good, odd),
                     st.sampled_from(["json"] * 6 + ["ascii", "gzip", "broken-gzip", "deflate"]))


def encode(doc, how: str) -> tuple[bytes, dict[str, str]]:
    """The request body and its headers: JSON text (non-finite numbers as NaN/Infinity; lone
    surrogates escaped, or unescaped as invalid UTF-8 bytes), the deep markers expanded to objects
    nested that many levels, gzipped (or broken gzip, or an unsupported encoding) or not."""
    text = json.dumps(doc, ensure_ascii=how == "ascii")
    text = re.sub('"' + DEEP + r'(\d+)"', lambda m: '{"a":' * int(m.group(1)) + "1" + "}" * int(m.group(1)), text)
    body = text.encode("utf-8", "surrogatepass")
    headers = {"Content-Type": "application/json"}
    if how == "gzip":
        body, headers["Content-Encoding"] = gzip.compress(body), "gzip"
    elif how == "broken-gzip":
        body, headers["Content-Encoding"] = gzip.compress(body)[:-8] + b"garbage!", "gzip"
    elif how == "deflate":
        headers["Content-Encoding"] = "deflate"
    return body, headers


def fuzz_http(args: argparse.Namespace, tmp: Path, procs: list[subprocess.Popen]) -> dict:
    import httpx
    from hypothesis import HealthCheck, Phase, given, seed, settings

    receiver = Receiver(procs)
    smtp = smtp_sink()
    root = tmp / "shop"
    shutil.copytree(SHOP, root, ignore=shutil.ignore_patterns("*.db", "*.db-*"))
    toml = (root / "journeys.toml").read_text()
    local = {  # every connector at loopback: the SMTP sink, the receiver, a closed port for the rest
        r"port = 1025": f"port = {smtp.port}",
        r'url = "https://crm.example.com/hooks/nudge"': f'url = "{receiver.url}/hook"',
        r'project_id = "shop-prod"': 'project_id = "shop-prod"\nbase_url = "http://127.0.0.1:9"',
        r'customer_id = "1234567890"': 'customer_id = "1234567890"\nbase_url = "http://127.0.0.1:9"\n'
                                       'oauth_url = "http://127.0.0.1:9/token"',
    }
    for old, new in local.items():
        if old not in toml:
            raise SystemExit(f"fuzz: the shop's journeys.toml no longer has {old!r}: update benchmarks/chaos.py")
        toml = toml.replace(old, new)
    (root / "journeys.toml").write_text(toml)
    store = f"{args.pg}?schema=chaos_fuzz_{os.getpid()}" if args.store == "postgres" else f"sqlite:///{tmp / 'fuzz.db'}"
    daemons = Daemons(root, store, 1, args.keep or tmp, procs,
                      {"JOURNEYS_UNSUBSCRIBE_SECRET": "chaos-unsubscribe-secret-0123456789abcdef",
                       "CRM_WEBHOOK_SECRET": SECRET})
    daemons.start_all()
    view = StoreView(store)
    try:
        sources = " ".join(p.read_text() for p in (root / "journeys").glob("*.journey"))
        events = sorted(set(re.findall(r'event "([^"]+)"', sources)))
        props = sorted(set(re.findall(r"\.(\w+)", sources)) - {"id"})
        statuses: Counter = Counter()
        refusals: Counter = Counter()  # 400s by the field refused (the first of a batch)
        samples: list[str] = []
        url = daemons.urls[0]
        deadline = time.monotonic() + args.max_minutes * 60
        client = httpx.Client(timeout=30, auth=(L.KEY, ""))
        sent, accepted = [0], [0]
        pool = [{"type": "identify", "userId": f"fuzz-{i}", "messageId": f"pool-{i}",
                 "traits": {"email": f"fuzz-{i}@example.com", "first_name": "Fuzz"}} for i in range(30)]
        if client.post(url + "/v1/batch", json={"batch": pool}).status_code != 200:  # the users' emails first
            raise SystemExit("fuzz: the daemon refused the pool of users")
        accepted[0] += len(pool)

        class OutOfTime(Exception):
            pass

        @seed(args.seed)
        @settings(max_examples=args.examples, database=None, deadline=None, phases=[Phase.generate],
                  suppress_health_check=list(HealthCheck))
        @given(request=http_strategy(events, props))
        def one(request):
            (path, doc), how = request
            if time.monotonic() > deadline:
                raise OutOfTime
            body, headers = encode(doc, how)
            sent[0] += 1
            try:
                r = client.post(url + path, content=body, headers=headers)
            except httpx.TransportError as e:
                statuses[f"connection: {type(e).__name__}"] += 1
                if daemons.procs[0].poll() is not None:
                    raise SystemExit(f"the daemon died during the fuzz:\n{daemons.logs[0].read_text()[-3000:]}")
                return
            statuses[r.status_code] += 1
            if r.status_code == 200:
                accepted[0] += len(doc["batch"]) if path in ("/v1/batch", "/v1/b") else 1
            elif r.status_code == 400:
                try:
                    answer = r.json()
                    accepted[0] += int(answer.get("accepted") or 0)  # a batch's good calls are taken
                    refusals[str(answer.get("field") or (answer.get("rejected") or [{}])[0].get("field"))] += 1
                except (ValueError, TypeError, AttributeError):
                    pass
            if r.status_code >= 500 and len(samples) < 20:
                samples.append(f"{r.status_code} {path} {how} {body[:300]!r} -> {r.text[:300]}")

        print(f"fuzz http: {args.examples:,} generated requests to journeys serve of the example shop "
              f"({store.split('?')[0]}), "
              f"seed {args.seed}; events {events}", flush=True)
        began = time.monotonic()
        try:
            one()
        except OutOfTime:
            print(f"  stopped after {args.max_minutes:g} minutes")
        client.close()
        took = time.monotonic() - began
        end = time.monotonic() + 120
        while (view.inbox_left() or view.open_entries()[0]) and time.monotonic() < end:
            time.sleep(0.5)
        time.sleep(2.0)
        tb, tb_lines = daemons.tracebacks()
        ready = httpx.get(url + "/readyz", timeout=10).json()
        left = view.inbox_left()
        keys = Counter(rec[0] for rec in receiver.dump()["records"])
        if samples:
            (args.keep or tmp).joinpath("fuzz-5xx.txt").write_text("\n".join(samples))
        r = {"accepted": accepted[0], "processed": accepted[0] - left - view.inbox_failed(),
             "delivered": view.outbox().get("delivered", 0), "lost": view.inbox_failed(),
             "duplicated": sum(c - 1 for c in keys.values()), "stuck": left, "tracebacks": tb,
             "requests": sent[0], "seconds": round(took, 1),
             "server_errors": sum(c for st_, c in statuses.items() if isinstance(st_, int) and st_ >= 500),
             "statuses": {str(k): v for k, v in sorted(statuses.items(), key=str)}, "ready": ready.get("ready"),
             "refused_fields": dict(refusals.most_common(8)),
             "outbox": dict(view.outbox()), "smtp_messages": smtp.handler.count, "webhook_calls": sum(keys.values()),
             "explain": samples[:5] + [f"    traceback x{c}: {line}" for line, c in tb_lines.most_common(8)]}
        print("  (accepted: events the daemon took, 200 or the good calls of a 400 batch; delivered: outbox entries "
              "delivered (the SMTP sink, the webhook receiver); lost: events set aside (inbox_failed); stuck: "
              "inbox rows left 120 s after the last request)")
        return r
    finally:
        view.close()
        daemons.stop()
        smtp.stop()
        if args.store == "postgres" and not args.keep:
            conn = C.admin(args.pg)
            conn.execute(f'DROP SCHEMA IF EXISTS "chaos_fuzz_{os.getpid()}" CASCADE')
            conn.close()


class _Sink:
    def __init__(self):
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        return "250 OK"


def smtp_sink():
    from aiosmtpd.controller import Controller

    c = Controller(_Sink(), hostname="127.0.0.1", port=L.free_port())
    c.start()
    return c


# ---------------------------------------------------------------------------- fuzz: journey files

KEYWORDS = ["journey", "entry", "when", "event", "exit", "reenter", "always", "never", "after", "goal", "within",
            "wait", "for", "up", "to", "on", "timeout", "send", "email", "push", "webhook", "with", "set", "user",
            "if", "else", "split", "segment", "cap", "per", "quiet", "hours", "add", "remove", "from", "audience",
            "and", "or", "not", "in", "where", "as", "last", "count", "days_since", "true", "false", "null", "every",
            "cron", "until"]
TOKENS = KEYWORDS + ["{", "}", "(", ")", "[", "]", '"', ",", ":", ".", "==", "!=", ">=", "%", "+", "-", "*", "/",
                     "#", "0", "-1", "99999999999999999999", "1e309", "100y", "0s", "999999999d", "1.5h", "-3d",
                     "\u00e9", "\U0001f642", "\u202e", "\x00", "\t", "\r", "\\", "x" * 300, '"' + "y" * 5000 + '"',
                     "{" * 200, "(" * 200, "not " * 200, "21:00-08:00", "45%", "100%", "0%", "2026-02-30"]


def mutate(text: str, rng: random.Random, donors: list[str]) -> str:
    """One to three seeded edits: delete, duplicate, swap or insert lines; delete a span; insert a
    keyword, token or a line of another file; change a number or a string; truncate."""
    for _ in range(rng.randint(1, 3)):
        lines = text.split("\n")
        op = rng.randrange(10)
        i, j = rng.randrange(len(lines)), rng.randrange(len(lines))
        if op == 0:
            del lines[i]
        elif op == 1:
            lines.insert(i, lines[j])
        elif op == 2:
            lines[i], lines[j] = lines[j], lines[i]
        elif op == 3:
            lines.insert(i, rng.choice(rng.choice(donors).split("\n")))
        elif op == 4 and text:
            a = rng.randrange(len(text))
            text = text[:a] + text[a + rng.randint(1, 20):]
            continue
        elif op == 5 and text:
            a = rng.randrange(len(text))
            text = text[:a] + rng.choice([" ", ""]) + rng.choice(TOKENS) + rng.choice([" ", ""]) + text[a:]
            continue
        elif op == 6:
            nums = list(re.finditer(r"\d+(\.\d+)?", text))
            if nums:
                m = rng.choice(nums)
                text = text[:m.start()] + rng.choice(["0", "00", "-0", "99999999999999999999", "1" * 400, "0.0000001",
                                                      "4294967296", "9223372036854775808"]) + text[m.end():]
            continue
        elif op == 7:
            strs = list(re.finditer(r'"[^"\n]*"', text))
            if strs:
                m = rng.choice(strs)
                text = text[:m.start()] + json.dumps(rng.choice(ODD_STRINGS[:20]))[:400] + text[m.end():]
            continue
        elif op == 8:
            words = list(re.finditer(r"\b[a-z_]+\b", text))
            if words:
                m = rng.choice(words)
                text = text[:m.start()] + rng.choice(KEYWORDS) + text[m.end():]
            continue
        else:
            text = text[: rng.randrange(len(text) + 1)]
            continue
        text = "\n".join(lines)
    return text


def fuzz_journeys(args: argparse.Namespace, tmp: Path) -> dict:
    from typer.testing import CliRunner

    from engine.cli.app import app

    rng = random.Random(args.seed)
    root = tmp / "shop-files"
    shutil.copytree(SHOP, root, ignore=shutil.ignore_patterns("*.db", "*.db-*"))
    files = sorted((root / "journeys").glob("*.journey"))
    originals = {f: f.read_text() for f in files}
    donors = list(originals.values())
    runner = CliRunner()
    outcome: Counter = Counter()
    crashes, j000s = 0, 0
    kinds: Counter = Counter()  # what went wrong, by kind: the exception and our innermost frame
    first: dict[str, str] = {}  # kind -> the first case, with what the real `journeys check` did with it
    keep = (args.keep or tmp) / "journey-fuzz"
    keep.mkdir(parents=True, exist_ok=True)

    def alarm(signum, frame):
        raise TimeoutError("journeys check took over 10 s")

    previous = signal.signal(signal.SIGALRM, alarm)
    deadline = time.monotonic() + args.max_minutes * 60
    began = time.monotonic()
    print(f"fuzz journeys: {args.mutations:,} mutations of the shop's {len(files)} journey files, each through "
          f"`journeys check` (seed {args.seed})", flush=True)
    n = 0
    try:
        for n in range(1, args.mutations + 1):
            if time.monotonic() > deadline:
                print(f"  stopped after {args.max_minutes:g} minutes")
                break
            f = rng.choice(files)
            text = mutate(originals[f], rng, donors)
            f.write_text(text, errors="surrogatepass")
            signal.alarm(10)
            try:
                result = runner.invoke(app, ["check", str(root)], catch_exceptions=True)
            except TimeoutError:
                outcome["hang (over 10 s)"] += 1
                result = None
            finally:
                signal.alarm(0)
            bad = ""
            if result is not None:
                exc = result.exception
                if isinstance(exc, TimeoutError):
                    outcome["hang (over 10 s)"] += 1
                    bad = "hang"
                elif exc is not None and not isinstance(exc, SystemExit):
                    crashes += 1
                    bad = crash_kind(exc)
                elif result.exit_code not in (0, 1):
                    crashes += 1
                    bad = f"exit code {result.exit_code}: {result.output.strip().splitlines()[-1:]}"
                else:
                    outcome[f"exit {result.exit_code}"] += 1
                if "J000" in result.output:
                    j000s += 1
                    bad = bad or "J000: " + next(line for line in result.output.splitlines() if "J000" in line)[:200]
                if "Traceback" in result.output:
                    outcome["Traceback printed"] += 1
            else:
                bad = "hang"
            if bad:
                kinds[bad] += 1
                case = keep / f"case-{n}-{f.name}"
                case.write_text(text, errors="surrogatepass")
                if bad not in first:  # the first of its kind again as a real `journeys check` process
                    cli = subprocess.run([sys.executable, "-m", "engine.cli", "check", str(root)], check=False,
                                         cwd=ROOT, capture_output=True, text=True, timeout=60,
                                         env={**os.environ, "PYTHONPATH": str(ROOT)})
                    message = (str(result.exception).splitlines() or [""])[0][:150] if result is not None else ""
                    first[bad] = (f"{case if args.keep else case.name} ({message}); `journeys check` as a process: "
                                  f"exit {cli.returncode}"
                                  + (", a Traceback" if "Traceback" in cli.stderr + cli.stdout else ""))
            f.write_text(originals[f])
    finally:
        signal.signal(signal.SIGALRM, previous)
        for f, text in originals.items():
            f.write_text(text)
    took = time.monotonic() - began
    return {"mutations": n, "seconds": round(took, 1), "crashes": crashes, "j000": j000s,
            "hangs": outcome["hang (over 10 s)"], "tracebacks": outcome["Traceback printed"] + crashes,
            "outcomes": dict(outcome),
            "explain": [f"    x{c} {kind}: first {first[kind]}" for kind, c in kinds.most_common(10)]}


def crash_kind(exc: BaseException) -> str:
    """A crash's kind, "Type at file:line (function)" (the innermost frame of ours), whatever its message."""
    import traceback

    ours = [fr for fr in traceback.extract_tb(exc.__traceback__) if str(ROOT) in fr.filename
            and "/.venv/" not in fr.filename]
    where = f" at {Path(ours[-1].filename).relative_to(ROOT)}:{ours[-1].lineno} ({ours[-1].name})" if ours else ""
    return f"{type(exc).__name__}{where}"


def fuzz_mode(args: argparse.Namespace, tmp: Path, procs: list[subprocess.Popen]) -> dict:
    out = {}
    if args.only in (None, "http"):
        r = fuzz_http(args, tmp, procs)
        report("fuzz http", f"{r['requests']:,} requests, {r['server_errors']} answers 5xx", r)
        out.update({k: v for k, v in r.items() if k != "explain"})
    if args.only in (None, "journeys"):
        j = fuzz_journeys(args, tmp)
        print(f"\nfuzz journeys: {j['mutations']:,} mutations in {j['seconds']:.0f} s: crashes {j['crashes']} / "
              f"J000 {j['j000']} / hangs {j['hangs']} / tracebacks {j['tracebacks']}; outcomes {j['outcomes']}")
        for line in j["explain"]:
            print(line)
        print("RESULT " + json.dumps({"mode": "fuzz journeys", **{k: v for k, v in j.items() if k != "explain"}}))
        out.update({f"journeys_{k}": v for k, v in j.items() if k != "explain"}, crashes=j["crashes"],
                   j000=j["j000"], hangs=j["hangs"])
    return out


# ---------------------------------------------------------------------------- main

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--receive", type=int, help=argparse.SUPPRESS)
    sub = ap.add_subparsers(dest="mode")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--seed", type=int, default=18, help="the seed of every random choice")
    common.add_argument("--keep", type=Path, help="keep the daemons' logs (and fuzz cases, the PostgreSQL schema) here")
    common.add_argument("--pg", default=PG, help="the PostgreSQL database (a schema is created in it and dropped)")
    common.add_argument("--max-minutes", type=float, default=60, help="a bound on the run's main loop")
    runs = argparse.ArgumentParser(add_help=False)
    runs.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    runs.add_argument("--workers", type=int, default=2, help="journeys serve processes (PostgreSQL only)")
    runs.add_argument("--rate", type=float, help="events/s the load generator aims at")
    runs.add_argument("--senders", type=int, default=2, help="load generator threads")
    runs.add_argument("--wait", default="2s", help='the "Signed Up" journey\'s wait before its webhook')
    runs.add_argument("--timeout", default="5s", help="the webhook's timeout (journeys.toml)")
    runs.add_argument("--lease-ttl", type=float, default=3, help="JOURNEYS_LEASE_TTL of the workers (PostgreSQL)")
    runs.add_argument("--delivery-lease", type=float, default=15, help="JOURNEYS_DELIVERY_LEASE of the daemons")
    runs.add_argument("--drain-timeout", type=float, help="seconds the drain may take (kill: 300; outage: 600 + "
                      "twice the outage)")
    k = sub.add_parser("kill", parents=[common, runs], help="kill -9 of the daemons at random moments under load")
    k.add_argument("--kills", type=int, default=20)
    k.add_argument("--up", type=lambda s: tuple(float(x) for x in s.split(",")), default=(0.5, 3.0),
                   help="MIN,MAX seconds a daemon runs under load before a kill (seeded uniform)")
    k.add_argument("--down", type=float, default=1.0, help="at most this many seconds down before the restart")
    o = sub.add_parser("outage", parents=[common, runs], help="the webhook's provider fails for a while")
    o.add_argument("--minutes", type=float, default=2)
    o.add_argument("--fault", choices=("503", "429", "hang"), default="503")
    o.add_argument("--retry-after", type=int, default=30, help="the Retry-After of --fault 429, seconds")
    o.add_argument("--warm", type=float, default=5, help="seconds of normal answers before the outage")
    o.add_argument("--after", type=float, default=10, help="seconds of load after the recovery")
    f = sub.add_parser("fuzz", parents=[common], help="fuzzed HTTP calls and journey files")
    f.add_argument("--examples", type=int, default=10_000, help="generated HTTP requests")
    f.add_argument("--mutations", type=int, default=1000, help="mutated journey files checked")
    f.add_argument("--only", choices=("http", "journeys"))
    f.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    args = ap.parse_args()
    if args.receive:
        receive(args.receive)
        return
    if not args.mode:
        ap.error("a mode: kill, outage or fuzz")
    if args.mode == "kill":
        args.rate = args.rate or 150
        args.drain_timeout = args.drain_timeout or 300
    elif args.mode == "outage":
        args.rate = args.rate or 10
        args.drain_timeout = args.drain_timeout or 600 + 2 * 60 * args.minutes
        args.max_minutes = max(args.max_minutes, args.minutes + 1)
    if args.keep:
        args.keep = args.keep.resolve()
        args.keep.mkdir(parents=True, exist_ok=True)

    procs: list[subprocess.Popen] = []

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # SIGTERM as Ctrl-C: the finally below stops everything

    signal.signal(signal.SIGTERM, interrupted)
    with tempfile.TemporaryDirectory(prefix="chaos-") as tmp_name:
        try:
            mode = {"kill": kill_mode, "outage": outage_mode, "fuzz": fuzz_mode}[args.mode]
            result = mode(args, Path(tmp_name), procs)
        finally:
            stop(procs)
    print(f"load average {os.getloadavg()[0]:.2f} ({os.cpu_count()} cores, shared); reproduce: python "
          f"benchmarks/chaos.py " + " ".join(sys.argv[1:]))
    sys.exit(1 if failed(result) else 0)


if __name__ == "__main__":
    main()
