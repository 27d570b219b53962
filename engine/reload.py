"""The daemon's hot reload (SIGHUP, or a changed journey file) and its Prometheus metrics.

Reload: the worker thread asks `Reloader.due()` once per round (at most every MAX_IDLE, ~1 s):
true after a SIGHUP, or when the mtimes of journeys/**/*.journey, templates/** or journeys.toml
changed (looked at every JOURNEYS_RELOAD_POLL seconds, default 1; 0 turns the watching off).
It then recompiles with `load_checked`. On errors the running program stays, and the diagnostics (one line each: file:line:col code message) go to the log and to /readyz
(`reload_errors`). On success the new program keeps every version the old one could reach, so a
user in flight finishes the version they entered (the engine looks journeys up by (name,
version)), while new entries take the new version; the swap happens on the worker thread between
transactions. Scheduled entries are planned again from the new program.

A changed journeys.toml also changes routes, connectors and delivery limits: the worker gives the
new routes to its outbox sink, and the delivery thread flushes and closes the old connectors
between two rounds and builds the new ones (entries already in the outbox keep their connector
names; a connector that is gone fails them with the reason). Limits that do not parse fail the
reload like a journey error. The store's URL and the ingest's keys are read once, at start.

Metrics: `GET /metrics` in Prometheus' text exposition format (0.0.4), written here rather than
with a client library: every value is a counter or gauge the daemon already keeps (the `Counts`
sink, the inbox, the outbox table), read when scraped, plus one histogram of timer lateness.
The same families on both stores; the store's figures are read on the HTTP thread's own
connection (SQLite: read-only, per scrape; PostgreSQL: a small pool, engine.read_pool).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from bisect import bisect_left
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from . import sql
from .stores import is_postgres

log = logging.getLogger("journeys.daemon")

POLL_EVERY = 1.0  # seconds between looks at the project's files (JOURNEYS_RELOAD_POLL; 0: SIGHUP only)
LATENESS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


# ---------------------------------------------------------------------------------- hot reload


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
        from connectors.registry import delivery_limits

        from .program import Program
        from .simulate import ProjectError, load_checked

        try:
            loaded, compiled = load_checked(self.root)
            delivery_limits(loaded.config)  # limits that do not parse fail here, not in the delivery thread
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
        log.warning("reloaded: %d journeys, versions changed: %s", len(new.journeys), ", ".join(changed) or "none")
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
    entries are planned again from the next round: their journeys may have changed or gone."""
    engine.program = program
    engine._schedules = []
    engine._zones_scheduled = set()
    engine._started = False


# ---------------------------------------------------------------------------------- metrics


class Lateness:
    """A histogram of how late timers (and scheduled entries) fired, in seconds."""

    def __init__(self, buckets: Iterable[float] = LATENESS_BUCKETS):
        self.bounds = tuple(buckets)
        self._lock = threading.Lock()
        self._counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        with self._lock:
            i = bisect_left(self.bounds, seconds)  # the first bucket with seconds <= its bound
            self._counts[i] += 1
            self.sum += seconds
            self.count += 1

    def snapshot(self) -> tuple[list[tuple[str, int]], float, int]:
        with self._lock:
            counts, total, n = list(self._counts), self.sum, self.count
        out, running = [], 0
        for b, c in zip(self.bounds, counts):
            running += c
            out.append((_num(b), running))
        out.append(("+Inf", n))
        return out, total, n


class TimedClock:
    """The worker's clock: the engine advances it to each timer's moment right before firing it,
    which is where the lateness (wall clock now − due time) is measured."""

    def __init__(self, clock: Any, lateness: Lateness):
        self.clock, self.lateness = clock, lateness

    def now(self) -> datetime:
        return self.clock.now()

    def advance(self, moment: datetime) -> None:
        self.lateness.observe((self.clock.now() - moment).total_seconds())
        self.clock.advance(moment)


def _num(v: float) -> str:
    return repr(float(v)) if v != int(v) else f"{int(v)}.0"


def _label(v: Any) -> str:
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


class _Out:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help: str, samples: Iterable[tuple[dict[str, Any], float]]) -> None:
        self.lines.append(f"# HELP {name} {help}")
        self.lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            self.sample(name, labels, value)

    def sample(self, name: str, labels: dict[str, Any], value: float) -> None:
        text = ",".join(f'{k}="{_label(v)}"' for k, v in labels.items())
        self.lines.append(f"{name}{{{text}}} {value}" if text else f"{name} {value}")


def _figures(conn: Any, last: int, processed: int) -> dict[str, Any]:
    """The store's figures on a reader's connection (SQLite or PostgreSQL: engine.sql)."""
    now = sql.moment(conn, datetime.now(timezone.utc))
    due = sql.execute(conn, "SELECT count(*) FROM profiles WHERE wake IS NOT NULL AND wake <= ?", (now,)).fetchone()[0]
    waiting = sql.execute(conn, "SELECT count(*) FROM profiles WHERE wake IS NOT NULL").fetchone()[0]
    states = {s: n for s, n in sql.execute(conn, "SELECT state, count(*) FROM outbox GROUP BY state")}
    attempts, retries = sql.execute(
        conn, "SELECT coalesce(sum(attempts), 0), "
              "coalesce(sum(CASE WHEN attempts > 1 THEN attempts - 1 ELSE 0 END), 0) FROM outbox").fetchone()
    failed = sql.execute(conn, "SELECT count(*) FROM inbox_failed").fetchone()[0]
    return dict(last=last, processed=processed, due=due, waiting=waiting, states=states,
                attempts=int(attempts), retries=int(retries), failed=failed)


def _store_figures(path: str) -> dict[str, Any]:
    """Figures read from the store on a connection of the HTTP thread's own: a read-only SQLite
    connection, or one of the PostgreSQL store's reader pool (engine.read_pool).

    Events accepted and processed: SQLite's inbox keeps a cursor (`inbox_cursor`) and its seqs
    (`sqlite_sequence`); PostgreSQL's deletes each message once processed, so accepted is its seq
    sequence's last value and processed that minus the rows still waiting (a seq a rolled back
    append took counts as accepted and processed)."""
    if is_postgres(path):
        from .read_pool import pool

        with pool(path).connection() as conn:
            row = conn.execute("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM inbox_seq_seq").fetchone()
            last = int(row[0])
            waiting = conn.execute("SELECT count(*) FROM inbox").fetchone()[0]
            return _figures(conn, last, last - waiting)
    conn = sqlite3.connect(Path(path).as_uri() + "?mode=ro", uri=True, timeout=2)
    try:
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'inbox'").fetchone()
        last = 0 if row is None else row[0]
        processed = conn.execute("SELECT processed FROM inbox_cursor").fetchone()[0]
        return _figures(conn, last, processed)
    finally:
        conn.close()


OUTBOX_STATES = ("pending", "delivered", "failed", "dead")


def render_metrics(worker: Any, reloader: Reloader | None) -> str:
    """The daemon's metrics in Prometheus' text format."""
    out = _Out()
    counts = worker.counts.snapshot()
    try:
        fig: dict[str, Any] | None = _store_figures(worker.path)
    except Exception as exc:  # noqa: BLE001 - sqlite3's, psycopg's or the pool's: /metrics still answers
        log.warning("metrics: the store could not be read: %s", exc)
        fig = None
    out.family("journeys_up", "gauge", "1 while the store is open and the worker's loops run.",
               [({}, 1 if worker.store_open and worker.running else 0)])
    if fig is not None:
        out.family("journeys_events_accepted_total", "counter", "Events accepted by the ingest (the inbox's last seq).",
                   [({}, fig["last"])])
        out.family("journeys_events_processed_total", "counter",
                   "Events the engine has processed (the inbox cursor, across restarts).",
                   [({}, fig["processed"])])
        out.family("journeys_processing_lag", "gauge", "Inbox messages accepted but not yet processed.",
                   [({}, fig["last"] - fig["processed"])])
        out.family("journeys_timers_due", "gauge", "Users whose timer is due now and has not fired yet.",
                   [({}, fig["due"])])
        out.family("journeys_timers_waiting", "gauge", "Users with a timer set.", [({}, fig["waiting"])])
        states = fig["states"]
        out.family("journeys_outbox_entries", "gauge", "Outbox entries by state.",
                   [({"state": s}, states.get(s, 0)) for s in sorted(set(OUTBOX_STATES) | set(states))])
        out.family("journeys_outbox_attempts_total", "counter", "Delivery attempts of the outbox's entries.",
                   [({}, fig["attempts"])])
        out.family("journeys_outbox_retries_total", "counter", "Delivery attempts after an entry's first.",
                   [({}, fig["retries"])])
        out.family("journeys_dead_letters", "gauge", "Outbox entries that ran out of attempts (state dead).",
                   [({}, states.get("dead", 0))])
        out.family("journeys_inbox_failed", "gauge",
                   "Messages set aside because the engine could not take them (GET /admin/inbox/failed).",
                   [({}, fig["failed"])])
    out.family("journeys_worker_processed_total", "counter", "Inbox messages this process handled.",
               [({}, counts.get("inbox.processed", 0))])
    out.family("journeys_events_failed_total", "counter", "Inbox messages this process set aside because the engine could not take them.",
               [({}, counts.get("inbox.failed", 0))])
    received = [({"type": k.split(".", 1)[1]}, v) for k, v in counts.items() if k.startswith("received.")]
    out.family("journeys_messages_received_total", "counter", "Messages the engine received, by type.", received)
    actions = []
    for k, v in counts.items():
        parts = k.split(".")
        if parts[0] == "action" and len(parts) == 3:
            actions.append(({"channel": parts[1], "outcome": parts[2]}, v))
    out.family("journeys_actions_total", "counter", "Actions by channel (kind) and outcome (sent, suppressed, deferred).",
               actions)
    out.family("journeys_actions_unroutable_total", "counter", "Actions no connector could take.",
               [({}, counts.get("action.unroutable", 0))])
    lateness = getattr(worker, "lateness", None)
    if lateness is not None:
        buckets, total, n = lateness.snapshot()
        name = "journeys_timer_lateness_seconds"
        out.family(name, "histogram", "How late timers and scheduled entries fired (wall clock - due time).", [])
        for le, c in buckets:
            out.sample(name + "_bucket", {"le": le}, c)
        out.sample(name + "_sum", {}, total)
        out.sample(name + "_count", {}, n)
    program = worker.program
    out.family("journeys_journey_version", "gauge",
               "Journey versions loaded (1: the version new entries take; 0: kept for users in flight).",
               [({"journey": name, "version": version},
                 1 if program.journeys.get(name) is not None and program.journeys[name].version == version else 0)
                for (name, version) in sorted(program.versions)])
    if reloader is not None:
        out.family("journeys_reloads_total", "counter", "Hot reloads by result.",
                   [({"result": "ok"}, reloader.ok), ({"result": "failed"}, reloader.failed)])
        out.family("journeys_reload_errors", "gauge", "Errors of the last reload (0 once one succeeds).",
                   [({}, len(reloader.errors))])
    return "\n".join(out.lines) + "\n"


def readyz_fields(worker: Any, reloader: Reloader | None) -> dict[str, Any]:
    """What /readyz adds: the versions new entries take, and the last reload's errors."""
    body: dict[str, Any] = {"versions": {n: j.version for n, j in worker.program.journeys.items()}}
    if reloader is not None:
        body["reload_errors"] = list(reloader.errors)
        body["reloads"] = {"ok": reloader.ok, "failed": reloader.failed}
    return body


def add_metrics(app: Any, worker: Any, reloader: Reloader | None) -> None:
    from fastapi.responses import PlainTextResponse

    def metrics() -> PlainTextResponse:
        return PlainTextResponse(render_metrics(worker, reloader), media_type="text/plain; version=0.0.4; charset=utf-8")

    app.add_api_route("/metrics", metrics, methods=["GET"], include_in_schema=False)
