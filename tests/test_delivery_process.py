"""The deliveries' own process (engine.daemon.deliveries.process): it dies with the daemon, and when it
dies alone the daemon starts another that delivers what was left, once."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx

from .test_daemon import daemons, eventually, rows  # noqa: F401 - the fixture
from .test_daemon_delivery import SECRET, project
from .test_smtp import Server
from .test_webhook import Receiver


def children(pid: int) -> list[int]:
    """The delivery processes whose parent is `pid` (Linux /proc; not multiprocessing's resource
    tracker)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"spawn_main" in cmdline:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_a_delivery_process_that_dies_is_replaced_and_one_killed_with_the_daemon(tmp_path, daemons):
    smtp, hook = Server().start(), Receiver()
    try:
        root = project(tmp_path / "p", smtp.port, hook.url)
        d = daemons(root, None, **SECRET)
        db = root / "data" / "d.db"
        [child] = eventually(lambda: children(d.proc.pid), timeout=10)
        d.post("track", {"userId": "u1", "event": "Slow"})
        eventually(lambda: len(hook.requests) == 1, timeout=10)
        # killed between the provider's answer and its record, a call is made again after the
        # restart (with the same Idempotency-Key: at-least-once through a crash); this test kills
        # an idle delivery process, so it waits for the record
        eventually(lambda: rows(db, "SELECT state FROM outbox") == [("delivered",)], timeout=10)

        os.kill(child, signal.SIGKILL)  # the deliveries alone die
        eventually(lambda: not alive(child), timeout=5)
        for i in range(2, 6):  # decided while no delivery process runs: they wait in the outbox
            d.post("track", {"userId": f"u{i}", "event": "Slow"})
        [second] = eventually(lambda: [c for c in children(d.proc.pid) if c != child and alive(c)], timeout=15)
        try:
            eventually(lambda: len(hook.requests) == 5, timeout=15)
        except AssertionError:  # say what the daemon said (a flake here once left nothing to read)
            raise AssertionError(f"{len(hook.requests)} of 5 calls; outbox "
                                 f"{rows(db, 'SELECT id, state, next_at FROM outbox')}; daemon log:\n"
                                 f"{d.log.read_text()[-6000:]}") from None
        eventually(lambda: httpx.get(d.url + "/readyz").status_code == 200, timeout=10)
        time.sleep(0.5)
        keys = [r["headers"]["idempotency-key"] for r in hook.requests]
        assert len(keys) == len(set(keys)) == 5  # every action once
        assert rows(db, "SELECT state, count(*) FROM outbox GROUP BY state") == [("delivered", 5)]

        d.stop(signal.SIGKILL)  # the whole daemon: its delivery process must not outlive it
        eventually(lambda: not alive(second), timeout=5)
    finally:
        smtp.stop()
        hook.close()


def test_a_connector_that_cannot_be_built_stops_the_daemon_with_its_reason(tmp_path, daemons):
    smtp, hook = Server().start(), Receiver()
    try:
        root = project(tmp_path / "p", smtp.port, hook.url)
        toml = root / "journeys.toml"
        toml.write_text(toml.read_text().replace("default = true", 'default = true\nrate = "fast"'))
        try:
            daemons(root, None, **SECRET)
        except AssertionError as e:  # the fixture: the daemon exited before it was ready
            assert "exited with 2" in str(e) and "rate" in str(e), str(e)
        else:
            raise AssertionError("the daemon started with a connector setting it does not know")
    finally:
        smtp.stop()
        hook.close()
