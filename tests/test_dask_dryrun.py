"""`journeys simulate --executor dask://...`: the partitions as actors of a real Dask cluster (a
LocalCluster of two worker processes on loopback) give the bytes of one process."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

distributed = pytest.importorskip("distributed")

ROOT = Path(__file__).resolve().parent.parent
SHOP = ROOT / "examples" / "shop"
SAMPLE = SHOP / "events" / "sample.jsonl"
CUT = "2026-03-10"  # the sample's first week and a day: one training of the models


def journeys(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                                  dashboard_address=None) as local:
        yield "dask://" + local.scheduler_address.removeprefix("tcp://")


@pytest.fixture(scope="module")
def log(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("log") / "events.jsonl"
    path.write_text("".join(line for line in SAMPLE.read_text().splitlines(keepends=True)
                            if json.loads(line)["timestamp"] < CUT))
    return path


def run(log: Path, out: Path, *extra: str) -> dict[str, bytes]:
    out.mkdir()
    r = journeys("simulate", str(SHOP), "--events", str(log), "--json", str(out / "report.json"),
                 "--sends", str(out / "sends.jsonl"), "--trace", "u-0042", *extra)
    assert r.returncode == 0, r.stderr
    return {"stdout": r.stdout.encode(), **{p.name: p.read_bytes() for p in sorted(out.iterdir())}}


def test_actors_on_a_cluster_give_the_bytes_of_one_process(cluster, log, tmp_path):
    one = run(log, tmp_path / "one", "--workers", "1")
    assert len(json.loads(one["report.json"])["models"]) == 1
    on_cluster = run(log, tmp_path / "dask", "--executor", cluster)  # --workers: the cluster's 2 threads
    assert on_cluster == one
    with distributed.Client(cluster.replace("dask://", "tcp://")) as client:
        keys = client.run_on_scheduler(lambda dask_scheduler: {str(t[0]) for t in dask_scheduler.transition_log})
    assert len({k for k in keys if k.startswith("Partition-")}) == 2  # two actors ran it


def test_a_cluster_that_cannot_be_reached_is_one_line(log):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens there once closed
    r = journeys("simulate", str(SHOP), "--events", str(log), "--executor", f"dask://127.0.0.1:{port}", "--quiet")
    assert r.returncode == 1 and "cannot reach the Dask scheduler" in r.stderr and "Traceback" not in r.stderr
