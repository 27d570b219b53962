"""Partitions in processes of this machine, one each, driven through pipes.

Processes are forked when this process runs no other thread (the command starts its partitions
before its progress bar's thread): they inherit the modules and the program already loaded, which
costs ~2.5 s of CPU per partition when a fresh interpreter imports and loads them again. Otherwise
they are spawned (a fork would copy other threads' locks in the middle of what they hold), and
load the project while the coordinator is still indexing the log, so that cost overlaps. A call goes to
every partition at once and returns when all have answered; meanwhile their progress counts come
in on the same pipes. The first error ends the run: a user's mistake found by a partition (a log
changed since it was indexed: `LogError`) comes back as itself, anything else as
`PartitionFailed` with the partition's traceback, and a process that dies is reported with its
exit code, never waited for.
"""

from __future__ import annotations

import importlib
import multiprocessing
import threading
import traceback
from multiprocessing.connection import Connection, wait
from typing import Any, Callable

from ..eventlog import LogError
from ...core.program import Program
from .partition import MODEL_MODULES, Partition, PartitionFailed, PartitionSpec

_STOP = "stop"


class LocalExecutor:
    """`program`: the one this process built from the spec, which forked partitions share."""

    def __init__(self, progress: Callable[[int], None] | None = None, program: Program | None = None):
        self.progress = progress
        self.program = program
        self._conns: list[Connection] = []
        self._procs: list[Any] = []
        self._done: list[int] = []

    def start(self, spec: PartitionSpec, parts: int) -> None:
        fork = threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods()
        context = multiprocessing.get_context("fork" if fork else "spawn")
        program = self.program if fork else None
        if program is not None and program.features_on:
            for module in MODEL_MODULES:  # the coordinator trains with them: imported once, for everyone
                importlib.import_module(module)
        for i in range(parts):
            ours, theirs = context.Pipe()
            process = context.Process(target=_serve, args=(theirs, spec, program), name=f"journeys-partition-{i + 1}",
                                      daemon=True)
            process.start()
            theirs.close()
            self._conns.append(ours)
            self._procs.append(process)
        self._done = [0] * parts

    def call(self, method: str, args: list[tuple[Any, ...]]) -> list[Any]:
        """`method(*args[i])` on partition i < len(args), all at once; the results in order."""
        conns = self._conns[:len(args)]
        for conn, arguments in zip(conns, args):
            conn.send((method, arguments))
        results: list[Any] = [None] * len(conns)
        pending = {conn: i for i, conn in enumerate(conns)}
        while pending:
            for conn in wait(list(pending)):
                i = pending[conn]
                try:
                    kind, value = conn.recv()
                except (EOFError, OSError):
                    self._procs[i].join(1)
                    raise PartitionFailed(f"partition {i + 1} of {len(self._conns)}: its process ended "
                                          f"(exit code {self._procs[i].exitcode})") from None
                if kind == "progress":
                    self._done[i] = value
                    if self.progress is not None:
                        self.progress(sum(self._done))
                elif kind == "ok":
                    results[i] = value
                    del pending[conn]
                else:
                    raise value
        return results

    def sends_file(self, index: int, path: str) -> str:
        """A partition's sends file, readable here: on this machine, where it is."""
        return path

    def close(self) -> None:
        """Stop the processes: asked to (they remove their files), then made to."""
        for conn in self._conns:
            try:
                conn.send((_STOP, ()))
            except OSError:
                pass
        for process in self._procs:
            process.join(5)
            if process.is_alive():
                process.terminate()
                process.join()
        for conn in self._conns:
            conn.close()
        self._conns, self._procs = [], []


def _serve(conn: Connection, spec: PartitionSpec, program: Program | None) -> None:
    """A partition's process: build it, then answer calls until told to stop."""
    partition: Partition | None = None
    failure: BaseException | None = None
    try:
        partition = Partition(spec, progress=lambda n: conn.send(("progress", n)), program=program)
    except BaseException as exc:  # noqa: BLE001 - told at the first call, which waits for an answer
        failure = exc
    while True:
        try:
            method, args = conn.recv()
        except (EOFError, OSError, KeyboardInterrupt):
            method, args = _STOP, ()
        if method == _STOP:
            if partition is not None:
                partition.close()
            return
        try:
            if failure is not None:
                raise failure
            result = getattr(partition, method)(*args)
        except BaseException as exc:  # noqa: BLE001 - the coordinator decides
            conn.send(("error", portable_error(exc)))
            continue
        conn.send(("ok", result))


def portable_error(exc: BaseException) -> BaseException:
    """An error as the coordinator can receive it: a user's (`LogError`, `ValueError` naming what
    is wrong) as itself, anything else as `PartitionFailed` with its traceback."""
    if isinstance(exc, LogError):
        return exc
    text = "".join(traceback.format_exception(exc)).rstrip()
    return PartitionFailed(f"a partition failed: {type(exc).__name__}: {exc}\n{text}")
