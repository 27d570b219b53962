"""The console (`/console`) in a real headless Chromium against a real `journeys serve`.

Signed in through its form, the console loads with no console error and no request leaving the
daemon; the journey's diagram shows its counts and they change after events are posted, on the
page's own refresh (no reload); an email the SMTP server rejects is a dead letter, and its Retry
button, once the mailbox exists, gets it to the SMTP server; recent actions tell sent from failed
with the server's answer; the pause buttons hold a send and release it; searching an anonymous id
leads to the user page with the profile and the trace, user text escaped; an inbox failure's
Retry puts the message back (taken again, set aside again). Without the cookie every
console route goes to the sign-in page; a POST with the cookie from another origin is refused.
On PostgreSQL, two workers of one store show the same console. The example shop's console shows
every journey, the models in use and the ad connectors' dead letters. The hour's and day's counts
(the trail's tally) count each row once, a late-committed one included.

Waits are on conditions (the page's DOM, the SMTP server's inbox), with generous timeouts: CI runs
on two loaded cores. `python -m tests.test_console docs/images/console.png` retakes the screenshot
of the docs.
"""

from __future__ import annotations

import re
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path

import httpx
from .conftest import ROOT, SHOP
from .other_origin import OtherOrigin
from .test_daemon import Daemon, daemons, eventually, tiny_project  # noqa: F401 - daemons: a fixture
from .test_daemon_api import ADMIN, BEARER, SECRET, caught_up
from .test_html_report import SHOP_JOURNEYS, chromium
from .test_smtp import Server

WAIT = 30_000  # ms the page may take to show a change (it refreshes every 2 s)
JOURNEY = """\
journey "Hello" {
  entry when event "Signed Up"
  wait 8s
  send email "hello"
}
"""
NASTY = '<img src=x onerror="document.title=1">'
REFUSED = "Failed to load resource: the server responded with a status of %s"


def project(root: Path, smtp_port: int) -> Path:
    """The tiny project (one SMTP connector), its journey waiting long enough to be seen waiting."""
    tiny_project(root, smtp_port)
    (root / "journeys" / "hello.journey").write_text(JOURNEY)
    return root


@contextmanager
def browser():
    """A headless Chromium; yields (browser, problems): console errors, page errors and failed
    requests of every page opened with `watched`."""
    from playwright.sync_api import sync_playwright

    executable = chromium()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()


def watched(context, origin: str, problems: list[str]):
    """A new page of `context` whose errors, and requests anywhere but `origin`, go to `problems`."""
    page = context.new_page()
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url} {r.failure}"))
    page.on("request", lambda r: None if r.url.startswith(origin + "/") else problems.append(f"request: {r.url}"))
    page.on("dialog", lambda d: d.accept())  # the buttons' confirmations
    return page


def sign_in(page, url: str, token: str = ADMIN) -> None:
    page.goto(f"{url}/console", wait_until="load")
    assert page.url == f"{url}/console/sign-in"
    page.fill("#token", token)
    with page.expect_navigation():
        page.click("form button[type=submit]")


# the texts of one journey's diagram, as the page shows them now
DIAGRAM = """name => {
    const s = [...document.querySelectorAll('section.journey')].find(s => s.dataset.journey === name);
    return s ? [...s.querySelectorAll('svg.diagram text')].map(t => t.textContent) : [];
}"""


def diagram(page, name: str) -> list[str]:
    return page.evaluate(DIAGRAM, name)


def shows(page, selector: str, text: str, timeout: int = WAIT) -> None:
    """Wait until the element at `selector` contains `text` (the panel's refresh brought it)."""
    page.wait_for_function("([sel, text]) => { const e = document.querySelector(sel); "
                           "return e !== null && e.innerText.includes(text); }", arg=[selector, text], timeout=timeout)


def draws(page, name: str, text: str, timeout: int = WAIT) -> None:
    """Wait until the diagram of journey `name` has a text `text`."""
    page.wait_for_function(f"([name, text]) => ({DIAGRAM})(name).includes(text)", arg=[name, text], timeout=timeout)


def delivered_to(smtp, address: str) -> list[bytes]:
    return [content for _, rcpt, content, _ in smtp.handler.messages if rcpt == [address]]


def plant_a_bad_message(db: Path) -> None:
    """A message in the store's inbox that the engine cannot take, before the daemon starts: it is
    set aside as an inbox failure (seq 1)."""
    from datetime import datetime, timezone

    from engine.store.inbox import Inbox
    from engine.store.serialize import utc_text

    inbox = Inbox.open(str(db))
    inbox.append_rows([(utc_text(datetime.now(timezone.utc)), b'{"type": "nonsense"}')])
    inbox.close()


def cross_site_form(target: str) -> OtherOrigin:
    """A page of another origin (another port of 127.0.0.1: the same site, so a SameSite=Strict
    cookie goes with its requests) whose form posts to the daemon's admin API."""
    return OtherOrigin(f'<!doctype html><form method="post" action="{target}/admin/pauses">'
                       '<input name="journey" value="*"><button type="submit">go</button></form>'.encode())


def test_the_console_in_chromium(tmp_path, daemons):
    smtp = Server().start()
    smtp.handler.replies["bounce@example.com"] = "550 5.1.1 No such user here"
    elsewhere = None
    try:
        root = project(tmp_path / "tiny", smtp.port)
        plant_a_bad_message(tmp_path / "store.db")
        d = daemons(root, f"sqlite:///{tmp_path / 'store.db'}", JOURNEYS_ADMIN_TOKEN=ADMIN,
                    JOURNEYS_UNSUBSCRIBE_SECRET=SECRET)
        elsewhere = cross_site_form(d.url)
        problems: list[str] = []
        with browser() as b:
            context = b.new_context(viewport={"width": 1280, "height": 900})
            page = watched(context, d.url, problems)

            # not signed in: the console sends the browser to sign in; a wrong token is refused
            page.goto(f"{d.url}/console", wait_until="load")
            assert page.url == f"{d.url}/console/sign-in"
            page.fill("#token", "not-the-token")
            with page.expect_navigation():
                page.click("form button[type=submit]")
            assert "That is not the admin token." in page.inner_text("main")
            assert context.cookies() == []
            # the browser logs the refusal's status, and nothing else went wrong
            assert problems == [f"console error: {REFUSED % '401 (Unauthorized)'}"]
            problems.clear()
            page.fill("#token", ADMIN)
            with page.expect_navigation():
                page.click("form button[type=submit]")
            assert page.url == f"{d.url}/console"
            (cookie,) = context.cookies()
            assert (cookie["name"], cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (
                "journeys_admin", True, "Strict", "/")
            assert page.evaluate("document.cookie") == ""  # HttpOnly: no script reads the token

            # the journey's diagram, with its counts
            assert "entry when event" in " ".join(diagram(page, "Hello"))
            assert "entered 1h 0 · 1d 0" in diagram(page, "Hello")
            assert "now 0" in diagram(page, "Hello") and "sent 1h 0 · 1d 0" in diagram(page, "Hello")

            # events posted: the counts change on the page's own refresh, not a reload
            page.evaluate("window.notReloaded = true")
            assert d.post("track", {"anonymousId": "anon-7", "event": "Page Viewed"}).status_code == 200
            for uid in ("u1", "bounce"):
                traits = {"email": f"{uid}@example.com", "first_name": NASTY}
                body = {"userId": uid, "traits": traits, **({"anonymousId": "anon-7"} if uid == "u1" else {})}
                assert d.post("identify", body).status_code == 200
                assert d.post("track", {"userId": uid, "event": "Signed Up"}).status_code == 200
            draws(page, "Hello", "entered 1h 2 · 1d 2")
            assert "now 2" in diagram(page, "Hello")
            draws(page, "Hello", "sent 1h 2 · 1d 2")  # after the wait: both sent by the engine...
            shows(page, "#panel-journeys", "in flight now")
            assert page.evaluate("window.notReloaded") is True
            eventually(lambda: delivered_to(smtp, "u1@example.com"), timeout=20)

            # ... and one rejected by the SMTP server: failed with its answer, a dead letter
            shows(page, "#panel-letters table.dead", "No such user here")
            shows(page, "#panel-actions", "No such user here")
            statuses = page.evaluate("""() => [...document.querySelectorAll('#panel-actions table.actions tbody tr')]
                .map(r => [r.cells[1].innerText, r.cells[6].innerText])""")
            assert sorted(statuses) == [["bounce", "failed"], ["u1", "sent"]], statuses
            assert delivered_to(smtp, "bounce@example.com") == []
            shows(page, "#panel-health", "dead letters")
            # the mailbox exists now: the Retry button gets the email to the SMTP server
            del smtp.handler.replies["bounce@example.com"]
            page.click("#panel-letters table.dead tr[data-entry] button")
            shows(page, "#flash", "Done: ")
            assert "pending" in page.inner_text("#flash")
            (raw,) = eventually(lambda: delivered_to(smtp, "bounce@example.com"), timeout=20)
            assert b"Subject: Hello" in raw
            shows(page, "#panel-letters table.dead", "No dead letter.")
            page.wait_for_function("() => [...document.querySelectorAll('#panel-actions table.actions tbody tr')]"
                                   ".every(r => r.cells[6].innerText === 'sent')", timeout=WAIT)

            # the message the engine could not take: retried, it is taken again (and set aside again)
            failed = "#panel-letters table.failed"
            shows(page, failed, "nonsense")
            assert page.eval_on_selector_all(f"{failed} tr[data-seq]", "rs => rs.map(r => r.dataset.seq)") == ["1"]
            page.click(f"{failed} tr[data-seq] button")
            shows(page, "#flash", "requeued")
            page.wait_for_function("sel => { const rs = [...document.querySelectorAll(sel + ' tr[data-seq]')]; "
                                   "return rs.length === 1 && Number(rs[0].dataset.seq) > 1; }", arg=failed,
                                   timeout=WAIT)

            # the emergency stop: paused, a send is held; resumed with "send held", it goes out
            page.select_option("#pause-journey", "Hello")
            page.fill("#pause-by", "ops")
            page.fill("#pause-reason", "wrong <coupon>")
            page.click("form.pause button[type=submit]")
            shows(page, "#panel-pauses", "Hello paused by ops")
            assert "wrong <coupon>" in page.inner_text("#panel-pauses")
            assert d.post("identify", {"userId": "u3", "traits": {"email": "u3@example.com"}}).status_code == 200
            assert d.post("track", {"userId": "u3", "event": "Signed Up"}).status_code == 200
            shows(page, "#panel-pauses", "1 sends held")
            assert delivered_to(smtp, "u3@example.com") == []
            page.click("#panel-pauses button:has-text('Resume, send held')")
            shows(page, "#panel-pauses", "Nothing is paused")
            eventually(lambda: delivered_to(smtp, "u3@example.com"), timeout=20)
            # the pause log under the pauses, newest first: who, when, why, what became of the held send
            shows(page, "#panel-pauses ol.pause-log", "Hello resumed by console at ")
            history = page.eval_on_selector_all("#panel-pauses ol.pause-log li", "ls => ls.map(l => l.innerText)")
            assert len(history) == 2, history
            assert history[0].startswith("Hello resumed by console at ") and history[0].endswith(
                "Z, 1 released / 0 dropped"), history
            assert history[1].startswith("Hello paused by ops at ") and history[1].endswith("Z: wrong <coupon>"), history

            # the user page, from the search box, by the anonymous id: profile, journeys, actions, trace
            page.fill("#user-search", "anon-7")
            with page.expect_navigation():
                page.click("header form[role=search] button")
            main = page.inner_text("main")
            assert "User u1" in main and "found by anon-7" in main
            assert NASTY in main and page.locator("main img").count() == 0  # text, never markup
            assert page.title().startswith("u1")
            trace = page.inner_text("pre.trace")
            assert "anon-7  event Page Viewed" in trace and "u1  event Signed Up" in trace
            assert "Hello #1" in trace and "entered" in trace
            assert 'email "hello" sent' in trace
            assert "sent" in page.inner_text("table.actions")
            page.fill("#user-search", "<b>nobody</b>")
            with page.expect_navigation():
                page.click("header form[role=search] button")
            assert "No profile '<b>nobody</b>'." in page.inner_text("main")
            assert page.locator("main b").count() == 0
            assert problems.pop() == f"console error: {REFUSED % '404 (Not Found)'}"
            assert problems == []

            # another origin's form, posted with the cookie: refused (403, not 401: the cookie went)
            other = context.new_page()
            other.goto(elsewhere.url)
            with other.expect_navigation() as nav:
                other.click("button")
            assert nav.value.status == 403
            assert httpx.get(f"{d.url}/admin/pauses", headers=BEARER).json()["pauses"] == []

            # a browser without the cookie: every console page goes to sign in
            fresh = b.new_context()
            stranger = fresh.new_page()
            for path in ("/console", "/console/users?id=u1", "/console/panel/journeys"):
                stranger.goto(d.url + path)
                assert stranger.url == f"{d.url}/console/sign-in", path
                assert "Sign in with the daemon's admin token" in stranger.inner_text("main")
            fresh.close()

        # the same from a program: pages redirect, fragments tell htmx where to go, nothing leaks
        for path in ("/console", "/console/users?id=u1", "/console/static/htmx.min.js", "/console/panel/actions"):
            r = httpx.get(d.url + path)
            assert r.status_code == 303 and r.headers["location"] == "/console/sign-in", path
        r = httpx.get(f"{d.url}/console/panel/journeys", headers={"HX-Request": "true"})
        assert r.status_code == 401 and r.headers["hx-redirect"] == "/console/sign-in" and r.text == ""
        cookie = {"journeys_admin": ADMIN}
        r = httpx.post(f"{d.url}/console/sign-out", cookies=cookie, headers={"Origin": "http://evil.example"})
        assert r.status_code == 403
        r = httpx.post(f"{d.url}/console/sign-out", cookies=cookie, headers={"Origin": d.url})
        assert r.status_code == 303 and 'journeys_admin=""' in r.headers["set-cookie"]
        page_ = httpx.get(f"{d.url}/console", cookies=cookie)
        assert page_.status_code == 200 and "default-src 'self'" in page_.headers["content-security-policy"]
        assert d.stop() == 0
    finally:
        smtp.stop()
        if elsewhere is not None:
            elsewhere.close()


def test_two_workers_on_postgresql_show_the_same_console(tmp_path, daemons, pg_url):
    smtp = Server().start()
    try:
        root = project(tmp_path / "tiny", smtp.port)
        env = {"JOURNEYS_ADMIN_TOKEN": ADMIN, "JOURNEYS_UNSUBSCRIBE_SECRET": SECRET, "JOURNEYS_LEASE_TTL": "2"}
        workers = [daemons(root, pg_url, **env) for _ in range(2)]
        users = [f"p{i}" for i in range(6)]
        problems: list[str] = []
        with browser() as b:
            context = b.new_context(viewport={"width": 1280, "height": 900})
            pages = []
            for w in workers:
                page = watched(context, w.url, problems)
                if not pages:
                    sign_in(page, w.url)
                else:  # the cookie is the host's: the second worker's console takes it too
                    page.goto(f"{w.url}/console", wait_until="load")
                    assert page.url == f"{w.url}/console"
                pages.append(page)
                assert "entered 1h 0 · 1d 0" in diagram(page, "Hello")
            for uid in users:  # to the first worker only; partitions spread them over both
                assert workers[0].post("identify", {"userId": uid, "traits": {"email": f"{uid}@example.com"}}
                                       ).status_code == 200
                assert workers[0].post("track", {"userId": uid, "event": "Signed Up"}).status_code == 200
            for page in pages:
                draws(page, "Hello", f"entered 1h {len(users)} · 1d {len(users)}")
            for page in pages:
                draws(page, "Hello", f"sent 1h {len(users)} · 1d {len(users)}")
                page.wait_for_function("n => document.querySelectorAll('#panel-actions table.actions tbody tr "
                                       "td.s-sent').length === n", arg=len(users), timeout=WAIT)
            eventually(lambda: len(smtp.handler.messages) == len(users), timeout=20)
            # the user page from the second worker, of a user any worker may have processed
            pages[1].goto(f"{workers[1].url}/console/users?id={users[0]}")
            assert f"User {users[0]}" in pages[1].inner_text("main")
            assert f"{users[0]}  event Signed Up" in pages[1].inner_text("pre.trace")
            assert problems == []
        for w in workers:
            caught_up(w)
            assert w.stop() == 0
    finally:
        smtp.stop()


# ------------------------------------------------------------------------------ the tally

def test_the_tally_counts_each_trail_row_once_by_window_and_a_row_committed_late(tmp_path):
    """The last hour's and day's counts from the trail (engine.daemon.admin.console.tally): by
    journey, step and what; an effect older than the window is not counted in it; a row whose id
    is below one read already (another PostgreSQL worker's transaction that committed later) is
    counted when it appears; a row read twice is counted once."""
    from datetime import datetime, timedelta, timezone

    from engine.core.effects import Action, Conversion, Transition
    from engine.daemon.admin.console.tally import Tally
    from engine.daemon.trail import Trail
    from engine.store.serialize import utc_text
    from engine.store.sqlite_store import SqliteStore

    now = datetime.now(timezone.utc)
    store = SqliteStore(str(tmp_path / "s.db"))
    sink = Trail(store)

    def effects(user: str, at: datetime, outcome: str = "sent", reason: str | None = None) -> list:
        return [Transition(at, user, "Hello", "v1", 1, "entered"),
                Action(f"a-{user}", at, user, "Hello", "v1", 1, "hello/2", "email", "email", "hello", outcome,
                       reason=reason),
                Conversion(at, user, "Hello", "v1", 1, "purchase")]

    def emit(*groups) -> None:
        with store.transaction():
            for g in groups:
                sink.emit(g)

    emit(effects("u3", now - timedelta(days=2)), effects("u2", now - timedelta(hours=2), "suppressed", "cap"),
         effects("u1", now))  # in time order, as the daemon's clock writes them
    tally = Tally()
    tally.refresh(store.conn)
    counts = tally.counts()
    assert counts["1h"] == {("Hello", ""): {"entered": 1, "converted": 1}, ("Hello", "hello/2"): {"sent": 1}}
    assert counts["1d"] == {("Hello", ""): {"entered": 2, "converted": 2},
                            ("Hello", "hello/2"): {"sent": 1, "capped": 1}}
    assert tally.caught_up and tally.newest_actions() == ["a-u1", "a-u2"]  # newest first

    # a row with a higher id first, then one with the id skipped (a late commit): both counted, once
    (raw,) = store.conn.execute("SELECT json FROM trail WHERE user_id = 'u1'").fetchone()
    (top,) = store.conn.execute("SELECT max(id) FROM trail").fetchone()
    store.conn.execute("INSERT INTO trail (id, user_id, time, n, json) VALUES (?, 'u1', ?, 3, ?)",
                       (top + 2, utc_text(now), raw))
    tally.refresh(store.conn)
    tally.refresh(store.conn)
    assert tally.counts()["1h"][("Hello", "")] == {"entered": 2, "converted": 2}
    store.conn.execute("INSERT INTO trail (id, user_id, time, n, json) VALUES (?, 'u1', ?, 3, ?)",
                       (top + 1, utc_text(now), raw))
    tally.refresh(store.conn)
    tally.refresh(store.conn)
    assert tally.counts()["1h"][("Hello", "")] == {"entered": 3, "converted": 3}
    assert tally.counts()["1h"][("Hello", "hello/2")] == {"sent": 3}

    # a new tally (a restarted daemon) reads the last day again: the same counts
    again = Tally()
    again.refresh(store.conn)
    assert again.counts() == tally.counts()
    store.close()


# ------------------------------------------------------------------------------ the example shop

def shop_console(then) -> None:
    """The console of the example shop, signed in, 1280 wide: a part of its sample log, then a few
    payment failures whose emails an SMTP server takes (one address it rejects); the ad connectors
    have no tokens here, so their deliveries are dead letters. `then(page, problems, db)` looks."""
    import json
    import tempfile

    from .test_daemon import daytime_zone

    smtp = Server().start()
    smtp.handler.replies["gone@example.com"] = "550 5.1.1 No such user here"
    with tempfile.TemporaryDirectory() as tmp:
        shop = Path(tmp) / "shop"
        shutil.copytree(SHOP, shop)
        toml = shop / "journeys.toml"
        toml.write_text(toml.read_text().replace("port = 1025", f"port = {smtp.port}"))
        d = Daemon(shop, f"sqlite:///{tmp}/store.db", Path(tmp) / "daemon.log", JOURNEYS_ADMIN_TOKEN=ADMIN)
        try:
            lines = (SHOP / "events" / "sample.jsonl").read_text().splitlines()[:3000]
            events = [json.loads(line) for line in lines]
            for n, who in enumerate(PAYING + ["gone"]):
                events += [{"type": "identify", "userId": who, "traits": {"email": f"{who}@example.com",
                                                                          "timezone": daytime_zone()}},
                           {"type": "track", "userId": who, "event": "Payment Failed",
                            "properties": {"order_id": f"o-{n}"}}]
            for at in range(0, len(events), 200):
                r = httpx.post(f"{d.url}/v1/batch", json={"batch": events[at:at + 200]}, auth=("test-write-key", ""),
                               timeout=30)
                assert r.status_code == 200, r.text
            caught_up(d)
            mine = {f"{who}@example.com" for who in PAYING}
            eventually(lambda: mine <= {r for _, rcpt, _, _ in smtp.handler.messages for r in rcpt}, timeout=30)
            problems: list[str] = []
            with browser() as b:
                page = watched(b.new_context(viewport={"width": 1280, "height": 1600}), d.url, problems)
                sign_in(page, d.url)
                then(page, problems, Path(tmp) / "store.db")
        finally:
            d.stop()
            smtp.stop()


PAYING = ["ann", "bob", "cy", "dee", "eve"]


def test_the_shop_s_console_shows_every_journey_its_models_and_dead_letters():
    def check(page, problems, db):
        shows(page, "#panel-health", "trained as of")  # the models, once trained at start
        health = page.inner_text("#panel-health")
        assert re.search(r"version \S+, trained as of \S+ \([\d.]+ \w+ ago\)", health), health
        assert all(f in health for f in ("activity", "fatigue", "purchase", "recommender", "sendtime"))
        journeys = page.eval_on_selector_all("section.journey", "els => els.map(e => e.dataset.journey)")
        assert journeys == list(SHOP_JOURNEYS)
        from .test_daemon import rows

        ((sent,),) = rows(db, "SELECT count(*) FROM actions WHERE journey = 'Payment failure' AND outcome = 'sent'")
        assert sent > len(PAYING)  # the sample's payment failures, and ours
        draws(page, "Payment failure", f"sent 1h {sent} · 1d {sent}")
        first = page.eval_on_selector_all("svg.diagram", "els => els.length")
        assert first == len(SHOP_JOURNEYS)
        shows(page, "#panel-letters table.dead", "META_ACCESS_TOKEN")  # the ad audiences' dead letters
        shows(page, "#panel-actions", "No such user here")  # gone@example.com: failed, with the answer
        assert problems == []

    shop_console(check)


def screenshot(target: Path) -> None:
    """The docs' screenshot (docs/deployment.md): the first screen of the shop's console."""
    shop_console(lambda page, problems, db: page.screenshot(path=str(target)))


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    screenshot(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "images" / "console.png")
