"""The command line as a user runs it: a real process, real exit codes, real output."""

from __future__ import annotations

import json
import subprocess
import sys

from .conftest import SHOP


def journeys(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


BROKEN = 'journey "A" {\n  entry when event "Product Viewed" as viewed\n  sned email "welcome"\n  wait 20\n}\n'
WARNED = 'journey "A" {\n  entry when event "Product Viewed"\n  exit\n  send email "welcome"\n}\n'


def test_check_shop_is_clean():
    r = journeys("check", str(SHOP))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 errors" in r.stdout


def test_check_reports_errors_rust_style_and_exits_1(make_project):
    root = make_project({"a.journey": BROKEN})
    r = journeys("check", ".", cwd=root)
    assert r.returncode == 1
    assert r.stdout.startswith("error[J003]: unknown word `sned`\n --> journeys/a.journey:3:3\n")
    assert "3 |   sned email \"welcome\"\n  |   ^^^^\n  = help: did you mean `send`?" in r.stdout
    assert "error[J031]" in r.stdout  # the second problem is reported too
    assert "2 errors, 0 warnings" in r.stdout
    assert "Traceback" not in r.stdout + r.stderr


def test_warnings_alone_exit_0(make_project):
    root = make_project({"a.journey": WARNED})
    r = journeys("check", ".", cwd=root)
    assert r.returncode == 0, r.stdout
    assert "warning[J051]" in r.stdout and "0 errors, 1 warning" in r.stdout


def test_json_format_one_object_per_diagnostic(make_project):
    root = make_project({"a.journey": BROKEN})
    r = journeys("check", ".", "--format", "json", cwd=root)
    assert r.returncode == 1
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert rows[0] == {
        "path": "journeys/a.journey", "line": 3, "column": 3, "end_line": 3, "end_column": 7,
        "code": "J003", "severity": "error", "message": "unknown word `sned`", "help": "did you mean `send`?",
    }
    assert [row["code"] for row in rows] == ["J003", "J031"]


def test_check_a_single_file_uses_its_project(make_project):
    root = make_project({"a.journey": 'journey "A" {\n  entry when event "X"\n  add user to audience "hot_browsers"\n}\n'})
    r = journeys("check", "journeys/a.journey", cwd=root)
    assert r.returncode == 0, r.stdout  # the audience is found in the project's journeys.toml


def test_usage_errors_exit_2(tmp_path):
    r = journeys("check", str(tmp_path / "missing"))
    assert r.returncode == 2 and "no such file or directory" in r.stderr
    r = journeys("check", str(tmp_path), "--format", "yaml")
    assert r.returncode == 2
    r = journeys("explain", "J999")
    assert r.returncode == 2 and "unknown code" in r.stderr


def test_explain_prints_the_long_explanation():
    r = journeys("explain", "j030")
    assert r.returncode == 0
    assert r.stdout.startswith("J030: split does not sum to 100 %")
    assert "10% control" in r.stdout


def test_graph_mermaid_shows_every_step_path():
    r = journeys("graph", "Browse abandonment", str(SHOP))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("flowchart TD\n")
    for path in ("browse_abandonment/1", "browse_abandonment/1/event/1", "browse_abandonment/1/timeout/1"):
        assert path in r.stdout
    assert '-->|"timeout"|' in r.stdout


def test_graph_dot_by_slug():
    r = journeys("graph", "first_purchase", str(SHOP), "--format", "dot")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith('digraph "first_purchase" {')
    assert "first_purchase/1/discount/1" in r.stdout and 'label="control 10%"' in r.stdout


def test_graph_unknown_journey_is_a_usage_error():
    r = journeys("graph", "Browse abandonmnet", str(SHOP))
    assert r.returncode == 2
    assert 'did you mean "Browse abandonment"?' in r.stderr


def test_graph_refuses_a_project_with_errors(make_project):
    root = make_project({"a.journey": BROKEN})
    r = journeys("graph", "A", ".", cwd=root)
    assert r.returncode == 1 and "error[J003]" in r.stderr


def test_a_lone_surrogate_escape_is_reported_not_a_traceback(tmp_path):
    """Found by benchmarks/chaos.py's journey-file fuzz: a diagnostic quoting `"w\\ud800"` crashed
    the terminal's (and --format json's) UTF-8 encoder with a traceback."""
    (tmp_path / "journeys.toml").write_text('[project]\nname = "s"\n')
    (tmp_path / "journeys").mkdir()
    (tmp_path / "journeys" / "a.journey").write_text(
        'journey "A" {\n  entry when event "X"\n  send email "w\\ud800"\n}\n')
    for extra in ((), ("--format", "json")):
        r = journeys("check", str(tmp_path), *extra)
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
        assert "w\\ud800" in r.stdout  # shown as the escape it was written with
