"""Which messages must run in the same process: those whose ids are connected.

Two ids become one profile in the engine (engine.runtime.loop.Engine) when one message carries
both: an identify (or any call) with a userId and an anonymousId, an alias with a userId and a
previousId. A shared device (one anonymousId seen with two userIds) is never merged, but its
events move from one to the other, so its users are connected too. Two messages with the same
messageId are one message to the engine's deduplication, whoever sends them: connected as well.
Everything connected is a component; a component runs whole in one partition, so each partition's
engine sees exactly the profiles, merges and duplicates the single run sees for those users.

`Links.observe` sees every message of the index pass (engine.dryrun.eventlog.open_logs), keeping
per message the node of its first id and a 64-bit digest of its messageId; `Links.plan` then joins
the repeated messageIds (digests sorted with numpy: 8 bytes a message, no dictionary of a million
strings; two ids with the same digest only join two components, which costs balance, never
correctness) and hands the components to partitions, largest first to the least loaded (ties:
the lower partition; equal components: the one seen first), the same way for the same logs.
"""

from __future__ import annotations

import heapq
import zlib
from array import array
from dataclasses import dataclass

import numpy as np

from ...core.messages import Message
from ..eventlog import SortedLog


def _digest(message_id: str) -> int:
    """A stable 64-bit digest (the same in every process and run, unlike `hash`)."""
    data = message_id.encode("utf-8", "surrogatepass")
    return (zlib.crc32(data) << 31) ^ zlib.adler32(data)


@dataclass
class Plan:
    """The log split into `len(logs)` partitions, and who is where."""

    logs: list[SortedLog]
    messages: list[int]  # per partition
    components: int
    _node: dict[str, int]
    _part_of_node: np.ndarray

    def partition_of(self, user_id: str) -> int | None:
        """The partition holding this id's messages (`--trace`); None when no message names it."""
        node = self._node.get(user_id)
        return None if node is None else int(self._part_of_node[node])


class Links:
    """A union-find over every id the log's messages name, fed one message at a time."""

    def __init__(self) -> None:
        self._node: dict[str, int] = {}
        self._parent: list[int] = []
        self._first = array("q")  # per message: the node of its first id
        self._digests = array("q")  # per message: its messageId's digest

    def observe(self, message: Message) -> None:
        node, parent = self._node, self._parent
        first = -1
        for one in (message.user_id, message.anonymous_id, message.previous_id):
            if one is None:
                continue
            n = node.get(one)
            if n is None:
                n = node[one] = len(parent)
                parent.append(n)
            if first < 0:
                first = n
            else:
                self._union(first, n)
        self._first.append(first)
        self._digests.append(_digest(message.message_id))

    def _find(self, n: int) -> int:
        parent = self._parent
        while parent[n] != n:
            parent[n] = parent[parent[n]]  # path halving
            n = parent[n]
        return n

    def _union(self, a: int, b: int) -> None:
        a, b = self._find(a), self._find(b)
        if a != b:
            self._parent[max(a, b)] = min(a, b)  # the root is the component's first-seen id

    def plan(self, log: SortedLog, parts: int) -> Plan:
        """Split `log` (the one these messages were observed for) into at most `parts` partitions."""
        first = np.frombuffer(self._first, dtype=np.int64)
        self._join_repeated_message_ids(first)
        roots = np.fromiter((self._find(n) for n in range(len(self._parent))), dtype=np.int64,
                            count=len(self._parent))
        component = roots[first]  # per message
        sizes = np.bincount(component, minlength=len(self._parent))
        found = np.flatnonzero(sizes)
        parts = max(1, min(parts, len(found)))
        biggest_first = found[np.lexsort((found, -sizes[found]))]
        part_of_root = np.zeros(len(self._parent), dtype=np.int64)
        loads = [(0, p) for p in range(parts)]
        for root in biggest_first.tolist():
            load, p = heapq.heappop(loads)
            part_of_root[root] = p
            heapq.heappush(loads, (load + int(sizes[root]), p))
        label = part_of_root[component]
        labels, start = [], 0
        for count in log.file_counts:
            labels.append(label[start:start + count])
            start += count
        return Plan(log.split(labels, parts), np.bincount(label, minlength=parts).tolist(), len(found),
                    self._node, part_of_root[roots])

    def _join_repeated_message_ids(self, first: np.ndarray) -> None:
        digests = np.frombuffer(self._digests, dtype=np.int64)
        order = np.argsort(digests, kind="stable")
        ordered = digests[order]
        for i in np.flatnonzero(ordered[1:] == ordered[:-1]).tolist():
            self._union(int(first[order[i]]), int(first[order[i + 1]]))
