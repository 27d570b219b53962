"""Connectors from journeys.toml: each `[connectors.NAME]` by its `type`, each `[webhooks.NAME]` as
the connector `webhook:NAME`; and the routing, which connectors an action goes to (`route`: the
dispatcher's for each action, the delivery preflight's for each step of the journeys).

Email connectors render their own templates (they need the whole message: headers, both parts,
the unsubscribe link); push connectors take a rendered message, so `RenderingPush` renders the
push template in front of them. A connector that cannot be built (a missing secret, a bad setting)
is replaced by one that fails every delivery with that `ConfigurationError`: the outbox records
why, nothing is dropped, and the other connectors keep working.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from journeys.config import ProjectConfig

from .base import CONFIG_KEYS, Delivery, Result
from .errors import ConfigurationError

# type → "module:Class" (imported only when a project uses it)
TYPES: dict[str, str] = {
    "smtp": "connectors.smtp:SmtpConnector",
    "resend": "connectors.resend:ResendConnector",
    "fcm": "connectors.fcm:FcmConnector",
    "webpush": "connectors.webpush:WebPushConnector",
    "meta_custom_audiences": "connectors.meta_audiences:MetaCustomAudiences",
    "google_customer_match": "connectors.google_audiences:GoogleCustomerMatch",
}
EMAIL_TYPES = {"smtp", "resend"}
PUSH_TYPES = {"fcm", "webpush"}


class RoutingError(Exception):
    """No connector is configured for an action (the checker reports this before a run)."""


@dataclass(frozen=True)
class Routes:
    """Which connector names serve what, from journeys.toml."""

    defaults: Mapping[str, str]  # channel → its default connector
    audiences: Mapping[str, Sequence[str]]  # audience → connectors it syncs to
    webhooks: frozenset[str] = frozenset()  # webhook names; each is its own connector "webhook:NAME"

    @classmethod
    def from_config(cls, config: Any) -> "Routes":
        channels = sorted({c.channel for c in config.connectors.values()})
        defaults = {ch: name for ch in channels if (name := config.default_connector(ch)) is not None}
        return cls(defaults, {a: tuple(v.sync) for a, v in config.audiences.items()}, frozenset(config.webhooks))


def route(action: Any, routes: Routes) -> list[str]:
    """The connectors an action goes to: a message to its `via` connector or its channel's default, an
    audience change to every connector the audience syncs to, a webhook to its own endpoint.
    `action`: anything with the `kind`, `target` and `via` of an `engine.core.effects.Action`."""
    if action.kind in ("email", "push", "sms"):
        name = action.via or routes.defaults.get(action.kind)
        if name is None:
            raise RoutingError(f"no {action.kind} connector is configured")
        return [name]
    if action.kind in ("audience_add", "audience_remove"):
        names = list(routes.audiences.get(action.target, ()))
        if not names:
            raise RoutingError(f'audience "{action.target}" syncs to no connector')
        return names
    if action.kind == "webhook":
        if action.target not in routes.webhooks:
            raise RoutingError(f'webhook "{action.target}" is not configured')
        return [f"webhook:{action.target}"]
    raise RoutingError(f"no route for {action.kind}")


class Unusable:
    """Stands in for a connector that could not be built: every delivery fails with the reason."""

    def __init__(self, name: str, channel: str, error: ConfigurationError):
        self.name, self.channel, self.error = name, channel, error

    def deliver(self, delivery: Delivery) -> Result:
        raise self.error


class RenderingPush:
    """Renders the push template, then hands the message to the push connector."""

    def __init__(self, inner: Any, templates: Path):  # templates: the project root
        from .render import TemplateStore

        self.inner, self.name, self.channel = inner, inner.name, inner.channel
        self.templates = TemplateStore(templates)

    def deliver(self, delivery: Delivery) -> Result:
        from .render import render_push

        rendered = render_push(self.templates.get("push", delivery.target), delivery)
        return self.inner.deliver(replace(delivery, data={**delivery.data, "_push": rendered}))


def _class(type_name: str) -> Any:
    module, _, cls = TYPES[type_name].partition(":")
    return getattr(__import__(module, fromlist=[cls]), cls)


def build(config: ProjectConfig, root: Path, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Every connector of the project by name (webhooks as `webhook:NAME`)."""
    env = os.environ if env is None else env
    templates = root  # template stores read <root>/templates/<channel>/<name>.j2
    out: dict[str, Any] = {}
    for name, c in config.connectors.items():
        settings = {k: v for k, v in c.settings.items() if k not in CONFIG_KEYS}

        def make(name: str = name, c: Any = c, settings: dict = settings) -> Any:
            retry_policy(name, c.settings)  # a retry setting that does not parse: shown by the preflight too
            return _one(name, c.type, settings, env, templates, config.project.public_url)

        out[name] = _guarded(name, c.channel, make)
    for name, w in config.webhooks.items():
        from .webhook import WebhookConnector

        key = f"webhook:{name}"
        out[key] = _guarded(key, "webhook", lambda: WebhookConnector.from_config(name, w, env))
    return out


def _one(name: str, type_name: str, settings: dict, env: Mapping[str, str], templates: Path,
         public_url: str | None) -> Any:
    if type_name not in TYPES:
        raise ConfigurationError(f'connector "{name}": unknown type "{type_name}" (types: {", ".join(TYPES)})')
    cls = _class(type_name)
    if type_name in EMAIL_TYPES:
        return cls(name, settings, env, templates=templates, public_url=public_url)
    connector = cls.from_settings(name, settings, env)
    return RenderingPush(connector, templates) if type_name in PUSH_TYPES else connector


def _guarded(name: str, channel: str, make: Callable[[], Any]) -> Any:
    try:
        return make()
    except ConfigurationError as e:
        return Unusable(name, channel, e)


def delivery_limits(config: ProjectConfig) -> tuple[dict[str, tuple[float, int]], dict[str, int]]:
    """Per connector: its token bucket (`rate` per second, `burst`, default `rate`) and its
    concurrency (parallel deliveries, default 4), from `[connectors.NAME]` settings:

        rate = 50          # deliveries per second on average
        burst = 100        # at most this many at once after a quiet spell
        concurrency = 8    # requests in flight at the same time
    """
    buckets: dict[str, tuple[float, int]] = {}
    concurrency: dict[str, int] = {}
    for name, c in config.connectors.items():
        s = c.settings
        rate = s.get("rate")
        if rate is not None:
            if not isinstance(rate, (int, float)) or rate <= 0:
                raise ConfigurationError(f'connector "{name}": rate must be a positive number per second')
            burst = s.get("burst", max(1, int(rate)))
            if not isinstance(burst, int) or burst < 1:
                raise ConfigurationError(f'connector "{name}": burst must be a whole number of at least 1')
            buckets[name] = (float(rate), burst)
        if "concurrency" in s:
            n = s["concurrency"]
            if not isinstance(n, int) or n < 1:
                raise ConfigurationError(f'connector "{name}": concurrency must be a whole number of at least 1')
            concurrency[name] = n
    return buckets, concurrency


@dataclass(frozen=True)
class RetryPolicy:
    """How a connector's deliveries are retried, from `[connectors.NAME]` settings (every field in
    seconds; webhooks take the defaults):

        retry_for = "48h"        # retryable failures are retried until the action is this old,
                                 # then it is a dead letter (a permanent error is one at once)
        backoff_base = "2s"      # the first retry's delay; each next one doubles, with jitter,
        backoff_max = "1h"       # up to this (or the provider's Retry-After, never past retry_for)
        circuit_failures = 5     # consecutive retryable failures that open its circuit (0: never)
        circuit_wait_max = "5m"  # the longest cool-down between two probes of an open circuit

    The defaults ride out a provider's outage of two days."""

    retry_for: float = 48 * 3600.0
    backoff_base: float = 2.0
    backoff_max: float = 3600.0
    circuit_failures: int = 5
    circuit_wait_max: float = 300.0


RETRY_DURATIONS = {"retry_for": "48h", "backoff_base": "2s", "backoff_max": "1h", "circuit_wait_max": "5m"}


def retry_policy(name: str, settings: Mapping[str, Any]) -> RetryPolicy:
    """A connector's `RetryPolicy` from its settings; a ConfigurationError names the connector and
    the setting that does not parse."""
    from .webhook import parse_duration

    values: dict[str, Any] = {}
    for key, example in RETRY_DURATIONS.items():
        if key not in settings:
            continue
        raw = settings[key]
        try:
            seconds = None if isinstance(raw, bool) else parse_duration(raw)
        except ConfigurationError:
            seconds = None
        if seconds is None or seconds <= 0:
            raise ConfigurationError(f'connector "{name}": {key} must be a duration such as "{example}" '
                                     f"(units: ms, s, m, h), not {raw!r}")
        values[key] = seconds
    if "circuit_failures" in settings:
        n = settings["circuit_failures"]
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ConfigurationError(f'connector "{name}": circuit_failures must be a whole number (0: no circuit '
                                     f"breaking), not {n!r}")
        values["circuit_failures"] = n
    policy = RetryPolicy(**values)
    if policy.backoff_max < policy.backoff_base:
        raise ConfigurationError(f'connector "{name}": backoff_max ({policy.backoff_max:g} s) is shorter than '
                                 f"backoff_base ({policy.backoff_base:g} s)")
    return policy


def retry_policies(config: ProjectConfig) -> dict[str, RetryPolicy]:
    """Every `[connectors.NAME]`'s `RetryPolicy` (`retry_policy`)."""
    return {name: retry_policy(name, c.settings) for name, c in config.connectors.items()}
