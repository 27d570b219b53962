"""`journeys serve`'s hot reload and /metrics, on a real daemon process: a changed journey is
picked up after SIGHUP and when its file changes, users in flight stay on the version they entered
while new users take the new one, a broken file leaves the running version in place and shows its
diagnostic in /readyz, and the Prometheus metrics parse and move with the events."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest

from .test_daemon import daemons, eventually, rows, tiny_project  # noqa: F401 - daemons is a fixture
from .test_smtp import free_port

JOURNEY = """\
journey "Hello" {{
  entry when event "Signed Up"
  wait {wait}
  send email "hello"
}}
"""


def project(tmp_path: Path) -> Path:
    root = tiny_project(tmp_path / "tiny", free_port())  # no mail goes out: the wait is long
    (root / "journeys" / "hello.journey").write_text(JOURNEY.format(wait="20m"))
    return root


def version_of(root: Path) -> str:
    from journeys.checker import load_checked

    return load_checked(root)[1].journeys["Hello"].version


def ready(d) -> dict:
    return d.readiness()


def entered(d, db: Path, user: str) -> str:
    assert d.post("track", {"userId": user, "event": "Signed Up"}).status_code == 200
    ((version,),) = eventually(lambda: rows(db, "SELECT version FROM instances WHERE user_id = ?", user))
    return version


def edit(path: Path, text: str) -> None:
    before = path.stat().st_mtime_ns
    path.write_text(text)
    while path.stat().st_mtime_ns == before:  # a coarse file system clock: make the change visible
        time.sleep(0.01)
        path.write_text(text)


def test_sighup_reloads_users_in_flight_keep_their_version(tmp_path, daemons):
    root = project(tmp_path)
    db = root / "data" / "tiny.db"
    old = version_of(root)
    d = daemons(root, None, JOURNEYS_RELOAD_POLL="0")  # no watching: only the signal reloads
    assert ready(d)["versions"] == {"Hello": old}
    assert entered(d, db, "early") == old

    edit(root / "journeys" / "hello.journey", JOURNEY.format(wait="30m"))
    new = version_of(root)
    assert new != old
    time.sleep(1.5)
    assert ready(d)["versions"] == {"Hello": old}  # not watched: nothing changes before the signal

    d.proc.send_signal(signal.SIGHUP)
    eventually(lambda: ready(d)["versions"] == {"Hello": new})
    body = ready(d)
    assert body["reload_errors"] == [] and body["reloads"] == {"ok": 1, "failed": 0}
    assert entered(d, db, "late") == new
    assert rows(db, "SELECT user_id, version FROM instances ORDER BY user_id") == [("early", old), ("late", new)]
    assert f"reloaded: 1 journeys, versions changed: Hello {old} -> {new}" in d.log.read_text()
    assert d.stop() == 0


def test_a_changed_file_reloads_and_a_broken_one_keeps_the_running_version(tmp_path, daemons):
    root = project(tmp_path)
    db = root / "data" / "tiny.db"
    old = version_of(root)
    d = daemons(root, None)
    assert entered(d, db, "early") == old

    source = root / "journeys" / "hello.journey"
    edit(source, JOURNEY.format(wait="30m"))
    new = version_of(root)
    eventually(lambda: ready(d)["versions"] == {"Hello": new}, timeout=10)
    assert entered(d, db, "late") == new

    # broken: the running version stays, and /readyz says what is wrong and where
    edit(source, JOURNEY.format(wait="30m").replace("wait 30m", "wait banana"))
    eventually(lambda: ready(d)["reload_errors"], timeout=10)
    body = ready(d)
    assert body["ready"] and body["versions"] == {"Hello": new}
    assert body["reloads"] == {"ok": 1, "failed": 1}
    (error,) = body["reload_errors"]
    assert "hello.journey:3:" in error, error
    assert "hello.journey:3:" in d.log.read_text()
    assert entered(d, db, "during") == new  # the daemon still runs the last good version

    # fixed: the errors clear
    edit(source, JOURNEY.format(wait="40m"))
    eventually(lambda: ready(d)["reload_errors"] == [] and ready(d)["versions"]["Hello"] != new, timeout=10)
    versions = dict(rows(db, "SELECT user_id, version FROM instances"))
    assert versions == {"early": old, "late": new, "during": new}
    assert d.stop() == 0


def metrics(d) -> dict[str, list]:
    from prometheus_client.parser import text_string_to_metric_families

    assert httpx.get(d.url + "/metrics", timeout=5).status_code == 401  # the operator's: behind the admin token
    r = httpx.get(d.url + "/metrics", headers=d.operator, timeout=5)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def value(m: dict, name: str, **labels: str) -> float:
    return sum(v for got, v in m.get(name, []) if all(got.get(k) == x for k, x in labels.items()))


def test_metrics_parse_and_move_with_events(tmp_path, daemons):
    pytest.importorskip("prometheus_client")
    root = project(tmp_path)
    db = root / "data" / "tiny.db"
    d = daemons(root, None)
    before = metrics(d)
    assert value(before, "journeys_up") == 1
    assert value(before, "journeys_events_accepted_total") == 0
    assert value(before, "journeys_journey_version", journey="Hello", version=version_of(root)) == 1
    for state in ("pending", "delivered", "failed", "dead"):
        assert value(before, "journeys_outbox_entries", state=state) == 0
    assert "journeys_timer_lateness_seconds_count" in before
    assert value(before, "journeys_reloads_total", result="ok") == 0

    assert d.post("identify", {"userId": "m1", "traits": {"email": "m1@example.com"}}).status_code == 200
    entered(d, db, "m1")

    def moved():
        m = metrics(d)
        return (value(m, "journeys_events_accepted_total") == 2 and value(m, "journeys_events_processed_total") == 2
                and value(m, "journeys_processing_lag") == 0 and m)

    m = eventually(moved)
    assert value(m, "journeys_worker_processed_total") == 2
    assert value(m, "journeys_messages_received_total", type="track") == 1
    assert value(m, "journeys_messages_received_total", type="identify") == 1
    assert value(m, "journeys_timers_waiting") == 1 and value(m, "journeys_timers_due") == 0

    # a reload shows in the counters and in the versions loaded (the old one kept for m1)
    old = version_of(root)
    edit(root / "journeys" / "hello.journey", JOURNEY.format(wait="30m"))
    new = version_of(root)
    m = eventually(lambda: (lambda m: value(m, "journeys_reloads_total", result="ok") == 1 and m)(metrics(d)),
                   timeout=10)
    assert value(m, "journeys_journey_version", journey="Hello", version=new) == 1
    assert value(m, "journeys_journey_version", journey="Hello", version=old) == 0
    assert len(m["journeys_journey_version"]) == 2
    assert d.stop() == 0


def test_fired_timers_are_measured_and_actions_counted(tmp_path, daemons):
    pytest.importorskip("prometheus_client")
    root = project(tmp_path)
    (root / "journeys" / "hello.journey").write_text(JOURNEY.format(wait="1s"))
    db = root / "data" / "tiny.db"
    d = daemons(root, None, JOURNEYS_UNSUBSCRIBE_SECRET="unsubscribe-secret-for-tests-0123456789")
    assert d.post("identify", {"userId": "t1", "traits": {"email": "t1@example.com"}}).status_code == 200
    entered(d, db, "t1")
    eventually(lambda: rows(db, "SELECT count(*) FROM instances") == [(0,)], timeout=5)
    m = eventually(lambda: (lambda m: value(m, "journeys_timer_lateness_seconds_count") >= 1 and m)(metrics(d)))
    assert value(m, "journeys_timer_lateness_seconds_bucket", le="+Inf") >= 1
    assert value(m, "journeys_timer_lateness_seconds_bucket", le="1.0") >= 1  # fired within a second of due
    assert value(m, "journeys_actions_total", channel="email", outcome="sent") == 1
    # nobody listens on the SMTP port: the delivery fails and is retried later (pending or failed)
    m = eventually(lambda: (lambda m: sum(v for _, v in m["journeys_outbox_entries"]) == 1 and m)(metrics(d)))
    assert d.stop() == 0
