"""What people who come from Braze, Customer.io, SQL, Python or JavaScript type first, and what
`journeys check` answers: one error for one mistake (no knock-on error from the parser or the
checker), the caret on the words that are wrong, and a `help:` with the line as it should be.

The whole project is checked by the real command, once, in a subprocess: one file per mistake."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from journeys.codes import CODES
from journeys.parser import parse_text

from .conftest import CONFIG, TEMPLATES

JOURNEY = 'journey "{}" {{\n  entry when event "Product Viewed" as viewed\n{}\n  send email "welcome"\n}}\n'
NO_SPACE = "a number and its unit (s, m, h, d or w) with no space"
ONE_UNIT = "a duration is a whole number of one unit"

# id, the mistake (line 3 of JOURNEY, or a whole file), the words under the caret, code, message, help
CASES = [
    # the five of the issue
    ("holdout", "  holdout 10%", "holdout", "J075", "`holdout` is not a statement",
     'a holdout is the control group of a split: `split { 90% "main" { ...the steps... } 10% control }`'),
    ("exit_or", '  exit when event "Order Completed" or event "Checkout Started"', "or", "J074",
     "`or` cannot join two events: an `exit when` listens for one",
     ('write one rule per event: `exit when event "Order Completed"`, and on a line of its own '
      '`exit when event "Checkout Started"`')),
    ("count_comma", '  if count(event "Product Viewed" last 7d) >= 3 { exit }', "last", "J073",
     "a `,` is missing before `last`", 'write `if count(event "Product Viewed", last 7d) >= 3 { exit }`'),
    ("wait_1_d", "  wait 1 d", "1 d", "J070", "`1 d` is not a duration", f"write `wait 1d`: {NO_SPACE}"),
    ("cap_per_day", "  cap email 2 per day", "day", "J070", "`day` is not a duration",
     f"write `cap email 2 per 1d`: {NO_SPACE}"),
    # operators from other languages
    ("and_and", "  if viewed.price > 10 && viewed.price < 50 { exit }", "&&", "J071",
     "`&&` is not an operator in journeys", "write `and`: `if viewed.price > 10 and viewed.price < 50 { exit }`"),
    ("or_or", "  if viewed.price > 100 || user.vip == true { exit }", "||", "J071",
     "`||` is not an operator in journeys", "write `or`: `if viewed.price > 100 or user.vip == true { exit }`"),
    ("bang", '  if !happened(event "Order Completed") { exit }', "!", "J071", "`!` is not an operator in journeys",
     'write `not`: `if not happened(event "Order Completed") { exit }`'),
    ("single_equals", '  wait for event "Product Added" where category = "shoes" up to 1h', "=", "J071",
     "`=` is not a comparison", 'write `==`: `wait for event "Product Added" where category == "shoes" up to 1h`'),
    ("triple_equals", "  if viewed.price === 10 { exit }", "===", "J071", "`===` is not an operator in journeys",
     "write `==`: `if viewed.price == 10 { exit }`"),
    ("sql_not_equal", "  if viewed.price <> 10 { exit }", "<>", "J071", "`<>` is not an operator in journeys",
     "write `!=`: `if viewed.price != 10 { exit }`"),
    ("sql_and", '  if viewed.price > 10 AND viewed.category == "home" { exit }', "AND", "J071",
     "`AND` is not an operator in journeys", 'write `and`: `if viewed.price > 10 and viewed.category == "home" { exit }`'),
    ("is_null", "  if viewed.coupon is null { exit }", "is", "J071", "`is` is not an operator in journeys",
     "write `==`: `if viewed.coupon == null { exit }`"),
    ("is_not_null", "  if viewed.coupon is not null { exit }", "is not", "J071",
     "`is not` is not an operator in journeys", "write `!=`: `if viewed.coupon != null { exit }`"),
    ("double_equals_in_set", "  set user.vip == true", "==", "J071", "`==` is a comparison; here it is `=`",
     "write `set user.vip = true`"),
    ("equals_in_object", '  send email "browse_abandon" with { product = viewed.name }', "=", "J071",
     "a key and its value are separated by `:`", 'write `:`: `send email "browse_abandon" with { product: viewed.name }`'),
    # quotes
    ("single_quotes", "  send email 'welcome'", "'welcome'", "J072", "text is written in double quotes",
     'write `send email "welcome"`'),
    ("curly_quotes", "  send email “welcome”", "“welcome”", "J072", "text is written in plain double quotes",
     'write `send email "welcome"`'),
    ("unquoted_template", "  send email welcome", "welcome", "J072", "`welcome` needs double quotes",
     'write `send email "welcome"`'),
    ("unquoted_journey", 'journey Welcome Back {\n  entry when event "Product Viewed"\n  send email "welcome"\n}\n',
     "Welcome Back", "J072", "`Welcome Back` needs double quotes", 'write `journey "Welcome Back" {`'),
    ("unquoted_event", "  wait for event Product Added up to 1h", "Product Added", "J072",
     "`Product Added` needs double quotes", 'write `wait for event "Product Added" up to 1h`'),
    # durations
    ("wait_2_days", "  wait 2 days", "2 days", "J070", "`2 days` is not a duration", f"write `wait 2d`: {NO_SPACE}"),
    ("wait_2h30m", "  wait 2h30m", "2h30m", "J070", "`2h30m` is not a duration", f"write `wait 150m`: {ONE_UNIT}"),
    ("wait_1h_30m", "  wait 1h 30m", "1h 30m", "J070", "`1h 30m` is not a duration", f"write `wait 90m`: {ONE_UNIT}"),
    ("wait_1_5h", "  wait 1.5h", "1.5h", "J070", "`1.5h` is not a duration", f"write `wait 90m`: {ONE_UNIT}"),
    ("wait_a_month", "  wait 1 month", "1 month", "J070", "`1 month` is not a duration",
     "write `wait 30d`: months and years have no fixed length; count days or weeks"),
    ("within_3_days", '  goal "purchase" = event "Order Completed" within 3 days', "3 days", "J070",
     "`3 days` is not a duration", f'write `goal "purchase" = event "Order Completed" within 3d`: {NO_SPACE}'),
    # if and else
    ("elif", "  if viewed.price > 100 { exit } elif viewed.price > 50 { exit }", "elif", "J078",
     "`elif` is written `else if`", "write `if viewed.price > 100 { exit } else if viewed.price > 50 { exit }`"),
    ("elsif", "  if viewed.price > 100 { exit } elsif viewed.price > 50 { exit }", "elsif", "J078",
     "`elsif` is written `else if`", "write `if viewed.price > 100 { exit } else if viewed.price > 50 { exit }`"),
    ("then", "  if viewed.price > 100 then { exit }", "then", "J078", "`then` is not needed: the branch is the block in braces",
     "write `if viewed.price > 100 { exit }`"),
    # the word before a duration
    ("wait_for_within", '  wait for event "Product Added" within 1h', "within", "J077",
     "a `wait for` takes `up to` before its duration", 'write `wait for event "Product Added" up to 1h`'),
    ("wait_for_timeout", '  wait for event "Product Added" timeout 1h', "timeout", "J077",
     "a `wait for` takes `up to` before its duration", 'write `wait for event "Product Added" up to 1h`'),
    ("goal_in", '  goal "purchase" = event "Order Completed" in 3d', "in", "J077",
     "a `goal` takes `within` before its duration", 'write `goal "purchase" = event "Order Completed" within 3d`'),
    ("reenter_every", "  reenter every 7d", "every", "J077", "`reenter` takes `after` before its duration",
     "write `reenter after 7d`"),
    # entries
    ("entry_on_event", 'journey "A" {\n  entry on event "Product Viewed"\n  send email "welcome"\n}\n', "on", "J076",
     "an entry on an event is written `entry when event`", 'write `entry when event "Product Viewed"`'),
    ("entry_event", 'journey "A" {\n  entry event "Product Viewed"\n  send email "welcome"\n}\n', "event", "J076",
     "an entry on an event is written `entry when event`", 'write `entry when event "Product Viewed"`'),
    ("entry_when_string", 'journey "A" {\n  entry when "Product Viewed"\n  send email "welcome"\n}\n',
     '"Product Viewed"', "J076", '`event` is missing before `"Product Viewed"`',
     'write `entry when event "Product Viewed"`'),
    # splits
    ("split_slash", "  split 50%/50%", "50%/50%", "J075", "a split's arms go in braces, each with a name and its steps",
     'write `split { 50% "a" { ...the steps... } 50% "b" { ...the steps... } }`'),
    # times of day
    ("am_pm", "  wait until 10am", "10am", "J079", "`10am` is not a time of day",
     "write `wait until 10:00`: times of day are HH:MM on a 24-hour clock"),
    ("quiet_hours_pm", "  quiet hours 9pm-8am", "9pm", "J079", "`9pm` is not a time of day",
     "write `quiet hours 21:00-08:00`: times of day are HH:MM on a 24-hour clock"),
    ("quiet_hours_to", "  quiet hours 21:00 to 08:00", "to", "J079", "quiet hours are written `START-END`",
     "write `quiet hours 21:00-08:00`"),
]


def source(name: str, mistake: str) -> str:
    """The file of one case; each journey has a name of its own."""
    if mistake.startswith("journey"):
        return mistake.replace('journey "A"', f'journey "{name}"')
    return JOURNEY.format(name, mistake)


def block(name: str, text: str, caret: str, code: str, message: str, help: str) -> str:
    """What `journeys check` prints for the mistake: the line that holds the caret's words, the caret
    under them."""
    number, line = next((i, t) for i, t in enumerate(text.split("\n"), 1)
                        if caret in t and not t.startswith('journey "') and " as viewed" not in t)
    col = line.index(caret) + 1
    gutter = " " * len(str(number))
    return (f"error[{code}]: {message}\n{gutter}--> journeys/{name}.journey:{number}:{col}\n{gutter} |\n"
            f"{number} | {line}\n{gutter} | {' ' * (col - 1)}{'^' * len(caret)}\n  = help: {help}")


@pytest.fixture(scope="module")
def checked(tmp_path_factory) -> dict[str, list[str]]:
    """`journeys check` of a project with one file per mistake: file name → the blocks printed for it."""
    root = tmp_path_factory.mktemp("newcomer")
    (root / "journeys").mkdir()
    (root / "journeys.toml").write_text(CONFIG)
    for rel, text in TEMPLATES.items():
        (root / "templates" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "templates" / rel).write_text(text)
    for name, mistake, *_ in CASES:
        (root / "journeys" / f"{name}.journey").write_text(source(name, mistake), encoding="utf-8")
    r = subprocess.run([sys.executable, "-m", "engine.cli", "check", "."], check=False, cwd=root, capture_output=True,
                       text=True, timeout=300, env={**os.environ, "PYTHONIOENCODING": "utf-8"})
    assert "Traceback" not in r.stdout + r.stderr, r.stderr
    found: dict[str, list[str]] = {}
    for text in r.stdout.split("\n\n"):
        at = re.search(r"--> journeys/(\w+)\.journey:", text)
        if at:
            found.setdefault(at.group(1), []).append(text.strip("\n"))
    return found


@pytest.mark.parametrize("name,mistake,caret,code,message,help", CASES, ids=[c[0] for c in CASES])
def test_one_mistake_gives_one_error_with_the_fix(checked, name, mistake, caret, code, message, help):
    assert checked.get(name) == [block(name, source(name, mistake), caret, code, message, help)]


def test_the_codes_are_explained():
    for code in {c[3] for c in CASES}:
        assert code in CODES and len(CODES[code].explanation) > 80, code


def errors(text: str) -> list[tuple[int, str]]:
    return [(d.span.line, d.code) for d in parse_text(text, "f").diagnostics]


def test_the_parser_goes_on_after_a_newcomer_mistake():
    # each mistake is repaired or skipped, so a later, independent mistake is still reported
    for mistake, code in [("  holdout 10%", "J075"), ("  wait 2 days", "J070"), ("  split 50%/50%", "J075"),
                          ("  if viewed.price > 10 && viewed.price < 50 { exit }", "J071"),
                          ('  exit when event "A" or event "B"', "J074"), ("  send email welcome", "J072"),
                          ("  send email 'welcome'", "J072"), ('  if count(event "X" last 7d) > 1 { exit }', "J073")]:
        src = JOURNEY.format("A", mistake + "\n  wait 1h\n  wiat 1h")
        assert errors(src) == [(3, code), (5, "J003")], mistake


def test_a_repaired_mistake_keeps_its_meaning_for_the_checker():
    result = parse_text(JOURNEY.format("A", "  wait 2h30m\n  wait 1 d\n  if viewed.a = 1 && !viewed.b { exit }"), "f")
    steps = result.file.items[0].items[1:4]
    assert [str(s.duration) for s in steps[:2]] == ["150m", "1d"]
    assert [d.code for d in result.diagnostics] == ["J070", "J070", "J071"]


def test_two_mistakes_on_one_line_give_one_error():
    # the second is suppressed like any error on the line of the first; the help shows the whole line
    src = JOURNEY.format("A", "  if viewed.a > 1 && viewed.b > 2 && viewed.c > 3 { exit }")
    (d,) = parse_text(src, "f").diagnostics
    assert d.help == "write `and`: `if viewed.a > 1 and viewed.b > 2 and viewed.c > 3 { exit }`"
