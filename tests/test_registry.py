"""Connectors are built from journeys.toml; one that cannot be built fails its deliveries with the
reason instead of stopping the others."""

from __future__ import annotations

from pathlib import Path

import pytest

from connectors.base import Delivery
from connectors.errors import ConfigurationError
from connectors.registry import RenderingPush, Unusable, build
from journeys.project import load_project

SHOP = Path(__file__).resolve().parent.parent / "examples" / "shop"


def test_the_shop_connectors_without_secrets_are_unusable_with_the_reason():
    project = load_project(SHOP)
    connectors = build(project.config, project.root, env={})
    assert set(connectors) == {"smtp", "fcm", "meta", "google_ads", "webhook:crm_nudge"}
    for name, c in connectors.items():
        if isinstance(c, Unusable):
            with pytest.raises(ConfigurationError):
                c.deliver(Delivery("a1", "email", "x", "u1"))
    assert isinstance(connectors["fcm"], Unusable) and "FCM_CREDENTIALS" in str(connectors["fcm"].error)


def test_an_unknown_type_is_a_configuration_error(make_project):
    root = make_project(config='[connectors.x]\nchannel = "email"\ntype = "carrier_pigeon"\n')
    project = load_project(root)
    (c,) = build(project.config, project.root, env={}).values()
    assert isinstance(c, Unusable) and "carrier_pigeon" in str(c.error)


def test_push_connectors_render_their_template_first(make_project, tmp_path):
    class Inner:
        name, channel = "fcm", "push"

        def __init__(self):
            self.got = []

        def deliver(self, delivery):
            self.got.append(delivery)

    root = make_project()
    inner = Inner()
    RenderingPush(inner, Path(root)).deliver(
        Delivery("a1", "push", "finish_checkout", "u1", profile={"push_token": "t"}, data={"total": 80}))
    rendered = inner.got[0].data["_push"]
    assert rendered.title == "Your cart is waiting" and "80" in rendered.body


def test_rate_and_concurrency_come_from_journeys_toml_and_are_not_the_connectors(make_project):
    from connectors.registry import delivery_limits

    root = make_project(config='[connectors.smtp]\nchannel = "email"\ntype = "smtp"\nhost = "127.0.0.1"\n'
                               'security = "none"\nrate = 5\nburst = 10\nconcurrency = 2\n')
    project = load_project(root)
    assert delivery_limits(project.config) == ({"smtp": (5.0, 10)}, {"smtp": 2})
    (smtp,) = build(project.config, project.root, env={}).values()
    assert not isinstance(smtp, Unusable)  # the limits are the dispatcher's settings, not the connector's


def test_bad_limits_are_configuration_errors(make_project):
    from connectors.registry import delivery_limits

    root = make_project(config='[connectors.smtp]\nchannel = "email"\ntype = "smtp"\nrate = -1\n')
    with pytest.raises(ConfigurationError, match="rate must be a positive number"):
        delivery_limits(load_project(root).config)
