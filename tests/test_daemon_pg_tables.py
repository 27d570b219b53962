"""The daemon's side tables and admin reads on both stores, the same behaviour on each: the trail
(engine.daemon.trail), forget-user and its tombstones (engine.daemon.api.forget, event_filter), the
scrub of erased identifiers (engine.daemon.erasure), the user view, journey counts, dead letters, and
the Prometheus figures (engine.daemon.metrics.render_metrics). Each test runs on a SQLite file and on a
real PostgreSQL schema (the `pg_url` fixture: skipped without a server, failed under CI=true).

The functions are called directly on the store, as the routes call them on the worker thread;
the end-to-end tests through a daemon on PostgreSQL come with the Worker's support for it."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from types import SimpleNamespace

import pytest

from connectors.base import ERASED
from connectors.identifiers import sha256_hex
from engine.store import sql
from engine.runtime.clock import VirtualClock
from engine.daemon.api import dead_letters, event_filter, failed_messages, forget, journey_counts, user_view
from engine.daemon.deliveries.dispatch import OutboxSink, Routes
from engine.core.effects import Received
from engine.daemon.erasure import scrub
from engine.store.outbox import DEAD, DELIVERED, FAILED, Entry
from engine.core.program import Program
from engine.runtime.loop import Engine, handle_all
from journeys.checker import load_checked
from engine.store.serialize import utc_text
from engine.runtime.sinks import FanOut
from engine.dryrun.trace import Trace
from engine.daemon.trail import Trail, ids_of, read

from .engine_helpers import compile_source, message, t
from .test_trail import EVENTS  # an anonymous visit, its stitch to u1, and u2

SOURCE = """
journey "Welcome" {
  entry when event "Signed Up"
  add user to audience "warm"
  if user.plan == "pro" { send email "pro_welcome" } else { send email "welcome" }
  wait 1d
  send email "tips"
}
"""



@pytest.fixture(params=["sqlite", "postgres"])
def store(request, tmp_path):
    """A fresh store of each kind, with its outbox (and, SQLite, its inbox tables)."""
    if request.param == "sqlite":
        from engine.store.inbox import Inbox
        from engine.store.outbox import SqliteOutbox
        from engine.store.sqlite_store import SqliteStore

        s = SqliteStore(str(tmp_path / "store.db"))
        Inbox(s.conn)
        s.outbox, s.where = SqliteOutbox(s.conn), s.path
    else:
        from engine.store.pg_outbox import PostgresOutbox
        from engine.store.pg_store import PostgresStore

        url = request.getfixturevalue("pg_url")
        s = PostgresStore(url)
        s.outbox, s.where = PostgresOutbox(s.conn), url
    yield s
    s.close()


@pytest.fixture
def project(tmp_path):
    root = tmp_path / "p"
    program = Program.build(compile_source(root, SOURCE))
    return program, Routes.from_config(load_checked(root)[0].config)


def run(store, project, *sinks, until="2026-03-04 00:00"):
    program, routes = project
    trail = Trail(store)
    engine = Engine(program, store, VirtualClock(t("2026-03-02 08:00")),
                    FanOut(OutboxSink(store.outbox, routes), trail, *sinks))
    with store.transaction():
        handle_all(engine, [message(e, n) for n, e in enumerate(EVENTS)], t(until) if until else None)
    return trail


def test_the_trail_reads_back_across_stitched_ids(store, project):
    anon, u1, known = Trace("a-1"), Trace("u1"), Trace("u2")
    run(store, project, anon, u1, known)
    uid, ids = ids_of(store, "a-1")
    assert uid == "u1" and ids == ["a-1", "u1"]
    by_anon = read(store.conn, ids, 1000)
    assert anon.lines() and [r["line"] for r in by_anon] == anon.lines() + u1.lines()
    assert read(store.conn, ids_of(store, "u1")[1], 1000) == by_anon
    assert [r["line"] for r in read(store.conn, ["u2"], 1000)] == known.lines()
    assert by_anon[0]["time"] == "2026-03-02T09:00:00Z" and list(by_anon[0])[-1] == "line"
    for n in (1, 2, 5):
        assert read(store.conn, ids, n) == by_anon[-n:]
    # fewer rows than lines: a message's effects for one user are one row
    rows = sql.execute(store.conn, "SELECT count(*), sum(n) FROM trail").fetchone()
    assert rows[0] < rows[1] == len(by_anon) + len(known.lines())


def test_trail_rollback_and_prune_by_age_and_per_user(store):
    from datetime import timedelta

    trail = Trail(store, days=30, per_user=5)
    with pytest.raises(RuntimeError):
        with store.transaction():
            trail.emit([Received(t("2026-03-02 09:00"), "u1", "track", "X")])
            raise RuntimeError("the message failed")
    assert read(store.conn, ["u1"]) == []
    now = t("2026-03-31 12:00")
    with store.transaction():
        trail.emit([Received(now - timedelta(days=31, minutes=i), "old", "track", f"e{i}") for i in range(3)]
                   + [Received(now - timedelta(days=29), "calm", "track", "e0")])
        for i in range(12):
            trail.emit([Received(now - timedelta(minutes=100 - i), "bot", "track", f"e{i}")])
    assert trail.prune(now) == 3 + 7
    assert read(store.conn, ["old"]) == [] and len(read(store.conn, ["calm"])) == 1
    assert [r["name"] for r in read(store.conn, ["bot"])] == [f"e{i}" for i in range(7, 12)]
    assert trail.prune(now) == 0


def test_trail_and_action_rows_wait_for_the_commit_and_go_with_a_rollback(store):
    """engine.store.write_behind: inside a transaction the trail's and the action log's rows are
    written at the commit (one statement per table); a savepoint that rolls back takes its rows
    with it, the outer block keeps its own; outside a transaction they are written at once."""
    from .test_store_contract import action

    trail = Trail(store, days=30)

    def logged():
        return (sorted(r["name"] for r in read(store.conn, ["u1"])),
                sorted(r[0] for r in sql.execute(store.conn, "SELECT id FROM actions")))

    with store.transaction():
        trail.emit([Received(t("2026-03-02 09:00"), "u1", "track", "kept")])
        store.record([action("a-kept")])
        assert logged() == ([], [])  # not yet: at the commit
        with pytest.raises(RuntimeError):
            with store.transaction():
                trail.emit([Received(t("2026-03-02 09:01"), "u1", "track", "undone")])
                store.record([action("a-undone")])
                raise RuntimeError("the inner block failed")
        store.record([action("a-kept", reason="recorded twice: the later stays")])
    assert logged() == (["kept"], ["a-kept"])
    (reason,) = sql.execute(store.conn, "SELECT reason FROM actions WHERE id = 'a-kept'").fetchone()
    assert reason == "recorded twice: the later stays"
    with pytest.raises(RuntimeError):
        with store.transaction():
            trail.emit([Received(t("2026-03-02 09:02"), "u1", "track", "rolled back")])
            store.record([action("a-rolled-back")])
            raise RuntimeError("the message failed")
    trail.emit([Received(t("2026-03-02 09:03"), "u1", "track", "alone")])  # no transaction: at once
    store.record([action("a-alone")])
    assert logged() == (["alone", "kept"], ["a-alone", "a-kept"])


def test_forget_deletes_everything_and_leaves_a_tombstone_the_filter_honours(store, project, tmp_path):
    from engine.daemon.erasure import keyed

    lines = run(store, project, until=None)
    del lines
    config = load_checked(tmp_path / "p")[0].config
    outbox = store.outbox
    assert {e.user_id for e in outbox.by_state("pending")} == {"u1", "u2"}
    keep = event_filter(store.conn)
    msg = message(("2026-03-05 10:00", ("u1", "a-1"), "Signed Up"))
    assert keep([msg]) == [True]
    traced = len(read(store.conn, ["u1", "a-1"], 1000))
    now = t("2026-03-05 09:00")
    with store.transaction():
        body = forget(store, outbox, "a-1", now, config)
    assert body["userId"] == "u1" and body["forgotten"] == ["a-1", "u1"]
    assert body["deleted"]["profiles"] == 1 and body["deleted"]["instances"] == 1
    assert body["deleted"]["identities"] == 1 and body["deleted"]["trail"] == traced > 0
    assert body["deleted"]["outbox"] >= 1 and body["deleted"]["action_payloads"] >= 1
    assert [(a["audience"], a["connector"]) for a in body["audiences_removed"]] == [("warm", "meta")]
    q = lambda text, *p: sql.execute(store.conn, text, p).fetchall()  # noqa: E731
    ((key,),) = q("SELECT key FROM erasure")
    h = lambda i: keyed(bytes.fromhex(key), i)  # noqa: E731
    assert store.load("u1") is None and store.resolve("a-1") is None
    assert q("SELECT count(*) FROM trail WHERE user_id IN ('u1', 'a-1')") == [(0,)]
    assert q("SELECT count(*) FROM identities WHERE user_id = 'u1'") == [(0,)]
    assert q('SELECT count(*) FROM actions WHERE "user" IN (?, ?)', "u1", "a-1") == [(0,)]
    assert q('SELECT count(*) FROM actions WHERE "user" = ? AND json IS NOT NULL', h("u1")) == [(0,)]
    assert q('SELECT count(*) FROM actions WHERE "user" = ?', h("u1"))[0][0] > 0  # the rows stay, keyed
    left = [e for e in outbox.by_state("pending") if e.user_id == h("u1")]
    assert [e.kind for e in left] == ["audience_remove"]  # only the removal, carrying Meta's hashes
    assert json.loads(left[0].payload)["data"][ERASED] == {"meta": {"EMAIL": sha256_hex("ann@example.com")}}
    assert not [e for e in outbox.by_state("pending") if e.user_id in ("u1", "a-1")]
    assert keep([msg, message(("2026-03-05 10:00", ("anon", "a-1"), "Page Viewed")),
                 message(("2026-03-05 10:00", "u2", "Page Viewed"))]) == [False, False, True]
    assert keep([]) == []
    assert q("SELECT id_hash, at FROM forgotten ORDER BY id_hash") == sorted(
        [(h("a-1"), "2026-03-05T09:00:00.000000Z"), (h("u1"), "2026-03-05T09:00:00.000000Z")])
    assert read(store.conn, ["u2"], 1000)  # another user's trail stays
    with store.transaction():  # forgetting again: nothing more, the same tombstones
        again = forget(store, outbox, "u1", now, config)
    assert again["deleted"]["profiles"] == 0 and again["deleted"]["trail"] == 0
    assert again["deleted"]["action_payloads"] == 0
    assert q("SELECT count(*) FROM forgotten") == [(2,)]
    assert [e.id for e in outbox.by_state("pending") if e.user_id == h("u1")] == [left[0].id]  # still queued

    # a dead letter keeps its hashes, for an operator's retry; a delivered removal drops them, once
    removal = left[0]
    with store.transaction():
        outbox.save(removal.evolve(state=FAILED, attempts=1))
        assert scrub(store.conn) == 0
        outbox.save(removal.evolve(state=DELIVERED, attempts=1))
        assert scrub(store.conn) == 1
        assert scrub(store.conn) == 0
    assert json.loads(outbox.get(removal.id).payload)["data"] == {}


def test_user_view_journey_counts_and_dead_letters(store, project):
    run(store, project, until="2026-03-02 12:00")
    view = user_view(store, store.outbox, "a-1")
    assert view["userId"] == "u1" and view["aliases"] == ["a-1"] and view["audiences"] == ["warm"]
    assert [j["journey"] for j in view["journeys"]] == ["Welcome"]
    acts = view["recent_actions"]
    assert sorted((a["kind"], a["target"]) for a in acts) == [("audience_add", "warm"), ("email", "pro_welcome")]
    assert [a["id"] for a in acts] == sorted((a["id"] for a in acts), reverse=True)  # same time: by id, newest first
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", a["time"]) for a in acts)
    assert user_view(store, store.outbox, "nobody") is None
    counts = journey_counts(store.conn)
    assert [(j["journey"], j["in_flight"]) for j in counts["journeys"]] == [("Welcome", 2)]
    (step,) = counts["journeys"][0]["steps"]
    assert step["users"] == 2 and step["wait"] is not None

    entries = sorted(store.outbox.by_state("pending"), key=lambda e: e.id)
    with store.transaction():
        store.outbox.save(entries[0].evolve(state=DEAD, attempts=5, last_error="503 busy"))
        store.outbox.save(entries[1].evolve(state=FAILED, attempts=1, last_error="400 bad"))
    dead = dead_letters(store.outbox, DEAD, 100)["entries"]
    assert [(e["id"], e["attempts"], e["last_error"]) for e in dead] == [(entries[0].id, 5, "503 busy")]
    assert dead[0]["created"] == utc_text(entries[0].created) and dead[0]["created"].startswith("2026-03-02T09:0")
    assert [e["id"] for e in dead_letters(store.outbox, FAILED, 100)["entries"]] == [entries[1].id]
    # without a state: every entry that will not be retried, dead or failed for good, by id
    both = dead_letters(store.outbox, None, 100)["entries"]
    assert [(e["id"], e["state"], e["last_error"]) for e in both] == [
        (entries[0].id, DEAD, "503 busy"), (entries[1].id, FAILED, "400 bad")]
    assert [e["id"] for e in dead_letters(store.outbox, None, 1)["entries"]] == [entries[0].id]


def test_recent_actions_join_the_decision_and_what_became_of_its_delivery(store, project):
    """`recent_actions` on both stores: each action's `outcome` (the engine's decision, an audience
    change named `updated`) and its `status` from its outbox entries: delivered, failed with the
    error, retrying with attempts and the next try, queued for a batch, suppressed with the rule,
    deferred until when, and unknown when no entry is left."""
    from datetime import timedelta

    from engine.store.outbox import PENDING, QUEUED

    from .test_store_contract import action

    run(store, project, until="2026-03-02 12:00")
    outbox = store.outbox
    mine = {e.kind: e for e in outbox.by_state(PENDING) if e.user_id == "u1"}
    assert set(mine) == {"audience_add", "email"}
    now = t("2026-03-02 12:00")
    at = lambda minutes: now + timedelta(minutes=minutes)  # noqa: E731
    recorded = [
        action("held", "deferred", time=at(1), path="x/1", target="night", reason="quiet hours",
               rule="quiet hours 21:00-08:00 user time", until=t("2026-03-03 08:00")),
        action("capped", "suppressed", time=at(2), path="x/2", target="again", reason="cap",
               rule="journey: email 1 per 1d"),
        action("hook", time=at(3), path="x/3", kind="webhook", channel="webhook", target="crm_nudge"),
        action("batched", time=at(4), path="x/4", kind="audience_add", channel="ads", target="warm_browsers"),
        action("split", time=at(5), path="x/5", kind="audience_add", channel="ads", target="hot_browsers"),
        action("lost", time=at(6), path="x/6", kind="email", target="gone"),  # no entry: none is left
    ]

    def entry(action_id, connector, state, attempts=0, error=None, next_at=now):
        return Entry(action_id, connector, "u1", "x", "x", "{}", now, next_at, state, attempts, error)

    with store.transaction():
        store.record(recorded)
        outbox.save(mine["audience_add"].evolve(state=DELIVERED, attempts=1))
        outbox.save(mine["email"].evolve(state=FAILED, attempts=1, last_error="550 no such user"))
        outbox.add([entry("hook", "webhook:crm_nudge", PENDING, 2, "503 busy", at(9)),
                    entry("batched", "meta", QUEUED),
                    entry("split", "meta", DELIVERED, 1), entry("split", "google", DEAD, 8, "500 down")])
    view = user_view(store, outbox, "a-1")
    acts = {a["target"]: a for a in view["recent_actions"]}
    assert [a["id"] for a in view["recent_actions"]][:6] == ["lost", "split", "batched", "hook", "capped", "held"]

    def status(target):
        a = acts[target]
        return a["outcome"], a["status"], a["error"], a["attempts"], a["next_try"]

    assert status("warm") == ("updated", "updated", None, 1, None)
    assert status("pro_welcome") == ("sent", "failed", "550 no such user", 1, None)
    assert status("crm_nudge") == ("sent", "retrying", "503 busy", 2, utc_text(at(9)))
    assert status("hot_browsers") == ("updated", "failed", "500 down", 8, None)  # one of its two failed for good
    assert status("again") == ("suppressed", "suppressed", None, 0, None)
    assert (acts["again"]["reason"], acts["again"]["rule"]) == ("cap", "journey: email 1 per 1d")
    assert status("night") == ("deferred", "deferred", None, 0, None)
    assert acts["night"]["until"] == "2026-03-03T08:00:00.000000Z"
    assert status("gone") == ("sent", "unknown", None, 0, None)
    batched = acts["warm_browsers"]
    assert (batched["outcome"], batched["status"]) == ("updated", "pending")  # in a batch, not flushed yet
    assert [(d["connector"], d["state"], d["last_error"]) for d in acts["hot_browsers"]["deliveries"]] == [
        ("google", "dead", "500 down"), ("meta", "delivered", None)]
    (email,) = acts["pro_welcome"]["deliveries"]  # an entry as /admin/dead-letters shows it
    assert email == dead_letters(outbox, FAILED, 10)["entries"][0]
    assert (email["id"], email["connector"], email["state"], email["last_error"]) == (
        mine["email"].id, "smtp", "failed", "550 no such user")
    assert acts["again"]["deliveries"] == [] and acts["night"]["until"] is not None


def inbox_of(store):
    if hasattr(store, "schema"):
        from engine.store.pg_inbox import PostgresInbox

        return PostgresInbox(store.conn, store.schema)
    from engine.store.inbox import Inbox

    return Inbox(store.conn)


def test_a_message_set_aside_is_listed_and_requeued_once(store):
    from engine.store.inbox import message_to_json
    from engine.core.messages import parse_message

    inbox = inbox_of(store)
    good = message_to_json(parse_message({"type": "track", "userId": "u1", "event": "Signed Up",
                                          "messageId": "m1", "timestamp": "2026-03-02T10:00:00Z"}))
    with store.transaction():
        inbox.append_rows([("2026-03-02T09:59:00.000000Z", good), ("2026-03-02T09:59:00.000000Z", b"{not json")])
    (first, _, _), (second, _, _) = inbox.next_batch(range(64), 10)
    with store.transaction():
        inbox.set_aside(first, good, "ValueError: a bug since fixed", t("2026-03-02 10:00"))
        inbox.set_aside(second, b"{not json", "MessageError: no type", t("2026-03-02 10:01"))
    assert inbox.next_batch(range(64), 10) == []
    listed = failed_messages(inbox, 100)["messages"]
    assert [(m["seq"], m["error"], m["at"]) for m in listed] == [
        (first, "ValueError: a bug since fixed", "2026-03-02T10:00:00.000000Z"),
        (second, "MessageError: no type", "2026-03-02T10:01:00.000000Z")]
    assert listed[0]["message"]["messageId"] == "m1" and listed[1]["message"] == "{not json"
    assert [m["seq"] for m in failed_messages(inbox, 1)["messages"]] == [first]

    with store.transaction():
        assert inbox.requeue(first, t("2026-03-02 11:00")) is True
        assert inbox.requeue(first, t("2026-03-02 11:00")) is False  # once: it has left the list
        assert inbox.requeue(second + 100, t("2026-03-02 11:00")) is False
    assert [m["seq"] for m in failed_messages(inbox, 100)["messages"]] == [second]
    waiting = inbox.next_batch(range(64), 10)
    assert [bytes(raw) for _, raw, _ in waiting] == [good]  # back in the inbox, as a new message
    assert waiting[0][0] > second


def families(text: str) -> dict[str, list[str]]:
    """Metric family -> its sample lines, values left out (the shape both stores must share)."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            out[line.split()[2]] = []
        elif line and not line.startswith("#"):
            name = re.split(r"[{ ]", line, maxsplit=1)[0]
            family = next(f for f in out if name == f or name.startswith(f + "_"))
            out[family].append(line.rsplit(" ", 1)[0])
    return out


def test_render_metrics_gives_the_same_families_on_both_stores(store, project):
    from engine.daemon.worker import Counts
    from engine.daemon.read_pool import close_all
    from engine.daemon.metrics import Lateness, render_metrics

    run(store, project, until="2026-03-02 12:00")
    now = t("2026-03-02 12:00")
    with store.transaction():
        store.outbox.add([Entry("x1", "smtp", "u9", "email", "welcome", "{}", now, now, DEAD, 3, "boom"),
                          Entry("x2", "smtp", "u9", "email", "welcome", "{}", now, now, FAILED, 1, "550 no such user")])
        raw = json.dumps({"type": "track", "userId": "u9", "event": "X"}).encode()
        if sql.is_sqlite(store.conn):
            store.conn.executemany("INSERT INTO inbox (received_at, raw) VALUES (?, ?)", [("t", raw)] * 3)
            store.conn.execute("UPDATE inbox_cursor SET processed = 1")
        else:
            store.conn.execute("INSERT INTO inbox (part, received_at, raw) VALUES (0, now(), %s), (0, now(), %s), "
                               "(0, now(), %s)", (raw, raw, raw))
            store.conn.execute("DELETE FROM inbox WHERE seq = (SELECT min(seq) FROM inbox)")  # processed
        inbox_of(store).set_aside(1, raw, "KeyError: a bug", now)  # the processed one
    counts = Counts()
    from .test_store_contract import action

    counts.emit([action("a1"), action("a2", kind="audience_add", channel="ads", target="warm"),
                 action("a3", kind="audience_remove", channel=None, target="warm"),
                 action("a4", "suppressed", kind="audience_add", channel="ads", target="warm", reason="cap")])
    worker = SimpleNamespace(path=store.where, counts=counts, store_open=True, running=True,
                             lateness=Lateness(), program=project[0])
    try:
        text = render_metrics(worker, None)
    finally:
        close_all()
    got = families(text)
    assert len(got.pop("journeys_journey_version")) == 1
    assert got == EXPECTED_FAMILIES, text
    value = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
             if line and not line.startswith("#")}
    assert value["journeys_events_accepted_total"] == 3 and value["journeys_events_processed_total"] == 1
    assert value["journeys_processing_lag"] == 2
    # timers_due compares with the wall clock: the virtual March waits are long due
    assert value["journeys_timers_waiting"] == 2 and value["journeys_timers_due"] == 2
    assert value['journeys_outbox_entries{state="dead"}'] == 1 and value['journeys_outbox_entries{state="failed"}'] == 1
    assert value["journeys_dead_letters"] == 2  # dead and failed for good: neither is retried
    assert value['journeys_outbox_entries{state="pending"}'] == 4
    # attempts are counted by the deliveries as they settle (none here), not summed over rows retention deletes
    assert value["journeys_outbox_attempts_total"] == 0 and value["journeys_outbox_retries_total"] == 0
    assert value["journeys_outbox_oldest_age_seconds"] > 0  # the pending entries of the virtual March
    assert value["journeys_inbox_failed"] == 1
    # an audience change that passed is an update, not a send
    assert value['journeys_actions_total{channel="email",outcome="sent"}'] == 1
    assert value['journeys_actions_total{channel="audience_add",outcome="updated"}'] == 1
    assert value['journeys_actions_total{channel="audience_remove",outcome="updated"}'] == 1
    assert value['journeys_actions_total{channel="audience_add",outcome="suppressed"}'] == 1


EXPECTED_FAMILIES = {
    "journeys_up": ["journeys_up"],
    "journeys_events_accepted_total": ["journeys_events_accepted_total"],
    "journeys_events_processed_total": ["journeys_events_processed_total"],
    "journeys_processing_lag": ["journeys_processing_lag"],
    "journeys_timers_due": ["journeys_timers_due"],
    "journeys_timers_waiting": ["journeys_timers_waiting"],
    "journeys_outbox_entries": [f'journeys_outbox_entries{{state="{s}"}}'
                                for s in ("dead", "delivered", "failed", "pending")],
    "journeys_outbox_oldest_age_seconds": ["journeys_outbox_oldest_age_seconds"],
    "journeys_dead_letters": ["journeys_dead_letters"],
    "journeys_inbox_failed": ["journeys_inbox_failed"],
    "journeys_paused_journeys": ["journeys_paused_journeys"],  # 0: nothing paused (this SQLite file has no pauses table)
    "journeys_held_sends": ["journeys_held_sends"],
    "journeys_worker_processed_total": ["journeys_worker_processed_total"],
    "journeys_events_failed_total": ["journeys_events_failed_total"],
    "journeys_runs_parked_total": [],
    "journeys_connector_circuit_open": [],  # no deliveries in this test: no connector has a circuit yet
    "journeys_connector_down_since_seconds": [],
    "journeys_connector_consecutive_failures": [],
    "journeys_messages_received_total": [],
    "journeys_actions_total": [f'journeys_actions_total{{channel="{c}",outcome="{o}"}}' for c, o in (
        ("audience_add", "suppressed"), ("audience_add", "updated"), ("audience_remove", "updated"),
        ("email", "sent"))],
    "journeys_actions_unroutable_total": ["journeys_actions_unroutable_total"],
    "journeys_outbox_attempts_total": ["journeys_outbox_attempts_total"],
    "journeys_outbox_retries_total": ["journeys_outbox_retries_total"],
    "journeys_delivery_attempts_total": [],
    "journeys_timer_lateness_seconds": [f'journeys_timer_lateness_seconds_bucket{{le="{b}"}}' for b in (
        "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "10.0", "30.0", "60.0",
        "300.0", "+Inf")] + ["journeys_timer_lateness_seconds_count", "journeys_timer_lateness_seconds_sum"],
}
