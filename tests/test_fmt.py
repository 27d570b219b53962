"""`journeys fmt`: canonical layout, every comment kept, idempotent, never a change of meaning."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from journeys import ast as A
from journeys.fmt import comment_texts, format_text
from journeys.parser import parse_text
from journeys.version import journey_version

from .conftest import ROOT, SHOP
from .lang_examples import example_blocks

SHOP_FILES = sorted((SHOP / "journeys").glob("*.journey")) + sorted((SHOP / "tests").glob("*.test"))


def _doc_blocks() -> list[str]:
    text = (ROOT / "docs" / "language.md").read_text(encoding="utf-8")
    return [b for kind, b in re.findall(r"^```([^\n]*)\n(.*?)^```", text, re.S | re.M) if kind == "journey"]


MESSY = {
    "odd indentation": (
        '      journey "A" {\n'
        'entry when event "X"\n'
        '        wait   20m\n'
        '    send    email "a"   with {   k :1 ,   "quoted key": "v" , }\n'
        '  }\n'
    ),
    "one line": (
        'policy { timezone "UTC" cap email 2 per 1d, all 6 per 7d quiet hours 21:00 - 08:00 user time } '
        'segment "s" = user.plan == "pro" '
        'journey "B" { entry when first event "X" where a >= 1.50 and (b or c) as x exit when user leaves segment "s" '
        'reenter after 7d goal "g" = event "Y" within 3d cap push 1 per 2d on exit { exit } '
        'wait for event "Y" up to 1h { on event { exit } on timeout { send push "p" with { v: x.v } via "fcm" } } '
        'split { 45.0% "a" { wait 1d } 45.0% "bb" { exit } 10% control } '
        'if not (x.a in [1, 2,]) { set user.n = -(1 + 2) * 3 - -4 } else if x.b { webhook "w" } else { exit } }'
    ),
    "blank lines": (
        '\n\n\n# top\n\n\n\njourney "C" {\n\n\n  entry when event "X"\n\n\n\n  wait 1d\n  wait 2d\n\n\n}\n\n\n\n'
        '# between\n\n\nsegment "s" = true\n\n\n'
    ),
    "comments everywhere": (
        '# file header\n'
        'journey "D" { # after the brace\n'
        '  # before entry\n'
        '  entry when event "X" as x # trailing\n'
        '  if x.a > 1 and # inside the condition\n'
        '     x.b { # after if brace\n'
        '    send email "m" with { s: "# not a comment", t: "a\\"b\\\\" } # after send\n'
        '    # before the closing brace\n'
        '  } # after the closing brace\n'
        '  # before else\n'
        '  else { # after else brace\n'
        '    exit\n'
        '  } # after the if\n'
        '  wait for event "Y" up to 1h { # after wait brace\n'
        '    on event { exit } # after a one-line arm\n'
        '    on timeout {\n'
        '      # a lonely comment\n'
        '    }\n'
        '  # before wait closing brace\n'
        '  }\n'
        '  send email "big" with {\n'
        '    # inside the object\n'
        '    a: 1, # after a\n'
        '    b: 2\n'
        '  }\n'
        '# end of journey\n'
        '} # after journey\n'
        '# end of file\n'
    ),
    "a scenario": (
        'test "t" {   user "u" {timezone:"Europe/Istanbul"}   at 2026-03-02 10:00    +03:00\n'
        ' event "X" user "u" { a: 1 }\n'
        'expect email "x" to "u"\n'
        '   at 2026-03-02 11:00 within 1m # trailing expect\n'
        'expect no push to "u" expect user "u" has score>=3\n'
        'at 2026-03-01 10:00 identify user "u" {}\n'
        'expect user "u" not in journey "J" at 2026-03-03 10:00 Z\n'
        'expect push "p" to "u" suppressed by quiet hours\n'
        'at 2026-03-04 10:00\n'
        '}\n'
    ),
    "long lines": (
        'segment "long" = count(event "Page Viewed" where category == "events", last 7d) >= 2 and '
        'not happened(event "Checkout Started", last 7d) or (user.plan in ["a", "b"] and user.x > 1)\n'
        'segment "mid" = count(event "Order Completed" where local_hour >= 21, last 90d) >= 3\n'
        'journey "E" { entry when event "X" as x\n'
        '  send email "garden_picks" with { product: x.name, last_order_total: round(last(event "Order Completed").revenue), '
        'orders: count(event "Order Completed", last 365d) }\n'
        '  split { 50% "a" { send email "garden_picks" with { product: x.name, last_order_total: '
        'round(last(event "Order Completed").revenue), orders: 1 } } 50% "b" { exit } }\n'
        '}\n'
    ),
    "literals as written": (
        'journey "F" {\n  entry when event "X"\n  wait 060m\n  reenter after 7\n'
        '  set user.a = 12345678901234567.5\n  set user.b = "tab\\there \\u00e9"\n  set user.c = 9:05\n'
        '  wait until 7:30\n  send email "m" with { d: 1.10, e: 2w }\n}\n'
    ),
}


def _versions(files) -> dict[str, str]:
    segments = {i.name.value: i for f in files for i in f.items if isinstance(i, A.Segment)}
    return {i.name.value: journey_version(i, segments) for f in files for i in f.items if isinstance(i, A.Journey)}


def _assert_formats_well(text: str, path: str = "x.journey") -> str:
    before = parse_text(text, path)
    assert not [d for d in before.diagnostics if d.is_error], before.diagnostics
    result = format_text(text, path)
    out = result.output
    assert out is not None and not result.diagnostics
    after = parse_text(out, path)
    assert not [d for d in after.diagnostics if d.is_error], (after.diagnostics, out)
    assert after.file.items == before.file.items, out  # the same tree, spans aside
    assert _versions([after.file]) == _versions([before.file])
    assert comment_texts(out) == comment_texts(text)  # every comment, in order
    assert format_text(out, path).output == out  # idempotent
    assert out == "" or (out.endswith("\n") and not out.endswith("\n\n") and not out.startswith("\n"))
    assert "\n\n\n" not in out and "\t" not in out
    assert all(line == line.rstrip() for line in out.split("\n"))
    return out


@pytest.mark.parametrize("path", SHOP_FILES, ids=lambda p: p.name)
def test_shop_files(path: Path):
    text = path.read_text(encoding="utf-8")
    _assert_formats_well(text, path.name)


def test_shop_versions_unchanged_through_the_compiler():
    from journeys.compiler import compile_project

    files = [parse_text(p.read_text(encoding="utf-8"), p.name).file for p in SHOP_FILES if p.suffix == ".journey"]
    formatted = [parse_text(format_text(p.read_text(encoding="utf-8"), p.name).output, p.name).file
                 for p in SHOP_FILES if p.suffix == ".journey"]
    before, after = compile_project(files), compile_project(formatted)
    assert {n: j.version for n, j in before.journeys.items()} == {n: j.version for n, j in after.journeys.items()}


def test_shop_needs_few_changes():
    """The rules follow the shop's layout: only trailing-comment columns and one two-step `on exit`
    line differ."""
    changed = {p.name for p in SHOP_FILES if format_text(p.read_text(encoding="utf-8"), p.name).changed}
    assert changed <= {"homepage_banner.journey", "policy.journey", "retarget_by_engagement.journey"}


@pytest.mark.parametrize("i", range(len(_doc_blocks())))
def test_docs_examples(i: int):
    _assert_formats_well(_doc_blocks()[i])


@pytest.mark.parametrize("i", range(len(example_blocks())))
def test_language_page_examples(i: int):
    _assert_formats_well(example_blocks()[i])


@pytest.mark.parametrize("name", list(MESSY))
def test_messy_inputs(name: str):
    _assert_formats_well(MESSY[name], "x.test" if name == "a scenario" else "x.journey")


def test_messy_layout_in_detail():
    out = format_text(MESSY["comments everywhere"]).output
    assert out == (
        '# file header\n'
        'journey "D" {                                        # after the brace\n'
        '  # before entry\n'
        '  entry when event "X" as x                          # trailing\n'
        '  # inside the condition\n'
        '  if x.a > 1 and x.b {                               # after if brace\n'
        '    send email "m" with { s: "# not a comment", t: "a\\"b\\\\" }  # after send\n'
        '    # before the closing brace\n'
        '    # after the closing brace\n'
        '    # before else\n'
        '  } else {                                           # after else brace\n'
        '    exit\n'
        '  }                                                  # after the if\n'
        '  wait for event "Y" up to 1h {                      # after wait brace\n'
        '    on event { exit }                                # after a one-line arm\n'
        '    on timeout {\n'
        '      # a lonely comment\n'
        '    }\n'
        '    # before wait closing brace\n'
        '  }\n'
        '  # inside the object\n'
        '  # after a\n'
        '  send email "big" with { a: 1, b: 2 }\n'
        '  # end of journey\n'
        '}                                                    # after journey\n'
        '# end of file\n'
    )


def test_one_line_input_in_detail():
    out = format_text(MESSY["one line"]).output
    assert out == (
        'policy {\n'
        '  timezone "UTC"\n'
        '  cap email 2 per 1d, all 6 per 7d\n'
        '  quiet hours 21:00-08:00 user time\n'
        '}\n'
        '\n'
        'segment "s" = user.plan == "pro"\n'
        '\n'
        'journey "B" {\n'
        '  entry when first event "X" where a >= 1.50 and (b or c) as x\n'
        '  exit when user leaves segment "s"\n'
        '  reenter after 7d\n'
        '  goal "g" = event "Y" within 3d\n'
        '  cap push 1 per 2d\n'
        '  on exit { exit }\n'
        '  wait for event "Y" up to 1h {\n'
        '    on event   { exit }\n'
        '    on timeout { send push "p" with { v: x.v } via "fcm" }\n'
        '  }\n'
        '  split {\n'
        '    45.0% "a"  { wait 1d }\n'
        '    45.0% "bb" { exit }\n'
        '    10% control\n'
        '  }\n'
        '  if not x.a in [1, 2] {\n'
        '    set user.n = -(1 + 2) * 3 - -4\n'
        '  } else if x.b {\n'
        '    webhook "w"\n'
        '  } else {\n'
        '    exit\n'
        '  }\n'
        '}\n'
    )


def test_blank_lines_and_long_lines():
    assert format_text(MESSY["blank lines"]).output == (
        '# top\n\njourney "C" {\n  entry when event "X"\n\n  wait 1d\n  wait 2d\n}\n\n# between\n\n'
        'segment "s" = true\n'
    )
    out = format_text(MESSY["long lines"]).output
    assert out.startswith(
        'segment "long" =\n'
        '  count(event "Page Viewed" where category == "events", last 7d) >= 2 and not happened(event "Checkout Started", last 7d)\n'
        '  or user.plan in ["a", "b"] and user.x > 1\n'
        '\n'
        'segment "mid" =\n'
        '  count(event "Order Completed" where local_hour >= 21, last 90d) >= 3\n'
    )
    assert (
        '  send email "garden_picks" with {\n'
        '    product: x.name,\n'
        '    last_order_total: round(last(event "Order Completed").revenue),\n'
        '    orders: count(event "Order Completed", last 365d)\n'
        '  }\n' in out
    )
    assert '    50% "a" {\n      send email "garden_picks" with {\n' in out  # too long for one line
    assert '    50% "b" { exit }\n' in out


def test_literals_keep_their_spelling():
    out = format_text(MESSY["literals as written"]).output
    for spelling in ("wait 060m", "reenter after 7\n", "12345678901234567.5", '"tab\\there \\u00e9"', "= 9:05",
                     "until 7:30", "d: 1.10, e: 2w"):
        assert spelling in out


def test_scenario_layout():
    out = format_text(MESSY["a scenario"], "x.test").output
    assert out == (
        'test "t" {\n'
        '  user "u" { timezone: "Europe/Istanbul" }\n'
        '  at 2026-03-02 10:00 +03:00 event "X" user "u" { a: 1 }\n'
        '  expect email "x" to "u" at 2026-03-02 11:00 within 1m  # trailing expect\n'
        '  expect no push to "u"\n'
        '  expect user "u" has score >= 3\n'
        '  at 2026-03-01 10:00 identify user "u" {}\n'
        '  expect user "u" not in journey "J" at 2026-03-03 10:00 Z\n'
        '  expect push "p" to "u" suppressed by quiet hours at 2026-03-04 10:00\n'
        '}\n'
    )


def test_syntax_errors_are_not_formatted():
    result = format_text('journey "A" {\n  sned email "x"\n}\n', "a.journey")
    assert result.output is None and not result.changed
    assert result.diagnostics and all(d.is_error for d in result.diagnostics)


def test_empty_and_comment_only_files():
    assert format_text("").output == ""
    assert format_text("\n\n  \n").output == ""
    assert format_text("  # only a comment   \n\n\n# and another\n").output == "# only a comment\n\n# and another\n"


# ------------------------------------------------------------------------------ whitespace mutations

_TOKEN = re.compile(r'"(?:[^"\\\n]|\\.)*"|#[^\n]*|\s+|[(){}\[\],]|[^\s"#(){}\[\],]+')
_TOP_WORDS = {"segment", "journey", "test", "policy"}
_PUNCT = set("(){}[],")


def _gaps(text: str) -> tuple[list[str], list[int]]:
    """The tokens of `text` with whitespace between them, and the indexes of the places where the
    whitespace may change without changing the tokens, the comments or the blank lines."""
    tokens: list[str] = []
    for m in _TOKEN.finditer(text):
        tok = m.group()
        if tokens and not tok.isspace() and not tokens[-1].isspace():
            tokens.append("")  # a place between two tokens with no space: one may go in
        tokens.append(tok)
    places = []
    for i in range(1, len(tokens) - 1):
        tok = tokens[i]
        if tok and not tok.isspace():
            continue
        before, after = tokens[i - 1], tokens[i + 1]
        if before.startswith("#") or after.startswith("#") or tok.count("\n") > 1:
            continue
        if tok == "" and not (before[-1] in _PUNCT or after[0] in _PUNCT):
            continue
        places.append(i)
    return tokens, places


def _mutate(tokens: list[str], places: list[int], changes: list[tuple[int, str]]) -> str:
    out = list(tokens)
    for k, ws in changes:
        i = places[k % len(places)]
        before, after = out[i - 1], out[i + 1]
        if ws == "" and not (before[-1] in _PUNCT or after[0] in _PUNCT):
            ws = " "
        if "\n" in ws and after in _TOP_WORDS:
            ws = " "
        out[i] = ws
    return "".join(out)


_WS = st.sampled_from(["", " ", "   ", "\t", "\n", "\n    ", " \n  "])


@pytest.mark.parametrize("path", SHOP_FILES, ids=lambda p: p.name)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(changes=st.lists(st.tuples(st.integers(min_value=0, max_value=10_000), _WS), min_size=1, max_size=40))
def test_whitespace_mutations_format_the_same(path: Path, changes):
    text = path.read_text(encoding="utf-8")
    tokens, places = _gaps(text)
    mutated = _mutate(tokens, places, changes)
    assert comment_texts(mutated) == comment_texts(text)
    result = format_text(mutated, path.name)
    assert result.output is not None, (result.diagnostics, mutated)
    assert result.output == format_text(text, path.name).output, mutated


# ------------------------------------------------------------------------------ the command line


def journeys(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=120)


CANONICAL = 'journey "A" {\n  entry when event "X"\n  wait 1d\n}\n'
UNTIDY = 'journey "B" {   entry when event "X"  # why\n wait 1d }\n'
BROKEN = 'journey "C" {\n  entry when event "X"\n  sned email "welcome"\n}\n'


def _project(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
    return tmp_path


def test_cli_check_lists_files_and_exits_1_without_changing_them(tmp_path):
    root = _project(tmp_path, {"journeys/a.journey": CANONICAL, "journeys/b.journey": UNTIDY,
                               "tests/b.test": 'test "t" {\nexpect no push to "u"\n}\n'})
    r = journeys("fmt", "--check", ".", cwd=root)
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stdout.split() == ["journeys/b.journey", "tests/b.test"]
    assert (root / "journeys/b.journey").read_text() == UNTIDY
    r = journeys("fmt", "--check", "journeys/a.journey", cwd=root)
    assert r.returncode == 0 and r.stdout == ""


def test_cli_rewrites_in_place_then_check_is_clean(tmp_path):
    root = _project(tmp_path, {"journeys/a.journey": CANONICAL, "journeys/b.journey": UNTIDY})
    r = journeys("fmt", cwd=root)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.split() == ["journeys/b.journey"]
    assert (root / "journeys/b.journey").read_text() == (
        'journey "B" {\n' + '  entry when event "X"'.ljust(53) + '# why\n  wait 1d\n}\n')
    assert (root / "journeys/a.journey").read_text() == CANONICAL
    r = journeys("fmt", "--check", cwd=root)
    assert r.returncode == 0 and r.stdout == ""


def test_cli_diff_prints_a_unified_diff_and_writes_nothing(tmp_path):
    root = _project(tmp_path, {"b.journey": UNTIDY})
    r = journeys("fmt", "--diff", "b.journey", cwd=root)
    assert r.returncode == 0
    assert "--- b.journey (original)" in r.stdout and "+  wait 1d" in r.stdout
    assert (root / "b.journey").read_text() == UNTIDY


def test_cli_syntax_error_is_reported_and_file_left_alone(tmp_path):
    root = _project(tmp_path, {"journeys/b.journey": UNTIDY, "journeys/c.journey": BROKEN})
    r = journeys("fmt", cwd=root)
    assert r.returncode == 1
    assert "error[J003]: unknown word `sned`" in r.stderr and "--> journeys/c.journey:3:3" in r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    assert (root / "journeys/c.journey").read_text() == BROKEN
    assert r.stdout.split() == ["journeys/b.journey"]  # the other file is still formatted
    r = journeys("fmt", "--check", cwd=root)
    assert r.returncode == 1 and r.stdout == ""


def test_cli_missing_path_and_binary_file(tmp_path):
    r = journeys("fmt", "nowhere", cwd=tmp_path)
    assert r.returncode == 2 and "no such file or directory" in r.stderr
    (tmp_path / "bin.journey").write_bytes(b"journey \x00")
    r = journeys("fmt", ".", cwd=tmp_path)
    assert r.returncode == 1 and "J004" in r.stderr and "Traceback" not in r.stderr


def test_the_formatting_section_shows_canonical_text():
    [example] = [b for b in _doc_blocks() if b.startswith("# the layout `journeys fmt` writes")]
    assert format_text(example).output == example


def test_cli_formatter_failure_is_an_internal_error_not_a_traceback(tmp_path, monkeypatch):
    """If the formatter ever failed its own meaning check, the file is left alone and reported."""
    from typer.testing import CliRunner

    import journeys.fmt as fmt
    from engine.cli.app import app

    def refuse(text, items):
        return "journey \"other\" {\n}\n"

    monkeypatch.setattr(fmt, "format_tree", refuse)
    (tmp_path / "b.journey").write_text(UNTIDY, encoding="utf-8")
    r = CliRunner().invoke(app, ["fmt", str(tmp_path / "b.journey")])
    assert r.exit_code == 1, r.output
    assert "J000" in r.output and "would change the file's meaning" in r.output
    assert (tmp_path / "b.journey").read_text() == UNTIDY
