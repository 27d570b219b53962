"""A journey's version id: 12 hex digits of sha256 over a canonical serialisation of its meaning.

Users stay on the version they entered, so the id must change with every change of meaning and
with nothing else. What is hashed:

- the journey's tree, field by field (`dataclasses.fields`, never `repr`), without spans: layout,
  comments and redundant parentheses are not in the tree, so they cannot change the id;
- the trees of the segments it references, transitively, sorted by name: editing a segment's
  condition changes what the journey does, so it changes the version (a missing segment hashes as
  missing, so defining it later changes the version too).

Values are tagged with their type, so `1`, `1.0`, `true` and `"1"` never collide; floats use
`repr` (the shortest text that round-trips); durations hash as seconds (`60m` and `1h` mean the
same); whether a split share was written with `%` is spelling, not meaning; a field added to the
tree later is left out while it holds the value that means "as before" (a send without
`at best time`, a cap rule that is not `auto`). The project policy
(caps, quiet hours) is not part of a journey's version.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Iterable, Mapping

from . import ast as A
from .needs import SegmentIndex, segment_closure, segment_references

FORMAT = "journeys.version/1"  # bump when the compiler's meaning of the same tree changes
_SPELLING_ONLY = {(A.SplitArm, "has_percent_sign")}
# Fields added to the tree after journeys were already running: at these values they mean what the
# tree meant before the field existed, so they are left out and no running journey changes version.
_LATER_DEFAULTS = {(A.Send, "best_time"): None, (A.CapRule, "auto"): False, (A.CapRule, "bounds"): ()}


def canonical(value: Any) -> Any:
    """A JSON-ready, type-tagged form of an AST value; equal meaning ⇔ equal form."""
    if isinstance(value, A.Duration) and value.unit in A.Duration.UNITS:
        return {"Duration": {"seconds": ["int", value.seconds]}}
    if isinstance(value, A.Node):
        body = {}
        for name in A.child_fields(type(value)):
            if (type(value), name) in _SPELLING_ONLY:
                continue
            field_value = getattr(value, name)
            key = (type(value), name)
            if key in _LATER_DEFAULTS and field_value == _LATER_DEFAULTS[key]:
                continue
            body[name] = canonical(field_value)
        return {type(value).__name__: body}
    if value is None:
        return None
    if isinstance(value, bool):
        return ["bool", value]
    if isinstance(value, int):
        return ["int", str(value)]  # as text: JSON numbers lose precision in other readers
    if isinstance(value, float):
        return ["float", repr(value)]
    if isinstance(value, str):
        return ["str", value]
    if isinstance(value, (tuple, list)):
        return [canonical(v) for v in value]
    raise TypeError(f"cannot serialise {type(value).__name__} in a journey tree")


def _digest(payload: Any) -> str:
    text = json.dumps(payload, sort_keys=True, ensure_ascii=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:12]


def journey_version(journey: A.Journey, segments: Mapping[str, A.Segment], *,
                    named: Iterable[str] | None = None) -> str:
    """The version id of `journey`, given every segment of the project by name; `named`: the
    segments the journey names itself, when the caller has already walked it to find them."""
    names = segment_closure(segment_references(journey) if named is None else named, segments)
    return _digest({"format": FORMAT, "journey": canonical(journey), "segments": _used(names, segments)})


def segment_version(segment: A.Segment, segments: Mapping[str, A.Segment]) -> str:
    """The same, for a segment (with the segments it references)."""
    names = segment_closure(segment_references(segment.condition), segments)
    return _digest({"format": FORMAT, "segment": canonical(segment), "segments": _used(names, segments)})


def _used(names: Iterable[str], segments: Mapping[str, A.Segment]) -> list:
    """The canonical forms of the segments `names` (each computed once per `SegmentIndex`)."""
    index = SegmentIndex.of(segments)
    return [[name, index.memo("canonical", name, canonical) if name in index else "missing"] for name in names]
