"""Where effects go. A sink has one method, `emit(effects)`.

The dry-run's sinks record and report; the daemon's delivers actions through connectors (issue
of the connectors) and logs the rest. `Recorder` is shipped for tests and the dry-run, like a mock
transport ships with an HTTP client.
"""

from __future__ import annotations

from typing import Protocol, Sequence

from ..core.effects import Action, Effect


class Sink(Protocol):
    def emit(self, effects: Sequence[Effect]) -> None: ...


class Discard:
    """Keeps nothing: for runs that want the users' states, not the effects (`journeys score`,
    `journeys models`)."""

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

    def emit(self, effects: Sequence[Effect]) -> None:
        for sink in self.sinks:
            sink.emit(effects)
