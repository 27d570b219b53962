"""`journeys models`: every model backtested on a time split, beside its baselines, as a user runs it.

Two logs: the shop's sample (its own project, whose journeys read predictions, so the models retrain
during the run as in the daemon) and a generated log with planted structure (`journeys generate
--plant`), run with a project of no journeys. On the planted log the recommender and the send-time
model must beat their baselines: the structure they should find is in it. The HTML page must load
in a real browser (Debian's chromium, driven by playwright) with no console error and draw its
charts; the dry-run report's "Models" section too. Bad options exit 2 naming the option.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from .conftest import SHOP
from .test_html_report import chromium, open_page

SAMPLE = SHOP / "events" / "sample.jsonl"
SECTIONS = ("purchase", "churn", "recommender", "sendtime", "fatigue")


def journeys(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True, timeout=300)


def run_models(tmp: Path, project: Path, log: Path, *extra: str) -> tuple[subprocess.CompletedProcess, dict, Path]:
    page = tmp / "models.html"
    r = journeys("models", str(project), "--events", str(log), "--json", str(tmp / "models.json"),
                 "--html", str(page), *extra)
    assert r.returncode == 0, r.stdout + r.stderr
    return r, json.loads((tmp / "models.json").read_text()), page


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    return run_models(tmp_path_factory.mktemp("shop"), SHOP, SAMPLE)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("planted")
    log = tmp / "planted.jsonl"
    r = journeys("generate", "--plant", "--users", "800", "--days", "56", "--seed", "3", "-o", str(log), "-q")
    assert r.returncode == 0, r.stderr
    project = tmp / "project"
    (project / "journeys").mkdir(parents=True)
    (project / "journeys.toml").write_text('[project]\nname = "planted"\n')
    return run_models(tmp, project, log)


def rows(part: dict) -> dict[str, dict]:
    return {row["metric"]: row for row in part["metrics"]}


# ------------------------------------------------------------------------------------ the terminal


def test_shop_prints_every_model_beside_its_baselines(shop):
    r, result, _ = shop
    out = r.stdout
    assert "Traceback" not in out + r.stderr
    for heading in ("Purchase within", "Churn: no activity within", "Next products", "Best send time",
                    "Learned frequency caps"):
        assert heading in out
    for baseline in ("recency rank", "population rate", "most popular", "most viewed", "global mode", "user mode",
                     "population curve"):
        assert baseline in out
    assert f"trained as of {result['cutoff']}" in out
    # the best value of each row is marked, and the mark agrees with the JSON
    purchase = rows(result["purchase"])
    auc = purchase["roc_auc"]
    shown = f"{auc['model']:.3f}" + (" *" if auc["best"] == "model" else "")
    assert shown in out
    assert out.count(" *") >= sum(len(result[s]["metrics"]) for s in SECTIONS if result[s]["status"] == "ok")


def test_the_json_has_every_section_and_a_time_split(shop):
    _, result, _ = shop
    assert set(SECTIONS) <= set(result)
    log = result["log"]
    first = datetime.fromisoformat(log["first"])
    last = datetime.fromisoformat(log["last"])
    cutoff = datetime.fromisoformat(result["cutoff"])
    # the default cutoff: 75 % into the log, floored to a UTC day boundary; the 30d horizon does not
    # fit in a four-week log, so it is shortened to the whole days left, and a note says so
    assert cutoff == (first + (last - first) * 0.75).replace(hour=0, minute=0, second=0, microsecond=0)
    assert result["horizon_seconds"] == (last - cutoff) // timedelta(days=1) * 86400
    assert any("shortened" in n for n in result["notes"])
    for name in SECTIONS:
        part = result[name]
        assert part["status"] in ("ok", "not evaluated")
        if part["status"] != "ok":
            assert part["reason"]
            continue
        for row in part["metrics"]:
            assert row["baselines"] and row["best"] in {"model", *row["baselines"]}
    for name in ("purchase", "churn"):
        part = result[name]
        assert part["status"] == "ok", part["reason"]
        assert set(rows(part)) == {"roc_auc", "pr_auc", "brier"}
        assert set(part["baselines"]) == {"recency_rank", "population_rate"}
        assert 0 < part["positives"] < part["users"]
        assert sum(b["n"] for b in part["calibration"]) == part["users"]
        assert all(0 <= b["mean_predicted"] <= 1 and 0 <= b["observed"] <= 1 for b in part["calibration"])
        gains = part["gains"]
        assert len(gains["share_targeted"]) == len(gains["model"]) == len(gains["recency_rank"]) == 21
        for curve in (gains["model"], gains["recency_rank"]):
            assert curve[0] == 0 and curve[-1] == 1 and curve == sorted(curve)
        # a model that could not train (the shop's three weeks before the cutoff are less than the
        # purchase model needs) scores with its population fallback and says why; importances then none
        training = part["training"]
        assert training["status"] in ("ok", "fallback")
        if training["status"] == "ok":
            assert part["importances"] and all(set(i) == {"feature", "importance"} for i in part["importances"])
        else:
            assert training["reason"] and part["importances"] == []


def test_the_same_log_gives_the_same_dict(shop):
    from engine.dryrun.backtest import backtest
    from engine.dryrun.eventlog import open_logs
    from engine.dryrun.simulate import load_program

    _, result, _ = shop
    log = open_logs([str(SAMPLE)], None, False, None, None)
    with log:
        again = backtest(load_program(SHOP), log, horizon=30 * 86400)
    assert json.loads(json.dumps(again)) == {k: v for k, v in result.items() if k != "parameters"}


# ------------------------------------------------------------------------------------ the planted log


def test_planted_structure_is_found_better_than_the_baselines(planted):
    _, result, _ = planted
    assert result["log"]["users"] == 800
    rec = rows(result["recommender"])
    for metric in ("hit_rate_at_5", "ndcg_at_5"):
        row = rec[metric]
        assert row["best"] == "model" and row["model"] > max(row["baselines"].values()), row
    send = result["sendtime"]
    assert send["status"] == "ok" and send["metrics"]
    for row in send["metrics"]:  # every channel the users engaged on
        assert row["best"] == "model" and row["model"] > max(row["baselines"].values()), row
    for name in ("purchase", "churn"):  # judged, whether the model trained or fell back
        part = result[name]
        assert part["status"] == "ok" and part["users"] == 800
        assert part["training"]["status"] == "ok" or part["training"]["reason"]


# ------------------------------------------------------------------------------------ the pages


def test_the_pages_load_in_a_browser_and_draw_their_charts(shop, planted, tmp_path):
    from engine.dryrun.html_report import render_report

    executable = chromium()
    _, result, page_file = planted
    report = {"journeys": {}, "users": 3, "inputs": {"track": 3},
              "models": [{"time": "2026-03-09T03:00:00Z", "version": "20260309T030000Z-abc123def456",
                          "summary": {"version": "20260309T030000Z-abc123def456", "users": 3,
                                      "trained_at": "2026-03-09T03:00:00Z",
                                      "window": ["2026-03-02T00:00:00Z", "2026-03-09T03:00:00Z"],
                                      "models": {"purchase": {"status": "fallback", "evidence": 0, "metrics": {},
                                                              "reason": "too little data: 0 purchasers <b>"},
                                                 "sendtime": {"status": "ok", "reason": None, "evidence": 40,
                                                              "metrics": {"hit_rate_1h": 0.5}}},
                                      "problems": {"fatigue": "ValueError: boom"}}}]}
    simulate_page = tmp_path / "report.html"
    simulate_page.write_text(render_report(report), encoding="utf-8")

    def backtest_check(page, problems):
        charts = page.eval_on_selector_all("svg.chart", "els => els.map(e => e.getAttribute('aria-label'))")
        sizes = page.eval_on_selector_all("svg.chart", "els => els.map(e => e.getBoundingClientRect().width)")
        dots = page.locator("svg.chart circle.bin").count()
        curves = page.locator("svg.chart polyline.curve").count()
        bars = page.locator("svg.chart rect.importance").count()
        return problems, charts, sizes, dots, curves, bars, page.inner_text("body")

    problems, charts, sizes, dots, curves, bars, body = open_page(page_file, executable, backtest_check)
    assert problems == []
    assert all(w > 100 for w in sizes)
    for name in ("purchase", "churn"):
        title = "Purchase within 14d" if name == "purchase" else "Churn: no activity within 14d"
        assert f"calibration plot: {title}" in charts and f"cumulative gains: {title}" in charts
        assert f"metrics beside the baselines: {title}" in charts
    assert dots == len(result["purchase"]["calibration"]) + len(result["churn"]["calibration"])
    assert curves == 4  # the model and recency rank, twice
    assert bars == len(result["purchase"]["importances"][:15]) + len(result["churn"]["importances"][:15])
    if bars:
        assert "feature importances" in charts
    else:
        assert "The model reports no importances." in body
    for heading in ("Next products", "Best send time", "Learned frequency caps"):
        assert f"metrics beside the baselines: {heading}" in charts and heading in body

    def report_check(page, problems):
        return problems, page.inner_text("body"), page.content()

    problems, body, html = open_page(simulate_page, executable, report_check)
    assert problems == []
    summary = body[body.index("Models"):]
    assert "20260309T030000Z-abc123def456" in summary and "3" in summary
    assert re.search(r"fatigue\s+purchase\s+sendtime", summary) and re.search(r"⚠ failed\s+fallback\s+ok", summary)
    # the details of each training: the reason escaped, the failure and what was kept
    assert "too little data: 0 purchasers &lt;b&gt;" in html and "ValueError: boom" in html
    assert "kept the last good version" in html and "hit_rate_1h: 0.500" in html


# ------------------------------------------------------------------------------------ bad input


def tiny_log(path: Path) -> Path:
    """Three users browsing over ten days, nobody buying: nothing to judge purchases on."""
    start = datetime(2026, 3, 2, 9, tzinfo=timezone.utc)
    lines = []
    for day in range(10):
        for user in ("a", "b", "c"):
            t = start + timedelta(days=day, hours=ord(user) - 97)
            lines.append(json.dumps({"type": "track", "userId": user, "event": "Product Viewed",
                                     "timestamp": t.isoformat().replace("+00:00", "Z"),
                                     "messageId": f"{user}{day}", "properties": {"product_id": f"p{day % 3}"}}))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_log_with_nothing_to_judge_says_why_and_exits_0(tmp_path):
    log = tiny_log(tmp_path / "tiny.jsonl")
    r, result, _ = run_models(tmp_path, SHOP, log, "--horizon", "2d")
    assert result["purchase"]["status"] == "not evaluated"
    assert "no user bought" in result["purchase"]["reason"]
    for name in SECTIONS:
        assert result[name]["status"] == "ok" or result[name]["reason"], name
    assert "not evaluated" in r.stdout and "Traceback" not in r.stdout + r.stderr


@pytest.mark.parametrize("option, value", [("--cutoff", "yesterday"), ("--cutoff", "2030-01-01"),
                                           ("--cutoff", "2020-01-01T00:00:00Z"), ("--horizon", "30x"),
                                           ("--horizon", "0d"), ("--horizon", "")])
def test_bad_options_exit_2_naming_the_option(tmp_path, option, value):
    log = tiny_log(tmp_path / "tiny.jsonl")
    r = journeys("models", str(SHOP), "--events", str(log), option, value)
    assert r.returncode == 2, r.stdout + r.stderr
    assert option in r.stderr and "Traceback" not in r.stderr
