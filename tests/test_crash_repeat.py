"""`journeys serve` killed (SIGKILL) at random moments under load, restarted, five times over.

A small project: `Signed Up` enters a `reenter never` journey that sends an email (to a real SMTP
server on loopback), waits 1s and sets `user.done`. A thread posts batches (identify + track per
user, every user posting twice: the second entry must be refused) without pause; the daemon is
killed at a seeded random moment, restarted on the same store, five times; then a clean restart
drains everything. Then, from the store:

- every messageId answered 200 is in `messages`, exactly once (the table's key), and nothing
  else is (every appended row was processed once: `len(messages) == last seq`);
- the inbox cursor equals the inbox's last seq;
- no user entered twice (one send action per user, no instance with entry > 1);
- every due timer fired once: every user who entered has `done = true`, no run is left in flight;
- outbox entries are unique per (action, connector).
"""

from __future__ import annotations

import random
import threading
import time

import httpx

from engine.store.serialize import state_from_bytes

from .test_daemon import Daemon, eventually, rows, tiny_project
from .test_smtp import Server

SEED = 20260302
ROUNDS = 5
JOURNEY = """\
journey "Hello" {
  entry when event "Signed Up"
  reenter never
  send email "hello"
  wait 1s
  set user.done = true
}
"""


def test_repeated_sigkill_loses_nothing_and_repeats_nothing(tmp_path):
    rng = random.Random(SEED)
    smtp = Server().start()
    daemon: Daemon | None = None
    try:
        project = tiny_project(tmp_path / "tiny", smtp.port)
        (project / "journeys" / "hello.journey").write_text(JOURNEY)
        db = project / "data" / "tiny.db"
        log = tmp_path / "daemon.log"
        env = {"JOURNEYS_UNSUBSCRIBE_SECRET": "unsubscribe-secret-for-tests-0123456789"}
        accepted: list[str] = []
        users: set[str] = set()
        n = 0
        for round_ in range(ROUNDS):
            daemon = Daemon(project, None, log, **env)
            stop = threading.Event()

            def load(d: Daemon = daemon, stop: threading.Event = stop) -> None:
                nonlocal n
                with httpx.Client() as client:
                    while not stop.is_set():
                        n += 1
                        calls, ids, batch_users = [], [], []
                        for i in range(10):
                            # every user twice: in this batch and again (a second entry) in the next
                            uid = f"u-{n - i % 2}-{i}"
                            mid = f"{round_}-{n}-{i}"
                            calls.append({"type": "identify", "userId": uid, "messageId": "id-" + mid,
                                          "traits": {"email": f"{uid}@example.com"}})
                            calls.append({"type": "track", "userId": uid, "event": "Signed Up",
                                          "messageId": "tr-" + mid})
                            ids += ["id-" + mid, "tr-" + mid]
                            batch_users.append(uid)
                        try:
                            r = d.post("batch", {"batch": calls}, client)
                        except httpx.TransportError:
                            return
                        if r.status_code == 200:
                            accepted.extend(ids)
                            users.update(batch_users)
                        time.sleep(0.02)  # steady, not a flood: the final drain stays short

            t = threading.Thread(target=load)
            t.start()
            time.sleep(rng.uniform(0.3, 2.0))  # a seeded random moment: ingest, processing, timers, sends
            daemon.proc.kill()
            daemon.proc.wait()
            stop.set()
            t.join(15)
            assert not t.is_alive()

        assert accepted
        daemon = Daemon(project, None, log, **env)  # the clean final restart: drains inbox, timers, outbox

        def drained() -> bool:
            body = daemon.readiness()
            return (body["ready"] and body["inbox_lag"] == 0
                    and rows(db, "SELECT count(*) FROM instances") == [(0,)]
                    and rows(db, "SELECT count(*) FROM outbox WHERE state = 'pending'") == [(0,)])

        try:
            eventually(drained, timeout=60, every=0.1)
        except AssertionError:
            raise AssertionError(("not drained", daemon.readiness(),
                                  rows(db, "SELECT * FROM instances LIMIT 5"),
                                  rows(db, "SELECT state, count(*) FROM outbox GROUP BY 1"),
                                  rows(db, "SELECT state, last_error FROM outbox WHERE state != 'delivered' LIMIT 3"))) from None
        assert daemon.stop() == 0

        (last_seq,) = rows(db, "SELECT seq FROM sqlite_sequence WHERE name = 'inbox'")[0]
        assert rows(db, "SELECT processed FROM inbox_cursor") == [(last_seq,)]
        seen = [m for (m,) in rows(db, "SELECT message_id FROM messages")]
        assert len(seen) == len(set(seen)) == last_seq  # every appended row processed once
        assert set(accepted) <= set(seen)
        if rows(db, "SELECT name FROM sqlite_master WHERE name = 'inbox_failed'"):
            assert rows(db, "SELECT count(*) FROM inbox_failed") == [(0,)]

        # reenter never: one entry, so one send, per user
        sends = rows(db, "SELECT user, count(*) FROM actions WHERE journey = 'Hello' AND kind = 'email' "
                         "GROUP BY user")
        assert sends and max(c for _, c in sends) == 1, [s for s in sends if s[1] > 1][:5]
        entered = {u for u, _ in sends}
        assert users <= entered
        # every timer fired once: everyone who entered is done, nobody is waiting
        assert rows(db, "SELECT count(*) FROM instances") == [(0,)]
        profiles = dict(rows(db, "SELECT user_id, state FROM profiles"))
        not_done = [u for u in entered if state_from_bytes(profiles[u]).traits.get("done") is not True]
        assert not not_done, not_done[:5]
        # the outbox: one entry per (action, connector)
        dup = rows(db, "SELECT action_id, connector, count(*) FROM outbox GROUP BY 1, 2 HAVING count(*) > 1")
        assert dup == []
        print(f"{ROUNDS} kills, {len(accepted)} accepted, {len(entered)} users entered, last seq {last_seq}")
    finally:
        if daemon is not None and daemon.proc.poll() is None:
            daemon.proc.kill()
            daemon.proc.wait()
        smtp.stop()
