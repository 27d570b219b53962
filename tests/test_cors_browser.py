"""Browser ingest (CORS, `[ingest] cors_origins`): a real page in headless Chromium posts events to a
real daemon on another origin through fetch().

A page is served from a tiny http.server on one loopback port (its origin allowed) and from another
(not allowed); the daemon (`journeys serve`) runs on a third. In the browser:
- from the allowed origin, analytics.js' way (`writeKey` in a `text/plain` JSON body: no preflight)
  and a preflighted request (an `Authorization: Basic` header, `application/json`) both answer 200
  to the page's script, and their events land in the store; a refused one (an unknown key) shows
  the page its 401 and the error's `code`;
- from the other origin the browser blocks both: the preflighted request is never sent (nothing
  lands), the simple one is sent but its answer is withheld from the script (it lands: CORS decides
  who reads answers, the write key decides what is accepted).
Over plain HTTP: the preflight's answer (methods, headers, max-age; 400 for another origin), the
headers of the answers of both paths into the ingest (the fast path of `journeys serve` and the
FastAPI routes of `create_app(fast_path=False)`), errors included, with `Vary: Origin`; and a
project without `cors_origins` answers no preflight and allows no origin.
"""

from __future__ import annotations

import base64

import httpx
import pytest

from .other_origin import OtherOrigin
from .test_daemon import KEY, daemons, eventually, rows, tiny_project  # noqa: F401 - daemons is a fixture
from .test_html_report import chromium
from .test_smtp import free_port

PAGE = b"<!doctype html><html><head><meta charset='utf-8'><title>shop</title></head><body>shop</body></html>"
BASIC = "Basic " + base64.b64encode(f"{KEY}:".encode()).decode()

# (status, body) of a fetch() to the daemon, or {"blocked": the browser's error} when the browser refuses
FETCH = """async ([url, init]) => {
  try {
    const r = await fetch(url, init);
    return {status: r.status, body: await r.json()};
  } catch (e) {
    return {blocked: String(e)};
  }
}"""


@pytest.fixture()
def sites():
    """Two pages on loopback, each its own origin (http://127.0.0.1:<port>): the shop's, allowed, and another."""
    shop, other = OtherOrigin(PAGE), OtherOrigin(PAGE)
    yield shop, other
    shop.close()
    other.close()


def project_allowing(tmp_path, origin: str):
    root = tiny_project(tmp_path / "tiny", free_port())
    toml = root / "journeys.toml"
    toml.write_text(toml.read_text().replace('write_keys_env = ["JOURNEYS_WRITE_KEY"]',
                                             f'write_keys_env = ["JOURNEYS_WRITE_KEY"]\ncors_origins = ["{origin}"]'))
    return root


def simple(message_id: str, key: str = KEY) -> dict:
    """analytics.js' request: the key in a text/plain JSON body (a "simple" request: no preflight)."""
    body = f'{{"writeKey": "{key}", "userId": "b1", "event": "Product Viewed", "messageId": "{message_id}"}}'
    return {"method": "POST", "headers": {"Content-Type": "text/plain"}, "body": body}


def preflighted(message_id: str) -> dict:
    body = f'{{"userId": "b1", "event": "Product Viewed", "messageId": "{message_id}"}}'
    return {"method": "POST", "headers": {"Authorization": BASIC, "Content-Type": "application/json"}, "body": body}


def test_a_browser_page_sends_events_from_an_allowed_origin_only(tmp_path, daemons, sites):
    executable = chromium()
    from playwright.sync_api import sync_playwright

    shop, other = sites
    root = project_allowing(tmp_path, shop.origin)
    d = daemons(root, None)
    db = root / "data" / "tiny.db"
    track = d.url + "/v1/track"

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(shop.origin + "/", wait_until="load")
            assert page.evaluate("location.origin") == shop.origin
            ok = page.evaluate(FETCH, [track, simple("m-simple")])
            assert ok == {"status": 200, "body": {"success": True}}, ok
            ok = page.evaluate(FETCH, [track, preflighted("m-preflighted")])
            assert ok == {"status": 200, "body": {"success": True}}, ok
            refused = page.evaluate(FETCH, [track, simple("m-bad-key", key="not-a-key")])
            assert refused["status"] == 401 and refused["body"]["code"] == "invalid_write_key", refused

            page.goto(other.origin + "/", wait_until="load")
            blocked = page.evaluate(FETCH, [track, preflighted("m-blocked")])
            assert "blocked" in blocked, blocked  # the preflight failed: the POST was never sent
            withheld = page.evaluate(FETCH, [track, simple("m-withheld")])
            assert "blocked" in withheld, withheld  # sent, but its answer is not the page's to read
        finally:
            browser.close()

    def landed():
        return {m for (m,) in rows(db, "SELECT message_id FROM messages")}

    eventually(lambda: {"m-simple", "m-preflighted", "m-withheld"} <= landed(), timeout=10)
    assert "m-blocked" not in landed() and "m-bad-key" not in landed()
    assert d.stop() == 0


def cors_headers(r: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in r.headers.items() if k.startswith("access-control-") or k == "vary"}


def check_answers(post, shop: str, other: str) -> None:
    """The CORS headers of the ingest's answers, through `post(path, body, headers)`."""
    for path, body, status in (("/v1/track", {"userId": "h1", "event": "E"}, 200),
                               ("/v1/t", {"userId": "h1", "event": "E"}, 200),
                               ("/v1/batch", {"batch": [{"type": "track", "userId": "h1", "event": "E"}]}, 200),
                               ("/v1/track", {"userId": "h1"}, 400)):
        r = post(path, body, {"Origin": shop, "Authorization": BASIC})
        assert r.status_code == status, (path, r.text)
        assert r.headers["access-control-allow-origin"] == shop and "Origin" in r.headers["vary"], (path, r.headers)
        r = post(path, body, {"Origin": other, "Authorization": BASIC})
        assert r.status_code == status and "access-control-allow-origin" not in r.headers, (path, r.headers)
        assert "Origin" in r.headers["vary"]
    r = post("/v1/track", {"userId": "h1", "event": "E"}, {"Origin": shop})  # no key: the 401 is readable too
    assert r.status_code == 401 and r.headers["access-control-allow-origin"] == shop


def test_preflight_and_the_headers_of_every_answer_over_http(tmp_path, daemons, sites):
    shop, other = sites
    d = daemons(project_allowing(tmp_path, shop.origin), None)
    ask = {"Origin": shop.origin, "Access-Control-Request-Method": "POST",
           "Access-Control-Request-Headers": "authorization, content-type"}
    for path in ("/v1/track", "/v1/batch", "/v1/i"):
        r = httpx.options(d.url + path, headers=ask, timeout=5)
        assert r.status_code == 200, r.text
        h = cors_headers(r)
        assert h["access-control-allow-origin"] == shop.origin and "POST" in h["access-control-allow-methods"]
        allowed = {x.strip().lower() for x in h["access-control-allow-headers"].split(",")}
        assert {"authorization", "content-type"} <= allowed
        assert h["access-control-max-age"] == "7200" and "Origin" in h["vary"]
    r = httpx.options(d.url + "/v1/track", headers={**ask, "Origin": other.origin}, timeout=5)
    assert r.status_code == 400 and "access-control-allow-origin" not in r.headers
    r = httpx.options(d.url + "/v1/track", headers={**ask, "Access-Control-Request-Method": "DELETE"}, timeout=5)
    assert r.status_code == 400
    # only the ingest's paths: the operator's routes and the profile API answer no browser
    r = httpx.options(d.url + "/admin/journeys", headers=ask, timeout=5)
    assert "access-control-allow-origin" not in r.headers
    r = httpx.get(d.url + "/readyz", headers={"Origin": shop.origin}, timeout=5)
    assert "access-control-allow-origin" not in r.headers

    check_answers(lambda path, body, headers: httpx.post(d.url + path, json=body, headers=headers, timeout=5),
                  shop.origin, other.origin)  # the fast path, as journeys serve serves it
    assert d.stop() == 0


def test_the_fastapi_routes_give_the_same_headers(tmp_path, sites):
    from fastapi.testclient import TestClient

    from engine.daemon.ingest import create_app
    from journeys.config import ProjectConfig

    shop, other = sites
    config = ProjectConfig.model_validate({"ingest": {"cors_origins": [shop.origin]}})
    with TestClient(create_app(config, str(tmp_path / "j.db"), [KEY], fast_path=False)) as client:
        check_answers(lambda path, body, headers: client.post(path, json=body, headers=headers), shop.origin,
                      other.origin)


def test_without_cors_origins_no_browser_is_allowed(tmp_path, daemons, sites):
    shop, _ = sites
    d = daemons(tiny_project(tmp_path / "tiny", free_port()), None)
    r = httpx.options(d.url + "/v1/track", headers={"Origin": shop.origin, "Access-Control-Request-Method": "POST"},
                      timeout=5)
    assert r.status_code == 405 and "access-control-allow-origin" not in r.headers
    r = httpx.post(d.url + "/v1/track", json={"userId": "h1", "event": "E"},
                   headers={"Origin": shop.origin, "Authorization": BASIC}, timeout=5)
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    assert d.stop() == 0


@pytest.mark.parametrize("origin, said", [
    ("https://shop.example/", "only scheme, host and port"),
    ("shop.example", "expected http(s)://host[:port]"),
    ("ftp://shop.example", "expected http(s)://host[:port]"),
])
def test_a_bad_origin_is_an_error_naming_the_field(tmp_path, origin, said):
    import subprocess
    import sys

    from .conftest import ROOT

    root = project_allowing(tmp_path, origin)
    done = subprocess.run([sys.executable, "-m", "engine.cli", "check", str(root)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    out = done.stdout + done.stderr
    assert done.returncode == 1 and "ingest.cors_origins.0" in out and said in out and "Traceback" not in out, out


def test_origins_are_kept_as_browsers_send_them():
    from journeys.config import ProjectConfig

    config = ProjectConfig.model_validate({"ingest": {"cors_origins": [
        "https://Shop.Example", "https://shop.example:443", "http://localhost:3000", "http://[::1]:8080", "*"]}})
    assert config.ingest.cors_origins == ["https://shop.example", "https://shop.example", "http://localhost:3000",
                                          "http://[::1]:8080", "*"]
