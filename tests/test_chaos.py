"""benchmarks/chaos.py keeps working: its smallest `kill` run (SQLite, one kill -9 under load, a
restart, the drain) as the benchmark runs it, in a subprocess. Every accepted event is processed
and its webhooks arrive, nothing is processed twice or left stuck, and the daemon's log has no
traceback. (Repeated Idempotency-Keys across the kill are allowed: at-least-once through the
provider's door, docs/reliability.md.) About 20 s."""

from __future__ import annotations

import json
import subprocess
import sys

from .conftest import ROOT


def test_the_chaos_benchmark_kill_mode_loses_nothing(tmp_path):
    run = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "chaos.py"), "kill", "--kills", "1", "--up", "0.5,1.0",
         "--down", "0.2", "--rate", "60", "--drain-timeout", "40", "--max-minutes", "1", "--keep", str(tmp_path)],
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=120)
    results = [json.loads(line[len("RESULT "):]) for line in run.stdout.splitlines() if line.startswith("RESULT ")]
    assert run.returncode == 0 and results, run.stdout[-3000:] + run.stderr[-3000:]
    r = results[-1]
    assert r["kills"] == 1 and r["accepted"] > 0, r
    assert r["processed"] == r["accepted"] and r["delivered"] >= r["accepted"], r
    assert (r["lost"], r["processed_twice"], r["stuck"], r["tracebacks"], r["orphans"]) == (0, 0, 0, 0, 0), \
        (r, run.stdout[-2000:])
    assert r["outbox_open"] == 0 and r["dead_letters"] == 0 and r["bad_signatures"] == 0, r
