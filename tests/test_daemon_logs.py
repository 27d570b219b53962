"""`journeys --version`, and the log of a real short `journeys serve` in both formats: no library
noise (APScheduler's INFO lines), the startup banner and a reload at INFO, and JSON lines that
parse and carry the same fields as the text ones (plus the banner's own: address, store, journeys)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from importlib.metadata import version

from .conftest import ROOT
from .test_daemon import daemons, eventually, tiny_project  # noqa: F401 - fixtures
from .test_smtp import free_port

TEXT_LINE = re.compile(r"^(?P<time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) (?P<level>[A-Z]+) (?P<logger>[\w.]+): "
                       r"(?P<message>.*)$")
BANNER = re.compile(r"^journeys serve: (?P<address>http://127\.0\.0\.1:\d+), store (?P<store>\S+), "
                    r"(?P<count>\d+) journeys: (?P<names>.*)$")


def test_version_prints_the_package_version():
    out = subprocess.run([sys.executable, "-m", "engine.cli", "--version"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout == f"journeys {version('journeys')}\n"


def records(text: str, log_format: str) -> list[dict]:
    """Every log record of the daemon's output: JSON lines parsed, text lines split into the
    fields of their format. A line that is neither fails the test."""
    found = []
    for line in text.splitlines():
        if not line.strip():
            continue
        if log_format == "json":
            found.append(json.loads(line))  # every line is a JSON object
        else:
            m = TEXT_LINE.match(line)
            if m is None and found:
                found[-1]["message"] += "\n" + line  # a traceback's lines
                continue
            assert m is not None, line
            found.append(m.groupdict())
    return found


def run_and_log(project, daemons, log_format: str) -> list[dict]:  # noqa: F811 - the fixture
    log = project.parent / "daemon.log"
    log.write_bytes(b"")
    d = daemons(project, None, JOURNEYS_LOG_FORMAT=log_format)
    assert d.post("identify", {"userId": "u1", "traits": {"email": "u1@example.com"}}).status_code == 200
    eventually(lambda: d.readiness()["processed"] >= 1)
    d.proc.send_signal(signal.SIGHUP)
    eventually(lambda: d.readiness()["reloads"]["ok"] >= 1)
    assert d.stop() == 0
    return records(log.read_text(), log_format)


def test_the_log_has_the_banner_and_reloads_at_info_and_no_library_noise_in_text_and_json(tmp_path, daemons):  # noqa: F811
    project = tiny_project(tmp_path / "tiny", free_port())
    seen = {}
    for log_format in ("text", "json"):
        recs = run_and_log(project, daemons, log_format)
        assert recs and all(set(r) >= {"time", "level", "logger", "message"} for r in recs), recs
        # APScheduler adds and runs jobs all the time: none of its INFO lines, nor any other library's
        assert not [r for r in recs if r["level"] in ("INFO", "DEBUG") and not r["logger"].startswith("journeys")], recs
        assert not [r for r in recs if r["logger"].startswith("apscheduler")]

        (banner,) = [r for r in recs if r["message"].startswith("journeys serve:")]
        assert banner["level"] == "INFO" and banner["logger"] == "journeys.daemon"
        m = BANNER.match(banner["message"])
        assert m and m["store"].endswith("tiny.db") and m["count"] == "1" and m["names"] == "Hello", banner
        (reload,) = [r for r in recs if r["message"].startswith("reloaded:")]
        assert reload["level"] == "INFO" and reload["message"] == "reloaded: 1 journeys, versions changed: none"
        if log_format == "json":
            # the same fields as the text line, and what the text says as fields of their own
            assert (banner["address"], banner["store"], banner["journeys"]) == (m["address"], m["store"], ["Hello"])
            assert reload["journeys"] == ["Hello"] and reload["changed"] == []
        seen[log_format] = {(r["level"], r["logger"], re.sub(r":\d+,", ":PORT,", r["message"])) for r in (banner, reload)}
    assert seen["text"] == seen["json"]
