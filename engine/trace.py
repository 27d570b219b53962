"""`journeys simulate --trace USER`: one user's timeline, told in the order it happened.

A sink that keeps the effects about one person: the id asked for, and the profile it joins when
identities are stitched (an anonymous visitor's trace carries on under their user id). Every
event, entry (and refused entry, with the reason), step, wait, branch taken and why, send,
suppression and conversion appears; `lines()` renders them for the terminal.
"""

from __future__ import annotations

from typing import Sequence

from .effects import Action, Conversion, Effect, Received, TraitChange, Transition, iso


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


def format_effect(e: Effect) -> str:
    when = iso(e.time)
    if isinstance(e, Received):
        what = {"track": f"event {e.name}", "page": f"event {e.name}", "screen": f"event {e.name}",
                "identify": "profile update", "group": "group", "schedule": f"schedule of {e.name}",
                }.get(e.kind, e.kind)
        detail = f"  ({e.detail})" if e.detail else ""
        return f"{when}  {e.user}  {what}{detail}"
    if isinstance(e, Transition):
        where = f" {e.path}" if e.path else ""
        return f"{when}  {e.journey} #{e.entry}  {e.kind}{where}: {e.detail}"
    if isinstance(e, Action):
        extra = ""
        if e.reason:
            extra = f" by {e.reason}" + (f" ({e.rule})" if e.rule else "")
        if e.until is not None:
            extra += f" until {iso(e.until)}"
        return f"{when}  {e.journey} #{e.entry}  {e.kind} \"{e.target}\" {e.outcome}{extra}  [{e.path}, id {e.id}]"
    if isinstance(e, Conversion):
        return f"{when}  {e.journey} #{e.entry}  goal \"{e.goal}\" reached"
    if isinstance(e, TraitChange):
        by = f" by {e.path}" if e.path else ""
        return f"{when}  {e.user}  trait {e.trait} = {e.value!r}{by}"
    return f"{when}  {e!r}"  # pragma: no cover
