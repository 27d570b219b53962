"""Several `journeys serve` workers on one PostgreSQL database, under failure.

Three worker processes share a schema. A steady load goes through HTTP to all of them, round
robin; one worker at a time is killed with SIGKILL at seeded random moments and started again.
Afterwards, with every worker back:

- every accepted event was processed once (its messageId is in `messages`, the inbox is empty,
  nothing was set aside);
- every user's identify was taken before their "Signed Up" (the journey's entry reads the trait
  the identify set: a user taken out of order would be missing);
- every timer fired once: one webhook action per user, sent after the wait;
- every action was delivered once: the receiver got each action's Idempotency-Key (retries after a
  kill may repeat a key; the outbox says delivered exactly once per action);
- the actions equal those of a dry-run of the same events.

And a cron entry across two workers, one killed just before the minute: each user gets the
firing once (the survivor catches it up for the partitions it takes over).
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest

from .test_daemon import Daemon, eventually
from .test_webhook import Receiver

JOURNEY = """\
journey "Welcome" {
  entry when event "Signed Up" where user.plan == "pro"
  wait 2s
  webhook "crm" with { user_id: user.id, plan: user.plan }
}
"""


def receiver() -> Receiver:
    """The webhook's provider (tests/test_webhook.py's): records every call's headers and body."""
    r = Receiver()
    r.httpd.handle_error = lambda request, address: None  # a killed worker's connection resets
    return r


def project(root: Path, hook: str) -> Path:
    (root / "journeys").mkdir(parents=True)
    (root / "journeys.toml").write_text(f"""\
[project]
name = "cluster"

[ingest]
write_keys_env = ["JOURNEYS_WRITE_KEY"]

[webhooks.crm]
url = "{hook}"
timeout = "5s"
""")
    (root / "journeys" / "welcome.journey").write_text(JOURNEY)
    return root


def pg(pg_url: str):
    from engine.store.pg_store import connect

    conn, _ = connect(pg_url)
    return conn


def test_three_workers_one_killed_at_random_moments_lose_and_repeat_nothing(tmp_path, pg_url):
    rng = random.Random(int(os.environ.get("JOURNEYS_CLUSTER_SEED", "7")))
    hook = receiver()
    root = project(tmp_path / "p", hook.url)
    env = {"JOURNEYS_LEASE_TTL": "2", "JOURNEYS_DELIVERY_LEASE": "5", "JOURNEYS_RELOAD_POLL": "0"}
    workers: list[Daemon] = [Daemon(root, pg_url, tmp_path / f"w{i}.log", **env) for i in range(3)]
    sent: dict[str, list[dict]] = {}  # batch id -> its calls
    accepted: set[str] = set()
    lock = threading.Lock()
    stop = threading.Event()

    def load(n: int) -> None:
        with httpx.Client() as client:
            k = 0
            while not stop.is_set():
                k += 1
                calls = []
                for i in range(10):
                    uid = f"t{n}-{k}-{i}"
                    calls += [{"type": "identify", "userId": uid, "traits": {"plan": "pro"},
                               "messageId": f"{uid}-identify"},
                              {"type": "track", "userId": uid, "event": "Signed Up", "messageId": f"{uid}-signup"}]
                with lock:
                    sent[f"{n}-{k}"] = calls
                target = workers[(n + k) % 3]
                try:
                    r = client.post(f"{target.url}/v1/batch", json={"batch": calls}, auth=("test-write-key", ""),
                                    timeout=10)
                except httpx.TransportError:
                    time.sleep(0.05)  # that worker is down: the next batch goes to another
                    continue
                if r.status_code == 200:
                    with lock:
                        accepted.update(c["messageId"] for c in calls)
                time.sleep(0.02)

    threads = [threading.Thread(target=load, args=(n,)) for n in range(3)]
    try:
        for t in threads:
            t.start()
        for _ in range(3):  # kill a random worker at a random moment, start it again
            time.sleep(rng.uniform(1.0, 3.0))
            i = rng.randrange(3)
            workers[i].proc.kill()
            workers[i].proc.wait()
            time.sleep(rng.uniform(0.2, 1.0))
            workers[i] = Daemon(root, pg_url, tmp_path / f"w{i}.log", **env)
        time.sleep(1.0)
        stop.set()
        for t in threads:
            t.join(20)
        assert len(accepted) > 200

        conn = pg(pg_url)
        users = {m[: -len("-identify")] for m in accepted if m.endswith("-identify")}

        def settled():
            inbox = conn.execute("SELECT count(*) FROM inbox").fetchone()[0]
            waiting = conn.execute("SELECT count(*) FROM profiles WHERE wake IS NOT NULL").fetchone()[0]
            pending = conn.execute("SELECT count(*) FROM outbox WHERE state NOT IN ('delivered', 'failed', 'dead')"
                                   ).fetchone()[0]
            return inbox == 0 and waiting == 0 and pending == 0

        try:
            eventually(settled, timeout=90, every=0.5)
        except AssertionError:  # say what is left, and where
            left = {"inbox": conn.execute("SELECT part, count(*) FROM inbox GROUP BY part").fetchall(),
                    "waiting": conn.execute("SELECT count(*), min(wake) FROM profiles WHERE wake IS NOT NULL").fetchone(),
                    "outbox": conn.execute("SELECT state, count(*), min(next_at) FROM outbox WHERE state NOT IN "
                                           "('delivered', 'failed', 'dead') GROUP BY state").fetchall(),
                    "partitions": conn.execute("SELECT owner, count(*), min(expires) FROM partitions GROUP BY owner"
                                               ).fetchall(),
                    "now": conn.execute("SELECT now()").fetchone()[0]}
            raise AssertionError(f"not settled after 90 s: {left}") from None

        # every accepted event processed once, nothing set aside
        processed = {r[0] for r in conn.execute("SELECT message_id FROM messages")}
        assert accepted <= processed
        assert conn.execute("SELECT count(*) FROM inbox_failed").fetchone()[0] == 0
        # in order, every timer once: one webhook action per user who signed up
        actions = conn.execute("SELECT \"user\", kind, outcome, path FROM actions").fetchall()
        per_user = Counter(u for u, kind, outcome, _ in actions if kind == "webhook" and outcome == "sent")
        taken = {m[: -len("-signup")] for m in processed if m.endswith("-signup")}
        assert set(per_user) == taken and set(per_user.values()) == {1}, per_user.most_common(3)
        assert users <= taken
        # every action delivered once: one outbox entry each, delivered, and its key at the provider
        states = Counter(r[0] for r in conn.execute("SELECT state FROM outbox"))
        assert states == {"delivered": len(taken)}, states
        received = [(r["headers"].get("idempotency-key", ""), json.loads(r["raw"])) for r in hook.requests]
        keys = Counter(k for k, _ in received)
        delivered_ids = {r[0] for r in conn.execute("SELECT action_id FROM outbox")}
        assert set(keys) == delivered_ids
        repeats = sum(n - 1 for n in keys.values())
        print(f"{len(accepted)} accepted, {len(taken)} users, {len(received)} calls, {repeats} repeated keys")
        assert all(body["data"] == {"user_id": body["user_id"], "plan": "pro"} for _, body in received)
        # the same actions as a dry-run of the same events
        from engine.core.messages import parse_message
        from engine.core.program import Program
        from engine.dryrun.simulate import dry_run_actions
        from journeys.checker import load_checked

        _, compiled = load_checked(root)
        calls = [c for batch in sent.values() for c in batch if c["messageId"] in processed]
        from datetime import datetime, timedelta, timezone

        start = datetime.now(timezone.utc)
        messages = [parse_message({**c, "timestamp": (start + timedelta(milliseconds=i)).isoformat()})
                    for i, c in enumerate(calls)]
        expected = dry_run_actions(Program.build(compiled), messages, start + timedelta(hours=1))
        want = Counter((a["user"], a["journey"], a["path"], a["kind"], a["target"], a["outcome"]) for a in expected)
        got = Counter(tuple(r) for r in conn.execute(
            "SELECT \"user\", journey, path, kind, target, outcome FROM actions"))
        assert got == want
        conn.close()
    finally:
        stop.set()
        for t in threads:
            t.join(5)
        for w in workers:
            if w.proc.poll() is None:
                w.proc.kill()
                w.proc.wait()
        hook.close()


MINUTE = """\
journey "Minute" {
  entry on cron "* * * * *" in "UTC"
  reenter always
  webhook "crm" with { user_id: user.id }
}
"""


def test_a_cron_entry_fires_once_per_user_when_a_worker_dies_just_before_the_minute(tmp_path, pg_url):
    """Two `journeys serve` workers share the partitions; one is killed 0.7 s before a minute
    boundary, so at the boundary half the partitions have no live owner (their 2 s leases, renewed
    every 0.4 s, outlast the boundary). The survivor fires the
    entry for its own, takes the dead worker's over when their leases run out and catches up the
    firing for them: every user gets each firing once, no user twice (the claims)."""
    hook = receiver()
    root = project(tmp_path / "p", hook.url)
    (root / "journeys" / "welcome.journey").write_text(MINUTE)
    env = {"JOURNEYS_LEASE_TTL": "2", "JOURNEYS_DELIVERY_LEASE": "5", "JOURNEYS_RELOAD_POLL": "0"}
    workers = [Daemon(root, pg_url, tmp_path / f"w{i}.log", **env) for i in range(2)]
    conn = pg(pg_url)
    try:
        def shared() -> bool:
            owners = [r[0] for r in conn.execute("SELECT owner FROM partitions WHERE expires > now()")]
            return len(owners) == 64 and len(set(owners)) == 2

        eventually(shared, timeout=20)
        users = [f"m{i}" for i in range(40)]
        calls = [{"type": "identify", "userId": u, "traits": {"plan": "pro"}, "messageId": f"{u}-id"} for u in users]
        assert httpx.post(f"{workers[0].url}/v1/batch", json={"batch": calls}, auth=("test-write-key", ""),
                          timeout=10).status_code == 200
        eventually(lambda: conn.execute("SELECT count(*) FROM profiles").fetchone()[0] == len(users), timeout=10)
        if time.time() % 60 > 50:  # too close to a boundary to kill before it: wait for the next one
            time.sleep(61 - time.time() % 60)
        fired_before = {r[0] for r in conn.execute("SELECT DISTINCT fire FROM schedule_runs")}
        time.sleep(max(0.0, 59.3 - time.time() % 60))
        workers[0].proc.kill()
        workers[0].proc.wait()
        time.sleep(60 - time.time() % 60 + 8)  # past the boundary, the leases' expiry and the catch-up

        fires = {r[0] for r in conn.execute("SELECT DISTINCT fire FROM schedule_runs")} - fired_before
        assert len(fires) == 1, fires
        (fire,) = fires
        claims = conn.execute("SELECT count(*) FROM schedule_runs WHERE fire = %s", (fire,)).fetchone()[0]
        assert claims == 64  # every partition fired, each once
        per_user = Counter(r[0] for r in conn.execute(
            'SELECT "user" FROM actions WHERE journey = \'Minute\' AND time >= %s', (fire,)))
        assert per_user == Counter({u: 1 for u in users}), per_user
    finally:
        conn.close()
        for w in workers:
            if w.proc.poll() is None:
                w.proc.kill()
                w.proc.wait()
        hook.close()
