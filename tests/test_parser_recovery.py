"""The parser's own output for broken and edge-case text: where spans start and end, which syntax
errors are reported (every independent one, each once, without knock-on errors), and that no
top-level item is lost to a neighbour's mistake."""

from __future__ import annotations

from journeys import ast as A
from journeys.parser import parse_text


def errors(text: str) -> list[tuple[int, int, str, str, str]]:
    """(line, col, code, message, help) of each diagnostic of `text`."""
    return [(d.span.line, d.span.col, d.code, d.message, d.help or "") for d in parse_text(text, "f").diagnostics]


# ---------------------------------------------------------------- spans


def test_each_if_branch_spans_its_own_text():
    src = (
        'journey "A" {\n'
        '  entry when event "X" as v\n'
        '  if v.a > 1 {\n'
        '    exit\n'
        '  } else if v.a > 0 {\n'
        '    wait 1h\n'
        '  } else {\n'
        '    exit\n'
        '  }\n'
        '}\n'
    )
    result = parse_text(src, "f")
    assert result.diagnostics == []
    step = result.file.items[0].items[1]
    assert isinstance(step, A.If)
    spans = [(b.span.line, b.span.col, b.span.end_line, b.span.end_col) for b in step.branches]
    assert spans == [(3, 3, 5, 4), (5, 5, 7, 4), (7, 5, 9, 4)]
    assert (step.span.line, step.span.col, step.span.end_line, step.span.end_col) == (3, 3, 9, 4)


def test_a_lone_if_branch_spans_the_whole_if():
    result = parse_text('journey "A" {\n  entry when event "X" as v\n  if v.a > 1 { exit }\n}\n', "f")
    step = result.file.items[0].items[1]
    assert step.branches[0].span == step.span


# ---------------------------------------------------------------- `event` as a name


def test_event_is_a_name_in_a_functions_arguments():
    from datetime import datetime, timedelta, timezone

    from journeys.evaluation import Context
    from journeys.expr import compile_expr

    now = datetime(2026, 3, 9, 12, 0, tzinfo=timezone.utc)
    src = ('segment "s" = count(event "Product Viewed" where lower(event) == "product viewed"'
           ' and contains(event, "View"), last 7d)\n')
    result = parse_text(src, "f")
    assert result.diagnostics == []
    cond = result.file.items[0].condition
    assert isinstance(cond, A.Call) and isinstance(cond.args[0], A.EventMatch)
    inner = cond.args[0].where.left.left.args[0]
    assert inner == A.Name("event") and (inner.span.line, inner.span.col, inner.span.end_col) == (1, 56, 61)
    hist = [{"event": "Product Viewed", "timestamp": now - timedelta(hours=1), "properties": {}},
            {"event": "Product Added", "timestamp": now - timedelta(hours=1), "properties": {}}]
    assert compile_expr(cond)(Context(now=now, user_id="u1", history=hist)) == 1


def test_event_still_starts_an_event_match_in_arguments():
    result = parse_text('segment "s" = count(event "X", last 7d) + count(event "Y" where event == "Y")\n', "f")
    assert result.diagnostics == []
    left, right = result.file.items[0].condition.left, result.file.items[0].condition.right
    assert isinstance(left.args[0], A.EventMatch) and isinstance(right.args[0], A.EventMatch)
    assert right.args[0].where.left == A.Name("event")


def test_event_as_a_name_where_no_event_match_can_stand():
    src = ('journey "A" {\n  entry when event "P" where starts_with(event, "P") as viewed\n'
           '  exit when event "X" where coalesce(event, "a") == "b"\n}\n')
    result = parse_text(src, "f")
    assert result.diagnostics == []
    entry = result.file.items[0].items[0]
    assert entry.match.where.args[0] == A.Name("event")


# ---------------------------------------------------------------- dangling operators

JOURNEY = 'journey "A" {{\n  entry when event "X" as v\n{}\n}}\n'


def test_a_dangling_and_before_a_block_says_what_is_missing():
    assert errors(JOURNEY.format('  if v.a and {\n    exit\n  }\n  wait 1h')) == [
        (3, 14, "J001", "expected an expression after `and`",
         "found `{`: `and` needs a value on each side; complete it, or remove the `and`"),
    ]


def test_a_dangling_operator_before_the_next_statement_points_at_the_statement():
    # `send` after `and` could only be a name to the lexer; the parser steps back and reads the
    # statement, so the rest of the journey parses (and its own mistakes are reported).
    got = errors(JOURNEY.format('  exit when v.a == 1 or\n  send email "w"\n  wiat 1h'))
    assert [(line, col, message) for line, col, _, message, _ in got] == [
        (4, 3, "expected an expression after `or`"),
        (5, 3, "unknown word `wiat`"),
    ]
    assert "found `send`" in got[0][4]


def test_a_dangling_operator_inside_where_before_up_to():
    got = errors(JOURNEY.format('  wait for event "Y" where a == up to 1h'))
    assert [(line, col, message) for line, col, _, message, _ in got] == [(3, 33, "expected an expression after `==`")]


def test_a_dangling_operator_at_the_end_keeps_the_segment():
    result = parse_text('segment "s" = user.a == 1 and\n', "f")
    assert [(d.span.line, d.span.col, d.message) for d in result.diagnostics] == [
        (1, 27, "expected an expression after `and`")]
    assert "found the end of this `segment`" in result.diagnostics[0].help
    (segment,) = result.file.items
    assert isinstance(segment.condition.right, A.Missing)


def test_and_or_in_are_never_names_where_an_operand_stands():
    for src, at in [("user.a and and user.b", "and"), ("user.a or or user.b", "or"), ("[1, and]", "and")]:
        got = errors(f'segment "s" = {src}\n')
        assert got and got[0][3].startswith("expected an expression after"), (src, got)
        assert f"found `{at}`" in got[0][4]
    assert errors('segment "s" = user.a in [1] and user.b or user.c\n') == []


def test_and_or_stay_names_where_no_operand_stands():
    src = ('journey "A" {\n  entry when event "X" as v\n  set user.or = v.and\n'
           '  send email "w" with { and: 1, in: 2 }\n}\n')
    assert errors(src) == []


# ---------------------------------------------------------------- lost braces

E = '  entry when event "X" as v\n'


def items(text: str) -> list[str]:
    return [f"{type(i).__name__}:{i.name.value if getattr(i, 'name', None) else ''}"
            for i in parse_text(text, "f").file.items]


def test_an_unclosed_if_and_a_later_mistake_are_both_reported():
    src = 'journey "A" {\n' + E + '  if v.a {\n    send email "w"\n  wait 1h\n  sned email "x"\n}\n'
    got = errors(src)
    assert [(line, col, message) for line, col, _, message, _ in got] == [
        (6, 3, "unknown word `sned`"),
        (7, 2, "this `journey` ends before it is complete"),
    ]
    assert got[1][4] == "a `}` is missing: the block opened at line 3 (`if v.a {`) is never closed"
    assert items(src) == ["Journey:A"]  # kept, so what refers to it is not wrong as well


def test_a_lost_brace_never_swallows_the_next_items():
    src = ('journey "A" {\n' + E + '  if v.a {\n    exit\n}\n'
           'journey "B" {\n' + E + '  wiat 1h\n}\n'
           'segment "s" = user.a == 1\npolicy {\n  timezone "UTC"\n}\ntest "t" {\n  expect user "u" in journey "A"\n}\n')
    got = errors(src)
    assert [(line, message) for line, _, _, message, _ in got] == [
        (5, "this `journey` ends before it is complete"),
        (8, "unknown word `wiat`"),
    ]
    assert "line 3 (`if v.a {`)" in got[0][4]
    assert items(src) == ["Journey:A", "Journey:B", "Segment:s", "Policy:", "Scenario:t"]


def test_an_unclosed_item_before_the_next_item():
    src = 'policy {\n  timezone "UTC"\njourney "A" {\n' + E + '  wiat 1h\n}\n'
    got = errors(src)
    assert [(line, message) for line, _, _, message, _ in got] == [
        (2, "this `policy` ends before it is complete"), (5, "unknown word `wiat`")]
    assert "line 1 (`policy {`)" in got[0][4]
    assert items(src) == ["Policy:", "Journey:A"]


def test_the_brace_missing_before_the_next_branch_is_put_in():
    src = ('journey "A" {\n' + E + '  wait for event "Y" up to 1h {\n    on event {\n      exit\n'
           '    on timeout { sned email "w" }\n  }\n  wiat 1h\n}\n')
    got = errors(src)
    assert [(line, col, message) for line, col, _, message, _ in got] == [
        (6, 5, "unexpected `on`: a `}` is missing before it"),
        (6, 18, "unknown word `sned`"),
        (8, 3, "unknown word `wiat`"),
    ]
    assert "line 4 (`on event {`)" in got[0][4]


def test_the_brace_missing_before_else_is_put_in():
    src = 'journey "A" {\n' + E + '  if v.a {\n    exit\n  else {\n    wiat 1h\n  }\n}\n'
    assert [(line, message) for line, _, _, message, _ in errors(src)] == [
        (5, "unexpected `else`: a `}` is missing before it"), (6, "unknown word `wiat`")]
    step = parse_text(src, "f").file.items[0].items[1]
    assert [b.condition is None for b in step.branches] == [False, True]


def test_a_statement_indented_inside_a_block_does_not_close_it():
    # `entry` cannot stand in an `if`, but it is indented inside it: a misplaced declaration, not
    # a lost brace (closing the `if` there would make the journey's `}` one too many).
    src = 'journey "A" {\n' + E + '  if v.a {\n    entry when event "Z"\n  }\n  wiat 1h\n}\n'
    assert [(line, message) for line, _, _, message, _ in errors(src)] == [
        (4, "unexpected `entry`"), (6, "unknown word `wiat`")]


def test_unclosed_parenthesis_and_object():
    src = 'journey "A" {\n' + E + '  if (v.a > 1 {\n    exit\n  }\n  send email "w" with { a: v.a\n  wait 1h\n  wiat 1h\n}\n'
    got = errors(src)
    assert [(line, message) for line, _, _, message, _ in got] == [
        (3, "unexpected `{`: a `)` is missing before it"),
        (7, "unexpected `wait`: a `}` is missing before it"),
        (8, "unknown word `wiat`"),
    ]
    assert "line 6 (`send email \"w\" with { a: v.a`)" in got[1][4]


def test_a_missing_opening_brace():
    src = 'journey "A" {\n' + E + '  if v.a\n    exit\n  }\n  wiat 1h\n}\n'
    assert [(line, message) for line, _, _, message, _ in errors(src)] == [
        (4, "unexpected `exit`: a `{` is missing before it"), (6, "unknown word `wiat`")]


def test_a_brace_too_many_ends_the_item_early():
    src = 'journey "A" {\n' + E + '  if v.a {\n    exit\n  }}\n  wiat 1h\n}\njourney "B" {\n' + E + '  wiat 1h\n}\n'
    got = errors(src)
    assert [(line, message) for line, _, _, message, _ in got] == [
        (6, "unexpected `wiat` after the end of the `journey`"), (10, "unknown word `wiat`")]
    assert "the `}` at line 5" in got[0][4]


def test_two_unclosed_blocks_blame_the_one_the_indentation_shows():
    src = 'journey "A" {\n' + E + '  if v.a {\n    if v.b {\n      exit\n  }\n  wait 1h\n}\n'
    got = errors(src)
    assert [line for line, *_ in got] == [8]
    assert "line 4 (`if v.b {`)" in got[0][4]
