"""The engine keeps, of each stored event, only the properties conditions can read."""

from __future__ import annotations

import pytest

from journeys.needs import expression_needs
from journeys.parser import parse_text

from .engine_helpers import Harness


def needs(condition: str):
    result = parse_text(f'segment "s" = {condition}\n')
    assert not result.diagnostics, result.diagnostics
    return expression_needs(result.file.items[0].condition)


@pytest.mark.parametrize("condition, expected", [
    ('count(event "V", last 7d) > 1', {"V": frozenset()}),
    ('count(event "V" where category == "x" and local_hour > 20, last 7d) > 1', {"V": frozenset({"category"})}),
    ('sum(event "O", revenue * qty, last 7d) > 1', {"O": frozenset({"revenue", "qty"})}),
    ('avg(event "O" where coupon == null, revenue, last 7d) > 1', {"O": frozenset({"coupon", "revenue"})}),
    ('last(event "V").category == "x"', {"V": frozenset({"category"})}),
    ('last(event "V") != null', {"V": None}),  # the whole event: keep everything
    ('last(event "V").category == "x" and last(event "V") != null', {"V": None}),
    ('days_since(event "V") > 3', {"V": frozenset()}),
    ('happened(event "V" where price > 1) and count(event "V" where size == 2, last 1d) > 0',
     {"V": frozenset({"price", "size"})}),
])
def test_properties_read_per_event(condition, expected):
    assert dict(needs(condition).properties) == expected


SOURCE = '''
segment "big_spender" = sum(event "Order Completed", revenue, last 30d) >= 100
journey "J" {
  entry when event "Product Viewed" as viewed
  reenter always
  if user in segment "big_spender" { send email "vip" } else { send email "plain" }
}
'''


def test_stored_events_keep_only_what_conditions_read_and_decide_the_same(tmp_path):
    h = Harness.from_source(tmp_path, SOURCE)
    h.feed([("2026-03-02 10:00", "u1", "Order Completed", {"revenue": 80, "order_id": "o1", "items": [1, 2, 3]}),
            ("2026-03-02 11:00", "u1", "Product Viewed", {"name": "Lamp"}),
            ("2026-03-02 12:00", "u1", "Order Completed", {"revenue": 30, "order_id": "o2", "items": [4]}),
            ("2026-03-02 13:00", "u1", "Product Viewed", {"name": "Rug"})])
    assert [a.target for a in h.sent("u1")] == ["plain", "vip"]
    (orders, _), = [h.state("u1").history.by_name["Order Completed"]]
    assert [dict(e.properties) for e in orders] == [{"revenue": 80}, {"revenue": 30}]
    assert "Product Viewed" not in h.state("u1").history.by_name  # no condition reads past views
