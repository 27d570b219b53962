"""Which history a journey or segment needs, so the engine keeps only that.

A user's history is unbounded; what conditions can read is not. For every event name:

- `windows[name]`: the longest `last D` any lookup uses; older events of that name never count.
- `latest`: `last(event E)` / `days_since(event E)` read only the most recent event of that name,
  so it must be kept however old it is (a `where` filter makes this `ever`: the latest *matching*
  event may be older than the latest one). `days_since(event E where C)` is in both: `ever` for
  what is kept, `latest` to say that its value changes with time alone (the engine evaluates a
  segment with any `latest` or window after every event).
- `ever`: lookups without any window over all of time (`happened(event E)` with no window, an
  `entry when first event E`, and unbounded lookups with a `where` filter): keep them all.
- `live`: events matched as they arrive (entry, exit, goal, wait for): the engine routes them to
  the journey; they need no history of their own.
- `predictions`: the (model, horizon seconds) pairs that `predicted MODEL in HORIZON` reads: the
  engine trains and scores those models (they read no stored event of their own here).
- `properties[name]`: the properties of kept events that conditions can read (`where` filters,
  the property of `sum`/`avg`, `last(event E).category`), so the engine keeps those and drops the
  rest; None when a condition takes a whole event (`with { p: last(event E) }`): keep them all.
  A name kept without an entry here needs no property at all (`count(event E, last 7d)`).

Needs combine with `|` (union: longest window, union of sets); a journey's needs include those of
the segments it references, transitively.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Mapping

from . import ast as A
from .functions import EVENT_FIELDS, FUNCTIONS


@dataclass(frozen=True)
class HistoryNeeds:
    windows: Mapping[str, int] = field(default_factory=dict)
    latest: frozenset[str] = frozenset()
    ever: frozenset[str] = frozenset()
    live: frozenset[str] = frozenset()
    properties: Mapping[str, frozenset[str] | None] = field(default_factory=dict)
    predictions: frozenset[tuple[str, int]] = frozenset()

    def __or__(self, other: "HistoryNeeds") -> "HistoryNeeds":
        windows = dict(self.windows)
        for name, seconds in other.windows.items():
            windows[name] = max(seconds, windows.get(name, 0))
        return HistoryNeeds(dict(sorted(windows.items())), self.latest | other.latest, self.ever | other.ever,
                            self.live | other.live, _merge_properties(self.properties, other.properties),
                            self.predictions | other.predictions)

    def kept_properties(self, name: str) -> frozenset[str] | None:
        """The properties to keep on a stored event of `name`; None: all of them."""
        return self.properties[name] if name in self.properties else frozenset()

    @classmethod
    def union(cls, needs: Iterable["HistoryNeeds"]) -> "HistoryNeeds":
        out = cls()
        for n in needs:
            out = out | n
        return out

    @property
    def events(self) -> frozenset[str]:
        """Every event name this needs in any way."""
        return frozenset(self.windows) | self.latest | self.ever | self.live

    def retention(self, name: str) -> int | None:
        """How long to keep every event of `name`, in seconds; None: forever (`ever`). 0 when no
        window needs it (the engine may still keep the latest one, see `latest`)."""
        if name in self.ever:
            return None
        return self.windows.get(name, 0)


def expression_needs(node: A.Node) -> HistoryNeeds:
    """The history read by the history calls anywhere below `node` (where-filters included)."""
    return history_read_by(node.walk())


def history_read_by(nodes: Iterable[A.Node]) -> HistoryNeeds:
    """The history read by the history calls among `nodes` (a walk the caller has already made,
    parents before children, as `Node.walk` gives them)."""
    windows: dict[str, int] = {}
    latest: set[str] = set()
    ever: set[str] = set()
    properties: dict[str, frozenset[str] | None] = {}
    attribute_of: dict[int, str] = {}  # id of a call whose result is read with `.name` → name
    predictions: set[tuple[str, int]] = set()
    for n in nodes:
        if isinstance(n, A.Predicted):
            predictions.add((n.model.value, n.horizon.seconds))
            continue
        if isinstance(n, A.Attr) and isinstance(n.obj, A.Call):
            attribute_of[id(n.obj)] = n.name
            continue
        if not isinstance(n, A.Call):
            continue
        sig = FUNCTIONS.get(n.func)
        if sig is None or not sig.history:
            continue
        match = next((a for a in n.args if isinstance(a, A.EventMatch)), None)
        if match is None:
            continue
        name = match.event.value
        window = next((a for a in n.args if isinstance(a, A.Window)), None)
        if window is not None:
            windows[name] = max(window.duration.seconds, windows.get(name, 0))
        elif n.func in ("last", "days_since") and match.where is None:
            latest.add(name)
        else:
            ever.add(name)
            if n.func == "days_since":  # what it says changes with time alone: see `latest`
                latest.add(name)
        read = set(match_properties(match))
        if n.func in ("sum", "avg"):
            prop = next((a for a in n.args[1:] if not isinstance(a, (A.EventMatch, A.Window))), None)
            if prop is not None:
                read |= _names_in(prop)
        if n.func == "last":
            if id(n) not in attribute_of:  # the whole event goes somewhere: every property may be read
                properties[name] = None
                continue
            read.add(attribute_of[id(n)])
        properties = _merge_properties(properties, {name: frozenset(read)})
    return HistoryNeeds(dict(sorted(windows.items())), frozenset(latest), frozenset(ever),
                        properties=properties, predictions=frozenset(predictions))


def match_properties(match: A.EventMatch) -> frozenset[str]:
    """The properties an event match's `where` reads (bare names, special fields excepted)."""
    return frozenset(_names_in(match.where)) if match.where is not None else frozenset()


def _names_in(node: A.Node) -> set[str]:
    if isinstance(node, A.Literal) and isinstance(node.value, str):
        return {node.value}  # `sum(event E, "price", ...)`
    return {n.name for n in node.walk() if isinstance(n, A.Name) and n.name not in EVENT_FIELDS}


def _merge_properties(a: Mapping[str, frozenset[str] | None], b: Mapping[str, frozenset[str] | None]
                      ) -> dict[str, frozenset[str] | None]:
    out = dict(a)
    for name, props in b.items():
        if name in out:
            mine = out[name]
            out[name] = None if mine is None or props is None else mine | props
        else:
            out[name] = props
    return dict(sorted(out.items()))


def segment_references(node: A.Node) -> set[str]:
    """Segments named directly below `node`: `user in segment`, segment entries/exits, `for segment`."""
    return segments_named_in(node.walk())


def segments_named_in(nodes: Iterable[A.Node]) -> set[str]:
    """Segments named by `nodes` themselves (a walk the caller has already made)."""
    names: set[str] = set()
    for n in nodes:
        if isinstance(n, A.InSegment):
            names.add(n.segment.value)
        elif isinstance(n, (A.EntrySegment, A.ExitSegment)):
            names.add(n.segment.value)
        elif isinstance(n, A.EntrySchedule) and n.segment is not None:
            names.add(n.segment.value)
    return names


class SegmentIndex(Mapping[str, A.Segment]):
    """The project's segments by name, with what is derived from each computed once.

    Every journey asks for the segments it references, transitively, their history needs and
    (for its version id) their canonical form; a project has far more journeys than segments, so
    walking each segment's condition once per project instead of once per journey matters.
    """

    def __init__(self, segments: Mapping[str, A.Segment]):
        self._segments = segments
        self._memo: dict[tuple[str, str], Any] = {}

    @classmethod
    def of(cls, segments: Mapping[str, A.Segment]) -> "SegmentIndex":
        return segments if isinstance(segments, SegmentIndex) else cls(segments)

    def __getitem__(self, name: str) -> A.Segment:
        return self._segments[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._segments)

    def __len__(self) -> int:
        return len(self._segments)

    def memo(self, kind: str, name: str, compute: Callable[[A.Segment], Any]) -> Any:
        """`compute(segment)` for the segment `name`, computed once per kind of derived value."""
        key = (kind, name)
        try:
            return self._memo[key]
        except KeyError:
            value = self._memo[key] = compute(self._segments[name])
            return value

    def references(self, name: str) -> set[str]:
        return self.memo("references", name, lambda seg: segment_references(seg.condition))

    def needs(self, name: str) -> HistoryNeeds:
        return self.memo("needs", name, lambda seg: expression_needs(seg.condition))


def segment_closure(roots: Iterable[str], segments: Mapping[str, A.Segment]) -> list[str]:
    """All segments reachable from `roots` (the roots included), sorted; cycles are fine.
    Names with no definition are included too: the caller decides what a missing one means."""
    index = SegmentIndex.of(segments)
    seen: set[str] = set()
    todo = list(roots)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in index:
            todo.extend(index.references(name) - seen)
    return sorted(seen)


def live_needs(names: Iterable[str]) -> HistoryNeeds:
    return HistoryNeeds(live=frozenset(names))
