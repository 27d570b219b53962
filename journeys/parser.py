"""Source text → typed tree, with every syntax problem collected as a diagnostic.

A file is first scanned (cheaply, with one regular expression) for the things that must never
reach the parser: bytes that are not UTF-8 text, a file too large to be a journey file, brackets
nested deeper than any journey needs. The scan also cuts the file into chunks at each top-level
keyword (`policy`, `segment`, `journey`, `test` at the start of a line, outside any bracket, or
inside a bracket left open when the line can only start an item: `journey "B" {`), and each chunk
is parsed on its own: a syntax error in one journey, a lost `}` included, does not hide the errors
of the next one.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from lark import Token
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from . import ast as A
from .diagnostics import Diagnostic, Diagnostics, Severity, Span
from .lalr import TypedLark, accepts, move_lexer, position, trial, unshift

if TYPE_CHECKING:
    from .hints import Fix

GRAMMAR = Path(__file__).with_name("grammar.lark")

MAX_FILE_BYTES = 1 << 20  # 1 MiB: ~30,000 lines; far beyond any hand-written journey file
MAX_NESTING = 64  # brackets and braces
MAX_TREE_DEPTH = 200  # expression and step nesting in the typed tree

TOP_LEVEL = ("policy", "segment", "journey", "test")

_SCAN = re.compile(
    r'"(?:[^"\\\n]|\\.)*"'  # a string
    r"|#[^\n]*"  # a comment
    r"|[{}\[\]()]"  # a bracket
    r"|(?m:^(?:policy|segment|journey|test)\b)"  # a top-level keyword at the start of a line
)


# A line that can only start a top-level item, whatever brackets were left open before it.
_ITEM_START = re.compile(r'(?:journey|test)[ \t]+"[^"\n]*"[ \t]*\{|segment[ \t]+"[^"\n]*"[ \t]*=|policy[ \t]*\{')


@lru_cache(maxsize=1)
def parser() -> TypedLark:
    """The LALR parser, built once per process; Lark caches the analysed grammar on disk."""
    return TypedLark(
        GRAMMAR.read_text(encoding="utf-8"),
        parser="lalr",
        lexer="contextual",
        strict=True,
        maybe_placeholders=True,
        cache=True,
    )


@dataclass
class ParseResult:
    file: A.SourceFile
    diagnostics: list[Diagnostic]
    lines: list[str]


def decode(data: bytes, path: str, diags: Diagnostics) -> str | None:
    if len(data) > MAX_FILE_BYTES:
        diags.error(
            "J005",
            f"file is too large to be a journey file ({len(data) / 1e6:.1f} MB; the limit is "
            f"{MAX_FILE_BYTES / 1e6:.1f} MB)",
            Span.point(path, 1, 1),
            "split the journeys into several files",
        )
        return None
    nul = data.find(b"\x00")
    if nul >= 0:
        line, col = _line_col(data, nul)
        diags.error("J004", "file holds binary data (a NUL byte), not journey text", Span.point(path, line, col),
                    "journey files are UTF-8 text; is this the right file?")
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line, col = _line_col(data, e.start)
        diags.error("J004", f"file is not UTF-8 text (byte 0x{data[e.start]:02x})", Span.point(path, line, col),
                    "save the file as UTF-8")
        return None
    return text.removeprefix("\ufeff")


def _line_col(data: bytes, offset: int) -> tuple[int, int]:
    line = data.count(b"\n", 0, offset) + 1
    start = data.rfind(b"\n", 0, offset) + 1
    return line, offset - start + 1


def parse_file(path: str | Path, display: str | None = None) -> ParseResult:
    p = Path(path)
    display = display or str(path)
    diags = Diagnostics()
    try:
        data = p.read_bytes()
    except OSError as e:
        diags.error("J008", f"cannot read file: {e.strerror or e}", Span.point(display, 1, 1))
        return ParseResult(A.SourceFile(display, ()), diags.items, [])
    text = decode(data, display, diags)
    if text is None:
        return ParseResult(A.SourceFile(display, ()), diags.items, [])
    return parse_text(text, display)


def parse_text(text: str, path: str = "<string>") -> ParseResult:
    diags = Diagnostics()
    lines = text.splitlines()
    if not text.strip():
        diags.warning("J007", "file is empty: it declares nothing", Span.point(path, 1, 1),
                      "add a journey, a segment or a policy, or delete the file")
        return ParseResult(A.SourceFile(path, ()), diags.items, lines)
    chunks = _chunks(text, path, diags)
    items: list = []
    for start, end, line_offset in chunks:
        items.extend(_parse_chunk(text[start:end], path, line_offset, diags))
    return ParseResult(A.SourceFile(path, tuple(items)), diags.items, lines)


def _chunks(text: str, path: str, diags: Diagnostics) -> list[tuple[int, int, int]]:
    """(start, end, line offset) of each top-level chunk; reports brackets nested too deep."""
    starts = [0]
    depth = 0
    too_deep_reported = False
    for m in _SCAN.finditer(text):
        tok = m.group()
        c = tok[0]
        if c in "{[(":
            depth += 1
            if depth > MAX_NESTING and not too_deep_reported:
                too_deep_reported = True
                line = text.count("\n", 0, m.start()) + 1
                col = m.start() - text.rfind("\n", 0, m.start())
                diags.error("J006", f"brackets nested more than {MAX_NESTING} deep", Span.point(path, line, col),
                            "flatten the journey: nest fewer `if` blocks and parentheses")
        elif c in "}])":
            depth = max(0, depth - 1)
        elif c.isalpha() and m.start() > 0 and (depth == 0 or _ITEM_START.match(text, m.start())):
            # Inside a bracket, only a line that plainly starts an item cuts: a brace lost in one
            # item must not swallow the next one (its parse reports the brace).
            starts.append(m.start())
            depth = 0
    if too_deep_reported:
        return []
    bounds = []
    line = 0
    for i, s in enumerate(starts):
        e = starts[i + 1] if i + 1 < len(starts) else len(text)
        bounds.append((s, e, line))
        line += text.count("\n", s, e)
    return bounds


def _parse_chunk(chunk: str, path: str, line_offset: int, diags: Diagnostics) -> list:
    recovery = _Recovery(chunk, path, line_offset)
    try:
        items = parser().parse_items(chunk, path, line_offset, on_error=recovery)
    except UnexpectedInput as e:
        if e is not recovery.last_error:
            recovery.report(e)
        diags.extend(recovery.found)
        return []
    except Exception as e:  # a builder bug must not look like the user's fault, but must not crash either
        diags.extend(recovery.found)
        diags.error("J000", f"internal error while reading this file: {e!r}", Span.point(path, line_offset + 1, 1),
                    "please report this with the file attached")
        return []
    diags.extend(recovery.found)
    if _cannot_be_too_deep(chunk):
        return items
    kept = []
    for item in items:
        depth = _depth(item)
        if depth > MAX_TREE_DEPTH:
            diags.error("J006", f"this {type(item).__name__.lower()} is nested {depth} levels deep "
                        f"(the limit is {MAX_TREE_DEPTH})", item.span, "split the condition into segments")
        else:
            kept.append(item)
    return kept


_OPENERS = {"LBRACE": "}", "LPAR": ")", "LSQB": "]"}
_CLOSER_TYPES = {"}": "RBRACE", ")": "RPAR", "]": "RSQB"}
_MAX_CLOSERS = 3  # brackets closed in one repair


class _Recovery:
    """Lark's error callback: report a syntax error, repair what can be repaired, and go on parsing.

    First, a mistake that newcomers make (`wait 2 days`, `a && b`, `'welcome'`, `elif`...) is
    reported with its own code and the corrected line, and repaired as `journeys.hints` says.
    Otherwise a repair puts in what the text most likely lacks, after trying it on a copy of the parser:
    - an operand, where an expression stands unfinished (`if a and {`, `a == }`): the tree gets an
      `A.Missing` there. When the word after the operator is a keyword that the operator made a
      name (`exit when a and` then `send ...` on the next line), the parser steps back to read it
      as the keyword again;
    - closing brackets, before a word that belongs after the block, when the word is visibly
      outside it (indented no deeper than the line that opened it): `on event { exit` then
      `on timeout { ... }`;
    - at the end of the text, whatever completes it (operands and closing brackets), so the item
      is kept and checked, and a lost `}` never costs the rest of the file.
    Otherwise the token is dropped. Dropping tokens one by one makes every following token of the
    same broken statement fail too; those are the same mistake, so an error is reported only when
    it is not on the line of the previous one and not the token right after the one just dropped.
    """

    def __init__(self, chunk: str, path: str, line_offset: int):
        self.chunk = chunk
        self.path = path
        self.line_offset = line_offset
        self.found: list[Diagnostic] = []
        self.last_line = -1
        self.last_end = -1
        self.last_error: UnexpectedInput | None = None
        self._lines: list[str] | None = None

    def __call__(self, e: UnexpectedInput) -> bool:
        self.last_error = e
        ip = getattr(e, "interactive_parser", None)
        fix = None
        if ip is not None:  # a newcomer's mistake first; only a file with an error loads the hints
            from .hints import newcomer_fix

            fix = newcomer_fix(e, ip, self.chunk, _literals())
        if fix is not None:
            self._apply(e, ip, fix)
            return True
        if not isinstance(e, UnexpectedToken) or ip is None:
            self.report(e)
            return True
        tok = e.token
        if tok.type == "$END":
            fill = self._completion(ip, tok)
            self.report(e, self._end_diagnostic(e, ip, fill))
            if fill is None:
                return False  # nothing sensible completes it: the item is lost, the error reported
            for t in fill:
                ip.feed_token(t)
            return True
        rewind = self._keyword_as_name(ip, tok)
        if rewind is not None:
            operator, word = rewind
            self.report(e, self._operand_diagnostic(operator, word, f"`{word.value}`"))
            unshift(ip, 1)
            ip.feed_token(_operand(word))
            move_lexer(ip, self.chunk, word.start_pos)
            return True
        fill = self._fill(ip, tok)
        self.report(e, self._repair_diagnostic(e, ip, fill) or self._after_item_diagnostic(e))
        if fill is not None:
            for t in fill:
                ip.feed_token(t)
            ip.feed_token(tok)
            if any(t.value for t in fill):  # a bracket put in: back in step, the next error is a new one
                self.last_line = self.last_end = -1
        return True

    # ------------------------------------------------------------ repairs

    def _apply(self, e: UnexpectedInput, ip, fix: Fix) -> None:
        """Report a newcomer's mistake (see `journeys.hints`) and make its repair."""
        line, col = position(self.chunk, fix.start)
        end_line, end_col = position(self.chunk, max(fix.end, fix.start + 1))
        o = self.line_offset
        self.report(e, Diagnostic(fix.code, Severity.ERROR, fix.message,
                                  Span(self.path, line + o, col, end_line + o, end_col), fix.help))
        self.last_end = -1  # back in step: an error after this line is a mistake of its own
        unshift(ip, fix.pop)
        for t in fix.feed:
            ip.feed_token(t)
        if fix.resume is not None:
            move_lexer(ip, self.chunk, fix.resume)

    def _fill(self, ip, tok: Token) -> list[Token] | None:
        """Tokens to put before `tok` so that the parser takes it: an operand, then closers."""
        stack = ip.parser_state.value_stack
        fills: list[list[Token]] = []
        operand = [_operand(tok)] if "VAR" in ip.choices() else []
        if operand:
            fills.append(operand)
        openers = [v for v in reversed(stack) if type(v) is Token and v.type in _OPENERS][:_MAX_CLOSERS]
        closing = list(operand)
        for opener in openers:
            if not self._outside(opener, tok):
                break
            closing = closing + [Token.new_borrow_pos(_CLOSER_TYPES[_OPENERS[opener.type]], _OPENERS[opener.type], tok)]
            fills.append(closing)
        if not operand and "LBRACE" in ip.choices():  # `if a` then the block's first step
            fills.append([Token.new_borrow_pos("LBRACE", "{", tok)])
        for fill in fills:
            if accepts(ip, fill + [tok]):
                return fill
        return None

    def _outside(self, opener: Token, tok: Token) -> bool:
        """Whether `tok` stands outside the block `opener` starts, to the eye: on the opener's
        line, or first on a line indented no deeper than the opener's."""
        if tok.line == opener.line:
            return True
        lines = self.lines
        text = lines[tok.line - 1] if tok.line - 1 < len(lines) else ""
        if text[: tok.column - 1].strip():
            return False
        return _indent(text) <= _indent(lines[opener.line - 1])

    def _keyword_as_name(self, ip, tok: Token) -> tuple[Token, Token] | None:
        """(operator, word) when the word the parser fails after is a keyword that it read as a
        name because an operator came before it: the expression is what is unfinished."""
        stack = ip.parser_state.value_stack
        if len(stack) < 2 or type(stack[-1]) is not Token or stack[-1].type != "VAR" or type(stack[-2]) is not Token:
            return None
        word, operator = stack[-1], stack[-2]
        if word.value not in _keywords():
            return None
        return operator, word

    def _completion(self, ip, end: Token) -> list[Token] | None:
        """Tokens that complete the text at its end (operands and closers), or None."""
        attempt = trial(ip)
        fill: list[Token] = []
        for _ in range(2 * MAX_NESTING + 2):
            choices = attempt.choices()
            if "$END" in choices and accepts(attempt, [end]):
                return fill
            opener = next((v for v in reversed(attempt.parser_state.value_stack)
                           if type(v) is Token and v.type in _OPENERS), None)
            closer = _OPENERS[opener.type] if opener is not None else None
            if "VAR" in choices:
                t = _operand(end)
            elif closer is not None and _CLOSER_TYPES[closer] in choices:
                t = Token.new_borrow_pos(_CLOSER_TYPES[closer], closer, end)
            elif "LBRACE" in choices:  # `if a` with no block: an empty one
                t = Token.new_borrow_pos("LBRACE", "{", end)
            else:
                return None
            try:
                attempt.feed_token(t)
            except UnexpectedInput:
                return None
            fill.append(t)
        return None

    # ------------------------------------------------------------ diagnostics

    @property
    def lines(self) -> list[str]:
        if self._lines is None:
            self._lines = self.chunk.split("\n")
        return self._lines

    def _line(self, n: int) -> str:
        lines = self.lines
        return lines[n - 1].strip() if 0 < n <= len(lines) else ""

    def _where(self, opener: Token) -> str:
        text = self._line(opener.line)
        shown = text if len(text) <= 60 else text[:57] + "..."
        return f"line {opener.line + self.line_offset} (`{shown}`)"

    def _operand_diagnostic(self, operator: Token, at: Token, found: str) -> Diagnostic:
        line = at.line + self.line_offset
        width = max(1, len(at.value)) if at.type != "$END" else 1
        op = operator.value
        if op in _BINARY:
            help = f"found {found}: `{op}` needs a value on each side; complete it, or remove the `{op}`"
        else:
            help = f"found {found}"
        return Diagnostic("J001", Severity.ERROR, f"expected an expression after `{op}`",
                          Span.point(self.path, line, at.column, width), help)

    def _repair_diagnostic(self, e: UnexpectedToken, ip, fill: list[Token] | None) -> Diagnostic | None:
        tok = e.token
        stack = ip.parser_state.value_stack
        if "VAR" in (e.expected or ()) and stack and type(stack[-1]) is Token and stack[-1].type not in _OPENERS:
            return self._operand_diagnostic(stack[-1], tok, f"`{tok.value}`")
        if fill and fill[0].type == "LBRACE":
            return Diagnostic("J001", Severity.ERROR, f"unexpected `{tok.value}`: a `{{` is missing before it",
                              Span.point(self.path, tok.line + self.line_offset, tok.column, max(1, len(tok.value))),
                              "a block starts with `{`: `if CONDITION { ... }`" if _opens_if(stack) else
                              "a block starts with `{`")
        closers = [t for t in fill or () if t.type in _CLOSER_TYPES.values()]
        if closers:
            openers = [v for v in reversed(stack) if type(v) is Token and v.type in _OPENERS]
            opener = openers[len(closers) - 1]
            shown = "".join(t.value for t in closers)
            line = tok.line + self.line_offset
            return Diagnostic("J001", Severity.ERROR, f"unexpected `{tok.value}`: a `{shown}` is missing before it",
                              Span.point(self.path, line, tok.column, max(1, len(tok.value))),
                              f"the `{opener.value}` at {self._where(opener)} is never closed; "
                              f"close it where its block ends")
        return None

    def _end_diagnostic(self, e: UnexpectedToken, ip, fill: list[Token] | None) -> Diagnostic | None:
        stack = ip.parser_state.value_stack
        if "VAR" in (e.expected or ()) and stack and type(stack[-1]) is Token and stack[-1].type not in _OPENERS:
            word = self.chunk.split(None, 1)[0]
            return self._operand_diagnostic(stack[-1], e.token, f"the end of this `{word}`")
        if fill and any(t.type == "RBRACE" for t in fill) or "RBRACE" in (e.expected or ()):
            opener = _unclosed_brace(self.chunk)
            if opener is not None:
                diag = _syntax_diagnostic(e, self.chunk, self.path, self.line_offset)
                line = opener[0]
                text = self._line(line)
                shown = text if len(text) <= 60 else text[:57] + "..."
                return Diagnostic(diag.code, diag.severity, diag.message, diag.span,
                                  f"a `}}` is missing: the block opened at line {line + self.line_offset} "
                                  f"(`{shown}`) is never closed")
        return None

    def _after_item_diagnostic(self, e: UnexpectedToken) -> Diagnostic | None:
        """Text after an item has ended: most often a `}` too many closed it early."""
        tok = e.token
        if tok.type == "$END" or not set(e.expected or ()) <= _ITEM_KEYWORDS:
            return None
        closing = self.chunk.rfind("}", 0, tok.start_pos)
        word = self.chunk.split(None, 1)[0]
        if closing < 0 or word not in TOP_LEVEL:
            return None
        line = self.chunk.count("\n", 0, closing) + 1
        return Diagnostic("J001", Severity.ERROR, f"unexpected `{tok.value}` after the end of the `{word}`",
                          Span.point(self.path, tok.line + self.line_offset, tok.column, max(1, len(tok.value))),
                          f"the `{word}` ends with the `}}` at line {line + self.line_offset}; is that `}}` one "
                          f"too many?")

    def report(self, e: UnexpectedInput, diag: Diagnostic | None = None) -> None:
        tok = getattr(e, "token", None)
        at_end = tok is not None and tok.type == "$END"  # its position is borrowed from the last token
        start = e.pos_in_stream if e.pos_in_stream is not None and not at_end else len(self.chunk)
        end = tok.end_pos if tok is not None and tok.end_pos is not None else start + 1
        cascade = e.line == self.last_line or (self.last_end >= 0 and not _SKIPPABLE.sub("", self.chunk[self.last_end:start]))
        if not cascade:
            self.found.append(diag or _syntax_diagnostic(e, self.chunk, self.path, self.line_offset))
        self.last_line = e.line
        self.last_end = end


_SKIPPABLE = re.compile(r"\s+|#[^\n]*")
_BINARY = {"and", "or", "in", "+", "-", "*", "/", "==", "!=", "<", "<=", ">", ">="}
_BRACES = re.compile(r'"(?:[^"\\\n]|\\.)*"|#[^\n]*|[{}]')


_ITEM_KEYWORDS = {"JOURNEY", "POLICY", "SEGMENT", "TEST"}


def _opens_if(stack: list) -> bool:
    return any(type(v) is Token and v.type == "IF" for v in stack[-8:])


def _operand(at: Token) -> Token:
    """The operand a repair puts in: an empty name, which the builder makes an `A.Missing`."""
    return Token.new_borrow_pos("VAR", "", at)


@lru_cache(maxsize=1)
def _literals() -> dict[str, str]:
    """Each keyword and punctuation (`when`, `=`, `,`) → its terminal's name."""
    return {t.pattern.value: t.name for t in parser().terminals if t.pattern.type == "str"}


@lru_cache(maxsize=1)
def _keywords() -> dict[str, str]:
    """Each keyword word → its terminal's name."""
    return {text: name for text, name in _literals().items() if text.isalpha()}


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def _unclosed_brace(chunk: str) -> tuple[int, int] | None:
    """(line, column) of the `{` most likely missing its `}`, judged by indentation: the first
    block closed by a `}` indented less than the line that opened it (that `}` belongs to an outer
    block), else the innermost block left open."""
    lines = chunk.split("\n")
    stack: list[tuple[int, int]] = []
    line, line_start = 1, 0
    pos = 0
    for m in _BRACES.finditer(chunk):
        c = m.group()
        if c not in "{}":
            continue
        line += chunk.count("\n", pos, m.start())
        if line > 1:
            line_start = chunk.rfind("\n", 0, m.start()) + 1
        pos = m.start()
        col = m.start() - line_start + 1
        if c == "{":
            stack.append((line, col))
        elif stack:
            opener = stack.pop()
            text = lines[line - 1]
            if not text[: col - 1].strip() and _indent(text) < _indent(lines[opener[0] - 1]):
                return opener
    return stack[-1] if stack else None


_NESTING_TOKENS = re.compile(r"[-+*/<>=!({\[]|\b(?:and|or|not|if|else|split|wait|on)\b")


def _cannot_be_too_deep(chunk: str) -> bool:
    """Each level of the typed tree needs an operator, a bracket or a block keyword, and each
    adds at most three levels; counting them is far cheaper than measuring the tree."""
    return len(chunk) < MAX_TREE_DEPTH or 3 * len(_NESTING_TOKENS.findall(chunk)) + 8 < MAX_TREE_DEPTH


def _depth(node: A.Node) -> int:
    deepest = 0
    stack = [(node, 1)]
    while stack:
        n, d = stack.pop()
        if d > deepest:
            deepest = d
        stack.extend((c, d + 1) for c in n.children())
    return deepest


# ------------------------------------------------------------------------ syntax errors

_FRIENDLY = {
    "STRING": "a quoted string",
    "NAME": "a name",
    "VAR": "a name",
    "NUMBER": "a number",
    "DURATION": "a duration such as `15m`",
    "TIME": "a time of day such as `10:00`",
    "DATE": "a date such as `2026-03-02`",
    "OFFSET": "an offset such as `+03:00`",
    "PERCENT": "a percentage such as `50%`",
    "CMP": "a comparison (`==`, `!=`, `<`, `<=`, `>`, `>=`)",
    "REENTER_MODE": "`never`, `always` or `after`",
    "WAIT_OUTCOME": "`event` or `timeout`",
    "$END": "the end of the file",
}


def _terminal_text(name: str) -> str:
    if name in _FRIENDLY:
        return _FRIENDLY[name]
    try:
        term = parser().get_terminal(name)
    except KeyError:
        return name.lower()
    if term.pattern.type == "str":
        return f"`{term.pattern.value}`"
    return name.lower()


def _keyword_choices(expected: set[str]) -> list[str]:
    words = []
    for name in expected:
        try:
            term = parser().get_terminal(name)
        except KeyError:
            continue
        if term.pattern.type == "str" and term.pattern.value.isalpha():
            words.append(term.pattern.value)
        elif name in ("REENTER_MODE", "WAIT_OUTCOME"):
            words.extend({"REENTER_MODE": ["never", "always", "after"], "WAIT_OUTCOME": ["event", "timeout"]}[name])
    if "FIRST" in expected:
        words.append("first")
    if "LAST" in expected:
        words.append("last")
    return sorted(set(words))


def _expected_list(expected: set[str]) -> str:
    names = sorted({_terminal_text(n) for n in expected})
    if len(names) > 8:
        names = names[:8] + ["…"]
    return ", ".join(names)


def _syntax_diagnostic(e: UnexpectedInput, chunk: str, path: str, line_offset: int) -> Diagnostic:
    line = (e.line if e.line and e.line > 0 else chunk.count("\n") + 1) + line_offset
    col = e.column if e.column and e.column > 0 else 1
    if isinstance(e, UnexpectedCharacters):
        ch = chunk[e.pos_in_stream] if e.pos_in_stream < len(chunk) else ""
        if ch == '"':
            return Diagnostic("J002", Severity.ERROR, "this string is never closed", Span.point(path, line, col),
                              'close it with `"` on the same line (strings cannot span lines)')
        if ch.isdigit():
            m = re.match(r"\d+(?:\.\d+)?\w*", chunk[e.pos_in_stream:])
            return Diagnostic("J001", Severity.ERROR, f"unexpected `{m.group() if m else ch}`",
                              Span.point(path, line, col, len(m.group()) if m else 1),
                              f"expected {_expected_list(set(e.allowed or ()))}")
        shown = ch if ch.isprintable() else repr(ch)
        return Diagnostic("J001", Severity.ERROR, f"unexpected character `{shown}`", Span.point(path, line, col),
                          f"expected {_expected_list(set(e.allowed or ()))}" if e.allowed else None)
    if isinstance(e, UnexpectedEOF) or (isinstance(e, UnexpectedToken) and e.token.type == "$END"):
        expected = set(getattr(e, "expected", ()) or ())
        last_line = chunk.rstrip().count("\n") + 1 + line_offset
        last_col = len(chunk.rstrip().split("\n")[-1]) + 1
        help = "a `}` is missing" if "RBRACE" in expected else f"expected {_expected_list(expected)}"
        word = chunk.split(None, 1)[0] if chunk.strip() else "file"
        return Diagnostic("J001", Severity.ERROR, f"this `{word}` ends before it is complete",
                          Span.point(path, last_line, last_col), help)
    assert isinstance(e, UnexpectedToken)
    tok: Token = e.token
    width = max(1, len(tok.value))
    span = Span(path, line, col, line, col + width) if tok.end_line in (None, tok.line) else Span.point(path, line, col, width)
    expected = set(e.expected or ())
    if tok.type in ("NAME", "VAR") or (tok.value.isalpha() and tok.type not in ("STRING",)):
        words = _keyword_choices(expected)
        close = difflib.get_close_matches(tok.value, words, n=1, cutoff=0.6)
        if close:
            return Diagnostic("J003", Severity.ERROR, f"unknown word `{tok.value}`", span, f"did you mean `{close[0]}`?")
        if words and tok.type in ("NAME", "VAR"):
            return Diagnostic("J001", Severity.ERROR, f"unexpected `{tok.value}`", span,
                              f"expected {_expected_list(expected)}")
    return Diagnostic("J001", Severity.ERROR, f"unexpected `{tok.value}`", span, f"expected {_expected_list(expected)}")
