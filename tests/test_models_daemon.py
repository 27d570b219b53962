"""The daemon's models: trained at start and on the schedule (APScheduler) from the store, counted in
/metrics and logged; a family whose training fails keeps its last good version and says so."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from types import SimpleNamespace

import orjson
import pytest

from engine.daemon.training import Training
from engine.models import modelset
from engine.models.features import observe
from engine.models.modelset import UNTRAINED, Family, train

from .test_daemon import daemons, eventually  # noqa: F401 - daemons is a fixture
from .test_reload_metrics import metrics, project, value

PREDICTING = """\
journey "Hello" {
  entry when event "Signed Up"
  if predicted purchase in 30d > 0.5 {
    send email "hello"
  }
}
"""


def test_the_daemon_trains_at_start_and_reports_it_in_metrics_and_logs(tmp_path, daemons):
    pytest.importorskip("prometheus_client")
    root = project(tmp_path)
    (root / "journeys" / "hello.journey").write_text(PREDICTING)
    d = daemons(root, None)
    m = eventually(lambda: (lambda m: value(m, "journeys_model_trainings_total", result="ok") == 1 and m)(metrics(d)),
                   timeout=60)
    assert value(m, "journeys_model_trainings_total", result="failed") == 0
    assert value(m, "journeys_model_family_failures_total") == 0
    assert m["journeys_model_trained_timestamp_seconds"][0][1] > datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp()
    log = d.log.read_text()
    assert "models: version" in log and "trained as of" in log
    assert "purchase fallback (too little data" in log  # an empty store: the reason is in the log
    assert d.stop() == 0
    (version,) = [line.split("models: version ")[1].split()[0] for line in log.splitlines() if "models: version" in line]

    # a restart scores with the version the store kept, and trains again only at the next moment
    again = daemons(root, None)
    m = metrics(again)
    eventually(lambda: f"models: version {version} (trained as of" in again.log.read_text().split(log)[-1], timeout=30)
    assert value(metrics(again), "journeys_model_trainings_total", result="ok") == 0
    assert value(m, "journeys_model_trained_timestamp_seconds", version=version) > 0
    assert again.stop() == 0


def test_a_project_without_predictions_trains_nothing(tmp_path, daemons):
    pytest.importorskip("prometheus_client")
    d = daemons(project(tmp_path), None)
    assert "journeys_model_trainings_total" not in metrics(d)
    assert d.stop() == 0


def _users():
    t = datetime(2026, 3, 2, tzinfo=timezone.utc)
    f = observe(None, "Order Completed", t, {"revenue": 5})
    return [(f"u{i}", f, timezone.utc) for i in range(5)]


def test_a_family_that_fails_keeps_its_last_good_version(monkeypatch):
    good = train(_users(), 1773000000)
    assert not good.problems and "recommender" in good.models

    def broken(users, as_of):
        raise RuntimeError("the disk is full")

    families = [f if f.name != "recommender" else Family("recommender", broken, f.load) for f in modelset._families()]
    monkeypatch.setattr(modelset, "_families", lambda: tuple(families))
    said: list[str] = []
    later = train(_users(), 1773600000, previous=good, log=said.append)
    assert later.models["recommender"] is good.models["recommender"]  # the last good version
    assert later.problems == {"recommender": "RuntimeError: the disk is full"}
    assert said == ["models: training recommender failed (RuntimeError: the disk is full); keeping the last "
                    "good version"]
    assert later.describe()["problems"] == {"recommender": "RuntimeError: the disk is full"}
    first = train(_users(), 1773600000, previous=UNTRAINED, log=said.append)
    assert "recommender" not in first.models and said[-1].endswith("no version yet")


def test_a_training_that_fails_leaves_the_running_version_and_counts_it(caplog):
    running = train(_users(), 1773000000)

    class Worker:
        clock = SimpleNamespace(now=lambda: datetime(2026, 3, 16, 3, tzinfo=timezone.utc))
        engine = SimpleNamespace(program=SimpleNamespace(models=running))
        program = SimpleNamespace(retrain="0 3 * * mon")

        def submit(self, fn):
            raise RuntimeError("the worker is not running")

    training = Training(Worker())
    with caplog.at_level(logging.ERROR, logger="journeys.models"):
        training.run()
    assert (training.trained, training.failed) == (0, 1)
    assert Worker.engine.program.models is running
    assert "training failed; scoring goes on with the running version" in caplog.text


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_stores_keep_the_latest_trained_versions(kind, tmp_path, request):
    from engine.store.base import KEPT_MODELS
    from engine.store.open import migrate_store, open_store

    url = f"sqlite:///{tmp_path / 'm.db'}" if kind == "sqlite" else request.getfixturevalue("pg_url")
    if kind == "postgres":
        migrate_store(url)
    store = open_store(url)
    try:
        assert store.latest_models() is None
        models = train(_users(), 1773000000)
        base = datetime(2026, 3, 2, tzinfo=timezone.utc)
        with store.transaction():
            for week in range(KEPT_MODELS + 2):
                store.save_models(f"v{week:02d}", base.replace(day=2 + week), f"body {week}".encode())
            store.save_models(models.version, base.replace(day=28), orjson.dumps(models.to_plain()))
        back = modelset.ModelSet.from_plain(orjson.loads(store.latest_models()))
        assert back.version == models.version and back.to_plain() == models.to_plain()
        (count,) = store.conn.execute("SELECT count(*) FROM models").fetchone()
        assert count == KEPT_MODELS
    finally:
        store.close()
