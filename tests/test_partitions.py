"""Partition leases, fencing, the shared inbox and schedule claims on a real PostgreSQL: the parts
several workers share (engine.daemon.partitions, engine.store.pg_inbox, PostgresStore.schedule_users)."""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone

import orjson

from engine.core.state import new_user
from engine.daemon.partitions import Partitions
from engine.store.pg_inbox import Listener, PostgresInbox
from engine.store.pg_store import PostgresStore, partition_of, sender_key

T0 = datetime(2026, 3, 2, 10, 0, tzinfo=timezone.utc)


def test_python_and_postgresql_agree_on_partitions(pg_url):
    with PostgresStore(pg_url) as s:
        for uid in ("u1", "anon-7f3", "émile@example.com", "x" * 200, "0"):
            (part,) = s.conn.execute("SELECT (('x' || substr(md5(%s), 1, 8))::bit(32)::bigint %% 64)::int",
                                     (uid,)).fetchone()
            assert partition_of(uid) == part
        assert len({partition_of(f"user-{i}") for i in range(2000)}) == 64  # every partition gets users
        assert sender_key({"userId": "u1", "anonymousId": "a"}) == "u1" and sender_key({"anonymousId": "a"}) == "a"


def test_workers_share_the_partitions_fairly_and_take_over_a_dead_ones(pg_url):
    a_store, b_store = PostgresStore(pg_url), PostgresStore(pg_url)
    a, b = Partitions(a_store.conn, "a", ttl=1.0), Partitions(b_store.conn, "b", ttl=1.0)
    try:
        b_store.conn.execute("DELETE FROM workers WHERE id = 'b'")  # b has not joined yet
        assert len(a.heartbeat()) == 64
        b.conn.execute("INSERT INTO workers VALUES ('b', 'h', 1, now(), now())")  # b joins
        assert b.heartbeat() == frozenset()  # nothing free yet
        assert len(a.heartbeat()) == 32  # a gives back what is above its share
        assert len(b.heartbeat()) == 32
        assert a.owned.isdisjoint(b.owned) and a.owned | b.owned == frozenset(range(64))
        time.sleep(1.2)  # a dies: it stops renewing; its leases and heartbeat expire
        assert b.heartbeat() == frozenset(range(64))
        assert a.fence() == frozenset()  # a, waking up, holds nothing any more
        b.leave()  # a clean stop hands everything over at once
        assert len(a.heartbeat()) == 64
    finally:
        a_store.close()
        b_store.close()


def test_a_fenced_transaction_keeps_its_partitions_from_a_takeover(pg_url):
    a_store, b_store = PostgresStore(pg_url), PostgresStore(pg_url)
    a, b = Partitions(a_store.conn, "a", ttl=0.5), Partitions(b_store.conn, "b", ttl=0.5)
    try:
        b_store.conn.execute("DELETE FROM workers WHERE id = 'b'")
        assert len(a.heartbeat()) == 64
        b.conn.execute("INSERT INTO workers VALUES ('b', 'h', 1, now(), now())")
        with a_store.transaction():
            assert len(a.fence()) == 64
            time.sleep(0.7)  # a's leases expire while its transaction still runs
            assert b.heartbeat() == frozenset()  # b skips the rows a holds FOR SHARE, never waits
        assert b.heartbeat() == frozenset(range(64))  # a's transaction ended: b takes over
        with a_store.transaction():
            assert a.fence() == frozenset()  # and a, fencing again, knows it holds nothing
    finally:
        a_store.close()
        b_store.close()


def test_the_shared_inbox_by_partition_with_a_wake_up(pg_url):
    store = PostgresStore(pg_url)
    ingest = PostgresInbox.open(pg_url)
    wake = threading.Event()
    listener = Listener(pg_url, wake)
    try:
        inbox = PostgresInbox(store.conn, store.schema)
        rows = [("2026-03-02T10:00:00.000000Z", orjson.dumps({"type": "track", "userId": f"u{i}", "event": "E"}))
                for i in range(50)]
        ingest.append_rows(rows)
        assert wake.wait(5)
        mine = {partition_of(f"u{i}") for i in range(0, 50, 2)}
        batch = inbox.next_batch(mine, 1000)
        assert {orjson.loads(raw)["userId"] for _, raw, _ in batch} == {f"u{i}" for i in range(50)
                                                                        if partition_of(f"u{i}") in mine}
        assert [seq for seq, _, _ in batch] == sorted(seq for seq, _, _ in batch)
        with store.transaction():
            inbox.finish(batch)
        assert inbox.pending() == 50 - len(batch)
        assert inbox.next_batch(mine, 1000) == []
    finally:
        listener.close()
        ingest.close()
        store.close()


def test_a_worker_wakes_only_for_commits_to_its_partitions(pg_url):
    ingest = PostgresInbox.open(pg_url)
    woken = {name: threading.Event() for name in ("u1's", "other", "old")}
    held = {"u1's": frozenset({partition_of("u1")}), "other": frozenset({partition_of("u1") + 1})}
    listeners = [Listener(pg_url, woken[name], lambda name=name: held[name]) for name in held]
    listeners.append(Listener(pg_url, woken["old"]))  # no partitions given: every commit wakes it
    try:
        ingest.append_rows([("2026-03-02T10:00:00.000000Z", orjson.dumps({"type": "track", "userId": "u1",
                                                                          "event": "E"}))])
        assert woken["u1's"].wait(5) and woken["old"].wait(5)
        time.sleep(0.3)
        assert not woken["other"].is_set()
        held["other"] = held["other"] | held["u1's"]  # it took u1's partition: the next commit wakes it
        ingest.append_rows([("2026-03-02T10:00:01.000000Z", orjson.dumps({"type": "track", "userId": "u1",
                                                                          "event": "E"}))])
        assert woken["other"].wait(5)
    finally:
        for listener in listeners:
            listener.close()
        ingest.close()


def test_a_scheduled_entry_fires_once_per_partition_across_workers(pg_url):
    a, b = PostgresStore(pg_url), PostgresStore(pg_url)
    try:
        users = [f"user-{i}" for i in range(300)]
        for uid in users:
            a.save(new_user(uid), "Europe/Paris")
        half = frozenset(range(32))
        a.parts, b.parts = half, frozenset(range(64))
        with a.transaction():
            first = a.schedule_users("Monday picks", "Europe/Paris", T0)
        with b.transaction():  # b took over every partition, a's included: a's were fired already
            second = b.schedule_users("Monday picks", "Europe/Paris", T0)
        assert set(first) == {u for u in users if partition_of(u) in half}
        assert set(second) == set(users) - set(first)
        with b.transaction():
            assert b.schedule_users("Monday picks", "Europe/Paris", T0) == []  # never twice
            assert len(b.schedule_users("Monday picks", "Europe/Paris", T0.replace(day=9))) == 300  # next week
        with a.transaction():  # a claim rolled back is no claim
            try:
                with a.transaction():
                    a.schedule_users("Other", None, T0)
                    raise RuntimeError("the firing failed")
            except RuntimeError:
                pass
        with b.transaction():
            assert len(b.schedule_users("Other", None, T0)) == 300
    finally:
        a.close()
        b.close()


def test_a_firing_missed_while_partitions_had_no_owner_is_caught_up_once(pg_url, tmp_path):
    """Worker a holds half the partitions when a cron entry fires at 10:00; the other half's
    owner is dead, its leases not yet expired. At 10:00:20 worker b takes them over and catches
    up: their users get the 10:00 firing, a's users do not get it twice, and a later catch-up
    repeats nothing. The claim names the firing by its cron moment, not by a worker's clock."""
    from engine.core.effects import Received
    from engine.core.program import Program
    from engine.runtime.clock import VirtualClock
    from engine.runtime.loop import Engine

    from .engine_helpers import compile_source

    program = Program.build(compile_source(tmp_path / "p", '''
        journey "Daily" {
          entry on cron "0 10 * * *" in "Europe/Paris"
          reenter always
          set user.pinged = true
        }
    '''))
    fired: dict[str, list[str]] = {"a": [], "b": []}

    class Sink:
        def __init__(self, name):
            self.name = name

        def emit(self, effects):
            fired[self.name] += [e.user for e in effects if isinstance(e, Received) and e.kind == "schedule"]

    a, b = PostgresStore(pg_url), PostgresStore(pg_url)
    try:
        users = [f"user-{i}" for i in range(200)]
        with a.transaction():
            for uid in users:
                a.save(new_user(uid), "UTC")
        half, rest = frozenset(range(32)), frozenset(range(32, 64))
        a.parts, b.parts = half, frozenset()
        before = datetime(2026, 3, 2, 8, 59, tzinfo=timezone.utc)  # 09:59 in Paris
        fire = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)
        engine_a = Engine(program, a, VirtualClock(before), Sink("a"))
        engine_b = Engine(program, b, VirtualClock(before), Sink("b"))
        with a.transaction():
            engine_a.run_due(before)
        with a.transaction():  # a's clock is late (a worker's wall clock is no cron moment)
            engine_a.clock.advance(fire.replace(second=3))
            engine_a.run_due(fire.replace(second=3))
        assert sorted(fired["a"]) == sorted(u for u in users if partition_of(u) in half)

        b.parts = rest  # b took over the dead worker's partitions
        engine_b.clock.advance(fire.replace(second=20))
        with b.transaction():
            engine_b.run_due(fire.replace(second=20))  # b's plan starts after 10:00:20: nothing ...
            engine_b.catch_up(fire.replace(second=20) - timedelta(seconds=30))  # ... but the catch-up
        assert fired["b"] == sorted(u for u in users if partition_of(u) in rest)
        b.parts = half | rest  # b takes a's partitions too: everything was fired, nothing repeats
        with b.transaction():
            engine_b.catch_up(fire.replace(second=25) - timedelta(seconds=30))
        assert sorted(fired["a"] + fired["b"]) == sorted(users)
        (runs,) = a.conn.execute("SELECT count(*) FROM schedule_runs WHERE fire = %s", (fire,)).fetchone()
        assert runs == 64
    finally:
        a.close()
        b.close()


def test_a_worker_that_takes_partitions_catches_up_their_missed_firing(pg_url, tmp_path):
    """The daemon's worker: taking partitions (here, all of them at its start, 10 s after a
    firing no worker made) it catches up that firing for their users, once; a second worker
    taking them over later repeats nothing."""
    from engine.core.program import Program
    from engine.daemon.worker import Worker
    from engine.runtime.clock import VirtualClock
    from journeys.checker import check_and_compile
    from journeys.project import load_project

    from .engine_helpers import compile_source
    from .test_daemon import eventually

    root = tmp_path / "p"
    compile_source(root, '''
        journey "Daily" {
          entry on cron "0 10 * * *" in "Europe/Paris"
          reenter always
          set user.pinged = true
        }
    ''')
    project = load_project(root)
    program = Program.build(check_and_compile(project)[1])
    with PostgresStore(pg_url) as s, s.transaction():
        for i in range(100):
            s.save(new_user(f"user-{i}"), "UTC")
    fire = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc)  # 10:00 in Paris
    for late, expected in ((10, 100), (20, 0)):
        worker = Worker(root, project.config, program, pg_url, clock=VirtualClock(fire + timedelta(seconds=late)),
                        environ={}, deliver=False)
        worker.start()
        try:
            eventually(lambda: worker._caught_up and len(worker.partitions.owned) == 64, timeout=10)
            time.sleep(0.3)
            assert worker.counts.snapshot().get("received.schedule", 0) == expected
        finally:
            worker.stop()
    with PostgresStore(pg_url) as s:
        assert all(s.load(f"user-{i}").traits.get("pinged") is True for i in range(100))
        (runs,) = s.conn.execute("SELECT count(*) FROM schedule_runs WHERE fire = %s", (fire,)).fetchone()
        assert runs == 64


def test_a_prefetched_batch_answers_like_the_database(pg_url):
    from engine.core.messages import parse_message

    def msg(mid, **ids):
        return parse_message({"type": "track", "event": "E", "messageId": mid, "timestamp": "2026-03-02T10:00:00Z",
                              **ids})

    with PostgresStore(pg_url) as s:
        s.save(new_user("u1"), "UTC")
        s.link("anon-1", "u1")
        assert s.seen("old") is False
        batch = [msg("old", userId="u1"), msg("m1", anonymousId="anon-1"), msg("m1", userId="u2"),
                 msg("m2", userId="u2")]
        with s.transaction():
            s.prefetch(batch)
            assert [s.seen(m.message_id) for m in batch] == [True, False, True, False]  # a repeat in the batch too
            assert s.resolve("anon-1") == "u1" and s.resolve("u2") is None
            assert s.load("u1") is not None and s.load("u2") is None
            s.save(new_user("u2"), "UTC")
            s.link("anon-9", "u2")
            assert s.load("u2") is not None and s.resolve("anon-9") == "u2"
        try:
            with s.transaction():
                s.prefetch([msg("m3", userId="u3")])
                s.save(new_user("u3"), "UTC")
                raise RuntimeError("rolled back")
        except RuntimeError:
            pass
        assert s.load("u3") is None and s.seen("m3") is False  # nothing of the rolled-back batch is remembered
        assert s.load("u2") is not None and s.seen("m2") is True


def test_a_worker_fires_the_timers_of_its_partitions_with_no_events_coming(pg_url, tmp_path):
    """A worker that receives no events still fires the timers of the partitions it holds (it once
    looked only at the partitions of its last fenced transaction, none before any event)."""
    from datetime import timedelta

    from engine.core.messages import Message
    from engine.core.program import Program
    from engine.daemon.worker import Worker
    from engine.runtime.clock import VirtualClock
    from engine.runtime.loop import Engine
    from engine.runtime.sinks import FanOut
    from journeys.checker import check_and_compile
    from journeys.project import load_project

    root = tmp_path / "p"
    (root / "journeys").mkdir(parents=True)
    (root / "journeys.toml").write_text('[project]\nname = "t"\n')
    (root / "journeys" / "t.journey").write_text(
        'journey "T" {\n  entry when event "A"\n  wait 1s\n  set user.done = true\n}\n')
    project = load_project(root)
    _, compiled = check_and_compile(project)
    program = Program.build(compiled)
    past = datetime.now(timezone.utc) - timedelta(minutes=5)
    with PostgresStore(pg_url) as store:  # a user who entered five minutes ago: the wait is overdue
        engine = Engine(program, store, VirtualClock(past), FanOut())
        with store.transaction():
            engine.handle(Message("track", "m1", past, user_id="u1", event="A"))
        assert store.next_timer(datetime.now(timezone.utc)) is not None
    worker = Worker(root, project.config, program, pg_url, environ={"JOURNEYS_LEASE_TTL": "2"}, deliver=False)
    worker.start()
    try:
        deadline = time.monotonic() + 15
        with PostgresStore(pg_url) as store:
            while (state := store.load("u1")) is None or state.traits.get("done") is not True:
                assert time.monotonic() < deadline, "the overdue timer did not fire"
                time.sleep(0.1)
    finally:
        worker.stop()
