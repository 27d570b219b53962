"""The dry-run renders every message it would send, as the daemon's connectors will.

The engine decides that a message goes out; the daemon's delivery then renders its template
(`connectors.render`) from the action as the outbox keeps it and the user's traits, and a template
that reads a value the action does not carry fails that delivery. So that the dry-run's "sent"
means what the daemon will do, `RenderCheck` sits in front of the dry-run's sinks: each email,
push or SMS the engine sent is built into a Delivery the way the dispatcher builds it
(`connectors.base.delivery_of`), with the user's traits as the store holds them right after the
step, and rendered with the same functions, template store and recipient check. One that fails
reaches the report, the sends file and the trace as a `failed` action, with the error as its
`reason`; the engine's own record of actions (what `journeys replay` compares) is not touched.

What it cannot know is the daemon's environment: the unsubscribe link is rendered with a stand-in
URL (the link itself is `journeys check --env`'s to check), and a provider's own refusals happen
only at delivery.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from connectors.base import delivery_of
from connectors.errors import DeliveryError
from connectors.render import TemplateStore, recipient, render_email, render_push, render_sms

from ..core.effects import FAILED, SENT, Action, Effect
from ..runtime.sinks import Sink, reads_reasons

STAND_IN_UNSUBSCRIBE = "https://journeys.invalid/u/dry-run"


class RenderCheck:
    """A sink around another: failed renders become `failed` actions before `inner` sees them."""

    def __init__(self, inner: Sink, root: Path, profile: Callable[[str], Mapping[str, Any]]):
        self.inner, self.profile = inner, profile
        self.templates = TemplateStore(Path(root))

    @property
    def reads_reasons(self) -> bool:
        return reads_reasons(self.inner)

    def emit(self, effects: Sequence[Effect]) -> None:
        out: list[Effect] | None = None
        for i, e in enumerate(effects):
            if isinstance(e, Action) and e.outcome == SENT and e.kind in ("email", "push", "sms"):
                error = self.error(e)
                if error is not None:
                    if out is None:
                        out = list(effects)
                    out[i] = replace(e, outcome=FAILED, reason=error, rule=None)
        self.inner.emit(effects if out is None else out)

    def error(self, action: Action) -> str | None:
        """Why the daemon could not deliver this message, or None when it renders."""
        delivery = delivery_of(action.to_json(), self.profile(action.user))
        try:
            template = self.templates.get(action.kind, action.target)
            if action.kind == "email":
                recipient(delivery)
                render_email(template, delivery, unsubscribe_url=STAND_IN_UNSUBSCRIBE)
            elif action.kind == "push":
                render_push(template, delivery)
            else:
                render_sms(template, delivery)
        except DeliveryError as e:  # said of "the user": the action names them, and reports group by reason
            return str(e).replace(f"user {action.user}'s", "the user's").replace(f"user {action.user}", "the user")
        return None


def store_traits(store: Any) -> Callable[[str], Mapping[str, Any]]:
    """The traits a store holds for a user (what the dispatcher reads at delivery)."""

    def traits(uid: str) -> Mapping[str, Any]:
        state = store.load(uid)
        return state.traits if state is not None else {}

    return traits
