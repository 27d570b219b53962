"""`journeys simulate --workers N`: the run split by connected identity over processes gives the
bytes of `--workers 1` (one process), on the shop with its models, schedules and identities."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from engine.core.messages import parse_message
from engine.dryrun.eventlog import LogError, open_logs
from engine.dryrun.partitioned.coordinator import run_partitioned, training_moments
from engine.dryrun.partitioned.identity import Links
from engine.dryrun.partitioned.local import LocalExecutor
from engine.dryrun.partitioned.partition import PartitionFailed, PartitionSpec
from engine.dryrun.simulate import load_program, sends_order

ROOT = Path(__file__).resolve().parent.parent
SHOP = ROOT / "examples" / "shop"
SAMPLE = SHOP / "events" / "sample.jsonl"
CUT = "2026-03-17"  # the sample's first half: two trainings of the models (Mondays 03:00 UTC)

# Every way two ids become one profile, or two messages one: on top of the sample's anonymous
# visitors who identify (6,000 messages with both ids)
LINKS = [
    # a shared device: one anonymousId identified by two people (its events move, the people stay two)
    {"type": "identify", "anonymousId": "device-7", "userId": "ann", "messageId": "l1",
     "timestamp": "2026-03-03T08:00:00Z", "traits": {"email": "ann@example.com"}},
    {"type": "track", "anonymousId": "device-7", "event": "Product Viewed", "messageId": "l2",
     "timestamp": "2026-03-03T08:05:00Z", "properties": {"name": "Lamp", "category": "home"}},
    {"type": "identify", "anonymousId": "device-7", "userId": "bob", "messageId": "l3",
     "timestamp": "2026-03-04T20:00:00Z", "traits": {"email": "bob@example.com"}},
    {"type": "track", "anonymousId": "device-7", "event": "Product Viewed", "messageId": "l4",
     "timestamp": "2026-03-04T20:05:00Z", "properties": {"name": "Tent", "category": "outdoor"}},
    # an alias: an old id's profile (with its journeys) merged into a known user's
    {"type": "identify", "userId": "legacy-9", "messageId": "l5", "timestamp": "2026-03-05T09:00:00Z",
     "traits": {"email": "carol@example.com"}},
    {"type": "track", "userId": "legacy-9", "event": "Product Viewed", "messageId": "l6",
     "timestamp": "2026-03-05T09:10:00Z", "properties": {"name": "Kettle", "category": "home"}},
    {"type": "identify", "userId": "carol", "messageId": "l7", "timestamp": "2026-03-05T09:20:00Z",
     "traits": {"email": "carol@example.com"}},
    {"type": "alias", "userId": "carol", "previousId": "legacy-9", "messageId": "l8",
     "timestamp": "2026-03-05T09:30:00Z"},
    # one messageId sent for two unrelated users: the second is a duplicate, in one process or several
    {"type": "track", "userId": "dave", "event": "Product Viewed", "messageId": "same-id",
     "timestamp": "2026-03-06T10:00:00Z", "properties": {"name": "Mug", "category": "kitchen"}},
    {"type": "track", "userId": "erin", "event": "Product Viewed", "messageId": "same-id",
     "timestamp": "2026-03-06T11:00:00Z", "properties": {"name": "Mug", "category": "kitchen"}},
]


def journeys(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def log(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("log") / "events.jsonl"
    lines = [line for line in SAMPLE.read_text().splitlines() if json.loads(line)["timestamp"] < CUT]
    lines += [json.dumps(m) for m in LINKS]
    path.write_text("\n".join(lines) + "\n")
    return path


def simulate(log: Path, out: Path, *extra: str) -> dict[str, bytes]:
    out.mkdir()
    r = journeys("simulate", str(SHOP), "--events", str(log), "--json", str(out / "report.json"),
                 "--sends", str(out / "sends.jsonl"), "--html", str(out / "report.html"), *extra)
    assert r.returncode == 0, r.stderr
    return {"stdout": r.stdout.encode(), **{p.name: p.read_bytes() for p in sorted(out.iterdir())}}


@pytest.fixture(scope="module")
def one(log, tmp_path_factory) -> dict[str, bytes]:
    return simulate(log, tmp_path_factory.mktemp("w") / "one", "--workers", "1")


def test_the_log_exercises_every_link_and_the_models(one):
    report = json.loads(one["report.json"])
    assert {"merge", "relink", "alias", "duplicate", "schedule"} <= set(report["inputs"])
    assert len(report["models"]) == 2  # trained twice, each on everyone's rows
    assert sum(sum(day.values()) for day in report["sends_per_day"].values()) > 100


@pytest.mark.parametrize("workers", ["2", "3"])
def test_partitions_give_the_bytes_of_one_process(log, one, tmp_path, workers):
    parted = simulate(log, tmp_path / "parted", "--workers", workers)
    for name in ("report.json", "sends.jsonl", "report.html", "stdout"):
        assert parted[name] == one[name], name


@pytest.mark.parametrize("user", ["carol", "legacy-9", "bob", "dave", "nobody"])
def test_a_trace_comes_whole_from_the_partition_holding_the_user(log, tmp_path, user):
    outs = [journeys("simulate", str(SHOP), "--events", str(log), "--trace", user, "--quiet", "--workers", w)
            for w in ("1", "2")]
    assert [o.returncode for o in outs] == [0, 0], outs[1].stderr
    assert outs[1].stdout == outs[0].stdout
    assert (user == "nobody") == ("(no events for nobody)" in outs[0].stdout)


def test_sends_are_in_time_then_user_order(one):
    keys = [sends_order(line) for line in one["sends.jsonl"].splitlines()]
    assert keys == sorted(keys) and len(set(k[1] for k in keys)) > 100


def test_connected_ids_share_a_partition_and_the_split_is_balanced_and_stable(log):
    def plan():
        links = Links()
        opened = open_logs([log], observe=links.observe)
        return opened, links.plan(opened, 2)

    opened, first = plan()
    again = plan()[1]
    for user, other in (("ann", "bob"), ("bob", "device-7"), ("carol", "legacy-9"), ("dave", "erin")):
        assert first.partition_of(user) == first.partition_of(other) is not None
    assert first.partition_of("nobody") is None
    assert sum(first.messages) == opened.count and min(first.messages) > 0.45 * opened.count
    assert [list(map(_key, p)) for p in first.logs] == [list(map(_key, p)) for p in again.logs]
    both = sorted((_key(m) for p in first.logs for m in p), key=lambda k: k[:2])
    assert both == sorted((_key(m) for m in opened), key=lambda k: k[:2])


def _key(message) -> tuple:
    return message.timestamp, message.message_id, message.user_id or message.anonymous_id


def test_messages_link_through_every_id_they_carry():
    links = Links()
    messages = [
        {"type": "track", "anonymousId": "a1", "event": "E", "messageId": "m1"},
        {"type": "identify", "anonymousId": "a1", "userId": "u1", "messageId": "m2"},
        {"type": "alias", "userId": "u2", "previousId": "u1", "messageId": "m3"},
        {"type": "track", "userId": "u3", "event": "E", "messageId": "m4"},
        {"type": "track", "userId": "u4", "event": "E", "messageId": "m4"},  # the same messageId
        {"type": "track", "userId": "u5", "event": "E", "messageId": "m5"},
    ]
    for i, m in enumerate(messages):
        links.observe(parse_message({**m, "timestamp": f"2026-03-02T10:0{i}:00Z"}))
    first = links._first.tolist()
    links._join_repeated_message_ids(__import__("numpy").frombuffer(links._first, dtype="int64"))
    roots = [links._find(n) for n in first]
    assert roots[0] == roots[1] == roots[2] and roots[3] == roots[4] and len(set(roots)) == 3


def test_store_and_workers_together_is_a_usage_error(log, tmp_path):
    r = journeys("simulate", str(SHOP), "--events", str(log), "--store", f"sqlite:///{tmp_path}/s.db",
                 "--workers", "2")
    assert r.returncode == 2 and "--store" in r.stderr and "Traceback" not in r.stderr
    r = journeys("simulate", str(SHOP), "--events", str(log), "--workers", "0")
    assert r.returncode == 2 and "--workers" in r.stderr and "Traceback" not in r.stderr


def _started(log: Path, parts: int = 2):
    links = Links()
    opened = open_logs([log], observe=links.observe)
    plan = links.plan(opened, parts)
    executor = LocalExecutor()
    executor.start(PartitionSpec(str(SHOP)), parts)
    return opened, plan, executor


def test_a_log_changed_under_the_partitions_stops_the_run_with_its_error(log, tmp_path):
    copy = tmp_path / "events.jsonl"
    copy.write_bytes(log.read_bytes())
    opened, plan, executor = _started(copy)
    copy.write_bytes(log.read_bytes()[:len(log.read_bytes()) // 2])  # half its lines gone
    try:
        with pytest.raises(LogError, match="changed since it was first read"):
            run_partitioned(load_program(SHOP), plan.logs, executor, start=opened.first, end=opened.last)
    finally:
        executor.close()


def test_a_partition_whose_process_dies_stops_the_run_instead_of_hanging(log):
    opened, plan, executor = _started(log)
    try:
        executor.call("open", [(part, _bounds(opened), None) for part in plan.logs])
        os.kill(executor._procs[1].pid, signal.SIGKILL)
        with pytest.raises(PartitionFailed, match="partition 2 of 2: its process ended"):
            executor.call("finish", [()] * 2)
    finally:
        executor.close()


def test_a_worker_that_cannot_open_the_log_says_so(log, tmp_path):
    copy = tmp_path / "events.jsonl"
    copy.write_bytes(log.read_bytes())
    opened, plan, executor = _started(copy)
    copy.unlink()
    try:
        with pytest.raises(LogError, match="cannot open on .*every worker reads the logs at the same paths"):
            executor.call("open", [(part, _bounds(opened), None) for part in plan.logs])
    finally:
        executor.close()


def _bounds(opened):
    from engine.dryrun.partitioned.partition import RunBounds

    return RunBounds(opened.first, opened.last, False)


def test_the_trainings_are_the_engines():
    program = load_program(SHOP)
    start = datetime(2026, 3, 2, 4, 5, tzinfo=timezone.utc)
    moments = list(training_moments(program, start, datetime(2026, 3, 16, 3, 0, tzinfo=timezone.utc)))
    assert [m.isoformat() for m in moments] == ["2026-03-09T03:00:00+00:00", "2026-03-16T03:00:00+00:00"]


def test_the_families_are_shared_out_once_each_in_groups_of_about_equal_cost():
    from engine.models.modelset import FAMILY_COST, family_names, shares

    names = family_names()
    assert set(FAMILY_COST) == set(names)  # every family has a measured cost
    for parts in range(1, 8):
        groups = shares(parts)
        assert len(groups) == min(parts, len(names)) and all(groups)
        assert sorted(n for g in groups for n in g) == sorted(names)
    two = [sum(FAMILY_COST[n] for n in g) for g in shares(2)]
    assert max(two) <= 0.6 * sum(two)  # not one process fitting nearly everything while the other waits
