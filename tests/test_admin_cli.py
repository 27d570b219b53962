"""`journeys admin` as an operator runs it: `.venv/bin/journeys admin ...` as a process, against a
real `journeys serve` process with a real SMTP server, its tables and its --json, and every way a
call goes wrong (a stopped daemon, a wrong token, no token, an unknown user, journey or entry, a
daemon that does not answer in time) as one line on stderr and exit code 1, never a traceback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from .conftest import ROOT
from .test_daemon import daemons, eventually  # noqa: F401 - fixtures
from .test_daemon_api import ADMIN, BEARER
from .test_daemon_pauses import SECRET, greeted, pause_project, served, sign_up, smtp  # noqa: F401 - fixtures

JOURNEYS = str(Path(sys.executable).parent / "journeys")


def admin(*args: str, url: str | None = None, token: str | None = ADMIN, stdin: str | None = None,
          timeout: float = 60) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("JOURNEYS_ADMIN_TOKEN", "JOURNEYS_URL")}
    env["COLUMNS"] = "200"  # tables as wide as they need
    if token is not None:
        env["JOURNEYS_ADMIN_TOKEN"] = token
    if url is not None:
        env["JOURNEYS_URL"] = url
    return subprocess.run([JOURNEYS, "admin", *args], cwd=ROOT, env=env, input=stdin if stdin is not None else "",
                          capture_output=True, text=True, timeout=timeout)


def ok(out: subprocess.CompletedProcess) -> str:
    assert out.returncode == 0 and out.stderr == "", (out.returncode, out.stdout, out.stderr)
    return out.stdout


def cells(line: str) -> list[str]:
    """A table row's cells."""
    return [c.strip() for c in line.split("│")]


def failed(out: subprocess.CompletedProcess, *words: str) -> str:
    """One line on stderr, saying each of `words`, exit code 1, no traceback."""
    assert out.returncode == 1, (out.returncode, out.stdout, out.stderr)
    line = out.stderr.strip()
    assert len(out.stderr.strip().splitlines()) == 1 and line.startswith("error: "), out.stderr
    assert "Traceback" not in out.stderr + out.stdout
    for word in words:
        assert word in line, (word, line)
    return line


def test_admin_commands_against_a_running_daemon_as_tables_and_json(served, smtp):
    d, _ = served
    url = d.url

    status = ok(admin("status", "--url", url))
    assert "Daemon: ready" in status and "heartbeat_age_s" in status and "No journey is paused." in status
    body = json.loads(ok(admin("status", "--json", url=url)))  # the URL from JOURNEYS_URL
    assert body["readiness"]["ready"] is True and body["readiness"]["store"] == "open" and body["pauses"] == []

    # pause: who (--by, else $USER@host) and why, in the table and the API
    said = ok(admin("pause", "Hello", "--reason", "wrong coupon", "--by", "ann@laptop", url=url))
    assert said.startswith("paused: journey 'Hello' since ") and "by ann@laptop (wrong coupon); 0 sends held" in said
    table = ok(admin("pauses", url=url))
    assert "Hello" in table and "ann@laptop" in table and "wrong coupon" in table and "held sends" in table
    assert json.loads(ok(admin("pauses", "--json", url=url))) == httpx.get(url + "/admin/pauses", headers=BEARER).json()
    mine = json.loads(ok(admin("pause", "--all", "--json", url=url, token=ADMIN)))["paused"]
    assert mine["journey"] == "*" and mine["by"] == f"{os.environ.get('USER') or 'unknown'}@{socket.gethostname()}"
    ok(admin("resume", "--all", url=url))

    sign_up(d, "u1")
    eventually(lambda: json.loads(ok(admin("pauses", "--json", url=url)))["pauses"][0]["held"] == 1, timeout=10)

    journeys = ok(admin("journeys", url=url))
    (row,) = [line for line in journeys.splitlines() if line.strip().startswith("Hello")]
    assert cells(row)[:3] == ["Hello", "1", "yes"], journeys
    assert json.loads(ok(admin("journeys", "--json", url=url))) == httpx.get(url + "/admin/journeys",
                                                                               headers=BEARER).json()

    user = ok(admin("user", "u1", url=url))
    assert "User u1" in user and "u1@example.com" in user
    (action,) = [line for line in user.splitlines() if cells(line)[1:3] == ["Hello", "email"]]
    assert cells(action)[1:6] == ["Hello", "email", "hello", "sent", "held"], user  # decided; held
    assert json.loads(ok(admin("user", "u1", "--json", url=url)))["recent_actions"][0]["status"] == "held"
    trace = ok(admin("trace", "u1", "--limit", "3", url=url))
    assert trace.startswith("Trace of u1 (u1): 3 lines") and 'email "hello" sent' in trace
    assert len(json.loads(ok(admin("trace", "u1", "--json", url=url)))["trail"]) > 3

    # the choice the held sends need, then the release: the message arrives
    failed(admin("resume", "Hello", url=url), "1 sends of journey 'Hello' are held", "held=release")
    assert greeted(smtp) == []
    said = ok(admin("resume", "Hello", "--held", "release", url=url))
    assert said == "resumed: journey 'Hello'; 1 held sends released, 0 dropped\n"
    eventually(lambda: greeted(smtp) == ["HELLO U1"], timeout=10)

    # the pause log: every pause and resume above, newest first
    me = f"{os.environ.get('USER') or 'unknown'}@{socket.gethostname()}"
    log = ok(admin("pauses", "--log", url=url))
    assert "Pause log (newest first)" in log
    logged = [cells(line)[1:8] for line in log.splitlines() if cells(line)[1:2] in (["Hello"], ["*"])]
    assert logged == [["Hello", "resumed", me, "", "release", "1", "0"],
                      ["*", "resumed", me, "", "", "0", "0"],
                      ["*", "paused", me, "", "", "", ""],
                      ["Hello", "paused", "ann@laptop", "wrong coupon", "", "", ""]], log
    assert json.loads(ok(admin("pauses", "--log", "--json", url=url))) == httpx.get(url + "/admin/pauses/log",
                                                                                     headers=BEARER).json()
    (last,) = json.loads(ok(admin("pauses", "--log", "--journey", "Hello", "--limit", "1", "--json", url=url)))["log"]
    assert (last["journey"], last["event"], last["held"], last["released"]) == ("Hello", "resumed", "release", 1)
    assert ok(admin("pauses", "--log", "--journey", "Nope", url=url)) == "No pause or resume yet.\n"

    assert ok(admin("dead-letters", url=url)) == "No dead letters.\n"
    assert json.loads(ok(admin("dead-letters", "--state", "dead", "--json", url=url))) == {"entries": []}
    failed(admin("retry", "nope:smtp", url=url), "no dead or failed outbox entry 'nope:smtp'")

    # forget asks first; no means nothing is erased
    failed(admin("forget", "u1", url=url, stdin="n\n"), "not confirmed", "u1 was not forgotten")
    assert "u1@example.com" in ok(admin("user", "u1", url=url))
    gone = ok(admin("forget", "u1", url=url, stdin="y\n"))
    assert "Forgotten: u1" in gone
    failed(admin("user", "u1", url=url), "no profile 'u1'")
    sign_up(d, "u2")
    assert json.loads(ok(admin("forget", "u2", "--yes", "--json", url=url)))["userId"] == "u2"



def test_admin_commands_fail_in_one_line(tmp_path, daemons):
    project = pause_project(tmp_path / "p", 9)
    d = daemons(project, None, JOURNEYS_ADMIN_TOKEN=ADMIN, JOURNEYS_UNSUBSCRIBE_SECRET=SECRET)
    url = d.url

    failed(admin("pauses", url=url, token="wrong"), f"the daemon at {url} refused the admin token (401)",
           "JOURNEYS_ADMIN_TOKEN")
    failed(admin("status", url=url, token=None), "no admin token", "JOURNEYS_ADMIN_TOKEN")
    failed(admin("user", "nobody", url=url), "no profile 'nobody'")
    failed(admin("trace", "nobody", url=url), "no profile or trail 'nobody'")
    failed(admin("pause", "Nope", url=url), "no journey 'Nope' is loaded")
    failed(admin("resume", "Hello", "--held", "drop", url=url), "journey 'Hello' is not paused")
    failed(admin("journeys", "--url", url + "/nothing-here"), "/nothing-here: GET /admin/journeys: no such route (404)")
    failed(admin("journeys", "--url", "https://127.0.0.1:1"), "cannot reach the daemon at https://127.0.0.1:1")

    # usage errors: exit 2
    for args in (("pause",), ("pause", "Hello", "--all"), ("resume", "Hello", "--held", "later"),
                 ("dead-letters", "--state", "lost"), ("pauses", "--journey", "Hello"),
                 ("pauses", "--log", "--limit", "0")):
        out = admin(*args, url=url)
        assert out.returncode == 2 and "Traceback" not in out.stderr, (args, out.stderr)

    # a daemon that accepts the connection and never answers
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    try:
        port = silent.getsockname()[1]
        failed(admin("status", "--timeout", "0.5", url=f"http://127.0.0.1:{port}"),
               f"the daemon at http://127.0.0.1:{port} did not answer within 0.5 s")
    finally:
        silent.close()

    assert d.stop() == 0  # a stopped daemon
    failed(admin("status", url=url), f"cannot reach the daemon at {url}: connection refused")
    failed(admin("pause", "Hello", url=url), f"cannot reach the daemon at {url}")
    failed(admin("journeys", url="http://no-such-host.invalid:8080"), "cannot reach the daemon at http://no-such-host")
