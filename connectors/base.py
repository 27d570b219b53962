"""One protocol for every channel: a connector delivers one action, or says why it could not.

The engine decides what to send (and consent, caps and quiet hours have already been applied by
`engine.core.delivery`); the outbox (`engine.store.outbox`) records the action before any attempt and retries
by the error tree of `connectors.errors`. A connector only turns a `Delivery` into the provider's
request: render, address, send, and map the provider's answer to a `Result` or an error.

`deliver` is synchronous and may block on the network (the dispatcher runs it in worker threads
with per-connector concurrency limits); connectors keep their HTTP or SMTP connections between
calls. A connector may also deliver as a coroutine, `deliver_async`, on the connectors' event loop
(`connectors.http`): the dispatcher then starts it there, with no thread per call in flight. Batching connectors (ad audiences) accept deliveries into a batch and send it in `flush`,
which the dispatcher calls on a schedule and when a batch is full.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Protocol, runtime_checkable

from .errors import ConfigurationError


@dataclass(frozen=True)
class Delivery:
    """What a connector receives: the action and everything needed to render and address it.

    - `action_id`: the deterministic id; the idempotency key where the provider takes one.
    - `kind`: email | push | sms | audience_add | audience_remove | webhook; `target`: the template,
      audience or webhook name; `user_id` and `profile` (traits: email, phone, push tokens...).
    - `data`: the evaluated `with {...}` values; `named`: the journey's `as` events (plain dicts);
      `event`: the event that started the run, if any; `current_event`: the event its step ran on,
      if any; `journey`, `step`: for logs and templates; `predictions`: the scores the engine
      took at the decision (templates' `recommended` and `predicted`), None without models.
    """

    action_id: str
    kind: str
    target: str
    user_id: str
    profile: Mapping[str, Any] = field(default_factory=dict)
    data: Mapping[str, Any] = field(default_factory=dict)
    named: Mapping[str, Any] = field(default_factory=dict)
    event: Mapping[str, Any] | None = None
    current_event: Mapping[str, Any] | None = None
    journey: str = ""
    step: str = ""
    predictions: Mapping[str, Any] | None = None  # `recommended` and `predicted`, scored at the decision


# `Delivery.data` key of the identifiers a forget-user removal carries (engine.daemon.erasure): a key no
# `with { ... }` value can have, since it is not a name of the language.
ERASED = "@erased"


def audience_profile(delivery: Delivery) -> Mapping[str, Any]:
    """The traits an audience connector matches on: the profile's, or, for the removal queued when
    a user is forgotten, the identifiers it carries (the profile is deleted by the time it runs)."""
    carried = delivery.data.get(ERASED)
    return carried if isinstance(carried, Mapping) else delivery.profile


@dataclass(frozen=True)
class Result:
    """A delivery the provider accepted. `provider_id`: its id for it (message id, job name);
    `detail`: anything worth keeping in the log; `queued`: taken into a batch not yet sent."""

    provider_id: str | None = None
    detail: str = ""
    queued: bool = False


@dataclass(frozen=True)
class Feedback:
    """What a provider reported about a message it had taken, or a token it refused: the daemon
    turns each into a Segment-spec event on the user (`engine.daemon.deliveries.feedback`).

    - `kind`: bounce (`bounce` says hard or soft) | complaint (marked as spam) | unregistered (a
      push token or Web Push subscription that is gone); `provider`: the connector's name.
    - `address`: the recipient address that bounced or the dead token or endpoint, when known.
    - `action_id`: the action the message was (from a Message-ID or a tag the connector set), by
      which the report is traced to its user, when the report is not about a known delivery.
    - `report_id`: the report's own id (a webhook's, a DSN's Message-ID): a report delivered twice
      is one event."""

    kind: str
    provider: str
    reason: str = ""
    address: str | None = None
    bounce: str | None = None
    action_id: str | None = None
    report_id: str | None = None


class MalformedReport(ValueError):
    """A feedback report (a DSN, a provider's webhook) that does not say what it must: `field`
    names what is missing or wrong, for the 400 the daemon answers."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field, self.message = field, message


@runtime_checkable
class Connector(Protocol):
    name: str
    channel: str  # email | push | sms | ads | webhook
    # optional `uses_profile = False`: the deliveries need no traits (a webhook sends its `with`
    # data), so the dispatcher does not read the profile for them
    # optional `async def deliver_async(delivery) -> Result`: `deliver` as a coroutine on
    # `connectors.http.io_loop()` (the webhook's), which the dispatcher prefers

    def deliver(self, delivery: Delivery) -> Result:
        """Deliver once, or raise a `connectors.errors.DeliveryError`."""
        ...


class Batching(Protocol):
    def flush(self) -> list[tuple[str, Result | Exception]]:
        """Send what was queued; per action id, its result or its error."""
        ...

    def close(self) -> None: ...


# Settings of `[connectors.NAME]` that the registry and the dispatcher read; never a connector's own.
CONFIG_KEYS = frozenset({"channel", "type", "default", "rate", "burst", "concurrency", "retry_for", "backoff_base",
                         "backoff_max", "circuit_failures", "circuit_wait_max"})


def check_settings(name: str, kind: str, settings: Mapping[str, Any], known: set[str] | frozenset[str]) -> None:
    """A typo in journeys.toml is a configuration error now, not a silently ignored setting."""
    unknown = set(settings) - set(known) - CONFIG_KEYS
    if unknown:
        raise ConfigurationError(f"connector {name!r} ({kind}): unknown settings {', '.join(sorted(unknown))}; "
                                 f"known: {', '.join(sorted(known))}")


def delivery_of(action: Mapping[str, Any], profile: Mapping[str, Any]) -> Delivery:
    """The Delivery of an action in its JSON form (`Action.to_json`, as the outbox keeps it) for a
    user whose traits are `profile`: the daemon's dispatcher and the dry-run's render check build
    what a connector renders in this one way, so the dry-run renders what the daemon will."""
    return Delivery(action_id=action["id"], kind=action["kind"], target=action["target"], user_id=action["user"],
                    profile=profile, data=action.get("data") or {}, named=action.get("named") or {},
                    event=action.get("event"), current_event=action.get("current_event"),
                    journey=action.get("journey", ""), step=action.get("path", ""),
                    predictions=action.get("predictions"))
