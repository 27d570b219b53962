"""The emergency stop on a real `journeys serve` process, with a real SMTP server: a paused journey
runs on (users enter, the engine decides and logs its sends) while nothing of it reaches the SMTP
server and other journeys still send; a resume with held=release delivers what was held, in the
order it was decided (the raw messages the server got), held=drop delivers nothing and says so in
the user's trail and recent actions; pausing `*` holds every send; every pause and resume is in the
pause log (GET /admin/pauses/log, newest first), the daemon's log (JSON fields) and /metrics; bad
requests are JSON errors naming their field. And two workers on one PostgreSQL database: a pause taken by one holds the sends of both.

"Within a second on every worker" is the delivery loops' poll interval (engine.daemon.admin.pauses.POLL,
asserted at most 1 s in tests/test_pauses.py, where the view's age is checked exactly): each test
waits that interval after the pause, then asserts that everything sent from then on is held."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest

from engine.daemon.admin.pause_store import POLL

from .test_daemon import Daemon, daemons, eventually, rows, tiny_project  # noqa: F401 - fixtures
from .test_daemon_api import ADMIN, BEARER, caught_up
from .test_smtp import Server

SECRET = "unsubscribe-secret-for-tests-0123456789"
JOURNEYS = {
    "hello.journey": 'journey "Hello" {\n  entry when event "Signed Up"\n  send email "hello"\n'
                     '  wait 1h\n  send email "hello"\n}\n',
    "thanks.journey": 'journey "Thanks" {\n  entry when event "Ordered"\n  send email "thanks"\n}\n',
}
TEMPLATES = {
    "hello.j2": '---\nsubject: "Hello"\nfrom: "Shop <hello@shop.example.com>"\n---\n'
                '<p>Hello {{ user.first_name }}.</p><p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>\n',
    "thanks.j2": '---\nsubject: "Thanks"\nfrom: "Shop <hello@shop.example.com>"\n---\n'
                 '<p>Thanks {{ user.first_name }}.</p><p><a href="{{ unsubscribe_url }}">Unsubscribe</a></p>\n',
}


def pause_project(root: Path, smtp_port: int) -> Path:
    """tiny_project's SMTP settings, one delivery at a time (so messages arrive in the order they
    are attempted), and two journeys: "Hello" (a send, then a user waits an hour in it) and "Thanks"."""
    tiny_project(root, smtp_port)
    (root / "journeys" / "hello.journey").unlink()
    toml = root / "journeys.toml"
    toml.write_text(toml.read_text().replace("default = true", "default = true\nconcurrency = 1"))
    for name, text in JOURNEYS.items():
        (root / "journeys" / name).write_text(text)
    for name, text in TEMPLATES.items():
        (root / "templates" / "email" / name).write_text(text)
    return root


def sign_up(d: Daemon, uid: str, event: str = "Signed Up") -> None:
    assert d.post("identify", {"userId": uid, "traits": {"email": f"{uid}@example.com",
                                                         "first_name": uid.upper()}}).status_code == 200
    assert d.post("track", {"userId": uid, "event": event}).status_code == 200


def greeted(smtp: Server) -> list[str]:
    """Who got which message, in the order the SMTP server took them: `HELLO U1`, `THANKS U5`."""
    out = []
    for _, _, raw, _ in list(smtp.handler.messages):
        text = raw.decode("utf-8", "replace").replace("=\r\n", "")
        out += [f"{word.upper()} {text.split(f'<p>{word} ', 1)[1].split('.', 1)[0]}"
                for word in ("Hello", "Thanks") if f"<p>{word} " in text]
    return out


def pauses(d: Daemon) -> list[dict]:
    r = httpx.get(d.url + "/admin/pauses", headers=BEARER)
    assert r.status_code == 200, r.text
    return r.json()["pauses"]


def held(d: Daemon, journey: str) -> int:
    return next((p["held"] for p in pauses(d) if p["journey"] == journey), -1)


def metric(d: Daemon, name: str) -> float:
    text = httpx.get(d.url + "/metrics", headers=BEARER).text
    return float(next(line.split()[-1] for line in text.splitlines() if line.startswith(name + " ")))


@pytest.fixture()
def smtp():
    server = Server().start()
    yield server
    server.stop()


@pytest.fixture()
def served(tmp_path, daemons, smtp):
    """A daemon of `pause_project` on SQLite, sending to `smtp`, with the admin token: (daemon, its store file)."""
    project = pause_project(tmp_path / "p", smtp.port)
    d = daemons(project, None, JOURNEYS_ADMIN_TOKEN=ADMIN, JOURNEYS_UNSUBSCRIBE_SECRET=SECRET)
    return d, project / "data" / "tiny.db"


def test_a_paused_journey_runs_on_its_sends_are_held_and_a_release_delivers_them_in_order(served, smtp):
    d, db = served
    sign_up(d, "u0")
    eventually(lambda: greeted(smtp) == ["HELLO U0"], timeout=10)

    r = httpx.post(d.url + "/admin/pauses", headers=BEARER,
                   json={"journey": "Hello", "by": "ann@laptop", "reason": "wrong coupon"})
    assert r.status_code == 200, r.text
    paused = r.json()["paused"]
    assert {k: paused[k] for k in ("journey", "by", "reason", "held")} == {
        "journey": "Hello", "by": "ann@laptop", "reason": "wrong coupon", "held": 0}
    again = httpx.post(d.url + "/admin/pauses", headers=BEARER, json={"journey": "Hello", "by": "someone"})
    assert again.status_code == 200 and again.json()["paused"] == paused  # idempotent: as it was
    time.sleep(POLL)  # every delivery loop's view of the pauses is younger than this

    for uid in ("u1", "u2", "u3", "u4"):
        sign_up(d, uid)
    sign_up(d, "u5", "Ordered")  # another journey: not paused
    eventually(lambda: held(d, "Hello") == 4, timeout=10)
    eventually(lambda: "THANKS U5" in greeted(smtp), timeout=10)
    assert greeted(smtp) == ["HELLO U0", "THANKS U5"]  # none of the held ones went out

    # the journey ran on: the engine decided the sends, the users wait in the journey
    assert rows(db, "SELECT \"user\", outcome FROM actions WHERE journey = 'Hello' AND \"user\" != 'u0' "
                    "ORDER BY \"user\"") == [(u, "sent") for u in ("u1", "u2", "u3", "u4")]
    assert rows(db, "SELECT count(*) FROM instances WHERE journey = 'Hello'") == [(5,)]
    assert rows(db, "SELECT DISTINCT state, attempts FROM outbox WHERE user_id IN ('u1', 'u2', 'u3', 'u4')") == \
        [("held", 0)]  # held, never attempted
    view = httpx.get(d.url + "/admin/users/u1", headers=BEARER).json()
    assert [a["status"] for a in view["recent_actions"]] == ["held"]
    assert metric(d, "journeys_paused_journeys") == 1 and metric(d, "journeys_held_sends") == 4

    # resuming asks what becomes of the held sends
    for query, wanted in (("", "4 sends of journey 'Hello' are held"), ("?held=later", "held: release")):
        r = httpx.delete(d.url + "/admin/pauses/Hello" + query, headers=BEARER)
        assert r.status_code == 400 and r.json()["field"] == "held" and wanted in r.json()["error"], r.text
    assert held(d, "Hello") == 4

    r = httpx.delete(d.url + "/admin/pauses/Hello?held=release&by=bob@desk", headers=BEARER, timeout=30)
    assert r.status_code == 200 and r.json() == {"resumed": "Hello", "released": 4, "dropped": 0}, r.text
    eventually(lambda: len(greeted(smtp)) == 6, timeout=15)
    assert greeted(smtp) == ["HELLO U0", "THANKS U5", "HELLO U1", "HELLO U2", "HELLO U3", "HELLO U4"]
    eventually(lambda: rows(db, "SELECT DISTINCT state FROM outbox") == [("delivered",)])
    assert pauses(d) == [] and metric(d, "journeys_paused_journeys") == 0 and metric(d, "journeys_held_sends") == 0
    assert "released after a pause" in httpx.get(d.url + "/admin/users/u1/trace", headers=BEARER).text

    assert rows(db, "SELECT journey, event, by_whom, reason, held, released FROM pause_log ORDER BY id") == [
        ("Hello", "paused", "ann@laptop", "wrong coupon", None, None),
        ("Hello", "resumed", "bob@desk", None, "release", 4)]

    # every send paused, one send held and dropped: the pause log lists all four, newest first
    r = httpx.post(d.url + "/admin/pauses", headers=BEARER, json={"journey": "*", "by": "cy@ops", "reason": "audit"})
    assert r.status_code == 200, r.text
    time.sleep(POLL)
    sign_up(d, "u6", "Ordered")
    eventually(lambda: held(d, "*") == 1, timeout=10)
    r = httpx.delete(d.url + "/admin/pauses/*?held=drop&by=dee@ops", headers=BEARER, timeout=30)
    assert r.status_code == 200 and r.json() == {"resumed": "*", "released": 0, "dropped": 1}, r.text
    r = httpx.get(d.url + "/admin/pauses/log", headers=BEARER)
    assert r.status_code == 200, r.text
    log = r.json()["log"]
    assert [{k: e[k] for k in ("journey", "event", "by", "reason", "held", "released", "dropped")} for e in log] == [
        {"journey": "*", "event": "resumed", "by": "dee@ops", "reason": None, "held": "drop", "released": 0,
         "dropped": 1},
        {"journey": "*", "event": "paused", "by": "cy@ops", "reason": "audit", "held": None, "released": None,
         "dropped": None},
        {"journey": "Hello", "event": "resumed", "by": "bob@desk", "reason": None, "held": "release", "released": 4,
         "dropped": 0},
        {"journey": "Hello", "event": "paused", "by": "ann@laptop", "reason": "wrong coupon", "held": None,
         "released": None, "dropped": None}]
    assert [e["at"] for e in log] == sorted((e["at"] for e in log), reverse=True)
    assert all(e["at"].endswith("Z") for e in log) and log[-1]["at"] == paused["since"]
    one = httpx.get(d.url + "/admin/pauses/log", headers=BEARER, params={"journey": "Hello", "limit": 1}).json()
    assert one == {"log": log[2:3]}
    assert httpx.get(d.url + "/admin/pauses/log?journey=Nope", headers=BEARER).json() == {"log": []}

    assert d.stop() == 0
    logged = [json.loads(line) for line in d.log.read_text().splitlines() if line.startswith("{")]
    said = [(e["pause"], e["journey"], e["by"]) for e in logged if "pause" in e]
    assert said == [("paused", "Hello", "ann@laptop"), ("resumed", "Hello", "bob@desk"), ("paused", "*", "cy@ops"),
                    ("resumed", "*", "dee@ops")]
    assert all(e["level"] == "INFO" for e in logged if "pause" in e)



def test_pausing_every_send_then_dropping_delivers_nothing_and_the_trail_says_so(served, smtp):
    d, db = served
    r = httpx.post(d.url + "/admin/pauses", headers=BEARER, json={"journey": "*"})
    assert r.status_code == 200 and r.json()["paused"]["by"] == "admin API (127.0.0.1)", r.text
    time.sleep(POLL)
    sign_up(d, "u1")
    sign_up(d, "u2", "Ordered")
    eventually(lambda: held(d, "*") == 2, timeout=10)
    caught_up(d)

    # Hello is not paused itself (* holds its sends): nothing to resume there
    r = httpx.delete(d.url + "/admin/pauses/Hello?held=release", headers=BEARER)
    assert r.status_code == 404 and r.json()["field"] == "journey", r.text
    r = httpx.delete(d.url + "/admin/pauses/*?held=drop&by=bob@desk", headers=BEARER, timeout=30)
    assert r.status_code == 200 and r.json() == {"resumed": "*", "released": 0, "dropped": 2}, r.text
    assert rows(db, "SELECT DISTINCT state FROM outbox") == [("dropped",)]
    time.sleep(2 * POLL)  # a round or two of the deliveries: they take nothing dropped
    assert smtp.handler.messages == []

    user = httpx.get(d.url + "/admin/users/u1", headers=BEARER).json()
    (action,) = user["recent_actions"]
    assert action["outcome"] == "sent" and action["status"] == "dropped"
    assert action["error"].startswith("dropped by pause: every send (*) paused by admin API (127.0.0.1) at ")
    trace = httpx.get(d.url + "/admin/users/u2/trace", headers=BEARER).json()["trail"]
    (line,) = [t["line"] for t in trace if "dropped by pause" in t["line"]]
    assert 'Thanks #1  email "thanks" dropped by pause' in line and "held=drop by bob@desk" in line

    # a new send after the resume goes out as usual
    sign_up(d, "u3", "Ordered")
    eventually(lambda: greeted(smtp) == ["THANKS U3"], timeout=10)



def test_bad_pause_requests_are_json_errors_naming_their_field(tmp_path, daemons):
    project = pause_project(tmp_path / "p", 9)  # nothing is sent here
    d = daemons(project, None, JOURNEYS_ADMIN_TOKEN=ADMIN, JOURNEYS_UNSUBSCRIBE_SECRET=SECRET)
    url = d.url + "/admin/pauses"
    assert httpx.get(url).status_code == 401
    assert httpx.post(url, json={"journey": "Hello"}).status_code == 401
    assert httpx.delete(url + "/Hello", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert httpx.get(url + "/log").status_code == 401
    assert httpx.get(url + "/log", headers={"Authorization": "Bearer wrong"}).status_code == 401
    for limit in ("0", "1001", "ten", "-1", ""):
        r = httpx.get(url + "/log", headers=BEARER, params={"limit": limit})
        assert r.status_code == 400 and r.json()["field"] == "limit", (limit, r.text)
        assert "a whole number from 1 to 1000" in r.json()["error"], r.text
    assert httpx.get(url + "/log", headers=BEARER, params={"limit": "1000"}).json() == {"log": []}
    for body, status, field in (({"journey": "Nope"}, 404, "journey"), ({}, 400, "journey"),
                                ({"journey": 3}, 400, "journey"), ({"journey": "Hello", "reason": ["x"]}, 400, "reason"),
                                ({"journey": "Hello", "by": "x" * 1001}, 400, "by")):
        r = httpx.post(url, headers=BEARER, json=body)
        assert r.status_code == status and r.json()["field"] == field, (body, r.text)
        assert r.json()["code"] and r.json()["message"] == r.json()["error"]
    for raw in (b"not json", b"[1]"):
        r = httpx.post(url, headers={**BEARER, "Content-Type": "application/json"}, content=raw)
        assert r.status_code == 400 and "JSON" in r.json()["error"], r.text
    r = httpx.delete(url + "/Hello?held=release", headers=BEARER)
    assert r.status_code == 404 and r.json()["field"] == "journey" and "not paused" in r.json()["error"]
    assert pauses(d) == []


def test_two_postgres_workers_hold_the_sends_of_a_journey_paused_on_either(tmp_path, pg_url, smtp):
    workers: list[Daemon] = []
    try:
        project = pause_project(tmp_path / "p", smtp.port)
        env = {"JOURNEYS_ADMIN_TOKEN": ADMIN, "JOURNEYS_UNSUBSCRIBE_SECRET": SECRET, "JOURNEYS_LEASE_TTL": "2"}
        workers = [Daemon(project, pg_url, tmp_path / f"w{i}.log", **env) for i in range(2)]

        def partitions(d: Daemon) -> int:
            return httpx.get(d.url + "/admin/readyz", headers=BEARER).json().get("partitions", {}).get("held", 0)

        eventually(lambda: all(partitions(w) > 0 for w in workers) and sum(map(partitions, workers)) == 64,
                   timeout=20)
        first, second = workers
        r = httpx.post(first.url + "/admin/pauses", headers=BEARER, json={"journey": "Hello", "by": "ann@laptop"})
        assert r.status_code == 200, r.text
        assert [(p["journey"], p["by"]) for p in pauses(second)] == [("Hello", "ann@laptop")]  # the store's
        time.sleep(POLL)

        users = [f"u{i}" for i in range(12)]  # spread over both workers' partitions
        for n, uid in enumerate(users):
            sign_up(workers[n % 2], uid)
        sign_up(second, "v1", "Ordered")
        eventually(lambda: held(second, "Hello") == len(users), timeout=20)
        eventually(lambda: greeted(smtp) == ["THANKS V1"], timeout=10)

        r = httpx.delete(second.url + "/admin/pauses/Hello?held=release&by=bob@desk", headers=BEARER, timeout=30)
        assert r.status_code == 200 and r.json()["released"] == len(users), r.text
        eventually(lambda: len(greeted(smtp)) == 1 + len(users), timeout=20)
        assert sorted(greeted(smtp)) == sorted(["THANKS V1"] + [f"HELLO {u.upper()}" for u in users])
        assert pauses(first) == []
    finally:
        for w in workers:
            w.stop()
