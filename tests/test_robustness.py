"""A traceback is never the answer to a bad file: garbage, binary data, an empty file, deep
nesting and huge files all give diagnostics. The property test mutates valid files at random."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from journeys.checker import check_project
from journeys.parser import MAX_FILE_BYTES, parse_file, parse_text
from journeys.project import load_project

from .conftest import language_examples

VALID = language_examples()


def codes(result) -> list[str]:
    return [d.code for d in result.diagnostics]


def test_language_examples_parse_clean():
    result = parse_text(VALID, "LANGUAGE.md")
    assert result.diagnostics == []
    assert len(result.file.items) == 16  # policy, 6 segments, 7 journeys, 2 scenarios


def test_binary_file(tmp_path):
    p = tmp_path / "x.journey"
    p.write_bytes(b"journey \"a\" {\n\x00\x01\x02\xff}")
    [d] = parse_file(p, "x.journey").diagnostics
    assert (d.code, d.span.line, d.span.col) == ("J004", 2, 1)


def test_not_utf8(tmp_path):
    p = tmp_path / "x.journey"
    p.write_bytes('segment "caf\u00e9" = user.a == 1\n'.encode("latin-1"))
    [d] = parse_file(p, "x.journey").diagnostics
    assert (d.code, d.span.line, d.span.col) == ("J004", 1, 13)
    assert "0xe9" in d.message


def test_empty_and_blank_files():
    for text in ("", "   \n\n", "# only a comment\n"):
        result = parse_text(text, "e.journey")
        assert codes(result) in (["J007"], [])
    assert codes(parse_text("", "e.journey")) == ["J007"]


def test_garbage():
    result = parse_text("}{}{)(*&^%$ lorem ipsum ünïcödé 💥\n" * 50, "g.journey")
    assert result.diagnostics and all(d.code.startswith("J00") for d in result.diagnostics)


def test_ten_thousand_nested_braces():
    text = 'journey "deep" {\n  entry when event "X"\n' + "  if true {\n" * 10_000 + "  }\n" * 10_000 + "}\n"
    result = parse_text(text, "deep.journey")
    assert codes(result) == ["J006"]
    assert result.diagnostics[0].span.line == 2 + 64  # line 1 opens the journey; line k > 2 opens brace k


def test_ten_thousand_nested_nots_and_a_long_chain():
    deep_not = 'segment "n" = ' + "not " * 10_000 + "true\n"
    long_sum = 'segment "s" = user.a == ' + " + ".join(["1"] * 10_000) + "\n"
    for text in (deep_not, long_sum):
        result = parse_text(text, "deep.journey")
        assert codes(result) == ["J006"], result.diagnostics[:3]


def test_ten_megabyte_file(tmp_path):
    p = tmp_path / "big.journey"
    p.write_bytes(b'segment "s" = user.a == 1\n' * (10_000_000 // 26))
    [d] = parse_file(p, "big.journey").diagnostics
    assert d.code == "J005" and "10.0 MB" in d.message
    assert os.path.getsize(p) > MAX_FILE_BYTES


def test_unreadable_path_is_a_diagnostic(tmp_path):
    (tmp_path / "dir.journey").mkdir()
    [d] = parse_file(tmp_path / "dir.journey", "dir.journey").diagnostics
    assert d.code == "J008"


@pytest.fixture(scope="module")
def valid_lines():
    return VALID.splitlines(keepends=True)


MUTATIONS = st.sampled_from(["delete_line", "duplicate_line", "swap_lines", "delete_chars", "insert_text", "replace_char"])
SNIPPETS = st.sampled_from(['"', "{", "}", "(", ")", "[", "]", "%", " 15 ", "25:99", " if ", " else ", " wait ",
                            " event ", " as ", "\x00", "é", "\t", "\n", ",", " == ", " not ", " split ", " 5mo ",
                            'segment "x" = user in segment "x"\n', " last ", " user."])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_files_never_crash_the_checker(tmp_path_factory, valid_lines, data):
    lines = list(valid_lines)
    for _ in range(data.draw(st.integers(1, 4))):
        kind = data.draw(MUTATIONS)
        i = data.draw(st.integers(0, len(lines) - 1))
        j = data.draw(st.integers(0, len(lines) - 1))
        if kind == "delete_line" and len(lines) > 1:
            del lines[i]
        elif kind == "duplicate_line":
            lines.insert(i, lines[i])
        elif kind == "swap_lines":
            lines[i], lines[j] = lines[j], lines[i]
        else:
            line = lines[i]
            pos = data.draw(st.integers(0, len(line)))
            if kind == "delete_chars":
                lines[i] = line[:pos] + line[pos + data.draw(st.integers(1, 8)):]
            elif kind == "insert_text":
                lines[i] = line[:pos] + data.draw(SNIPPETS) + line[pos:]
            else:
                lines[i] = line[:pos] + data.draw(st.characters()) + line[pos + 1:]
    root = tmp_path_factory.mktemp("mut")
    (root / "journeys").mkdir()
    (root / "journeys" / "m.journey").write_text("".join(lines), encoding="utf-8", errors="surrogatepass")
    project = load_project(root)
    diags = check_project(project)  # must not raise
    for d in diags:
        assert d.code.startswith("J") and d.message
        assert d.span is None or d.span.line >= 1
