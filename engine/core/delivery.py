"""The steps every action passes before the sink: consent, caps, quiet hours.

Like middleware around a task queue's hot path, each step is one small function that looks at an
action about to go out and either lets it pass or says why not: suppressed (with a reason and, for
caps, the rule) or deferred (to a moment). Connectors never repeat these rules, and the dry-run
runs exactly these steps: its only difference is a sink that records instead of delivering.

The steps are pure: they read the user's state, the journey's and the policy's rules and the time.
What providers said about earlier messages (a hard bounce, a spam complaint, a push token gone)
reaches them as profile traits set by events (`feedback_traits`), so the dry-run of a recorded
log suppresses exactly what the daemon did.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, tzinfo
from typing import Any, Callable, Mapping, Sequence

from journeys.evaluation import Context
from journeys.functions import CHANNELS
from journeys.graph import Cap, CapRule, CompiledJourney, CompiledPolicy, QuietHours, format_duration, format_time

from ..models.modelset import UNTRAINED, ModelSet
from .state import SendRecord, UserState
from .timing import quiet_until, zone

CONSENT_TRAIT = "unsubscribed"  # true: no messages on any channel

# Delivery feedback (engine.daemon.deliveries.feedback turns what providers say into these Segment-spec
# events; a recorded log replays them in the dry-run the same): what each does to the profile is
# `feedback_traits`, and `undeliverable` below suppresses the sends they make impossible.
EMAIL_BOUNCED = "Email Bounced"  # {type: "hard" | "soft", reason, provider, email}
EMAIL_MARKED_AS_SPAM = "Email Marked as Spam"  # {reason, provider}: a complaint is an opt-out of email
PUSH_TOKEN_UNREGISTERED = "Push Token Unregistered"  # {token, reason, provider}
BOUNCED_TRAIT = "email_bounced"  # the address that bounced hard (true: one the event did not name)
PUSH_ADDRESS_TRAITS = ("push_token", "push_tokens", "webpush_subscriptions")  # where push connectors look
UNDELIVERABLE = "undeliverable"  # the suppression reason of a send the feedback made impossible


def channel_consent_trait(channel: str) -> str:
    """`email_unsubscribed`, `push_unsubscribed`, `sms_unsubscribed`: opted out of one channel."""
    return f"{channel}_unsubscribed"


def feedback_traits(event: str, properties: Mapping[str, Any], traits: Mapping[str, Any]) -> dict[str, Any]:
    """The profile updates a delivery-feedback event makes (none for any other event).

    - `Email Bounced`, unless its `type` is "soft": `email_bounced` = the address that bounced
      (its `email` property), true when it names none. A soft bounce (a full mailbox, a server
      down) changes nothing: the next message may well arrive.
    - `Email Marked as Spam`: `email_unsubscribed` = true. Someone who calls our mail spam has
      opted out of it, whatever the reason; mailbox providers count every further message.
    - `Push Token Unregistered`: its `token` (an FCM token or a Web Push endpoint) leaves the
      profile's push traits (`forget_address`)."""
    if event == EMAIL_BOUNCED:
        if str(properties.get("type") or "hard").strip().lower() == "soft":
            return {}
        address = properties.get("email")
        return {BOUNCED_TRAIT: address.strip() if isinstance(address, str) and address.strip() else True}
    if event == EMAIL_MARKED_AS_SPAM:
        return {channel_consent_trait("email"): True}
    if event == PUSH_TOKEN_UNREGISTERED:
        token = properties.get("token")
        return forget_address(traits, token) if isinstance(token, str) and token else {}
    return {}


def forget_address(traits: Mapping[str, Any], dead: str) -> dict[str, Any]:
    """The trait updates that remove a dead push token or Web Push endpoint from a profile."""
    updates: dict[str, Any] = {}
    if traits.get("push_token") == dead:
        updates["push_token"] = None
    tokens = traits.get("push_tokens")
    if isinstance(tokens, list) and dead in tokens:
        updates["push_tokens"] = [t for t in tokens if t != dead]
    subs = traits.get("webpush_subscriptions")
    if isinstance(subs, list):
        kept = [s for s in subs if not (s == dead or (isinstance(s, Mapping) and s.get("endpoint") == dead))]
        if len(kept) != len(subs):
            updates["webpush_subscriptions"] = kept
    return updates


@dataclass(frozen=True, slots=True)
class Pending:
    """An action about to be delivered: what the delivery steps need to know about it."""

    kind: str  # email | push | sms | audience_add | audience_remove | webhook
    channel: str | None  # what caps count it as; None: never capped


@dataclass(frozen=True, slots=True)
class Verdict:
    outcome: str  # suppressed | deferred
    reason: str  # consent | undeliverable | cap | quiet hours
    rule: str | None = None
    until: datetime | None = None


@dataclass(frozen=True, slots=True)
class Situation:
    """Everything the steps may read: who, which journey, under which policy, at what moment."""

    state: UserState
    journey: CompiledJourney
    policy: CompiledPolicy
    ctx: Context  # for dynamic caps (`when`)
    tz: tzinfo  # the user's timezone
    now: datetime
    models: ModelSet = UNTRAINED  # learned caps (`cap push auto per 7d max 5`)


Step = Callable[[Pending, Situation], "Verdict | None"]


def consent(action: Pending, s: Situation) -> Verdict | None:
    """A user who opted out of a channel (or of everything) gets no message on it."""
    if action.kind not in CHANNELS:
        return None
    traits = s.state.traits
    if traits.get(CONSENT_TRAIT) is True or traits.get(channel_consent_trait(action.kind)) is True:
        return Verdict("suppressed", "consent", f"{action.kind} opt-out")
    return None


def undeliverable(action: Pending, s: Situation) -> Verdict | None:
    """A message that cannot arrive is not sent (the delivery feedback's traits, `feedback_traits`):

    - email while `email_bounced` holds the profile's `email` (or true): the address bounced hard.
      A new address lifts it, with nothing to reset.
    - push when the profile had push addresses and every one is gone (its tokens unregistered):
      a profile that never had any push trait is left to the connector, as before."""
    traits = s.state.traits
    if action.kind == "email":
        bounced = traits.get(BOUNCED_TRAIT)
        if bounced is True or (isinstance(bounced, str) and bounced
                               and bounced.lower() == str(traits.get("email") or "").strip().lower()):
            return Verdict("suppressed", UNDELIVERABLE, "email bounced")
    elif action.kind == "push":
        present = [traits[k] for k in PUSH_ADDRESS_TRAITS if k in traits]
        if present and not any(present):
            return Verdict("suppressed", UNDELIVERABLE, "no push device left")
    return None


def caps(action: Pending, s: Situation) -> Verdict | None:
    """Rolling windows per user: the policy's count every journey's sends, a journey's its own."""
    if action.channel is None:
        return None
    for scope, cap_list in (("policy", s.policy.caps), ("journey", s.journey.caps)):
        for cap in cap_list:
            if cap.when is not None and not cap.when(s.ctx):
                continue
            for rule in cap.rules:
                if not _counts(rule.channel, action.channel):
                    continue
                only = s.journey.name if scope == "journey" else None
                limit = rule.count
                if rule.auto:  # a learned cap: the user's own, within the marketer's bounds
                    limit = s.models.cap(s.state.features, rule.channel, rule.seconds, rule.low, rule.high)
                if _sent_in_window(s.state.sends, rule, only, s.now) >= limit:
                    return Verdict("suppressed", "cap", describe_rule(scope, rule, cap))
    return None


def quiet_hours(action: Pending, s: Situation) -> Verdict | None:
    """Messages wait until the policy's and the journey's quiet hours are both over."""
    if action.kind not in CHANNELS:
        return None
    rules = [q for q in (s.policy.quiet_hours, s.journey.quiet_hours) if q is not None]
    if not rules:
        return None
    moment, held_by = s.now, None
    for _ in range(4):  # two overlapping windows settle in at most a few rounds
        later = None
        for q in rules:
            end = quiet_until(moment, q.start, q.end, _zone_of(q, s.tz))
            if end is not None and (later is None or end > later):
                later, held_by = end, q
        if later is None:
            break
        moment = later
    if moment == s.now or held_by is None:
        return None
    return Verdict("deferred", "quiet hours", describe_quiet(held_by), moment)


CHAIN: Sequence[Step] = (consent, undeliverable, caps, quiet_hours)


def decide(action: Pending, s: Situation, chain: Sequence[Step] = CHAIN) -> Verdict | None:
    """Run the chain; the first step that objects decides. None: deliver."""
    for step in chain:
        verdict = step(action, s)
        if verdict is not None:
            return verdict
    return None


def cap_channel(kind: str) -> str | None:
    """What a cap counts an action as; audience removals are never capped."""
    if kind in CHANNELS:
        return kind
    return {"audience_add": "ads", "webhook": "webhook"}.get(kind)


def _counts(rule_channel: str, channel: str) -> bool:
    return rule_channel == channel or (rule_channel == "all" and channel in CHANNELS)


def _sent_in_window(sends: Sequence[SendRecord], rule: CapRule, journey: str | None, now: datetime) -> int:
    since = now - timedelta(seconds=rule.seconds)
    return sum(1 for r in sends
               if r.time > since and _counts(rule.channel, r.channel) and (journey is None or r.journey == journey))


def _zone_of(q: QuietHours, user_tz: tzinfo) -> tzinfo:
    return (zone(q.tz) or user_tz) if q.tz is not None else user_tz


def describe_rule(scope: str, rule: CapRule, cap: Cap) -> str:
    when = f" when {cap.when.source}" if cap.when is not None else ""
    if rule.auto:
        # the rule as written, so reports count its suppressions together; the user's learned
        # count is in the trace (the cap models' version) and `journeys score`
        return f"{scope}: {rule.describe()}{when}"
    return f"{scope}: {rule.channel} {rule.count} per {format_duration(rule.seconds)}{when}"


def describe_quiet(q: QuietHours) -> str:
    where = "user time" if q.tz is None else f'in "{q.tz}"'
    return f"quiet hours {format_time(q.start)}-{format_time(q.end)} {where}"
