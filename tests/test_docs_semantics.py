"""What docs/language.md and docs/engine.md promise about the engine's less obvious corners, pinned
against the real engine (issue 17, point 9): the split's hash (its Python is taken from the page and
run), what a send dropped by an exit records, page and screen names as properties, when segments are
evaluated, `first ... where`, and every boundary (goal windows, `reenter after`, `wait until`, a
timer and an event at one moment, quiet hours, history windows, caps)."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest

from engine.core.effects import action_id, format_effect
from engine.core.messages import Message, parse_message
from engine.core.step import split_bucket
from engine.dryrun.simulate import SendsWriter
from journeys.fmt import format_text
from journeys.graph import slugify
from journeys.parser import parse_text

from .engine_helpers import Harness, t

ROOT = Path(__file__).resolve().parent.parent
LANGUAGE = ROOT / "docs" / "language.md"


def _section(heading: str) -> str:
    """The text under a heading of docs/language.md, up to the next heading of any level (a `#`
    line inside a fenced block is a comment, not a heading)."""
    lines, out, fenced, inside = LANGUAGE.read_text(encoding="utf-8").splitlines(keepends=True), [], False, False
    for line in lines:
        if not fenced and line.startswith("#"):
            if inside:
                break
            inside = line.rstrip("\n").lstrip("#").strip() == heading
            continue
        if line.startswith("```"):
            fenced = not fenced
        if inside:
            out.append(line)
    assert out, f"no heading {heading!r} in docs/language.md"
    return "".join(out)


def _blocks(text: str, kind: str) -> list[str]:
    return [b for k, b in re.findall(r"^```([^\n]*)\n(.*?)^```", text, re.DOTALL | re.MULTILINE) if k == kind]


# ---------------------------------------------------------------------------------- the page itself


@pytest.mark.parametrize("heading", [
    "Which arm a user lands in", "Exit and on exit", "Events and users", "entry",
    "Moments that coincide",
])
def test_the_examples_of_these_sections_parse_in_the_formatters_layout(heading):
    for block in _blocks(_section(heading), "journey"):
        result = parse_text(block, "example.journey")
        assert not result.diagnostics, result.diagnostics
        assert format_text(block, "example.journey").output == block


# ---------------------------------------------------------------------------------- 1. the split's hash


def _docs_split_arm():
    """`split_arm` as the page writes it: the ```python block under "Which arm a user lands in",
    run as it stands (its own asserts included)."""
    [code] = _blocks(_section("Which arm a user lands in"), "python")
    namespace: dict = {}
    exec(compile(code, "docs/language.md", "exec"), namespace)  # noqa: S102 - the page's own example
    return namespace["split_arm"]


THREE_ARMS = '''
    journey "Spring sale: test" {
      entry when event "A"
      PRE
      split {
        33.3% "Big discount" { send email "big" }
        23.4% "thanks"       { send email "thanks" }
        33.3% "Free ship!"   { send email "ship" }
        10% control
      }
    }
'''
ARMS = [("Big discount", 33.3), ("thanks", 23.4), ("Free ship!", 33.3)]


def _engine_arms(h: Harness) -> dict[str, str | None]:
    """Each user's arm as the engine recorded it (the split transition's path), by arm name."""
    by_slug = {slugify(name): name for name, _ in ARMS}
    out: dict[str, str | None] = {}
    for tr in h.transitions(kind="split"):
        label = tr.path.rsplit("/", 1)[1]
        out[tr.user] = None if label == "control" else by_slug[label]
    return out


def test_the_docs_python_gives_every_users_arm(make):
    split_arm = _docs_split_arm()
    users = [f"user-{i}" for i in range(300)] + ["ünïcödé", "a|b", "42"]
    h = make(THREE_ARMS.replace("PRE", "")).feed([("2026-03-02 10:00", u, "A") for u in users])
    engine = _engine_arms(h)
    assert set(engine) == set(users)
    docs = {u: split_arm("Spring sale: test", ARMS, u) for u in users}
    assert docs == engine
    assert {a for a in engine.values()} == {"Big discount", "thanks", "Free ship!", None}
    # the same bucket as the engine's function, shown in the trace with two decimals
    for tr in h.transitions(kind="split")[:20]:
        bucket = split_bucket("Spring sale: test", "Big discount|thanks|Free ship!", tr.user)
        assert tr.detail.endswith(f"(bucket {bucket:.2f})")


def test_the_split_hash_uses_the_profile_id_after_stitching(make):
    """A run that entered under an anonymous id and reaches the split after an identify lands in
    the arm of the known user id; its action ids keep the anonymous id."""
    split_arm = _docs_split_arm()
    pairs = [(f"known-{i}", f"anon-{i}") for i in range(60)]
    h = make(THREE_ARMS.replace("PRE", "wait 1h"))
    h.feed([("2026-03-02 10:00", ("anon", a), "A") for _, a in pairs]
           + [("2026-03-02 10:30", (u, a), "identify", {}) for u, a in pairs], until="2026-03-03")
    engine = _engine_arms(h)
    assert set(engine) == {u for u, _ in pairs}
    assert engine == {u: split_arm("Spring sale: test", ARMS, u) for u, _ in pairs}
    differ = [u for u, a in pairs
              if split_arm("Spring sale: test", ARMS, u) != split_arm("Spring sale: test", ARMS, a)]
    assert len(differ) > 20  # the test tells the two ids apart
    for a in h.sent():
        anon = a.user.replace("known", "anon")
        assert a.id == action_id(a.journey, a.version, anon, a.entry, a.path)


def test_two_splits_with_the_same_arm_names_agree(make):
    h = make('''
        journey "Twice" {
          entry when event "A"
          split { 50% "a" { send email "first_a" } 50% "b" { send email "first_b" } }
          split { 50% "a" { send email "second_a" } 50% "b" { send email "second_b" } }
        }
    ''')
    h.feed([("2026-03-02 10:00", f"u{i}", "A") for i in range(100)])
    arms = {}
    for a in h.sent():
        arms.setdefault(a.user, []).append(a.target.split("_")[1])
    assert all(first == second for first, second in arms.values())
    assert {first for first, _ in arms.values()} == {"a", "b"}


# ---------------------------------------------------------------------------------- 2. a send dropped by an exit


LATE_PUSH = '''
    segment "carters" = happened(event "Product Added", last 1d)
    journey "Late push" {
      entry when event "Checkout Started"
      exit when event "Order Completed"
      exit when user leaves segment "carters"
      exit when user.vip == true
      quiet hours 21:00-08:00 in "UTC"
      send push "finish_checkout"
    }
'''


@pytest.mark.parametrize("before,ending,rule", [
    ([], ("2026-03-03 06:00", "u1", "Order Completed"), 'exit when event "Order Completed"'),
    ([("2026-03-02 05:00", "u1", "Product Added")],  # a member until 03-03 05:00, seen at the next event
     ("2026-03-03 06:00", "u1", "Page Viewed"), 'exit when user leaves segment "carters"'),
    ([], ("2026-03-03 06:00", "u1", "identify", {"vip": True}), "exit when user.vip == true"),
])
def test_a_held_send_dropped_by_an_exit_has_the_exit_as_its_rule(make, tmp_path, before, ending, rule):
    h = make(LATE_PUSH)
    h.feed([*before, ("2026-03-02 22:30", "u1", "Checkout Started"), ending], until="2026-03-04")
    deferred, dropped = h.actions("u1")
    assert (deferred.outcome, deferred.reason, deferred.until) == ("deferred", "quiet hours", t("2026-03-03 08:00"))
    assert deferred.rule == 'quiet hours 21:00-08:00 in "UTC"'
    assert (dropped.outcome, dropped.reason, dropped.rule) == ("suppressed", "exit", rule)
    assert dropped.id == deferred.id and dropped.time == t("2026-03-03 06:00")
    [exited] = h.transitions("u1", kind="exited")
    assert exited.detail == rule
    # as the --sends file writes them
    sends = SendsWriter(tmp_path / "sends.jsonl")
    sends.emit(h.effects)
    sends.close()
    lines = [orjson.loads(x) for x in (tmp_path / "sends.jsonl").read_bytes().splitlines()]
    assert [(x["outcome"], x["reason"], x["rule"], x["until"]) for x in lines] == [
        ("deferred", "quiet hours", 'quiet hours 21:00-08:00 in "UTC"', "2026-03-03T08:00:00Z"),
        ("suppressed", "exit", rule, None)]
    # and as the trace prints them
    assert format_effect(dropped) == (f'2026-03-03T06:00:00Z  Late push #1  push "finish_checkout" suppressed by '
                                      f'exit ({rule})  [late_push/1, id {dropped.id}]')
    assert format_effect(exited) == f"2026-03-03T06:00:00Z  Late push #1  exited: {rule}"


def test_the_late_push_example_prints_what_the_page_says(make):
    section = _section("Exit and on exit")
    [source] = _blocks(section, "journey")
    [trace] = _blocks(section, "text")
    h = make(source)
    h.feed([("2026-03-02 22:30", "u1", "Checkout Started"), ("2026-03-03 06:00", "u1", "Order Completed")],
           until="2026-03-04")
    deferred, dropped = h.actions("u1")
    lines = [format_effect(e) for e in h.effects
             if e.time == t("2026-03-03 06:00") and format_effect(e).split("  ")[1] == "Late push #1"]
    assert lines == trace.replace("id ...", f"id {dropped.id}").splitlines()
    flat = " ".join(section.split())
    for key in ("outcome", "reason", "rule", "until"):
        for action in (deferred, dropped):
            value = action.to_json()[key]
            if value is not None:
                assert f'"{key}": {orjson.dumps(value).decode()}' in flat, (key, value)


def test_a_held_send_dropped_by_a_merge_says_merged_with_another_identity(make, tmp_path):
    h = make(LATE_PUSH)
    h.feed([("2026-03-02 21:30", "u1", "Checkout Started"),              # u1's run, entered first: kept
            ("2026-03-02 22:00", ("anon", "dev"), "Checkout Started"),   # the device's run: dropped
            ("2026-03-02 23:00", ("u1", "dev"), "identify", {})], until="2026-03-03 09:00")
    [dropped] = h.actions(outcome="suppressed")
    [held] = [a for a in h.actions(outcome="deferred") if a.user == "dev"]
    assert (dropped.reason, dropped.rule, dropped.user) == ("exit", "merged with another identity", "u1")
    assert dropped.id == held.id and dropped.time == t("2026-03-02 23:00")
    assert format_effect(dropped).endswith(
        'push "finish_checkout" suppressed by exit (merged with another identity)  '
        f"[late_push/1, id {dropped.id}]")
    assert dropped.to_json()["rule"] == "merged with another identity"
    assert [(a.user, a.time) for a in h.sent()] == [("u1", t("2026-03-03 08:00"))]


# ---------------------------------------------------------------------------------- 3. page and screen


def _call(kind: str, user: str, at: str, **fields) -> Message:
    """A page or screen call as the ingest and the log readers parse it."""
    raw = {"type": kind, "userId": user, "timestamp": at, "messageId": f"{kind}-{user}-{at}", **fields}
    return parse_message(raw)


def test_page_name_and_category_and_screen_name_are_properties(make):
    h = make('''
        journey "Docs follow-up" {
          entry when event "Page Viewed" where category == "Docs" and name == "Pricing" as page
          send email "docs_tips" with { page: page.name, props: page }
        }
        journey "App checkout" {
          entry when event "Screen Viewed" where name == "Checkout" as screen
          send push "app" with { category: screen.category, plan: screen.plan }
        }
    ''')
    h.feed([
        _call("page", "u1", "2026-03-02T10:00:00Z", name="Pricing", category="Docs",
              properties={"url": "https://x/p"}, context={"page": {"path": "/p"}}),
        # a property of the same name wins over the call's field
        _call("page", "u2", "2026-03-02T10:00:00Z", name="Pricing", category="Docs",
              properties={"name": "Plans"}),
        _call("screen", "u3", "2026-03-02T10:00:00Z", name="Checkout", category="Shop",
              properties={"plan": "pro"}),
    ])
    [a] = h.sent("u1")
    assert a.data["page"] == "Pricing"
    assert a.data["props"]["properties"] == {"url": "https://x/p", "name": "Pricing", "category": "Docs"}
    assert h.sent("u2") == []
    [s] = h.sent("u3")
    assert s.data == {"category": None, "plan": "pro"}  # a screen call's category is not kept


def test_page_properties_in_a_segment_window(make):
    h = make('''
        segment "pricing_readers" = count(event "Page Viewed" where name == "Pricing", last 7d) >= 2
        journey "Readers" {
          entry when user enters segment "pricing_readers"
          send email "readers"
        }
    ''')
    h.feed([_call("page", "u1", "2026-03-02T10:00:00Z", name="Pricing"),
            _call("page", "u1", "2026-03-02T11:00:00Z", name="Home"),
            _call("page", "u1", "2026-03-02T12:00:00Z", name="Pricing")])
    assert h.sent_times("u1") == [t("2026-03-02 12:00")]


# ---------------------------------------------------------------------------------- 4. when segments are evaluated


WINDOWED = '''
    segment "carters" = happened(event "Product Added", last 1d)
    journey "S" {
      entry when event "Product Added"
      exit when user leaves segment "carters"
      wait 3d
      send email "late"
    }
'''


def test_a_windowed_segment_is_evaluated_after_any_event(make):
    h = make(WINDOWED)
    # "Page Viewed" is read by no segment: the window that passed shows at it all the same
    h.feed([("2026-03-02 10:00", "u1", "Product Added"), ("2026-03-03 12:00", "u1", "Page Viewed")],
           until="2026-03-10")
    assert h.actions("u1") == []
    [ex] = h.transitions("u1", kind="exited")
    assert (ex.detail, ex.time) == ('exit when user leaves segment "carters"', t("2026-03-03 12:00"))


def test_the_end_of_a_wait_evaluates_no_segment(make):
    h = make(WINDOWED)
    # no event while the user waits: they left the segment on the 3rd, yet the wait ends and the
    # email goes out; their next event ends the run
    h.feed([("2026-03-02 10:00", "u1", "Product Added")], until="2026-03-06")
    assert h.sent_times("u1") == [t("2026-03-05 10:00")]
    assert [x.detail for x in h.transitions("u1", kind="completed")] == ["completed"]
    h2 = make(WINDOWED.replace('send email "late"', 'send email "late"\n      wait 1d\n      send email "later"'))
    h2.feed([("2026-03-02 10:00", "u1", "Product Added"), ("2026-03-05 12:00", "u1", "Page Viewed")],
            until="2026-03-10")
    assert [a.target for a in h2.sent("u1")] == ["late"]
    [ex] = h2.transitions("u1", kind="exited")
    assert ex.time == t("2026-03-05 12:00")


def test_a_timer_evaluates_segments_only_after_its_steps_wrote_a_trait(make):
    h = make(WINDOWED.replace('send email "late"', 'set user.seen = true\n      send email "late"\n'
                              '      wait 1d\n      send email "later"'))
    h.feed([("2026-03-02 10:00", "u1", "Product Added")], until="2026-03-10")
    # the steps after the wait run up to the next wait, then the trait written makes the engine look
    assert [a.target for a in h.sent("u1")] == ["late"]
    [ex] = h.transitions("u1", kind="exited")
    assert (ex.detail, ex.time) == ('exit when user leaves segment "carters"', t("2026-03-05 10:00"))


def test_days_since_without_where_is_evaluated_after_any_event(make):
    h = make('''
        segment "lapsed" = days_since(event "Order Completed") >= 2
        journey "L" {
          entry when user enters segment "lapsed"
          send email "miss_you"
        }
    ''')
    h.feed([("2026-03-02 10:00", "u1", "Order Completed"), ("2026-03-04 11:00", "u1", "Page Viewed")])
    assert h.sent_times("u1") == [t("2026-03-04 11:00")]


def test_days_since_with_where_is_evaluated_after_any_event(make):
    """It counted as an all-time lookup only (HistoryNeeds.ever), so segment_changes did not look
    at it again after an event it does not read: time alone never moved a user in or out."""
    h = make('''
        segment "lapsed" = days_since(event "Order Completed" where revenue > 0) >= 2
        journey "L" {
          entry when user enters segment "lapsed"
          send email "miss_you"
        }
    ''')
    h.feed([("2026-03-02 10:00", "u1", "Order Completed", {"revenue": 5}),
            ("2026-03-04 11:00", "u1", "Page Viewed")])
    assert h.sent_times("u1") == [t("2026-03-04 11:00")]


# ---------------------------------------------------------------------------------- 5. first ... where


def test_first_with_where_is_the_first_event_matching_both(make):
    h = make('''
        journey "First big order" {
          entry when first event "Order Completed" where revenue >= 100 as order
          reenter always
          send email "big_welcome" with { total: order.revenue }
        }
    ''')
    h.feed([
        ("2026-03-01 10:00", "u1", "Order Completed", {"revenue": 40}),   # not >= 100: does not count
        ("2026-03-02 10:00", "u1", "Order Completed", {"revenue": 150}),  # the first matching both: enters
        ("2026-03-03 10:00", "u1", "Order Completed", {"revenue": 200}),  # refused, whatever reenter says
    ])
    assert [(e.time, e.entry) for e in h.entries("u1")] == [(t("2026-03-02 10:00"), 1)]
    assert [a.data["total"] for a in h.sent("u1")] == [150]
    [refused] = h.transitions("u1", kind="not_entered")
    assert refused.detail == "not the first Order Completed: the first was at 2026-03-02T10:00:00Z"


# ---------------------------------------------------------------------------------- 6. boundaries


def test_goal_at_exactly_entry_plus_d_converts(make):
    src = '''
        journey "G" {
          entry when event "A"
          goal "bought" = event "Order Completed" within 2d
          send email "g"
        }
    '''
    h = make(src)
    h.feed([("2026-03-02 10:00", "u1", "A"), ("2026-03-04 10:00", "u1", "Order Completed"),
            ("2026-03-02 10:00", "u2", "A"), ("2026-03-04 10:00:01", "u2", "Order Completed")])
    assert [(c.user, c.time) for c in h.conversions()] == [("u1", t("2026-03-04 10:00"))]


def test_reenter_after_d_at_exactly_d(make):
    h = make('''
        journey "R" {
          entry when event "A"
          reenter after 1d
          send email "r"
        }
    ''')
    h.feed([("2026-03-02 10:00", "u1", "A"), ("2026-03-03 09:59:59", "u1", "A"), ("2026-03-03 10:00", "u1", "A")])
    assert [e.time for e in h.entries("u1")] == [t("2026-03-02 10:00"), t("2026-03-03 10:00")]
    [refused] = h.transitions("u1", kind="not_entered")
    assert refused.time == t("2026-03-03 09:59:59")


@pytest.mark.parametrize("reached,sent", [
    ("2026-03-02 10:00:00", "2026-03-02 10:00:00"),   # exactly 10:00: on at once
    ("2026-03-02 10:00:30", "2026-03-03 10:00:00"),   # the day's 10:00 has passed: tomorrow's
    ("2026-03-02 09:59:59", "2026-03-02 10:00:00"),
])
def test_wait_until_when_reached_at_or_just_after_the_time(make, reached, sent):
    h = make('''
        journey "U" {
          entry when event "A"
          wait until 10:00 in "UTC"
          send email "u"
        }
    ''')
    h.feed([(reached, "u1", "A")], until="2026-03-05")
    assert h.sent_times("u1") == [t(sent)]


NUDGE = '''
    journey "Nudge" {
      entry when event "Product Viewed"
      exit when event "Order Completed"
      wait 1h
      send email "first_nudge"
      wait for event "Product Added" up to 1h {
        on event   { send email "arrived" }
        on timeout { send push "second_nudge" }
      }
    }
'''


@pytest.mark.parametrize("wait", ["wait 1h", 'wait until 11:00 in "UTC"'])
def test_an_event_at_the_end_of_a_wait_comes_after_it(make, wait):
    h = make(NUDGE.replace("wait 1h", wait))
    h.feed([
        ("2026-03-02 10:00", "u1", "Product Viewed"), ("2026-03-02 11:00", "u1", "Order Completed"),
        ("2026-03-02 10:00", "u2", "Product Viewed"), ("2026-03-02 11:00", "u2", "Product Added"),
    ], until="2026-03-03")
    # u1: the email after the wait went out at 11:00, then the order ended the run
    assert [(a.target, a.time) for a in h.sent("u1")] == [("first_nudge", t("2026-03-02 11:00"))]
    assert [x.time for x in h.transitions("u1", kind="exited")] == [t("2026-03-02 11:00")]
    # u2: the user was past the wait, so the `wait for` that follows counted the event
    assert [a.target for a in h.sent("u2")] == ["first_nudge", "arrived"]


@pytest.mark.parametrize("added,branch", [
    ("2026-03-02 12:00:00", "second_nudge"),   # exactly 1h after the wait for began: the timeout came first
    ("2026-03-02 11:59:59", "arrived"),
    ("2026-03-02 11:00:00", "arrived"),        # the moment the user reached the step, handled after it
])
def test_an_event_at_exactly_the_timeout_of_a_wait_for_is_too_late(make, added, branch):
    h = make(NUDGE)
    h.feed([("2026-03-02 10:00", "u1", "Product Viewed"), (added, "u1", "Product Added")], until="2026-03-03")
    assert [a.target for a in h.sent("u1")] == ["first_nudge", branch]


def test_an_event_at_the_end_of_quiet_hours_comes_after_the_release(make):
    h = make(LATE_PUSH)
    h.feed([("2026-03-02 22:30", "u1", "Checkout Started"), ("2026-03-03 08:00", "u1", "Order Completed"),
            ("2026-03-02 22:30", "u2", "Checkout Started"), ("2026-03-03 07:59:59", "u2", "Order Completed")],
           until="2026-03-04")
    assert h.sent_times("u1") == [t("2026-03-03 08:00")]
    assert h.sent("u2") == [] and [a.rule for a in h.actions("u2", outcome="suppressed")] == [
        'exit when event "Order Completed"']


@pytest.mark.parametrize("at,outcome,until", [
    ("2026-03-02 20:59:59", "sent", None),
    ("2026-03-02 21:00:00", "deferred", "2026-03-03 08:00:00"),   # the start is inside
    ("2026-03-03 07:59:59", "deferred", "2026-03-03 08:00:00"),
    ("2026-03-03 08:00:00", "sent", None),                          # the end is outside
])
def test_quiet_hours_at_exactly_their_start_and_end(make, at, outcome, until):
    h = make('''
        policy { quiet hours 21:00-08:00 in "UTC" }
        journey "Q" {
          entry when event "A"
          send push "q"
        }
    ''')
    h.feed([(at, "u1", "A")], until="2026-03-04")
    first = h.actions("u1")[0]
    assert first.outcome == outcome
    assert first.until == (t(until) if until else None)
    assert h.sent_times("u1") == [t(until) if until else t(at)]


def test_history_window_and_cap_exactly_d_ago(make):
    h = make('''
        journey "W" {
          entry when event "A"
          reenter always
          cap email 1 per 1d
          if happened(event "A", last 1d) { send email "seen" } else { send email "unseen" }
          wait 1d
          if count(event "A", last 1d) >= 1 { send push "in_window" } else { send push "out_of_window" }
        }
    ''')
    # the entry event is exactly 1d old after `wait 1d`: out of `last 1d`; the second entry, exactly
    # 1d after the first email, is not capped by it
    h.feed([("2026-03-02 10:00", "u1", "A"), ("2026-03-03 10:00:00", "u1", "A")], until="2026-03-05")
    got = [(a.target, a.time, a.outcome) for a in h.actions("u1")]
    assert got[0] == ("seen", t("2026-03-02 10:00"), "sent")
    assert ("out_of_window", t("2026-03-03 10:00"), "sent") in got
    assert ("seen", t("2026-03-03 10:00"), "sent") in got
