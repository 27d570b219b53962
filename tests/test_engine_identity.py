"""Identity stitching and scheduled entries on a virtual clock (docs/language.md, "Events and users",
"entry every", "entry on cron")."""

from __future__ import annotations


import pytest

from engine.core.effects import Received

from .engine_helpers import t


# ---------------------------------------------------------------------------------- identity


BROWSE = '''
    journey "Browse" {
      entry when event "Product Viewed" where name == "Lamp" as viewed
      goal "bought" = event "Order Completed" within 3d
      wait 1h
      send email "browse" with { product: viewed.name, plan: user.plan }
    }
    journey "Checkout" {
      entry when event "Checkout Started"
      reenter always
      if count(event "Product Viewed", last 7d) >= 3 { send email "many" } else { send email "few" }
    }
'''


@pytest.mark.parametrize("how", ["identify", "alias"])
def test_anonymous_profile_merges_into_the_known_one(make, how):
    h = make(BROWSE)
    join = (("2026-03-02 10:30", ("u1", "a1"), "identify", {"email": "u1@example.com"}) if how == "identify"
            else ("2026-03-02 10:30", "u1", "alias", "a1"))
    h.feed([
        ("2026-03-01 09:00", "u1", "identify", {"plan": "pro", "email": "old@example.com"}),
        ("2026-03-01 09:00", "u1", "Product Viewed", {"name": "Desk"}),
        ("2026-03-02 09:00", ("anon", "a1"), "identify", {"colour": "blue", "email": "anon@example.com"}),
        ("2026-03-02 10:00", ("anon", "a1"), "Product Viewed", {"name": "Lamp"}),
        ("2026-03-02 10:05", ("anon", "a1"), "Product Viewed", {"name": "Lamp"}),
        join,
        ("2026-03-02 10:40", ("anon", "a1"), "Checkout Started"),  # anonymous only, after the merge
        ("2026-03-02 10:50", "u1", "Order Completed"),
    ], until="2026-03-10")
    assert "a1" not in h.store.profiles
    s = h.state("u1")
    assert "a1" in s.aliases
    # traits of both; the known profile wins (an identify with both ids sets its own traits too)
    email = "u1@example.com" if how == "identify" else "old@example.com"
    assert {k: s.traits[k] for k in ("plan", "colour", "email")} == {"plan": "pro", "colour": "blue", "email": email}
    # the anonymous run of Browse carried on into u1's profile; its send went to u1 with u1's traits
    [browse] = h.sent(template="browse")
    assert browse.user == "u1" and browse.time == t("2026-03-02 11:00") and browse.data["plan"] == "pro"
    assert browse.entry == 1
    # the later anonymous event went to u1, whose merged history has 3 views
    assert [a.target for a in h.sent("u1", journey="Checkout")] == ["many"]
    assert [e.user for e in h.effects if isinstance(e, Received) and e.name == "Checkout Started"] == ["u1"]
    # the goal of the anonymous entry counts for the merged profile
    assert [(c.user, c.goal) for c in h.conversions()] == [("u1", "bought")]


def test_journeys_in_flight_on_both_identities(make):
    h = make('''
        journey "Nudge" {
          entry when event "A"
          on exit { webhook "ping" }
          wait 1d
          send email "nudge"
        }
    ''')
    h.feed([
        ("2026-03-02 10:00", ("anon", "a1"), "A"),
        ("2026-03-02 11:00", "u1", "A"),
        ("2026-03-02 12:00", ("u1", "a1"), "identify", {}),
    ], until="2026-03-10")
    [merged] = h.transitions(kind="merged")
    assert merged.user == "u1" and merged.entry == 1
    # the earlier entry (the anonymous one, 10:00) carries on; the other is dropped without on exit
    [nudge] = h.sent(template="nudge")
    assert nudge.user == "u1" and nudge.time == t("2026-03-03 10:00")
    assert [a.target for a in h.sent(kind="webhook")] == ["ping"]
    assert h.in_flight("u1") == {}


def test_merged_history_is_seen_by_segments(make):
    h = make('''
        segment "keen" = count(event "Product Viewed", last 7d) >= 3
        journey "Keen" {
          entry when user enters segment "keen"
          send email "keen"
        }
    ''')
    h.feed([
        ("2026-03-02 10:00", ("anon", "a1"), "Product Viewed"),
        ("2026-03-02 10:01", ("anon", "a1"), "Product Viewed"),
        ("2026-03-02 10:00", "u1", "Product Viewed"),
        ("2026-03-02 11:00", "u1", "alias", "a1"),
        ("2026-03-02 11:05", "u1", "identify", {"seen": True}),  # segments are evaluated on profile updates
    ])
    [a] = h.sent(template="keen")
    assert a.user == "u1" and a.time == t("2026-03-02 11:05")


def test_identify_with_an_unknown_anonymous_id_just_links_it(make):
    h = make('''
        journey "J" { entry when event "A"  reenter always  send email "j" }
    ''')
    h.feed([("2026-03-02 10:00", ("u1", "a9"), "identify", {"x": 1}),
            ("2026-03-02 11:00", ("anon", "a9"), "A")])
    assert [a.user for a in h.sent()] == ["u1"]
    assert set(h.store.profiles) == {"u1"}


# ---------------------------------------------------------------------------------- schedules


def test_cron_entry_in_a_fixed_zone_for_segment_members(make):
    h = make('''
        segment "vip" = user.vip == true
        journey "Monday" {
          entry on cron "0 10 * * 1" in "Europe/Berlin" for segment "vip"
          reenter always
          send email "monday"
        }
    ''', start="2026-03-01 00:00")  # a Sunday
    h.feed([("2026-03-01 00:00", "u1", "identify", {"vip": True, "timezone": "Asia/Tokyo"}),
            ("2026-03-01 00:00", "u2", "identify", {"vip": False})], until="2026-04-01")
    # Mondays (standard cron: 1 is Monday) at 10:00 Berlin: CET until 29 March, then CEST; the
    # user's own zone does not matter
    assert h.sent_times("u1") == [t("2026-03-02 09:00"), t("2026-03-09 09:00"), t("2026-03-16 09:00"),
                                  t("2026-03-23 09:00"), t("2026-03-30 08:00")]
    assert h.sent("u2") == []


def test_scheduled_entry_reaches_each_user_once_without_reenter(make):
    h = make('''
        journey "Monday" {
          entry on cron "0 10 * * 1" in "UTC"
          send email "monday"
        }
    ''', start="2026-03-01 00:00")
    h.feed([("2026-03-01 00:00", "u1", "identify", {"x": 1})], until="2026-03-20")
    assert h.sent_times("u1") == [t("2026-03-02 10:00")]


def test_entry_every_monday_in_user_time(make):
    h = make('''
        journey "Monday" {
          entry every monday at 10:00 user time
          reenter always
          send email "monday"
        }
    ''', start="2026-03-01 00:00")
    h.feed([("2026-03-01 00:00", "tokyo", "identify", {"timezone": "Asia/Tokyo"}),
            ("2026-03-01 00:00", "ny", "identify", {"timezone": "America/New_York"})], until="2026-03-17")
    assert h.sent_times("tokyo") == [t("2026-03-02T10:00:00+09:00"), t("2026-03-09T10:00:00+09:00"),
                                     t("2026-03-16T10:00:00+09:00")]
    # New York changes to EDT on 8 March
    assert h.sent_times("ny") == [t("2026-03-02T10:00:00-05:00"), t("2026-03-09T10:00:00-04:00"),
                                  t("2026-03-16T10:00:00-04:00")]


def test_cron_in_user_time_without_a_zone(make):
    h = make('''
        journey "Monday" {
          entry on cron "30 9 * * 1"
          send email "monday"
        }
    ''', start="2026-03-01 00:00")
    h.feed([("2026-03-01 00:00", "ber", "identify", {"timezone": "Europe/Berlin"}),
            ("2026-03-01 00:00", "utc", "identify", {"x": 1})], until="2026-03-05")
    assert h.sent_times("ber") == [t("2026-03-02T09:30:00+01:00")]
    assert h.sent_times("utc") == [t("2026-03-02 09:30")]


def test_scheduled_entry_not_on_top_of_a_run_in_flight(make):
    h = make('''
        journey "Daily" {
          entry every day at 10:00 in "UTC"
          reenter always
          wait 30h
          send email "d"
        }
    ''', start="2026-03-01 00:00")
    h.feed([("2026-03-01 00:00", "u1", "identify", {"x": 1})], until="2026-03-05 12:00")
    # enters on the 1st; still waiting on the 2nd; enters again on the 3rd (the run ended at 16:00 on the 2nd)
    assert [e.time for e in h.entries("u1")] == [t("2026-03-01 10:00"), t("2026-03-03 10:00"),
                                                t("2026-03-05 10:00")]


# schedules across DST changes: one fire per matching wall-clock time, by the same rule as
# `wait until` (a time in the spring-forward gap is the first moment after it; a time that happens
# twice is the first of the two)


def test_next_fire_moves_on_across_the_autumn_change():
    from engine.core.timing import next_fire

    fires, after = [], t("2026-10-24 21:30")  # 23:30 CEST
    for _ in range(5):
        after = next_fire("0 * * * *", "Europe/Berlin", after)
        fires.append(after)
    # 00:00, 01:00, 02:00 CEST, (02:00 CET is the same wall time again: not a second fire), 03:00 CET, 04:00 CET
    assert fires == [t("2026-10-24 22:00"), t("2026-10-24 23:00"), t("2026-10-25 00:00"), t("2026-10-25 02:00"),
                     t("2026-10-25 03:00")]


@pytest.mark.parametrize("start,until,expected", [
    # spring forward in Berlin: 02:30 does not exist on 29 March; the entry is at 03:00 CEST
    ("2026-03-28 00:00", "2026-03-30 12:00",
     ["2026-03-28T02:30:00+01:00", "2026-03-29T03:00:00+02:00", "2026-03-30T02:30:00+02:00"]),
    # fall back: 02:30 happens twice on 25 October; the entry is at the first, once
    ("2026-10-24 00:00", "2026-10-26 12:00",
     ["2026-10-24T02:30:00+02:00", "2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00"]),
])
def test_daily_schedule_across_dst_changes(make, start, until, expected):
    h = make('''
        journey "Nightly" {
          entry every day at 02:30 in "Europe/Berlin"
          reenter always
          send email "nightly"
        }
    ''', start=start)
    h.feed([(start, "u1", "identify", {"x": 1})], until=until)
    assert h.sent_times("u1") == [t(x) for x in expected]


def test_a_shared_device_does_not_merge_two_known_users(make):
    h = make('journey "J" { entry when event "A"  send email "j" }')
    h.feed([("2026-03-02 10:00", ("u1", "dev"), "identify", {"name": "one"}),
            ("2026-03-02 11:00", ("u2", "dev"), "identify", {"name": "two"}),
            ("2026-03-02 12:00", ("anon", "dev"), "A")])
    assert set(h.store.profiles) == {"u1", "u2"}
    assert h.traits("u1")["name"] == "one" and h.traits("u2")["name"] == "two"
    assert [a.user for a in h.sent()] == ["u2"]  # the device's later anonymous events are the latest user's


def test_an_alias_merges_two_known_profiles(make):
    h = make('journey "J" { entry when event "A"  send email "j" }')
    h.feed([("2026-03-02 10:00", "old-id", "identify", {"name": "one", "plan": "pro"}),
            ("2026-03-02 11:00", "new-id", "identify", {"name": "two"}),
            ("2026-03-02 12:00", "new-id", "alias", "old-id")])
    assert set(h.store.profiles) == {"new-id"}
    assert h.traits("new-id") == {"name": "two", "plan": "pro"}


@pytest.mark.parametrize("cron,expected", [
    ("0 10 * * 1", "2026-03-02 10:00"),    # 1 is Monday (APScheduler alone would read Tuesday)
    ("0 10 * * MON", "2026-03-02 10:00"),
    ("0 10 * * 0", "2026-03-08 10:00"),    # 0 and 7 are Sunday
    ("0 10 * * 7", "2026-03-08 10:00"),
    ("0 10 * * 1-5", "2026-03-02 10:00"),
    ("0 10 * * 6", "2026-03-07 10:00"),
])
def test_cron_weekdays_are_standard(cron, expected):
    from engine.core.timing import next_fire

    assert next_fire(cron, "UTC", t("2026-03-01 10:00")) == t(expected)  # a Sunday, at 10:00: strictly after


def test_a_held_send_of_a_run_dropped_by_a_merge_is_recorded(make):
    h = make('policy { quiet hours 21:00-08:00 in "UTC" }\n'
             'journey "J" { entry when event "A"  send email "j" }')
    h.feed([("2026-03-02 22:00", ("anon", "dev"), "A"),       # held until 08:00
            ("2026-03-02 21:30", "u1", "A"),                  # u1's own run, entered first, also held
            ("2026-03-02 23:00", ("u1", "dev"), "identify", {})], until="2026-03-03 09:00")
    dropped = [a for a in h.actions() if a.outcome == "suppressed"]
    assert [(a.reason, a.rule) for a in dropped] == [("exit", "merged with another identity")]
    assert [a.user for a in h.sent()] == ["u1"]  # the kept run's email goes out at 08:00
