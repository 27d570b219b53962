"""One partition of a partitioned dry-run: some users' messages through an engine of their own.

The same object runs in a process of this machine (engine.dryrun.partitioned.local) and as an
actor on a Dask worker (engine.dryrun.partitioned.cluster); its small interface is all either
transport carries:

- `Partition(spec)`: loads and checks the project (a program holds closures: it is built where
  it runs, from the same files), while the coordinator still indexes the log;
- `open(log, run, trace)`: its part of the log (a `SortedLog` view: it reads only its own lines
  again, from the same paths, so a cluster needs them on a shared filesystem) and the run's
  bounds;
- `run_until(at)`: runs everything before the training moment `at` and returns its users'
  training rows as of `at` (bytes);
- `use_models(models, at)`: the version the coordinator trained on everyone's rows, scored with
  from `at` on, where the single run's engine would have trained it;
- `finish()`: runs to the end and returns its report, trace and where its sends file is (bytes);
- `read_sends(offset, size)`: that file, a piece at a time (a cluster's partition is elsewhere);
- `done`: messages handled so far, for the progress bar.

Everything a partition's engine does depends on its users only, except the models: the engine
starts its clock at the whole log's first message (its trainings and schedules count from there),
runs to the whole run's end, and takes each version from the coordinator (`Engine(trainer=...)`).
"""

from __future__ import annotations

import importlib
import os
import socket
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable, Iterator

from ...core.messages import Message
from ...core.program import Program
from ...models.modelset import ModelSet, fit_families
from ...runtime.loop import handle_all
from ...store.base import MemoryStore
from ..eventlog import LogError, SortedLog
from ..report import Report
from ..simulate import SendsWriter, _states, collector_kept_out, dry_run_engine, load_program
from ..trace import Trace
from .portable import dumps, loads

MODEL_MODULES = ("sklearn.ensemble", "sklearn.linear_model")  # what a trained ModelSet unpickles into
_TICK = timedelta(microseconds=1)  # the datetimes' resolution: "before `at`" is "at or before `at` - 1 µs"


class PartitionFailed(RuntimeError):
    """A partition stopped on something that is not the user's doing (a bug, a lost process or
    worker): the message says which partition, and carries its traceback when there is one."""


@dataclass(frozen=True)
class PartitionSpec:
    """The program every partition of a run loads."""

    project: str
    journeys: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunBounds:
    """What every partition of a run shares once the log is indexed."""

    start: datetime  # the whole log's first message
    end: datetime  # the run's end: timers due by then fire
    sends: bool  # write a sends file


@dataclass
class PartitionResult:
    report: Report
    trace: list[str] | None
    sends: str | None  # the path of its sends file, on the machine it ran on
    messages: int
    cpu: float  # CPU seconds of its process (benchmarks/simulate.py: the run's critical path)


class Partition:
    def __init__(self, spec: PartitionSpec, progress: Callable[[int], None] | None = None,
                 program: Program | None = None):
        """`program`: the spec's, when a forked process already has it."""
        self.spec = spec
        self.program = program if program is not None else load_program(spec.project, list(spec.journeys) or None)
        if self.program.features_on:  # what the models are made of, imported now (while the coordinator
            for module in MODEL_MODULES:  # indexes the log), not when the first version arrives
                importlib.import_module(module)
        self.done = 0
        self._base = 0
        self._progress = progress
        self._models: tuple[datetime, ModelSet] | None = None

    def open(self, log: SortedLog, run: RunBounds, trace: str | None = None) -> None:
        """Take this part of the log; `trace`: the user to trace, given to the partition holding
        them only (a trace has the engine say why entries are refused, which costs)."""
        for path in log.paths:
            try:
                os.close(os.open(path, os.O_RDONLY))
            except OSError as exc:
                raise LogError(path, 0, "file", f"cannot open on {socket.gethostname()} ({exc.strerror or exc}); "
                                                "every worker reads the logs at the same paths") from None
        self._log = log
        self._run = run
        self._messages: Iterator[Message] = iter(log)
        self._next: Message | None = None
        self._sends: str | None = None
        sinks: list[Any] = []
        if run.sends:
            fd, self._sends = tempfile.mkstemp(prefix="journeys-sends-", suffix=".jsonl")
            os.close(fd)
            self._writer = SendsWriter(self._sends)
            sinks.append(self._writer)
        self._trace = Trace(trace) if trace else None
        if self._trace is not None:
            sinks.append(self._trace)
        self._store = MemoryStore(keep_actions=False)
        self._engine, self._report = dry_run_engine(self.program, self._store, sinks, Path(self.spec.project),
                                                    run.start, trainer=self._trained)

    def run_until(self, at: datetime) -> bytes:
        """Everything due before `at` (messages, timers, schedules), then the training rows."""
        engine = self._engine
        self._base = self.done
        with collector_kept_out():
            handle_all(engine, self._before(at), None, self._count)
            with engine.store.transaction():
                engine.run_due(at - _TICK)
            return dumps(engine.training_rows(at))

    def use_models(self, models: bytes, at: datetime) -> None:
        self._models = (at, loads(models))

    def fit(self, rows: bytes, as_of: int, names: list[str]) -> bytes:
        """Fit the model families `names` on everyone's training rows (the coordinator's merge):
        while the partitions wait for a training, they fit its families between them."""
        return dumps(fit_families(loads(rows), as_of, names))

    def finish(self) -> bytes:
        self._base = self.done
        with collector_kept_out():
            handle_all(self._engine, self._before(None), self._run.end, self._count)
        self._report.finish(_states(self._store))
        self._log.close()
        if self._run.sends:
            self._writer.close()
        trace = self._trace.lines() if self._trace is not None else None
        return dumps(PartitionResult(self._report, trace, self._sends, self.done, time.process_time()))

    def read_sends(self, offset: int, size: int) -> bytes:
        assert self._sends is not None
        with open(self._sends, "rb") as f:
            f.seek(offset)
            return f.read(size)

    def close(self) -> None:
        """Remove the sends file (once the coordinator has it)."""
        if self._sends is not None:
            Path(self._sends).unlink(missing_ok=True)
            self._sends = None

    def _trained(self, at: datetime) -> ModelSet:
        """The engine's trainer: the version the coordinator trained for `at`."""
        if self._models is None or self._models[0] != at:
            raise RuntimeError(f"partition: no models for the training at {at}")
        return self._models[1]

    def _before(self, at: datetime | None) -> Iterator[Message]:
        """The messages not yet taken whose time is before `at` (all of them for None)."""
        if self._next is not None:
            if at is not None and self._next.timestamp >= at:
                return
            yield self._next
            self._next = None
        for message in self._messages:
            if at is not None and message.timestamp >= at:
                self._next = message
                return
            yield message

    def _count(self, handled: int) -> None:
        """`handle_all` counts from 0 at each call: the partition's total goes on."""
        if handled:
            self.done = self._base + handled
        if self._progress is not None:
            self._progress(self.done)
