"""The engine's semantics, one rule per test, on a virtual clock (docs/language.md, "How journeys run"
and "Semantics that must hold"). Waits, delivery and identity have their own files."""

from __future__ import annotations

from datetime import timedelta

import pytest

from engine.core.effects import action_id

from engine.core.program import Program

from .engine_helpers import Harness, compile_source, t


# ---------------------------------------------------------------------------------- entry


def test_entry_by_event_with_where_and_as(make):
    h = make('''
        journey "Big orders" {
          entry when event "Order Completed" where revenue >= 200 as order
          send email "thanks" with { total: order.revenue, id: order.order_id }
        }
    ''')
    h.feed([
        ("2026-03-02 10:00", "u1", "Order Completed", {"revenue": 50, "order_id": "o1"}),
        ("2026-03-02 10:00", "u2", "Order Completed", {"revenue": 250, "order_id": "o2"}),
        ("2026-03-02 10:00", "u3", "Product Viewed", {"revenue": 500}),
    ])
    assert [e.user for e in h.entries()] == ["u2"]
    [a] = h.sent()
    assert a.user == "u2" and a.data == {"total": 250, "id": "o2"}
    assert a.named["order"]["properties"] == {"revenue": 250, "order_id": "o2"}
    assert a.named["order"]["timestamp"] == "2026-03-02T10:00:00Z"


def test_first_event_entry_only_on_the_first_matching_event_ever(make):
    h = make('''
        journey "First" {
          entry when first event "Order Completed"
          reenter always
          send email "welcome"
        }
    ''')
    h.feed([
        ("2026-03-02 10:00", "u1", "Order Completed"),
        ("2026-03-05 10:00", "u1", "Order Completed"),  # the first run ended long ago
    ])
    assert len(h.entries("u1")) == 1
    assert len(h.sent("u1")) == 1
    assert h.transitions("u1", kind="not_entered")


def test_first_event_with_where_ignores_earlier_events_that_do_not_match(make):
    h = make('''
        journey "First big" {
          entry when first event "Order Completed" where revenue >= 100
          send email "welcome"
        }
    ''')
    h.feed([
        ("2026-03-01 10:00", "u1", "Order Completed", {"revenue": 10}),
        ("2026-03-02 10:00", "u1", "Order Completed", {"revenue": 150}),
        ("2026-03-03 10:00", "u1", "Order Completed", {"revenue": 150}),
    ])
    [e] = h.entries("u1")
    assert e.time == t("2026-03-02 10:00")


# ---------------------------------------------------------------------------------- reenter


REENTER = '''
    journey "R" {
      entry when event "A"
      %s
      wait 1d
      send email "r"
    }
'''


def test_reenter_never_is_the_default(make):
    h = make(REENTER % "")
    h.feed([("2026-03-02 10:00", "u1", "A"), ("2026-03-10 10:00", "u1", "A")])
    assert len(h.entries("u1")) == 1


def test_reenter_always_enters_again_after_the_run_ended_but_not_on_top(make):
    h = make(REENTER % "reenter always")
    h.feed([
        ("2026-03-02 10:00", "u1", "A"),
        ("2026-03-02 12:00", "u1", "A"),  # in flight: not on top
        ("2026-03-04 10:00", "u1", "A"),  # ended on the 3rd
    ])
    assert [e.time for e in h.entries("u1")] == [t("2026-03-02 10:00"), t("2026-03-04 10:00")]
    [refused] = h.transitions("u1", kind="not_entered")
    assert "already in the journey" in refused.detail
    assert [e.entry for e in h.entries("u1")] == [1, 2]


def test_reenter_after_counts_from_the_previous_entry_not_the_exit(make):
    h = make(REENTER % "reenter after 2d")
    h.feed([
        ("2026-03-02 10:00", "u1", "A"),     # enters; exits 03-03 10:00
        ("2026-03-04 09:59", "u1", "A"),     # 1d23h59m after the entry: too early (though 1d after the exit)
        ("2026-03-04 10:00", "u1", "A"),     # exactly 2d after the entry: allowed
    ])
    assert [e.time for e in h.entries("u1")] == [t("2026-03-02 10:00"), t("2026-03-04 10:00")]


# ---------------------------------------------------------------------------------- exit


EXIT_DURING = '''
    journey "X" {
      entry when event "A"
      exit when event "Stop"
      on exit { webhook "ping" }
      %s
      send email "after"
    }
'''


@pytest.mark.parametrize("wait", [
    "wait 2d",
    "wait until 10:00 user time",
    'wait for event "B" up to 2d { on timeout { send email "timeout" } }',
])
def test_exit_when_event_during_each_kind_of_wait(make, wait):
    h = make(EXIT_DURING % wait)
    h.feed([("2026-03-02 12:00", "u1", "A"), ("2026-03-02 13:00", "u1", "Stop")], until="2026-03-10")
    assert h.actions("u1", kind="email") == []
    [ex] = h.transitions("u1", kind="exited")
    assert ex.detail == 'exit when event "Stop"' and ex.time == t("2026-03-02 13:00")
    [hook] = h.actions("u1", kind="webhook")
    assert hook.path == "x/on_exit/1" and hook.outcome == "sent"
    assert h.in_flight("u1") == {}


def test_exit_when_event_drops_a_send_held_by_quiet_hours(make):
    h = make('''
        journey "Q" {
          entry when event "A"
          exit when event "Stop"
          quiet hours 21:00-08:00 in "UTC"
          send push "late"
          send email "next"
        }
    ''')
    h.feed([("2026-03-02 22:30", "u1", "A"), ("2026-03-03 06:00", "u1", "Stop")], until="2026-03-04")
    deferred, dropped = h.actions("u1")
    assert deferred.outcome == "deferred" and deferred.until == t("2026-03-03 08:00")
    assert dropped.outcome == "suppressed" and dropped.reason == "exit" and dropped.id == deferred.id
    assert dropped.time == t("2026-03-03 06:00")
    assert h.actions("u1", template="next") == []


def test_exit_when_user_leaves_segment(make):
    h = make('''
        segment "carters" = happened(event "Product Added", last 1d)
        journey "S" {
          entry when event "Product Added"
          exit when user leaves segment "carters"
          on exit { send push "bye" }
          wait 3d
          send email "late"
        }
    ''')
    h.feed([("2026-03-02 10:00", "u1", "Product Added")])
    # the segment's window passes while the user waits: they leave at the next evaluation of the
    # segment (after their events and profile updates; an identify re-evaluates every segment)
    h.feed([("2026-03-04 10:00", "u1", "identify", {"x": 1})], until="2026-03-10")
    assert h.actions("u1", template="late") == []
    [ex] = h.transitions("u1", kind="exited")
    assert ex.detail == 'exit when user leaves segment "carters"' and ex.time == t("2026-03-04 10:00")
    assert [a.path for a in h.sent("u1")] == ["s/on_exit/1"]


def test_exit_when_condition_after_an_event_and_before_a_send(make):
    src = '''
        journey "C" {
          entry when event "A"
          exit when user.vip == true
          exit when count(event "Tick", last 1d) >= 2
          wait 1h
          send email "one"
        }
    '''
    h = make(src)
    h.feed([("2026-03-02 10:00", "u1", "A"), ("2026-03-02 10:10", "u1", "identify", {"vip": True}),
            ("2026-03-02 10:00", "u2", "A"), ("2026-03-02 10:10", "u2", "Tick"),
            ("2026-03-02 10:20", "u2", "Tick")], until="2026-03-03")
    assert h.sent() == []
    assert [x.detail for x in h.transitions("u1", kind="exited")] == ["exit when user.vip == true"]
    assert h.transitions("u1", kind="exited")[0].time == t("2026-03-02 10:10")
    assert [x.detail for x in h.transitions("u2", kind="exited")] == ['exit when count(event "Tick", last 1d) >= 2']
    assert h.transitions("u2", kind="exited")[0].time == t("2026-03-02 10:20")


def test_exit_when_condition_checked_again_before_a_send(make):
    # a set step makes the condition true without any event or profile update from outside
    h = make('''
        journey "C" {
          entry when event "A"
          exit when user.done == true
          set user.done = true
          send email "never"
        }
    ''')
    h.feed([("2026-03-02 10:00", "u1", "A")])
    assert h.actions("u1") == []
    [ex] = h.transitions("u1", kind="exited")
    assert ex.detail == "exit when user.done == true"


@pytest.mark.parametrize("how,events,detail", [
    ("completed", [], "completed"),
    ("exit step", [("2026-03-02 10:05", "u1", "B")], "exit step"),
    ("exit when", [("2026-03-02 10:05", "u1", "Stop")], 'exit when event "Stop"'),
])
def test_on_exit_runs_for_every_kind_of_end(make, how, events, detail):
    h = make('''
        journey "E" {
          entry when event "A"
          exit when event "Stop"
          on exit { send push "bye"  add user to audience "hot"  set user.left = true }
          wait for event "B" up to 1h { on event { exit } }
        }
    ''')
    h.feed([("2026-03-02 10:00", "u1", "A"), *events], until="2026-03-03")
    ends = h.transitions("u1", kind="completed") + h.transitions("u1", kind="exited")
    assert [e.detail for e in ends] == [detail]
    assert [(a.path, a.kind) for a in h.sent("u1")] == [("e/on_exit/1", "push"), ("e/on_exit/2", "audience_add")]
    assert h.traits("u1")["left"] is True
    assert h.in_flight("u1") == {}


# ---------------------------------------------------------------------------------- goals


GOAL = '''
    journey "G" {
      entry when event "Order Completed"
      reenter always
      goal "again" = event "Order Completed" within 3d
      goal "big" = event "Order Completed" where revenue >= 100 within 3d
      send email "thanks"
    }
'''


def test_goal_counted_within_the_window_also_after_completion(make):
    h = make(GOAL)
    h.feed([("2026-03-02 10:00", "u1", "Order Completed", {"revenue": 10})])
    assert h.transitions("u1", kind="completed")
    assert h.conversions() == []  # the entry event itself never counts
    h.feed([("2026-03-04 10:00", "u1", "Order Completed", {"revenue": 150})])
    convs = h.conversions("u1")
    assert sorted(c.goal for c in convs) == ["again", "big"]
    assert all(c.entry == 1 for c in convs)


def test_goal_not_counted_after_the_window(make):
    h = make(GOAL.replace("reenter always", ""))
    h.feed([("2026-03-02 10:00", "u1", "Order Completed", {"revenue": 10}),
            ("2026-03-05 10:00:01", "u1", "Order Completed", {"revenue": 150})])
    assert h.conversions() == []


def test_goal_counted_for_the_control_group(make):
    h = make('''
        journey "G" {
          entry when event "A"
          goal "bought" = event "Order Completed" within 7d
          split { 50% "x" { send email "x" } 50% control }
        }
    ''')
    users = [f"u{i}" for i in range(40)]
    h.feed([("2026-03-02 10:00", u, "A") for u in users] + [("2026-03-03 10:00", u, "Order Completed") for u in users])
    arms = {c.user: dict(c.arms) for c in h.conversions(goal="bought")}
    assert len(arms) == 40
    assert {a["g/1"] for a in arms.values()} == {"x", "control"}
    control = [u for u, a in arms.items() if a["g/1"] == "control"]
    assert all(h.actions(u) == [] for u in control)


# ---------------------------------------------------------------------------------- split


SPLIT = '''
    journey "Split" {
      entry when event "A"
      split {
        45% "discount" { send email "welcome_discount" }
        45% "thanks"   { send email "welcome_thanks" }
        10% control
      }
      STEPS
      send push "after"
    }
'''


def _arms(h: Harness) -> dict[str, str]:
    out = {}
    for u in sorted({e.user for e in h.entries()}):
        s = [a for a in h.actions(u) if a.kind == "email"]
        out[u] = s[0].target if s else "control"
    return out


def test_split_is_stable_across_runs_and_versions(make):
    users = [f"user-{i}" for i in range(200)]
    events = [("2026-03-02 10:00", u, "A") for u in users]
    a = make(SPLIT.replace("STEPS", "wait 1h")).feed(events, until="2026-03-04")
    b = make(SPLIT.replace("STEPS", "wait 1h")).feed(events, until="2026-03-04")
    c = make(SPLIT.replace("STEPS", "wait 2h")).feed(events, until="2026-03-04")  # a new version
    assert a.entries()[0].version != c.entries()[0].version
    assert _arms(a) == _arms(b) == _arms(c)


def test_split_proportions_and_control_continues_without_arm_actions(make):
    users = [f"user-{i}" for i in range(2000)]
    h = make(SPLIT.replace("STEPS", "")).feed([("2026-03-02 10:00", u, "A") for u in users])
    arms = _arms(h)
    counts = {k: sum(1 for v in arms.values() if v == k) for k in ("welcome_discount", "welcome_thanks", "control")}
    assert abs(counts["welcome_discount"] / 2000 - 0.45) < 0.03
    assert abs(counts["welcome_thanks"] / 2000 - 0.45) < 0.03
    assert abs(counts["control"] / 2000 - 0.10) < 0.02
    control = [u for u, v in arms.items() if v == "control"]
    for u in control:
        assert [a.target for a in h.actions(u)] == ["after"]
        assert h.transitions(u, path="split/1/control")


# ---------------------------------------------------------------------------------- if / else if / else


def test_if_else_if_else_on_traits_properties_and_history(make):
    h = make('''
        segment "browsers" = count(event "Product Viewed", last 7d) >= 3
        journey "B" {
          entry when event "Checkout Started" as c
          reenter always
          if user.vip == true {
            send email "vip"
          } else if c.revenue >= 200 {
            send email "big"
          } else if user in segment "browsers" {
            send email "browser"
          } else {
            send email "plain"
          }
        }
    ''')
    h.feed([
        ("2026-03-01 10:00", "vip", "identify", {"vip": True}),
        ("2026-03-02 10:00", "vip", "Checkout Started", {"revenue": 500}),
        ("2026-03-02 10:00", "big", "Checkout Started", {"revenue": 500}),
        *[("2026-03-01 10:0%d" % i, "br", "Product Viewed") for i in range(3)],
        ("2026-03-02 10:00", "br", "Checkout Started", {"revenue": 10}),
        ("2026-02-01 10:00", "old", "Product Viewed"), ("2026-02-01 10:01", "old", "Product Viewed"),
        ("2026-02-01 10:02", "old", "Product Viewed"),  # outside last 7d by 03-02
        ("2026-03-02 10:00", "old", "Checkout Started", {"revenue": 10}),
    ])
    got = {a.user: (a.target, a.path) for a in h.sent()}
    assert got == {"vip": ("vip", "b/1/then/1"), "big": ("big", "b/1/elif1/1"),
                   "br": ("browser", "b/1/elif2/1"), "old": ("plain", "b/1/else/1")}


# ---------------------------------------------------------------------------------- segment entry


def test_segment_entry_on_becoming_a_member_not_again_while_a_member(make):
    h = make('''
        segment "engaged" = count(event "Product Viewed", last 1d) >= 2
        journey "Engaged" {
          entry when user enters segment "engaged"
          reenter always
          send email "engaged"
        }
    ''')
    h.feed([
        ("2026-03-02 10:00", "u1", "Product Viewed"),
        ("2026-03-02 11:00", "u1", "Product Viewed"),   # becomes a member: enters
        ("2026-03-02 12:00", "u1", "Product Viewed"),   # still a member: no new entry
        ("2026-03-04 10:00", "u1", "Product Viewed"),   # left (window passed), not yet back
        ("2026-03-04 11:00", "u1", "Product Viewed"),   # member again: enters again
    ])
    assert [e.time for e in h.entries("u1")] == [t("2026-03-02 11:00"), t("2026-03-04 11:00")]


def test_segment_entry_respects_reenter_never(make):
    h = make('''
        segment "engaged" = count(event "Product Viewed", last 1d) >= 2
        journey "Engaged" {
          entry when user enters segment "engaged"
          send email "engaged"
        }
    ''')
    h.feed([("2026-03-02 10:00", "u1", "Product Viewed"), ("2026-03-02 11:00", "u1", "Product Viewed"),
            ("2026-03-04 10:00", "u1", "Product Viewed"), ("2026-03-04 11:00", "u1", "Product Viewed")])
    assert len(h.entries("u1")) == 1


# ---------------------------------------------------------------------------------- dedupe, order


EVERY_A = '''
    journey "D" {
      entry when event "A"
      reenter always
      send email "d"
    }
'''


def test_repeated_message_id_is_ignored(make):
    h = make(EVERY_A)
    h.feed([("2026-03-02 10:00", "u1", "A", {}, {"messageId": "same"}),
            ("2026-03-02 10:05", "u1", "A", {}, {"messageId": "same"})])
    assert len(h.entries("u1")) == 1 and len(h.sent("u1")) == 1
    dup = [e for e in h.effects if getattr(e, "kind", None) == "duplicate"]
    assert len(dup) == 1


def test_a_message_id_repeated_after_the_dedupe_window_is_a_new_event(make, tmp_path):
    """[ingest] dedupe_days (7 by default): a repeat within it is dropped, a later one taken, in
    the dry-run as in the daemon (whose retention deletes the messageIds past it)."""
    h = make(EVERY_A)
    h.feed([("2026-03-02 10:00", "u1", "A", {}, {"messageId": "same"}),
            ("2026-03-09 10:00", "u1", "A", {}, {"messageId": "same"}),   # 7 days on: still a repeat
            ("2026-03-09 10:01", "u1", "A", {}, {"messageId": "same"}),   # past them: new
            ("2026-03-10 10:00", "u1", "A", {}, {"messageId": "same"})])  # a repeat of that one
    assert len(h.entries("u1")) == 2
    assert len([e for e in h.effects if getattr(e, "kind", None) == "duplicate"]) == 2

    from journeys.checker import check_and_compile
    from journeys.project import load_project

    root = tmp_path / "month"
    compile_source(root, 'journey "D" {\n  entry when event "A"\n  send email "d"\n}\n')
    (root / "journeys.toml").write_text((root / "journeys.toml").read_text() + "\n[ingest]\ndedupe_days = 30\n")
    _, compiled = check_and_compile(load_project(root))
    assert Program.build(compiled).dedupe == timedelta(days=30)


TWO_USERS = '''
    segment "active" = count(event "Tick", last 1d) >= 2
    journey "O" {
      entry when event "A" as a
      reenter always
      exit when event "Stop"
      goal "g" = event "Tick" within 1d
      wait 30m
      if user in segment "active" { send email "active" } else { send email "idle" }
      wait for event "Tick" up to 1h
      send push "done"
    }
'''


def _per_user(h: Harness) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for e in h.json():
        out.setdefault(e["user"], []).append(e)
    return out


def test_interleaving_of_users_does_not_change_results(make):
    # u1's and u2's events share timestamps; two time-sorted feeds differ only in how the users'
    # events interleave at equal times (each user's own order kept)
    u1 = [("2026-03-02 10:00", "u1", "A"), ("2026-03-02 10:10", "u1", "Tick"), ("2026-03-02 10:20", "u1", "Tick"),
          ("2026-03-02 11:30", "u1", "Tick"), ("2026-03-02 13:00", "u1", "A")]
    u2 = [("2026-03-02 10:00", "u2", "A"), ("2026-03-02 10:10", "u2", "Tick"), ("2026-03-02 11:30", "u2", "Stop"),
          ("2026-03-02 13:00", "u2", "A")]
    one = sorted(u1 + u2, key=lambda m: t(m[0]))  # stable: u1 first at equal times
    two = sorted(u2 + u1, key=lambda m: t(m[0]))  # u2 first
    assert one != two
    a = make(TWO_USERS).feed(one, until="2026-03-05")
    b = make(TWO_USERS).feed(two, until="2026-03-05")
    assert a.sent("u1") and a.sent("u2")
    assert _per_user(a) == _per_user(b)
    # and a run of one user alone gives that user the same as the mixed runs
    c = make(TWO_USERS).feed(u1, until="2026-03-05")
    assert _per_user(c)["u1"] == _per_user(a)["u1"]


def test_timers_due_at_or_before_an_event_fire_before_it(make):
    h = make('''
        journey "T" {
          entry when event "A"
          exit when event "Stop"
          wait 1h
          send email "on time"
        }
    ''')
    # the timer is due exactly when "Stop" arrives: it fires first, so the email goes out
    h.feed([("2026-03-02 10:00", "u1", "A"), ("2026-03-02 11:00", "u1", "Stop"),
            ("2026-03-02 10:00", "u2", "A"), ("2026-03-02 10:59:59", "u2", "Stop")])
    assert [a.time for a in h.sent("u1")] == [t("2026-03-02 11:00")]
    assert h.sent("u2") == []
    # a timer of another user due before the event also fires at its own moment
    order = [(e.time, e.user) for e in h.effects if getattr(e, "kind", None) in ("resumed", "track")]
    assert order == sorted(order, key=lambda x: x[0])


# ---------------------------------------------------------------------------------- ids, determinism


def test_action_ids_are_deterministic_and_unique(make):
    src = '''
        journey "I" {
          entry when event "A"
          reenter always
          send email "one"
          send email "two"
          wait 1d
          send email "one"
        }
    '''
    events = [("2026-03-02 10:00", u, "A") for u in ("u1", "u2")] + [("2026-03-05 10:00", "u1", "A")]
    a = make(src).feed(events, until="2026-03-10")
    b = make(src).feed(events, until="2026-03-10")
    assert [x.id for x in a.actions()] == [x.id for x in b.actions()]
    keys = {(x.journey, x.version, x.user, x.entry, x.path) for x in a.actions()}
    assert len(keys) == len(a.actions()) == 9
    assert len({x.id for x in a.actions()}) == 9
    x = a.actions()[0]
    assert x.id == action_id(x.journey, x.version, x.user, x.entry, x.path)


def test_the_same_run_twice_gives_identical_effects(make):
    src = TWO_USERS
    events = [("2026-03-02 10:00", "u1", "A"), ("2026-03-02 10:05", "u2", "A"), ("2026-03-02 10:10", "u1", "Tick"),
              ("2026-03-02 10:20", "u1", "Tick"), ("2026-03-02 12:00", "u2", "Stop"),
              ("2026-03-02 10:30", ("anon", "a1"), "A"), ("2026-03-02 10:45", ("u3", "a1"), "identify", {"k": 1})]
    events.sort(key=lambda m: t(m[0]))
    a = make(src).feed(events, until="2026-03-05")
    b = make(src).feed(events, until="2026-03-05")
    assert a.json() == b.json()
    assert len(a.json()) > 20


def test_timer_fires_at_its_own_moment_in_the_dry_run(make):
    h = make('''
        journey "W" {
          entry when event "A"
          wait 90m
          send email "w"
        }
    ''')
    h.feed([("2026-03-02 10:00", "u1", "A"), ("2026-03-02 23:00", "u2", "Other")])
    [a] = h.sent("u1")
    assert a.time == t("2026-03-02 10:00") + timedelta(minutes=90)


def test_leaving_a_windowed_segment_is_noticed_at_any_later_event(make):
    # membership is evaluated again after each of the user's events: a window that has passed
    # shows at the next event, even one the segment does not read
    h = make('''
        segment "carters" = happened(event "Product Added", last 1d)
        journey "S" {
          entry when event "Product Added"
          exit when user leaves segment "carters"
          wait 3d
          send email "late"
        }
    ''')
    h.feed([("2026-03-02 10:00", "u1", "Product Added"), ("2026-03-04 10:00", "u1", "Page Viewed")],
           until="2026-03-10")
    assert h.actions("u1") == []
    [ex] = h.transitions("u1", kind="exited")
    assert ex.time == t("2026-03-04 10:00")


def test_entering_a_windowed_segment_is_noticed_at_any_later_event(make):
    # "not happened(..., last 1d)": the user joins when the window passes, seen at their next event
    h = make('''
        segment "quiet" = happened(event "Signed Up") and not happened(event "Product Viewed", last 1d)
        journey "Q" {
          entry when user enters segment "quiet"
          send email "miss_you"
        }
    ''')
    h.feed([("2026-03-02 10:00", "u1", "Product Viewed"), ("2026-03-02 10:05", "u1", "Signed Up"),
            ("2026-03-04 10:00", "u1", "Page Viewed")])
    assert h.sent_times("u1") == [t("2026-03-04 10:00")]


def test_a_goal_converts_once_per_entry(make):
    h = make(GOAL.replace("reenter always", ""))
    h.feed([("2026-03-02 10:00", "u1", "Order Completed", {"revenue": 10}),
            ("2026-03-03 10:00", "u1", "Order Completed", {"revenue": 10}),
            ("2026-03-03 11:00", "u1", "Order Completed", {"revenue": 10})])
    assert [(c.goal, c.time) for c in h.conversions("u1")] == [("again", t("2026-03-03 10:00"))]


# ---------------------------------------------------------------------------------- versions, clocks


def test_a_user_stays_on_the_version_they_entered(make, tmp_path):
    from engine.core.program import Program
    from engine.runtime.loop import Engine, handle_all

    from .engine_helpers import compile_source, message

    v1 = '''
        journey "V" {
          entry when event "A"
          wait 1d
          send email "old"
        }
    '''
    h = make(v1)
    h.feed([("2026-03-02 10:00", "u1", "A")])
    old = h.program.journeys["V"]
    new = compile_source(tmp_path / "v2", v1.replace('"old"', '"new"'))
    program = Program.build(new, older=[old])
    engine = Engine(program, h.store, h.clock, h.recorder)  # a reload: same store, clock and sink
    handle_all(engine, [message(("2026-03-02 12:00", "u2", "A"), 100)], until=t("2026-03-05"))
    assert [(a.user, a.target, a.version) for a in h.sent()] == [
        ("u1", "old", old.version), ("u2", "new", new.journeys["V"].version)]
    assert old.version != new.journeys["V"].version


def test_the_system_clock_gives_the_wall_time(make):
    from freezegun import freeze_time

    from engine.runtime.clock import SystemClock
    from engine.runtime.loop import Engine

    from .engine_helpers import message

    h = make('''
        journey "W" {
          entry when event "A"
          wait 1h
          send email "w"
        }
    ''')
    with freeze_time("2026-03-02 10:00:00"):
        clock = SystemClock()
        assert clock.now() == t("2026-03-02 10:00") and clock.now().tzinfo is not None
        engine = Engine(h.program, h.store, clock, h.recorder)
        # the daemon runs on the wall clock: an event stamped earlier is taken now
        engine.handle(message(("2026-03-01 08:00", "u1", "A")))
        assert h.state("u1").wake == t("2026-03-02 11:00")
    with freeze_time("2026-03-02 11:00:00"):
        engine.run_due(clock.now())
    assert h.sent_times("u1") == [t("2026-03-02 11:00")]
