"""`journeys serve`'s /metrics on real daemons, read with prometheus_client's own parser: the
process and platform collectors, the HTTP requests counted by route, counters that never go down
across a hot reload or the death of the delivery process, the delivery process's attempts in the
daemon's /metrics, and several workers on one PostgreSQL store each serving its own."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import pytest

from .test_daemon import Daemon, daemons, eventually  # noqa: F401 - daemons is a fixture
from .test_reload_metrics import edit, metrics, value
from .test_webhook import Receiver

JOURNEY = """\
journey "Now" {{
  entry when event "Signed Up"
  webhook "crm" with {{ user_id: user.id, n: {n} }}
}}
"""


def project(root: Path, hook: str, deliveries: str = "process", journey: str | None = None) -> Path:
    """A project of one journey (`journey`, else one that calls the webhook `crm` at `hook` on sign-up)."""
    (root / "journeys").mkdir(parents=True)
    (root / "journeys.toml").write_text(f"""\
[project]
name = "metrics"

[serve]
deliveries = "{deliveries}"

[ingest]
write_keys_env = ["JOURNEYS_WRITE_KEY"]

[store]
url = "sqlite:///data/m.db"

[webhooks.crm]
url = "{hook}"
timeout = "5s"
""")
    (root / "journeys" / "now.journey").write_text(journey or JOURNEY.format(n=1))
    return root


def counters(m: dict[str, list]) -> dict[tuple, float]:
    """Every sample of a counter (a name ending in _total) and of a histogram's count, by name and labels."""
    return {(name, tuple(sorted(labels.items()))): v for name, samples in m.items()
            if name.endswith(("_total", "_count", "_bucket")) for labels, v in samples}


def never_down(before: dict[tuple, float], after: dict[tuple, float]) -> None:
    went = {k: (v, after.get(k)) for k, v in before.items() if after.get(k, -1) < v}
    assert not went, went


def sign_up(d: Daemon, users: range) -> None:
    for i in users:
        assert d.post("track", {"userId": f"u{i}", "event": "Signed Up"}).status_code == 200


def delivered(d: Daemon, n: int) -> dict[str, list]:
    return eventually(lambda: (lambda m: value(m, "journeys_delivery_attempts_total", connector="webhook:crm",
                                               outcome="delivered") == n and m)(metrics(d)), timeout=60, every=0.2)


def delivery_children(pid: int) -> list[int]:
    """The daemon's delivery process (multiprocessing's spawn; not its resource tracker)."""
    kids: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        kids += [int(p) for p in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
    return [k for k in kids if b"spawn_main" in Path(f"/proc/{k}/cmdline").read_bytes()]


@pytest.mark.parametrize("deliveries", ["process", "thread"])
def test_metrics_of_a_real_daemon_never_go_down_across_a_reload(tmp_path, daemons, deliveries):
    hook = Receiver()
    try:
        root = project(tmp_path / "p", hook.url, deliveries)
        d = daemons(root, None)
        m = metrics(d)
        # the library's collectors: this process's and the interpreter's
        for name in ("process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds",
                     "python_info", "python_gc_collections_total"):
            assert name in m, name
        sign_up(d, range(3))
        m = delivered(d, 3)  # in process mode, counted in the delivery process and sent over its pipe
        assert value(m, "journeys_outbox_attempts_total") == 3 and value(m, "journeys_outbox_retries_total") == 0
        assert value(m, "journeys_http_requests_total", route="/v1/track", method="POST", code="200") == 3
        # each answered call timed once: the count beside the counter, +Inf holding them all, a positive sum
        timed = dict(route="/v1/track", method="POST")
        assert value(m, "journeys_http_request_duration_seconds_count", **timed) == 3
        assert value(m, "journeys_http_request_duration_seconds_bucket", le="+Inf", **timed) == 3
        assert 0 < value(m, "journeys_http_request_duration_seconds_sum", **timed) < 60
        assert value(m, "journeys_actions_total", channel="webhook", outcome="sent") == 3

        # a reload changes the journey and rebuilds the connectors (journeys.toml is touched too)
        edit(root / "journeys" / "now.journey", JOURNEY.format(n=2))
        edit(root / "journeys.toml", (root / "journeys.toml").read_text() + "\n")
        after = eventually(lambda: (lambda m: value(m, "journeys_reloads_total", result="ok") >= 1 and m)(metrics(d)),
                           timeout=30, every=0.2)
        never_down(counters(m), counters(after))
        sign_up(d, range(3, 5))
        later = delivered(d, 5)
        never_down(counters(after), counters(later))
        assert value(later, "journeys_outbox_attempts_total") == 5
        assert value(later, "journeys_worker_processed_total") == 5
        assert d.stop() == 0
    finally:
        hook.close()


def test_the_delivery_process_counters_survive_its_death(tmp_path, daemons):
    hook = Receiver()
    try:
        root = project(tmp_path / "p", hook.url, "process")
        d = daemons(root, None)
        sign_up(d, range(2))
        before = delivered(d, 2)
        (child,) = eventually(lambda: delivery_children(d.proc.pid), timeout=30)
        os.kill(child, signal.SIGKILL)  # the daemon starts a new one, which counts from 0
        eventually(lambda: (lambda kids: kids and kids != [child])(delivery_children(d.proc.pid)), timeout=60, every=0.2)
        never_down(counters(before), counters(metrics(d)))
        sign_up(d, range(2, 4))
        after = delivered(d, 4)  # 2 by the dead child, 2 by its successor
        never_down(counters(before), counters(after))
        assert value(after, "journeys_outbox_attempts_total") == 4
        assert d.stop() == 0
    finally:
        hook.close()


def test_metrics_content_negotiation_answers_openmetrics(tmp_path, daemons):
    hook = Receiver()
    try:
        d = daemons(project(tmp_path / "p", hook.url, "thread"), None)
        r = httpx.get(d.url + "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0", **d.operator},
                      timeout=5)
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/openmetrics-text")
        assert r.text.rstrip().endswith("# EOF") and "journeys_up 1.0" in r.text
        assert d.stop() == 0
    finally:
        hook.close()


def test_each_worker_of_a_cluster_serves_its_own_metrics(tmp_path, pg_url):
    hook = Receiver()
    root = project(tmp_path / "p", hook.url, "process")
    env = {"JOURNEYS_LEASE_TTL": "2", "JOURNEYS_RELOAD_POLL": "0"}
    workers = [Daemon(root, pg_url, tmp_path / f"w{i}.log", **env) for i in range(2)]
    try:
        for n, w in enumerate(workers):  # ten users through each worker's ingest
            sign_up(w, range(10 * n, 10 * n + 10))
        eventually(lambda: len(hook.requests) == 20, timeout=60, every=0.2)

        def settled():
            ms = [metrics(w) for w in workers]
            done = (sum(value(m, "journeys_worker_processed_total") for m in ms) == 20
                    and sum(value(m, "journeys_outbox_attempts_total") for m in ms) == 20
                    and all(value(m, "journeys_events_processed_total") == 20 for m in ms))
            return done and ms

        ms = eventually(settled, timeout=60, every=0.2)
        for w, m in zip(workers, ms):
            assert value(m, "journeys_up") == 1
            assert "process_resident_memory_bytes" in m
            # each worker's own ingest: the requests it answered, not the cluster's
            assert value(m, "journeys_http_requests_total", route="/v1/track", code="200") == 10
            # the store's figures are the cluster's: the same in every worker (aggregate with max)
            assert value(m, "journeys_events_accepted_total") == 20
            assert value(m, "journeys_outbox_entries", state="delivered") == 20
        # the work is each worker's own (aggregate with sum): the partitions split it between them
        processed = [value(m, "journeys_worker_processed_total") for m in ms]
        assert sum(processed) == 20, processed
        for w in workers:
            assert w.stop() == 0
    finally:
        for w in workers:
            if w.proc.poll() is None:
                w.proc.kill()
                w.proc.wait()
        hook.close()
