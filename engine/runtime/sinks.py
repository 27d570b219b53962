"""Where effects go. A sink has one method, `emit(effects)`.

The dry-run's sinks record and report; the daemon's delivers actions through connectors (issue
of the connectors) and logs the rest. A sink whose class says `reads_reasons = False` never reads
why an entry was refused (a `not_entered` Transition's `detail`): when no sink of a run reads
them, the engine does not build them (`reads_reasons`; a sink that does not say reads them). `Recorder` is shipped for tests and the dry-run, like a mock
transport ships with an HTTP client.
"""

from __future__ import annotations

from typing import Protocol, Sequence

from ..core.effects import Action, Effect


class Sink(Protocol):
    def emit(self, effects: Sequence[Effect]) -> None: ...


def reads_reasons(sink: object) -> bool:
    """Does `sink` read refused entries' reasons? Yes unless it says otherwise."""
    return bool(getattr(sink, "reads_reasons", True))


class Discard:
    """Keeps nothing: for runs that want the users' states, not the effects (`journeys score`,
    `journeys models`)."""

    reads_reasons = False

    def emit(self, effects: Sequence[Effect]) -> None:
        pass


class Recorder:
    """Keeps every effect in order, for tests and the dry-run's traces."""

    def __init__(self) -> None:
        self.effects: list[Effect] = []

    def emit(self, effects: Sequence[Effect]) -> None:
        self.effects.extend(effects)

    @property
    def actions(self) -> list[Action]:
        return [e for e in self.effects if isinstance(e, Action)]


class FanOut:
    """One sink made of several: every effect goes to each, in order."""

    def __init__(self, *sinks: Sink):
        self.sinks = sinks

    @property
    def reads_reasons(self) -> bool:
        return any(reads_reasons(s) for s in self.sinks)

    def emit(self, effects: Sequence[Effect]) -> None:
        for sink in self.sinks:
            sink.emit(effects)
