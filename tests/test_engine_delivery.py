"""Delivery on a virtual clock: consent, caps and quiet hours, each rule on its own
(docs/language.md, "Caps", "Quiet hours", "cap and quiet hours in a journey")."""

from __future__ import annotations


import pytest

from .engine_helpers import Harness, t


# ---------------------------------------------------------------------------------- caps


def test_policy_cap_per_channel(make):
    h = make('''
        policy { cap email 2 per 1d }
        journey "Many" {
          entry when event "A"
          send email "e1"
          send push "p1"
          send email "e2"
          send email "e3"
          send push "p2"
        }
    ''')
    h.feed([("2026-03-02 10:00", "u1", "A")])
    got = [(a.target, a.outcome, a.reason, a.rule) for a in h.actions("u1")]
    assert got == [("e1", "sent", None, None), ("p1", "sent", None, None), ("e2", "sent", None, None),
                   ("e3", "suppressed", "cap", "policy: email 2 per 1d"), ("p2", "sent", None, None)]


def test_cap_all_counts_email_push_and_sms_together_but_not_ads_or_webhooks(make):
    h = make('''
        policy { cap all 2 per 1d }
        journey "Many" {
          entry when event "A"
          send email "e1"
          add user to audience "hot"
          webhook "ping"
          send sms "s1"
          send push "p1"
          add user to audience "warm"
        }
    ''')
    h.feed([("2026-03-02 10:00", "u1", "A")])
    got = [(a.target, a.outcome, a.rule) for a in h.actions("u1")]
    assert got == [("e1", "sent", None), ("hot", "sent", None), ("ping", "sent", None), ("s1", "sent", None),
                   ("p1", "suppressed", "policy: all 2 per 1d"), ("warm", "sent", None)]


def test_journey_cap_counts_only_that_journeys_sends(make):
    h = make('''
        journey "Other" {
          entry when event "A"
          send email "o1"
          send email "o2"
        }
        journey "Capped" {
          entry when event "A"
          cap email 1 per 1d
          send email "c1"
          send email "c2"
        }
    ''')
    h.feed([("2026-03-02 10:00", "u1", "A")])
    got = [(a.target, a.outcome, a.rule) for a in h.actions("u1")]
    assert got == [("o1", "sent", None), ("o2", "sent", None), ("c1", "sent", None),
                   ("c2", "suppressed", "journey: email 1 per 1d")]


def test_policy_cap_counts_across_journeys(make):
    h = make('''
        policy { cap email 1 per 1d }
        journey "First" { entry when event "A"  send email "f" }
        journey "Second" { entry when event "A"  send email "s" }
    ''')
    h.feed([("2026-03-02 10:00", "u1", "A")])
    assert [(a.target, a.outcome) for a in h.actions("u1")] == [("f", "sent"), ("s", "suppressed")]


def test_ads_cap_on_audience_adds_and_removals_never_capped(make):
    h = make('''
        journey "Ads" {
          entry when event "A"
          cap ads 1 per 3d
          add user to audience "hot"
          add user to audience "warm"
          remove user from audience "hot"
          remove user from audience "warm"
        }
    ''')
    h.feed([("2026-03-02 10:00", "u1", "A")])
    got = [(a.kind, a.target, a.outcome, a.channel) for a in h.actions("u1")]
    assert got == [("audience_add", "hot", "sent", "ads"), ("audience_add", "warm", "suppressed", "ads"),
                   ("audience_remove", "hot", "sent", None), ("audience_remove", "warm", "sent", None)]
    assert h.state("u1").audiences == frozenset()


def test_webhook_cap(make):
    h = make('''
        policy { cap webhook 1 per 1h }
        journey "Hooks" {
          entry when event "A"
          webhook "ping"
          wait 30m
          webhook "crm_nudge"
          wait 30m
          webhook "crm_nudge"
        }
    ''')
    h.feed([("2026-03-02 10:00", "u1", "A")], until="2026-03-03")
    got = [(a.path, a.outcome, a.rule) for a in h.actions("u1")]
    assert got == [("hooks/1", "sent", None), ("hooks/3", "suppressed", "policy: webhook 1 per 1h"),
                   ("hooks/5", "sent", None)]  # exactly 1h after the first: the window has moved on


def test_dynamic_cap_applies_only_to_members(make):
    h = make('''
        segment "fatigued" = count(event "Push Dismissed", last 14d) >= 2
        policy { cap push 1 per 7d when user in segment "fatigued" }
        journey "Pushy" {
          entry when event "A"
          send push "p1"
          send push "p2"
        }
    ''')
    h.feed([("2026-03-01 10:00", "tired", "Push Dismissed"), ("2026-03-01 11:00", "tired", "Push Dismissed"),
            ("2026-03-02 10:00", "tired", "A"), ("2026-03-02 10:00", "fresh", "A")])
    assert [a.outcome for a in h.actions("fresh")] == ["sent", "sent"]
    assert [(a.outcome, a.rule) for a in h.actions("tired")] == [
        ("sent", None), ("suppressed", 'policy: push 1 per 7d when user in segment "fatigued"')]


def test_capped_sends_do_not_count_and_the_window_is_rolling(make):
    h = make('''
        policy { cap email 1 per 1d }
        journey "Daily" {
          entry when event "A"
          reenter always
          send email "d"
        }
    ''')
    h.feed([("2026-03-02 10:00", "u1", "A"),   # sent
            ("2026-03-02 22:00", "u1", "A"),   # capped (the 10:00 send is in the window)
            ("2026-03-03 10:00", "u1", "A"),   # exactly 1d after the first send: allowed; the capped one
                                               # at 22:00 does not count
            ("2026-03-03 10:00:01", "u1", "A")])  # capped again by the send just before
    assert [(a.time, a.outcome) for a in h.actions("u1")] == [
        (t("2026-03-02 10:00"), "sent"), (t("2026-03-02 22:00"), "suppressed"),
        (t("2026-03-03 10:00"), "sent"), (t("2026-03-03 10:00:01"), "suppressed")]


def test_several_rules_on_one_cap_line_all_apply(make):
    h = make('''
        policy { cap email 3 per 1d, all 1 per 1h }
        journey "J" {
          entry when event "A"
          reenter always
          send email "e"
        }
    ''')
    h.feed([("2026-03-02 10:00", "u1", "A"), ("2026-03-02 10:30", "u1", "A"), ("2026-03-02 11:00", "u1", "A"),
            ("2026-03-02 12:00", "u1", "A"), ("2026-03-02 13:00", "u1", "A")])
    assert [(a.outcome, a.rule) for a in h.actions("u1")] == [
        ("sent", None), ("suppressed", "policy: all 1 per 1h"), ("sent", None), ("sent", None),
        ("suppressed", "policy: email 3 per 1d")]


# ---------------------------------------------------------------------------------- quiet hours


QUIET = '''
    policy { quiet hours 21:00-08:00 user time }
    journey "Q" {
      entry when event "A"
      %s
      send push "q"
      send email "next"
    }
'''


def test_quiet_hours_hold_a_send_across_midnight_in_the_users_zone(make):
    h = make(QUIET % "")
    h.feed([("2026-03-02 00:00", "u1", "identify", {"timezone": "Europe/Istanbul"}),
            ("2026-03-02T22:30:00+03:00", "u1", "A")], until="2026-03-05")
    deferred, sent, nxt = h.actions("u1")
    assert (deferred.outcome, deferred.reason, deferred.time) == ("deferred", "quiet hours", t("2026-03-02 19:30"))
    assert deferred.until == t("2026-03-03T08:00:00+03:00")
    assert deferred.rule == "quiet hours 21:00-08:00 user time"
    assert (sent.outcome, sent.time, sent.id) == ("sent", t("2026-03-03T08:00:00+03:00"), deferred.id)
    assert (nxt.target, nxt.outcome, nxt.time) == ("next", "sent", t("2026-03-03T08:00:00+03:00"))


@pytest.mark.parametrize("local,held", [
    ("2026-03-02T21:00:00+03:00", True),   # start included
    ("2026-03-03T07:59:00+03:00", True),
    ("2026-03-03T08:00:00+03:00", False),  # end excluded
    ("2026-03-02T20:59:00+03:00", False),
])
def test_quiet_hours_boundaries(make, local, held):
    h = make(QUIET % "")
    h.feed([("2026-03-01 00:00", "u1", "identify", {"timezone": "Europe/Istanbul"}), (local, "u1", "A")])
    assert (h.actions("u1")[0].outcome == "deferred") is held


@pytest.mark.parametrize("at,expected", [
    # Berlin, the night of the spring-forward change: 08:00 CEST is 06:00 UTC
    ("2026-03-28T22:30:00+01:00", "2026-03-29T08:00:00+02:00"),
    # the night of the autumn change: 08:00 CET is 07:00 UTC
    ("2026-10-24T22:30:00+02:00", "2026-10-25T08:00:00+01:00"),
])
def test_quiet_hours_end_across_dst(make, at, expected):
    h = make(QUIET % "")
    h.feed([("2026-03-01 00:00", "u1", "identify", {"timezone": "Europe/Berlin"}), (at, "u1", "A")],
           until="2026-12-01")
    deferred = h.actions("u1", outcome="deferred")[0]
    assert deferred.until == t(expected)
    assert h.sent_times("u1", template="q") == [t(expected)]


def test_policy_and_journey_quiet_hours_combine(make):
    h = make(QUIET % "quiet hours 07:00-10:00 user time")
    h.feed([("2026-03-01 00:00", "u1", "identify", {"timezone": "Europe/Istanbul"}),
            ("2026-03-02T22:30:00+03:00", "u1", "A"),
            ("2026-03-01 00:00", "u2", "identify", {"timezone": "Europe/Istanbul"}),
            ("2026-03-02T09:00:00+03:00", "u2", "A")], until="2026-03-05")
    # the policy's hours end at 08:00, inside the journey's 07:00-10:00: it waits until both are over
    assert h.sent_times("u1", template="q") == [t("2026-03-03T10:00:00+03:00")]
    assert h.actions("u1", outcome="deferred")[0].until == t("2026-03-03T10:00:00+03:00")
    # outside the policy's hours but inside the journey's
    assert h.sent_times("u2", template="q") == [t("2026-03-02T10:00:00+03:00")]


def test_quiet_hours_in_a_fixed_zone(make):
    h = make('''
        journey "Q" {
          entry when event "A"
          quiet hours 21:00-08:00 in "Asia/Tokyo"
          send push "q"
        }
    ''')
    # 13:00 in New York is 03:00 the next day in Tokyo (UTC+9)
    h.feed([("2026-03-01 00:00", "u1", "identify", {"timezone": "America/New_York"}),
            ("2026-03-02T13:00:00-05:00", "u1", "A")], until="2026-03-05")
    assert h.sent_times("u1") == [t("2026-03-03T08:00:00+09:00")]
    assert h.actions("u1")[0].rule == 'quiet hours 21:00-08:00 in "Asia/Tokyo"'


def test_quiet_hours_do_not_hold_audiences_webhooks_or_set(make):
    h = make('''
        policy { quiet hours 21:00-08:00 user time }
        journey "Q" {
          entry when event "A"
          add user to audience "hot"
          webhook "ping"
          set user.late = true
          remove user from audience "hot"
          send sms "s"
        }
    ''')
    h.feed([("2026-03-02 23:00", "u1", "A")], until="2026-03-05")
    got = [(a.kind, a.outcome, a.time) for a in h.actions("u1")]
    night, morning = t("2026-03-02 23:00"), t("2026-03-03 08:00")
    assert got == [("audience_add", "sent", night), ("webhook", "sent", night), ("audience_remove", "sent", night),
                   ("sms", "deferred", night), ("sms", "sent", morning)]
    assert h.traits("u1")["late"] is True


def test_caps_are_checked_again_when_quiet_hours_end(make):
    h = make('''
        policy {
          cap email 1 per 1d
          quiet hours 21:00-08:00 user time
        }
        journey "One" { entry when event "A"  send email "one" }
        journey "Two" { entry when event "B"  send email "two" }
    ''')
    h.feed([("2026-03-02 22:00", "u1", "A"), ("2026-03-02 23:00", "u1", "B")], until="2026-03-05")
    got = [(a.target, a.outcome, a.reason, a.time) for a in h.actions("u1")]
    assert got == [("one", "deferred", "quiet hours", t("2026-03-02 22:00")),
                   ("two", "deferred", "quiet hours", t("2026-03-02 23:00")),
                   ("one", "sent", None, t("2026-03-03 08:00")),
                   ("two", "suppressed", "cap", t("2026-03-03 08:00"))]


# ---------------------------------------------------------------------------------- consent


CONSENT = '''
    journey "C" {
      entry when event "A"
      reenter always
      send email "e"
      send push "p"
      send sms "s"
      add user to audience "hot"
      webhook "ping"
    }
'''


def _outcomes(h: Harness, user: str, at: str) -> dict[str, tuple[str, str | None]]:
    return {a.kind: (a.outcome, a.reason) for a in h.actions(user) if a.time == t(at)}


def test_unsubscribed_from_one_channel(make):
    h = make(CONSENT)
    h.feed([("2026-03-02 09:00", "u1", "Unsubscribed", {"channel": "email"}), ("2026-03-02 10:00", "u1", "A")])
    assert _outcomes(h, "u1", "2026-03-02 10:00") == {
        "email": ("suppressed", "consent"), "push": ("sent", None), "sms": ("sent", None),
        "audience_add": ("sent", None), "webhook": ("sent", None)}


def test_unsubscribed_without_channel_stops_every_message(make):
    h = make(CONSENT)
    h.feed([("2026-03-02 09:00", "u1", "Unsubscribed"), ("2026-03-02 10:00", "u1", "A")])
    assert _outcomes(h, "u1", "2026-03-02 10:00") == {
        "email": ("suppressed", "consent"), "push": ("suppressed", "consent"), "sms": ("suppressed", "consent"),
        "audience_add": ("sent", None), "webhook": ("sent", None)}


def test_unsubscribed_trait_from_identify(make):
    h = make(CONSENT)
    h.feed([("2026-03-02 09:00", "u1", "identify", {"unsubscribed": True}), ("2026-03-02 10:00", "u1", "A")])
    out = _outcomes(h, "u1", "2026-03-02 10:00")
    assert {k: v for k, v in out.items() if k in ("email", "push", "sms")} == {
        "email": ("suppressed", "consent"), "push": ("suppressed", "consent"), "sms": ("suppressed", "consent")}


def test_subscribed_restores(make):
    h = make(CONSENT)
    h.feed([("2026-03-02 09:00", "u1", "Unsubscribed", {"channel": "push"}),
            ("2026-03-02 09:00", "u2", "Unsubscribed"),
            ("2026-03-02 10:00", "u1", "A"), ("2026-03-02 10:00", "u2", "A"),
            ("2026-03-02 11:00", "u1", "Subscribed", {"channel": "push"}),
            ("2026-03-02 11:00", "u2", "Subscribed"),
            ("2026-03-02 12:00", "u1", "A"), ("2026-03-02 12:00", "u2", "A")])
    assert _outcomes(h, "u1", "2026-03-02 10:00")["push"] == ("suppressed", "consent")
    assert _outcomes(h, "u2", "2026-03-02 10:00")["email"] == ("suppressed", "consent")
    for u in ("u1", "u2"):
        assert all(v == ("sent", None) for v in _outcomes(h, u, "2026-03-02 12:00").values()), u


def test_consent_is_checked_again_when_quiet_hours_end(make):
    h = make('''
        policy { quiet hours 21:00-08:00 user time }
        journey "Q" { entry when event "A"  send email "e" }
    ''')
    h.feed([("2026-03-02 22:00", "u1", "A"), ("2026-03-03 07:00", "u1", "Unsubscribed", {"channel": "email"})],
           until="2026-03-05")
    assert [(a.outcome, a.reason) for a in h.actions("u1")] == [("deferred", "quiet hours"), ("suppressed", "consent")]


def test_channel_unsubscribed_trait_from_identify(make):
    h = make(CONSENT)
    h.feed([("2026-03-02 09:00", "u1", "identify", {"sms_unsubscribed": True}), ("2026-03-02 10:00", "u1", "A")])
    out = _outcomes(h, "u1", "2026-03-02 10:00")
    assert (out["sms"], out["email"], out["push"]) == (("suppressed", "consent"), ("sent", None), ("sent", None))


def test_quiet_hours_use_the_senders_context_timezone_without_a_trait(make):
    h = make(QUIET % "")
    h.feed([("2026-03-02T22:30:00+09:00", "u1", "A", {}, {"messageId": "m1", "timezone": "Asia/Tokyo"})],
           until="2026-03-05")
    assert h.traits("u1")["timezone"] == "Asia/Tokyo"
    assert h.sent_times("u1", template="q") == [t("2026-03-03T08:00:00+09:00")]
