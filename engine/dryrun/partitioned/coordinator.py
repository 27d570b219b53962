"""The partitioned dry-run, driven: partitions in lockstep to each training moment, outputs merged.

`run_partitioned` hands each partition its part of the log, then, for each moment the models
train at (the single run's: from the log's first message, `program.retrain` in UTC, up to the
run's end), has every partition run to it and return its users' training rows; it merges them in
user order (what one engine reads over all users), trains once, and hands that version to every
partition. Then the partitions run to the end, and their reports add up (`Report.absorb`), their
sends files merge (`merge_sends`) and the trace comes from the partition holding that user.

A training is the one moment the partitions wait for each other: on the shop it is a large part
of the run. Its model families are independent, so the waiting partitions fit them between them
(`modelset.shares`: about equal cost each), and the version is assembled here exactly as one
process's `train` makes it (docs/performance.md).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from datetime import datetime, timedelta
from operator import itemgetter
from pathlib import Path
from typing import Any, Iterator, Protocol

from ...core.program import Program
from ...core.timing import next_fire
from ...models.features import seconds
from ...models.modelset import ModelSet, assemble, shares
from ..eventlog import SortedLog
from ..report import Report
from .merge import merge_sends
from .partition import PartitionResult, PartitionSpec, RunBounds
from .portable import dumps, loads


class Executor(Protocol):
    """Where the partitions run (engine.dryrun.partitioned.local, .cluster)."""

    def start(self, spec: PartitionSpec, parts: int) -> None: ...

    def call(self, method: str, args: list[tuple[Any, ...]]) -> list[Any]:
        """`method(*args[i])` on partition i < len(args), all at once; the results in order."""
        ...

    def sends_file(self, index: int, path: str) -> str: ...

    def close(self) -> None: ...


@dataclass
class PartitionedRun:
    report: Report
    trace: list[str] | None  # the traced user's lines (None: no trace asked)
    messages: int
    cpu: list[float]  # each partition's process's CPU seconds


def training_moments(program: Program, start: datetime, end: datetime) -> Iterator[datetime]:
    """The moments an engine started at `start` and run to `end` trains its models at
    (engine.runtime.loop.Engine: `_start` and `run_due`)."""
    if not program.features_on:
        return
    at = next_fire(program.retrain, "UTC", start - timedelta(microseconds=1))
    while at is not None and at <= end:
        yield at
        at = next_fire(program.retrain, "UTC", at)


def run_partitioned(program: Program, logs: list[SortedLog], executor: Executor, *, start: datetime,
                    end: datetime, sends: Path | None = None,
                    trace: tuple[str, int | None] | None = None) -> PartitionedRun:
    """Run the started `executor`'s first `len(logs)` partitions over `logs` (one each), from
    the whole log's first message `start` to `end`. `trace`: the user to trace and the partition
    that holds them (None when no message names them)."""
    parts = len(logs)
    run = RunBounds(start, end, sends is not None)
    traced = trace[1] if trace is not None else None
    executor.call("open", [(log, run, trace[0] if trace is not None and i == traced else None)
                           for i, log in enumerate(logs)])
    previous = program.models
    for at in training_moments(program, start, end):
        rows = list(heapq.merge(*(loads(blob) for blob in executor.call("run_until", [(at,)] * parts)),
                                key=itemgetter(0)))
        previous = _train(executor, parts, rows, seconds(at), previous)
        blob = dumps(previous)
        executor.call("use_models", [(blob, at)] * parts)
    results: list[PartitionResult] = [loads(blob) for blob in executor.call("finish", [()] * parts)]
    report = Report(program)
    for result in results:
        report.absorb(result.report)
    if sends is not None:
        merge_sends([executor.sends_file(i, r.sends) for i, r in enumerate(results) if r.sends], sends)
    lines = None
    if trace is not None:
        lines = results[traced].trace if traced is not None else []
    return PartitionedRun(report, lines, sum(r.messages for r in results), [r.cpu for r in results])


def _train(executor: Executor, parts: int, rows: list[Any], as_of: int, previous: ModelSet) -> ModelSet:
    """`modelset.train` over `rows` (in user order), its families fitted on the partitions."""
    groups = shares(parts)
    blob = dumps(rows)
    fitted: dict[str, Any] = {}
    for answer in executor.call("fit", [(blob, as_of, names) for names in groups]):
        fitted.update(loads(answer))
    return assemble(rows, as_of, fitted, previous)
