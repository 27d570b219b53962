"""The dry-run: a recorded event log through the daemon's engine, on a virtual clock.

Nothing here decides anything about journeys. It picks the clock (virtual: the events' own times),
the store (in memory, a SQLite file or a PostgreSQL schema) and the sinks (a report, a sends file, a trace), then runs
`engine.runtime.loop.handle_all`, the loop the daemon's rule defines: before an event at time t, every
timer due at or before t fires. Messages stream in (`engine.dryrun.eventlog.open_logs` reads them from
the files as they are needed), one group commit at a time.
"""

from __future__ import annotations

import gc
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from itertools import chain
from operator import itemgetter
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import orjson

from journeys.checker import load_checked

from ..core.effects import Action, Effect
from ..core.messages import Message
from ..core.program import Program
from ..models.modelset import UNTRAINED, ModelSet
from ..runtime.clock import VirtualClock
from ..runtime.loop import Engine, handle_all
from ..runtime.sinks import FanOut, Sink
from ..store.base import MemoryStore, Store
from .render_check import RenderCheck, store_traits
from .report import Report


def load_program(path: str | Path, journeys: Sequence[str] | None = None) -> Program:
    """Check and compile a project; `journeys` limits the run to those journeys by name."""
    project, compiled = load_checked(path)
    if journeys:
        unknown = [n for n in journeys if n not in compiled.journeys]
        if unknown:
            known = ", ".join(f'"{n}"' for n in compiled.journeys)
            raise ValueError(f'no journey named "{unknown[0]}" in {path} (journeys: {known})')
    return Program.build(compiled, only=journeys or None)


DRY_RUN_MARK = "dry_run"  # a table that says: this SQLite file (or PostgreSQL schema) holds a dry-run's state


class StoreInUse(Exception):
    """The store given to the dry-run holds state that is not a dry-run's (a daemon's store)."""


def open_dry_run_store(url: str):
    """A store for one dry-run (`engine.store.open.open_store`: SQLite or PostgreSQL). A run starts from
    nothing, so a file or schema left by an earlier dry-run is emptied; one holding anything else (a
    daemon's store) is never written over."""
    import sqlite3

    from ..store.open import open_store
    from ..store.urls import is_postgres, sqlite_path

    if is_postgres(url):
        return _open_dry_run_postgres(url)

    path = sqlite_path(url)
    if path != ":memory:" and Path(path).exists() and Path(path).stat().st_size > 0:
        try:
            with sqlite3.connect(path) as conn:
                tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        except sqlite3.DatabaseError as e:
            raise StoreInUse(f"{path}: not a SQLite database ({e}); the dry-run never writes over it") from None
        if tables and DRY_RUN_MARK not in tables:
            raise StoreInUse(f"{path} holds state that is not a dry-run's; the dry-run never writes over it: "
                             "choose another file")
        for suffix in ("", "-wal", "-shm"):
            Path(path + suffix).unlink(missing_ok=True)
    store = open_store(url)
    store.conn.execute(f"CREATE TABLE IF NOT EXISTS {DRY_RUN_MARK} (note TEXT)")
    return store


def _open_dry_run_postgres(url: str):
    """The PostgreSQL side of `open_dry_run_store`: the URL's schema must be new, empty, or an
    earlier dry-run's (whose tables are dropped; the schema itself and its grants stay)."""
    from psycopg import sql

    from ..store.open import open_store
    from ..store.pg_store import connect
    from ..store.urls import redact

    conn, schema = connect(url)
    with conn:
        tables = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY 1",
                                             (schema,))]
        if tables and DRY_RUN_MARK not in tables:
            raise StoreInUse(f"{redact(url)}: schema {schema} holds state that is not a dry-run's; the dry-run never "
                             "writes over it: choose another schema (?schema=name)")
        if tables:
            conn.execute(sql.SQL("DROP TABLE {} CASCADE").format(
                sql.SQL(", ").join(sql.Identifier(schema, t) for t in tables)))
    store = open_store(url)
    store.conn.execute(f"CREATE TABLE IF NOT EXISTS {DRY_RUN_MARK} (note text)")
    return store


class SendsWriter:
    """`--sends FILE`: every action (sent, suppressed, deferred) as one JSON line, in the canonical
    order: by time, then by user id, then in the order the user's own actions were decided.

    Not plain run order: where several users act at one moment, run order follows the log's lines
    and the timers of the whole run, which a run split over processes by user
    (engine.dryrun.partitioned) cannot reproduce; this order it can, by merging its partitions'
    files (`sends_order`). Actions come in time order (the clock never goes back), so only one
    moment's actions are held at a time."""

    reads_reasons = False  # actions only

    def __init__(self, path: str | Path):
        self._file = open(path, "wb")
        self._moment: datetime | None = None
        self._held: list[tuple[str, bytes]] = []  # (user, line) of the moment's actions, in run order

    def emit(self, effects: Sequence[Effect]) -> None:
        for e in effects:
            if isinstance(e, Action):
                if e.time != self._moment:
                    self._flush()
                    self._moment = e.time
                self._held.append((e.user, orjson.dumps(e.to_json(), option=orjson.OPT_SORT_KEYS) + b"\n"))

    def _flush(self) -> None:
        if self._held:
            self._held.sort(key=itemgetter(0))  # stable: each user's own order stays
            self._file.writelines(line for _, line in self._held)
            self._held.clear()

    def close(self) -> None:
        self._flush()
        self._file.close()


def sends_order(line: bytes) -> tuple[datetime, str]:
    """Where a line of a sends file goes in `SendsWriter`'s order (its time, then its user)."""
    action = orjson.loads(line)
    return datetime.fromisoformat(action["time"]), action["user"]


@dataclass
class DryRun:
    report: Report
    store: Store
    events: int = 0
    first: datetime | None = None
    until: datetime | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    models: ModelSet = UNTRAINED  # the version in effect at the end (the latest trained)


def simulate(program: Program, messages: Iterable[Message], *, until: datetime | None = None,
             store: Store | None = None, sinks: Sequence[Sink] = (),
             progress: Callable[[int], None] | None = None, templates: Path | None = None) -> DryRun:
    """Run `messages` (in time order: a list, an `engine.dryrun.eventlog.SortedLog`, any iterable) through
    the engine; timers due by `until` (default: the last message's time) fire. Messages are taken
    GROUP_COMMIT at a time, so an iterable is never held whole. `progress` is called with the
    number of messages done. `templates`: the project's root; each message sent is then rendered
    from its template as the daemon's delivery will, and one that fails is reported as failed
    (`engine.dryrun.render_check`)."""
    store = store if store is not None else MemoryStore(keep_actions=False)
    stream = iter(messages)
    head = next(stream, None)
    first = head.timestamp if head is not None else until
    if first is None:
        return DryRun(Report(program), store, models=program.models)
    end = until
    if end is None and isinstance(messages, Sequence):
        end = messages[-1].timestamp  # a list out of order keeps its old meaning: up to the last one
    engine, report = dry_run_engine(program, store, sinks, templates, first)
    count, last = 0, first

    def kept() -> Iterator[Message]:  # counts every message, passes those up to `end`
        nonlocal count, last
        for message in chain((head,), stream) if head is not None else ():
            count += 1
            if end is None or message.timestamp <= end:
                last = message.timestamp
                yield message

    with collector_kept_out():
        handle_all(engine, kept(), None, progress)
        if end is None:
            end = last  # the last message's time (a SortedLog's .last)
        handle_all(engine, [], end)  # the timers due by the end
    report.finish(_states(store))
    return DryRun(report, store, count, first, end, models=engine.program.models)


def dry_run_engine(program: Program, store: Store, sinks: Sequence[Sink], templates: Path | None, start: datetime,
                   trainer: Callable[[datetime], ModelSet] | None = None) -> tuple[Engine, Report]:
    """The engine of a dry-run and its report: on a virtual clock from `start` (the first
    message's time: the trainings and the schedules count from it), every effect to the report
    and `sinks`, through the render check when `templates` is given. A partition of a run over
    several processes builds its engine here too, with the whole run's `start` and a `trainer`."""
    report = Report(program)
    sink: Sink = FanOut(report, *sinks)
    if templates is not None:
        sink = RenderCheck(sink, templates, store_traits(store))
    return Engine(program, store, VirtualClock(start), sink, trainer=trainer), report


# The cyclic collector's thresholds during a dry-run (issue 21): a young collection every 100,000
# allocations instead of 700, so the millions of short-lived effects, events and state copies die
# by reference counting before a collection walks them; the older generations' ratios as before.
RUN_THRESHOLD = (100_000, 50, 1000)


@contextmanager
def collector_kept_out() -> Iterator[None]:
    """The dry-run's collector policy, for the run only: `RUN_THRESHOLD`, then the caller's
    thresholds again (the dry-run also runs inside `journeys test`, `journeys replay` and test
    processes). Collections stay bounded, not off (`gc.disable()`): any cyclic garbage is still
    freed. Before a step dropped its context (`_Run.finish`), each step left a cycle behind and the
    100k-event shop run peaked at 699 MiB with the collector off instead of 308; now it makes
    almost none, and disabling would save ~0.3 s of 30 more for no bound. Not `gc.freeze()`: it
    cannot be undone for the caller's objects alone. The daemon keeps the normal collector: it
    lives for weeks, and its loop is not here (engine.runtime.loop)."""
    threshold = gc.get_threshold()
    gc.set_threshold(*RUN_THRESHOLD)
    try:
        yield
    finally:
        gc.set_threshold(*threshold)


def dry_run_actions(program: Any, messages: Sequence[Any], until: datetime | None) -> list[dict[str, Any]]:
    """Every action of a dry-run of `messages` in its JSON form, sorted by id: what `journeys replay`
    compares with the daemon's."""
    run = simulate(program, messages, until=until, store=MemoryStore(keep_actions=True))
    return sorted((a.to_json() for a in run.store.actions.values()), key=lambda a: a["id"])


def _states(store: Store):
    for uid in store.users():
        state = store.load(uid)
        if state is not None:
            yield state
