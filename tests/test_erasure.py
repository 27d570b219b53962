"""GDPR erasure erases (issue 18, point 2): after `DELETE /admin/users/{id}` and the daemon's
housekeeping, nothing of the user is left in the store (every table of it, and on SQLite the raw
bytes of the database file and its -wal, before and after a checkpoint) nor in the daemon's log,
but keyed hashes: the tombstones (HMAC-SHA256 under the store's erasure key) and the SHA-256 of
the normalised identifiers the ad platforms match on, which the audience removals carry. The ad
platforms (real HTTP servers on loopback) are down while it happens; the removals fail, become dead
letters, keep only the hashes, and once a platform is back an operator's retry delivers them with
the very hashes the platforms got when the user was added.

Also: what an older daemon kept in clear (tombstones; removals with the user id and traits) is
hashed when the store is opened, and the SQLite file is rewritten without it."""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
from pathlib import Path

import httpx
import pytest

from connectors.base import ERASED

from .test_daemon import daemons, eventually, rows, shop  # noqa: F401 - fixtures
from .test_daemon_api import ADMIN, BEARER, caught_up, shop_with_fake_ads, store_url  # noqa: F401 - a fixture

USER = "Ada-Lovelace-4711"  # ids and values in mixed case: searched for in any case
ANON = "Anon-Ada-7c1fq"
EMAIL = " Ada.Lovelace@Example.COM "
PHONE = "+44 20 7946 0958"
FIRST = "Augusta"
# what must not be found anywhere, compared with the lower-cased bytes: the email, the phone as typed
# and as digits (E.164 with or without '+', Meta's and Google's forms), the first name, both ids
NEEDLES = ("ada.lovelace@example.com", "ada.lovelace", "7946 0958", "79460958", "augusta", USER.lower(),
           ANON.lower())
BACKGROUND = 400  # other shoppers, so that her rows sit among theirs in pages of many rows

ADS_ENV = dict(JOURNEYS_ADMIN_TOKEN=ADMIN, GOOGLE_ADS_DEVELOPER_TOKEN="devtoken",
               GOOGLE_ADS_CLIENT_ID="cid.apps.googleusercontent.com", GOOGLE_ADS_CLIENT_SECRET="csecret",
               GOOGLE_ADS_REFRESH_TOKEN="1//refresh")


def keyed(key_hex: str, text: str) -> str:
    """HMAC-SHA256 of `text` under the key `erasure.key` holds (hex), as documented."""
    return hmac.new(bytes.fromhex(key_hex), text.encode(), hashlib.sha256).hexdigest()


def pii_in(data: bytes) -> list[str]:
    low = data.lower()
    return [n for n in NEEDLES if n.encode() in low]


class Switch:
    """A fake platform's answers, or 503 for everything while `down`."""

    def __init__(self, answer, body):
        self.answer, self.body, self.down = answer, body, False

    def __call__(self, req):
        if self.down:
            return 503, {"Content-Type": "application/json"}, self.body
        return self.answer(req)


# ------------------------------------------------------------------ what the store holds

def _plain(value) -> bytes:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return str(value).encode("utf-8")


def sqlite_tables(db: Path) -> dict[str, bytes]:
    """Every value of every row of every table, by table."""
    conn = sqlite3.connect(db.as_uri() + "?mode=ro", uri=True, timeout=5)
    try:
        names = [n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {n: b"\x00".join(_plain(v) for row in conn.execute(f'SELECT * FROM "{n}"') for v in row)
                for n in names}
    finally:
        conn.close()


def pg_tables(url: str) -> dict[str, bytes]:
    from psycopg import sql as pgsql

    from engine.store.pg_store import connect

    conn, schema = connect(url)
    try:
        names = [n for (n,) in conn.execute("SELECT table_name FROM information_schema.tables "
                                            "WHERE table_schema = %s", (schema,))]
        return {n: b"\x00".join(_plain(v) for row in conn.execute(
            pgsql.SQL("SELECT * FROM {}.{}").format(pgsql.Identifier(schema), pgsql.Identifier(n))) for v in row)
            for n in names}
    finally:
        conn.close()


def query(store: str, db: Path | None, text: str, *args) -> list[tuple]:
    if db is not None:
        return rows(db, text, *args)
    from engine.store import sql
    from engine.store.pg_store import connect

    conn, _ = connect(store)
    try:
        return [tuple(r) for r in sql.execute(conn, text, args).fetchall()]
    finally:
        conn.close()


def write(store: str, db: Path | None, text: str, *args) -> None:
    if db is not None:
        conn = sqlite3.connect(db, timeout=10)
        with conn:
            conn.execute(text, args)
        conn.close()
        return
    from engine.store import sql
    from engine.store.pg_store import connect

    conn, _ = connect(store)
    try:
        sql.execute(conn, text, args)
    finally:
        conn.close()


def files_pii(db: Path) -> dict[str, list[str]]:
    out = {}
    for f in (db, Path(f"{db}-wal")):
        if f.exists():
            found = pii_in(f.read_bytes())
            if found:
                out[f.name] = found
    return out


def tables_pii(store: str, db: Path | None) -> dict[str, list[str]]:
    tables = sqlite_tables(db) if db is not None else pg_tables(store)
    return {t: found for t, data in tables.items() if (found := pii_in(data))}


def store_pii(store: str, db: Path | None) -> dict[str, list[str]]:
    """Where the user is found: tables, and on SQLite the file and its WAL."""
    return {**tables_pii(store, db), **(files_pii(db) if db is not None else {})}


def set_aside_message(store: str) -> None:
    """A message naming the user that the engine cannot take: kept in inbox_failed by the daemon."""
    raw = json.dumps({"type": "nonsense", "userId": USER, "traits": {"first_name": FIRST}}).encode()
    if store.startswith("sqlite"):
        from engine.store.inbox import Inbox

        inbox = Inbox.open(store)
    else:
        from engine.store.pg_inbox import PostgresInbox

        inbox = PostgresInbox.open(store)
    inbox.append_rows([("2026-03-02T10:00:00.000000Z", raw)])
    inbox.close()


def test_an_erasure_leaves_only_hashes_while_the_ad_platforms_are_down(shop, tmp_path, daemons, store_url):
    from .test_google_audiences import Google, Server as GoogleServer
    from .test_meta_audiences import TOKEN, Server as MetaServer, form_of, graph_ok

    db = Path(store_url.removeprefix("sqlite:///")) if store_url.startswith("sqlite") else None
    meta = Switch(graph_ok, {"error": {"message": "Service temporarily unavailable", "code": 2,
                                       "is_transient": True}})
    google = Switch(Google(), {"error": {"code": 503, "message": "The service is unavailable.",
                                         "status": "UNAVAILABLE"}})
    meta_server, google_server = MetaServer(meta), GoogleServer(google)
    try:
        project = shop_with_fake_ads(shop, meta_server.url, google_server.url)
        set_aside_message(store_url)
        d = daemons(project, store_url, META_ACCESS_TOKEN=TOKEN, **ADS_ENV)

        # other shoppers before and after her, so that her rows sit among theirs
        def shoppers(start: int, n: int) -> None:
            for at in range(start, start + n, 50):
                calls = []
                for i in range(at, at + 50):
                    calls += [{"type": "identify", "userId": f"shopper-{i}",
                               "traits": {"email": f"shopper{i}@example.org", "first_name": f"Name{i}"}},
                              {"type": "track", "userId": f"shopper-{i}", "event": "Product Viewed",
                               "properties": {"name": f"Thing {i}", "category": "home"}}]
                assert d.post("batch", {"batch": calls}).status_code == 200

        shoppers(0, BACKGROUND // 2)
        assert d.post("track", {"anonymousId": ANON, "event": "Newsletter Opened"}).status_code == 200
        traits = {"email": EMAIL, "phone": PHONE, "first_name": FIRST, "plan": "gold", "favourite_colour": "green"}
        assert d.post("identify", {"userId": USER, "anonymousId": ANON, "traits": traits}).status_code == 200
        assert d.post("track", {"anonymousId": ANON, "event": "Product Added",
                                "properties": {"name": "Tent", "category": "outdoor"}}).status_code == 200
        assert d.post("track", {"userId": USER, "event": "Product Viewed",
                                "properties": {"name": "Tent", "category": "outdoor"}}).status_code == 200
        shoppers(BACKGROUND // 2, BACKGROUND // 2)
        caught_up(d)

        # she is a hot browser: added to the Meta and the Google audience, hashed
        def added():
            return query(store_url, db, "SELECT connector, state FROM outbox WHERE user_id = ? AND "
                                        "kind = 'audience_add' ORDER BY connector", USER) == [
                ("google_ads", "delivered"), ("meta", "delivered")]
        eventually(added, timeout=60, every=0.2)
        email_hash = hashlib.sha256(b"ada.lovelace@example.com").hexdigest()
        meta_rows = [dict(zip(payload["schema"], row)) for payload in
                     (form_of(r)[0] for r in meta_server.requests if r["method"] == "POST")
                     for row in payload["data"] if email_hash in row]
        assert len(meta_rows) == 1, meta_rows
        meta_added = meta_rows[0]
        google_added = [op["create"]["userIdentifiers"] for req in google_server.requests
                        if req["path"].endswith(":addOperations")
                        for op in json.loads(req["body"])["operations"]
                        if "create" in op and {"hashedEmail": email_hash} in op["create"]["userIdentifiers"]]
        assert len(google_added) == 1 and len(meta_added) == 3  # EMAIL, PHONE, FN
        assert eventually(lambda: query(store_url, db, "SELECT count(*) FROM inbox_failed")[0][0] == 1)
        messages_before = query(store_url, db, "SELECT message_id FROM messages ORDER BY message_id")
        rowids_before = dict(rows(db, "SELECT message_id, rowid FROM messages")) if db else {}

        # the platforms go down; she asks to be forgotten
        meta.down = google.down = True
        r = httpx.delete(f"{d.url}/admin/users/{ANON}", headers=BEARER, timeout=30)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["userId"] == USER and set(body["forgotten"]) == {USER, ANON}
        assert sorted((a["audience"], a["connector"]) for a in body["audiences_removed"]) == [
            ("hot_browsers", "google_ads"), ("hot_browsers", "meta")]
        entries = sorted(a["entry"] for a in body["audiences_removed"])

        # each removal is tried, and fails against the 503s
        def tried():
            got = query(store_url, db, "SELECT id, attempts, last_error FROM outbox WHERE kind = 'audience_remove' "
                                       "ORDER BY id")
            return [g[0] for g in got] == entries and all(g[1] >= 1 and "503" in (g[2] or "") for g in got)
        eventually(tried, timeout=60, every=0.2)

        # after the housekeeping: nothing of her in any table, nor in the files, nor in the log
        if db is not None:
            def clean():
                found = files_pii(db)
                assert found == {}, found
            eventually(clean, timeout=60, every=0.5)
            conn = sqlite3.connect(db, timeout=10)
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.close()
            assert files_pii(db) == {}
            # the compaction kept the rowids retention counts on (engine.store.retention)
            after = dict(rows(db, "SELECT message_id, rowid FROM messages"))
            assert after and all(rowids_before[m] == rowid for m, rowid in after.items())
        assert tables_pii(store_url, db) == {}
        assert pii_in((tmp_path / "daemon.log").read_bytes()) == []
        # her events' messageIds are not hers to erase: they stay, and dedupe as before
        assert query(store_url, db, "SELECT message_id FROM messages ORDER BY message_id") == messages_before

        # the tombstones: HMAC-SHA256 of each id under the store's erasure key, nothing in clear
        ((key,),) = query(store_url, db, "SELECT key FROM erasure")
        hashes = {keyed(key, USER), keyed(key, ANON)}
        assert {h for (h,) in query(store_url, db, "SELECT id_hash FROM forgotten")} == hashes

        # the removals carry the platforms' hashes and nothing else of her, under no id of hers
        for entry_id, user_id, payload in query(store_url, db, "SELECT id, user_id, payload FROM outbox "
                                                               "WHERE kind = 'audience_remove' ORDER BY id"):
            carried = json.loads(payload)["data"][ERASED]
            assert user_id == keyed(key, USER) and json.loads(payload)["user"] == user_id
            assert carried == ({"meta": meta_added} if entry_id.endswith(":meta") else
                               {"google": google_added[0]}), carried

        # they run out of attempts (stopped first, so no attempt races the change): dead letters
        # that still carry only the hashes, in the tables and in the file of a stopped daemon
        assert d.stop() == 0
        write(store_url, db, "UPDATE outbox SET state = 'dead' WHERE kind = 'audience_remove'")
        assert store_pii(store_url, db) == {}

        # the platforms are back: an operator retries the dead letters, the platforms get the hashes
        meta.down = google.down = False
        meta_seen, google_seen = len(meta_server.requests), len(google_server.requests)
        d = daemons(project, store_url, META_ACCESS_TOKEN=TOKEN, **ADS_ENV)
        dead = httpx.get(f"{d.url}/admin/dead-letters?state=dead", headers=BEARER).json()["entries"]
        assert sorted(e["id"] for e in dead if e["kind"] == "audience_remove") == entries
        for entry_id in entries:
            r = httpx.post(f"{d.url}/admin/dead-letters/{entry_id}/retry", headers=BEARER)
            assert r.status_code == 200, r.text
        eventually(lambda: query(store_url, db, "SELECT state FROM outbox WHERE kind = 'audience_remove'")
                   == [("delivered",), ("delivered",)], timeout=60, every=0.2)
        deletes = [form_of(r)[0] for r in meta_server.requests[meta_seen:] if r["method"] == "DELETE"]
        assert [dict(zip(p["schema"], row)) for p in deletes for row in p["data"]] == [meta_added]
        removes = [op["remove"]["userIdentifiers"] for req in google_server.requests[google_seen:]
                   if req["path"].endswith(":addOperations") for op in json.loads(req["body"])["operations"]
                   if "remove" in op]
        assert removes == google_added
        sent = json.dumps([meta_server.requests, google_server.requests]).encode()
        assert pii_in(sent) == []

        # delivered: the hashes go too
        eventually(lambda: all(ERASED not in p for (p,) in query(
            store_url, db, "SELECT payload FROM outbox WHERE kind = 'audience_remove'")), timeout=30, every=0.2)

        # her later events are dropped, by either id, as before
        for who in ({"userId": USER}, {"anonymousId": ANON}):
            assert d.post("track", {**who, "event": "Product Viewed",
                                    "properties": {"name": "Soap", "category": "beauty"}}).status_code == 200
        caught_up(d)
        assert query(store_url, db, "SELECT count(*) FROM profiles WHERE user_id IN (?, ?)", USER, ANON) == [(0,)]
        assert d.stop() == 0
    finally:
        meta_server.close()
        google_server.close()


# ------------------------------------------------------------------ what older daemons left in clear

@pytest.fixture(params=["sqlite", "postgres"])
def old_store(request, tmp_path):
    """`write(statement, params)...` writes rows into a store as the daemon before keyed tombstones
    left it (`forgotten(user_id, at)`, ids in clear: a SQLite file's side table, or a PostgreSQL
    schema at the migration before), then opens it as the daemon does (migrating it) and returns it,
    with its outbox and `file` (None on PostgreSQL)."""
    opened = []

    def make(*writes):
        if request.param == "sqlite":
            from engine.store.inbox import Inbox
            from engine.store.outbox import SqliteOutbox
            from engine.store.sqlite_store import SqliteStore

            s = SqliteStore(str(tmp_path / "old.db"))
            Inbox(s.conn)
            s.outbox, s.file, s.url = SqliteOutbox(s.conn), tmp_path / "old.db", ""
            s.conn.execute("CREATE TABLE forgotten (user_id TEXT PRIMARY KEY, at TEXT NOT NULL)")
            for text, params in writes:
                s.conn.execute(text, params)
        else:
            from engine.store.migrations import POSTGRES, migrate
            from engine.store.pg_outbox import PostgresOutbox
            from engine.store.pg_store import PostgresStore, connect

            url = request.getfixturevalue("pg_url")
            keyed = next(m.version for m in POSTGRES if any("id_hash" in st for st in m.statements))
            conn, schema = connect(url)
            migrate(conn, schema, url, POSTGRES[:keyed - 1])
            for text, params in writes:
                conn.execute(text.replace("?", "%s"), params)
            conn.close()
            s = PostgresStore(url)
            s.outbox, s.file, s.url = PostgresOutbox(s.conn), None, url
        opened.append(s)
        return s

    yield make
    for s in opened:
        s.close()


OLD_TOMBSTONES = ("INSERT INTO forgotten (user_id, at) VALUES (?, ?), (?, ?)",
                  (USER, "2026-01-05T09:00:00.000000Z", ANON, "2026-01-05T09:00:00.000000Z"))


def test_clear_tombstones_are_hashed_when_the_store_is_opened(old_store):
    from engine.daemon.api import event_filter
    from engine.daemon.erasure import scrub
    from engine.store import sql

    from .engine_helpers import message

    store = old_store(OLD_TOMBSTONES)
    with store.transaction():
        keep = event_filter(store.conn)  # what the worker does when it opens the store
    ((key,),) = sql.execute(store.conn, "SELECT key FROM erasure").fetchall()
    got = sql.execute(store.conn, "SELECT id_hash, at FROM forgotten ORDER BY id_hash").fetchall()
    assert sorted(got) == sorted((keyed(key, i), "2026-01-05T09:00:00.000000Z") for i in (USER, ANON))
    assert keep([message(("2026-03-05 10:00", USER, "Page Viewed")),
                 message(("2026-03-05 10:00", ("someone", ANON), "Page Viewed")),
                 message(("2026-03-05 10:00", "u2", "Page Viewed"))]) == [False, False, True]
    with store.transaction():
        assert event_filter(store.conn) is not None  # opening again changes nothing
    assert sorted(sql.execute(store.conn, "SELECT id_hash, at FROM forgotten").fetchall()) == sorted(got)
    scrub(store.conn)  # the housekeeping: on SQLite, the file is rewritten without the old rows
    assert store_pii(store.url, store.file) == {}


def test_removals_queued_in_clear_by_an_older_daemon_are_hashed_when_the_store_is_opened(old_store):
    """A removal an older daemon queued carries the traits and the user's id in clear: opening the
    store replaces them with both platforms' hashes and the keyed hash of the id, a dead letter too,
    so an operator's retry still removes the user."""
    from connectors.google_audiences import user_identifiers
    from connectors.meta_audiences import DEFAULT_KEYS, meta_row
    from engine.daemon.api import event_filter
    from engine.daemon.erasure import scrub
    from engine.store import sql

    clear = {"email": EMAIL, "phone": PHONE, "first_name": FIRST}
    payload = json.dumps({"id": "forget-0123456789abcdef01234567", "user": USER, "kind": "audience_remove",
                          "target": "hot_browsers", "journey": "", "path": "", "reason": "forget-user",
                          "data": {ERASED: clear}}, sort_keys=True)
    entry = ("INSERT INTO outbox (id, action_id, connector, user_id, kind, target, payload, created, next_at, state, "
             "attempts, last_error, provider_id) VALUES (?, ?, 'meta', ?, 'audience_remove', 'hot_browsers', ?, ?, ?, "
             "'dead', 8, 'Meta failed', NULL)")
    at = "2026-01-05T09:00:00.000000Z"
    params = ("forget-0123456789abcdef01234567:meta", "forget-0123456789abcdef01234567", USER, payload, at, at)
    store = old_store((entry, params))
    with store.transaction():
        event_filter(store.conn)
    ((key,),) = sql.execute(store.conn, "SELECT key FROM erasure").fetchall()
    ((user_id, state, body),) = sql.execute(store.conn, "SELECT user_id, state, payload FROM outbox").fetchall()
    assert user_id == keyed(key, USER)
    assert state == "dead" and json.loads(body)["user"] == user_id
    assert json.loads(body)["data"][ERASED] == {"meta": meta_row(clear, DEFAULT_KEYS),
                                                "google": user_identifiers(clear)}
    with store.transaction():
        event_filter(store.conn)  # once
    assert sql.execute(store.conn, "SELECT payload FROM outbox").fetchall() == [(body,)]
    assert scrub(store.conn) == 0  # the housekeeping: a dead letter keeps its hashes; the file is rewritten
    assert store_pii(store.url, store.file) == {}


# ------------------------------------------------------------------ the SQLite file itself

def test_the_sqlite_file_keeps_no_byte_of_a_forgotten_user(tmp_path):
    """Deleted rows outlive themselves in a SQLite file: in the WAL, and in the pages' free space
    when SQLite is built without SQLITE_SECURE_DELETE (Debian's has it on, many builds do not; the
    store's connection is set so here). The erasure's compaction rewrites the file from its live
    rows: no byte of the user is left, in the file or its WAL. At most once an hour: an erasure
    meanwhile waits for the next."""
    import random

    from engine.core.program import Program
    from engine.daemon.api import event_filter
    from engine.daemon.deliveries.dispatch import OutboxSink, Routes
    from engine.daemon.erasure import compact, forget, scrub
    from engine.daemon.trail import Trail
    from engine.runtime.clock import VirtualClock
    from engine.runtime.loop import Engine, handle_all
    from engine.runtime.sinks import FanOut
    from engine.store.inbox import Inbox
    from engine.store.outbox import SqliteOutbox
    from engine.store.sqlite_store import SqliteStore
    from journeys.checker import load_checked

    from .engine_helpers import compile_source, message, t

    root = tmp_path / "p"
    program = Program.build(compile_source(root, 'journey "W" {\n  entry when event "Signed Up"\n'
                                                 '  add user to audience "warm"\n  wait 1d\n}\n'))
    config = load_checked(root)[0].config
    db = tmp_path / "store.db"
    store = SqliteStore(str(db))
    store.conn.execute("PRAGMA secure_delete = OFF")
    Inbox(store.conn)
    outbox = SqliteOutbox(store.conn)
    with store.transaction():
        event_filter(store.conn)
    engine = Engine(program, store, VirtualClock(t("2026-03-02 08:00")),
                    FanOut(OutboxSink(outbox, Routes.from_config(config)), Trail(store)))
    rnd = random.Random(7)
    calls = []
    for i in range(300):
        who = f"shopper-{rnd.randrange(10 ** 6):06d}"
        calls += [(who, "identify", {"email": f"{who}@example.org"}), (who, "Signed Up", None)]
        if i in (100, 200):
            calls += [((USER, ANON), "identify", {"email": EMAIL, "phone": PHONE, "first_name": FIRST}),
                      (USER, "Signed Up", None), ("Bob-Other-Person", "identify", {"email": "bob.other@example.net"})]
    with store.transaction():  # messageIds of the clients' own (the helper's would embed the user id)
        handle_all(engine, [message(("2026-03-02 09:00", *c, {"messageId": f"m{n}"})) for n, c in enumerate(calls)],
                   None)
    try:
        with store.transaction():
            forget(store, outbox, USER, t("2026-03-02 10:00"), config)
        store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        assert tables_pii("", db) == {}
        assert files_pii(db)  # gone from the tables, not from the file
        scrub(store.conn)
        assert store_pii("", db) == {}

        # within the hour, another erasure waits for the next compaction
        with store.transaction():
            forget(store, outbox, "Bob-Other-Person", t("2026-03-02 10:05"), config)
        store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        scrub(store.conn)
        assert b"bob.other@example.net" in db.read_bytes()
        assert compact(store.conn, every=0) is True
        assert b"bob.other@example.net" not in db.read_bytes() and files_pii(db) == {}
        assert compact(store.conn, every=0) is False  # nothing waits
    finally:
        store.close()
