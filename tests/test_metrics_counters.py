"""The daemon's counters and histogram, on a worker in this process (engine.daemon.metrics):
timer lateness observes timer fires only, never events; the outbox's attempts never go down when
retention deletes settled entries."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from engine.core.messages import parse_message
from engine.core.program import Program
from engine.daemon.metrics import render_metrics
from engine.daemon.worker import Worker
from engine.store.inbox import Inbox, message_to_json
from engine.store.serialize import utc_text
from journeys.checker import check_and_compile
from journeys.project import load_project

from .test_daemon import eventually
from .test_metrics_daemon import project as metrics_project
from .test_webhook import Receiver


def project(root: Path, journey: str, hook: str = "http://127.0.0.1:9/") -> Path:
    return metrics_project(root, hook, "thread", journey)


def values(text: str) -> dict[str, float]:
    """Every sample as `name{labels}` → value, through prometheus_client's own parser."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return out


def worker_for(root: Path, path: str) -> Worker:
    loaded = load_project(root)
    _, compiled = check_and_compile(loaded)
    return Worker(root, loaded.config, Program.build(compiled), path, environ={})


def post(path: str, calls: list[dict]) -> None:
    from datetime import datetime, timezone

    inbox = Inbox.open(path)
    try:
        now = datetime.now(timezone.utc)
        inbox.append_rows([(utc_text(now), message_to_json(parse_message({"timestamp": now.isoformat(), **c})))
                           for c in calls])
    finally:
        inbox.close()


WAIT = """\
journey "Later" {
  entry when event "Signed Up"
  wait 1s
  webhook "crm" with { user_id: user.id }
}
"""


def test_timer_lateness_observes_timer_fires_only_not_events(tmp_path):
    root = project(tmp_path / "p", WAIT)
    path = str(tmp_path / "store.db")
    worker = worker_for(root, path)
    worker.start()
    try:
        # three users enter (three events, one timer each), and two events for nobody's journey
        post(path, [{"type": "track", "userId": f"u{i}", "event": "Signed Up"} for i in range(3)]
             + [{"type": "track", "userId": "u9", "event": "Browsed"}] * 2)
        eventually(lambda: worker.counts.snapshot().get("inbox.processed") == 5, timeout=30)

        def fires() -> float:
            return values(render_metrics(worker, None))["journeys_timer_lateness_seconds_count"]

        assert fires() == 0  # five events taken, no timer due yet: nothing fired late or on time
        eventually(lambda: fires() == 3, timeout=30)  # the three waits of one second each fire
        post(path, [{"type": "track", "userId": "u9", "event": "Browsed"}])
        eventually(lambda: worker.counts.snapshot().get("inbox.processed") == 6, timeout=30)
        assert fires() == 3
    finally:
        worker.stop()


NOW = """\
journey "Now" {
  entry when event "Signed Up"
  webhook "crm" with { user_id: user.id }
}
"""


def test_outbox_attempts_never_go_down_when_retention_deletes_delivered_entries(tmp_path):
    from engine.store import retention

    hook = Receiver()
    try:
        root = project(tmp_path / "p", NOW, hook.url)
        path = str(tmp_path / "store.db")
        worker = worker_for(root, path)
        worker.start()
        try:
            post(path, [{"type": "track", "userId": f"u{i}", "event": "Signed Up"} for i in range(4)])
            eventually(lambda: len(hook.requests) == 4, timeout=30)
            m = eventually(lambda: (lambda m: m["journeys_outbox_attempts_total"] == 4 and m)(
                values(render_metrics(worker, None))), timeout=30)

            def prune(later: timedelta) -> dict:  # retention: now (its mark), then a year on
                with worker.store.transaction():
                    return retention.prune(worker.store.conn, {"messages": 30, "actions": 30, "outbox": 30},
                                           worker.clock.now() + later)

            worker.submit(lambda: prune(timedelta(0))).result(30)
            assert worker.submit(lambda: prune(timedelta(days=365))).result(30)["outbox"] == 3  # the last row stays
            m = values(render_metrics(worker, None))
            assert m['journeys_outbox_entries{state="delivered"}'] == 1
            assert m["journeys_outbox_attempts_total"] == 4  # the attempts were made: the counter stays
            assert m['journeys_delivery_attempts_total{connector="webhook:crm",outcome="delivered"}'] == 4
            assert m["journeys_outbox_retries_total"] == 0
        finally:
            worker.stop()
    finally:
        hook.close()

