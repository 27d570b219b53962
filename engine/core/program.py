"""The compiled project as the engine runs it: current journeys, older versions, and indexes.

The indexes answer, per event name, which journeys could react (entries, exits, goals, waits),
so an event nobody listens to costs a dictionary lookup. Older versions stay reachable by
(journey, version) because a user finishes the version they entered (the daemon's hot reload adds
versions with `with_project`; the dry-run has one of each).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from types import MappingProxyType
from typing import Iterable, Mapping

from journeys.config import DEDUPE_DAYS, RETRAIN
from journeys.graph import CompiledJourney, CompiledPolicy, CompiledProject, CompiledSegment, WaitForNode
from journeys.needs import HistoryNeeds

from ..models.modelset import UNTRAINED, ModelSet

DEFAULT_PREDICTIONS = (("purchase", 30 * 86400), ("churn", 30 * 86400))


@dataclass(frozen=True)
class Program:
    journeys: Mapping[str, CompiledJourney]  # current version by name, in source order
    segments: Mapping[str, CompiledSegment]
    policy: CompiledPolicy
    needs: HistoryNeeds
    versions: Mapping[tuple[str, str], CompiledJourney] = field(default_factory=dict)
    # derived
    order: Mapping[str, int] = field(default_factory=dict)  # journey name → position
    entries_by_event: Mapping[str, tuple[CompiledJourney, ...]] = field(default_factory=dict)
    segment_entries: tuple[CompiledJourney, ...] = ()
    scheduled: tuple[CompiledJourney, ...] = ()
    watched_segments: tuple[str, ...] = ()  # segments whose changes enter or exit journeys
    cap_window: int = 0  # the longest cap window in seconds: how long sends are remembered
    kept_properties: Mapping[str, frozenset[str] | None] = field(default_factory=dict)  # see retention
    dedupe: timedelta = timedelta(days=DEDUPE_DAYS)  # a repeated messageId within this is dropped
    # predictions: users keep features only when something reads them (or a command asks, like
    # `journeys score`); `models` is the version in effect, swapped by the runtime on `retrain`
    features_on: bool = False
    models: ModelSet = UNTRAINED
    retrain: str = RETRAIN
    predictions: tuple[tuple[str, int], ...] = DEFAULT_PREDICTIONS  # (model, horizon s): templates' `predicted`

    @classmethod
    def build(cls, project: CompiledProject, older: Iterable[CompiledJourney] = (),
              only: Iterable[str] | None = None) -> "Program":
        """`only`: run just these journeys (by name), as `journeys simulate --journey` asks."""
        wanted = None if only is None else set(only)
        journeys = {n: j for n, j in project.journeys.items() if wanted is None or n in wanted}
        versions = {(j.name, j.version): j for j in older}
        versions.update({(j.name, j.version): j for j in journeys.values()})
        by_event: dict[str, list[CompiledJourney]] = {}
        watched: set[str] = set()
        for j in journeys.values():
            if j.entry.kind in ("event", "first_event") and j.entry.match is not None:
                by_event.setdefault(j.entry.match.event, []).append(j)
            if j.entry.kind == "segment" and j.entry.segment:
                watched.add(j.entry.segment)
        for j in versions.values():
            watched.update(j.exits.segments)
        caps = [c for c in project.policy.caps] + [c for j in versions.values() for c in j.caps]
        window = max((r.seconds for c in caps for r in c.rules), default=0)
        return cls(
            journeys=MappingProxyType(journeys),
            segments=project.segments,
            policy=project.policy,
            needs=project.needs,
            versions=MappingProxyType(versions),
            order=MappingProxyType({n: i for i, n in enumerate(journeys)}),
            entries_by_event=MappingProxyType({k: tuple(v) for k, v in by_event.items()}),
            segment_entries=tuple(j for j in journeys.values() if j.entry.kind == "segment"),
            scheduled=tuple(j for j in journeys.values() if j.entry.kind == "schedule"),
            watched_segments=tuple(sorted(watched)),
            cap_window=window,
            kept_properties=MappingProxyType({n: project.needs.kept_properties(n) for n in project.needs.events}),
            dedupe=timedelta(days=project.dedupe_days),
            features_on=project.uses_models,
            retrain=project.retrain,
            predictions=tuple(sorted(set(DEFAULT_PREDICTIONS) | set(project.predictions))),
        )

    def journey(self, name: str, version: str) -> CompiledJourney | None:
        return self.versions.get((name, version))

    def position(self, name: str) -> int:
        return self.order.get(name, len(self.order))

    def retention(self, event: str) -> tuple[bool, int | None, bool]:
        """(keep at all, seconds to keep or None for ever, keep the latest one regardless)."""
        needs = self.needs
        if event in needs.ever:
            return True, None, False
        window = needs.windows.get(event)
        latest = event in needs.latest
        if window is None and not latest:
            return False, 0, False
        return True, window or 0, latest


def wait_events(journey: CompiledJourney) -> frozenset[str]:
    return frozenset(n.match.event for n in journey.nodes.values() if isinstance(n, WaitForNode))
