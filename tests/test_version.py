"""Version ids: a hash of meaning, blind to layout, sensitive to every change of meaning."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from journeys import ast as A
from journeys.compiler import compile_project
from journeys.parser import parse_text
from journeys.version import canonical, journey_version

BASE = '''
segment "promo_dependent" =
  count(event "Product Added" where price >= 200, last 90d) >= 2
  and user in segment "big_spenders"
segment "big_spenders" = sum(event "Order Completed", revenue, last 180d) > 1000
segment "unrelated" = happened(event "X", last 1d)

journey "Checkout abandonment" {
  entry when event "Checkout Started" as checkout
  exit when event "Order Completed"
  goal "recovered" = event "Order Completed" within 2d

  wait 20m
  send push "finish_checkout" with { total: checkout.revenue }
  wait until 10:00 user time
  if checkout.revenue >= 200 and user in segment "promo_dependent" {
    send email "checkout_coupon" with { code: "COMEBACK10" }
  } else {
    send email "checkout_reminder"
  }
  split { 45% "a" { wait 1h } 45% "b" { } 10% control }
}
'''


def version(src: str, name: str = "Checkout abandonment") -> str:
    result = parse_text(src, "v.journey")
    assert not result.diagnostics, result.diagnostics
    return compile_project([result.file]).journeys[name].version


def test_shape():
    v = version(BASE)
    assert len(v) == 12 and all(c in "0123456789abcdef" for c in v)


def test_stable_across_processes_and_hash_seeds():
    """Nothing may depend on Python's per-process string hashing or on set order."""
    code = textwrap.dedent('''
        import sys
        from journeys.parser import parse_text
        from journeys.compiler import compile_project
        f = parse_text(sys.stdin.read(), "v.journey").file
        print(compile_project([f]).journeys["Checkout abandonment"].version)
    ''')
    seen = set()
    for seed in ("0", "1", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        out = subprocess.run([sys.executable, "-c", code], input=BASE, capture_output=True, text=True, env=env,
                             check=True)
        seen.add(out.stdout.strip())
    assert seen == {version(BASE)}


def test_known_value_does_not_drift():
    """A pinned id: if this changes, every running user would be moved to a 'new' version.
    Change it only together with `version.FORMAT`."""
    assert version('journey "J" { entry when event "A" wait 1h send email "t" }', "J") == \
        version('journey "J" {\n  entry when event "A"\n  wait 60m\n  send email "t"\n}', "J")
    assert version('journey "J" { entry when event "A" wait 1h send email "t" }', "J") == PINNED


PINNED = "65ce198c9640"


LAYOUT_ONLY = [
    # reformatted: one line, other indentation, trailing commas, redundant parentheses
    BASE.replace("\n  ", "\n        ").replace("wait 20m\n", "wait 20m   "),
    BASE.replace('with { code: "COMEBACK10" }', 'with {\n code: "COMEBACK10",\n }'),
    BASE.replace("checkout.revenue >= 200 and user", "(checkout.revenue >= 200) and (user"
                 ).replace('"promo_dependent" {', '"promo_dependent") {'),
    # comments anywhere
    "# a journey\n" + BASE.replace("wait 20m", "wait 20m  # give them time").replace(
        "exit when", "# exits\n  exit when"),
    # same meaning, other spelling
    BASE.replace("wait 20m", "wait 1200s"),
    BASE.replace("within 2d", "within 48h"),
    # an unrelated segment changes, or the file order of segments
    BASE.replace('happened(event "X", last 1d)', 'happened(event "Y", last 2d)'),
    BASE.replace('segment "unrelated" = happened(event "X", last 1d)\n', '') + '\nsegment "unrelated" = true\n',
    # the segments defined in another order, after the journey
    BASE[BASE.index("journey"):] + "\n" + "\n".join(reversed([
        'segment "promo_dependent" = count(event "Product Added" where price >= 200, last 90d) >= 2 '
        'and user in segment "big_spenders"',
        'segment "big_spenders" = sum(event "Order Completed", revenue, last 180d) > 1000',
        'segment "unrelated" = happened(event "X", last 1d)'])),
]


@pytest.mark.parametrize("src", LAYOUT_ONLY)
def test_layout_comments_and_spelling_keep_the_version(src):
    assert version(src) == version(BASE)


MEANING = {
    "a duration": ("wait 20m", "wait 21m"),
    "a wait-until time": ("wait until 10:00 user time", "wait until 10:30 user time"),
    "a timezone": ("wait until 10:00 user time", 'wait until 10:00 in "Europe/Berlin"'),
    "a goal window": ("within 2d", "within 3d"),
    "a template name": ('"checkout_reminder"', '"checkout_reminder2"'),
    "a channel": ('send push "finish_checkout"', 'send email "finish_checkout"'),
    "a with-key": ("total: checkout.revenue", "sum: checkout.revenue"),
    "a with-value": ('code: "COMEBACK10"', 'code: "COMEBACK15"'),
    "an operator": ("checkout.revenue >= 200", "checkout.revenue > 200"),
    "and to or": ("200 and user", "200 or user"),
    "a number": ("checkout.revenue >= 200", "checkout.revenue >= 201"),
    "an int to a float": ("checkout.revenue >= 200", "checkout.revenue >= 200.0"),
    "a property name": ("checkout.revenue >= 200", "checkout.total >= 200"),
    "an event name": ('exit when event "Order Completed"', 'exit when event "Order completed"'),
    "an alias": ("as checkout", "as co"),
    "a split share": ('45% "a" { wait 1h } 45% "b"', '40% "a" { wait 1h } 50% "b"'),
    "an arm name": ('45% "b"', '45% "c"'),
    "step order": ('send email "checkout_reminder"\n', 'send email "checkout_reminder"\n    exit\n'),
    "a referenced segment's condition": ("price >= 200, last 90d) >= 2", "price >= 200, last 90d) >= 3"),
    "a transitively referenced segment's condition": ("> 1000", "> 2000"),
    "a referenced segment's where-filter": ("where price >= 200", "where price >= 250"),
}


@pytest.mark.parametrize("what", sorted(MEANING))
def test_every_change_of_meaning_changes_the_version(what):
    old, new = MEANING[what]
    assert old in BASE
    assert version(BASE.replace(old, new, 1)) != version(BASE), what


def test_removing_a_referenced_segment_changes_the_version():
    without = BASE.replace('segment "big_spenders" = sum(event "Order Completed", revenue, last 180d) > 1000\n', "")
    assert version(without) != version(BASE)


def test_other_journeys_do_not_matter():
    other = BASE + '\njourney "Other" { entry when event "Z" send email "z" }\n'
    assert version(other) == version(BASE)
    assert version(other, "Other") != version(BASE)


def test_canonical_form_tags_types():
    assert canonical(A.Literal(1)) != canonical(A.Literal(1.0))
    assert canonical(A.Literal(1)) != canonical(A.Literal(True))
    assert canonical(A.Literal("1")) != canonical(A.Literal(1))
    assert canonical(A.Literal(None)) != canonical(A.Literal("null"))
    assert canonical(A.Duration(60, "m")) == canonical(A.Duration(1, "h"))
    assert canonical(A.Duration(5, "")) != canonical(A.Duration(5, "s"))
    big = 2 ** 70
    assert canonical(A.Literal(big)) != canonical(A.Literal(big + 1))
    assert canonical(A.Literal(0.1 + 0.2)) != canonical(A.Literal(0.3))


def test_version_function_directly():
    f = parse_text(BASE, "v.journey").file
    journey = next(i for i in f.items if isinstance(i, A.Journey))
    segments = {i.name.value: i for i in f.items if isinstance(i, A.Segment)}
    assert journey_version(journey, segments) == version(BASE)
    del segments["big_spenders"]
    assert journey_version(journey, segments) != version(BASE)


def test_segment_version_follows_its_references():
    from journeys.version import segment_version

    def seg_version(src):
        f = parse_text(src, "s.journey").file
        segments = {i.name.value: i for i in f.items if isinstance(i, A.Segment)}
        return segment_version(segments["a"], segments)

    base = 'segment "a" = user in segment "b"\nsegment "b" = user.x > 1\nsegment "c" = true'
    assert seg_version(base) == seg_version(base.replace("true", "false"))
    assert seg_version(base) != seg_version(base.replace("> 1", "> 2"))
