"""The mistakes people make in their first journeys, each told in one error with its fix.

Newcomers write what their last tool, SQL, Python or JavaScript taught them: `wait 2 days`,
`a && b`, `category = "shoes"`, `'welcome'`, `elif`, `entry on event`, `holdout 10%`. The grammar
rejects all of these, and Lark's own report is the list of tokens it expected there. When the parser
fails, `parse_text`'s error callback asks `newcomer_fix` first: a hint recognises one mistake from
the failing token, the parser's stack and the text around them, and returns a `Fix`: the error to
report (its own code, the caret on the words that are wrong, a help with the corrected line) and the
repair that puts the parser back in step (what to take off its stack, what to feed it, where the
lexer reads on), so the rest of the file parses, the checker sees what the author meant, and a
later mistake is reported on its own. A repair is tried on a copy of the parser first; a hint whose
repair the parser refuses is no hint.

Nothing here runs unless the parser has already failed: a clean file never pays for it.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from lark import Token
from lark.exceptions import UnexpectedCharacters, UnexpectedToken

from .expr_check import NO_FIXED_LENGTH, UNIT_HINTS
from .lalr import accepts, position

SECONDS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}  # largest first
LONG_UNITS = {"year": 365 * 86400, "years": 365 * 86400, "yr": 365 * 86400, "y": 365 * 86400,
              "month": 30 * 86400, "months": 30 * 86400, "mo": 30 * 86400, "mon": 30 * 86400}
NO_SPACE = "a number and its unit (s, m, h, d or w) with no space"
ONE_UNIT = "a duration is a whole number of one unit"
NO_FIXED = "months and years have no fixed length; count days or weeks"
CLOCK = "times of day are HH:MM on a 24-hour clock"

_WORD = re.compile(r"[A-Za-z_]\w*\Z")
_STRING = r'"(?:[^"\\\n]|\\.)*"'


@dataclass(frozen=True)
class Fix:
    """One recognised mistake: what to report, and how to repair the parse."""

    code: str
    message: str
    start: int  # the text under the caret, as offsets in the chunk
    end: int
    help: str
    pop: int = 0  # values to take back off the parser's stack
    feed: tuple[Token, ...] = ()  # tokens to feed the parser in their place
    resume: int | None = None  # where the lexer reads on (None: after the failing token)


class _At:
    """Where the parser failed: the failing token (None for a character no token starts with), its
    position, the parser's stack and what it expected, and the chunk of text being parsed."""

    def __init__(self, e, ip, text: str, keywords: dict[str, str]):
        self.ip = ip
        self.text = text
        self.keywords = keywords
        self.stack = ip.parser_state.value_stack
        if isinstance(e, UnexpectedToken):
            self.tok: Token | None = e.token
            self.pos, self.end = e.token.start_pos, e.token.end_pos
            self.expected = set(e.expected or ())
        else:
            self.tok = None
            self.pos = self.end = e.pos_in_stream
            self.expected = set(ip.choices())

    def top(self, back: int = 1):
        """The value `back` places from the top of the parser's stack (1: the top), or None."""
        return self.stack[-back] if len(self.stack) >= back else None

    def shifted(self, back: int, *types: str) -> Token | None:
        """The token `back` places from the top of the stack, if it is a token of one of `types`."""
        v = self.top(back)
        return v if type(v) is Token and (not types or v.type in types) else None

    def word(self) -> str | None:
        """The failing token if it is a word (a name or a keyword), lower-cased."""
        return self.tok.value.lower() if self.tok is not None and _WORD.match(self.tok.value) else None

    def token(self, type_: str, value: str, start: int, end: int) -> Token:
        """A token of `type_` covering text[start:end] (a keyword's type is its word's terminal)."""
        return Token(self.keywords.get(type_, type_), value, start, *position(self.text, start),
                     *position(self.text, end), end)

    def keyword(self, word: str, start: int | None = None, end: int | None = None) -> Token:
        return self.token(word, word, self.pos if start is None else start, self.end if end is None else end)

    def line_bounds(self, pos: int) -> tuple[int, int]:
        start = self.text.rfind("\n", 0, pos) + 1
        end = self.text.find("\n", pos)
        return start, len(self.text) if end < 0 else end

    def first_on_line(self) -> bool:
        """Whether the failing token is the first word of its line (where a statement starts)."""
        return not self.text[self.line_bounds(self.pos)[0]:self.pos].strip()

    def rest_of_line(self, pos: int) -> str:
        return self.text[pos:self.line_bounds(pos)[1]]

    def corrected(self, start: int, end: int, replacement: str) -> str:
        """The line that holds `start`, with text[start:end] replaced, as code in backquotes."""
        first, _ = self.line_bounds(start)
        _, last = self.line_bounds(max(start, end - 1))
        return _code(self.text[first:start] + replacement + self.text[end:last])

    def line_sub(self, pattern: re.Pattern, repl) -> str:
        """The failing token's line with every match of `pattern` replaced, as code in backquotes."""
        first, last = self.line_bounds(self.pos)
        return _code(pattern.sub(repl, self.text[first:last]))


_BEFORE_COMMENT = re.compile(r'(?:"(?:[^"\\\n]|\\.)*"|[^"#\n])*')


def _code(line: str) -> str:
    """A line of code as the help shows it: in backquotes, without its indentation or comment."""
    line = _BEFORE_COMMENT.match(line).group().strip()
    return f"`{line if len(line) <= 100 else line[:97] + '...'}`"


def _seconds(amount: str, unit: str) -> int | None:
    """The seconds of `amount` `unit` (`1.5`, `hours`), or None if that is not a whole number of them."""
    unit = unit if unit in SECONDS else unit.lower()
    per = SECONDS.get(UNIT_HINTS.get(unit, unit)) or LONG_UNITS.get(unit)
    if per is None:
        return None
    try:
        total = Decimal(amount) * per
    except InvalidOperation:
        return None
    return int(total) if total == int(total) else None


def _duration(seconds: int) -> str:
    """`seconds` in the largest unit that holds it whole: 5400 → `90m`."""
    unit = next(u for u, per in SECONDS.items() if seconds % per == 0)
    return f"{seconds // SECONDS[unit]}{unit}"


# ------------------------------------------------------------------------ J070 durations

_PIECE = re.compile(r"(\d+(?:\.\d+)?)[ \t]?([A-Za-z]+)")
_NEXT_PIECE = re.compile(r"[ \t]?(\d+(?:\.\d+)?)[ \t]?([A-Za-z]+)")


def _duration_pieces(at: _At) -> Fix | None:
    """`wait 1 d`, `wait 2 days`, `wait 1.5h`, `wait 2h30m`, `wait 1h 30m`, `wait 1 month`: the
    amount (a number or a duration) is on the stack, the failing token is its unit or next piece."""
    first = at.shifted(1, "NUMBER", "DURATION")
    if first is None or at.tok is None or at.tok.line != first.line:
        return None
    m = _PIECE.match(at.text, first.start_pos)
    pieces, end = [], first.start_pos
    while m is not None and _seconds(*m.groups()) is not None:
        pieces.append(m.groups())
        end = m.end()
        m = _NEXT_PIECE.match(at.text, end)
    if end < at.end:
        return None
    written = at.text[first.start_pos:end]
    (amount, unit), *more = pieces
    short = unit if unit in SECONDS else UNIT_HINTS.get(unit.lower())
    if not more and short and "." not in amount:
        value = amount + short  # `7 days` is `7d`, not `1w`
    else:
        value = _duration(sum(_seconds(*p) for p in pieces))
    units = {p[1].lower() for p in pieces}
    why = (NO_FIXED if units & (NO_FIXED_LENGTH | set(LONG_UNITS)) else
           ONE_UNIT if len(pieces) > 1 or "." in pieces[0][0] else NO_SPACE)
    return Fix("J070", f"`{written}` is not a duration", first.start_pos, end,
               f"write {at.corrected(first.start_pos, end, value)}: {why}",
               pop=1, feed=(at.token("DURATION", value, first.start_pos, end),), resume=end)


_UNIT_WORDS = {"second": "1s", "minute": "1m", "hour": "1h", "day": "1d", "week": "1w", "month": "30d", "year": "365d"}
_UNIT_AFTER_WORD = re.compile(r"\b((?:per|after|within|to|last)[ \t]+)(" + "|".join(_UNIT_WORDS) + r")\b", re.IGNORECASE)


def _unit_alone(at: _At) -> Fix | None:
    """`cap email 2 per day`: a unit where a duration stands."""
    word, before = at.word(), at.shifted(1)
    if word not in _UNIT_WORDS or "DURATION" not in at.expected or before is None \
            or before.value not in ("per", "after", "within", "to", "last"):
        return None
    value = _UNIT_WORDS[word]
    help = at.line_sub(_UNIT_AFTER_WORD, lambda m: m.group(1) + _UNIT_WORDS[m.group(2).lower()])
    return Fix("J070", f"`{at.tok.value}` is not a duration", at.pos, at.end,
               f"write {help}: {NO_FIXED if value in ('30d', '365d') else NO_SPACE}",
               feed=(at.token("DURATION", value, at.pos, at.end),))


# ------------------------------------------------------------------------ J079 times of day

_AM_PM = re.compile(r"\b(\d{1,2})(?::(\d{2}))?[ \t]*([ap]m)\b", re.IGNORECASE)


def _clock(m: re.Match) -> str | None:
    hour, minute, half = int(m.group(1)), m.group(2) or "00", m.group(3).lower()
    if not 1 <= hour <= 12:
        return None
    return f"{hour % 12 + (12 if half == 'pm' else 0):02d}:{minute}"


_AM_PM_RANGE = re.compile(_AM_PM.pattern + r"(?:[ \t]+(?:to|until|till)[ \t]+(?=\d))?", re.IGNORECASE)


def _range(m: re.Match) -> str:
    """A time with am or pm on a 24-hour clock; `to` after it becomes `-`."""
    clock = _clock(m) or m.group(0)[:m.end(3) - m.start()]
    return clock + ("-" if m.end() > m.end(3) else "")


def _am_pm(at: _At) -> Fix | None:
    """`wait until 10am`, `quiet hours 9pm-8am`, `10:30 pm`."""
    first = at.shifted(1, "TIME", "NUMBER")
    start = first.start_pos if first is not None and at.word() in ("am", "pm") else at.pos
    m = _AM_PM.match(at.text, start)
    if m is None or m.end() < at.end or _clock(m) is None:
        return None
    value = _clock(m)
    help = at.line_sub(_AM_PM_RANGE, _range)
    return Fix("J079", f"`{m.group()}` is not a time of day", start, m.end(), f"write {help}: {CLOCK}",
               pop=1 if start != at.pos else 0, feed=(at.token("TIME", value, start, m.end()),), resume=m.end())


def _time_range(at: _At) -> Fix | None:
    """`quiet hours 21:00 to 08:00`."""
    if at.word() not in ("to", "until", "till") or at.shifted(1, "TIME") is None or "MINUS" not in at.expected:
        return None
    start = at.top().end_pos
    m = re.compile(r"[ \t]*\w+[ \t]*").match(at.text, start)
    return Fix("J079", "quiet hours are written `START-END`", at.pos, at.end,
               f"write {at.corrected(start, m.end(), '-')}", feed=(at.keyword("-"),))


# ------------------------------------------------------------------------ J077 the word before a duration

_UNITS = "|".join(sorted({*SECONDS, *UNIT_HINTS, *LONG_UNITS}, key=len, reverse=True))
_WORDS_BEFORE_NUMBER = re.compile(r"(?:[A-Za-z]+[ \t]+){1,3}(?=\d+(?:\.\d+)?[ \t]?(?:" + _UNITS + r")\b)", re.IGNORECASE)
_DURATION_WORD = {"UP": ("up to", "a `wait for`"), "WITHIN": ("within", "a `goal`"),
                  "REENTER_MODE": ("after", "`reenter`")}


def _word_before_duration(at: _At) -> Fix | None:
    """`wait for event "X" within 1h`, `goal ... in 3d`, `reenter every 7d`, or no word at all."""
    if at.tok is None:
        return None
    bare = at.tok.type in ("DURATION", "NUMBER")
    m = None if bare else _WORDS_BEFORE_NUMBER.match(at.text, at.pos)
    if not bare and (m is None or at.word() is None):
        return None
    for key in (k for k in _DURATION_WORD if k in at.expected):  # merged LALR states expect more than they take
        right, who = _DURATION_WORD[key]
        tokens = [at.token("REENTER_MODE", "after", at.pos, at.pos)] if key == "REENTER_MODE" else \
            [at.keyword(w, at.pos, at.pos) for w in right.split()]
        if not accepts(at.ip, tokens):
            continue
        message = f"{who} takes `{right}` before its duration"
        if bare:
            return Fix("J077", message, at.pos, at.end, f"write {at.corrected(at.pos, at.pos, right + ' ')}",
                       feed=(*tokens, at.tok))
        words = m.group().rstrip()
        return Fix("J077", message, at.pos, at.pos + len(words),
                   f"write {at.corrected(at.pos, at.pos + len(words), right)}", feed=tuple(tokens), resume=m.end())
    return None


# ------------------------------------------------------------------------ J071 operators

_SQL_WORDS = re.compile(r"\b(?:and|or|not|in)\b", re.IGNORECASE)
_CHAR_OPERATORS = {"&&": "and", "&": "and", "||": "or", "|": "or", "!": "not"}
_CHAR_OPERATOR = re.compile(r"&&?|\|\|?|!(?!=)")


def _operator_characters(at: _At) -> Fix | None:
    """`a && b`, `a || b`, `!happened(...)`: characters no token starts with."""
    m = _CHAR_OPERATOR.match(at.text, at.pos)
    if m is None:
        return None
    op = m.group()
    word = _CHAR_OPERATORS[op]
    spelled = re.compile(r"!(?!=)[ \t]*" if op == "!" else r"[ \t]*" + re.escape(op) + r"[ \t]*")
    help = at.line_sub(spelled, "not " if op == "!" else f" {word} ")
    return Fix("J071", f"`{op}` is not an operator in journeys", at.pos, m.end(), f"write `{word}`: {help}",
               feed=(at.keyword(word, at.pos, m.end()),), resume=m.end())


def _operators(at: _At) -> Fix | None:
    """`=` for `==` and back, `===`, `<>`, `:` spelled `=`, SQL's `AND`/`OR`/`NOT`/`IN`, `is [not] null`."""
    tok, prev = at.tok, at.shifted(1)
    if tok is None:
        return None
    adjacent = prev is not None and prev.end_pos == tok.start_pos
    if tok.value == "=" and adjacent and prev.value in ("==", "!="):  # `===`, `!==`
        return Fix("J071", f"`{prev.value}=` is not an operator in journeys", prev.start_pos, at.end,
                   f"write `{prev.value}`: {at.corrected(prev.start_pos, at.end, prev.value)}")
    if tok.value == "=" and adjacent and prev.value == "=":  # `==` where `=` stands, read as `=` `=`
        return Fix("J071", "`==` is a comparison; here it is `=`", prev.start_pos, at.end,
                   f"write {at.corrected(prev.start_pos, at.end, '=')}")
    if tok.value == ">" and adjacent and prev.value == "<":  # SQL's `<>`
        return Fix("J071", "`<>` is not an operator in journeys", prev.start_pos, at.end,
                   f"write `!=`: {at.corrected(prev.start_pos, at.end, '!=')}",
                   pop=1, feed=(at.token("CMP", "!=", prev.start_pos, at.end),))
    if tok.value == "=" and "CMP" in at.expected and at.text[at.end:at.end + 1] in ("<", ">"):  # `=>`, `=<`
        op = at.text[at.end] + "="
        return Fix("J071", f"`={at.text[at.end]}` is not an operator in journeys", at.pos, at.end + 1,
                   f"write `{op}`: {at.corrected(at.pos, at.end + 1, op)}",
                   feed=(at.token("CMP", op, at.pos, at.end + 1),), resume=at.end + 1)
    if tok.value == "=" and "CMP" in at.expected:
        return Fix("J071", "`=` is not a comparison", at.pos, at.end,
                   f"write `==`: {at.corrected(at.pos, at.end, '==')}", feed=(at.token("CMP", "==", at.pos, at.end),))
    if tok.value == "==" and "EQUAL" in at.expected:
        return Fix("J071", "`==` is a comparison; here it is `=`", at.pos, at.end,
                   f"write {at.corrected(at.pos, at.end, '=')}", feed=(at.keyword("=", at.pos, at.end),))
    if tok.value == "=" and "COLON" in at.expected:
        key_end = len(at.text[:at.pos].rstrip())
        return Fix("J071", "a key and its value are separated by `:`", at.pos, at.end,
                   f"write `:`: {at.corrected(key_end, at.end, ':')}", feed=(at.keyword(":"),))
    word = at.word()
    if word == "is" and "CMP" in at.expected:
        m = re.compile(r"is(?:[ \t]+(not))?\b", re.IGNORECASE).match(at.text, at.pos)
        op = "!=" if m.group(1) else "=="
        return Fix("J071", f"`{m.group()}` is not an operator in journeys", at.pos, m.end(),
                   f"write `{op}`: {at.corrected(at.pos, m.end(), op)}",
                   feed=(at.token("CMP", op, at.pos, m.end()),), resume=m.end())
    upper = prev if prev is not None and prev.type == "VAR" and prev.value.lower() == "not" != prev.value else None
    if upper is not None:  # SQL's `NOT x`, read as a name
        return Fix("J071", f"`{upper.value}` is not an operator in journeys", upper.start_pos, upper.end_pos,
                   f"write `not`: {at.line_sub(_SQL_WORDS, lambda m: m.group().lower())}",
                   pop=1, feed=(at.keyword("not", upper.start_pos, upper.end_pos), tok))
    if word in ("and", "or", "not", "in") and tok.value != word and at.keywords.get(word) in at.expected:
        return Fix("J071", f"`{tok.value}` is not an operator in journeys", at.pos, at.end,
                   f"write `{word}`: {at.line_sub(_SQL_WORDS, lambda m: m.group().lower())}",
                   feed=(at.keyword(word),))
    return None


# ------------------------------------------------------------------------ J072 quotes

_QUOTED = re.compile(r"""'([^'"\n]*)'|[‘’]([^‘’'"\n]*)[’']|[“”]([^“”"\n]*)[”"“]""")


def _text_token(at: _At, value: str, start: int, end: int) -> Token:
    return at.token("STRING", '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"', start, end)


def _other_quotes(at: _At) -> Fix | None:
    """`'welcome'`, `“welcome”`: text in quotes that are not the language's."""
    m = _QUOTED.match(at.text, at.pos)
    if m is None:
        return None
    plain = "double quotes" if at.text[at.pos] == "'" else "plain double quotes"
    help = at.line_sub(_QUOTED, lambda x: '"' + _inside(x) + '"')
    return Fix("J072", f"text is written in {plain}", at.pos, m.end(), f"write {help}",
               feed=(_text_token(at, _inside(m), at.pos, m.end()),), resume=m.end())


def _inside(m: re.Match) -> str:
    return next(g for g in m.groups() if g is not None)


_NAME_PART = re.compile(r"[A-Za-z_][\w\-]*")
_NEXT_NAME_PART = re.compile(r"[ \t]+([A-Za-z_][\w\-]*)")
_AFTER_NAME = re.compile(r"[ \t]*(?:$|#|[{}),\]]|=(?!=))", re.MULTILINE)  # what can end a name without quotes


def _unquoted(at: _At) -> Fix | None:
    """`send email welcome`, `journey Welcome Back {`: a name where the language takes text. The
    words up to the first keyword that can follow the text are the name."""
    if "STRING" not in at.expected or at.word() is None or at.tok.type not in ("NAME", "VAR"):
        return None
    end = _NAME_PART.match(at.text, at.pos).end()
    while (m := _NEXT_NAME_PART.match(at.text, end)) is not None:
        kw = at.keywords.get(m.group(1))
        if kw is not None and accepts(at.ip, [at.token("STRING", '""', at.pos, end), at.keyword(m.group(1))]):
            break
        end = m.end()
    else:
        if not _AFTER_NAME.match(at.text, end):
            return None  # `holdout 10% "X"`, `con==trol`: a stray word, not a name without quotes
    name = at.text[at.pos:end]
    quoted = '"' + name + '"'
    return Fix("J072", f"`{name}` needs double quotes", at.pos, end, f"write {at.corrected(at.pos, end, quoted)}",
               feed=(_text_token(at, name, at.pos, end),), resume=end)


# ------------------------------------------------------------------------ J073 commas

_CLOSERS = {"RPAR", "RSQB", "RBRACE", "COMMA"}


def _as_names(tok: Token) -> list[Token]:
    """`tok`, and if it is a name, the same name as the other terminal: where the parser fails,
    Lark's lexer cannot know which of NAME (a key, a channel) and VAR (an operand) the name is."""
    other = {"NAME": "VAR", "VAR": "NAME"}.get(tok.type)
    return [tok] if other is None else [tok, Token.new_borrow_pos(other, tok.value, tok)]


def _missing_comma(at: _At) -> Fix | None:
    """`count(event "X" last 7d)`, `["a" "b"]`, `cap email 2 per 1d push 3 per 1d`."""
    tok = at.tok
    if tok is None or "COMMA" not in at.expected or tok.type in _CLOSERS or at.top() is None:
        return None
    comma = at.token("COMMA", ",", at.pos, at.pos)
    tok = next((t for t in _as_names(tok) if accepts(at.ip, [comma, t])), None)
    if tok is None:
        return None
    after = len(at.text[:at.pos].rstrip())
    return Fix("J073", f"a `,` is missing before `{tok.value}`", at.pos, at.end,
               f"write {at.corrected(after, after, ',')}", feed=(comma, tok))


# ------------------------------------------------------------------------ J074 `or` between events

_OR_EVENT = re.compile(r"or\s+event\s*(" + _STRING + ")")
_RULES = {"EXIT": ("an `exit when` listens for one", "exit"), "ENTRY": ("an entry listens for one", "entry"),
          "GOAL": ("a `goal` counts one", "goal"), "WAIT": ("a `wait for` waits for one", "wait")}


def _or_between_events(at: _At) -> Fix | None:
    """`exit when event "A" or event "B"`, also after a `where` (`... where x == 1 or event "B"`)."""
    if at.tok is None:
        return None
    if at.tok.value == "or":  # `event "A" or event "B"`: the second is the failing `or` onwards
        m = _OR_EVENT.match(at.text, at.pos)
        if m is None or at.shifted(1, "STRING") is None or at.shifted(2, "EVENT") is None:
            return None
        start, end, pop, resume, second = at.pos, m.end(), 0, m.end(), m.group(1)
    else:  # `where x == 1 or event "B"`: `or event` read as an operator and the special name `event`
        or_ = at.shifted(2)
        if at.tok.type != "STRING" or at.shifted(1, "EVENT") is None or or_ is None or or_.value != "or":
            return None
        start, end, pop, resume, second = or_.start_pos, at.end, 2, None, at.tok.value
    below = at.stack[:len(at.stack) - pop]
    i = next((i for i in range(len(below) - 1, -1, -1) if type(below[i]) is Token and below[i].type in (*_RULES, "LPAR")),
             None)
    if i is None or pop and not any(type(v) is Token and v.type == "WHERE" for v in below[i:]):
        return None
    rule = below[i]
    cut = len(at.text[:start].rstrip())
    if rule.type == "LPAR":
        return _or_in_call(at, rule, start, end, pop, resume, second)
    what, keyword = _RULES[rule.type]
    kept = at.corrected(cut, end, "")
    helps = {
        "exit": f"write one rule per event: {kept}, and on a line of its own `exit when event {second}`",
        "entry": f"a journey has one entry: keep {kept}, and make a journey of its own for `event {second}`",
        "goal": f"keep {kept}, and add a goal of its own for `event {second}`",
        "wait": f"wait for one event: {kept}",
    }
    return Fix("J074", f"`or` cannot join two events: {what}", start, start + 2, helps[keyword], pop=pop, resume=resume)


def _or_in_call(at: _At, lpar: Token, start: int, end: int, pop: int, resume: int | None, second: str) -> Fix | None:
    """`count(event "A" or event "B", last 7d)`: two calls, joined."""
    i = next(i for i in range(len(at.stack) - 1, -1, -1) if at.stack[i] is lpar)
    name = at.stack[i - 1] if i > 0 and type(at.stack[i - 1]) is Token else None
    if name is None or name.type not in ("VAR", "LAST"):
        return None
    depth, close = 1, end
    while close < len(at.text) and depth:  # the call's `)`: the arguments after the event are shared
        depth += {"(": 1, ")": -1}.get(at.text[close], 0)
        close += 1
    if depth:
        return None
    first = at.text[lpar.end_pos:len(at.text[:start].rstrip())]
    rest = at.text[end:close]
    joiner = " + " if name.value in ("count", "sum") else " or "
    calls = f"{name.value}({first}{rest}{joiner}{name.value}(event {second}{rest}"
    return Fix("J074", f"`or` cannot join two events: `{name.value}` reads one", start, start + 2,
               f"call `{name.value}` once per event: {at.corrected(name.start_pos, close, calls)}",
               pop=pop, resume=resume)


# ------------------------------------------------------------------------ J075 splits and holdouts

_SHARES = re.compile(r"\d+(?:\.\d+)?")
_HOLDOUT_REST = re.compile(r"[ \t]*(?:group[ \t]*)?(?:\d+(?:\.\d+)?[ \t]*%?)?[ \t]*(?:#.*)?$")  # `holdout [group] 10%`
_SHARE_LIST = re.compile(r"\d+(?:\.\d+)?%?(?:[ \t]*[/,:|-]?[ \t]*\d+(?:\.\d+)?%?)*")


def _holdout(at: _At) -> Fix | None:
    """`holdout 10%`: a control group of its own, outside any split."""
    word = at.word()
    if word not in ("holdout", "holdback", "control") or "SEND" not in at.expected or not at.first_on_line():
        return None
    rest = at.rest_of_line(at.end)
    if not _HOLDOUT_REST.match(rest):
        return None
    share = Decimal(m.group()) if (m := _SHARES.search(rest)) and 0 < Decimal(m.group()) < 100 else Decimal(10)
    return Fix("J075", f"`{at.tok.value}` is not a statement", at.pos, at.end,
               f'a holdout is the control group of a split: `split {{ {100 - share:g}% "main" {{ ...the steps... }} '
               f'{share:g}% control }}`', resume=at.end + len(rest))


def _split_shares(at: _At) -> Fix | None:
    """`split 50%/50%`, `split 50/50`: shares without the arms' blocks."""
    split = at.shifted(1, "SPLIT")
    if split is None or at.tok is None or at.tok.type not in ("PERCENT", "NUMBER") \
            or at.text[at.line_bounds(split.start_pos)[0]:split.start_pos].strip():
        return None
    rest = at.rest_of_line(at.pos)
    written = _SHARE_LIST.match(rest).group()
    if _BEFORE_COMMENT.match(rest, len(written)).group().strip():
        return None  # more than shares on the line
    shares = _SHARES.findall(written)
    arms = " ".join(f'{share}% "{chr(ord("a") + i)}" {{ ...the steps... }}' for i, share in enumerate(shares[:26]))
    return Fix("J075", "a split's arms go in braces, each with a name and its steps", at.pos, at.pos + len(written),
               f"write `split {{ {arms} }}`", pop=1, resume=at.pos + len(rest))


# ------------------------------------------------------------------------ J076 entries and event matches

_ENTRY_LINE = re.compile(r'(?:entry|trigger)(?:[ \t]+(?:on|when))?[ \t]+(first[ \t]+)?(?:event[ \t]*)?(?=")')


def _entry_help(at: _At) -> str:
    return "write " + at.line_sub(_ENTRY_LINE, lambda m: f"entry when {m.group(1) or ''}event ")


def _entry(at: _At) -> Fix | None:
    """`entry on event "X"`, `entry event "X"`, `entry "X"`, `trigger when event "X"`, and an event
    match without `event` anywhere (`goal "g" = "X" within 3d`)."""
    tok = at.tok
    if tok is None:
        return None
    if _ENTRY_LINE.search(at.text, *at.line_bounds(at.pos)):  # the line is an entry, spelled another way
        message = "an entry on an event is written `entry when event`"
        names_event = tok.value == "event" or tok.type == "STRING"
        event = (at.keyword("event"),) if tok.value == "event" else (at.keyword("event", at.pos, at.pos), tok)
        on = at.shifted(1, "ON")
        if names_event and at.shifted(1, "ENTRY") and "WHEN" in at.expected:
            return Fix("J076", message, at.pos, at.end, _entry_help(at),
                       feed=(at.keyword("when", at.pos, at.pos), *event))
        if names_event and on is not None and at.shifted(2, "ENTRY") is not None:
            return Fix("J076", message, on.start_pos, on.end_pos, _entry_help(at),
                       pop=1, feed=(at.keyword("when", on.start_pos, on.end_pos), *event))
        if at.word() == "trigger" and "ENTRY" in at.expected and at.first_on_line():
            return Fix("J076", "`trigger` is written `entry`", at.pos, at.end, _entry_help(at),
                       feed=(at.keyword("entry"),))
    if tok.type == "STRING" and "EVENT" in at.expected:
        return Fix("J076", f"`event` is missing before `{tok.value}`", at.pos, at.end,
                   f"write {at.corrected(at.pos, at.pos, 'event ')}", feed=(at.keyword("event", at.pos, at.pos), tok))
    return None


# ------------------------------------------------------------------------ J078 if and else

def _if_else(at: _At) -> Fix | None:
    """`elif`, `elsif`, `if x then { ... }`, `else: { ... }`."""
    word = at.word()
    if word in ("elif", "elsif", "elseif") and "ELSE" in at.expected:
        return Fix("J078", f"`{at.tok.value}` is written `else if`", at.pos, at.end,
                   f"write {at.corrected(at.pos, at.end, 'else if')}",
                   feed=(at.keyword("else"), at.keyword("if")))
    if (word != "then" and (at.tok is None or at.tok.value != ":")) or "LBRACE" not in at.expected:
        return None
    message = f"`{at.tok.value}` is not needed: the branch is the block in braces"
    cut = len(at.text[:at.pos].rstrip()) if word else at.pos
    if "{" in at.rest_of_line(at.end):  # `if x then {`, `else: {`
        return Fix("J078", message, at.pos, at.end, f"write {at.corrected(cut, at.end, '')}")
    # `if x then exit`, Python's `if x:` and its indented lines: the `if` is dropped, its steps stay
    opener = next((i for i in range(len(at.stack) - 1, -1, -1)
                   if type(at.stack[i]) is Token and at.stack[i].type in ("IF", "ELSE")), None)
    if opener is None or at.stack[opener].line != at.tok.line:
        return None
    stop = at.line_bounds(at.pos)[1]
    steps = _BEFORE_COMMENT.match(at.text, at.end, stop).group().strip() or "...the steps..."
    return Fix("J078", message, at.pos, at.end, f"write {at.corrected(cut, stop, ' { ' + steps + ' }')}",
               pop=len(at.stack) - opener, resume=stop)


# ------------------------------------------------------------------------ J003 predictions

def _predicted_misspelt(at: _At) -> Fix | None:
    """`predictd purchase in 30d`: a misspelt `predicted` is read as a name, and the model's name
    after it is where the parser fails."""
    name = at.shifted(1, "VAR")
    if name is None or at.tok is None or at.tok.type not in ("NAME", "VAR") or "PREDICTED" not in at.keywords.values():
        return None
    if name.value == "predicted" or not difflib.get_close_matches(name.value.lower(), ["predicted"], cutoff=0.75):
        return None
    if not re.match(r"\s+in\b", at.rest_of_line(at.end)):
        return None
    return Fix("J003", f"unknown word `{name.value}`", name.start_pos, name.end_pos,
               f"did you mean `predicted`? write {at.corrected(name.start_pos, name.end_pos, 'predicted')}",
               pop=1, feed=(at.keyword("predicted", name.start_pos, name.end_pos),
                            at.token("NAME", at.tok.value, at.pos, at.end)))


# ------------------------------------------------------------------------ the hints, in order

# The more particular first: `or event` before a missing comma, a duration's pieces before the
# word in front of it, a missing comma (the most general) last.
_TOKEN_HINTS = (_or_between_events, _duration_pieces, _am_pm, _unit_alone, _time_range, _word_before_duration,
                _operators, _entry, _if_else, _holdout, _split_shares, _predicted_misspelt, _unquoted, _missing_comma)
_CHARACTER_HINTS = (_operator_characters, _other_quotes)


def newcomer_fix(e, ip, text: str, keywords: dict[str, str]) -> Fix | None:
    """The fix of the mistake the parser failed at, if it is a mistake a hint knows and the parser
    takes the repair; None otherwise."""
    if isinstance(e, UnexpectedToken):
        if e.token.type == "$END":
            return None
        hints = _TOKEN_HINTS
    elif isinstance(e, UnexpectedCharacters):
        hints = _CHARACTER_HINTS
    else:
        return None
    at = _At(e, ip, text, keywords)
    name = at.shifted(1, "VAR")
    if name is not None and name.value in keywords and at.shifted(2):
        return None  # a keyword read as a name after an operator: the expression is unfinished
    for hint in hints:
        fix = hint(at)
        # a help that shows an empty line (the line to correct was a blank one) helps nobody
        if fix is not None and "``" not in fix.help and accepts(ip, list(fix.feed), pop=fix.pop):
            return fix
    return None
