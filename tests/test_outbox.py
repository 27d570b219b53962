"""The outbox and the dispatcher: recorded before delivery, delivered once, retried with backoff,
failed with the provider's answer, dead once their connector's retry_for is over, held back by rate limits."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest

from connectors.base import Result
from connectors.errors import InvalidRecipient, PermanentError, RetryableError
from connectors.recording import RecordingConnector
from connectors.registry import RetryPolicy
from engine.daemon.deliveries.dispatch import Dispatcher, OutboxSink, Routes, TokenBucket, route, RoutingError
from engine.core.effects import Action
from engine.store.outbox import DEAD, DELIVERED, FAILED, PENDING, QUEUED, SENDING, Entry, MemoryOutbox, SqliteOutbox
from engine.store.pg_outbox import PostgresOutbox
from engine.store.pg_store import PostgresStore
from engine.store.sqlite_store import SqliteStore

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=timezone.utc)
ROUTES = Routes({"email": "smtp", "push": "fcm"}, {"hot": ("meta", "google")}, frozenset({"crm"}))


def action(n: int = 1, kind: str = "email", target: str = "welcome", outcome: str = "sent", via=None) -> Action:
    return Action(id=f"a{n}", time=T0, user=f"u{n}", journey="J", version="v1", entry=1, path="j/1", kind=kind,
                  channel=None, target=target, outcome=outcome, via=via, data={"code": "X"})


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def outbox(request, tmp_path):
    if request.param == "memory":
        yield MemoryOutbox()
    elif request.param == "sqlite":
        store = SqliteStore(str(tmp_path / "s.db"))
        yield SqliteOutbox(store.conn)
        store.close()
    else:  # a schema of its own per test (tests/conftest.py)
        with PostgresStore(request.getfixturevalue("pg_url")) as store:
            yield PostgresOutbox(store.conn)


def dispatcher(outbox, connectors, **kw):
    return Dispatcher(outbox, connectors, profiles=lambda uid: {"email": f"{uid}@example.com"},
                      rng=random.Random(1), **kw)


def test_routing_by_channel_via_audience_and_webhook():
    assert route(action(), ROUTES) == ["smtp"]
    assert route(action(via="ses"), ROUTES) == ["ses"]
    assert route(action(kind="audience_add", target="hot"), ROUTES) == ["meta", "google"]
    assert route(action(kind="webhook", target="crm"), ROUTES) == ["webhook:crm"]
    with pytest.raises(RoutingError):
        route(action(kind="sms"), ROUTES)


def test_only_sent_actions_enter_the_outbox_once_per_connector(outbox):
    sink = OutboxSink(outbox, ROUTES)
    sink.emit([action(1), action(2, outcome="suppressed"), action(3, kind="audience_add", target="hot")])
    sink.emit([action(1)])  # a replay adds nothing
    ids = sorted(e.id for e in outbox.due(T0))
    assert ids == ["a1:smtp", "a3:google", "a3:meta"]


def test_delivered_once(outbox):
    OutboxSink(outbox, ROUTES).emit([action(1)])
    smtp = RecordingConnector("smtp")
    d = dispatcher(outbox, {"smtp": smtp})
    assert d.run_due(T0) == 1 and d.run_due(T0 + timedelta(hours=1)) == 0
    assert [x.action_id for x in smtp.delivered] == ["a1"]
    delivered = smtp.delivered[0]
    assert delivered.profile == {"email": "u1@example.com"} and delivered.data == {"code": "X"}
    assert outbox.get("a1:smtp").state == DELIVERED


def test_retryable_errors_back_off_then_deliver(outbox, caplog):
    caplog.set_level("WARNING", logger="journeys.delivery")
    OutboxSink(outbox, ROUTES).emit([action(1)])
    smtp = RecordingConnector("smtp", fail=[RetryableError("down"), RetryableError("slow", retry_after=600)])
    d = dispatcher(outbox, {"smtp": smtp})
    d.run_due(T0)
    first = outbox.get("a1:smtp")
    assert first.state == PENDING and first.attempts == 1 and "down" in first.last_error
    assert timedelta(seconds=1) <= first.next_at - T0 <= timedelta(seconds=2)  # base 2 s, equal jitter
    assert [r.getMessage()[:40] for r in caplog.records] == ["a1:smtp: attempt 1 failed, retried in 1."]
    assert d.run_due(T0 + timedelta(milliseconds=500)) == 0  # not due yet
    d.run_due(first.next_at)
    second = outbox.get("a1:smtp")
    assert second.next_at - first.next_at >= timedelta(seconds=600)  # Retry-After wins when longer
    d.run_due(second.next_at)
    assert outbox.get("a1:smtp").state == DELIVERED and len(smtp.delivered) == 1 and len(smtp.attempts) == 3


def test_permanent_errors_are_recorded_with_the_answer(outbox):
    """(The dead token becomes a `Push Token Unregistered` event: tests/test_feedback_reports.py.)"""
    OutboxSink(outbox, ROUTES).emit([action(1), action(2, kind="push", target="hello")])
    d = dispatcher(outbox, {"smtp": RecordingConnector("smtp", fail=[PermanentError("bad", status=422, answer="no")]),
                            "fcm": RecordingConnector("fcm", "push", fail=[InvalidRecipient("gone", stale="tok-1")])})
    d.run_due(T0)
    assert outbox.get("a1:smtp").state == FAILED and outbox.get("a1:smtp").last_error == "bad (HTTP 422): no"
    assert outbox.get("a2:fcm").state == FAILED


def test_dead_once_its_retry_for_has_passed_and_an_operator_retry(outbox):
    OutboxSink(outbox, ROUTES).emit([action(1)])
    smtp = RecordingConnector("smtp", fail=[RetryableError("down")] * 3)
    d = dispatcher(outbox, {"smtp": smtp}, policies={"smtp": RetryPolicy(retry_for=3 * 3600)})
    now = T0
    for _ in range(3):
        d.run_due(now)
        now = now + timedelta(hours=2)
    # retried at T0 and T0 + 2h; at T0 + 4h its 3 hours are over: dead after its third attempt
    assert outbox.get("a1:smtp").state == DEAD and [e.id for e in outbox.by_state(DEAD)] == ["a1:smtp"]
    assert outbox.get("a1:smtp").attempts == 3
    assert d.retry_dead("a1:smtp", now)
    d.run_due(now)
    assert outbox.get("a1:smtp").state == DELIVERED and len(smtp.delivered) == 1


def test_a_connector_bug_is_retried_not_fatal(outbox):
    class Broken:
        name, channel = "smtp", "email"

        def deliver(self, delivery):
            raise KeyError("oops")

    OutboxSink(outbox, ROUTES).emit([action(1)])
    dispatcher(outbox, {"smtp": Broken()}).run_due(T0)
    entry = outbox.get("a1:smtp")
    assert entry.state == PENDING and "KeyError" in entry.last_error


def test_rate_limit_holds_entries_back_without_counting_attempts(outbox):
    OutboxSink(outbox, ROUTES).emit([action(n) for n in range(1, 6)])
    smtp = RecordingConnector("smtp")
    d = dispatcher(outbox, {"smtp": smtp}, limits={"smtp": TokenBucket(rate=1.0, burst=2)})
    d.run_due(T0)
    assert len(smtp.delivered) == 2
    held = outbox.by_state(PENDING)
    assert len(held) == 3 and all(e.attempts == 0 for e in held)
    d.run_due(T0 + timedelta(seconds=1))
    d.run_due(T0 + timedelta(seconds=2))
    d.run_due(T0 + timedelta(seconds=3))
    assert len(smtp.delivered) == 5 and len({x.action_id for x in smtp.delivered}) == 5


def test_batching_connectors_queue_then_flush(outbox):
    class Batch:
        name, channel = "meta", "ads"

        def __init__(self):
            self.batch = []

        def deliver(self, delivery):
            self.batch.append(delivery.action_id)
            return Result(queued=True)

        def flush(self):
            out = [(a, Result(provider_id="job-1") if a != "a2" else PermanentError("invalid entry"))
                   for a in self.batch]
            self.batch = []
            return out

    OutboxSink(outbox, Routes({}, {"hot": ("meta",)})).emit(
        [action(1, kind="audience_add", target="hot"), action(2, kind="audience_add", target="hot")])
    d = dispatcher(outbox, {"meta": Batch()})
    d.run_due(T0)
    assert [e.state for e in (outbox.get("a1:meta"), outbox.get("a2:meta"))] == [QUEUED, QUEUED]
    d.flush(T0)
    assert outbox.get("a1:meta").state == DELIVERED and outbox.get("a1:meta").provider_id == "job-1"
    assert outbox.get("a2:meta").state == FAILED


def test_sqlite_outbox_survives_reopening(tmp_path):
    path = str(tmp_path / "s.db")
    store = SqliteStore(path)
    OutboxSink(SqliteOutbox(store.conn), ROUTES).emit([action(1)])
    store.close()
    again = SqliteStore(path)
    outbox = SqliteOutbox(again.conn)
    assert [e.id for e in outbox.due(T0)] == ["a1:smtp"]


def test_routes_from_the_shop_configuration():
    from journeys.project import load_project

    routes = Routes.from_config(load_project("examples/shop").config)
    assert routes.defaults == {"email": "smtp", "push": "fcm"}
    assert routes.audiences["hot_browsers"] == ("meta", "google_ads")
    assert routes.webhooks == {"crm_nudge"}


def test_a_dead_push_token_leaves_the_profile_through_the_engine(make):
    """The `Push Token Unregistered` events the dispatcher writes (tests/test_feedback_reports.py, a
    dead token and the dead devices of a push that reached others) take the token or subscription
    out of the profile, and only that one."""
    h = make('journey "J" { entry when event "A"  send push "hello" }')
    h.feed([("2026-03-02 10:00", "u1", "identify", {"push_tokens": ["t-live", "t-dead"], "push_token": "t-dead",
                                                     "webpush_subscriptions": [{"endpoint": "https://p/1"}]}),
            ("2026-03-02 10:01", "u1", "Push Token Unregistered", {"token": "t-dead", "provider": "fcm"}),
            ("2026-03-02 10:02", "u1", "Push Token Unregistered", {"token": "https://p/1", "provider": "browser"})])
    traits = h.traits("u1")
    assert traits["push_tokens"] == ["t-live"] and traits["push_token"] is None
    assert traits["webpush_subscriptions"] == []


def test_deliveries_run_in_parallel_within_each_connectors_limit(outbox):
    import threading
    import time

    class Slow:
        name, channel = "smtp", "email"

        def __init__(self):
            self.now = self.peak = 0
            self.lock = threading.Lock()

        def deliver(self, delivery):
            with self.lock:
                self.now += 1
                self.peak = max(self.peak, self.now)
            time.sleep(0.05)
            with self.lock:
                self.now -= 1
            return Result(provider_id=delivery.action_id)

    OutboxSink(outbox, ROUTES).emit([action(n) for n in range(1, 9)])
    slow = Slow()
    d = dispatcher(outbox, {"smtp": slow}, workers=8, concurrency={"smtp": 3})
    assert d.run_due(T0) == 8
    d.close()
    assert slow.peak == 3
    assert len(outbox.by_state(DELIVERED)) == 8


def test_templates_see_the_event_the_step_ran_on(make):
    h = make('journey "J" { entry when event "Viewed" as v  wait 1h  send email "later" }\n'
             'journey "K" { entry when event "Bought"  send email "now" }')
    h.feed([("2026-03-02 10:00", "u1", "Viewed", {"name": "Lamp"}),
            ("2026-03-02 10:30", "u1", "Bought", {"order_id": "o1"})], until="2026-03-02 12:00")
    by = {a.target: a.event for a in h.sent("u1")}
    assert by["now"]["properties"] == {"order_id": "o1"}  # an arriving event
    assert by["later"]["properties"] == {"name": "Lamp"}  # after a wait: the event that started the run


def entry(n: int, next_at=T0, connector: str = "smtp") -> Entry:
    return Entry(f"a{n}", connector, f"u{n}", "email", "welcome", "{}", T0, next_at)


def test_add_counts_only_new_entries_and_due_orders_by_time_then_id(outbox):
    assert outbox.add([]) == 0
    assert outbox.add([entry(2), entry(1), entry(3, T0 - timedelta(seconds=1))]) == 3
    assert outbox.add([entry(1), entry(4, T0 + timedelta(hours=1))]) == 1  # a1 is there already
    assert [e.id for e in outbox.due(T0)] == ["a3:smtp", "a1:smtp", "a2:smtp"]
    assert [e.id for e in outbox.due(T0, limit=1)] == ["a3:smtp"]
    got = outbox.get("a4:smtp")
    assert got == entry(4, T0 + timedelta(hours=1)) and got.next_at.utcoffset() == timedelta(0)


def test_postgres_outbox_survives_reopening(pg_url):
    with PostgresStore(pg_url) as store:
        OutboxSink(PostgresOutbox(store.conn), ROUTES).emit([action(1)])
    with PostgresStore(pg_url) as store:
        assert [e.id for e in PostgresOutbox(store.conn).due(T0)] == ["a1:smtp"]


def test_postgres_claims_skip_entries_another_worker_holds(pg_url):
    with PostgresStore(pg_url) as one, PostgresStore(pg_url) as two:
        first, second = PostgresOutbox(one.conn), PostgresOutbox(two.conn)
        first.add([entry(n) for n in range(1, 6)])
        with one.transaction():
            mine = first.due(T0, limit=2, claim=True)
            assert [e.id for e in mine] == ["a1:smtp", "a2:smtp"]
            with two.transaction():  # another worker gets the rest, without waiting for the first
                theirs = second.due(T0, limit=10, claim=True)
                assert [e.id for e in theirs] == ["a3:smtp", "a4:smtp", "a5:smtp"]
            assert [e.id for e in second.due(T0)] == [f"a{n}:smtp" for n in range(1, 6)]  # plain reads see all
            assert second.due(T0, skip={"smtp"}) == []  # a connector whose pool is full
            for e in mine:
                first.save(e.evolve(state=DELIVERED))
        with two.transaction():  # the first worker's transaction is over: what it left pending is claimable
            assert [e.id for e in second.due(T0, claim=True)] == ["a3:smtp", "a4:smtp", "a5:smtp"]
        with pytest.raises(RuntimeError, match="inside a transaction"):
            first.due(T0, claim=True)


def test_sqlite_claims_read_the_index_of_open_entries_only(tmp_path):
    """Delivered entries are in no index the claim walks, so a long history does not slow it."""
    store = SqliteStore(str(tmp_path / "o.db"))
    box = SqliteOutbox(store.conn)
    names = {r[0] for r in store.conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'outbox'")}
    assert {"outbox_open", "outbox_parked"} <= names and "outbox_due" not in names
    plan = " ".join(r[-1] for r in store.conn.execute(
        "EXPLAIN QUERY PLAN SELECT * FROM outbox WHERE state IN ('pending', 'sending') AND next_at <= ? "
        "ORDER BY next_at, id LIMIT ?", ("2026", 8)))
    assert "outbox_open" in plan and "TEMP B-TREE" not in plan, plan
    plan = " ".join(r[-1] for r in store.conn.execute(
        "EXPLAIN QUERY PLAN SELECT * FROM outbox WHERE state = ? AND state IN ('queued', 'failed', 'dead') "
        "ORDER BY id LIMIT ?", ("dead", 8)))
    assert "outbox_parked" in plan, plan
    t0 = datetime(2026, 3, 2, tzinfo=timezone.utc)
    box.add([Entry(f"a{i}", "email", "u", "email", "t", "{}", t0, t0) for i in range(3)])
    box.save(box.get("a0:email").evolve(state=DELIVERED))
    box.save(box.get("a1:email").evolve(state=DEAD))
    assert [e.id for e in box.due(t0)] == ["a2:email"]
    assert [e.id for e in box.by_state(DEAD)] == ["a1:email"] and [e.id for e in box.by_state(DELIVERED)] == ["a0:email"]


def test_a_webhook_delivery_reads_no_profile_an_email_does():
    import httpx

    from connectors.webhook import WebhookConnector

    bodies: list[bytes] = []
    hook = WebhookConnector("webhook:crm", url="http://crm.test/hook", transport=httpx.MockTransport(
        lambda request: bodies.append(request.content) or httpx.Response(200, json={"id": "w1"})))
    mail = RecordingConnector("smtp", "email")
    looked_up: list[str] = []
    box = MemoryOutbox()
    OutboxSink(box, ROUTES).emit([action(1, kind="webhook", target="crm"), action(2)])
    Dispatcher(box, {"webhook:crm": hook, "smtp": mail},
               profiles=lambda uid: looked_up.append(uid) or {"email": f"{uid}@example.com"}).run_due(T0)
    assert looked_up == ["u2"]  # the email's recipient; the webhook's document never holds traits
    assert len(bodies) == 1 and b'"code":"X"' in bodies[0]
    assert box.get("a1:webhook:crm").state == DELIVERED and box.get("a2:smtp").state == DELIVERED


def test_handed_entries_start_without_a_claim_and_wait_in_memory_for_room_in_their_pool(outbox):
    """The worker writes entries leased and hands their ids over (OutboxSink.handoff): the
    dispatcher reads them back (one query), skips what is not (or no longer) leased to it, starts
    what its pool has room for and keeps the rest, still leased, for the next round with room:
    no write and no claim for them. What a rate limit holds back is written back pending."""
    box = outbox
    sink = OutboxSink(box, ROUTES)
    sink.handoff(120, lambda: T0)
    sink.emit([action(i) for i in range(1, 6)])
    fresh = sink.take_fresh()
    assert fresh == [f"a{i}:smtp" for i in range(1, 6)] and sink.take_fresh() == []
    assert {e.state for e in box.get_many(fresh).values()} == {SENDING}
    assert box.due(T0) == []  # leased: the claim path leaves them alone until the lease ends

    box.save(box.get("a5:smtp").evolve(state=DELIVERED))  # settled meanwhile: not attempted again
    mail = RecordingConnector("smtp", "email")
    d = dispatcher(box, {"smtp": mail}, concurrency={"smtp": 1})
    # a1 and a2 start (a pool of 1 holds two leased at once); a3 and a4 find it full and wait;
    # a5 is settled; a9 was never committed
    assert d.start_handed(["a1:smtp", "a2:smtp", "a3:smtp", "a4:smtp", "a5:smtp", "a9:smtp"], T0) == (2, [])
    assert d.waiting() == ["a3:smtp", "a4:smtp"]
    assert d.start_handed([], T0) == (0, [])  # still full: nothing written, nothing started
    d.settle_done(T0)
    assert d.start_handed([], T0) == (2, []) and d.waiting() == []  # the room a1 and a2 left
    d.settle_done(T0)
    assert [x.action_id for x in mail.delivered] == ["a1", "a2", "a3", "a4"]
    assert [box.get(f"a{i}:smtp").state for i in range(1, 6)] == [DELIVERED] * 5

    sink.emit([action(6), action(7)])
    limited = dispatcher(box, {"smtp": mail}, limits={"smtp": TokenBucket(rate=1.0, burst=1)})
    started, back = limited.start_handed(sink.take_fresh(), T0)
    assert started == 1 and [(e.id, e.state) for e in back] == [("a7:smtp", PENDING)] and back[0].next_at > T0
    limited.settle(back)
    limited.settle_done(T0)
    assert mail.delivered[-1].action_id == "a6" and box.get("a7:smtp").state == PENDING


def test_an_entry_that_waited_half_its_lease_or_is_still_waiting_at_a_stop_goes_back_to_pending(outbox):
    """A provider that hangs keeps the pool full: the entries waiting behind it go back to the
    outbox, pending, once half their lease is gone (whoever has room takes them, with a fresh
    lease); at a stop, every entry still waiting goes back at once, not after its lease."""
    clock = [T0]
    sink = OutboxSink(outbox, ROUTES)
    sink.handoff(120, lambda: clock[0])
    sink.emit([action(i) for i in range(1, 5)])
    d = dispatcher(outbox, {"smtp": RecordingConnector("smtp", "email")}, concurrency={"smtp": 1}, lease=120)
    assert d.start_handed(sink.take_fresh(), T0) == (2, [])  # a3, a4 wait behind a1, a2 (not settled)
    assert d.start_handed([], T0 + timedelta(seconds=59)) == (0, [])
    started, back = d.start_handed([], T0 + timedelta(seconds=61))
    later = T0 + timedelta(seconds=61)
    assert started == 0 and [(e.id, e.state, e.next_at) for e in back] == [
        ("a3:smtp", PENDING, later), ("a4:smtp", PENDING, later)] and d.waiting() == []
    d.settle(back)
    assert [e.id for e in outbox.due(later)] == ["a3:smtp", "a4:smtp"]

    clock[0] = later
    sink.emit([action(5)])
    assert d.start_handed(sink.take_fresh(), later) == (0, []) and d.waiting() == ["a5:smtp"]
    [given] = d.give_back(later)
    assert (given.id, given.state, given.next_at) == ("a5:smtp", PENDING, later) and d.waiting() == []


def test_on_postgresql_a_transaction_s_entries_are_written_at_its_commit_and_only_new_ones_handed(pg_url):
    """The worker's outbox sink on PostgreSQL (engine.store.write_behind): the entries a transaction
    decides are written in one statement at its commit; those already there (a replayed action)
    are not handed over again; a rolled-back transaction writes and hands nothing."""
    with PostgresStore(pg_url) as store:
        box = PostgresOutbox(store.conn)
        sink = OutboxSink(box, ROUTES, defer=store.defer)
        sink.handoff(120, lambda: T0)
        with store.transaction():
            sink.emit([action(1)])
            sink.emit([action(2), action(3)])
            assert store.conn.execute("SELECT count(*) FROM outbox").fetchone()[0] == 0  # at the commit
            assert sink.take_fresh() == []
        assert sorted(sink.take_fresh()) == ["a1:smtp", "a2:smtp", "a3:smtp"]
        assert {box.get(f"a{i}:smtp").state for i in (1, 2, 3)} == {SENDING}
        with store.transaction():
            sink.emit([action(3), action(4)])  # a3 again: already written
        assert sink.take_fresh() == ["a4:smtp"]
        with pytest.raises(RuntimeError):
            with store.transaction():
                sink.emit([action(5)])
                raise RuntimeError("the batch failed")
        assert sink.take_fresh() == [] and box.get("a5:smtp") is None


def test_get_many_reads_a_batch_of_ids_larger_than_sqlite_s_bound_variables_at_once(outbox):
    entries = [Entry(f"a{i}", "smtp", "u", "email", "welcome", "{}", T0, T0) for i in range(1200)]
    outbox.add(entries)
    found = outbox.get_many([e.id for e in entries] + ["missing"])
    assert sorted(found) == sorted(e.id for e in entries) and found["a7:smtp"] == outbox.get("a7:smtp")


def test_save_many_writes_each_entry_in_one_statement_the_later_of_one_id_wins_and_none_is_created(outbox):
    entries = [Entry(f"a{i}", "smtp", "u", "email", "welcome", "{}", T0, T0) for i in range(3)]
    outbox.add(entries)
    outbox.save_many([entries[0].evolve(state=SENDING, next_at=T0 + timedelta(minutes=2)),
                      entries[1].evolve(state=FAILED, attempts=1, last_error="bad"),
                      entries[0].evolve(state=DELIVERED, attempts=1, provider_id="p-1"),
                      Entry("gone", "smtp", "u", "email", "welcome", "{}", T0, T0, state=DELIVERED)])
    got = outbox.get_many(["a0:smtp", "a1:smtp", "a2:smtp", "gone:smtp"])
    assert sorted(got) == ["a0:smtp", "a1:smtp", "a2:smtp"]  # an entry not there is not written back
    assert (got["a0:smtp"].state, got["a0:smtp"].attempts, got["a0:smtp"].provider_id) == (DELIVERED, 1, "p-1")
    assert (got["a1:smtp"].state, got["a1:smtp"].last_error) == (FAILED, "bad") and got["a2:smtp"] == entries[2]
    outbox.save_many([])


def test_of_actions_finds_every_connector_s_entry_of_each_action_and_no_other(outbox):
    """What the admin API's recent actions read: all entries of the actions asked for, whatever
    their state, and not those of an action whose id merely starts the same (a1 is not a10)."""
    entries = [Entry(a, c, "u", "email", "t", "{}", T0, T0) for a, c in (
        ("a1", "meta"), ("a1", "google"), ("a1", "webhook:crm"), ("a10", "meta"), ("a2", "smtp"), ("b", "smtp"))]
    outbox.add(entries)
    outbox.save(entries[1].evolve(state=DEAD, attempts=8, last_error="500"))
    found = outbox.of_actions(["a1", "a2", "missing"])
    assert [e.id for e in found] == ["a1:google", "a1:meta", "a1:webhook:crm", "a2:smtp"]
    assert (found[0].state, found[0].last_error) == (DEAD, "500")
    assert outbox.of_actions([]) == []
    many = [f"m{i}" for i in range(700)]  # more ranges than one statement's chunk
    outbox.add([Entry(a, "smtp", "u", "email", "t", "{}", T0, T0) for a in many])
    assert len(outbox.of_actions(many)) == 700

def test_a_full_pool_holds_back_only_its_own_connector_s_entries():
    box = MemoryOutbox()
    sink = OutboxSink(box, ROUTES)
    sink.handoff(120, lambda: T0)
    sink.emit([action(1), action(2), action(3), action(4, kind="webhook", target="crm"), action(5)])
    mail, hook = RecordingConnector("smtp", "email"), RecordingConnector("webhook:crm", "webhook")
    d = dispatcher(box, {"smtp": mail, "webhook:crm": hook}, concurrency={"smtp": 1, "webhook:crm": 1})
    assert d.start_handed(sink.take_fresh(), T0) == (3, [])
    assert d.waiting() == ["a3:smtp", "a5:smtp"]  # behind a1 and a2; the webhook's entry went at once
    d.settle_done(T0)
    assert d.start_handed([], T0) == (2, []) and d.waiting() == []
    d.settle_done(T0)
    assert [x.action_id for x in mail.delivered] == ["a1", "a2", "a3", "a5"]
    assert [x.action_id for x in hook.delivered] == ["a4"]
