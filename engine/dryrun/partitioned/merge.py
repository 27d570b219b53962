"""The partitions' sends files as the one file a single process writes.

Each partition writes its actions in `SendsWriter`'s order (time, then user, then the user's own
order), and a user lives in one partition: a stable k-way merge on (time, user) of the files is
the single run's file, line for line. It streams (`heapq.merge`): one line per file in memory.
"""

from __future__ import annotations

import heapq
from contextlib import ExitStack
from pathlib import Path
from typing import Sequence

from ..simulate import sends_order


def merge_sends(paths: Sequence[str | Path], out: str | Path) -> None:
    with ExitStack() as files, open(out, "wb") as merged:
        streams = [files.enter_context(open(p, "rb")) for p in paths]
        merged.writelines(heapq.merge(*streams, key=sends_order))
