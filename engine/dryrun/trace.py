"""`journeys simulate --trace USER`: one user's timeline, told in the order it happened.

A sink that keeps the effects about one person: the id asked for, and the profile it joins when
identities are stitched (an anonymous visitor's trace carries on under their user id). Every
event, entry (and refused entry, with the reason), step, wait, branch taken and why, send,
suppression and conversion appears; `lines()` renders them for the terminal.
"""

from __future__ import annotations

from typing import Sequence

from ..core.effects import Effect, Received, format_effect


class Trace:
    def __init__(self, user: str):
        self.user = user
        self.ids = {user}
        self.effects: list[Effect] = []

    def emit(self, effects: Sequence[Effect]) -> None:
        for e in effects:
            if isinstance(e, Received) and e.kind in ("merge", "alias") and e.name in self.ids:
                self.ids.add(e.user)
            if e.user in self.ids:
                self.effects.append(e)

    def lines(self) -> list[str]:
        return [format_effect(e) for e in self.effects]
