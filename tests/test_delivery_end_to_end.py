"""From an event to a message in a real mailbox: the shop's engine decides, the outbox records,
the dispatcher delivers through the SMTP connector to a real SMTP server on loopback, once."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from engine.runtime.clock import VirtualClock
from engine.daemon.deliveries.dispatch import Dispatcher, OutboxSink, Routes
from engine.core.messages import Message
from engine.store.outbox import DELIVERED, SqliteOutbox
from engine.runtime.loop import Engine, handle_all
from journeys.checker import load_checked
from engine.runtime.sinks import FanOut, Recorder
from engine.core.program import Program
from engine.store.sqlite_store import SqliteStore
from connectors.registry import build

from .test_smtp import ENV, SHOP, parse, server  # noqa: F401  (the real SMTP server fixture)


def t(h: int, m: int = 0) -> datetime:
    return datetime(2026, 3, 2, h, m, tzinfo=timezone.utc)


def test_a_product_view_becomes_one_email_in_a_real_mailbox(server, tmp_path):  # noqa: F811
    project, compiled = load_checked(SHOP)
    store = SqliteStore(str(tmp_path / "shop.db"))
    outbox = SqliteOutbox(store.conn)
    routes = Routes.from_config(project.config)
    engine = Engine(Program.build(compiled), store, VirtualClock(t(9)), FanOut(Recorder(), OutboxSink(outbox, routes)))
    messages = [
        Message("identify", "m1", t(9), user_id="u1", traits={"email": "ann@example.com", "first_name": "Ann",
                                                              "timezone": "Europe/Berlin"}),
        Message("track", "m2", t(10), user_id="u1", event="Product Viewed",
                properties={"name": "Lamp", "category": "home"}),
        Message("track", "m2", t(10), user_id="u1", event="Product Viewed",  # a retried request: same messageId
                properties={"name": "Lamp", "category": "home"}),
    ]
    handle_all(engine, messages, t(12))

    config = project.config.model_copy(deep=True)
    smtp = config.connectors["smtp"].__pydantic_extra__
    smtp.update(host="127.0.0.1", port=server.port, security="none")  # the loopback server, no login
    config.project.public_url = "https://shop.example.com"
    connectors = build(config, project.root, env={**ENV})
    dispatcher = Dispatcher(outbox, connectors, profiles=lambda uid: dict(store.load(uid).traits))
    dispatcher.run_due(t(12))
    dispatcher.run_due(t(12) + timedelta(hours=1))  # nothing left: delivered once

    emails = [e for e in outbox.by_state(DELIVERED) if e.kind == "email"]
    assert [e.target for e in emails] == ["browse_abandon"]
    # the audience change went to its connectors too, and Meta's missing token is recorded, not lost
    (meta,) = [e for e in outbox.by_state("failed") if e.connector == "meta"]
    assert "META_ACCESS_TOKEN" in meta.last_error
    assert len(server.handler.messages) == 1
    mail_from, rcpt, raw, _ = server.handler.messages[0]
    msg = parse(raw)
    assert rcpt == ["ann@example.com"]
    assert msg["Subject"] == "Still thinking it over?"
    assert msg["List-Unsubscribe"].startswith("<https://shop.example.com/")
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    text = msg.get_body(("plain",)).get_content()
    assert "Lamp" in text
    assert emails[0].action_id in msg["Message-ID"]
