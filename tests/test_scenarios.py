"""`journeys test`: scenarios run through the engine; every kind of expectation can pass and fail."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from engine.core.program import Program
from engine.dryrun.scenarios import run_scenario
from journeys.checker import load_checked

from .engine_helpers import compile_source

ROOT = Path(__file__).resolve().parent.parent
SHOP = ROOT / "examples" / "shop"

JOURNEYS = '''
policy { timezone "UTC"  quiet hours 21:00-08:00 user time  cap email 1 per 1d }
journey "Browse" {
  entry when event "Product Viewed" as viewed
  exit when event "Order Completed"
  wait 1h
  send email "nudge"
  add user to audience "hot"
  set user.last_category = viewed.category
  wait 1d
}
journey "Pay" {
  entry when event "Payment Failed"
  send email "help"
}
'''


def project(tmp_path: Path, scenarios: str) -> tuple[Program, list]:
    root = tmp_path / "p"
    compile_source(root, JOURNEYS)  # journeys.toml, the templates the sends name, the journeys
    (root / "tests").mkdir()
    (root / "tests" / "main.test").write_text(scenarios)
    proj, compiled = load_checked(root)
    return Program.build(compiled), [(f.path, s) for f in proj.test_files for s in f.items]


def outcomes(tmp_path, scenarios):
    program, found = project(tmp_path, scenarios)
    return [run_scenario(program, s, path) for path, s in found]


PASSING = '''
test "everything as it happens" {
  user "u1" { timezone: "UTC" }
  at 2026-03-02 10:00 event "Product Viewed" user "u1" { category: "home" }
  expect email "nudge" to "u1" at 2026-03-02 11:00
  expect email "nudge" to "u1" at 2026-03-02 11:02 within 5m
  expect no push to "u1"
  expect user "u1" in journey "Browse" at 2026-03-02 10:30
  expect user "u1" in audience "hot" at 2026-03-02 11:00
  expect user "u1" not in journey "Browse"
  expect user "u1" has last_category == "home" at 2026-03-02 11:00
  expect user "u1" has last_category != null
}

test "quiet hours, caps and exits" {
  at 2026-03-02 20:30 event "Product Viewed" user "u2" { category: "home" }
  expect email "nudge" to "u2" suppressed by quiet hours at 2026-03-02 21:30
  expect email "nudge" to "u2" at 2026-03-03 08:00
  at 2026-03-03 09:00 event "Payment Failed" user "u2"
  expect email "help" to "u2" suppressed by cap at 2026-03-03 09:00
  at 2026-03-04 20:30 event "Product Viewed" user "u3" { category: "garden" }
  at 2026-03-04 23:00 event "Order Completed" user "u3"
  expect email "nudge" to "u3" suppressed by exit
  expect no email "nudge" to "u3" at 2026-03-05 08:00
}
'''


def test_expectations_that_hold_pass(tmp_path):
    results = outcomes(tmp_path, PASSING)
    assert [(o.name, o.failures) for o in results] == [("everything as it happens", []),
                                                       ("quiet hours, caps and exits", [])]


@pytest.mark.parametrize("expectation, says", [
    ('expect email "nudge" to "u1" at 2026-03-02 10:30', 'actually: email "nudge" sent at 2026-03-02T11:00:00Z'),
    ('expect email "nudge" to "u1" at 2026-03-02 11:10 within 5m', "expected email \"nudge\" to \"u1\" at"),
    ('expect no email to "u1"', 'expected no email to "u1"; actually: email "nudge" sent'),
    ('expect email "help" to "u1"', 'no email "help" for "u1" at all'),
    ('expect email "nudge" to "u1" suppressed by cap', 'actually: email "nudge" sent'),
    ('expect user "u1" in journey "Browse" at 2026-03-03 12:00', "actually not in it"),
    ('expect user "u1" not in journey "Browse" at 2026-03-02 10:30', "actually in it, at step browse/1"),
    ('expect user "u1" not in audience "hot"', 'not in audience "hot" at the end; actually in it'),
    ('expect user "u1" has last_category == "garden"', "actually last_category is 'home'"),
    ('expect user "u1" has last_category == "home" at 2026-03-02 10:59', "actually last_category is None"),
])
def test_every_expectation_can_fail_and_says_what_happened(tmp_path, expectation, says):
    (result,) = outcomes(tmp_path, f'''
test "one" {{
  at 2026-03-02 10:00 event "Product Viewed" user "u1" {{ category: "home" }}
  {expectation}
}}
''')
    assert not result.passed
    (failure,) = result.failures
    assert failure.startswith("line 4: ")
    assert says in failure
    assert any("Browse #1  entered" in line for line in result.traces["u1"])


def test_the_shop_scenarios_pass_from_the_command_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "engine.cli", "test", str(SHOP), "--junit", str(tmp_path / "j.xml")],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip().splitlines()[-1].startswith("36 passed, 0 failed")
    suite = ET.parse(tmp_path / "j.xml").getroot()
    assert suite.get("tests") == "36" and suite.get("failures") == "0"


def test_a_failing_scenario_fails_the_command_with_a_trace_and_junit(tmp_path):
    program, found = project(tmp_path, PASSING + '''
test "wrong" {
  at 2026-03-02 10:00 event "Product Viewed" user "u9" { category: "home" }
  expect email "nudge" to "u9" at 2026-03-02 10:30
}
''')
    root = tmp_path / "p"
    r = subprocess.run([sys.executable, "-m", "engine.cli", "test", str(root), "--junit", str(tmp_path / "j.xml")],
                       capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 1
    assert "wrong FAILED" in r.stdout and "everything as it happens PASSED" in r.stdout
    assert "trace of u9:" in r.stdout and 'email "nudge" sent' in r.stdout
    assert r.stdout.strip().splitlines()[-1].startswith("2 passed, 1 failed")
    suite = ET.parse(tmp_path / "j.xml").getroot()
    assert suite.get("failures") == "1"
    (failure,) = suite.iter("failure")
    assert "expected email" in failure.get("message")
