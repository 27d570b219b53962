"""The Grafana dashboard (docs/grafana/journeys.json), the Prometheus alert rules
(docs/prometheus/alerts.yml) and the metrics table of docs/deployment.md load, and name only
metrics a real daemon exports; every journeys_ metric it exports is in the table."""

from __future__ import annotations

import json
import re

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

from .conftest import ROOT
from .test_daemon import daemons, eventually  # noqa: F401 - daemons is a fixture
from .test_metrics_daemon import project, sign_up
from .test_webhook import Receiver

DOCS = ROOT / "docs"
NAME = re.compile(r"\b((?:journeys|process|python)_[a-z_]+)\b")
HISTOGRAM = re.compile(r"_(bucket|sum|count)$")
ONLY_WHEN_PREDICTING = {"journeys_model_trainings_total", "journeys_model_family_failures_total",
                        "journeys_model_training_seconds", "journeys_model_trained_timestamp_seconds"}


def exported(d) -> set[str]:
    """The families and samples of a daemon's /metrics (with the admin token, as the scrape config
    of docs/deployment.md sends it), as prometheus_client's parser reads them."""
    names: set[str] = set()
    for family in text_string_to_metric_families(httpx.get(d.url + "/metrics", headers=d.operator, timeout=5).text):
        names.add(family.name + ("_total" if family.type == "counter" else ""))
        names.update(s.name for s in family.samples)
    return names


def dashboard_exprs() -> list[str]:
    dash = json.loads((DOCS / "grafana" / "journeys.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    exprs += [v["query"] for v in dash["templating"]["list"] if v["type"] == "query"]
    assert len(exprs) >= 10
    return exprs


def alert_exprs() -> list[str]:
    rules = yaml.safe_load((DOCS / "prometheus" / "alerts.yml").read_text())
    (group,) = rules["groups"]
    alerts = group["rules"]
    for rule in alerts:
        assert set(rule) >= {"alert", "expr", "labels", "annotations"}, rule
        assert rule["labels"]["severity"] in ("warning", "critical") and rule["annotations"]["summary"]
    names = {r["alert"] for r in alerts}
    assert {"JourneysOutboxOldEntry", "JourneysDeadLetters", "JourneysTimersLate", "JourneysIngest5xx"} <= names
    return [r["expr"] for r in alerts]


def table() -> set[str]:
    text = (DOCS / "deployment.md").read_text()
    section = text[text.index("### Metrics"):text.index("## A cluster")]
    return set(re.findall(r"^\| `(journeys_[a-z_]+)`", section, re.M))


def test_the_dashboard_the_alerts_and_the_table_name_metrics_the_daemon_exports(tmp_path, daemons):
    hook = Receiver()
    try:
        d = daemons(project(tmp_path / "p", hook.url, "thread"), None)
        sign_up(d, range(1))  # a delivery and a request: their labelled families have samples
        names = eventually(lambda: (lambda n: "journeys_delivery_attempts_total" in n and n)(exported(d)),
                           timeout=30)
        assert d.stop() == 0
    finally:
        hook.close()
    used = {n for e in dashboard_exprs() + alert_exprs() for n in NAME.findall(e)}
    assert {"journeys_outbox_oldest_age_seconds", "journeys_dead_letters", "journeys_timer_lateness_seconds_bucket",
            "journeys_http_requests_total"} <= used
    unknown = {n for n in used if n not in names and HISTOGRAM.sub("", n) not in names}
    assert not unknown, unknown

    documented = table()
    ours = {HISTOGRAM.sub("", n) for n in names if n.startswith("journeys_")}
    assert ours <= documented | {HISTOGRAM.sub("", n) for n in documented}, ours - documented
    assert documented - ours <= ONLY_WHEN_PREDICTING, documented - ours
    source = (ROOT / "engine" / "daemon" / "metrics.py").read_text()  # a project that predicts exports these
    assert all(f'"{n}"' in source for n in ONLY_WHEN_PREDICTING)
    assert any(n.startswith("process_") for n in names) and "python_info" in names


def test_the_scrape_configs_send_the_admin_token():
    """/metrics answers only with the admin token: the documented scrape configs send it."""
    scrape = yaml.safe_load((DOCS / "prometheus" / "scrape.yml").read_text())
    (job,) = scrape["scrape_configs"]
    assert job["job_name"] == "journeys"  # the job alerts.yml assumes
    assert job["authorization"]["type"] == "Bearer" and job["authorization"]["credentials_file"]
    section = (DOCS / "deployment.md").read_text()
    section = section[section.index("### Metrics"):section.index("## A cluster")]
    (block,) = re.findall(r"```yaml\n(.*?)```", section, re.S)
    assert yaml.safe_load(block)["scrape_configs"][0]["authorization"]["type"] == "Bearer"
