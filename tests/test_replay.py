"""The dry-run's promise, checked end to end: the daemon fed a log through its HTTP API takes
exactly the actions `journeys simulate` reports for that log (`journeys replay`)."""

from __future__ import annotations

import json
import subprocess
import sys

from engine.daemon.replay import Replay, compare

from .conftest import ROOT, SHOP


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
