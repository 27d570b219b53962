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
