"""`journeys serve` refuses what would go wrong later, with a sentence and no traceback: a second
daemon on a SQLite file another one serves, a store it cannot reach, emails it could not send
(tests/test_preflight.py has every other setting a channel needs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from .test_daemon import KEY, ROOT, SECRETS, UNSUBSCRIBE_SECRET, daemons, free_port, shop  # noqa: F401 - fixtures


def serve(project, store: str, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in SECRETS}
    environ.update({"JOURNEYS_WRITE_KEY": KEY, "JOURNEYS_UNSUBSCRIBE_SECRET": UNSUBSCRIBE_SECRET, **env})
    environ = {k: v for k, v in environ.items() if v}  # an empty value: not set
    return subprocess.run([sys.executable, "-m", "engine.cli", "serve", str(project), "--store", store,
                           "--port", str(free_port())], cwd=ROOT, env=environ, capture_output=True, text=True,
                          timeout=60)


def test_a_second_daemon_on_one_sqlite_file_is_refused_and_the_file_is_free_after_the_first(shop, tmp_path, daemons):
    db = tmp_path / "store.db"
    first = daemons(shop, f"sqlite:///{db}")
    second = serve(shop, f"sqlite:///{db}")
    assert second.returncode == 1, second.stderr
    assert f"pid {first.proc.pid}" in second.stderr and "already serves this SQLite store" in second.stderr
    assert "Traceback" not in second.stderr
    assert first.post("track", {"userId": "u1", "event": "Product Viewed"}).status_code == 200  # unharmed
    first.proc.kill()  # even after a kill -9 the lock is gone with its process
    first.proc.wait()
    again = daemons(shop, f"sqlite:///{db}")
    assert again.stop() == 0


def test_an_unreachable_store_is_one_line_and_exit_1(shop):
    r = serve(shop, "postgresql://nobody@127.0.0.1:1/x")
    assert r.returncode == 1 and "cannot connect to PostgreSQL" in r.stderr and "Traceback" not in r.stderr, r.stderr


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_the_shop_without_public_url_or_unsubscribe_secret_is_refused_at_the_lines_to_fix(shop, tmp_path, log_format):
    """What examples/shop used to be: every email would have failed at delivery, and serve said nothing.
    For people (text), as `journeys check` says it; for a log shipper (json, what `auto` picks when
    stderr is not a terminal), one JSON record per problem with its code and place, and no line
    that is not JSON."""
    toml = shop / "journeys.toml"
    text = toml.read_text()
    line = next(x for x in text.splitlines() if x.startswith("public_url = "))
    toml.write_text(text.replace(line + "\n", ""))
    lines = toml.read_text().splitlines()
    project_line = lines.index("[project]") + 1
    smtp_line = lines.index("[connectors.smtp]") + 1
    r = serve(shop, f"sqlite:///{tmp_path / 'store.db'}", JOURNEYS_UNSUBSCRIBE_SECRET="", JOURNEYS_LOG_FORMAT=log_format)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "store.db").exists()
    if log_format == "json":
        records = [json.loads(line) for line in r.stderr.splitlines() if line.strip()]  # each line a JSON object
        problems = [x for x in records if x.get("code") and x["level"] == "ERROR"]
        assert [(x["logger"], x["code"], (ROOT / x["file"]).resolve(), x["line"], x["column"]) for x in problems] == [
            ("journeys.preflight", "J047", toml.resolve(), project_line, 1),
            ("journeys.preflight", "J048", toml.resolve(), smtp_line, 1)], problems
        assert {x["code"] for x in records if x.get("code") and x["level"] == "WARNING"} == {"J046"}  # ads' secrets
        assert f"journeys.toml:{project_line}:1 J047 " in problems[0]["message"] and "public_url" in problems[0]["help"]
        assert "JOURNEYS_UNSUBSCRIBE_SECRET" in problems[1]["message"] + problems[1]["help"]
        assert records[-1]["level"] == "ERROR" and "journeys check --env" in records[-1]["message"], records
        return
    assert r.stderr.count("error[") == 2, r.stderr
    assert "error[J047]: emails need an unsubscribe link" in r.stderr, r.stderr
    assert f"journeys.toml:{project_line}:1" in r.stderr and "public_url" in r.stderr, r.stderr
    assert f"journeys.toml:{smtp_line}:1" in r.stderr and "JOURNEYS_UNSUBSCRIBE_SECRET" in r.stderr, r.stderr
    assert "= help: set public_url = " in r.stderr, r.stderr
    assert not (tmp_path / "store.db").exists()
