"""Waits on a virtual clock: `wait until` a time of day across DST changes, `wait for` an event with
a timeout (docs/language.md, "wait until", "wait for", "Time: ... Daylight saving")."""

from __future__ import annotations


import pytest

from .engine_helpers import Harness, t


UNTIL = '''
    journey "U" {
      entry when event "A"
      reenter always
      wait until %s
      send email "u"
    }
'''


def _sent_at(h: Harness, tz: str, at: str) -> str:
    h.feed([(at, "u1", "identify", {"timezone": tz}), (at, "u1", "A")], until="2026-12-31")
    [a] = h.sent("u1")
    return a.time.isoformat().replace("+00:00", "Z")


@pytest.mark.parametrize("tz,at,time,expected", [
    # New York, spring forward 2026-03-08 02:00 EST -> 03:00 EDT
    ("America/New_York", "2026-03-07 20:00", "10:00", "2026-03-08T14:00:00Z"),  # 10:00 EDT (UTC-4)
    ("America/New_York", "2026-03-07 12:00", "10:00", "2026-03-07T15:00:00Z"),  # the day before: EST
    ("America/New_York", "2026-03-08 05:00", "02:30", "2026-03-08T07:00:00Z"),  # 02:30 is in the gap: 03:00 EDT
    # New York, fall back 2026-11-01 02:00 EDT -> 01:00 EST
    ("America/New_York", "2026-11-01 03:00", "10:00", "2026-11-01T15:00:00Z"),  # 10:00 EST (UTC-5)
    ("America/New_York", "2026-10-31 15:00", "10:00", "2026-11-01T15:00:00Z"),  # 11:00 EDT on the 31st: next day
    ("America/New_York", "2026-11-01 04:00", "01:30", "2026-11-01T05:30:00Z"),  # 01:30 happens twice: the first (EDT)
    # Berlin, spring forward 2026-03-29 02:00 CET -> 03:00 CEST
    ("Europe/Berlin", "2026-03-28 22:00", "10:00", "2026-03-29T08:00:00Z"),
    ("Europe/Berlin", "2026-03-28 22:00", "02:30", "2026-03-29T01:00:00Z"),     # in the gap: 03:00 CEST
    # Berlin, fall back 2026-10-25 03:00 CEST -> 02:00 CET
    ("Europe/Berlin", "2026-10-24 22:00", "10:00", "2026-10-25T09:00:00Z"),
    ("Europe/Berlin", "2026-10-24 22:00", "02:30", "2026-10-25T00:30:00Z"),     # the first 02:30 (CEST)
])
def test_wait_until_time_of_day_across_dst(make, tz, at, time, expected):
    h = make(UNTIL % f"{time} user time")
    assert _sent_at(h, tz, at) == expected


def test_wait_until_in_a_fixed_zone_ignores_the_users_zone(make):
    h = make(UNTIL % '10:00 in "Europe/Berlin"')
    h.feed([("2026-03-28 12:00", "u1", "identify", {"timezone": "Asia/Tokyo"}),
            ("2026-03-28 12:00", "u1", "A")], until="2026-04-05")
    assert h.sent_times("u1") == [t("2026-03-29 08:00")]


def test_wait_until_exactly_at_the_time_goes_on_at_once(make):
    h = make(UNTIL % "10:00 user time")
    h.feed([("2026-03-02 09:00", "u1", "identify", {"timezone": "Europe/Berlin"}),
            ("2026-03-02 09:00", "u1", "A")])  # 10:00 in Berlin (CET)
    assert h.sent_times("u1") == [t("2026-03-02 09:00")]
    assert not h.transitions("u1", kind="waiting")


def test_wait_until_uses_the_policy_timezone_without_a_trait(make):
    h = make('policy { timezone "America/New_York" }\n' + UNTIL % "10:00")
    h.feed([("2026-03-07 20:00", "u1", "A")], until="2026-03-10")
    assert h.sent_times("u1") == [t("2026-03-08 14:00")]


def test_wait_duration_is_exact_across_dst(make):
    h = make('''
        journey "D" {
          entry when event "A"
          wait 1d
          send email "d"
        }
    ''')
    h.feed([("2026-03-28 12:00", "u1", "identify", {"timezone": "Europe/Berlin"}),
            ("2026-03-28 12:00", "u1", "A")], until="2026-04-05")
    assert h.sent_times("u1") == [t("2026-03-29 12:00")]


# ---------------------------------------------------------------------------------- wait for


WAIT_FOR = '''
    journey "F" {
      entry when event "Product Viewed" as viewed
      wait for event "Product Added" where price >= 50 up to 1h {
        on event   { send push "added" }
        on timeout { send email "timeout" with { product: viewed.name } }
      }
      send sms "after"
    }
'''


def test_wait_for_event_arrives(make):
    h = make(WAIT_FOR)
    h.feed([("2026-03-02 10:00", "u1", "Product Viewed", {"name": "Lamp"}),
            ("2026-03-02 10:20", "u1", "Product Added", {"price": 10}),   # the where does not match
            ("2026-03-02 10:30", "u1", "Product Added", {"price": 60})], until="2026-03-03")
    assert [(a.target, a.path, a.time) for a in h.sent("u1")] == [
        ("added", "f/1/event/1", t("2026-03-02 10:30")), ("after", "f/2", t("2026-03-02 10:30"))]


def test_wait_for_timeout(make):
    h = make(WAIT_FOR)
    h.feed([("2026-03-02 10:00", "u1", "Product Viewed", {"name": "Lamp"}),
            ("2026-03-02 11:00:01", "u1", "Product Added", {"price": 60})], until="2026-03-03")
    assert [(a.target, a.path, a.time, dict(a.data)) for a in h.sent("u1")] == [
        ("timeout", "f/1/timeout/1", t("2026-03-02 11:00"), {"product": "Lamp"}),
        ("after", "f/2", t("2026-03-02 11:00"), {})]


def test_wait_for_event_exactly_at_the_timeout_loses_to_the_timer(make):
    # timers due at or before an event's time fire first
    h = make(WAIT_FOR)
    h.feed([("2026-03-02 10:00", "u1", "Product Viewed", {"name": "Lamp"}),
            ("2026-03-02 11:00", "u1", "Product Added", {"price": 60})], until="2026-03-03")
    assert [a.target for a in h.sent("u1")] == ["timeout", "after"]


def test_wait_for_does_not_count_an_event_from_before_the_step(make):
    h = make('''
        journey "F" {
          entry when event "A"
          wait 1h
          wait for event "B" up to 1h {
            on event   { send push "got" }
            on timeout { send email "none" }
          }
        }
    ''')
    h.feed([("2026-03-02 10:00", "u1", "A"), ("2026-03-02 10:30", "u1", "B")], until="2026-03-03")
    assert [a.target for a in h.sent("u1")] == ["none"]


def test_the_entry_event_does_not_satisfy_a_wait_for_the_same_event(make):
    h = make('''
        journey "F" {
          entry when event "B"
          wait for event "B" up to 1h {
            on event   { send push "again" }
            on timeout { send email "once" }
          }
        }
    ''')
    h.feed([("2026-03-02 10:00", "u1", "B")], until="2026-03-03")
    assert [a.target for a in h.sent("u1")] == ["once"]
    h2 = make(WAIT_FOR.replace('"Product Added" where price >= 50', '"Product Viewed"'))
    h2.feed([("2026-03-02 10:00", "u1", "Product Viewed", {"name": "Lamp"}),
             ("2026-03-02 10:10", "u1", "Product Viewed", {"name": "Desk"})], until="2026-03-03")
    assert [(a.target, a.time) for a in h2.sent("u1")] == [("added", t("2026-03-02 10:10")),
                                                          ("after", t("2026-03-02 10:10"))]


def test_wait_for_without_a_block_continues_either_way(make):
    h = make('''
        journey "F" {
          entry when event "A"
          wait for event "B" up to 1h
          send email "next"
        }
    ''')
    h.feed([("2026-03-02 10:00", "u1", "A"), ("2026-03-02 10:15", "u1", "B"),
            ("2026-03-02 10:00", "u2", "A")], until="2026-03-03")
    assert h.sent_times("u1") == [t("2026-03-02 10:15")]
    assert h.sent_times("u2") == [t("2026-03-02 11:00")]
