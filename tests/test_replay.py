"""The dry-run's promise, checked end to end: the daemon fed a log through its HTTP API takes
exactly the actions `journeys simulate` reports for that log (`journeys replay`), and a real
daemon's inbox, unsubscribe clicks included, simulates to the actions the daemon took."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import islice
from pathlib import Path

import httpx
import pytest

from connectors.unsubscribe import sign
from engine.core.program import Program
from engine.daemon.replay import BATCH, SHOWN, ActionLog, canonical, compare, post_batch
from engine.daemon.replay import replay as replay_log
from engine.daemon.worker import inbox_position
from engine.dryrun.eventlog import open_logs
from engine.dryrun.simulate import dry_run_actions, load_program, simulate
from engine.runtime.sinks import Recorder
from journeys.checker import load_checked

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


def action(id: str, **changes) -> dict:
    return {"id": id, "time": "2026-03-02T10:00:00Z", "user": "u1", "journey": "J", "path": "j/1", "kind": "email",
            "target": "hi", "outcome": "sent", **changes}


def log_of(*actions: dict) -> list:
    """An action log as `compare` reads one: (id, canonical JSON), in id order."""
    return sorted(canonical(a) for a in actions)


def test_a_difference_is_reported_action_by_action():
    a, b = action("a1"), action("a2")
    moved = dict(a, time="2026-03-02T10:00:01Z")
    run = compare(log_of(moved, b), log_of(a, b))
    assert not run.identical
    assert run.missing == [a] and run.extra == [moved]
    assert (run.missing_count, run.extra_count, run.daemon, run.dry_run) == (1, 1, 2, 2)
    assert compare(log_of(a, b), log_of(b, a)).identical


def test_differences_past_the_bound_are_counted_not_kept():
    """The report of a long log that disagrees much must not hold every action that differs:
    the first SHOWN of each side by id in full, the others only counted."""
    shared = [action(f"s{i:03}") for i in range(50)]
    dry_run_only = [action(f"d{i:03}") for i in range(SHOWN + 15)]
    daemon_only = [action(f"e{i:03}") for i in range(3)]
    changed = [action(f"s{i:03}", outcome="suppressed") for i in range(0, 50, 10)]  # 5 of the shared ones
    daemon = log_of(*[changed[i // 10] if i % 10 == 0 else a for i, a in enumerate(shared)], *daemon_only)
    run = compare(daemon, log_of(*shared, *dry_run_only), shown=SHOWN)
    assert (run.daemon, run.dry_run) == (53, 50 + SHOWN + 15)
    assert run.missing_count == SHOWN + 15 + 5 and run.extra_count == 3 + 5
    assert [a["id"] for a in run.missing] == sorted([f"d{i:03}" for i in range(SHOWN + 15)] +
                                                    [f"s{i:03}" for i in range(0, 50, 10)])[:SHOWN]
    assert [a["id"] for a in run.extra] == ["e000", "e001", "e002", "s000", "s010", "s020", "s030", "s040"]
    assert run.extra[3]["outcome"] == "suppressed"


def test_a_log_out_of_id_order_is_refused_rather_than_misreported():
    a, b = action("a1"), action("a2")
    with pytest.raises(ValueError, match="out of id order: a1 after a2"):
        compare([canonical(b), canonical(a)], log_of(a, b))


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


def test_the_log_goes_out_as_it_is_read_never_held(tmp_path):
    """`replay` takes the messages from an iterable one batch at a time: when the first message of
    each batch is taken, every earlier batch is already in the daemon's inbox (committed, answered),
    and none after it. A replay that materialised the log first would find the inbox empty."""
    loaded, compiled = load_checked(SHOP)
    store = str(tmp_path / "replay.db")
    seen = []  # (messages taken, rows in the daemon's inbox then) at each batch's first message

    def messages(log):
        for i, message in enumerate(islice(log, 5 * BATCH)):
            if i % BATCH == 0 and i:
                seen.append((i, inbox_position(store)[0]))
            yield message

    with open_logs([SHOP / "events" / "sample.jsonl"]) as log:
        run = replay_log(Path(loaded.root), loaded.config, Program.build(compiled), messages(log), store)
    assert run.events == 5 * BATCH and run.actions > 0
    assert seen == [(i, i) for i in range(BATCH, 5 * BATCH, BATCH)]


def test_the_dry_runs_actions_on_disk_are_its_stores_action_log(tmp_path):
    """The dry-run's side of the comparison, kept by `ActionLog` (a sink, on disk), is the action log
    its store keeps (`dry_run_actions`, the store holding every action): the same actions, by id,
    the later of an id replacing the earlier."""
    log_path = tmp_path / "gen.jsonl"
    subprocess.run([sys.executable, "-m", "engine.cli", "generate", "--events", "3000", "--users", "300",
                    "--days", "10", "--seed", "7", "-o", str(log_path), "-q"], cwd=ROOT, check=True, timeout=120)
    recorder = Recorder()
    with open_logs([log_path]) as log, ActionLog(tmp_path / "dry-run.db") as kept:
        simulate(load_program(SHOP), log, sinks=[kept, recorder])
        on_disk = list(kept.actions())
        in_memory = [canonical(a) for a in dry_run_actions(load_program(SHOP), list(log), None)]
    assert on_disk == in_memory and len(on_disk) > 100
    emitted = [a.id for a in recorder.actions]
    assert len(emitted) > len(set(emitted))  # some id came twice (a deferred send released): the later one kept


def test_a_batch_the_inbox_could_not_store_is_sent_again(tmp_path):
    """A 503 (the daemon's inbox locked longer than the ingest waits: the replay's worker trains the
    models inside its transaction) is not the end of the replay: the batch goes again after the
    Retry-After, as Segment's libraries send it. Any other refusal stops it, naming the events."""
    answers = [503, 503, 200, 400]
    bodies = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
            status = answers.pop(0)
            self.send_response(status)
            self.send_header("Retry-After", "0")
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = "http://%s:%d/v1/batch" % server.server_address
    try:
        with httpx.Client(timeout=10) as client:
            post_batch(client, url, b'{"batch":[1]}', "events 1-1", timeout=60)
            assert bodies == [b'{"batch":[1]}'] * 3
            with pytest.raises(RuntimeError, match="the daemon refused events 2-2: 400"):
                post_batch(client, url, b'{"batch":[2]}', "events 2-2", timeout=60)
    finally:
        server.shutdown()
        server.server_close()
