"""`journeys simulate` end to end, as a user runs it: a real process on the shop and its sample log."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHOP = ROOT / "examples" / "shop"
SAMPLE = SHOP / "events" / "sample.jsonl"


def journeys(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def shop_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("shop")
    r = journeys("simulate", str(SHOP), "--events", str(SAMPLE), "--json", str(out / "report.json"),
                 "--sends", str(out / "sends.jsonl"))
    assert r.returncode == 0, r.stderr
    return r, out


def test_the_sample_log_exercises_every_shop_journey(shop_run):
    r, out = shop_run
    report = json.loads((out / "report.json").read_text())
    names = {"Browse abandonment", "Checkout abandonment", "Monday picks", "Retarget by engagement",
             "First purchase", "Payment failure", "Homepage banner", "Churn win-back"}
    assert set(report["journeys"]) == names
    for name, j in report["journeys"].items():
        assert j["entered"] > 0, name
    assert report["parameters"]["skipped"] == 0
    fp = report["journeys"]["First purchase"]["splits"]["first_purchase/1"]
    assert set(fp) == {"discount", "thanks", "control"}
    assert "uplift" in fp["discount"] and "uplift" not in fp["control"]
    for name in names:  # the table names every journey
        assert name in r.stdout



def summary_table(stdout: str, title: str) -> list[dict[str, str]]:
    """The rows of one of the summary's tables as the terminal shows them, by column header (a
    header rich wrapped over two lines is joined again)."""
    lines = stdout.splitlines()
    top = lines.index(title) + 1
    head_end = next(i for i in range(top, len(lines)) if lines[i].startswith("┡"))
    columns: list[list[str]] = []
    for line in lines[top + 1:head_end]:
        cells = [c.strip() for c in line.strip("┃").split("┃")]
        columns = columns or [[] for _ in cells]
        for column, cell in zip(columns, cells):
            column.append(cell)
    names = [" ".join(part for part in column if part) for column in columns]
    rows = []
    for line in lines[head_end + 1:]:
        if line.startswith("└"):
            break
        rows.append(dict(zip(names, (c.strip() for c in line.strip("│").split("│")))))
    return rows


def test_audience_updates_are_reported_apart_from_sends(shop_run):
    """Adding users to ad audiences and removing them is not sending them anything: the report
    counts those actions as audience updates, in the JSON, per step and per day, and the summary
    shows them in a column of their own beside "sent"."""
    r, out = shop_run
    report = json.loads((out / "report.json").read_text())
    audience = {"audience_add", "audience_remove"}
    for name, j in report["journeys"].items():
        assert not audience & set(j["sent"]), name
        assert set(j["audience_updates"]) <= audience, name
        assert sum(j["audience_updates"].values()) == sum(
            n for key, n in j["templates"].items() if key.split()[0] in audience), name
    retarget, picks = report["journeys"]["Retarget by engagement"], report["journeys"]["Monday picks"]
    updates = sum(retarget["audience_updates"].values())
    assert retarget["sent"] == {} and updates > 1000  # the journey only syncs audiences
    hot = retarget["actions_by_step"]["retarget_by_engagement/1/then/1"]
    assert hot["updated"] == retarget["templates"]["audience_add hot_browsers"] and "sent" not in hot
    assert picks["audience_updates"] == {} and picks["sent"]["email"] > 0
    assert all(not audience & set(kinds) for kinds in report["sends_per_day"].values())
    per_day = report["audience_updates_per_day"]
    assert list(per_day) == sorted(per_day) and sum(sum(k.values()) for k in per_day.values()) == updates

    rows = {row["journey"]: row for row in summary_table(r.stdout, "Journeys")}
    assert (rows["Retarget by engagement"]["sent"], rows["Retarget by engagement"]["audience updates"]) == (
        "0", str(updates))
    assert (rows["Monday picks"]["sent"], rows["Monday picks"]["audience updates"]) == (str(picks["sent"]["email"]), "0")

def test_sends_file_lists_every_action_with_its_decision(shop_run):
    _, out = shop_run
    rows = [json.loads(line) for line in (out / "sends.jsonl").read_text().splitlines()]
    assert rows and len({r["id"] for r in rows if r["outcome"] == "sent"}) == sum(r["outcome"] == "sent" for r in rows)
    assert {"sent", "suppressed", "deferred"} <= {r["outcome"] for r in rows}
    for r in rows:
        assert set(r) >= {"id", "time", "user", "journey", "version", "path", "kind", "target", "data"}
    deferred = [r for r in rows if r["outcome"] == "deferred"]
    # a deferred send goes out later under the same id, unless the journey ended meanwhile
    later = {r["id"]: r["outcome"] for r in rows if r["outcome"] != "deferred"}
    assert all(later.get(r["id"]) in ("sent", "suppressed", "failed") for r in deferred if r["id"] in later)
    # a message the daemon could not deliver (no email address, a template that does not render)
    failed = [r for r in rows if r["outcome"] == "failed"]
    assert failed and all(r["kind"] in ("email", "push", "sms") and r["reason"] for r in failed)


def test_same_inputs_give_byte_identical_outputs(shop_run, tmp_path):
    _, out = shop_run
    r = journeys("simulate", str(SHOP), "--events", str(SAMPLE), "--json", str(tmp_path / "report.json"),
                 "--sends", str(tmp_path / "sends.jsonl"), "--quiet")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "report.json").read_bytes() == (out / "report.json").read_bytes()
    assert (tmp_path / "sends.jsonl").read_bytes() == (out / "sends.jsonl").read_bytes()


def test_trace_tells_a_users_timeline(tmp_path):
    log = tmp_path / "events.jsonl"
    log.write_text("\n".join(json.dumps(m) for m in [
        {"type": "identify", "userId": "u1", "messageId": "i", "timestamp": "2026-03-02T09:00:00Z",
         "traits": {"email": "u1@example.com"}},
        {"type": "track", "userId": "u1", "event": "Product Viewed", "messageId": "a",
         "timestamp": "2026-03-02T10:00:00Z", "properties": {"name": "Lamp", "category": "home"}},
        {"type": "track", "userId": "u2", "event": "Product Viewed", "messageId": "b",
         "timestamp": "2026-03-02T10:05:00Z", "properties": {"name": "Tent", "category": "outdoor"}},
    ]) + "\n")
    r = journeys("simulate", str(SHOP), "--events", str(log), "--until", "2026-03-02T12:00:00Z", "--trace", "u1",
                 "--quiet")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "trace of u1"
    text = "\n".join(lines)
    assert "event Product Viewed" in text
    assert "Browse abandonment #1  entered" in text
    assert "timeout: no Product Added within 1h" in text
    assert 'email "browse_abandon" sent' in text
    assert "u2" not in text


def test_bad_lines_are_skipped_and_counted_or_fatal_with_strict(tmp_path):
    log = tmp_path / "events.jsonl"
    log.write_text('{"type": "track", "userId": "u1", "event": "Product Viewed", "timestamp": "2026-03-02T10:00:00Z"}\n'
                   "{not json\n"
                   '{"type": "track", "event": "Product Viewed", "timestamp": "2026-03-02T10:00:00Z"}\n')
    r = journeys("simulate", str(SHOP), "--events", str(log), "--json", str(tmp_path / "r.json"), "--quiet")
    assert r.returncode == 0, r.stderr
    assert f"{log}:2:" in r.stderr and f"{log}:3:" in r.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["parameters"]["skipped"] == 2 and report["parameters"]["messages"] == 1
    strict = journeys("simulate", str(SHOP), "--events", str(log), "--strict", "--quiet")
    assert strict.returncode == 1
    assert f"{log}:2" in strict.stderr and "Traceback" not in strict.stderr


def test_usage_errors_are_one_clear_line(tmp_path):
    r = journeys("simulate", str(SHOP), "--events", str(tmp_path / "missing.jsonl"))
    assert r.returncode == 2 and "no such file" in r.stderr and "Traceback" not in r.stderr
    r = journeys("simulate", str(SHOP), "--events", str(SAMPLE), "--journey", "Nope", "--quiet")
    assert r.returncode == 2 and 'no journey named "Nope"' in r.stderr and "Traceback" not in r.stderr


def test_a_project_with_errors_is_not_simulated(tmp_path):
    bad = tmp_path / "p"
    (bad / "journeys").mkdir(parents=True)
    (bad / "journeys.toml").write_text('[project]\nname = "p"\n')
    (bad / "journeys" / "a.journey").write_text('journey "A" {\n  entry when event "X"\n  wait 5\n}\n')
    log = tmp_path / "e.jsonl"
    log.write_text("")
    r = journeys("simulate", str(bad), "--events", str(log))
    assert r.returncode == 1
    assert "a.journey:3" in r.stderr and "Traceback" not in r.stderr


def test_only_one_journey(tmp_path):
    r = journeys("simulate", str(SHOP), "--events", str(SAMPLE), "--journey", "Payment failure",
                 "--json", str(tmp_path / "r.json"), "--quiet")
    assert r.returncode == 0, r.stderr
    report = json.loads((tmp_path / "r.json").read_text())
    assert list(report["journeys"]) == ["Payment failure"]


def test_the_readme_main_job_on_sqlite_matches_memory_and_can_run_again(shop_run, tmp_path):
    _, out = shop_run
    db = tmp_path / "shop-dryrun.db"
    for _ in range(2):  # a second run replaces the first run's state instead of deduplicating everything
        r = journeys("simulate", str(SHOP), "--events", str(SAMPLE), "--store", f"sqlite:///{db}",
                     "--json", str(tmp_path / "r.json"), "--quiet")
        assert r.returncode == 0, r.stderr
        on_sqlite = json.loads((tmp_path / "r.json").read_text())
        in_memory = json.loads((out / "report.json").read_text())
        assert on_sqlite["journeys"] == in_memory["journeys"]
    import sqlite3

    with sqlite3.connect(db) as conn:
        profiles = conn.execute("SELECT count(*) FROM profiles").fetchone()[0]
        in_flight = conn.execute("SELECT count(*) FROM instances").fetchone()[0]
    # every id that was seen is a profile, except those merged into another one
    assert profiles == on_sqlite["users"] - on_sqlite["inputs"]["merge"]
    assert in_flight == sum(j["still_in"] for j in on_sqlite["journeys"].values())


def test_the_dry_run_never_writes_over_a_store_that_is_not_its_own(tmp_path):
    import sqlite3

    daemon = tmp_path / "daemon.db"
    with sqlite3.connect(daemon) as conn:
        conn.execute("CREATE TABLE profiles (user_id TEXT)")
    before = daemon.read_bytes()
    r = journeys("simulate", str(SHOP), "--events", str(SAMPLE), "--store", f"sqlite:///{daemon}", "--quiet")
    assert r.returncode == 2 and "not a dry-run's" in r.stderr and "Traceback" not in r.stderr
    assert daemon.read_bytes() == before


def test_actions_are_counted_per_step_with_their_decisions(shop_run):
    _, out = shop_run
    report = json.loads((out / "report.json").read_text())
    for name, j in report["journeys"].items():
        by_step = j["actions_by_step"]
        assert sum(s.get("sent", 0) for s in by_step.values()) == sum(j["sent"].values()), name
        suppressed = {}
        for s in by_step.values():
            for what, n in s.items():
                if what.startswith("suppressed by "):
                    reason = what.removeprefix("suppressed by ")
                    suppressed[reason] = suppressed.get(reason, 0) + n
        assert suppressed == j["suppressed"], name
    timeout_send = report["journeys"]["Browse abandonment"]["actions_by_step"]["browse_abandonment/1/timeout/1"]
    assert timeout_send["sent"] > 0 and timeout_send.get("deferred", 0) > 0
