"""The daemon's hot reload (SIGHUP, or a changed journey file).

Reload: the worker thread asks `Reloader.due()` once per round (at most every MAX_IDLE, ~1 s):
true after a SIGHUP, or when the mtimes of journeys/**/*.journey, templates/** or journeys.toml
changed (looked at every JOURNEYS_RELOAD_POLL seconds, default 1; 0 turns the watching off).
It then recompiles with `load_checked`. On errors the running program stays, and the diagnostics
(one line each: file:line:col code message) go to the log, at ERROR, and to /readyz (`reload_errors`);
a reload that works is logged at INFO, with the journeys and the versions that changed. On
success the new program keeps every version the old one could reach, so a user in flight
finishes the version they entered (the engine looks journeys up by (name, version)), while new
entries take the new version; the swap happens on the worker thread between transactions. Scheduled entries are planned again from the new program.

A changed journeys.toml also changes routes, connectors and delivery limits: the worker gives the
new routes to its outbox sink, and the delivery thread flushes and closes the old connectors
between two rounds and builds the new ones (entries already in the outbox keep their connector
names; a connector that is gone fails them with the reason). Limits that do not parse fail the
reload like a journey error. The store's URL and the ingest's keys are read once, at start.
The metrics of reloads are in `engine.daemon.metrics`.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("journeys.daemon")

POLL_EVERY = 1.0  # seconds between looks at the project's files (JOURNEYS_RELOAD_POLL; 0: SIGHUP only)


def watched_files(root: Path) -> dict[str, tuple[int, int]]:
    """(mtime_ns, size) of every file a reload would read: journeys.toml, journeys/**/*.journey,
    templates/**. A file added or removed changes the snapshot too."""
    out: dict[str, tuple[int, int]] = {}
    paths: list[Path] = [root / "journeys.toml"]
    if (root / "journeys").is_dir():
        paths += (root / "journeys").rglob("*.journey")
    if (root / "templates").is_dir():
        paths += (p for p in (root / "templates").rglob("*") if p.is_file())
    for p in paths:
        try:
            st = p.stat()
        except OSError:
            continue
        out[str(p)] = (st.st_mtime_ns, st.st_size)
    return out


def diagnostic_line(d: Any) -> str:
    """One diagnostic on one line: file:line:col code message."""
    where = f"{d.span.file}:{d.span.line}:{d.span.col}" if d.span is not None else "<project>"
    return f"{where} {d.code} {d.message}"


class Reloader:
    """Decides when to reload and compiles the project; the worker swaps the program it returns.
    `request()` is safe from a signal handler; everything else runs on the worker thread, and the
    HTTP threads read `errors`, `ok` and `failed` (replaced whole, never mutated)."""

    def __init__(self, root: Path, poll: float | None = None):
        self.root = Path(root)
        if poll is None:
            poll = float(os.environ.get("JOURNEYS_RELOAD_POLL", POLL_EVERY))
        self.poll = poll
        self.requested = threading.Event()
        self.errors: list[str] = []
        self.config: Any = None  # the ProjectConfig of the last good reload
        self.ok = 0
        self.failed = 0
        self._seen = watched_files(self.root)
        self._next_poll = time.monotonic() + poll

    def request(self) -> None:
        self.requested.set()

    def due(self) -> bool:
        if self.requested.is_set():
            self.requested.clear()
            self._seen = watched_files(self.root)
            return True
        now = time.monotonic()
        if self.poll <= 0 or now < self._next_poll:
            return False
        self._next_poll = now + self.poll
        seen = watched_files(self.root)
        if seen == self._seen:
            return False
        self._seen = seen
        return True

    def reload(self, old: Any) -> Any | None:
        """The new Program (with every version of `old` still reachable), or None on errors."""
        from connectors.errors import ConfigurationError
        from connectors.registry import delivery_limits, retry_policies
        from journeys.checker import ProjectError, load_checked

        from ..core.program import Program

        try:
            loaded, compiled = load_checked(self.root)
            delivery_limits(loaded.config)  # limits that do not parse fail here, not in the delivery thread
            retry_policies(loaded.config)  # so do retry settings
        except ConfigurationError as e:
            self._failed([f"{self.root / 'journeys.toml'}: {e}"])
            return None
        except ProjectError as e:
            lines = [diagnostic_line(d) for d in e.diagnostics if d.is_error]
            self._failed(lines)
            return None
        except Exception as e:  # noqa: BLE001 - a reload must never stop the daemon
            self._failed([f"{self.root}: {type(e).__name__}: {e}"])
            return None
        new = Program.build(compiled, older=old.versions.values())
        changed = []
        for name, j in new.journeys.items():
            was = old.journeys.get(name)
            if was is None:
                changed.append(f"{name} (new) {j.version}")
            elif was.version != j.version:
                changed.append(f"{name} {was.version} -> {j.version}")
        changed += [f"{name} (removed)" for name in old.journeys if name not in new.journeys]
        log.info("reloaded: %d journeys, versions changed: %s", len(new.journeys), ", ".join(changed) or "none",
                 extra={"journeys": sorted(new.journeys), "changed": changed})
        self.errors = []
        self.config = loaded.config
        self.ok += 1
        return new

    def _failed(self, lines: list[str]) -> None:
        self.errors = lines
        self.failed += 1
        log.error("reload failed, the running journeys stay: %d problem(s)", len(lines))
        for line in lines:
            log.error("reload: %s", line)


def swap(engine: Any, program: Any) -> None:
    """Give the engine a new program between transactions (on the worker thread). Scheduled
    entries are planned again from the next round: their journeys may have changed or gone. The
    models in effect stay: a new version of the journeys is not new data."""
    from dataclasses import replace

    engine.program = replace(program, models=engine.program.models)
    engine._schedules = []
    engine._zones_scheduled = set()
    engine._started = False


def readyz_fields(worker: Any, reloader: Reloader | None) -> dict[str, Any]:
    """What /readyz adds: the versions new entries take, and the last reload's errors."""
    body: dict[str, Any] = {"versions": {n: j.version for n, j in worker.program.journeys.items()}}
    if reloader is not None:
        body["reload_errors"] = list(reloader.errors)
        body["reloads"] = {"ok": reloader.ok, "failed": reloader.failed}
    return body
