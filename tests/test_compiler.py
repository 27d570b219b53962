"""The compiler on the examples of LANGUAGE.md: paths, edges, declarations, history needs."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from journeys import ast as A
from journeys import graph as G
from journeys.compiler import CompileError, compile_journey, compile_project, compile_segment
from journeys.evaluation import Context, Event
from journeys.parser import parse_text

from tests.lang_examples import example_blocks, project

D, H, M = 86400, 3600, 60
NOW = datetime(2026, 3, 9, 12, tzinfo=timezone.utc)


def compile_src(src: str) -> G.CompiledProject:
    result = parse_text(src, "t.journey")
    assert not result.diagnostics, result.diagnostics
    return compile_project([result.file])


def one(src: str) -> G.CompiledJourney:
    (journey,) = compile_src(src).journeys.values()
    return journey


def edges(journey: G.CompiledJourney) -> dict[str, list[tuple[str, str | None]]]:
    return {path: node.targets() for path, node in journey.nodes.items()}


# ------------------------------------------------------------------------------ the examples


def test_every_example_compiles():
    p = project()
    assert len(example_blocks()) >= 8
    assert list(p.journeys) == ["Browse abandonment", "Checkout abandonment", "Monday picks",
                                "Retarget by engagement", "First purchase", "Payment failure", "Homepage banner"]
    assert sorted(p.segments) == ["event_page_lookers", "night_shoppers", "promo_dependent", "push_fatigued",
                                  "recent_browsers", "weekend_discount_lovers"]
    for j in p.journeys.values():
        assert len(j.version) == 12 and int(j.version, 16) >= 0
        for path, node in j.nodes.items():
            assert node.path == path and path.startswith(j.slug + "/")
            assert node.span is not None and node.span.file.startswith("example")
            for _, target in node.targets():
                assert target is None or target in j.nodes


def test_browse_abandonment():
    j = project().journeys["Browse abandonment"]
    assert j.slug == "browse_abandonment"
    assert j.entry.kind == "event" and j.entry.match.event == "Product Viewed" and j.entry.alias == "viewed"
    assert [m.event for m in j.exits.events] == ["Order Completed"]
    assert j.reenter == G.Reentry("after", 7 * D)
    assert [(g.name, g.match.event, g.seconds) for g in j.goals] == [("purchase", "Order Completed", 3 * D)]
    assert j.first == "browse_abandonment/1"
    assert list(j.nodes) == ["browse_abandonment/1", "browse_abandonment/1/event/1", "browse_abandonment/1/timeout/1"]
    wait = j.nodes["browse_abandonment/1"]
    assert isinstance(wait, G.WaitForNode)
    assert (wait.match.event, wait.timeout, wait.next) == ("Product Added", 1 * H, None)
    assert (wait.on_event, wait.on_timeout) == ("browse_abandonment/1/event/1", "browse_abandonment/1/timeout/1")
    assert isinstance(j.nodes["browse_abandonment/1/event/1"], G.ExitNode)
    assert j.nodes["browse_abandonment/1/event/1"].next is None
    send = j.nodes["browse_abandonment/1/timeout/1"]
    assert isinstance(send, G.SendNode)
    assert (send.channel, send.template, send.via, send.next) == ("email", "browse_abandon", None, None)
    assert [k for k, _ in send.data] == ["product", "category"]
    c = Context(now=NOW, named={"viewed": {"event": "Product Viewed", "timestamp": NOW,
                                           "properties": {"name": "Lamp", "category": "home"}}})
    assert {k: f(c) for k, f in send.data} == {"product": "Lamp", "category": "home"}
    assert j.on_exit == () and j.caps == () and j.quiet_hours is None


def test_checkout_abandonment():
    j = project().journeys["Checkout abandonment"]
    s = "checkout_abandonment"
    assert edges(j) == {
        f"{s}/1": [("", f"{s}/2")],
        f"{s}/2": [("", f"{s}/3")],
        f"{s}/3": [("", f"{s}/4")],
        f"{s}/4": [("then", f"{s}/4/then/1"), ("else", f"{s}/4/else/1")],
        f"{s}/4/then/1": [("", None)],
        f"{s}/4/else/1": [("", None)],
    }
    assert j.nodes[f"{s}/1"] == G.WaitNode(f"{s}/1", f"{s}/2", 20 * M)
    assert j.nodes[f"{s}/3"] == G.WaitUntilNode(f"{s}/3", f"{s}/4", 600, None)
    branch = j.nodes[f"{s}/4"]
    assert branch.next is None
    assert branch.arms[0].condition.source == 'checkout.revenue >= 200 and user in segment "promo_dependent"'
    assert [n.template for n in j.nodes.values() if isinstance(n, G.SendNode)] == [
        "finish_checkout", "checkout_coupon", "checkout_reminder"]
    # the branch condition really decides
    cond = branch.arms[0].condition
    checkout = {"event": "Checkout Started", "timestamp": NOW, "properties": {"revenue": 250}}
    assert cond(Context(now=NOW, named={"checkout": checkout}, segments=lambda n: n == "promo_dependent"))
    assert not cond(Context(now=NOW, named={"checkout": checkout}, segments=lambda n: False))
    assert j.segments == ("promo_dependent",)


def test_retarget_by_engagement():
    j = project().journeys["Retarget by engagement"]
    s = "retarget_by_engagement"
    assert j.entry.alias is None
    assert j.reenter == G.Reentry("after", 1 * D)
    assert j.caps == (G.Cap((G.CapRule("ads", 1, 3 * D),)),)
    assert edges(j) == {
        f"{s}/1": [("then", f"{s}/1/then/1"), ("else", f"{s}/1/else/1")],
        f"{s}/1/then/1": [("", f"{s}/2")],
        f"{s}/1/else/1": [("", f"{s}/2")],
        f"{s}/2": [("", None)],
        f"{s}/on_exit/1": [("", f"{s}/on_exit/2")],
        f"{s}/on_exit/2": [("", None)],
    }
    assert j.on_exit == (f"{s}/on_exit/1", f"{s}/on_exit/2") and j.on_exit_first == f"{s}/on_exit/1"
    assert [(n.op, n.audience) for n in j.nodes.values() if isinstance(n, G.AudienceNode)] == [
        ("add", "hot_browsers"), ("add", "warm_browsers"), ("remove", "hot_browsers"), ("remove", "warm_browsers")]
    assert j.nodes[f"{s}/2"] == G.WaitNode(f"{s}/2", None, 14 * D)


def test_first_purchase():
    j = project().journeys["First purchase"]
    s = "first_purchase"
    assert j.entry.kind == "first_event" and j.entry.alias == "order"
    assert edges(j) == {
        f"{s}/1": [("discount 45%", f"{s}/1/discount/1"), ("thanks 45%", f"{s}/1/thanks/1"), ("control 10%", f"{s}/2")],
        f"{s}/1/discount/1": [("", f"{s}/2")],
        f"{s}/1/thanks/1": [("", f"{s}/2")],
        f"{s}/2": [("", f"{s}/3")],
        f"{s}/3": [("", f"{s}/4")],
        f"{s}/4": [("then", f"{s}/4/then/1"), ("else", None)],
        f"{s}/4/then/1": [("", None)],
    }
    split = j.nodes[f"{s}/1"]
    assert [(a.name, a.slug, a.percent) for a in split.arms] == [("discount", "discount", 45.0), ("thanks", "thanks", 45.0)]
    assert split.control_percent == 10.0 and split.control_path == f"{s}/1/control" and split.next == f"{s}/2"
    set_trait = j.nodes[f"{s}/2"]
    assert isinstance(set_trait, G.SetTraitNode) and set_trait.trait == "customer_since"
    order = {"event": "Order Completed", "timestamp": NOW, "properties": {"order_id": "o1"}}
    assert set_trait.value(Context(now=NOW, named={"order": order})) == "2026-03-09T12:00:00Z"
    hook = j.nodes[f"{s}/4/then/1"]
    assert isinstance(hook, G.WebhookNode) and hook.name == "crm_nudge"
    c = Context(now=NOW, user_id="u7", named={"order": order})
    assert {k: f(c) for k, f in hook.data} == {"user_id": "u7", "first_order": "o1"}


def test_other_examples():
    p = project()
    monday = p.journeys["Monday picks"]
    assert monday.entry.kind == "schedule" and monday.entry.segment == "recent_browsers"
    assert monday.entry.schedule == G.Schedule("0 10 * * mon", None, "monday", 600)
    assert monday.entry.schedule.fields == ("0", "10", "*", "*", "mon")
    banner = p.journeys["Homepage banner"]
    assert banner.reenter == G.Reentry("always", None)
    assert p.journeys["Payment failure"].reenter == G.Reentry("never", None)
    assert p.journeys["Payment failure"].entry.kind == "first_event"


def test_policy():
    policy = project().policy
    assert policy.timezone == "Europe/Istanbul"
    assert policy.caps[0] == G.Cap((G.CapRule("email", 2, D), G.CapRule("push", 3, D), G.CapRule("all", 6, 7 * D)))
    assert policy.caps[1].rules == (G.CapRule("push", 1, 7 * D),)
    assert policy.caps[1].when.source == 'user in segment "push_fatigued"'
    assert policy.quiet_hours == G.QuietHours(21 * 60, 8 * 60, None)


def test_segments_compile_to_predicates():
    p = project()
    seg = p.segments["push_fatigued"]
    dismissed = [{"event": "Push Dismissed", "timestamp": NOW - timedelta(days=i), "properties": {}} for i in range(3)]
    assert seg.predicate(Context(now=NOW, history=dismissed))
    opened = dismissed + [{"event": "Push Opened", "timestamp": NOW - timedelta(days=1), "properties": {}}]
    assert not seg.predicate(Context(now=NOW, history=opened))
    # the context evaluates compiled segments itself when handed the project's
    c = Context(now=NOW, history=dismissed, segments=p.segments)
    assert p.policy.caps[1].when(c) is True
    assert seg.references == () and seg.needs.windows == {"Push Dismissed": 14 * D, "Push Opened": 14 * D}


# ------------------------------------------------------------------------------ history needs


def test_needs_per_journey():
    js = project().journeys
    browse = js["Browse abandonment"].needs
    assert browse.windows == {} and browse.latest == set() and browse.ever == set()
    assert browse.live == {"Product Viewed", "Order Completed", "Product Added"}

    checkout = js["Checkout abandonment"].needs  # through segment "promo_dependent"
    assert checkout.windows == {"Product Added": 90 * D, "Order Completed": 180 * D}
    assert checkout.live == {"Checkout Started", "Order Completed"}

    retarget = js["Retarget by engagement"].needs
    assert retarget.windows == {"Product Viewed": 7 * D, "Product Added": 7 * D}

    first = js["First purchase"].needs
    assert first.windows == {"Order Completed": 14 * D}
    assert first.ever == {"Order Completed"}  # first-event entry

    monday = js["Monday picks"].needs
    assert monday.windows == {"Product Viewed": 7 * D}  # segment "recent_browsers"
    assert monday.latest == {"Product Viewed"}  # last(...)
    assert monday.retention("Product Viewed") == 7 * D
    assert first.retention("Order Completed") is None  # forever
    assert js["Homepage banner"].needs.events == {"Product Viewed"}


def test_project_needs_are_the_union():
    p = project()
    n = p.needs
    assert n.windows["Order Completed"] == 180 * D  # longest of promo_dependent, night_shoppers, First purchase
    assert n.windows["Push Dismissed"] == 14 * D  # from a segment used only by the policy
    assert n.windows["Product Viewed"] == 60 * D
    assert n.ever == {"Order Completed", "Payment Failed"}
    assert all(j.needs.events <= n.events for j in p.journeys.values())


def test_needs_transitive_segments_where_and_unbounded_lookups():
    p = compile_src('''
segment "a" = user in segment "b" and count(event "A", last 2d) > 0
segment "b" = sum(event "B", price, last 5d) > 1 or user in segment "a"
journey "J" {
  entry when event "Start" where happened(event "W", last 1h)
  exit when event "Stop"
  goal "g" = event "Goal" within 1d
  if user in segment "a" and days_since(event "L") < 3 { wait for event "Reply" up to 1h }
  if last(event "P" where x == 1) != null { exit }
  if happened(event "H") { exit }
}
''')
    n = p.journeys["J"].needs
    assert n.windows == {"A": 2 * D, "B": 5 * D, "W": 1 * H}
    assert n.latest == {"L"}
    assert n.ever == {"P", "H"}  # a filtered last() must see all of P's history
    assert n.live == {"Start", "Stop", "Goal", "Reply"}
    assert p.journeys["J"].segments == ("a", "b")
    assert p.segments["a"].references == ("a", "b")  # a cycle: a reaches itself


# ------------------------------------------------------------------------------ paths and edges


def test_nested_paths_elif_and_empty_blocks():
    j = one('''
journey "Nested: paths!" {
  entry when event "E"
  if user.a == 1 {
    wait 1m
  } else if user.a == 2 {
  } else if user.a == 3 {
    wait for event "R" up to 2h { on timeout { send sms "late" } }
  } else {
    split { 50% "Arm One" { exit } 50% "b" { } }
  }
  send push "after"
}
''')
    s = "nested_paths"
    assert j.slug == s
    assert edges(j) == {
        f"{s}/1": [("then", f"{s}/1/then/1"), ("elif1", f"{s}/2"), ("elif2", f"{s}/1/elif2/1"),
                   ("else", f"{s}/1/else/1")],
        f"{s}/1/then/1": [("", f"{s}/2")],
        f"{s}/1/elif2/1": [("event", f"{s}/2"), ("timeout", f"{s}/1/elif2/1/timeout/1")],
        f"{s}/1/elif2/1/timeout/1": [("", f"{s}/2")],
        f"{s}/1/else/1": [("Arm One 50%", f"{s}/1/else/1/arm_one/1"), ("b 50%", f"{s}/2")],
        f"{s}/1/else/1/arm_one/1": [("exit", None)],
        f"{s}/2": [("", None)],
    }
    assert j.nodes[f"{s}/1/else/1"].control_percent is None
    assert isinstance(j.nodes[f"{s}/1/else/1/arm_one/1"], G.ExitNode)
    assert j.nodes[f"{s}/1/else/1/arm_one/1"].next is None


def test_wait_for_without_branches_and_if_without_else_continue():
    j = one('journey "W" { entry when event "E" wait for event "R" up to 1d if user.x { wait 1s } }')
    assert edges(j) == {
        "w/1": [("event", "w/2"), ("timeout", "w/2")],
        "w/2": [("then", "w/2/then/1"), ("else", None)],
        "w/2/then/1": [("", None)],
    }


def test_journey_without_steps_and_other_entries():
    j = one('journey "Nothing" { entry when user enters segment "s" exit when user leaves segment "s" '
            'exit when user.churned == true }')
    assert j.first is None and dict(j.nodes) == {}
    assert j.entry == G.Entry("segment", segment="s")
    assert j.exits.segments == ("s",) and [c.source for c in j.exits.conditions] == ["user.churned == true"]
    cron = one('journey "C" { entry on cron "0  9 * *   MON-FRI" in "Europe/Berlin" send email "x" }')
    assert cron.entry.schedule == G.Schedule("0 9 * * MON-FRI", "Europe/Berlin")
    daily = one('journey "D" { entry every weekday at 07:30 in "Asia/Tokyo" send email "x" }')
    assert daily.entry.schedule.cron == "30 7 * * mon-fri" and daily.entry.schedule.tz == "Asia/Tokyo"


def test_journey_level_caps_quiet_hours_and_send_via():
    j = one('''journey "Q" {
  entry when event "E" where total > 10
  cap email 1 per 2h, push 2 per 1d when user.vip != true
  quiet hours 22:00-07:00 in "Europe/Paris"
  send email "t" with { a: 1 + 1 } via "ses_eu"
}''')
    assert j.caps[0].rules == (G.CapRule("email", 1, 2 * H), G.CapRule("push", 2, D))
    assert j.caps[0].when.source == "user.vip != true"
    assert j.quiet_hours == G.QuietHours(22 * 60, 7 * 60, "Europe/Paris")
    send = j.nodes["q/1"]
    assert send.via == "ses_eu" and send.data[0][1](Context(now=NOW)) == 2
    c = Context(now=NOW)
    assert j.entry.match.matches(c, Event("E", NOW, {"total": 11}))
    assert not j.entry.match.matches(c, Event("E", NOW, {"total": 10}))
    assert not j.entry.match.matches(c, Event("E", NOW, {}))


def test_compile_journey_directly_and_determinism():
    files = [parse_text(b, "x").file for b in example_blocks()]
    journey = next(i for f in files for i in f.items if getattr(i, "name", None) and i.name.value == "Checkout abandonment")
    segments = {i.name.value: i for f in files for i in f.items if type(i).__name__ == "Segment"}
    a, b = compile_journey(journey, segments), compile_journey(journey, segments)
    assert a == b and list(a.nodes) == list(b.nodes)
    assert a.version == project().journeys["Checkout abandonment"].version


# ------------------------------------------------------------------------------ errors, not crashes


@pytest.mark.parametrize("src, message", [
    ('journey "J" { send email "x" }', "has no entry"),
    ('journey "J" { entry when event "A" entry when event "B" }', "one entry"),
    ('journey "J" { entry when event "A" wait 5 }', "no valid unit"),
    ('journey "J" { entry when event "A" reenter after }', "needs a duration"),
    ('journey "J" { entry when event "A" split { 50% "a" {} 50% "A!" {} } }', "same|as does"),
    ('journey "J" { entry when event "A" split { 50% "control" {} 50% control } }', "as does"),
    ('journey "J" { entry when event "A" split { 50% control 50% control } }', "one control"),
    ('journey "J" { entry when event "A" split { 50% "!!" {} } }', "no letter or digit"),
    ('journey "!!!" { entry when event "A" }', "no letter or digit"),
    ('journey "J" { entry when event "A" wait until 25:00 }', "not a time of day"),
    ('journey "J" { entry when event "A" wait until 10:00 in "Mars/Olympus" }', "unknown timezone"),
    ('journey "J" { entry every fortnight at 10:00 send email "x" }', "every fortnight"),
    ('journey "J" { entry on cron "* *" send email "x" }', "5 fields"),
    ('journey "J" { entry when event "A" wait for event "B" up to 1h { on event {} on event {} } }', "given twice"),
    ('journey "J" { entry when event "A" send email "x" with { a: 1, a: 2 } }', "given twice"),
    ('journey "J" { entry when event "A" if nope() { exit } }', "unknown function"),
    ('journey "J" { entry when event "A" goal "g" = event "B" within 1d goal "g" = event "C" within 1d }', "twice"),
    ('journey "J" { entry when event "A" }\njourney "J" { entry when event "A" }', "defined twice"),
    ('journey "J K" { entry when event "A" }\njourney "j-k" { entry when event "A" }', "same path prefix"),
    ('segment "s" = true\nsegment "s" = false', "defined twice"),
    ('policy { timezone "UTC" timezone "UTC" }', "timezone twice"),
])
def test_compile_errors(src, message):
    result = parse_text(src, "bad.journey")
    assert not result.diagnostics, result.diagnostics
    with pytest.raises(CompileError, match=message):
        compile_project([result.file])


def test_segment_cycles_terminate():
    p = compile_src('segment "a" = user in segment "b"\nsegment "b" = user in segment "a"\n'
                    'journey "J" { entry when user enters segment "a" }')
    assert p.segments["a"].references == ("a", "b")
    assert p.journeys["J"].segments == ("a", "b")
    c = Context(now=NOW, segments=p.segments)
    assert c.in_segment("a") is False


def test_missing_segment_is_not_a_crash():
    p = compile_src('journey "J" { entry when event "A" if user in segment "ghost" { exit } }')
    assert p.journeys["J"].segments == ("ghost",)
    assert p.policy == G.CompiledPolicy("UTC", (), None)


# ------------------------------------------------------------------------------ robustness

_TOKENS = re.findall(r"\S+|\n", "\n".join(example_blocks()))  # newlines kept: they end comments
_CTX = Context(
    now=NOW, user_id="u", traits={"a": 1, "tags": ["x"]}, timezone="Europe/Istanbul",
    history=[{"event": e, "timestamp": NOW - timedelta(hours=h), "properties": {"revenue": h, "category": "home"}}
             for h, e in enumerate(["Product Viewed", "Order Completed", "Product Added", "Push Opened"] * 3)],
    named={"viewed": {"event": "Product Viewed", "timestamp": NOW, "properties": {}}},
    segments=lambda name: len(name) % 2 == 0,
)


def _exercise(journey: G.CompiledJourney) -> None:
    """Every compiled piece of a journey evaluates without raising."""
    ev = Event("Product Viewed", NOW, {"revenue": 3})
    matchers = [journey.entry.match, *journey.exits.events, *(g.match for g in journey.goals)]
    for node in journey.nodes.values():
        if isinstance(node, G.WaitForNode):
            matchers.append(node.match)
        elif isinstance(node, G.BranchNode):
            [arm.condition(_CTX) for arm in node.arms]
        elif isinstance(node, (G.SendNode, G.WebhookNode)):
            [f(_CTX) for _, f in node.data]
        elif isinstance(node, G.SetTraitNode):
            node.value(_CTX)
    for m in matchers:
        if m is not None:
            m.matches(_CTX, ev)
    [c(_CTX) for c in journey.exits.conditions]
    [cap.when(_CTX) for cap in journey.caps if cap.when is not None]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, len(_TOKENS) - 1), st.sampled_from(["drop", "dup", "swap"])),
                min_size=1, max_size=4))
def test_mutated_examples_compile_or_raise_compile_error(edits):
    tokens = list(_TOKENS)
    for i, op in edits:
        i %= len(tokens)
        if op == "drop":
            del tokens[i]
        elif op == "dup":
            tokens.insert(i, tokens[i])
        else:
            j = (i + 1) % len(tokens)
            tokens[i], tokens[j] = tokens[j], tokens[i]
    items = parse_text(" ".join(tokens), "m.journey").file.items
    segments = {s.name.value: s for s in items if isinstance(s, A.Segment)}
    for item in items:
        try:
            if isinstance(item, A.Journey):
                _exercise(compile_journey(item, segments))
            elif isinstance(item, A.Segment):
                compile_segment(item, segments).predicate(_CTX)
        except CompileError:
            pass


def test_the_mutation_base_is_the_whole_example_set():
    items = parse_text(" ".join(_TOKENS), "m.journey").file.items
    assert sum(isinstance(i, (A.Journey, A.Segment)) for i in items) == 13


def test_deep_expressions_compile_and_evaluate():
    depth = 150
    src = f'segment "deep" = {"not " * depth}true\nsegment "sum" = {"(" * 60}1{" + 1)" * 60} == 61'
    p = compile_src(src)
    assert p.segments["deep"].predicate(_CTX) is True
    assert p.segments["sum"].predicate(_CTX) is True
