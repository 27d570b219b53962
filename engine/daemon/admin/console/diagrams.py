"""A journey as the console shows it: the dry-run report's diagram (journeys.graph_svg) with live
notes on its boxes, and the figures of its header.

On each step's box: the users waiting there now (the store's `instances`, the admin API's
`journey_counts`), and what the step did in the last hour and day (the trail's tally: sent, or
updated for an audience, capped, suppressed, deferred); on the entry box, the users who entered.
The header adds conversions and the users in flight. Users in flight at a step the loaded version
does not have (an older version's) are listed under the diagram, never lost from the count.

The SVG depends only on the journey and its notes: the same figures draw the same bytes, so the
last drawing is kept per journey and reused while nothing changed (a console refreshes every 2 s).
"""

from __future__ import annotations

from typing import Any, Mapping

from journeys.graph import AudienceNode, CompiledJourney, SendNode, WaitForNode, WaitNode, WaitUntilNode, WebhookNode
from journeys.graph_svg import render_svg

WAITS = (WaitNode, WaitForNode, WaitUntilNode)
ACTIONS = (SendNode, AudienceNode, WebhookNode)
HELD = ("capped", "suppressed", "deferred", "failed")  # what else a step's action may have met
_drawn: dict[tuple[str, str, str], tuple[Any, str]] = {}  # (journey, version, uid) -> (notes, svg)


def windowed(windows: Mapping[str, Mapping[tuple[str, str], Mapping[str, int]]], journey: str, path: str,
             what: str) -> dict[str, int]:
    """{window: count} of `what` at (journey, step path; "" for the journey's own)."""
    return {w: counts.get((journey, path), {}).get(what, 0) for w, counts in windows.items()}


def _line(what: str, by_window: Mapping[str, int]) -> str:
    return f"{what} " + " · ".join(f"{w} {n:,}" for w, n in by_window.items())


def _total(windows: Mapping[str, Mapping[tuple[str, str], Mapping[str, int]]], journey: str,
           names: tuple[str, ...]) -> dict[str, int]:
    """{window: the count of any of `names` at any step of `journey`}."""
    return {w: sum(n for (j, _), by in counts.items() if j == journey for k, n in by.items() if k in names)
            for w, counts in windows.items()}


def notes(journey: CompiledJourney, waiting: Mapping[str, int],
          windows: Mapping[str, Mapping[tuple[str, str], Mapping[str, int]]]) -> dict[str, list[str]]:
    """The lines on each box (see the module's docstring)."""
    name = journey.name
    out = {"entry": [_line("entered", windowed(windows, name, "", "entered"))]}
    for path, node in journey.nodes.items():
        lines = []
        if isinstance(node, WAITS) or waiting.get(path):
            lines.append(f"now {waiting.get(path, 0):,}")
        if isinstance(node, ACTIONS):
            passed = "updated" if isinstance(node, AudienceNode) else "sent"
            lines.append(_line(passed, windowed(windows, name, path, passed)))
            for what in HELD:
                counts = windowed(windows, name, path, what)
                if any(counts.values()):
                    lines.append(_line(what, counts))
        out[path] = lines
    return out


def journey_view(name: str, journey: CompiledJourney | None, in_flight: Mapping[str, Any] | None,
                 windows: Mapping[str, Mapping[tuple[str, str], Mapping[str, int]]], uid: str,
                 complete: bool) -> dict[str, Any]:
    """What the template draws of one journey: its figures, its diagram (None for a journey no
    longer loaded), and the steps of other versions where users still are."""
    waiting: dict[str, int] = {}
    elsewhere: list[dict[str, Any]] = []
    for step in (in_flight or {}).get("steps", []):
        path = step["path"] or ""
        if journey is not None and path in journey.nodes and step["version"] == journey.version:
            waiting[path] = waiting.get(path, 0) + step["users"]
        else:
            elsewhere.append(step)
    svg = None
    if journey is not None:
        boxes = notes(journey, waiting, windows)
        key = (name, journey.version, uid)
        kept = _drawn.get(key)
        if kept is not None and kept[0] == boxes:
            svg = kept[1]
        else:
            svg = render_svg(journey, boxes, uid)
            _drawn[key] = (boxes, svg)
    return {
        "name": name, "version": journey.version if journey is not None else None,
        "entry": journey.entry.describe() if journey is not None else None,
        "in_flight": (in_flight or {}).get("in_flight", 0), "svg": svg, "elsewhere": elsewhere,
        "complete": complete,
        "figures": {"entered": windowed(windows, name, "", "entered"),
                    "sent": _total(windows, name, ("sent", "updated")),
                    "capped": _total(windows, name, ("capped",)),
                    "converted": windowed(windows, name, "", "converted")},
    }
