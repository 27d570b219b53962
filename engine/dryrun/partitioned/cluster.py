"""Partitions as actors on a Dask cluster (`journeys simulate --executor dask://host:8786`).

Each partition is a `Partition` created on a worker as an actor (`client.submit(..., actor=True)`),
so its engine's state stays there between the training barriers; the coordinator calls the same
methods the local executor calls through pipes. Partitions go round the workers in address order.
The workers read the log files at the paths the coordinator was given (a shared filesystem, the
same path everywhere; `Partition.open` says which worker cannot), and load the project from its
path likewise. The sends files stay on the workers until the coordinator copies them here, a
piece at a time, to merge them. Needs the `cluster` extra (`pip install 'journeys[cluster]'`).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from ..eventlog import LogError
from .partition import Partition, PartitionFailed, PartitionSpec

_PIECE = 1 << 22  # bytes of a sends file per call
_POLL = 0.25  # seconds between progress readings


class ExecutorError(ValueError):
    """The cluster cannot be used: the extra is missing, or the scheduler cannot be reached."""


def scheduler_address(url: str) -> str:
    """`dask://host:8786` as Dask writes it (`tcp://host:8786`); other Dask schemes pass as they are."""
    if url.startswith("dask://"):
        return "tcp://" + url[len("dask://"):]
    return url


class DaskExecutor:
    def __init__(self, url: str, progress: Callable[[int], None] | None = None):
        try:
            from distributed import Client
        except ImportError:
            raise ExecutorError("a Dask cluster needs the cluster extra: pip install 'journeys[cluster]'") from None
        try:
            self.client = Client(scheduler_address(url), timeout="10s")
        except (OSError, TimeoutError) as exc:
            raise ExecutorError(f"cannot reach the Dask scheduler at {url} ({exc})") from None
        self.progress = progress
        self._actors: list[Any] = []
        self._spool = tempfile.TemporaryDirectory(prefix="journeys-sends-")

    def slots(self) -> int:
        """The cluster's worker threads: the default number of partitions."""
        workers = self.client.scheduler_info(n_workers=-1)["workers"]
        return max(1, sum(w.get("nthreads", 1) for w in workers.values()))

    def start(self, spec: PartitionSpec, parts: int) -> None:
        workers = sorted(self.client.scheduler_info(n_workers=-1)["workers"])
        if not workers:
            raise ExecutorError("the Dask cluster has no workers")
        futures = [self.client.submit(Partition, spec, actor=True, pure=False, workers=[workers[i % len(workers)]])
                   for i in range(parts)]
        self._actors = [self._result(i, f) for i, f in enumerate(futures)]

    def call(self, method: str, args: list[tuple[Any, ...]]) -> list[Any]:
        """`method(*args[i])` on partition i < len(args), all at once; the results in order."""
        futures = [getattr(actor, method)(*arguments) for actor, arguments in zip(self._actors, args)]
        while not all(f.done() for f in futures):
            time.sleep(_POLL)
            if self.progress is not None:
                self.progress(sum(actor.done for actor in self._actors))
        return [self._result(i, f) for i, f in enumerate(futures)]

    def sends_file(self, index: int, path: str) -> str:
        """Copy partition `index`'s sends file here, a piece at a time."""
        local = Path(self._spool.name) / f"sends-{index}.jsonl"
        actor, offset = self._actors[index], 0
        with open(local, "wb") as out:
            while piece := actor.read_sends(offset, _PIECE).result():
                out.write(piece)
                offset += len(piece)
        return str(local)

    def close(self) -> None:
        for actor in self._actors:
            try:
                actor.close().result()
            except Exception:  # noqa: BLE001 - a worker already gone has nothing left to remove
                pass
        self._actors = []
        self.client.close()
        self._spool.cleanup()

    def _result(self, index: int, future: Any) -> Any:
        """A call's result; a user's error (a log that cannot be read) as itself, a lost worker or
        a bug as `PartitionFailed`."""
        try:
            return future.result()
        except LogError:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever Dask or the partition raised
            raise PartitionFailed(f"partition {index + 1} of {len(self._actors) or '?'}: "
                                  f"{type(exc).__name__}: {exc}") from exc
