"""One journey the engine cannot run never costs the others an event (issue 18, point 3).

- The checker refuses every value the engine cannot hold (J063): a duration, window, timeout,
  goal deadline or reenter delay over 100 years, a whole number beyond 64 bits, one too long for
  Python to read; no traceback, no "internal error".
- A hot reload of such a file keeps the last good program.
- At run time, a journey's step that fails for a user (here a computed trait too large to store)
  parks that run, recorded against the journey and the user (trace, report, metrics, log); every
  other journey still sees the event, and the daemon sets nothing aside.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from engine.core.program import Program
from engine.runtime.clock import VirtualClock
from engine.runtime.loop import Engine, handle_all
from engine.runtime.sinks import Recorder
from engine.store.sqlite_store import SqliteStore
from journeys.checker import check_and_compile, check_project
from journeys.project import load_project

from .engine_helpers import CONFIG, message, t

ROOT = Path(__file__).resolve().parent.parent
EMAIL = "---\nsubject: Hi\nfrom: shop@example.com\n---\nThanks {{ user.id }}\n"

TWO = '''
    journey "Score" {
      entry when event "Order Completed" as order
      set user.score = order.revenue * 10000000000 * 10000000000
    }

    journey "Thanks" {
      entry when event "Order Completed"
      send email "thanks"
    }
'''


def project(root: Path, source: str) -> Path:
    (root / "journeys").mkdir(parents=True, exist_ok=True)
    (root / "templates" / "email").mkdir(parents=True, exist_ok=True)
    (root / "journeys.toml").write_text(CONFIG)
    (root / "templates" / "email" / "thanks.j2").write_text(EMAIL)
    (root / "journeys" / "main.journey").write_text(textwrap.dedent(source))
    return root


def errors(root: Path) -> list[str]:
    return [f"{d.code} {d.span.line}:{d.span.col}" for d in check_project(load_project(root)) if d.is_error]


@pytest.mark.parametrize("statement, where", [
    ("wait 3000000d", "3:8"),
    ("wait for event \"Y\" up to 99999999999999d { on event { exit } }", "3:28"),
    ("reenter after 99999999999999999999w", "3:17"),
    ("goal \"g\" = event \"Y\" within 9999999999999d", "3:31"),
    ("if happened(event \"Y\", last 99999999999999999999d) { exit }", "3:31"),
    ("set user.x = 99999999999999999999", "3:16"),
    ("set user.x = " + "9" * 5000, "3:16"),
])
def test_values_the_engine_cannot_hold_are_refused_by_the_check(tmp_path, statement, where):
    root = project(tmp_path, f'journey "A" {{\n  entry when event "X"\n  {statement}\n}}\n')
    assert errors(root) == [f"J063 {where}"]


def test_a_window_in_a_segment_is_refused_without_a_traceback(tmp_path):
    root = project(tmp_path, '''
        segment "s" = happened(event "X", last 99999999999999999999d)
        journey "A" {
          entry when event "X"
          if user in segment "s" { exit }
        }
    ''')
    r = subprocess.run([sys.executable, "-m", "engine.cli", "check", str(root)], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr + r.stdout
    assert "error[J063]" in r.stdout and "J000" not in r.stdout


def test_a_reload_keeps_the_last_good_program(tmp_path):
    from engine.daemon.reload import Reloader

    root = project(tmp_path, TWO.replace("* 10000000000 * 10000000000", ""))
    _, compiled = check_and_compile(load_project(root))
    old = Program.build(compiled)
    (root / "journeys" / "main.journey").write_text('journey "A" {\n  entry when event "X"\n  wait 3000000d\n}\n')
    reloader = Reloader(root, poll=0)
    assert reloader.reload(old) is None
    assert [e.split(" ", 2)[1] for e in reloader.errors] == ["J063"]


def test_a_journey_that_cannot_run_is_parked_and_the_others_still_see_the_event(tmp_path):
    root = project(tmp_path, TWO)
    _, compiled = check_and_compile(load_project(root))
    store, recorder = SqliteStore(str(tmp_path / "store.db")), Recorder()
    engine = Engine(Program.build(compiled), store, VirtualClock(t("2026-03-02 09:00")), recorder)
    handle_all(engine, [message(("2026-03-02 09:00", "u1", "identify", {"email": "u1@example.com"}), 0),
                        message(("2026-03-02 10:00", "u1", "Order Completed", {"revenue": 1000}), 1),
                        message(("2026-03-02 11:00", "u2", "Order Completed", {"revenue": 0.5}), 2)], None)
    parked = [e for e in recorder.effects if getattr(e, "kind", None) == "parked"]
    assert [(e.user, e.journey) for e in parked] == [("u1", "Score")]
    assert "does not fit in 64 bits" in parked[0].detail
    assert sorted((a.user, a.target, a.outcome) for a in recorder.actions) == [
        ("u1", "thanks", "sent"), ("u2", "thanks", "sent")]
    state = store.load("u1")  # saved: nothing of the parked run's step is in it
    assert "score" not in state.traits and state.instances["Score"].wait == "parked"
    assert store.load("u2").traits["score"] == 5e19  # a float holds it: u2's run went on
    store.close()


def test_the_daemon_sets_nothing_aside_and_counts_the_parked_run(tmp_path, caplog):
    from engine.core.messages import parse_message
    from engine.daemon.metrics import render_metrics
    from engine.daemon.worker import Worker
    from engine.store.inbox import Inbox, message_to_json
    from engine.store.serialize import utc_text

    from .test_daemon import eventually, rows

    root = project(tmp_path / "p", TWO)
    _, compiled = check_and_compile(load_project(root))
    path = str(tmp_path / "store.db")
    inbox = Inbox.open(path)
    calls = [{"type": "track", "userId": "u1", "messageId": "m1", "event": "Order Completed",
              "properties": {"revenue": 1000}, "timestamp": "2026-03-02T10:00:00Z"}]
    inbox.append_rows([(utc_text(t("2026-03-02 10:00")), message_to_json(parse_message(c))) for c in calls])
    inbox.close()
    config = load_project(root).config
    worker = Worker(root, config, Program.build(compiled), path, environ={}, deliver=False)
    worker.start()
    try:
        eventually(lambda: worker.counts.snapshot().get("inbox.processed") == 1, timeout=30)
        assert rows(Path(path), "SELECT count(*) FROM inbox_failed") == [(0,)]
        assert rows(Path(path), "SELECT journey, target FROM actions") == [("Thanks", "thanks")]
        assert worker.counts.snapshot().get("parked.Score") == 1
        assert 'journeys_runs_parked_total{journey="Score"} 1' in render_metrics(worker, None)
    finally:
        worker.stop()
    parked = [r.getMessage() for r in caplog.records if "parked" in r.getMessage()]
    assert parked and all("journey 'Score' parked a user's run" in m and "u1" not in m for m in parked)


def test_a_timezone_too_long_for_a_file_name_is_no_zone(make):
    """Found by benchmarks/chaos.py's HTTP fuzz: a `timezone` trait or `context.timezone` of a few
    hundred characters made zoneinfo raise OSError (file name too long): the message was set aside."""
    h = make('''
        journey "Hello" {
          entry when event "Signed Up"
          wait until 10:00
          send email "hello"
        }
    ''')
    long_name = "a" * 300
    h.feed([("2026-03-02 09:00", "u1", "identify", {"timezone": long_name, "email": "u1@example.com"}),
            ("2026-03-02 09:30", "u2", "Signed Up", {}, {"messageId": "m2", "timezone": long_name}),
            ("2026-03-02 09:30", "u1", "Signed Up", {})], until="2026-03-03 00:00")
    assert sorted(a.user for a in h.sent()) == ["u1", "u2"]  # UTC for both: the policy's zone
    assert all(a.time == t("2026-03-02 10:00") for a in h.sent())
