"""Who may call what: every route of the daemon's app against an explicit table of credentials.

The app is the one `journeys serve` serves (engine.daemon.worker.build_app, on a started worker and
a real SQLite store), spoken to through httpx's ASGI transport; the listeners (`--admin-port`)
on a real daemon process.

- Every route and method of `app.routes` is in `ROUTES` (or under /admin/, which is the admin
  token's whoever adds a route there): a route nobody classified fails here, so a new one cannot
  be left open by mistake.
- Each credential is asked for: without it a write-key, profile-key or admin route answers 401,
  with it not; no credential opens another's routes (a write key, shipped in every browser, opens
  no profile and no admin route); public routes answer without any.
- The split of `--admin-port` (engine.daemon.admin.surface.operator_path) is the table's: the
  admin token's routes and the console are the operator's, nothing else is.
- A real daemon with `--admin-port`: the operator's routes answer there (token still checked),
  404 on the public port, and the public ones 404 on the admin port; the bare /readyz says only
  ready or not.
"""

from __future__ import annotations

import asyncio
import base64
import re
import socket
import subprocess
import sys

import httpx
import pytest

from engine.daemon.admin.surface import operator_path

from .conftest import ROOT
from .test_daemon import ADMIN_TOKEN, KEY, daemons, eventually, tiny_project  # noqa: F401 - daemons is a fixture
from .test_smtp import free_port

PROFILE_KEY = "profile-key-for-tests"
FEEDBACK_TOKEN = "feedback-token-for-tests"
PUBLIC, WRITE_KEY, PROFILE, ADMIN = "public", "write key", "profile key", "admin token"
FEEDBACK = "feedback token"  # JOURNEYS_FEEDBACK_TOKEN (an MTA's pipe: it can do nothing else), or the admin token
SIGNED = "provider's signature"  # a provider's webhook, signed with the connector's secret (Svix, for Resend)
CONSOLE = "admin token, a page"  # the admin token (the console's cookie, or Bearer); refused: off to the sign-in page
SIGN_IN = "admin token, in the sign-in form"  # what sets the console's cookie

INGEST = ("track", "identify", "page", "screen", "alias", "group", "batch", "t", "i", "p", "s", "a", "g", "b")
ROUTES: dict[tuple[str, str], str] = {
    ("GET", "/healthz"): PUBLIC,
    ("GET", "/readyz"): PUBLIC,  # {"ready": bool} only
    ("GET", "/u/{token}"): PUBLIC,  # the unsubscribe link: the token is the credential
    ("POST", "/u/{token}"): PUBLIC,
    **{("POST", f"/v1/{call}"): WRITE_KEY for call in INGEST},
    ("GET", "/v1/profile/{user_id:path}"): PROFILE,
    ("GET", "/metrics"): ADMIN,
    ("GET", "/openapi.json"): ADMIN,
    ("GET", "/admin/readyz"): ADMIN,
    ("POST", "/v1/feedback/dsn"): FEEDBACK,
    ("POST", "/v1/feedback/resend"): SIGNED,
    ("GET", "/console/sign-in"): PUBLIC,  # the form, and the token posted to it: checked there
    ("POST", "/console/sign-in"): SIGN_IN,
    ("GET", "/console"): CONSOLE,
    ("GET", "/console/panel/{name}"): CONSOLE,
    ("GET", "/console/users"): CONSOLE,
    ("GET", "/console/static/{name}"): CONSOLE,
    ("POST", "/console/sign-out"): CONSOLE,
}
ALSO_ACCEPTED = {FEEDBACK: {ADMIN}, CONSOLE: {ADMIN}}  # credentials that open a route besides its own
ADMIN_PREFIX = "/admin/"  # every route there takes the admin token, whoever adds it (checked below, not assumed)


def credential(method: str, path: str) -> str | None:
    method = "GET" if method == "HEAD" else method  # Starlette answers HEAD wherever it answers GET
    found = ROUTES.get((method, path))
    if found is None and path.startswith(ADMIN_PREFIX):
        return ADMIN
    return found


def walk(app) -> list[tuple[str, str]]:
    """(method, path template) of every route of the app, a mounted app as GET of its prefix."""
    out = []
    for route in app.routes:
        methods = getattr(route, "methods", None) or {"GET"}
        out.extend((m, route.path) for m in sorted(methods))
    return out


def concrete(path: str) -> str:
    """A request path for a template: each parameter a plain value (a number, for `seq`)."""
    return re.sub(r"\{([a-z_]+)(:[a-z]+)?\}", lambda m: "1" if m.group(1) == "seq" else "nobody", path)


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


FORM = {"content-type": "application/x-www-form-urlencoded"}
CREDENTIALS = {  # each credential as a request carries it
    WRITE_KEY: {"headers": basic(KEY)}, PROFILE: {"headers": bearer(PROFILE_KEY)}, ADMIN: {"headers": bearer(ADMIN_TOKEN)},
    FEEDBACK: {"headers": bearer(FEEDBACK_TOKEN)}, SIGN_IN: {"headers": FORM, "content": f"token={ADMIN_TOKEN}"}}


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    """The daemon's app as `journeys serve` builds it, on a started worker (no deliveries)."""
    from engine.core.program import Program
    from engine.daemon.reload import Reloader
    from engine.daemon.worker import Worker, build_app, store_file
    from journeys.checker import load_checked

    root = tiny_project(tmp_path_factory.mktemp("surface") / "tiny", 2525)
    toml = root / "journeys.toml"
    toml.write_text(toml.read_text().replace('write_keys_env = ["JOURNEYS_WRITE_KEY"]',
                                             'write_keys_env = ["JOURNEYS_WRITE_KEY"]\n'
                                             'profile_keys_env = ["JOURNEYS_PROFILE_KEY"]')
                    + '\n[connectors.resend]\nchannel = "email"\ntype = "resend"\n')  # its webhook route is on
    loaded, compiled = load_checked(root)
    environ = {"JOURNEYS_WRITE_KEY": KEY, "JOURNEYS_PROFILE_KEY": PROFILE_KEY, "JOURNEYS_ADMIN_TOKEN": ADMIN_TOKEN,
               "JOURNEYS_FEEDBACK_TOKEN": FEEDBACK_TOKEN, "RESEND_WEBHOOK_SECRET": "whsec_" + "A" * 32,
               "JOURNEYS_UNSUBSCRIBE_SECRET": "unsubscribe-secret-for-tests-0123456789"}
    worker = Worker(root, loaded.config, Program.build(compiled), store_file(loaded.config.store.url, root),
                    environ=environ, deliver=False)
    worker.reloader = Reloader(root)
    worker.start()
    try:
        yield build_app(worker, [KEY])
    finally:
        worker.stop()


def call(app, method: str, path: str, headers: dict[str, str] | None = None, **body) -> httpx.Response:
    """One request to the app; a POST's body `{}` unless `content` is given."""
    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://daemon") as client:
            if method in ("POST", "PUT", "PATCH") and not body:
                body["json"] = {}
            return await client.request(method, concrete(path), headers=headers or {}, timeout=30, **body)

    return asyncio.run(go())


def test_every_route_is_in_the_table(app):
    routes = walk(app.app)
    assert len(routes) >= len(ROUTES)
    missing = [f"{m} {p}" for m, p in routes if credential(m, p) is None]
    assert not missing, (f"routes in no table of {__file__}: {missing}; say which credential each asks for "
                         "(PUBLIC, WRITE_KEY, PROFILE, ADMIN)")
    stale = [k for k in ROUTES if k not in set(routes)]
    assert not stale, f"the table names routes the app does not have: {stale}"


def test_each_route_asks_for_its_credential_and_no_other(app):
    for method, path in walk(app.app):
        if method == "HEAD":
            continue  # GET's answer, without a body
        needed = credential(method, path)
        bare = call(app, method, path)
        if needed == PUBLIC:
            assert bare.status_code not in (401, 403), (method, path, bare.status_code, bare.text)
            continue
        assert refused(needed, bare), (method, path, "without a credential", bare.status_code, bare.text)
        if needed in (ADMIN, CONSOLE):
            assert refused(needed, call(app, method, path, bearer("not-the-token"))), (method, path)
        for other, carried in CREDENTIALS.items():
            answer = call(app, method, path, **carried)
            if other == needed or other in ALSO_ACCEPTED.get(needed, ()):
                assert not refused(needed, answer), (method, path, other, answer.status_code, answer.text)
            else:
                assert refused(needed, answer), (method, path, f"opened by the {other}", answer.status_code)


def refused(needed: str, answer: httpx.Response) -> bool:
    """Whether `answer` is the refusal of a request without the credential `needed`."""
    if needed == CONSOLE and answer.status_code == 303:  # a sign-out also goes there, clearing the cookie
        return answer.headers["location"].endswith("/console/sign-in") and "set-cookie" not in answer.headers
    return answer.status_code == 401


def test_the_admin_port_serves_exactly_the_admin_tokens_routes_and_the_console(app):
    for method, path in walk(app.app):
        expected = credential(method, path) in (ADMIN, CONSOLE) or path.startswith("/console/")
        assert operator_path(path) == expected, (method, path)


def test_bare_readyz_says_only_ready_and_admin_readyz_says_why(app):
    bare = call(app, "GET", "/readyz")
    assert set(bare.json()) == {"ready"}  # no journeys, counts or errors for a stranger
    detailed = call(app, "GET", "/admin/readyz", bearer(ADMIN_TOKEN)).json()
    assert detailed["ready"] == bare.json()["ready"]
    assert detailed["store"] == "open" and "Hello" in detailed["versions"] and "inbox_lag" in detailed


def test_the_admin_listener_holds_the_operators_routes_and_the_public_port_the_rest(tmp_path, daemons):
    project = tiny_project(tmp_path / "tiny", free_port())
    admin_port = free_port()
    d = daemons(project, None, args=("--admin-port", str(admin_port)))
    admin = f"http://127.0.0.1:{admin_port}"
    token = bearer(ADMIN_TOKEN)
    eventually(lambda: httpx.get(admin + "/admin/readyz", headers=token, timeout=5).json()["ready"], timeout=10)

    # the operator's routes: on the admin listener, still behind the token; a 404 on the public port
    for path in ("/metrics", "/openapi.json", "/admin/readyz", "/admin/journeys"):
        assert httpx.get(d.url + path, headers=token, timeout=5).status_code == 404, path
        assert httpx.get(admin + path, timeout=5).status_code == 401, path
        assert httpx.get(admin + path, headers=token, timeout=5).status_code == 200, path
    assert "journeys_up 1.0" in httpx.get(admin + "/metrics", headers=token, timeout=5).text

    # the public routes: on the public port only
    assert httpx.get(d.url + "/readyz", timeout=5).json() == {"ready": True}
    assert d.post("track", {"userId": "u1", "event": "Signed Up"}).status_code == 200
    for path in ("/healthz", "/readyz"):
        assert httpx.get(admin + path, timeout=5).status_code == 404, path
    assert httpx.post(admin + "/v1/track", json={"userId": "u1", "event": "E"}, headers=basic(KEY),
                      timeout=5).status_code == 404
    # the event posted on the public port is the admin listener's to see: one worker, one app
    eventually(lambda: httpx.get(admin + "/admin/readyz", headers=token, timeout=5).json()["processed"] == 1)
    assert d.stop() == 0
    assert "operator routes on http://127.0.0.1:%d" % admin_port in d.log.read_text()


def test_admin_port_mistakes_are_one_line_errors(tmp_path):
    project = tiny_project(tmp_path / "tiny", free_port())
    env = {"JOURNEYS_WRITE_KEY": KEY, "JOURNEYS_UNSUBSCRIBE_SECRET": "unsubscribe-secret-for-tests-0123456789",
           "PATH": "/usr/bin:/bin"}
    port = free_port()
    same = subprocess.run([sys.executable, "-m", "engine.cli", "serve", str(project), "--port", str(port),
                           "--admin-port", str(port)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert same.returncode == 2 and "--admin-port" in same.stderr and "Traceback" not in same.stderr, same.stderr

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        busy = subprocess.run([sys.executable, "-m", "engine.cli", "serve", str(project), "--port", str(port),
                               "--admin-port", str(taken.getsockname()[1]), "--log-format", "text"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    finally:
        taken.close()
    assert busy.returncode == 1, busy.stderr
    assert "--admin-port: cannot listen on 127.0.0.1" in busy.stderr and "Traceback" not in busy.stderr, busy.stderr
