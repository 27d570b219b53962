"""Per-user features, kept in the user's state as events arrive: what every model reads.

A model must never see the future, and it needs labelled examples from the past ("as of June 1st,
did this user buy within 30 days?"). Decayed counters cannot be rewound to June 1st; short
timelines can. So a user's features are a handful of **bounded timelines** — the latest purchases,
session starts, item interactions, messages received and engagement per channel — plus the count
of what fell off their old end. `as_of(t)` rewinds them exactly (while `exact_at(t)` holds), and
every summary a model wants (recency, frequency, monetary value, gaps, hour-of-day histograms with
decay, affinities) is computed from them at training or scoring time, never stored.

The same `observe` runs in the daemon and the dry-run (it is called by the pure core's `step`), so
both keep byte-identical features for the same events. Times are whole seconds since 1970 (UTC):
small in MessagePack, exact enough for models whose horizons are days.

Bad input gets a documented fallback, never an exception: a purchase without revenue, or with a
revenue that is not a finite non-negative number, counts as a purchase of amount 0; an item without
a product id or category keeps what it has ("" for the rest); an event older than the user's
timelines is inserted in order.
"""

from __future__ import annotations

import math
from bisect import insort
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any, Iterable, Mapping

# Bounds: the state budget. A user with a long history keeps only the newest entries of each
# timeline (and counts the rest), so features never grow past about 2 KB however active a user is.
MAX_PURCHASES = 24
MAX_SESSIONS = 48
MAX_ITEMS = 24
MAX_MESSAGES = 24  # per channel
MAX_ENGAGEMENTS = 24  # per channel
MAX_ORDER_ITEMS = 4  # products of one order kept as item interactions
SESSION_GAP = 30 * 60  # seconds of silence that start a new session (the usual web analytics rule)
CONVERSION_WINDOW = 3 * 86400  # a purchase this soon after a message converts for its channel

VIEW, ADD, PURCHASE = "v", "a", "p"  # item interaction kinds
OPEN, CLICK, CONVERT, UNSUBSCRIBE, BOUNCE, DISMISS = "open", "click", "convert", "unsubscribe", "bounce", "dismiss"

_EMPTY: Mapping[str, Any] = MappingProxyType({})
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class Vocabulary:
    """Which events mean what to the models. The defaults are Segment's e-commerce, email and push
    specs (and the spellings common beside them); a project overrides them in journeys.toml."""

    purchases: frozenset[str] = frozenset({"Order Completed"})
    views: frozenset[str] = frozenset({"Product Viewed", "Product Clicked"})
    adds: frozenset[str] = frozenset({"Product Added"})
    revenue: tuple[str, ...] = ("revenue", "total", "value")
    # event name → (channel, engagement kind); "sent" marks a message another system delivered
    messages: Mapping[str, tuple[str, str]] = field(default_factory=lambda: MappingProxyType({
        "Email Delivered": ("email", "sent"),
        "Email Opened": ("email", OPEN),
        "Email Link Clicked": ("email", CLICK),
        "Email Clicked": ("email", CLICK),
        "Email Bounced": ("email", BOUNCE),
        "Email Marked as Spam": ("email", UNSUBSCRIBE),
        "Push Delivered": ("push", "sent"),
        "Push Opened": ("push", OPEN),
        "Push Clicked": ("push", CLICK),
        "Push Dismissed": ("push", DISMISS),
        "SMS Delivered": ("sms", "sent"),
        "SMS Link Clicked": ("sms", CLICK),
    }))
    unsubscribed: frozenset[str] = frozenset({"Unsubscribed"})  # channel from its `channel` property


DEFAULT_VOCABULARY = Vocabulary()


@dataclass(frozen=True, slots=True)
class Features:
    """One user's timelines, oldest first, each bounded (see the MAX_ constants).

    - `first`, `last`: the user's first and latest event times.
    - `purchases`: (time, amount in cents); `purchases_before`: (count, cents, latest time) of the
      purchases that fell off the timeline's old end.
    - `sessions`: session start times; `sessions_before`: how many fell off.
    - `items`: (time, kind, product id, category), kind VIEW, ADD or PURCHASE.
    - `messages`: channel → times a message reached the user (the engine's own sends, and
      "... Delivered" events for what other systems send).
    - `engagements`: channel → (time, kind): OPEN, CLICK, CONVERT (a purchase within
      CONVERSION_WINDOW after a message of the channel), UNSUBSCRIBE, BOUNCE, DISMISS.
    """

    first: int
    last: int
    purchases: tuple[tuple[int, int], ...] = ()
    purchases_before: tuple[int, int, int] = (0, 0, 0)
    sessions: tuple[int, ...] = ()
    sessions_before: int = 0
    items: tuple[tuple[int, str, str, str], ...] = ()
    messages: Mapping[str, tuple[int, ...]] = field(default_factory=lambda: _EMPTY)
    engagements: Mapping[str, tuple[tuple[int, str], ...]] = field(default_factory=lambda: _EMPTY)

    # ------------------------------------------------------------------ summaries models read

    @property
    def frequency(self) -> int:
        """Purchases ever."""
        return self.purchases_before[0] + len(self.purchases)

    @property
    def revenue_cents(self) -> int:
        return self.purchases_before[1] + sum(a for _, a in self.purchases)

    @property
    def last_purchase(self) -> int | None:
        if self.purchases:
            return self.purchases[-1][0]
        return self.purchases_before[2] if self.purchases_before[0] else None

    @property
    def session_count(self) -> int:
        return self.sessions_before + len(self.sessions)

    def exact_at(self, t: int) -> bool:
        """Does `as_of(t)` give exactly the features the user had at `t`? Not when something
        after `t` has fallen off a timeline (its count is known, its time is not)."""
        if self.purchases_before[0] and self.purchases_before[2] > t:
            return False
        # dropped sessions are all older than the oldest kept one
        return not self.sessions_before or (bool(self.sessions) and self.sessions[0] <= t)

    def as_of(self, t: int) -> "Features | None":
        """The features as they stood at time `t` (inclusive): None if the user had no event yet.
        Timeline entries after `t` are dropped; what fell off the old end is kept as counted."""
        if self.first > t:
            return None
        if self.last <= t:
            return self
        return Features(
            first=self.first,
            last=max(x for x in (self._latest_before(t), self.first) if x is not None),
            purchases=tuple(p for p in self.purchases if p[0] <= t),
            purchases_before=self.purchases_before,
            sessions=tuple(s for s in self.sessions if s <= t),
            sessions_before=self.sessions_before,
            items=tuple(i for i in self.items if i[0] <= t),
            messages=MappingProxyType({c: k for c, ts in self.messages.items() if (k := tuple(x for x in ts if x <= t))}),
            engagements=MappingProxyType({c: k for c, es in self.engagements.items()
                                          if (k := tuple(e for e in es if e[0] <= t))}),
        )

    def _latest_before(self, t: int) -> int | None:
        """The latest time at or before `t` any timeline holds (the user's `last` as of `t`)."""
        best: int | None = None
        for seq in (self.sessions, (p[0] for p in self.purchases), (i[0] for i in self.items)):
            for x in seq:
                if x <= t and (best is None or x > best):
                    best = x
        return best


# ---------------------------------------------------------------------- observing events

def seconds(moment: datetime) -> int:
    """A datetime as whole seconds since 1970 (UTC)."""
    return int((moment - _EPOCH).total_seconds()) if moment.tzinfo is not None else int(
        (moment.replace(tzinfo=timezone.utc) - _EPOCH).total_seconds())


def amount_cents(properties: Mapping[str, Any], names: Iterable[str]) -> int:
    """An order's revenue in cents: the first of `names` that holds a finite non-negative number,
    else 0 (a purchase without revenue is still a purchase)."""
    for name in names:
        value = properties.get(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            if isinstance(value, str):
                try:
                    value = float(value)
                except ValueError:
                    continue
            else:
                continue
        if math.isfinite(value) and value >= 0:
            return int(round(value * 100)) if value < 1e15 else 10**17
    return 0


def _text(value: Any) -> str:
    return value if isinstance(value, str) else ("" if value is None or isinstance(value, (dict, list)) else str(value))


def _bounded_insert(seq: tuple, item: Any, limit: int) -> tuple[tuple, tuple]:
    """`seq` with `item` in time order, and what fell off the old end to keep `limit`."""
    if not seq or item >= seq[-1]:
        out = seq + (item,)
    else:
        lst = list(seq)
        insort(lst, item)
        out = tuple(lst)
    if len(out) > limit:
        return out[len(out) - limit:], out[:len(out) - limit]
    return out, ()


def observe(features: Features | None, name: str, timestamp: datetime, properties: Mapping[str, Any],
            vocabulary: Vocabulary = DEFAULT_VOCABULARY) -> Features:
    """The user's features after one tracked event."""
    t = seconds(timestamp)
    f = features if features is not None else Features(first=t, last=t)
    server = vocabulary.messages.get(name)
    if server is not None and server[1] in ("sent", BOUNCE):
        # a delivery or a bounce is the provider's report, not the user doing anything: it is a
        # message received (or not), never a session or activity (churn and send times read those)
        if server[1] == "sent":
            return replace(f, messages=_message(f.messages, server[0], t))
        return replace(f, engagements=_engage(f.engagements, server[0], t, BOUNCE))
    changes: dict[str, Any] = {}
    if t < f.first:
        changes["first"] = t
    if t > f.last:
        changes["last"] = t
    # sessions: a new one after SESSION_GAP of silence (for an event in order; a late event inside
    # the timeline's span joins the session it falls in, or starts one of its own)
    sessions = f.sessions
    if not sessions or t - max(f.last, sessions[-1]) > SESSION_GAP or t < sessions[0] - SESSION_GAP:
        if features is None or not sessions or t > sessions[-1] or t < sessions[0]:
            new, dropped = _bounded_insert(sessions, t, MAX_SESSIONS)
            changes["sessions"] = new
            if dropped:
                changes["sessions_before"] = f.sessions_before + len(dropped)
    if name in vocabulary.purchases:
        changes.update(_purchase(f, t, properties, vocabulary))
    elif name in vocabulary.views or name in vocabulary.adds:
        kind = VIEW if name in vocabulary.views else ADD
        item = (t, kind, _text(properties.get("product_id") or properties.get("sku") or properties.get("id")),
                _text(properties.get("category")))
        changes["items"] = _bounded_insert(f.items, item, MAX_ITEMS)[0]
    elif name in vocabulary.unsubscribed:
        channel = _text(properties.get("channel")) or "email"
        changes["engagements"] = _engage(f.engagements, channel, t, UNSUBSCRIBE)
    elif name in vocabulary.messages:
        channel, kind = vocabulary.messages[name]
        if kind == "sent":
            changes["messages"] = _message(f.messages, channel, t)
        else:
            changes["engagements"] = _engage(f.engagements, channel, t, kind)
    return replace(f, **changes) if changes else f


def observe_send(features: Features | None, channel: str, timestamp: datetime) -> Features:
    """The user's features after the engine sent them a message on `channel`."""
    t = seconds(timestamp)
    f = features if features is not None else Features(first=t, last=t)
    return replace(f, messages=_message(f.messages, channel, t))


def _purchase(f: Features, t: int, properties: Mapping[str, Any], vocabulary: Vocabulary) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    cents = amount_cents(properties, vocabulary.revenue)
    purchases, dropped = _bounded_insert(f.purchases, (t, cents), MAX_PURCHASES)
    changes["purchases"] = purchases
    if dropped:
        count, total, latest = f.purchases_before
        changes["purchases_before"] = (count + len(dropped), total + sum(a for _, a in dropped),
                                       max(latest, max(p[0] for p in dropped)))
    products = properties.get("products")
    items = f.items
    if isinstance(products, list):
        for p in products[:MAX_ORDER_ITEMS]:
            if isinstance(p, Mapping):
                pid = _text(p.get("product_id") or p.get("sku") or p.get("id"))
                if pid or p.get("category"):
                    items = _bounded_insert(items, (t, PURCHASE, pid, _text(p.get("category"))), MAX_ITEMS)[0]
    elif properties.get("product_id") is not None:
        items = _bounded_insert(items, (t, PURCHASE, _text(properties.get("product_id")),
                                        _text(properties.get("category"))), MAX_ITEMS)[0]
    if items is not f.items:
        changes["items"] = items
    engagements = f.engagements
    for channel, times in f.messages.items():
        if times and 0 <= t - times[-1] <= CONVERSION_WINDOW:
            engagements = _engage(engagements, channel, t, CONVERT)
    if engagements is not f.engagements:
        changes["engagements"] = engagements
    return changes


def _message(messages: Mapping[str, tuple[int, ...]], channel: str, t: int) -> Mapping[str, tuple[int, ...]]:
    out = dict(messages)
    out[channel] = _bounded_insert(messages.get(channel, ()), t, MAX_MESSAGES)[0]
    return MappingProxyType(out)


def _engage(engagements: Mapping[str, tuple[tuple[int, str], ...]], channel: str, t: int,
            kind: str) -> Mapping[str, tuple[tuple[int, str], ...]]:
    out = dict(engagements)
    out[channel] = _bounded_insert(engagements.get(channel, ()), (t, kind), MAX_ENGAGEMENTS)[0]
    return MappingProxyType(out)


def merged(a: Features | None, b: Features | None) -> Features | None:
    """One profile's features from two stitched ones: the union of their timelines, bounded."""
    if a is None or b is None:
        return a if b is None else b
    purchases = tuple(sorted(a.purchases + b.purchases))
    pdrop = purchases[:max(0, len(purchases) - MAX_PURCHASES)]
    count = a.purchases_before[0] + b.purchases_before[0] + len(pdrop)
    before = (count, a.purchases_before[1] + b.purchases_before[1] + sum(x for _, x in pdrop),
              max([a.purchases_before[2], b.purchases_before[2]] + [p[0] for p in pdrop]))
    sessions = tuple(sorted(set(a.sessions) | set(b.sessions)))
    sdrop = max(0, len(sessions) - MAX_SESSIONS)
    channels = sorted(set(a.messages) | set(b.messages))
    eng = sorted(set(a.engagements) | set(b.engagements))
    return Features(
        first=min(a.first, b.first),
        last=max(a.last, b.last),
        purchases=purchases[len(pdrop):],
        purchases_before=before,
        sessions=sessions[sdrop:],
        sessions_before=a.sessions_before + b.sessions_before + sdrop,
        items=tuple(sorted(a.items + b.items))[-MAX_ITEMS:],
        messages=MappingProxyType({c: tuple(sorted(a.messages.get(c, ()) + b.messages.get(c, ())))[-MAX_MESSAGES:]
                                   for c in channels}),
        engagements=MappingProxyType({c: tuple(sorted(a.engagements.get(c, ()) + b.engagements.get(c, ())))
                                      [-MAX_ENGAGEMENTS:] for c in eng}),
    )


# ---------------------------------------------------------------------- storage

def to_plain(f: Features) -> list[Any]:
    """The features as MessagePack-ready lists (engine.store.serialize writes them under "f")."""
    return [f.first, f.last, [list(p) for p in f.purchases], list(f.purchases_before), list(f.sessions),
            f.sessions_before, [list(i) for i in f.items], {c: list(ts) for c, ts in sorted(f.messages.items())},
            {c: [list(e) for e in es] for c, es in sorted(f.engagements.items())}]


def from_plain(data: list[Any]) -> Features:
    first, last, purchases, before, sessions, sessions_before, items, messages, engagements = data
    return Features(
        first=first, last=last,
        purchases=tuple((p[0], p[1]) for p in purchases),
        purchases_before=(before[0], before[1], before[2]),
        sessions=tuple(sessions), sessions_before=sessions_before,
        items=tuple((i[0], i[1], i[2], i[3]) for i in items),
        messages=MappingProxyType({c: tuple(ts) for c, ts in messages.items()}),
        engagements=MappingProxyType({c: tuple((e[0], e[1]) for e in es) for c, es in engagements.items()}),
    )
