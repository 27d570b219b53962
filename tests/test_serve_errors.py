"""`journeys serve` refuses what would go wrong later, with a sentence and no traceback: a second
daemon on a SQLite file another one serves, a store it cannot reach."""

from __future__ import annotations

import os
import subprocess
import sys

from .test_daemon import KEY, ROOT, SECRETS, daemons, free_port, shop  # noqa: F401 - fixtures


def serve(project, store: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k not in SECRETS}
    environ["JOURNEYS_WRITE_KEY"] = KEY
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
