"""Per-user features (engine.models.features): built from events, bounded, rewound exactly, merged
on stitching, stored byte-stably — the input every model reads."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone

import ormsgpack
import pytest

from engine.core.state import UserState
from engine.models.features import (ADD, CONVERT, MAX_ITEMS, MAX_PURCHASES, MAX_SESSIONS, OPEN, PURCHASE, UNSUBSCRIBE,
                                    VIEW, Features, amount_cents, from_plain, merged, observe, observe_send, seconds,
                                    to_plain)
from engine.store.serialize import state_from_bytes, state_to_bytes

T0 = datetime(2026, 3, 2, 9, tzinfo=timezone.utc)


def at(days: float = 0, hours: float = 0) -> datetime:
    return T0 + timedelta(days=days, hours=hours)


def history(events):
    f = None
    for name, when, props in events:
        f = observe(f, name, when, props)
    return f


def test_purchases_items_sessions_and_engagement_from_segment_events():
    f = history([
        ("Product Viewed", at(0), {"product_id": "p1", "category": "shoes"}),
        ("Product Added", at(0, 0.1), {"product_id": "p1", "category": "shoes"}),
        ("Order Completed", at(0, 0.2), {"revenue": 59.9, "products": [{"product_id": "p1", "category": "shoes"}]}),
        ("Email Opened", at(3), {}),
        ("Unsubscribed", at(4), {"channel": "push"}),
    ])
    assert f.frequency == 1 and f.revenue_cents == 5990 and f.last_purchase == seconds(at(0, 0.2))
    assert [i[1] for i in f.items] == [VIEW, ADD, PURCHASE]
    assert f.session_count == 3  # day 0, day 3, day 4
    assert f.engagements["email"] == ((seconds(at(3)), OPEN),)
    assert f.engagements["push"] == ((seconds(at(4)), UNSUBSCRIBE),)


def test_a_purchase_soon_after_a_message_converts_for_its_channel():
    f = observe_send(None, "email", at(0))
    f = observe(f, "Order Completed", at(1), {"revenue": 10})
    f = observe(f, "Order Completed", at(9), {"revenue": 10})  # beyond the conversion window
    assert f.engagements["email"] == ((seconds(at(1)), CONVERT),)


@pytest.mark.parametrize("revenue", [None, "abc", float("nan"), -5, float("inf"), True, {"x": 1}])
def test_bad_revenue_counts_as_a_purchase_of_nothing(revenue):
    f = observe(None, "Order Completed", at(0), {"revenue": revenue})
    assert f.frequency == 1 and f.revenue_cents == 0


def test_revenue_falls_back_to_total_and_value():
    assert amount_cents({"total": "12.5"}, ("revenue", "total")) == 1250
    assert amount_cents({"revenue": None, "value": 3}, ("revenue", "total", "value")) == 300
    assert not math.isnan(amount_cents({"revenue": float("nan")}, ("revenue",)))


def test_timelines_are_bounded_and_count_what_fell_off():
    events = []
    for d in range(200):
        events.append(("Order Completed", at(d), {"revenue": 1, "products": [{"product_id": f"p{d}"}]}))
        events.append(("Product Viewed", at(d, 2), {"product_id": f"v{d}"}))
    f = history(events)
    assert len(f.purchases) == MAX_PURCHASES and f.frequency == 200 and f.revenue_cents == 200 * 100
    assert len(f.sessions) == MAX_SESSIONS and f.session_count == 400
    assert len(f.items) == MAX_ITEMS
    size = len(ormsgpack.packb(to_plain(f)))
    assert size < 2500, size  # the state budget of the busiest user


def test_as_of_rewinds_exactly_while_nothing_later_fell_off():
    events = [("Order Completed", at(d * 3), {"revenue": d}) for d in range(10)]
    events += [("Product Viewed", at(d * 3, 1), {"product_id": f"p{d}"}) for d in range(10)]
    events.sort(key=lambda e: e[1])
    full = history(events)
    for cut in (0, 7, 15, 29):
        t = seconds(at(cut, 1.5))
        expected = history([e for e in events if seconds(e[1]) <= t])
        assert full.exact_at(t)
        assert full.as_of(t) == expected
    assert full.as_of(seconds(at(-1))) is None


def test_as_of_is_not_exact_before_a_dropped_purchase():
    f = history([("Order Completed", at(d), {"revenue": 1}) for d in range(MAX_PURCHASES + 5)])
    assert not f.exact_at(seconds(at(2)))
    assert f.exact_at(seconds(at(MAX_PURCHASES + 4)))


def test_late_events_are_inserted_in_order():
    f = history([("Order Completed", at(5), {"revenue": 1}), ("Order Completed", at(1), {"revenue": 2})])
    assert [p[0] for p in f.purchases] == [seconds(at(1)), seconds(at(5))]
    assert f.first == seconds(at(1)) and f.last == seconds(at(5))


def test_merging_two_profiles_unions_their_timelines():
    a = history([("Order Completed", at(1), {"revenue": 1}), ("Email Opened", at(2), {})])
    b = history([("Product Viewed", at(0), {"product_id": "x"}), ("Order Completed", at(3), {"revenue": 2})])
    m = merged(a, b)
    assert m.frequency == 2 and m.first == seconds(at(0)) and m.last == seconds(at(3))
    assert merged(a, None) is a and merged(None, b) is b


def test_states_keep_features_through_the_store_format():
    f = history([("Order Completed", at(1), {"revenue": 1, "products": [{"product_id": "p", "category": "c"}]}),
                 ("Push Opened", at(2), {})])
    state = UserState("u1", features=f)
    back = state_from_bytes(state_to_bytes(state))
    assert back.features == f and isinstance(back.features, Features)
    assert state_to_bytes(back) == state_to_bytes(state)
    assert from_plain(to_plain(f)) == f
    assert state_from_bytes(state_to_bytes(UserState("u2"))).features is None


def test_deliveries_and_bounces_are_not_activity():
    f = observe(None, "Product Viewed", at(0), {"product_id": "p"})
    f = observe(f, "Push Delivered", at(2), {})
    f = observe(f, "Email Bounced", at(3), {})
    assert f.session_count == 1 and f.last == seconds(at(0))
    assert f.messages["push"] == (seconds(at(2)),)
    assert f.engagements["email"][0][1] == "bounce"
