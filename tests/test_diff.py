"""`journeys diff` on real revisions of a temporary git repository: static and outcome parts."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHOP = ROOT / "examples" / "shop"
SAMPLE = SHOP / "events" / "sample.jsonl"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def journeys(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture
def repo(tmp_path) -> Path:
    r = tmp_path / "repo"
    r.mkdir()
    git(r, "init", "-q")
    git(r, "config", "user.email", "t@example.com")
    git(r, "config", "user.name", "t")
    shutil.copytree(SHOP, r / "shop", ignore=shutil.ignore_patterns("events"))
    git(r, "add", "-A")
    git(r, "commit", "-qm", "base")
    return r


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def test_static_changes_per_journey_and_step(repo):
    j = repo / "shop" / "journeys"
    edit(j / "checkout_abandonment.journey", "  wait 20m", "  wait 30m")
    edit(j / "first_purchase.journey", "  wait 14d\n", "  wait 14d\n  send email \"welcome_thanks\"\n")
    edit(j / "browse_abandonment.journey", "reenter after 7d", "reenter after 3d")
    (j / "payment_failure.journey").unlink()
    (j / "new.journey").write_text('journey "Order thanks" {\n  entry when event "Order Completed" as order\n'
                                   '  send email "welcome_thanks"\n}\n')
    before = git(repo, "status", "--porcelain")
    r = journeys("diff", str(repo / "shop"), "--format", "json")
    assert r.returncode == 0, r.stderr
    assert git(repo, "status", "--porcelain") == before  # the working tree is never touched
    doc = {c["name"]: c for c in json.loads(r.stdout)["journeys"]}
    assert doc["Checkout abandonment"]["status"] == "changed"
    assert doc["Checkout abandonment"]["old_version"] != doc["Checkout abandonment"]["new_version"]
    (step,) = doc["Checkout abandonment"]["steps_changed"]
    assert step["path"] == "checkout_abandonment/1" and "wait 20m" in step["before"] and "wait 30m" in step["after"]
    fp = doc["First purchase"]
    # paths are positions: the new 4th step pushes the `if` to 5
    assert fp["steps_added"] == ["first_purchase/5", "first_purchase/5/then/1"]
    assert fp["steps_removed"] == ["first_purchase/4/then/1"]
    changed = {c["path"]: c for c in fp["steps_changed"]}
    assert changed["first_purchase/4"]["before"].startswith("if ")
    assert changed["first_purchase/4"]["after"].startswith('send email "welcome_thanks"')
    assert any(d["what"] == "reenter" for d in doc["Browse abandonment"]["declarations"])
    assert doc["Payment failure"]["status"] == "removed"
    assert doc["Order thanks"]["status"] == "added"
    assert doc["Homepage banner"]["status"] == "unchanged"


def test_outcomes_on_the_same_events_with_markdown_for_a_pull_request(repo):
    edit(repo / "shop" / "journeys" / "policy.journey", "cap email 2 per 1d", "cap email 1 per 1d")
    r = journeys("diff", str(repo / "shop"), "--events", str(SAMPLE), "--format", "json", "--sample", "3")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert all(c["status"] == "unchanged" for c in doc["journeys"])  # the policy is not part of versions
    changes = {(c["journey"], c["measure"]): (c["before"], c["after"]) for c in doc["outcome_changes"]}
    capped = changes[("Browse abandonment", "suppressed: cap")]
    assert capped[1] > capped[0]
    assert doc["outcomes"]["users_changed"] > 0 and len(doc["outcomes"]["sample"]) == 3
    first = doc["outcomes"]["sample"][0]
    assert first["before"] != first["after"]
    md = journeys("diff", str(repo / "shop"), "--events", str(SAMPLE), "--format", "markdown")
    assert md.returncode == 0
    assert md.stdout.startswith("### Journeys: changes against `HEAD`")
    assert "| journey | measure | before | after |" in md.stdout
    assert "| Browse abandonment | suppressed: cap |" in md.stdout


def test_against_an_older_revision(repo):
    edit(repo / "shop" / "journeys" / "checkout_abandonment.journey", "  wait 20m", "  wait 25m")
    git(repo, "commit", "-qam", "25m")
    r = journeys("diff", str(repo / "shop"), "--base", "HEAD~1")
    assert r.returncode == 0, r.stderr
    assert "wait 20m" in r.stdout and "wait 25m" in r.stdout
    same = journeys("diff", str(repo / "shop"))
    assert "Checkout abandonment: unchanged" in same.stdout


def test_usage_errors(repo, tmp_path):
    r = journeys("diff", str(repo / "shop"), "--base", "no-such-rev")
    assert r.returncode == 2 and "no-such-rev" in r.stderr and "Traceback" not in r.stderr
    plain = tmp_path / "plain"
    shutil.copytree(SHOP / "journeys", plain / "journeys")
    (plain / "journeys.toml").write_text((SHOP / "journeys.toml").read_text())
    r = journeys("diff", str(plain))
    assert r.returncode == 2 and "not in a git repository" in r.stderr
