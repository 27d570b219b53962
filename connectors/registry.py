"""Connectors from journeys.toml: each `[connectors.NAME]` by its `type`, each `[webhooks.NAME]` as
the connector `webhook:NAME`.

Email connectors render their own templates (they need the whole message: headers, both parts,
the unsubscribe link); push connectors take a rendered message, so `RenderingPush` renders the
push template in front of them. A connector that cannot be built (a missing secret, a bad setting)
is replaced by one that fails every delivery with that `ConfigurationError`: the outbox records
why, nothing is dropped, and the other connectors keep working.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Mapping

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
        out[name] = _guarded(name, c.channel, lambda: _one(name, c.type, settings, env, templates,
                                                           config.project.public_url))
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
