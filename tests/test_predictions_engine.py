"""Predictions in the engine: features kept by the step, models trained on the schedule as of the
virtual clock, scores in actions and in `journeys score` — and never a look at the future."""

from __future__ import annotations

import csv
import io
import random
import subprocess
import sys
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import orjson
import pytest

from engine.core.messages import parse_message
from engine.dryrun.scores import score
from engine.dryrun.simulate import load_program, simulate
from engine.models.features import seconds
from engine.runtime.sinks import Recorder
from engine.store.base import MemoryStore

from .conftest import ROOT, SHOP

LOG = SHOP / "events" / "sample.jsonl"
AS_OF = datetime(2026, 3, 16, 12, tzinfo=timezone.utc)  # mid-log, after the first Monday's training


def messages(lines):
    return sorted((parse_message(orjson.loads(line)) for line in lines), key=lambda m: m.timestamp)


def shop_lines():
    return LOG.read_bytes().splitlines()


def altered_after(lines, moment):
    """The same log before `moment`; after it, events dropped, revenues changed, purchases added."""
    rng = random.Random(7)
    out = []
    for line in lines:
        raw = orjson.loads(line)
        if parse_message(raw).timestamp < moment:
            out.append(line)
            continue
        if rng.random() < 0.4:
            continue  # removed
        if raw.get("event") == "Order Completed":
            raw["properties"]["revenue"] = 9999.0
        out.append(orjson.dumps(raw))
        if raw.get("userId") and rng.random() < 0.2:
            extra = {"type": "track", "event": "Order Completed", "userId": raw["userId"],
                     "messageId": f"x-{len(out)}", "timestamp": raw["timestamp"], "properties": {"revenue": 5}}
            out.append(orjson.dumps(extra))
    return out


def program_with_models():
    return replace(load_program(SHOP), features_on=True)


PLANTED_AS_OF = datetime(2026, 5, 11, 12, tzinfo=timezone.utc)  # day 70 of the planted log


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A planted log (`journeys generate --plant`: purchase cycles, churn, tastes, hours, fatigue)
    long enough for every model to train, and a project with no journeys that retrains monthly."""
    root = tmp_path_factory.mktemp("planted")
    (root / "journeys.toml").write_text('[project]\nname = "planted"\n\n[models]\nretrain = "0 3 1 * *"\n')
    log = root / "events.jsonl"
    subprocess.run([sys.executable, "-m", "engine.cli", "generate", "--plant", "--users", "200", "--days", "100",
                    "--seed", "4", "-o", str(log), "-q"], cwd=ROOT, check=True, timeout=300)
    return root, log.read_bytes().splitlines()


def test_scores_as_of_t_do_not_change_when_events_after_t_change(planted):
    root, lines = planted
    program = load_program(root)
    horizons = [30 * 86400, 90 * 86400]
    before = score(program, messages(lines), PLANTED_AS_OF, horizons)
    after = score(program, messages(altered_after(lines, PLANTED_AS_OF)), PLANTED_AS_OF, horizons)
    assert before.to_csv() == after.to_csv()
    described = before.models.describe()["models"]
    assert {n: f["status"] for n, f in described.items()} == dict.fromkeys(
        ("activity", "fatigue", "purchase", "recommender", "sendtime"), "ok"), described
    rows = list(csv.reader(io.StringIO(before.to_csv())))
    assert rows[0][:5] == ["user_id", "purchase_30d", "churn_30d", "purchase_90d", "churn_90d"]
    ids = [r[0] for r in rows[1:]]
    assert len(ids) == len(set(ids)) == 200
    purchase = [float(r[1]) for r in rows[1:]]
    assert all(0 <= p <= 1 for p in purchase) and len(set(purchase)) > 50  # scored per user, not one constant
    assert all(float(r[3]) >= float(r[1]) for r in rows[1:])  # a longer horizon is never less likely


def test_a_later_cut_does_see_the_later_events():
    """The leak test above can fail: moved past the change, the scores differ."""
    program = program_with_models()
    later = AS_OF + timedelta(days=7)
    assert score(program, messages(shop_lines()), later, [30 * 86400]).to_csv() != \
        score(program, messages(altered_after(shop_lines(), AS_OF)), later, [30 * 86400]).to_csv()


def test_every_action_before_t_carries_the_same_predictions_whatever_follows_t():
    program = program_with_models()
    runs = []
    for lines in (shop_lines(), altered_after(shop_lines(), AS_OF)):
        recorder = Recorder()
        simulate(program, messages(lines), sinks=[recorder])
        runs.append(recorder)
    early = [[a.to_json() for a in r.actions if a.time < AS_OF] for r in runs]
    assert early[0] == early[1]
    scored = [a for a in early[0] if a.get("predictions", {}).get("predicted", {}).get("purchase_30d") is not None]
    assert scored, "no message before T read a trained model"
    trainings = [e for e in runs[0].effects if type(e).__name__ == "ModelsTrained"]
    assert [t.time.weekday() for t in trainings] == [0] * len(trainings) and len(trainings) >= 3  # Mondays
    assert all(t.time.hour == 3 for t in trainings)


def test_the_models_train_only_on_what_came_before_their_moment():
    program = program_with_models()
    recorder = Recorder()
    run = simulate(program, messages(shop_lines()), sinks=[recorder], store=MemoryStore(keep_actions=False))
    models = run.models
    assert models.trained_at is not None and models.window is not None
    assert models.window[1] == models.trained_at
    last_training = max(e.time for e in recorder.effects if type(e).__name__ == "ModelsTrained")
    assert models.trained_at == seconds(last_training)


def test_the_same_log_gives_the_same_scores_byte_for_byte():
    program = program_with_models()
    one = score(program, messages(shop_lines()), AS_OF, [30 * 86400]).to_csv()
    two = score(program, messages(shop_lines()), AS_OF, [30 * 86400]).to_csv()
    assert one == two


def test_journeys_score_writes_a_csv_with_a_header_and_one_row_per_user(tmp_path):
    out = tmp_path / "scores.csv"
    result = subprocess.run([sys.executable, "-m", "engine.cli", "score", str(SHOP), "--events", str(LOG),
                             "--as-of", "2026-03-20T00:00:00Z", "--horizon", "60d", "--out", str(out)],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    rows = list(csv.reader(out.open()))
    assert rows[0][0] == "user_id" and "purchase_60d" in rows[0] and "churn_60d" in rows[0]
    assert {"best_hour_email", "best_hour_push", "next_products", "cap_push_7d"} <= set(rows[0])
    assert len(rows) > 100 and all(len(r) == len(rows[0]) for r in rows)
    assert "users scored as of 2026-03-20T00:00:00Z" in result.stderr


def test_journeys_score_rejects_a_bad_horizon_naming_the_option():
    result = subprocess.run([sys.executable, "-m", "engine.cli", "score", str(SHOP), "--events", str(LOG),
                             "--as-of", "2026-03-20", "--horizon", "soon"], cwd=ROOT, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    assert "--horizon" in result.stderr and "Traceback" not in result.stderr
