"""The daemon's Prometheus metrics: `GET /metrics` in the text exposition format (0.0.4).

Written here rather than with a client library: every value is a counter or gauge the daemon
already keeps (the `Counts` sink, the inbox, the outbox table), read when scraped, plus one
histogram of timer lateness (`Lateness`, fed by the worker's `TimedClock`). The same families on
both stores; the store's figures are read on the HTTP thread's own connection (SQLite: read-only,
per scrape; PostgreSQL: a small pool, engine.daemon.read_pool).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from bisect import bisect_left
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from ..store import sql
from ..store.outbox import DEAD_LETTERS
from ..store.urls import is_postgres
from .reload import Reloader

log = logging.getLogger("journeys.daemon")

LATENESS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


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
    """The store's figures on a reader's connection (SQLite or PostgreSQL: engine.store.sql)."""
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
    connection, or one of the PostgreSQL store's reader pool (engine.daemon.read_pool).

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
# each connector's circuit (engine.daemon.deliveries.dispatch.Circuit), as its delivery loop sees it
CIRCUIT_FAMILIES = (
    ("journeys_connector_circuit_open", "open",
     ("1 while the connector's circuit is open (its provider keeps failing: its deliveries wait, one probe at a "
      "time), 0 when closed.")),
    ("journeys_connector_down_since_seconds", "down_since",
     "While its circuit is open, when the connector's provider started failing (Unix time); 0 when closed."),
    ("journeys_connector_consecutive_failures", "failures",
     "The connector's retryable failures in a row since its last success."),
)


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
        out.family("journeys_dead_letters", "gauge",
                   "Outbox entries that will not be retried: failed for good (state failed) or retried until their "
                   "connector's retry_for ran out (state dead); GET /admin/dead-letters lists them.",
                   [({}, sum(states.get(s, 0) for s in DEAD_LETTERS))])
        out.family("journeys_inbox_failed", "gauge",
                   "Messages set aside because the engine could not take them (GET /admin/inbox/failed).",
                   [({}, fig["failed"])])
    out.family("journeys_worker_processed_total", "counter", "Inbox messages this process handled.",
               [({}, counts.get("inbox.processed", 0))])
    out.family("journeys_events_failed_total", "counter", "Inbox messages this process set aside because the engine could not take them.",
               [({}, counts.get("inbox.failed", 0))])
    out.family("journeys_runs_parked_total", "counter", "Runs this process parked because the engine could not run "
               "a step of that journey for that user (the other journeys went on; see the user's trace).",
               [({"journey": k.split(".", 1)[1]}, v) for k, v in counts.items() if k.startswith("parked.")])
    received = [({"type": k.split(".", 1)[1]}, v) for k, v in counts.items() if k.startswith("received.")]
    out.family("journeys_messages_received_total", "counter", "Messages the engine received, by type.", received)
    actions = []
    for k, v in counts.items():
        parts = k.split(".")
        if parts[0] == "action" and len(parts) == 3:
            actions.append(({"channel": parts[1], "outcome": parts[2]}, v))
    out.family("journeys_actions_total", "counter",
               "Actions by channel (kind) and outcome (sent, updated: an audience change, suppressed, deferred).",
               actions)
    out.family("journeys_actions_unroutable_total", "counter", "Actions no connector could take.",
               [({}, counts.get("action.unroutable", 0))])
    deliveries = getattr(worker, "deliveries", None)
    circuits = deliveries.circuits() if deliveries is not None else {}
    for name, key, help in CIRCUIT_FAMILIES:
        out.family(name, "gauge", help, [({"connector": c}, view[key]) for c, view in sorted(circuits.items())])
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
    training = getattr(worker, "training", None)
    if training is not None:
        out.family("journeys_model_trainings_total", "counter",
                   "Model trainings by result (failed: the running version stays; adopted: the version "
                   "another worker of the cluster trained for the moment, taken from the store).",
                   [({"result": "ok"}, training.trained), ({"result": "failed"}, training.failed),
                    ({"result": "adopted"}, training.adopted)])
        out.family("journeys_model_family_failures_total", "counter",
                   "Model families whose training failed and kept their last good version.",
                   [({}, training.family_failures)])
        out.family("journeys_model_training_seconds", "gauge", "How long the last training took.",
                   [({}, training.last_seconds)])
        models = worker.engine.program.models
        if models.trained_at is not None:
            out.family("journeys_model_trained_timestamp_seconds", "gauge",
                       "When the models in use were trained (seconds since 1970).",
                       [({"version": models.version}, models.trained_at)])
    if reloader is not None:
        out.family("journeys_reloads_total", "counter", "Hot reloads by result.",
                   [({"result": "ok"}, reloader.ok), ({"result": "failed"}, reloader.failed)])
        out.family("journeys_reload_errors", "gauge", "Errors of the last reload (0 once one succeeds).",
                   [({}, len(reloader.errors))])
    return "\n".join(out.lines) + "\n"


def add_metrics(app: Any, worker: Any, reloader: Reloader | None) -> None:
    from fastapi.responses import PlainTextResponse

    def metrics() -> PlainTextResponse:
        return PlainTextResponse(render_metrics(worker, reloader), media_type="text/plain; version=0.0.4; charset=utf-8")

    app.add_api_route("/metrics", metrics, methods=["GET"], include_in_schema=False)
