"""The outbox's claim with a slow provider: while a connector is at its concurrency limit and
thousands of its entries wait, a claim reads what it claims, not what waits (issue 18), on the
in-memory, SQLite and PostgreSQL outboxes alike; of each connector the oldest due entries first,
then by id; and one connector's backlog never crowds another's due entries out of a round."""

from __future__ import annotations

import json
from datetime import timedelta

from connectors.recording import RecordingConnector
from engine.store.outbox import DELIVERED, SENDING, Entry, MemoryOutbox, SqliteOutbox
from engine.store.pg_outbox import PostgresOutbox
from engine.store.pg_store import PostgresStore
from engine.store.sqlite_store import SqliteStore

from . import test_outbox
from .test_outbox import T0, dispatcher

outbox = test_outbox.outbox  # the fixture: memory, sqlite, postgres

WAITING = 50_000


def entry(action: str, connector: str, at_seconds: float, **kw) -> Entry:
    at = T0 + timedelta(seconds=at_seconds)
    payload = json.dumps({"id": action, "kind": "webhook", "target": "t", "user": "u", "data": {}})
    return Entry(action, connector, "u", "webhook", "t", payload, T0, at, **kw)


def backlog(n: int, start: int = 0) -> list[Entry]:
    """`n` entries of the saturated connector "slow", all due, older than anything else here."""
    return [entry(f"s{i:06d}", "slow", -7200 + i * 0.1) for i in range(start, start + n)]


def trickle() -> list[Entry]:
    """Connector "fast": five due entries among the slow ones (two at the same instant), and one not due yet."""
    return [entry("f3", "fast", -3000), entry("f1", "fast", -5000), entry("f2", "fast", -3000),
            entry("f4", "fast", -10), entry("f0", "fast", -6000.05), entry("f9", "fast", 60)]


FAST_DUE = ["f0:fast", "f1:fast", "f2:fast", "f3:fast", "f4:fast"]


# ------------------------------------------------------------------ O(claimed), however many wait


def sqlite_steps(conn, run) -> tuple[object, int]:
    """`run()`'s result and the SQLite VM instructions it took (a progress handler called each one)."""
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0

    conn.set_progress_handler(count, 1)
    try:
        return run(), steps[0]
    finally:
        conn.set_progress_handler(None, 1)


def test_sqlite_a_claim_reads_what_it_claims_not_the_saturated_connector_s_waiting_entries(tmp_path):
    store = SqliteStore(str(tmp_path / "o.db"))
    box = SqliteOutbox(store.conn)
    box.add(backlog(500) + trickle())
    got, few = sqlite_steps(store.conn, lambda: box.due(T0, 100, skip={"slow"}))
    assert [e.id for e in got] == FAST_DUE
    box.add(backlog(WAITING - 500, start=500))
    got, many = sqlite_steps(store.conn, lambda: box.due(T0, 100, skip={"slow"}))
    assert [e.id for e in got] == FAST_DUE
    # walking the waiting entries takes several instructions each: 250,000 for 50,000 before
    assert many < WAITING and many <= few * 1.1 + 50, (few, many)
    assert [e.id for e in box.due(T0, 3)] == ["s000000:slow", "s000001:slow", "f0:fast"]  # turns


class CountingDict(dict):
    """The memory outbox's entries, counting the entries read out of it."""

    read = 0

    def __getitem__(self, key):
        CountingDict.read += 1
        return super().__getitem__(key)

    def get(self, key, default=None):
        CountingDict.read += 1
        return super().get(key, default)

    def values(self):
        for value in super().values():
            CountingDict.read += 1
            yield value

    def items(self):
        for item in super().items():
            CountingDict.read += 1
            yield item


def test_memory_a_claim_visits_what_it_claims_not_the_saturated_connector_s_waiting_entries():
    box = MemoryOutbox()
    box.entries = CountingDict()
    box.add(backlog(WAITING) + trickle())
    CountingDict.read = 0
    assert [e.id for e in box.due(T0, 100, skip={"slow"})] == FAST_DUE
    assert CountingDict.read <= len(FAST_DUE), CountingDict.read


def test_postgres_a_claim_reads_what_it_claims_not_the_saturated_connector_s_waiting_entries(pg_url):
    """The rows the claim's statement read, from the transaction's own table statistics
    (pg_stat_xact_user_tables: heap rows of sequential scans and index scans)."""
    with PostgresStore(pg_url) as store:
        box = PostgresOutbox(store.conn, claim=True)
        with store.transaction():
            box.add(backlog(WAITING) + trickle())
        store.conn.execute("ANALYZE outbox")
        read = ("SELECT seq_tup_read + coalesce(idx_tup_fetch, 0) FROM pg_stat_xact_user_tables "
                "WHERE relid = 'outbox'::regclass")
        with store.transaction():
            before = store.conn.execute(read).fetchone()[0]
            got = box.due(T0, 100, skip={"slow"})
            rows = store.conn.execute(read).fetchone()[0] - before
        assert [e.id for e in got] == FAST_DUE
        assert rows <= 2 * len(FAST_DUE) + 10, rows  # 50,000 before (a sequential scan)


# ------------------------------------------------------------------ order and fairness, every outbox


def test_due_is_oldest_first_then_by_id_and_leaves_out_full_connectors(outbox):
    outbox.add([entry("a2", "smtp", -10), entry("a1", "smtp", -10), entry("a3", "smtp", 5),
                entry("b1", "fcm", -20), entry("b2", "fcm", -5, state=SENDING),  # its lease ran out
                entry("b3", "fcm", 30, state=SENDING),  # leased: not due
                entry("c1", "webhook:crm", -15), entry("c2", "webhook:crm", -10), entry("d1", "smtp", -30)])
    outbox.save(outbox.get("d1:smtp").evolve(state=DELIVERED))
    everything = ["b1:fcm", "c1:webhook:crm", "a1:smtp", "a2:smtp", "c2:webhook:crm", "b2:fcm"]
    assert [e.id for e in outbox.due(T0)] == everything
    assert [e.id for e in outbox.due(T0, limit=3)] == everything[:3]
    assert [e.id for e in outbox.due(T0, skip={"fcm", "smtp"})] == ["c1:webhook:crm", "c2:webhook:crm"]
    assert [e.id for e in outbox.due(T0 - timedelta(seconds=12))] == ["b1:fcm", "c1:webhook:crm"]
    assert outbox.due(T0, skip={"fcm", "smtp", "webhook:crm"}) == []


def test_a_backlog_gets_its_room_and_a_fair_share_of_the_limit_not_the_whole_round(outbox):
    """`room`: at most so many of a connector (what its pool can take); when the connectors' due
    entries come to more than `limit`, each gets an equal turn (the oldest first at each turn),
    however old one connector's backlog is; the round comes back oldest first."""
    outbox.add([entry(f"s{i:02d}", "slow", -3600 + i) for i in range(40)]
               + [entry(f"f{i}", "fast", -60 + i) for i in range(3)] + [entry("w1", "webhook:crm", -30)])
    got = [e.id for e in outbox.due(T0, 100, room={"slow": 2, "fast": 8})]
    assert got == ["s00:slow", "s01:slow", "f0:fast", "f1:fast", "f2:fast", "w1:webhook:crm"]
    got = [e.id for e in outbox.due(T0, 6)]  # the limit binds: turns of one entry per connector
    assert got == ["s00:slow", "s01:slow", "s02:slow", "f0:fast", "f1:fast", "w1:webhook:crm"]
    assert [e.id for e in outbox.due(T0, 2)] == ["s00:slow", "f0:fast"]  # the oldest heads take the last turn
    assert [e.id for e in outbox.due(T0, 100, skip={"fast"}, room={"slow": 0})] == ["w1:webhook:crm"]


def test_a_round_takes_each_connector_s_room_so_one_backlog_crowds_out_no_other(outbox):
    """A connector with a backlog older than everything (200 entries, room for 2 at once) and
    another with three due: one round starts the backlog's two oldest and the other's three, not
    a round's worth of the backlog of which all but two wait."""
    outbox.add([entry(f"s{i:03d}", "slow", -3600 + i) for i in range(200)]
               + [entry(f"f{i}", "fast", -60 + i) for i in range(3)])
    slow, fast = RecordingConnector("slow", "webhook"), RecordingConnector("fast", "webhook")
    d = dispatcher(outbox, {"slow": slow, "fast": fast}, concurrency={"slow": 1, "fast": 4})
    assert d.start_due(T0) == 5
    assert [x.action_id for x in slow.delivered] == ["s000", "s001"]
    assert [x.action_id for x in fast.delivered] == ["f0", "f1", "f2"]
    d.settle_done(T0)
    assert d.start_due(T0) == 2 and [x.action_id for x in slow.delivered][2:] == ["s002", "s003"]


def test_an_entry_of_a_connector_no_longer_configured_is_claimed_and_failed(outbox):
    """Entries of every connector are claimed, not only of those configured: one whose connector
    was removed fails with a reason instead of waiting for ever."""
    outbox.add([entry("a1", "gone", -10), entry("a2", "smtp", -5)])
    d = dispatcher(outbox, {"smtp": RecordingConnector("smtp")})
    assert d.run_due(T0) == 1
    assert outbox.get("a1:gone").state == "failed" and "no connector" in outbox.get("a1:gone").last_error
    assert outbox.get("a2:smtp").state == DELIVERED


def test_postgres_workers_claim_each_connector_s_entries_in_order_without_taking_each_other_s(pg_url):
    with PostgresStore(pg_url) as one, PostgresStore(pg_url) as two, PostgresStore(pg_url) as three:
        first, second = PostgresOutbox(one.conn, claim=True), PostgresOutbox(two.conn, claim=True)
        first.add([entry(f"s{i}", "smtp", -100 + i) for i in range(6)]
                  + [entry(f"f{i}", "fcm", -50 + i) for i in range(4)])
        with one.transaction():
            assert [e.id for e in first.due(T0, 4)] == ["s0:smtp", "s1:smtp", "f0:fcm", "f1:fcm"]
            with two.transaction():  # the other worker skips the locked ones, connector by connector,
                # and the first locked no more than it took
                assert [e.id for e in second.due(T0, 100)] == [
                    "s2:smtp", "s3:smtp", "s4:smtp", "s5:smtp", "f2:fcm", "f3:fcm"]
                with three.transaction():  # nothing is left for a third, nothing is taken twice
                    assert PostgresOutbox(three.conn, claim=True).due(T0, 100) == []


# ------------------------------------------------------------------ the index, on stores made before it


def test_sqlite_an_older_file_gets_the_index_at_open_and_the_claim_reads_through_it(tmp_path):
    from engine.store.outbox import CONNECTORS, DUE_OF

    store = SqliteStore(str(tmp_path / "o.db"))
    SqliteOutbox(store.conn).add(trickle())
    store.conn.execute("DROP INDEX outbox_open_connector")  # as a file written before it
    store.close()
    store = SqliteStore(str(tmp_path / "o.db"))
    box = SqliteOutbox(store.conn)

    def plan(sql: str, *args) -> str:
        return " ".join(r[-1] for r in store.conn.execute("EXPLAIN QUERY PLAN " + sql, args))

    assert "SEARCH outbox USING INDEX outbox_open_connector (connector=? AND next_at<?)" in plan(DUE_OF, "fast", "x", 8)
    assert "TEMP B-TREE" not in plan(DUE_OF, "fast", "x", 8)
    assert "SEARCH o USING INDEX outbox_open_connector (connector>?)" in plan(CONNECTORS)
    assert [e.id for e in box.due(T0)] == FAST_DUE


def test_postgres_a_schema_of_version_5_gets_the_index_from_migration_6(pg_url):
    from engine.store.migrations import POSTGRES, migrate
    from engine.store.pg_store import connect

    conn, schema = connect(pg_url)
    with conn:
        assert migrate(conn, schema, migrations=POSTGRES[:5]) == (0, 5)
        indexes = "SELECT indexname FROM pg_indexes WHERE schemaname = %s AND tablename = 'outbox'"
        assert "outbox_open_connector" not in {r[0] for r in conn.execute(indexes, (schema,))}
        assert migrate(conn, schema, migrations=POSTGRES[:6]) == (5, 6)
        assert "outbox_open_connector" in {r[0] for r in conn.execute(indexes, (schema,))}
