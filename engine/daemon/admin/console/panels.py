"""What each panel of the console shows, read from the store and the worker.

Two ways to read, chosen per panel by what it needs:
- on an HTTP thread, on a reader's connection of its own (`reader`: a read-only SQLite connection
  per read, or the PostgreSQL store's small pool, engine.daemon.read_pool), as /metrics does: the
  store's figures, the journeys' counts and the trail's tally. These are the panels every open
  console refreshes every 2 s; they never wait for, nor hold up, the processor.
- on the worker thread (`Worker.submit`), for what the admin API's functions read through the
  worker's own objects (the outbox and inbox, a profile through the store): the user page, the
  actions' fates, dead letters, inbox failures, pauses and the pause log. One short job each,
  between rounds.

Either way every worker of a cluster reads the same database: any of them shows the same console.
The functions return plain values for the templates, which escape every piece of text.
"""

from __future__ import annotations

import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from ....store import sql
from ....store.urls import is_postgres
from ... import trail
from ...api import ACTION_COLUMNS, fate, dead_letters, failed_messages, journey_counts, user_view
from .diagrams import journey_view
from .tally import Tally

TRACE_LINES = 200  # the user page's trace
LETTERS = 50  # dead letters and inbox failures shown
MESSAGE_CHARS = 300  # of a failed message's JSON
PAUSE_EVENTS = 10  # of the pause log, under the pauses


@contextmanager
def reader(path: str) -> Iterator[Any]:
    """A connection of this thread's own to the store at `path`, for reads only."""
    if is_postgres(path):
        from ...read_pool import pool

        with pool(path).connection() as conn:
            yield conn
        return
    conn = sqlite3.connect(Path(path).as_uri() + "?mode=ro", uri=True, timeout=2)
    try:
        yield conn
    finally:
        conn.close()


# ---------------------------------------------------------------------- on an HTTP thread

def journeys(worker: Any, tally: Tally) -> list[dict[str, Any]]:
    """Every journey loaded (in the project's order), then any still in flight that is not: its
    diagram with the users at each step now and the last hour's and day's counts."""
    with reader(worker.path) as conn:
        now = journey_counts(conn)["journeys"]
        tally.refresh(conn)
    windows = tally.counts()
    program = worker.program
    in_flight = {j["journey"]: j for j in now}
    names = list(program.journeys) + sorted(n for n in in_flight if n not in program.journeys)
    return [journey_view(n, program.journeys.get(n), in_flight.get(n), windows, f"j{i}", tally.caught_up)
            for i, n in enumerate(names, 1)]


def tallied(worker: Any, tally: Tally) -> None:
    """The trail's rows written since the tally's last read, counted."""
    with reader(worker.path) as conn:
        tally.refresh(conn)


def health(worker: Any) -> dict[str, Any]:
    """The processing, outbox, timers, deliveries and models figures of the health panel."""
    from ...metrics import store_figures

    out: dict[str, Any] = {"running": worker.running, "lateness": lateness(worker.lateness)}
    try:
        fig = store_figures(worker.path)
    except Exception as exc:  # noqa: BLE001 - sqlite3's, psycopg's or the pool's: the panel says so
        out["error"] = f"{type(exc).__name__}: {exc}"
        fig = None
    if fig is not None:
        states = fig["states"]
        out.update(lag=max(0, fig["last"] - fig["processed"]), inbox_failed=fig["failed"], timers_due=fig["due"],
                   timers_waiting=fig["waiting"], outbox=dict(sorted(states.items())),
                   outbox_open=sum(states.get(s, 0) for s in ("pending", "sending")),
                   oldest_age=fig["oldest_age"], dead_letters=sum(states.get(s, 0) for s in ("failed", "dead")))
    parts = worker.partitions
    if parts is not None:
        out["partitions"] = {"worker": parts.id, "held": len(parts.owned), "of": parts.total}
    deliveries = worker.deliveries
    out["circuits"] = {c: v for c, v in sorted((deliveries.circuits() if deliveries is not None else {}).items())
                       if v.get("open")}
    out["models"] = models(worker)
    return out


def lateness(histogram: Any) -> dict[str, Any]:
    """How late timers fired since the daemon started: fires, mean, and the bucket bounds that
    half and 99% of them stayed within."""
    buckets: list[tuple[float, float]] = []
    count = total = 0.0
    for metric in histogram.collect():
        for s in metric.samples:
            if s.name.endswith("_bucket"):
                buckets.append((float(s.labels["le"]), s.value))
            elif s.name.endswith("_count"):
                count = s.value
            elif s.name.endswith("_sum"):
                total = s.value

    def within(share: float) -> float | None:
        return next((le for le, n in sorted(buckets) if n >= share * count), None) if count else None

    return {"fires": int(count), "mean": total / count if count else None, "p50": within(0.5), "p99": within(0.99)}


def models(worker: Any) -> dict[str, Any] | None:
    """The models in use (version, trained as of, each family's status) and the trainings; None
    when the project predicts nothing."""
    training = worker.training
    if not worker.program.features_on:
        return None
    in_use = worker.engine.program.models
    described = in_use.describe()
    age = None if in_use.trained_at is None else max(0.0, time.time() - in_use.trained_at)
    out = {"version": described["version"], "trained_at": described["trained_at"], "age": age,
           "users": described["users"],
           "families": described["models"], "problems": described["problems"], "trainings": None}
    if training is not None:
        job = training.scheduler.get_job("train") if training.scheduler is not None else None
        out["trainings"] = {"ok": training.trained, "failed": training.failed, "adopted": training.adopted,
                            "last_seconds": training.last_seconds,
                            "next": job.next_run_time.isoformat() if job is not None and job.next_run_time else None}
    return out


# ---------------------------------------------------------------------- on the worker thread

def actions(worker: Any, ids: list[str]) -> list[dict[str, Any]]:
    """The actions `ids` (newest first), each with what became of its delivery (as the user view's)."""
    import orjson

    from ....core.effects import DEFERRED, reported_outcome

    if not ids:
        return []
    conn = worker.store.conn
    rows: dict[str, Any] = {}
    for chunk in sql.chunks(ids):
        for *row, user_id, raw in sql.execute(conn, f'SELECT {", ".join(ACTION_COLUMNS)}, "user", json FROM actions '
                                                    f"WHERE id IN ({sql.marks(len(chunk))})", chunk):
            rows[row[0]] = {**dict(zip(ACTION_COLUMNS, row)), "user": user_id, "raw": raw}
    entries: dict[str, list[Any]] = {}
    for e in worker.outbox.of_actions(list(rows)):
        entries.setdefault(e.action_id, []).append(e)
    out = []
    for action_id in ids:
        a = rows.get(action_id)
        if a is None:  # past the action log's retention
            continue
        outcome, raw = reported_outcome(a["kind"], a["outcome"]), a.pop("raw")
        until = orjson.loads(raw).get("until") if outcome == DEFERRED and raw else None
        out.append({**a, "time": sql.text_time(a["time"]), "outcome": outcome, "until": until,
                    **fate(outcome, entries.get(action_id, []))})
    return out


def letters(worker: Any) -> dict[str, Any]:
    """The dead letters and the messages set aside, each message's JSON cut to MESSAGE_CHARS."""
    import orjson

    failed = failed_messages(worker.inbox, LETTERS)["messages"]
    for m in failed:
        text = m["message"] if isinstance(m["message"], str) else orjson.dumps(m["message"]).decode()
        m["text"] = text if len(text) <= MESSAGE_CHARS else text[:MESSAGE_CHARS] + "…"
    return {"dead": dead_letters(worker.outbox, None, LETTERS)["entries"], "failed": failed}


def pauses(worker: Any) -> list[dict[str, Any]]:
    """The pauses in force, each with the sends it holds (engine.daemon.admin.pause_store)."""
    from ..pause_store import list_pauses

    return list_pauses(worker.store.conn)


def pause_history(worker: Any) -> list[dict[str, Any]]:
    """The newest PAUSE_EVENTS pauses and resumes, newest first (the pause log, as
    `GET /admin/pauses/log` answers it)."""
    from ..pause_store import log_of

    return log_of(worker.store.conn, PAUSE_EVENTS)


def user(worker: Any, any_id: str) -> dict[str, Any] | None:
    """The user page: the admin API's user view (by the user id or any alias) and the trace."""
    found = user_view(worker.store, worker.outbox, any_id)
    if found is None:
        return None
    uid, ids = trail.ids_of(worker.store, any_id)
    found["ids"] = ids
    found["trace"] = trail.read(worker.store.conn, ids, TRACE_LINES)
    return found
