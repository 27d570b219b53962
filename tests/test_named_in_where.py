"""A journey's named event inside `where`: `wait for event "Product Added" where product_id ==
viewed.product_id` waits for that very product, and goals and history functions read it too."""

from __future__ import annotations

from .engine_helpers import Harness

SOURCE = '''
journey "Nudge" {
  entry when event "Product Viewed" as viewed
  goal "bought it" = event "Order Completed" where product_id == viewed.product_id within 3d

  wait for event "Product Added" where product_id == viewed.product_id up to 1h {
    on event   { exit }
    on timeout {
      if count(event "Product Viewed" where product_id == viewed.product_id, last 1d) >= 2 {
        send email "keen"
      } else {
        send email "nudge"
      }
    }
  }
}
'''


def run(tmp_path, events):
    h = Harness.from_source(tmp_path, SOURCE)
    h.feed(events, until="2026-03-06 00:00")
    return h


def test_adding_another_product_does_not_end_the_wait(tmp_path):
    h = run(tmp_path, [
        ("2026-03-02 10:00", "u1", "Product Viewed", {"product_id": "lamp"}),
        ("2026-03-02 10:10", "u1", "Product Added", {"product_id": "vase"}),
    ])
    assert [a.target for a in h.sent("u1")] == ["nudge"]


def test_adding_the_viewed_product_ends_it(tmp_path):
    h = run(tmp_path, [
        ("2026-03-02 10:00", "u1", "Product Viewed", {"product_id": "lamp"}),
        ("2026-03-02 10:10", "u1", "Product Added", {"product_id": "lamp"}),
    ])
    assert h.sent("u1") == []


def test_history_functions_read_the_named_event_inside_where(tmp_path):
    h = run(tmp_path, [
        ("2026-03-01 12:00", "u1", "Product Viewed", {"product_id": "lamp"}),  # its own run, reenter never
        ("2026-03-01 12:30", "u2", "Product Viewed", {"product_id": "rug"}),
        ("2026-03-02 10:00", "u2", "Product Viewed", {"product_id": "lamp"}),
    ])
    assert [a.target for a in h.sent("u1")] == ["nudge"]  # one view of the lamp in the day before
    assert [a.target for a in h.sent("u2")] == ["nudge"]  # a rug and a lamp: not two lamps


def test_a_goal_counts_only_the_named_product_even_after_the_run_ended(tmp_path):
    h = run(tmp_path, [
        ("2026-03-02 10:00", "u1", "Product Viewed", {"product_id": "lamp"}),
        ("2026-03-02 12:00", "u1", "Order Completed", {"product_id": "vase"}),
        ("2026-03-03 12:00", "u1", "Order Completed", {"product_id": "lamp"}),
        ("2026-03-02 10:00", "u2", "Product Viewed", {"product_id": "rug"}),
        ("2026-03-03 12:00", "u2", "Order Completed", {"product_id": "lamp"}),
    ])
    assert [(c.user, c.goal) for c in h.conversions()] == [("u1", "bought it")]
