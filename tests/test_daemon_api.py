"""The daemon's routes beyond the ingest, on a real `journeys serve` process on loopback: the signed
unsubscribe link (a GET only asks, the page's button and RFC 8058 One-Click POST record an
`Unsubscribed` event) suppressing later emails, the profile API, and the admin API (auth, user
view, a user's trace, journey counts, dead letters and their retry, forget-user, which also removes
the user from the ad audiences at fake Meta and Google servers)."""

from __future__ import annotations

import hashlib
import hmac
import json
import sqlite3
import time

import httpx
import pytest

from connectors.unsubscribe import sign
from engine.store.serialize import state_from_bytes

from .test_daemon import daemons, eventually, rows, shop, tiny_project  # noqa: F401 - fixtures
from .test_smtp import Server

SECRET = "unsubscribe-secret-for-tests-0123456789"
ADMIN = "admin-token-for-tests"
PROFILE_KEY = "profile-key-for-tests"
BEARER = {"Authorization": f"Bearer {ADMIN}"}


def caught_up(d) -> None:
    def done():
        return d.readiness()["inbox_lag"] == 0
    eventually(done)


def test_unsubscribe_link_suppresses_later_emails_and_one_click_and_bad_tokens(tmp_path, daemons):
    smtp = Server().start()
    try:
        project = tiny_project(tmp_path / "tiny", smtp.port)
        d = daemons(project, None, JOURNEYS_UNSUBSCRIBE_SECRET=SECRET)
        db = project / "data" / "tiny.db"
        for uid in ("u1", "u2", "u3"):
            assert d.post("identify", {"userId": uid, "traits": {"email": f"{uid}@example.com"}}).status_code == 200
        caught_up(d)

        # a GET (what a mail scanner or a link preview does) only asks: nothing is recorded
        link = f"{d.url}/u/{sign('u1', 'email', SECRET)}"
        for _ in range(2):
            page = httpx.get(link)
            assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
            assert '<form method="post">' in page.text and ">Unsubscribe</button>" in page.text
            assert 'name="List-Unsubscribe" value="One-Click"' in page.text and "email messages" in page.text
        caught_up(d)
        (raw,) = rows(db, "SELECT state FROM profiles WHERE user_id = 'u1'")[0]
        assert "email_unsubscribed" not in state_from_bytes(raw).traits

        # the button: a form post of the page's hidden field to the same URL
        done = httpx.post(link, data={"List-Unsubscribe": "One-Click"})
        assert done.status_code == 200 and "You are unsubscribed" in done.text, done.text
        again = httpx.post(link, data={"List-Unsubscribe": "One-Click"})  # idempotent
        assert again.status_code == 200 and "You are unsubscribed" in again.text

        one_click = httpx.post(f"{d.url}/u/{sign('u2', 'email', SECRET)}", content="List-Unsubscribe=One-Click",
                               headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert one_click.status_code == 200
        assert httpx.post(f"{d.url}/u/{sign('u2', 'email', SECRET)}", content="x=1").status_code == 400

        for bad in (sign("u1", "email", "another-secret-of-enough-length"), "garbage", "a.b"):
            r = httpx.get(f"{d.url}/u/{bad}")
            assert r.status_code == 404 and "not valid" in r.text
        assert httpx.post(f"{d.url}/u/garbage", content="List-Unsubscribe=One-Click").status_code == 404

        caught_up(d)  # the opt-outs are events in the inbox: the worker takes them as any other
        for uid in ("u1", "u2"):
            (raw,) = rows(db, "SELECT state FROM profiles WHERE user_id = ?", uid)[0]
            assert state_from_bytes(raw).traits["email_unsubscribed"] is True

        # later emails of the journey are stopped by consent: an action, no outbox entry, no mail
        # (u3, who did not unsubscribe, gets hers)
        for uid in ("u1", "u2", "u3"):
            assert d.post("track", {"userId": uid, "event": "Signed Up"}).status_code == 200

        def decided():
            return rows(db, "SELECT user, kind, outcome, reason FROM actions WHERE kind = 'email' ORDER BY user")
        found = eventually(lambda: len(decided()) == 3 and decided(), timeout=8)
        assert [(u, o, r) for u, _, o, r in found] == [("u1", "suppressed", "consent"),
                                                       ("u2", "suppressed", "consent"), ("u3", "sent", None)], found
        eventually(lambda: rows(db, "SELECT user_id, state FROM outbox WHERE kind = 'email'") == [("u3", "delivered")])
        assert [m[1] for m in smtp.handler.messages] == [["u3@example.com"]]
        assert d.stop() == 0
    finally:
        smtp.stop()


def shop_with_keys(shop):
    toml = shop / "journeys.toml"
    text = toml.read_text().replace('write_keys_env = ["JOURNEYS_WRITE_KEY"]',
                                    'write_keys_env = ["JOURNEYS_WRITE_KEY"]\nprofile_keys_env = ["JOURNEYS_PROFILE_KEY"]')
    toml.write_text(text)
    return shop


def test_profile_api_and_admin_api(shop, tmp_path, daemons):
    db = tmp_path / "store.db"
    d = daemons(shop_with_keys(shop), f"sqlite:///{db}", JOURNEYS_PROFILE_KEY=PROFILE_KEY,
                JOURNEYS_ADMIN_TOKEN=ADMIN)
    assert d.post("track", {"anonymousId": "anon-1", "event": "Newsletter Opened"}).status_code == 200
    assert d.post("identify", {"userId": "u1", "anonymousId": "anon-1",
                               "traits": {"email": "ann@example.com"}}).status_code == 200
    assert d.post("track", {"userId": "u1", "event": "Product Viewed",
                            "properties": {"name": "Face Cream", "category": "beauty"}}).status_code == 200
    assert d.post("track", {"userId": "u2", "event": "Product Viewed",
                            "properties": {"name": "Tent", "category": "outdoor"}}).status_code == 200
    caught_up(d)

    # the profile API: its own key, not the write key
    url = f"{d.url}/v1/profile/u1"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, auth=("test-write-key", "")).status_code == 401
    r = httpx.get(url, auth=(PROFILE_KEY, ""))
    assert r.status_code == 200, r.text
    assert r.json()["traits"]["home_banner"] == "beauty"
    assert httpx.get(f"{d.url}/v1/profile/anon-1", headers={"Authorization": f"Bearer {PROFILE_KEY}"}
                     ).json()["userId"] == "u1"  # an alias resolves
    assert httpx.get(f"{d.url}/v1/profile/nobody", auth=(PROFILE_KEY, "")).status_code == 404

    # admin auth
    for method, path in (("GET", "/admin/users/u1"), ("GET", "/admin/users/u1/trace"), ("GET", "/admin/journeys"),
                         ("GET", "/admin/dead-letters"),
                         ("POST", "/admin/dead-letters/x/retry"), ("DELETE", "/admin/users/u1")):
        assert httpx.request(method, d.url + path).status_code == 401
        assert httpx.request(method, d.url + path, headers={"Authorization": "Bearer wrong"}).status_code == 401

    # the user view
    user = httpx.get(f"{d.url}/admin/users/u1", headers=BEARER).json()
    assert user["userId"] == "u1" and user["traits"]["home_banner"] == "beauty"
    assert "anon-1" in user["aliases"]
    flying = {j["journey"]: j for j in user["journeys"]}
    assert "Browse abandonment" in flying
    assert flying["Browse abandonment"]["path"] and flying["Browse abandonment"]["wake"]
    assert user["next_wake"]
    assert user["recent_actions"] and all("kind" in a for a in user["recent_actions"])
    assert httpx.get(f"{d.url}/admin/users/nobody", headers=BEARER).status_code == 404

    # the user's trace: the dry-run's lines, asked by either id, the anonymous visit included
    r = httpx.get(f"{d.url}/admin/users/anon-1/trace", headers=BEARER)
    assert r.status_code == 200, r.text
    trace = r.json()
    assert trace["userId"] == "u1" and {"u1", "anon-1"} <= set(trace["ids"])
    lines = [row["line"] for row in trace["trail"]]
    assert lines[0].endswith("  anon-1  event Newsletter Opened"), lines
    assert any(line.endswith("  u1  event Product Viewed") for line in lines), lines
    assert any("Browse abandonment #" in line and "  entered" in line for line in lines), lines
    assert any('audience_add "warm_browsers" sent' in line for line in lines), lines
    assert all({"time", "line", "effect"} <= set(row) for row in trace["trail"])
    assert httpx.get(f"{d.url}/admin/users/u1/trace", headers=BEARER).json()["trail"] == trace["trail"]
    by_query = httpx.get(f"{d.url}/admin/trace", params={"user": "anon-1"}, headers=BEARER)
    assert by_query.status_code == 200 and by_query.json() == trace  # the form for an id ending in /trace
    missing = httpx.get(f"{d.url}/admin/trace", headers=BEARER)
    assert missing.status_code == 400 and missing.json()["field"] == "user"
    assert httpx.get(f"{d.url}/admin/trace", params={"user": "u1"}).status_code == 401
    newest = httpx.get(f"{d.url}/admin/users/u1/trace?limit=2", headers=BEARER).json()["trail"]
    assert newest == trace["trail"][-2:]
    for bad in ("zero", "0", "100000"):
        r = httpx.get(f"{d.url}/admin/users/u1/trace?limit={bad}", headers=BEARER)
        assert r.status_code == 400 and r.json()["field"] == "limit", r.text
    assert httpx.get(f"{d.url}/admin/users/nobody/trace", headers=BEARER).status_code == 404

    # live counts per journey and step
    counts = {j["journey"]: j for j in httpx.get(f"{d.url}/admin/journeys", headers=BEARER).json()["journeys"]}
    assert counts["Browse abandonment"]["in_flight"] == 2
    assert sum(s["users"] for s in counts["Browse abandonment"]["steps"]) == 2

    # dead letters: the ad connectors have no credentials here, so their entries fail; make one dead
    eventually(lambda: rows(db, "SELECT id FROM outbox WHERE connector = 'meta' AND user_id = 'u1' "
                                "AND state = 'failed'"))
    ((entry_id,),) = rows(db, "SELECT id FROM outbox WHERE connector = 'meta' AND user_id = 'u1'")
    conn = sqlite3.connect(db, timeout=5)
    with conn:
        conn.execute("UPDATE outbox SET state = 'dead', attempts = 8 WHERE id = ?", (entry_id,))
    conn.close()
    dead = httpx.get(f"{d.url}/admin/dead-letters?state=dead", headers=BEARER).json()["entries"]
    assert [e["id"] for e in dead] == [entry_id] and dead[0]["attempts"] == 8
    failed = httpx.get(f"{d.url}/admin/dead-letters?state=failed", headers=BEARER).json()["entries"]
    assert failed and entry_id not in [e["id"] for e in failed]
    both = httpx.get(f"{d.url}/admin/dead-letters", headers=BEARER).json()["entries"]  # no state: every one
    assert sorted(e["id"] for e in both) == sorted([entry_id] + [e["id"] for e in failed])
    r = httpx.get(f"{d.url}/admin/dead-letters?state=pending", headers=BEARER)
    assert r.status_code == 400, r.text
    r = httpx.post(f"{d.url}/admin/dead-letters/{entry_id}/retry", headers=BEARER)
    assert r.status_code == 200 and r.json()["state"] == "pending"
    # retried at once: attempted again (and failing again, permanently, with attempts reset)
    eventually(lambda: rows(db, "SELECT state, attempts FROM outbox WHERE id = ?", entry_id) == [("failed", 1)])
    assert httpx.get(f"{d.url}/admin/dead-letters?state=dead", headers=BEARER).json()["entries"] == []
    again = httpx.get(f"{d.url}/admin/dead-letters", headers=BEARER).json()["entries"]
    assert [(e["state"], e["attempts"]) for e in again if e["id"] == entry_id] == [("failed", 1)]
    assert httpx.post(f"{d.url}/admin/dead-letters/no-such/retry", headers=BEARER).status_code == 404

    # forget u1: profile, journeys, identities, outbox, action payloads go; a tombstone stays
    r = httpx.delete(f"{d.url}/admin/users/anon-1", headers=BEARER)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["userId"] == "u1" and set(body["forgotten"]) >= {"u1", "anon-1"}
    assert body["deleted"]["trail"] == len(lines)
    # u1 was put in the warm audience (synced to Meta only): its removal is queued
    assert [(a["audience"], a["connector"]) for a in body["audiences_removed"]] == [("warm_browsers", "meta")]
    assert body["audiences_not_removed"] == []
    assert rows(db, "SELECT count(*) FROM profiles WHERE user_id = 'u1'") == [(0,)]
    assert rows(db, "SELECT count(*) FROM instances WHERE user_id = 'u1'") == [(0,)]
    assert rows(db, "SELECT count(*) FROM identities WHERE user_id = 'u1' OR alias = 'anon-1'") == [(0,)]
    ((key,),) = rows(db, "SELECT key FROM erasure")
    keyed = {i: hmac.new(bytes.fromhex(key), i.encode(), hashlib.sha256).hexdigest() for i in ("u1", "anon-1")}
    assert rows(db, "SELECT count(*) FROM outbox WHERE user_id IN ('u1', 'anon-1')") == [(0,)]
    assert rows(db, "SELECT kind, target FROM outbox WHERE user_id = ?", keyed["u1"]) == [
        ("audience_remove", "warm_browsers")]  # under the keyed hash of her id
    assert rows(db, "SELECT count(*) FROM trail WHERE user_id IN ('u1', 'anon-1')") == [(0,)]
    assert rows(db, "SELECT count(*) FROM actions WHERE user IN ('u1', 'anon-1')") == [(0,)]
    assert rows(db, "SELECT count(*) FROM actions WHERE user = ? AND json IS NULL", keyed["u1"])[0][0] > 0
    assert {u for (u,) in rows(db, "SELECT id_hash FROM forgotten")} >= set(keyed.values())
    assert httpx.get(f"{d.url}/admin/users/u1", headers=BEARER).status_code == 404
    assert httpx.get(f"{d.url}/v1/profile/u1", auth=(PROFILE_KEY, "")).status_code == 404
    # u2 is untouched
    assert httpx.get(f"{d.url}/v1/profile/u2", auth=(PROFILE_KEY, "")).json()["traits"]["home_banner"] == "outdoor"

    # later events of the forgotten user (by id or anonymous id) are dropped by the processor
    assert d.post("track", {"userId": "u1", "event": "Product Viewed",
                            "properties": {"name": "Soap", "category": "beauty"}}).status_code == 200
    assert d.post("track", {"anonymousId": "anon-1", "event": "Product Viewed",
                            "properties": {"name": "Soap", "category": "beauty"}}).status_code == 200
    caught_up(d)
    time.sleep(0.2)
    assert rows(db, "SELECT count(*) FROM profiles WHERE user_id IN ('u1', 'anon-1')") == [(0,)]
    assert d.stop() == 0


def test_admin_api_is_off_without_a_token_and_profile_api_without_keys(shop, tmp_path, daemons):
    d = daemons(shop, f"sqlite:///{tmp_path / 'store.db'}", JOURNEYS_UNSUBSCRIBE_SECRET=SECRET[::-1],
                JOURNEYS_ADMIN_TOKEN="")  # the test daemons' default token, unset
    assert httpx.get(f"{d.url}/admin/journeys", headers={"Authorization": "Bearer x"}).status_code == 401
    assert httpx.get(f"{d.url}/admin/journeys", headers=BEARER).status_code == 401
    r = httpx.get(f"{d.url}/v1/profile/u1", auth=("test-write-key", ""))
    assert r.status_code == 404 and "profile_keys_env" in r.text
    # a link signed with another secret than the daemon's verifies not (without any secret the shop,
    # which sends emails, does not start: tests/test_serve_errors.py; tests/test_preflight.py serves
    # a project that sends none without one)
    assert httpx.get(f"{d.url}/u/{sign('u1', 'email', SECRET)}").status_code == 404
    assert d.stop() == 0


def test_messages_set_aside_are_listed_and_requeued_through_the_admin_api(shop, tmp_path, daemons):
    """A message the engine cannot take is set aside, listed with its error, and goes back into
    the inbox on request; one that still cannot be taken is set aside again, under its new
    number: never lost either way. (tests/test_daemon.py has a requeue that then succeeds.)"""
    from engine.store.inbox import Inbox

    db = tmp_path / "store.db"
    inbox = Inbox.open(str(db))
    inbox.append_rows([("2026-03-02T10:00:00.000000Z", b'{"type": "nonsense", "userId": "u9"}')])
    inbox.close()
    d = daemons(shop, f"sqlite:///{db}", JOURNEYS_ADMIN_TOKEN=ADMIN)
    caught_up(d)
    for method, path in (("GET", "/admin/inbox/failed"), ("POST", "/admin/inbox/failed/1/retry")):
        assert httpx.request(method, d.url + path).status_code == 401

    (aside,) = eventually(lambda: httpx.get(f"{d.url}/admin/inbox/failed", headers=BEARER).json()["messages"])
    assert aside["seq"] == 1 and aside["message"] == {"type": "nonsense", "userId": "u9"}
    assert "nonsense" in aside["error"] and aside["at"].endswith("Z")

    r = httpx.post(f"{d.url}/admin/inbox/failed/1/retry", headers=BEARER)
    assert r.status_code == 200 and r.json() == {"seq": 1, "state": "requeued"}, r.text
    caught_up(d)
    again = eventually(lambda: [m for m in httpx.get(f"{d.url}/admin/inbox/failed", headers=BEARER).json()["messages"]
                                if m["seq"] != 1])
    assert [(m["seq"], m["message"]) for m in again] == [(2, aside["message"])]  # the same message, set aside again
    assert httpx.post(f"{d.url}/admin/inbox/failed/1/retry", headers=BEARER).status_code == 404
    r = httpx.post(f"{d.url}/admin/inbox/failed/abc/retry", headers=BEARER)
    assert r.status_code == 400 and r.json()["field"] == "seq"
    assert httpx.get(f"{d.url}/admin/inbox/failed?limit=0", headers=BEARER).json()["messages"] == again
    assert d.stop() == 0


# ---------------------------------------------------------------------- forget-user and ad audiences

def shop_with_fake_ads(shop, meta_url: str, google_url: str):
    """The shop's Meta and Google connectors pointed at the fake providers on loopback."""
    toml = shop / "journeys.toml"
    text = toml.read_text()
    for old, new in (('access_token_env = "META_ACCESS_TOKEN"\n',
                      f'access_token_env = "META_ACCESS_TOKEN"\nbase_url = "{meta_url}"\n'),
                     ('refresh_token_env = "GOOGLE_ADS_REFRESH_TOKEN"\n',
                      f'refresh_token_env = "GOOGLE_ADS_REFRESH_TOKEN"\nbase_url = "{google_url}"\n'
                      f'oauth_url = "{google_url}/token"\n')):
        assert old in text
        text = text.replace(old, new)
    toml.write_text(text)
    return shop


def test_forgetting_a_user_removes_them_from_every_ad_audience(shop, tmp_path, daemons):
    from .test_google_audiences import Google, Server as GoogleServer
    from .test_meta_audiences import AUD, TOKEN, Server as MetaServer, form_of, graph_ok, h

    meta, google = MetaServer(graph_ok), Google()
    ads = GoogleServer(google)
    try:
        db = tmp_path / "store.db"
        d = daemons(shop_with_fake_ads(shop, meta.url, ads.url), f"sqlite:///{db}", JOURNEYS_ADMIN_TOKEN=ADMIN,
                    META_ACCESS_TOKEN=TOKEN, GOOGLE_ADS_DEVELOPER_TOKEN="devtoken",
                    GOOGLE_ADS_CLIENT_ID="cid.apps.googleusercontent.com", GOOGLE_ADS_CLIENT_SECRET="csecret",
                    GOOGLE_ADS_REFRESH_TOKEN="1//refresh")
        traits = {"email": " Ann.Lee@Example.com ", "phone": "+1 650 253 0000", "plan": "gold",
                  "favourite_colour": "green"}
        assert d.post("identify", {"userId": "u5", "traits": traits}).status_code == 200
        # an added product makes her a hot browser: the hot audience syncs to Meta and Google
        assert d.post("track", {"userId": "u5", "event": "Product Added",
                                "properties": {"name": "Tent", "category": "outdoor"}}).status_code == 200
        assert d.post("track", {"userId": "u5", "event": "Product Viewed",
                                "properties": {"name": "Tent", "category": "outdoor"}}).status_code == 200
        email, phone, e164 = h("ann.lee@example.com"), h("16502530000"), h("+16502530000")  # Meta's, Google's

        def added():
            return rows(db, "SELECT connector, state FROM outbox WHERE user_id = 'u5' AND kind = 'audience_add' "
                            "ORDER BY connector") == [("google_ads", "delivered"), ("meta", "delivered")]
        eventually(added, timeout=15)
        (post,) = [r for r in meta.requests if r["method"] == "POST"]
        assert post["path"] == f"/v25.0/{AUD}/users"

        r = httpx.delete(f"{d.url}/admin/users/u5", headers=BEARER)
        assert r.status_code == 200, r.text
        body = r.json()
        assert [(a["audience"], a["connector"]) for a in body["audiences_removed"]] == [
            ("hot_browsers", "meta"), ("hot_browsers", "google_ads")]
        assert rows(db, "SELECT count(*) FROM profiles WHERE user_id = 'u5'") == [(0,)]

        # the providers receive the removals, hashed, though the profile is gone
        def removed():
            return rows(db, "SELECT connector, state FROM outbox WHERE kind = 'audience_remove' ORDER BY connector"
                        ) == [("google_ads", "delivered"), ("meta", "delivered")]
        eventually(removed, timeout=15)
        (delete,) = [r for r in meta.requests if r["method"] == "DELETE"]
        assert delete["path"] == f"/v25.0/{AUD}/users"
        payload, _ = form_of(delete)
        assert payload["schema"][:2] == ["EMAIL", "PHONE"] and payload["data"][0][:2] == [email, phone]
        removes = [op["remove"] for req in ads.requests if req["path"].endswith(":addOperations")
                   for op in json.loads(req["body"])["operations"] if "remove" in op]
        assert removes == [{"userIdentifiers": [{"hashedEmail": email}, {"hashedPhoneNumber": e164}]}]
        assert any(req["path"].endswith(":run") for req in ads.requests[-2:])
        everything = json.dumps([meta.requests, ads.requests])
        assert "ann.lee" not in everything.lower() and "650 253" not in everything

        # what the removals carried is only what the connectors match on, and it goes once settled
        payloads = [p for (p,) in rows(db, "SELECT payload FROM outbox WHERE kind = 'audience_remove'")]
        assert all("gold" not in p and "favourite_colour" not in p for p in payloads)
        eventually(lambda: all("Ann.Lee" not in p for (p,) in rows(
            db, "SELECT payload FROM outbox WHERE kind = 'audience_remove'")), timeout=15)
        assert d.stop() == 0
    finally:
        meta.close()
        ads.close()


# ---------------------------------------------------------------------- what became of each action

STATUS_JOURNEY = """\
journey "Status" {
  entry when event "Signed Up"
  cap email 1 per 1d
  quiet hours 21:00-08:00 user time
  add user to audience "warm"
  webhook "crm" with { user_id: user.id }
  send email "hello"
  send email "again"
}
"""


def status_project(root, smtp_port: int, meta_url: str, hook_url: str):
    """Every fate an action can meet: the tiny project's SMTP connector, plus an audience synced
    to a (fake) Meta and a webhook (whose receiver answers 503: retried in an hour); the journey
    has a cap and quiet hours."""
    from .test_daemon import TINY_TEMPLATE
    from .test_meta_audiences import AUD

    tiny_project(root, smtp_port)
    with (root / "journeys.toml").open("a") as toml:
        toml.write(f"""
[connectors.meta]
channel = "ads"
type = "meta_custom_audiences"
ad_account_id = "act_123"
access_token_env = "META_ACCESS_TOKEN"
base_url = "{meta_url}"
audiences = {{ warm = "{AUD}" }}

[audiences.warm]
sync = ["meta"]

[webhooks.crm]
url = "{hook_url}"
timeout = "5s"
""")
    (root / "journeys" / "hello.journey").write_text(STATUS_JOURNEY)  # instead of the tiny journey
    (root / "templates" / "email" / "again.j2").write_text(TINY_TEMPLATE)
    return root


def zone_at(local_hour: int) -> str:
    """An IANA zone where it is now `local_hour` o'clock (Etc/GMT+N is N hours behind UTC)."""
    from datetime import datetime, timezone

    offset = (local_hour - datetime.now(timezone.utc).hour) % 24
    offset = offset - 24 if offset > 14 else offset
    return "Etc/GMT" if offset == 0 else f"Etc/GMT{-offset:+d}"


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("pg_url")


def test_recent_actions_dead_letters_and_metrics_tell_what_became_of_each_action(tmp_path, daemons, store_url):
    """The admin API joins the engine's decision and the delivery's fate: an email the SMTP server
    rejects is `failed` with its answer (not "sent"), listed as a dead letter with the dead ones,
    counted by journeys_dead_letters, and delivered once the operator fixes the cause and retries
    it; a webhook answered 503 is `retrying` with its attempts and next try; the capped email is
    `suppressed` with its rule; the one held by quiet hours `deferred` until 08:00 user time; an
    audience change is an `updated` audience, in the user view and in journeys_actions_total."""
    from datetime import datetime, timezone
    from zoneinfo import ZoneInfo

    from engine.store.serialize import utc_text

    from .test_meta_audiences import TOKEN, Server as MetaServer, graph_ok
    from .test_reload_metrics import metrics, value
    from .test_webhook import Receiver

    smtp, meta = Server().start(), MetaServer(graph_ok)
    hook = Receiver(lambda req: (503, {"Retry-After": "3600"}, {"error": "busy"}))
    try:
        smtp.handler.replies["bounce@example.com"] = "550 5.1.1 No such user here"
        root = status_project(tmp_path / "status", smtp.port, meta.url, hook.url)
        d = daemons(root, store_url, JOURNEYS_ADMIN_TOKEN=ADMIN, JOURNEYS_UNSUBSCRIBE_SECRET=SECRET,
                    META_ACCESS_TOKEN=TOKEN)
        day, night = zone_at(14), zone_at(3)
        for uid, zone in (("ok", day), ("bounce", day), ("owl", night)):
            traits = {"email": f"{uid}@example.com", "timezone": zone}
            assert d.post("identify", {"userId": uid, "traits": traits}).status_code == 200
            assert d.post("track", {"userId": uid, "event": "Signed Up"}).status_code == 200

        def actions(uid: str) -> dict[str, dict]:
            r = httpx.get(f"{d.url}/admin/users/{uid}", headers=BEARER)
            assert r.status_code == 200, r.text
            return {a["target"]: a for a in r.json()["recent_actions"]}

        def settled(uid: str, n: int):
            def check():
                got = actions(uid)
                open_ = [a for a in got.values() if a["status"] in ("pending", "unknown")]
                return len(got) == n and not open_ and got
            return eventually(check, timeout=20, every=0.2)

        ok = settled("ok", 4)
        assert {t: (a["outcome"], a["status"]) for t, a in ok.items()} == {
            "warm": ("updated", "updated"), "crm": ("sent", "retrying"), "hello": ("sent", "sent"),
            "again": ("suppressed", "suppressed")}
        assert (ok["again"]["reason"], ok["again"]["rule"]) == ("cap", "journey: email 1 per 1d")
        crm = ok["crm"]
        assert crm["attempts"] == 1 and "503" in crm["error"] and crm["next_try"] > utc_text(datetime.now(timezone.utc))
        assert [(x["connector"], x["state"]) for x in crm["deliveries"]] == [("webhook:crm", "pending")]
        assert ok["hello"]["error"] is None and ok["hello"]["attempts"] == 1

        bounce = settled("bounce", 4)
        assert (bounce["hello"]["outcome"], bounce["hello"]["status"]) == ("sent", "failed")
        assert "550" in bounce["hello"]["error"] and "No such user" in bounce["hello"]["error"]
        (failed_entry,) = bounce["hello"]["deliveries"]

        owl = settled("owl", 3)  # the emails wait for the morning; the audience and the webhook did not
        assert {t: (a["outcome"], a["status"]) for t, a in owl.items()} == {
            "warm": ("updated", "updated"), "crm": ("sent", "retrying"), "hello": ("deferred", "deferred")}
        morning = datetime.now(ZoneInfo(night)).replace(hour=8, minute=0, second=0, microsecond=0)
        assert owl["hello"]["until"] == utc_text(morning.astimezone(timezone.utc))
        assert owl["hello"]["deliveries"] == []

        # the permanently failed email is a dead letter: listed, counted, retried once fixed
        letters = httpx.get(f"{d.url}/admin/dead-letters", headers=BEARER).json()["entries"]
        assert [(e["id"], e["state"]) for e in letters] == [(failed_entry["id"], "failed")]
        assert "550" in letters[0]["last_error"]
        assert httpx.get(f"{d.url}/admin/dead-letters?state=dead", headers=BEARER).json()["entries"] == []
        m = metrics(d)
        assert value(m, "journeys_dead_letters") == 1
        assert value(m, "journeys_actions_total", channel="audience_add", outcome="updated") == 3
        assert value(m, "journeys_actions_total", channel="audience_add", outcome="sent") == 0
        assert value(m, "journeys_actions_total", channel="email", outcome="sent") == 2
        assert value(m, "journeys_actions_total", channel="email", outcome="suppressed") == 2
        assert value(m, "journeys_actions_total", channel="email", outcome="deferred") == 1
        assert value(m, "journeys_actions_total", channel="webhook", outcome="sent") == 3

        del smtp.handler.replies["bounce@example.com"]  # the cause fixed: the mailbox exists now
        r = httpx.post(f"{d.url}/admin/dead-letters/{failed_entry['id']}/retry", headers=BEARER)
        assert r.status_code == 200 and r.json()["state"] == "pending", r.text
        eventually(lambda: actions("bounce")["hello"]["status"] == "sent", timeout=10)
        assert [m[1] for m in smtp.handler.messages].count(["bounce@example.com"]) == 1
        assert httpx.get(f"{d.url}/admin/dead-letters", headers=BEARER).json()["entries"] == []
        assert value(metrics(d), "journeys_dead_letters") == 0
        assert d.stop() == 0
    finally:
        smtp.stop()
        meta.close()
        hook.close()
