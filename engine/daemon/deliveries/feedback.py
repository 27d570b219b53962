"""Delivery feedback: what providers say about messages becomes Segment-spec events on the user.

A hard bounce, a spam complaint or a push token the provider no longer knows is written into the
inbox as a track call, the very path of every other event, so the engine handles it as any event
(its traits: `engine.core.delivery.feedback_traits`; the sends it makes impossible are suppressed
by `undeliverable`), the trail shows it, and a recorded log replays it in the dry-run the same.

| provider says | event | properties |
| --- | --- | --- |
| a bounce (SMTP refusal, DSN, Resend) | `Email Bounced` | type hard or soft, reason, provider, email |
| a spam complaint (Resend) | `Email Marked as Spam` | reason, provider, email |
| a push token or Web Push subscription gone | `Push Token Unregistered` | token, reason, provider |

Two sources:
- the attempts themselves (`of_outcome`): the dispatcher's settle hands each outcome to
  `FeedbackWriter.record`, which writes the events in the same transaction as the outcome (a
  crash loses neither nor writes one without the other); the delivery loop has a store
  connection of its own, so the inbox is opened on it;
- reports that come later (a DSN, a provider's webhook: `engine.daemon.deliveries.webhooks`),
  through the ingest's group commit.

The unsubscribe link (`engine.daemon.api`) writes its `Unsubscribed` event the same way, through
`track_call` and `rows` and the group commit: an opt-out the user gave us is an event in the log
as much as one a provider reports.

Each event's messageId is derived from what it reports (the entry, or the report's own id, and
the address), so a retried report or a replayed settle is one event: the engine drops repeats.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import datetime
from typing import Any, Iterable, Sequence

from connectors.base import Feedback
from connectors.errors import DeliveryError, InvalidRecipient

from ...core.delivery import EMAIL_BOUNCED, EMAIL_MARKED_AS_SPAM, PUSH_TOKEN_UNREGISTERED
from ...core.messages import parse_message
from ...store.inbox import message_to_json
from ...store.serialize import utc_text

log = logging.getLogger("journeys.delivery")

MAX_REASON = 500  # characters of a provider's answer kept in an event's `reason`


def event_of(fb: Feedback, user_id: str, at: datetime, source: str) -> dict[str, Any]:
    """The Segment track call of one report about `user_id`'s message. `source`: what makes its
    messageId unique besides the report (the outbox entry's id, a webhook's id)."""
    reason = fb.reason[:MAX_REASON]
    if fb.kind == "bounce":
        event, props = EMAIL_BOUNCED, {"type": fb.bounce or "hard", "reason": reason, "provider": fb.provider}
        if fb.address:
            props["email"] = fb.address
    elif fb.kind == "complaint":
        event, props = EMAIL_MARKED_AS_SPAM, {"reason": reason, "provider": fb.provider}
        if fb.address:
            props["email"] = fb.address
    elif fb.kind == "unregistered":
        event, props = PUSH_TOKEN_UNREGISTERED, {"token": fb.address, "reason": reason, "provider": fb.provider}
    else:
        raise ValueError(f"feedback of an unknown kind {fb.kind!r}")
    return track_call(user_id, event, props, at, (source, fb.kind, fb.address or ""))


def track_call(user_id: str, event: str, properties: dict[str, Any], at: datetime, key: Sequence[str],
               origin: str = "feedback") -> dict[str, Any]:
    """A track call the daemon writes into the inbox itself (a report, an unsubscribe link's click).
    Its messageId is `origin` and a hash of `key`, what makes the event this one and no other: a
    retried report or a repeated click has the same key, so the engine takes it once."""
    digest = hashlib.sha256("\x1f".join(key).encode()).hexdigest()[:32]
    return {"type": "track", "userId": user_id, "event": event, "properties": properties,
            "messageId": f"{origin}-{digest}", "timestamp": at.isoformat(),
            "context": {"library": {"name": f"journeys-{origin}"}}}


def rows(calls: Iterable[dict[str, Any]], received: datetime) -> list[tuple[str, bytes]]:
    """Track calls as inbox rows (what the ingest's group commit and `Inbox.append_rows` take)."""
    stamp = utc_text(received)
    return [(stamp, message_to_json(parse_message(call))) for call in calls]


def of_outcome(entry: Any, outcome: Any) -> list[Feedback]:
    """What an attempt's outcome reports: an email refused for an address that cannot receive
    (`InvalidRecipient` with the dead address: a hard bounce at RCPT time), push tokens or
    subscriptions found dead (on the error, or on a result that reached other devices)."""
    if isinstance(outcome, DeliveryError):
        if not isinstance(outcome, InvalidRecipient):
            return []
        dead = [outcome.stale] if outcome.stale else []
        dead += [d for d in getattr(outcome, "stale_addresses", ()) or () if d not in dead]
        reason = f"{outcome}" + (f": {outcome.answer}" if outcome.answer else "")
    else:
        dead, reason = list(getattr(outcome, "stale", ()) or ()), "the provider says this device is gone"
    if not dead:
        return []
    if entry.kind == "email":
        return [Feedback("bounce", entry.connector, reason=reason, address=dead[0], bounce="hard")]
    if entry.kind == "push":
        return [Feedback("unregistered", entry.connector, reason=reason, address=d) for d in dead]
    return []


class FeedbackWriter:
    """The dispatcher's: the events of settled attempts, into the inbox on the delivery loop's own
    store connection, inside the caller's transaction (`Dispatcher.settle_done`)."""

    def __init__(self, store: Any):
        if getattr(store, "schema", None) is not None:  # PostgreSQL: the cluster's shared inbox
            from ...store.pg_inbox import PostgresInbox

            self.inbox: Any = PostgresInbox(store.conn, store.schema)
        else:
            from ...store.inbox import Inbox

            self.inbox = Inbox(store.conn)

    def record(self, done: Sequence[tuple[Any, Any]], now: datetime) -> int:
        """Write the events of these (entry, outcome) pairs; returns how many."""
        calls = [event_of(fb, entry.user_id, now, entry.id) for entry, outcome in done
                 for fb in of_outcome(entry, outcome)]
        if calls:
            self.inbox.append_rows(rows(calls, now))
            for call in calls:
                log.info("delivery feedback: %s (%s)", call["event"], call["properties"].get("provider"))
        return len(calls)
