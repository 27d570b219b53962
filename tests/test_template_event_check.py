"""`journeys check` warns where a template reads an event some path cannot provide (J062), and the
dry-run renders every message it sends, reporting one that would fail in the daemon as failed
(issue 17, point 1)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import orjson

from journeys.checker import check_project
from journeys.project import load_project

from .engine_helpers import CONFIG

ROOT = Path(__file__).resolve().parent.parent
FRONT = "---\nsubject: Hi\nfrom: shop@example.com\n---\n"


def _project(root: Path, journey: str, body: str) -> Path:
    (root / "journeys").mkdir(parents=True)
    (root / "templates" / "email").mkdir(parents=True)
    (root / "journeys.toml").write_text(CONFIG)
    (root / "journeys" / "main.journey").write_text(textwrap.dedent(journey))
    (root / "templates" / "email" / "note.j2").write_text(FRONT + body)
    return root


def _j062(root: Path) -> list[str]:
    return [d.message for d in check_project(load_project(root)) if d.code == "J062"]


AFTER_A_WAIT = '''
    journey "Browse" {
      entry when event "Product Viewed"
      wait 1h
      send email "note"
    }
'''


def test_current_event_after_a_wait_is_warned_but_event_is_not(tmp_path):
    [warning] = _j062(_project(tmp_path / "a", AFTER_A_WAIT, "{{ current_event.name }}"))
    assert warning == ("template `note` reads `current_event`, which this send may not have: the step runs "
                       "after `wait` (line 4), a timer")
    assert _j062(_project(tmp_path / "b", AFTER_A_WAIT, "{{ event.name }}")) == []  # the starting event, kept
    guarded = "{% if current_event %}{{ current_event.name }}{% endif %} {{ current_event.name | default('x') }}"
    assert _j062(_project(tmp_path / "c", AFTER_A_WAIT, guarded)) == []


def test_event_in_a_scheduled_or_segment_journey_is_warned(tmp_path):
    scheduled = '''
        journey "Monday" {
          entry every monday at 10:00
          send email "note"
        }
    '''
    [warning] = _j062(_project(tmp_path / "a", scheduled, "{{ event.name }}"))
    assert warning.endswith("the journey starts on a schedule, with no event")
    segment = '''
        segment "vips" = user.vip == true
        journey "VIP" {
          entry when user enters segment "vips"
          send email "note"
        }
    '''
    [warning] = _j062(_project(tmp_path / "b", segment, "{{ event.name }}"))
    assert warning.endswith("a profile update, not an event, can make the user join the entry segment")


def test_wait_for_outcomes_and_on_exit(tmp_path):
    journey = '''
        journey "Checkout" {
          entry when event "Checkout Started"
          exit when event "Order Completed"
          on exit { send email "note" }
          wait for event "Payment Info Entered" up to 1h {
            on event   { send email "note" }
            on timeout { send email "note" }
          }
          send email "note"
        }
    '''
    warnings = _j062(_project(tmp_path, journey, "{{ current_event.card }}"))
    assert [w.split(": ", 1)[1] for w in warnings] == [
        "a run can end after a timer, with no event",  # on exit
        "the step can run after the timeout of `wait for` (line 6), a timer",  # on timeout
        "the step can run after the timeout of `wait for` (line 6), a timer",  # after the wait, either way
    ]  # the on event block has it


def test_the_dry_run_reports_a_message_that_would_fail_to_render_as_failed(tmp_path):
    root = _project(tmp_path, AFTER_A_WAIT, "You looked at {{ current_event.name }}")
    log = tmp_path / "events.jsonl"
    log.write_bytes(b"".join(orjson.dumps(m) + b"\n" for m in [
        {"type": "identify", "userId": "u1", "traits": {"email": "u1@example.com"}, "timestamp": "2026-03-02T09:00:00Z"},
        {"type": "track", "userId": "u1", "event": "Product Viewed", "properties": {"name": "Lamp"},
         "timestamp": "2026-03-02T10:00:00Z"},
        {"type": "track", "userId": "u2", "event": "Product Viewed", "timestamp": "2026-03-02T10:00:00Z"},
        {"type": "track", "userId": "u1", "event": "Page Viewed", "timestamp": "2026-03-02T12:00:00Z"},
    ]))
    r = subprocess.run([sys.executable, "-m", "engine.cli", "simulate", str(root), "--events", str(log), "--sends",
                        str(tmp_path / "sends.jsonl"), "--json", str(tmp_path / "report.json"), "--html",
                        str(tmp_path / "report.html"), "--quiet"],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    sends = {a["user"]: a for a in map(orjson.loads, (tmp_path / "sends.jsonl").read_bytes().splitlines())}
    assert sends["u1"]["outcome"] == "failed" and "current_event" in sends["u1"]["reason"]
    assert sends["u2"]["outcome"] == "failed" and sends["u2"]["reason"] == "the user has no `email` in their profile"
    report = orjson.loads((tmp_path / "report.json").read_bytes())["journeys"]["Browse"]
    assert report["sent"] == {} and sum(report["failed"].values()) == 2
    assert report["failed"]['email "note": the user has no `email` in their profile'] == 1
    page = (tmp_path / "report.html").read_text()
    assert '<div class="card"><b>2</b><span>failed</span></div>' in page  # the journey's cards
