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
