"""The daemon's Prometheus metrics: `GET /metrics`, through prometheus_client.

One registry per daemon (`registry`), never the library's global one (several daemons may live in
one test process), holding:
- the library's process, platform and garbage-collector collectors (process_*, python_*);
- `JourneysCollector`, which reads when scraped the figures the daemon keeps anyway: the worker's
  `Counts` sink, its timer-lateness histogram, the deliveries' tally of attempts, the connectors'
  circuits, the reloads and trainings, and the store's figures (the inbox, the timers, the outbox),
  read on the HTTP thread's own connection (SQLite: read-only, per scrape; PostgreSQL: a small
  pool, engine.daemon.read_pool);
- `journeys_http_requests_total`, counted by an ASGI middleware (route template, method, status).

Counters never go down while the daemon runs, across hot reloads included: the counts live on the
worker, the deliveries and the reloader, which a reload keeps (it swaps the engine's program and
rebuilds the connectors). Across restarts, the totals the store keeps anyway (events accepted and
processed: the inbox's seqs and cursor) are read from the store, so they carry on; the others
(actions, attempts, reloads, ...) count this process's work and start at 0 with it, which
Prometheus' rate() and increase() take as a counter reset. The outbox's attempts used to be the
sum of its rows' attempts, which fell whenever retention (or an erasure) deleted settled rows: they
are now counted by the deliveries as each attempt is settled (`Tally`).

The deliveries in a process of their own (`[serve] deliveries = "process"`) send their tally over
the pipe they already speak (engine.daemon.deliveries.process), with each heartbeat when it
changed; a child that dies and is started again adds to its predecessor's last figures. No
PROMETHEUS_MULTIPROC_DIR: its files would have to be set up before the library is imported, wiped
at every start and never shared by two daemons, and its process_* collectors would go.

Several workers on one PostgreSQL store: each serves its own /metrics (Prometheus scrapes every
one). The store's figures are the cluster's, the same in every worker (aggregate them with max);
the rest is each worker's own (aggregate with sum). docs/deployment.md lists every metric.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Hashable, Iterator

from fastapi import Request  # at module level, as Response: the route's annotations name them
from prometheus_client import (CollectorRegistry, GCCollector, Histogram, PlatformCollector, ProcessCollector,
                               disable_created_metrics)
from prometheus_client import Counter as PromCounter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from starlette.responses import PlainTextResponse, Response

from ..store import sql
from ..store.outbox import DEAD_LETTERS, OPEN, _from_t
from ..store.urls import is_postgres

log = logging.getLogger("journeys.daemon")

# no `_created` series beside each counter and histogram: twice the series for a figure nobody graphs
disable_created_metrics()

LATENESS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
OUTBOX_STATES = ("pending", "delivered", "failed", "dead")
ATTEMPT_OUTCOMES = ("delivered", "retrying", "dead", "failed")  # what an attempt left its entry as


class Tally:
    """Counts by key, written by one thread and read whole by others (/metrics, /readyz, the pipe
    of the delivery process): a lock keeps each snapshot whole."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[Any] = Counter()

    def add(self, key: Hashable, n: int = 1) -> None:
        with self._lock:
            self._counts[key] += n

    def snapshot(self) -> dict[Any, int]:
        with self._lock:
            return dict(sorted(self._counts.items(), key=lambda kv: str(kv[0])))


class Lateness(Histogram):
    """How late timers and scheduled entries fired (wall clock − due time), in seconds."""

    def __init__(self) -> None:
        super().__init__("journeys_timer_lateness_seconds",
                         "How late timers and scheduled entries fired (wall clock - due time).",
                         buckets=LATENESS_BUCKETS, registry=None)


class TimedClock:
    """The worker's clock. The engine advances it to each timer's (or scheduled entry's) moment
    right before firing it with `fire`, where the lateness (wall clock now − due time) is measured;
    `advance` (an event's moment, a training's) measures nothing."""

    def __init__(self, clock: Any, lateness: Lateness):
        self.clock, self.lateness = clock, lateness

    def now(self) -> datetime:
        return self.clock.now()

    def advance(self, moment: datetime) -> None:
        self.clock.advance(moment)

    def fire(self, moment: datetime) -> None:
        self.lateness.observe(max(0.0, (self.clock.now() - moment).total_seconds()))
        self.clock.advance(moment)


# ---------------------------------------------------------------------- the store's figures

def _figures(conn: Any, last: int, processed: int) -> dict[str, Any]:
    """The store's figures on a reader's connection (SQLite or PostgreSQL: engine.store.sql)."""
    now_dt = datetime.now(timezone.utc)
    now = sql.moment(conn, now_dt)
    due = sql.execute(conn, "SELECT count(*) FROM profiles WHERE wake IS NOT NULL AND wake <= ?", (now,)).fetchone()[0]
    waiting = sql.execute(conn, "SELECT count(*) FROM profiles WHERE wake IS NOT NULL").fetchone()[0]
    states = {s: n for s, n in sql.execute(conn, "SELECT state, count(*) FROM outbox GROUP BY state")}
    oldest = sql.execute(conn, f"SELECT min(created) FROM outbox WHERE {OPEN}").fetchone()[0]
    if isinstance(oldest, str):  # SQLite's text; PostgreSQL's timestamptz
        oldest = _from_t(oldest)
    failed = sql.execute(conn, "SELECT count(*) FROM inbox_failed").fetchone()[0]
    from .admin.pause_store import count

    paused = count(conn)  # the emergency stop's pauses in force
    return dict(last=last, processed=processed, due=due, waiting=waiting, states=states, failed=failed, paused=paused,
                oldest_age=0.0 if oldest is None else max(0.0, (now_dt - oldest).total_seconds()))


def store_figures(path: str) -> dict[str, Any]:
    """Figures read from the store on a connection of the HTTP thread's own: a read-only SQLite
    connection, or one of the PostgreSQL store's reader pool (engine.daemon.read_pool).

    Events accepted and processed: SQLite's inbox keeps a cursor (`inbox_cursor`) and its seqs
    (`sqlite_sequence`); PostgreSQL's deletes each message once processed, so accepted is its seq
    sequence's last value and processed that minus the rows still waiting (a seq a rolled back
    append took counts as accepted and processed; one taken by an append not committed yet counts
    as processed until it commits: `JourneysCollector` never lets the figure go back)."""
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


def _gauge(name: str, help: str, value: float | None = None, labels: tuple[str, ...] = (),
           samples: Any = ()) -> GaugeMetricFamily:
    return _family(GaugeMetricFamily, name, help, value, labels, samples)


def _counter(name: str, help: str, value: float | None = None, labels: tuple[str, ...] = (),
             samples: Any = ()) -> CounterMetricFamily:
    return _family(CounterMetricFamily, name, help, value, labels, samples)


def _family(kind: Any, name: str, help: str, value: float | None, labels: tuple[str, ...], samples: Any) -> Metric:
    if value is not None:
        return kind(name, help, value=value)
    family = kind(name, help, labels=labels)
    for label_values, v in samples:
        family.add_metric([str(x) for x in label_values], v)
    return family


class JourneysCollector:
    """The daemon's own families, read from the worker (and its deliveries, training and reloader)
    and from the store when scraped."""

    def __init__(self, worker: Any, reloader: Any = None):
        self.worker, self.reloader = worker, reloader
        self._processed = 0  # PostgreSQL's processed figure is an estimate: it never goes back
        self._lock = threading.Lock()

    def collect(self) -> Iterator[Metric]:
        worker = self.worker
        counts = worker.counts.snapshot()
        try:
            fig: dict[str, Any] | None = store_figures(worker.path)
        except Exception as exc:  # noqa: BLE001 - sqlite3's, psycopg's or the pool's: /metrics still answers
            log.warning("metrics: the store could not be read: %s", exc)
            fig = None
        yield _gauge("journeys_up", "1 while the store is open and the worker's loops run.",
                     1 if worker.store_open and worker.running else 0)
        if fig is not None:
            yield from self._store(fig)
        yield _counter("journeys_worker_processed_total", "Inbox messages this process handled.",
                       counts.get("inbox.processed", 0))
        yield _counter("journeys_events_failed_total",
                       "Inbox messages this process set aside because the engine could not take them.",
                       counts.get("inbox.failed", 0))
        yield _counter("journeys_runs_parked_total", "Runs this process parked because the engine could not run "
                       "a step of that journey for that user (the other journeys went on; see the user's trace).",
                       labels=("journey",), samples=[((k.split(".", 1)[1],), v) for k, v in counts.items()
                                                     if k.startswith("parked.")])
        yield _counter("journeys_messages_received_total", "Messages the engine received, by type.",
                       labels=("type",), samples=[((k.split(".", 1)[1],), v) for k, v in counts.items()
                                                  if k.startswith("received.")])
        actions = [((parts[1], parts[2]), v) for k, v in counts.items()
                   if (parts := k.split("."))[0] == "action" and len(parts) == 3]
        yield _counter("journeys_actions_total",
                       "Actions by channel (kind) and outcome (sent, updated: an audience change, suppressed, deferred).",
                       labels=("channel", "outcome"), samples=actions)
        yield _counter("journeys_actions_unroutable_total", "Actions no connector could take.",
                       counts.get("action.unroutable", 0))
        yield from self._deliveries(getattr(worker, "deliveries", None))
        lateness = getattr(worker, "lateness", None)
        if lateness is not None:
            yield from lateness.collect()
        program = worker.program
        yield _gauge("journeys_journey_version",
                     "Journey versions loaded (1: the version new entries take; 0: kept for users in flight).",
                     labels=("journey", "version"),
                     samples=[((name, version), 1 if program.journeys.get(name) is not None
                               and program.journeys[name].version == version else 0)
                              for (name, version) in sorted(program.versions)])
        yield from self._training(getattr(worker, "training", None), worker)
        reloader = self.reloader
        if reloader is not None:
            yield _counter("journeys_reloads_total", "Hot reloads by result.", labels=("result",),
                           samples=[(("ok",), reloader.ok), (("failed",), reloader.failed)])
            yield _gauge("journeys_reload_errors", "Errors of the last reload (0 once one succeeds).",
                         len(reloader.errors))

    def _store(self, fig: dict[str, Any]) -> Iterator[Metric]:
        with self._lock:
            processed = self._processed = max(self._processed, fig["processed"])
        yield _counter("journeys_events_accepted_total",
                       "Events accepted by the ingest (the inbox's last seq: the store's, across restarts).",
                       fig["last"])
        yield _counter("journeys_events_processed_total",
                       "Events the engine has processed (the inbox cursor: the store's, across restarts).", processed)
        yield _gauge("journeys_processing_lag", "Inbox messages accepted but not yet processed.",
                     max(0, fig["last"] - processed))
        yield _gauge("journeys_timers_due", "Users whose timer is due now and has not fired yet.", fig["due"])
        yield _gauge("journeys_timers_waiting", "Users with a timer set.", fig["waiting"])
        states = fig["states"]
        yield _gauge("journeys_outbox_entries", "Outbox entries by state.", labels=("state",),
                     samples=[((s,), states.get(s, 0)) for s in sorted(set(OUTBOX_STATES) | set(states))])
        yield _gauge("journeys_outbox_oldest_age_seconds",
                     "Age of the oldest outbox entry still to deliver (pending or sending; 0 when none).",
                     fig["oldest_age"])
        yield _gauge("journeys_dead_letters",
                     "Outbox entries that will not be retried: failed for good (state failed) or retried until their "
                     "connector's retry_for ran out (state dead); GET /admin/dead-letters lists them.",
                     sum(states.get(s, 0) for s in DEAD_LETTERS))
        yield _gauge("journeys_inbox_failed",
                     "Messages set aside because the engine could not take them (GET /admin/inbox/failed).",
                     fig["failed"])
        yield _gauge("journeys_paused_journeys",
                     "Journeys whose sends an operator paused (a pause of every send, *, counts as one; "
                     "GET /admin/pauses lists them).", fig["paused"])
        yield _gauge("journeys_held_sends",
                     "Outbox entries held by a pause, waiting for a resume to release or drop them.",
                     states.get("held", 0))

    def _deliveries(self, deliveries: Any) -> Iterator[Metric]:
        """The attempts this worker's deliveries made (in its process or their own), and circuits."""
        tally = deliveries.tally() if deliveries is not None else {}
        attempts = {k[1:]: v for k, v in tally.items() if k[0] == "attempt"}
        yield _counter("journeys_outbox_attempts_total", "Delivery attempts this worker's deliveries made.",
                       sum(attempts.values()))
        yield _counter("journeys_outbox_retries_total", "Delivery attempts after an entry's first.",
                       sum(v for k, v in tally.items() if k[0] == "retry"))
        yield _counter("journeys_delivery_attempts_total",
                       "Delivery attempts by connector and outcome (delivered; retrying: a retryable failure, "
                       "attempted again later; dead: out of retry_for; failed: for good).",
                       labels=("connector", "outcome"), samples=sorted(attempts.items()))
        circuits = deliveries.circuits() if deliveries is not None else {}
        for name, key, help in CIRCUIT_FAMILIES:
            yield _gauge(name, help, labels=("connector",),
                         samples=[((c,), view[key]) for c, view in sorted(circuits.items())])

    def _training(self, training: Any, worker: Any) -> Iterator[Metric]:
        if training is None:
            return
        yield _counter("journeys_model_trainings_total",
                       "Model trainings by result (failed: the running version stays; adopted: the version "
                       "another worker of the cluster trained for the moment, taken from the store).",
                       labels=("result",), samples=[(("ok",), training.trained), (("failed",), training.failed),
                                                    (("adopted",), training.adopted)])
        yield _counter("journeys_model_family_failures_total",
                       "Model families whose training failed and kept their last good version.",
                       training.family_failures)
        yield _gauge("journeys_model_training_seconds", "How long the last training took.", training.last_seconds)
        models = worker.engine.program.models
        if models.trained_at is not None:
            yield _gauge("journeys_model_trained_timestamp_seconds",
                         "When the models in use were trained (seconds since 1970).",
                         labels=("version",), samples=[((models.version,), models.trained_at)])


# ---------------------------------------------------------------------- serving

REQUEST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)  # seconds


class CountRequests:
    """The daemon's ASGI app, wrapped whole (the ingest's POSTs skip the app's middleware: its fast
    path, engine.daemon.ingest.IngestApp): `journeys_http_requests_total` by route template (never
    the raw path: a user id in /v1/profile/{id} would make a series per user), method and status,
    and `journeys_http_request_duration_seconds` by route and method (from the request's arrival to
    its answer's last byte: for the ingest, the group commit included, what a sender waits)."""

    def __init__(self, app: Any, counter: PromCounter, durations: Any = None):
        self.app, self.counter, self.durations = app, counter, durations
        self._paths: frozenset[str] | None = None  # the app's routes without parameters, once it serves

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # an exception that escapes is answered 500 further out

        async def send_status(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_status)
        finally:
            route, method = self._route(scope), scope.get("method", "")
            self.counter.labels(route, method, str(status)).inc()
            if self.durations is not None:
                self.durations.labels(route, method).observe(time.perf_counter() - started)

    def _route(self, scope: dict[str, Any]) -> str:
        route = getattr(scope.get("route"), "path", None)  # FastAPI's routes put themselves there
        if route is not None:
            return route
        if self._paths is None:
            self._paths = frozenset(getattr(r, "path", "") for r in self.app.routes if "{" not in getattr(r, "path", "{"))
        path = scope.get("path", "")
        return path if path in self._paths else "other"


def registry(worker: Any, reloader: Any = None, *, platform: bool = True) -> CollectorRegistry:
    """A registry of the daemon's families; `platform`: with the process, Python and GC collectors."""
    reg = CollectorRegistry(auto_describe=False)
    if platform:
        ProcessCollector(registry=reg)
        PlatformCollector(registry=reg)
        GCCollector(registry=reg)
    reg.register(JourneysCollector(worker, reloader))  # type: ignore[arg-type] - collect() is the protocol
    return reg


def render_metrics(worker: Any, reloader: Any = None) -> str:
    """The daemon's own families in Prometheus' text format (0.0.4)."""
    from prometheus_client import generate_latest

    return generate_latest(registry(worker, reloader, platform=False)).decode()


def add_metrics(app: Any, worker: Any, reloader: Any = None, auth: Any = None) -> CountRequests:
    """GET /metrics, in the format the scraper asks for (Prometheus text, or OpenMetrics), behind
    the admin token when `auth` (an engine.daemon.admin.auth.AdminAuth) is given, as `journeys
    serve` gives it: Prometheus sends it (`authorization: credentials_file:` in the scrape config,
    docs/deployment.md). Returns the app to serve: `app` with its requests counted."""
    from starlette.concurrency import run_in_threadpool

    reg = registry(worker, reloader)
    requests = PromCounter("journeys_http_requests", "HTTP requests answered, by route, method and status code.",
                           ("route", "method", "code"), registry=reg)
    durations = Histogram("journeys_http_request_duration_seconds",
                          "How long HTTP requests took to answer, by route and method.", ("route", "method"),
                          registry=reg, buckets=REQUEST_BUCKETS)

    async def metrics(request: Request) -> Response:
        if auth is not None and (refused := auth.refusal(request)) is not None:
            return refused
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        body = await run_in_threadpool(encoder, reg)  # the store is read: off the event loop
        return Response(body, media_type=content_type)

    text = {"schema": {"type": "string"}}
    app.add_api_route("/metrics", metrics, methods=["GET"], tags=["admin"], summary="Prometheus metrics",
                      response_class=PlainTextResponse,  # documented as text, not FastAPI's default JSON
                      description="Prometheus' text format 0.0.4, or OpenMetrics 1.0 when the Accept header asks "
                                  "for it (docs/deployment.md lists every metric).",
                      responses={200: {"description": "The metrics.",
                                       "content": {"text/plain": text, "application/openmetrics-text": text}}})
    return CountRequests(app, requests, durations)
