"""The dry-run's promise, checked end to end: the daemon fed a log through its HTTP API takes
exactly the actions `journeys simulate` reports for that log (`journeys replay`), and a real
daemon's inbox, unsubscribe clicks included, simulates to the actions the daemon took."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from datetime import datetime, timedelta, timezone

import httpx

from connectors.unsubscribe import sign
from engine.daemon.replay import Replay, compare

from .conftest import ROOT, SHOP
from .test_daemon import UNSUBSCRIBE_SECRET, Daemon, eventually, rows, tiny_project
from .test_smtp import Server


def replay(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", "replay", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


def test_the_daemon_takes_the_dry_runs_actions_on_the_shop_log(tmp_path):
    sends = tmp_path / "daemon.jsonl"
    out = replay(str(SHOP), "-e", str(SHOP / "events" / "sample.jsonl"), "--sends", str(sends))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "identical" in out.stdout
    actions = [json.loads(line) for line in sends.read_text().splitlines()]
    assert len(actions) > 1000  # a log that exercises the journeys, not an empty agreement
    kinds = {a["kind"] for a in actions}
    outcomes = {a["outcome"] for a in actions}
    assert {"email", "push", "audience_add", "webhook"} <= kinds, kinds
    assert {"sent", "suppressed"} <= outcomes, outcomes


def test_a_generated_log_with_stitching_and_timers_past_the_last_event(tmp_path):
    log = tmp_path / "gen.jsonl"
    subprocess.run([sys.executable, "-m", "engine.cli", "generate", "--events", "6000", "--users", "600",
                    "--days", "10", "--seed", "5", "-o", str(log), "-q"], cwd=ROOT, check=True, timeout=120)
    assert any('"alias"' in line or '"anonymousId"' in line for line in log.read_text().splitlines())
    out = replay(str(SHOP), "-e", str(log), "--until", "2026-03-20T00:00:00Z")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "identical" in out.stdout


def test_a_difference_is_reported_action_by_action():
    a = {"id": "a1", "time": "2026-03-02T10:00:00Z", "user": "u1", "journey": "J", "path": "j/1", "kind": "email",
         "target": "hi", "outcome": "sent"}
    b = dict(a, id="a2")
    moved = dict(a, time="2026-03-02T10:00:01Z")
    run = compare(Replay(2, [moved, b]), [a, b])
    assert not run.identical
    assert run.missing == [a] and run.extra == [moved]
    assert compare(Replay(2, [a, b]), [b, a]).identical


def test_an_unsubscribe_link_is_in_the_daemons_inbox_so_the_dry_run_of_it_suppresses_the_same(tmp_path):
    """The daemon's inbox is the log of everything it was told: run through `journeys simulate`, it
    must decide what the daemon decided. An opt-out by the unsubscribe link (clicked twice: one
    opt-out) is part of what the daemon was told, so the dry-run of its inbox suppresses the later
    email for consent too, instead of sending it."""
    smtp = Server().start()
    project = tiny_project(tmp_path / "tiny", smtp.port)
    d = None
    try:
        d = Daemon(project, None, tmp_path / "daemon.log")
        db = project / "data" / "tiny.db"
        with sqlite3.connect(db, timeout=30) as c:  # keep what the housekeeping deletes (every 30 s), however slow the machine
            c.execute("CREATE TABLE kept (seq INTEGER PRIMARY KEY, raw BLOB NOT NULL)")
            c.execute("CREATE TRIGGER keep AFTER DELETE ON inbox BEGIN INSERT INTO kept VALUES (old.seq, old.raw); END")
        for uid in ("u1", "u2"):
            assert d.post("identify", {"userId": uid, "traits": {"email": f"{uid}@example.com"}}).status_code == 200
        link = f"{d.url}/u/{sign('u1', 'email', UNSUBSCRIBE_SECRET)}"
        for _ in range(2):
            done = httpx.post(link, data={"List-Unsubscribe": "One-Click"}, timeout=10)
            assert done.status_code == 200 and "You are unsubscribed" in done.text, done.text
        for uid in ("u1", "u2"):
            assert d.post("track", {"userId": uid, "event": "Signed Up"}).status_code == 200

        def decided():
            return rows(db, "SELECT id, user, journey, path, kind, outcome, reason FROM actions ORDER BY user")
        daemon = eventually(lambda: len(decided()) == 2 and decided(), timeout=10)
        assert [a[1:] for a in daemon] == [("u1", "Hello", daemon[0][3], "email", "suppressed", "consent"),
                                           ("u2", "Hello", daemon[1][3], "email", "sent", None)], daemon
        eventually(lambda: [m[1] for m in smtp.handler.messages] == [["u2@example.com"]], timeout=10)
        inbox = rows(db, "SELECT seq, raw FROM inbox UNION ALL SELECT seq, raw FROM kept ORDER BY seq")
        assert [seq for seq, _ in inbox] == list(range(1, len(inbox) + 1))  # all it was told, pruned or not
        assert d.stop() == 0
    finally:
        if d is not None and d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()
        smtp.stop()

    log = tmp_path / "inbox.jsonl"
    log.write_bytes(b"".join(bytes(raw) + b"\n" for _, raw in inbox))
    sends = tmp_path / "dry-run.jsonl"
    until = (datetime.now(timezone.utc) + timedelta(minutes=1)).isoformat()  # past the journey's 2 s wait
    out = subprocess.run([sys.executable, "-m", "engine.cli", "simulate", str(project), "-e", str(log),
                          "--until", until, "--sends", str(sends), "-q"], cwd=ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    dry_run = sorted((a["id"], a["user"], a["journey"], a["path"], a["kind"], a["outcome"], a["reason"])
                     for a in map(json.loads, sends.read_text().splitlines()))
    assert dry_run == sorted(daemon)
