"""`journeys fmt`: journey and scenario files printed back in one canonical layout.

The formatter prints the typed tree (`journeys.ast`) back as source, taking the exact spelling of
every literal from the text it came from (the tree keeps values, not spellings), and re-attaches
the comments, which the grammar ignores, by their position in the text.

Rules (docs/language.md, "Formatting", says the same for users):

- 2 spaces of indentation per block; one statement, declaration or expectation per line; a top-level
  item (`policy`, `segment`, `journey`, `test`) starts at column 1, with one blank line between items.
- Braces: `{` ends the line that opens a block, `}` stands on a line of its own, `} else if ... {`
  and `} else {` share a line. An `on event`, `on timeout`, split arm or `on exit` block holding one
  step that fits on one line, and no comment, is written on one line: `on event { exit }`; an empty
  one is `{}`. Consecutive one-line arms of a `wait for` or a `split` are padded so that their `{`
  line up (`on event   { exit }` under `on timeout { ... }`). `if` blocks are always several lines.
- Inside a line, single spaces between words; none inside brackets of lists and calls
  (`f(a, b)`, `[1, 2]`), one inside an object's braces (`{ a: 1, b: 2 }`), none around the `-` of
  quiet hours (`21:00-08:00`) or the `.` of a trait. Expressions are printed with the fewest
  parentheses that keep their meaning (precedence as in `journeys.unparse`).
- An object that does not fit in 100 columns gets one `key: value` per line, without a trailing
  comma. A segment is `segment "name" = CONDITION` when that fits in 80 columns; otherwise the
  condition goes on the next line, indented; if it still does not fit in 100 columns, each operand
  of its outermost `and` / `or` chain gets a line of its own, the operator leading the line.
- Literals are kept as written: `60m` stays `60m`, `1.50` stays `1.50`, `45%` stays `45%`, a string
  keeps its escapes. Optional words are kept as written (`user time`); empty objects (`with {}`)
  and trailing commas, which mean nothing, are dropped.
- Comments are all kept, in their order. A comment on a line of its own stays before the statement
  it precedes, at that statement's indentation (at the end of a block: before its `}`). A comment
  at the end of a line stays at the end of the line of the statement it ends (after `{` for a block
  opener), its `#` in column 54, or two spaces after the code when the code is longer. A comment in
  the middle of a statement that spans lines moves to a line of its own above the statement; one
  between `}` and `else` moves before that `}`.
- Blank lines: at most one is kept where the text had one or more between two statements (or a
  comment and a statement); none after a `{`, before a `}`, or at the start or end of the file.

The result is idempotent, and `format_text` checks that the formatted text parses to the same tree
(spans aside) and holds the same comments; if not, it refuses rather than change a journey.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass, field

from . import ast as A
from .diagnostics import Diagnostic
from .parser import parse_text
from .unparse import _CMP, _NOT, _POSTFIX, _SUM, _UNARY, _level, literal, quote

WIDTH = 100  # objects and segment conditions are broken when a line would be longer
SEGMENT_ONE_LINE = 80  # `segment "name" = CONDITION` stays on one line up to this width
COMMENT_COLUMN = 53  # 0-based: a trailing comment's `#` stands in column 54 when the code is shorter
INDENT = "  "

_SCAN = re.compile(r'"(?:[^"\\\n]|\\.)*"|#[^\n]*|[{}]')
_NUMBER = re.compile(r"\d+(?:\.\d+)?%?")
_SKIP = re.compile(r"(?:\s+|#[^\n]*)*")


class FormatError(Exception):
    """The formatter would change the file's meaning or lose a comment (a formatter bug)."""


@dataclass(frozen=True)
class Comment:
    start: int  # offset of `#`
    line: int  # 1-based
    text: str  # without trailing whitespace
    blank_before: bool  # on a line of its own, after a blank line


@dataclass
class FormatResult:
    path: str
    source: str
    output: str | None  # None when the file has syntax errors (or the formatter refused it)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)  # source lines, for rendering diagnostics

    @property
    def changed(self) -> bool:
        return self.output is not None and self.output != self.source


def scan_comments(text: str) -> list[Comment]:
    """Every `# ...` comment of `text`, in order; a `#` inside a string is not one."""
    out = []
    line, counted = 1, 0
    for m in _SCAN.finditer(text):
        if m.group().startswith("#"):
            start = m.start()
            line += text.count("\n", counted, start)
            counted = start
            line_start = text.rfind("\n", 0, start) + 1
            own_line = not text[line_start:start].strip()
            out.append(Comment(start, line, m.group().rstrip(), own_line and _blank_line_before(text, line_start)))
    return out


def _blank_line_before(text: str, line_start: int) -> bool:
    if line_start == 0:
        return False
    prev_start = text.rfind("\n", 0, line_start - 1) + 1
    return not text[prev_start:line_start - 1].strip()


# ------------------------------------------------------------------------------ output lines


@dataclass
class _Line:
    indent: int
    text: str
    blank: bool = False  # a blank line before this one (if the line before allows one)
    opens: bool = False  # ends with `{`: no blank line may follow
    comment: str | None = None


def _render(lines: list[_Line]) -> str:
    out: list[str] = []
    prev: _Line | None = None
    for ln in lines:
        if ln.blank and prev is not None and not prev.opens:
            out.append("")
        code = INDENT * ln.indent + ln.text
        if ln.comment is not None:
            if ln.text:
                code = code + " " * max(2, COMMENT_COLUMN - len(code)) + ln.comment
            else:
                code = INDENT * ln.indent + ln.comment
        out.append(code.rstrip())
        prev = ln
    return "\n".join(out) + "\n" if out else ""


# ------------------------------------------------------------------------------ the printer


class _Printer:
    def __init__(self, text: str):
        self.text = text
        self.line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
        self.comments = scan_comments(text)
        self.comment_starts = [c.start for c in self.comments]
        self.ci = 0
        self.braces = [m.start() for m in _SCAN.finditer(text) if m.group() == "{"]
        self.out: list[_Line] = []

    # -------------------------------------------------------------- positions

    def off(self, line: int, col: int) -> int:
        return self.line_starts[line - 1] + col - 1

    def start(self, node: A.Node) -> int:
        s = node.span
        return self.off(s.line, s.col)

    def end(self, node: A.Node) -> int:
        s = node.span
        return self.off(s.end_line, s.end_col)

    def raw(self, node: A.Node) -> str:
        return self.text[self.start(node):self.end(node)]

    def brace_after(self, offset: int) -> int:
        """The offset of the first `{` at or after `offset` (outside strings and comments)."""
        i = bisect.bisect_left(self.braces, offset)
        if i == len(self.braces):
            raise FormatError(f"no `{{` after offset {offset}")
        return self.braces[i]

    def close_of(self, node: A.Node) -> int:
        """The offset of the `}` a block-ending node ends with."""
        e = self.end(node) - 1
        if self.text[e] != "}":
            raise FormatError(f"{type(node).__name__} does not end with `}}`")
        return e

    def blank_before(self, offset: int) -> bool:
        line_start = self.text.rfind("\n", 0, offset) + 1
        return not self.text[line_start:offset].strip() and _blank_line_before(self.text, line_start)

    # -------------------------------------------------------------- emitting

    def emit(self, indent: int, text: str, blank: bool = False) -> _Line:
        line = _Line(indent, text, blank)
        self.out.append(line)
        return line

    def flush(self, before: int, indent: int, blank: bool | None = None, first_blank: bool = False) -> bool:
        """Emit every comment before offset `before` on a line of its own. `blank`: the blank
        line the first of them takes (for comments hoisted above their statement; None: each
        comment's own); `first_blank`: the first takes one whatever the text had. Returns whether
        any was emitted."""
        first = True
        while self.ci < len(self.comments) and self.comments[self.ci].start < before:
            c = self.comments[self.ci]
            b = c.blank_before if blank is None else (blank and first)
            b = b or (first and first_blank)
            self.emit(indent, "", b).comment = c.text
            self.ci += 1
            first = False
        return not first

    def trailing(self, after: int, line: _Line) -> None:
        """The comment that ends the source line at offset `after`, if any, goes on `line`."""
        if self.ci >= len(self.comments):
            return
        c = self.comments[self.ci]
        gap = self.text[after:c.start]
        if c.start >= after and "\n" not in gap and not gap.strip():
            self.ci += 1
            if line.comment is None:
                line.comment = c.text
            else:  # cannot happen with one comment per source line; keep it anyway
                self.emit(line.indent, "").comment = c.text

    def open_statement(self, node: A.Node, indent: int, header_end: int, blank: bool = False) -> bool:
        """Leading comments, then those inside the statement's header (before `header_end`) hoisted
        above it; returns whether the statement itself takes a blank line before it."""
        s = self.start(node)
        self.flush(s, indent)
        blank = blank or self.blank_before(s)
        if self.flush(header_end, indent, blank):
            return False
        return blank

    # -------------------------------------------------------------- file

    def file(self, items) -> str:
        for i, item in enumerate(items):
            # one blank line between top-level items, before the leading comments of the next one
            force = i > 0 and not self.flush(self.start(item), 0, first_blank=True)
            self.item(item, force)
        self.flush(len(self.text) + 1, 0)
        return _render(self.out)

    def item(self, node: A.Node, force_blank: bool) -> None:
        if isinstance(node, A.Policy):
            brace = self.brace_after(self.start(node))
            blank = self.open_statement(node, 0, brace, force_blank)
            self.block("policy", brace, node.statements, self.close_of(node), 0, blank, self.statement)
        elif isinstance(node, A.Journey):
            brace = self.brace_after(self.end(node.name))
            blank = self.open_statement(node, 0, brace, force_blank)
            self.block(f"journey {self.raw(node.name)}", brace, node.items, self.close_of(node), 0, blank,
                       self.statement)
        elif isinstance(node, A.Scenario):
            brace = self.brace_after(self.end(node.name))
            blank = self.open_statement(node, 0, brace, force_blank)
            self.block(f"test {self.raw(node.name)}", brace, node.statements, self.close_of(node), 0, blank,
                       self.test_statement)
        elif isinstance(node, A.Segment):
            self.simple(node, 0, self.segment_lines(node), force_blank)
        else:
            raise FormatError(f"unexpected top-level {type(node).__name__}")

    def block(self, head: str, brace: int, items, close: int, indent: int, blank: bool, each) -> None:
        """`head {`, the items one level in, the comments before `}`, then `}`."""
        line = self.emit(indent, f"{head} {{", blank)
        line.opens = True
        self.trailing(brace + 1, line)
        self.body(items, close, indent + 1, each)
        end = self.emit(indent, "}")
        self.trailing(close + 1, end)

    def body(self, items, close: int, indent: int, each) -> None:
        for item in items:
            each(item, indent)
        self.flush(close, indent)

    def simple(self, node: A.Node, indent: int, lines: list[str], force_blank: bool = False) -> None:
        """A statement without a block: `lines` (its text, one or more lines, the first at `indent`,
        the others one level deeper). Comments inside it go above it."""
        blank = self.open_statement(node, indent, self.end(node), force_blank)
        first = self.emit(indent, lines[0], blank)
        last = first
        for more in lines[1:]:
            # continuation lines carry their own relative indentation as leading spaces
            stripped = more.lstrip(" ")
            depth = (len(more) - len(stripped)) // 2
            last = self.emit(indent + depth, stripped)
        self.trailing(self.end(node), last)

    # -------------------------------------------------------------- journeys and policy

    def statement(self, node: A.Node, indent: int) -> None:
        if isinstance(node, A.If):
            self.if_step(node, indent)
        elif isinstance(node, A.WaitFor) and node.branches:
            self.wait_for(node, indent)
        elif isinstance(node, A.Split):
            self.split(node, indent)
        elif isinstance(node, A.OnExit):
            self.arms(indent, [(node, "on exit", node.steps)])
        else:
            self.simple(node, indent, self.simple_lines(node, indent))

    def if_step(self, node: A.If, indent: int) -> None:
        for i, br in enumerate(node.branches):
            cond_end = self.end(br.condition) if br.condition is not None else self.start(br)
            brace = self.brace_after(cond_end)
            cond = self.expr(br.condition) if br.condition is not None else None
            if i == 0:
                blank = self.open_statement(node, indent, brace)
                line = self.emit(indent, f"if {cond} {{", blank)
            else:
                self.flush(brace, indent + 1)  # between `}` and `else`, or inside an `else if` condition
                line = self.emit(indent, f"}} else if {cond} {{" if cond is not None else "} else {")
            line.opens = True
            self.trailing(brace + 1, line)
            self.body(br.steps, self.close_of(br), indent + 1, self.statement)
        end = self.emit(indent, "}")
        self.trailing(self.end(node), end)

    def wait_for(self, node: A.WaitFor, indent: int) -> None:
        brace = self.brace_after(self.end(node.timeout))
        blank = self.open_statement(node, indent, brace)
        line = self.emit(indent, f"wait for {self.expr(node.match)} up to {self.raw(node.timeout)} {{", blank)
        line.opens = True
        self.trailing(brace + 1, line)
        self.arms(indent + 1, [(b, f"on {b.outcome}", b.steps) for b in node.branches])
        self.flush(self.close_of(node), indent + 1)
        end = self.emit(indent, "}")
        self.trailing(self.end(node), end)

    def split(self, node: A.Split, indent: int) -> None:
        brace = self.brace_after(self.start(node))
        blank = self.open_statement(node, indent, brace)
        line = self.emit(indent, "split {", blank)
        line.opens = True
        self.trailing(brace + 1, line)
        arms = []
        for arm in node.arms:
            share = _NUMBER.match(self.text, self.start(arm))
            share_text = share.group() if share else literal(arm.percent)
            if arm.is_control:
                arms.append((arm, f"{share_text} control", None))
            else:
                arms.append((arm, f"{share_text} {self.raw(arm.name)}", arm.steps))
        self.arms(indent + 1, arms)
        self.flush(self.close_of(node), indent + 1)
        end = self.emit(indent, "}")
        self.trailing(self.end(node), end)

    def arms(self, indent: int, arms: list) -> None:
        """Wait branches, split arms or an `on exit`: `head { step }` on one line when the block
        holds at most one step that fits on a line and no comment; consecutive one-line arms are
        padded so that their braces line up."""
        plans = []
        for node, head, steps in arms:
            if steps is None:
                plans.append((node, head, None, None))
                continue
            header_end = self.header_end(node)
            brace = self.brace_after(header_end)
            close = self.close_of(node)
            one = None
            if len(steps) <= 1 and not self._has_comment(brace, close):
                if not steps:
                    one = ""
                elif not isinstance(steps[0], (A.If, A.Split, A.OnExit)) and \
                        not (isinstance(steps[0], A.WaitFor) and steps[0].branches):
                    lines = self.simple_lines(steps[0], indent + 1)
                    if len(lines) == 1:
                        one = lines[0]
            plans.append((node, head, (brace, close, steps), one))
        # padding of runs of one-line arms; a blank line or another kind of arm ends a run
        widths: dict[int, int] = {}
        run: list[int] = []

        def close_run():
            if len(run) > 1:
                w = max(len(plans[k][1]) for k in run)
                for k in run:
                    widths[k] = w
            run.clear()

        for k, (node, head, blk, one) in enumerate(plans):
            if one is None or self.blank_before(self.start(node)):
                close_run()
            if one is not None:
                run.append(k)
        close_run()
        for k, (node, head, blk, one) in enumerate(plans):
            if blk is None:  # a control arm
                self.simple(node, indent, [head])
                continue
            brace, close, steps = blk
            padded = head.ljust(widths.get(k, len(head)))
            if one is not None:
                self.simple(node, indent, [f"{padded} {{ {one} }}" if one else f"{padded} {{}}"])
                continue
            blank = self.open_statement(node, indent, brace)
            self.block(head, brace, steps, close, indent, blank, self.statement)

    def header_end(self, node: A.Node) -> int:
        if isinstance(node, A.SplitArm):
            return self.end(node.name)
        return self.start(node)

    def _has_comment(self, a: int, b: int) -> bool:
        i = bisect.bisect_left(self.comment_starts, a)
        return i < len(self.comment_starts) and self.comment_starts[i] < b

    # -------------------------------------------------------------- statement texts

    def tz(self, tz: A.Timezone, owner: A.Node) -> str:
        if tz.name is not None:
            return f" in {self.raw(tz.name)}"
        if tz.span is not None and owner.span is not None and tz.span != owner.span:
            return " user time"  # written out; the default means the same
        return ""

    def dur(self, d: A.Duration) -> str:
        return self.raw(d) if d.span is not None else str(d)

    def text_of(self, t: A.Text) -> str:
        return self.raw(t) if t.span is not None else quote(t.value)

    def simple_lines(self, node: A.Node, indent: int) -> list[str]:
        r, e = self.text_of, self.expr
        if isinstance(node, A.EntryEvent):
            s = "entry when " + ("first " if node.first else "") + e(node.match)
            return [s + (f" as {node.alias.value}" if node.alias is not None else "")]
        if isinstance(node, A.EntrySegment):
            return [f"entry when user enters segment {r(node.segment)}"]
        if isinstance(node, A.EntrySchedule):
            if node.cron is not None:
                s = f"entry on cron {r(node.cron)}"
            else:
                s = f"entry every {node.every.value} at {self.raw(node.at)}"
            s += self.tz(node.tz, node)
            return [s + (f" for segment {r(node.segment)}" if node.segment is not None else "")]
        if isinstance(node, A.ExitEvent):
            return [f"exit when {e(node.match)}"]
        if isinstance(node, A.ExitSegment):
            return [f"exit when user leaves segment {r(node.segment)}"]
        if isinstance(node, A.ExitCondition):
            return [f"exit when {e(node.condition)}"]
        if isinstance(node, A.Reenter):
            return [f"reenter {node.mode}" + (f" {self.dur(node.after)}" if node.after is not None else "")]
        if isinstance(node, A.Goal):
            return [f"goal {r(node.name)} = {e(node.match)} within {self.dur(node.within)}"]
        if isinstance(node, A.Cap):
            rules = ", ".join(self.cap_rule(rule) for rule in node.rules)
            return [f"cap {rules}" + (f" when {e(node.when)}" if node.when is not None else "")]
        if isinstance(node, A.QuietHours):
            return [f"quiet hours {self.raw(node.start)}-{self.raw(node.end)}" + self.tz(node.tz, node)]
        if isinstance(node, A.TimezoneDecl):
            return [f"timezone {r(node.name)}"]
        if isinstance(node, A.Wait):
            return [f"wait {self.dur(node.duration)}"]
        if isinstance(node, A.WaitUntil):
            return [f"wait until {self.raw(node.at)}" + self.tz(node.tz, node)]
        if isinstance(node, A.WaitFor):
            return [f"wait for {e(node.match)} up to {self.dur(node.timeout)}"]
        if isinstance(node, A.Send):
            head = f"send {node.channel.value} {r(node.template)}"
            tail = f" via {r(node.via)}" if node.via is not None else ""
            if node.best_time is not None:
                tail += f" at best time within {self.dur(node.best_time)}"
            return self.with_object(head, " with ", node.data, tail, indent)
        if isinstance(node, A.AudienceChange):
            if node.op == "add":
                return [f"add user to audience {r(node.audience)}"]
            return [f"remove user from audience {r(node.audience)}"]
        if isinstance(node, A.Webhook):
            return self.with_object(f"webhook {r(node.name)}", " with ", node.data, "", indent)
        if isinstance(node, A.SetTrait):
            return [f"set user.{node.trait.value} = {e(node.value)}"]
        if isinstance(node, A.ExitStep):
            return ["exit"]
        raise FormatError(f"cannot print a {type(node).__name__}")

    def cap_rule(self, rule: A.CapRule) -> str:
        """`email 2 per 1d`, or a learned cap `push auto per 7d min 2 max 5` (the builder puts
        `min` first whatever the order written, so this is the canonical order)."""
        if not rule.auto:
            return f"{rule.channel.value} {self.cap_count(rule)} per {self.dur(rule.window)}"
        bounds = "".join(f" {b.kind} {self.raw(b).split()[-1] if b.span is not None else b.value}"
                         for b in rule.bounds)
        return f"{rule.channel.value} auto per {self.dur(rule.window)}{bounds}"

    def cap_count(self, rule: A.CapRule) -> str:
        at = self.end(rule.channel)
        at = _SKIP.match(self.text, at).end()
        m = _NUMBER.match(self.text, at)
        return m.group() if m else str(rule.count)

    def with_object(self, head: str, sep: str, pairs, tail: str, indent: int, required: bool = False) -> list[str]:
        """`head with { k: v, ... } tail`: the object on one line if the line fits, else one pair a
        line. No pairs: no object at all (unless the grammar `required` one)."""
        if not pairs:
            return [head + (f"{sep}{{}}" if required else "") + tail]
        items = [f"{self.text_of(p.key)}: {self.expr(p.value)}" for p in pairs]
        one = f"{head}{sep}{{ {', '.join(items)} }}{tail}"
        if len(INDENT * indent) + len(one) <= WIDTH:
            return [one]
        lines = [f"{head}{sep}{{"]
        lines += [INDENT + item + ("," if i < len(items) - 1 else "") for i, item in enumerate(items)]
        lines.append("}" + tail)
        return lines

    def segment_lines(self, node: A.Segment) -> list[str]:
        head = f"segment {self.text_of(node.name)} ="
        cond = self.expr(node.condition)
        if len(head) + 1 + len(cond) <= SEGMENT_ONE_LINE:
            return [f"{head} {cond}"]
        if len(INDENT) + len(cond) <= WIDTH:
            return [head, INDENT + cond]
        c = node.condition
        if isinstance(c, A.Binary) and c.op in ("and", "or"):
            operands = []
            while isinstance(c, A.Binary) and c.op == node.condition.op:
                operands.append(c.right)
                c = c.left
            operands.append(c)
            operands.reverse()
            level = _level(node.condition)
            lines = [head, INDENT + self.wrap(operands[0], level)]
            lines += [f"{INDENT}{node.condition.op} {self.wrap(o, level + 1)}" for o in operands[1:]]
            return lines
        return [head, INDENT + cond]

    # -------------------------------------------------------------- scenarios

    def test_statement(self, node: A.Node, indent: int) -> None:
        self.simple(node, indent, self.test_lines(node, indent))

    def stamp(self, ts: A.Timestamp) -> str:
        return f"{ts.date} {self.raw(ts.time)}" + (f" {ts.offset}" if ts.offset else "")

    def when(self, w: A.ExpectTime | None) -> str:
        if w is None:
            return ""
        return f" at {self.stamp(w.at)}" + (f" within {self.dur(w.within)}" if w.within is not None else "")

    def test_lines(self, node: A.Node, indent: int) -> list[str]:
        r = self.text_of
        if isinstance(node, A.TestUser):
            return self.with_object(f"user {r(node.user)}", " ", node.traits, "", indent)
        if isinstance(node, A.TestEvent):
            at = f"at {self.stamp(node.at)} " if node.at is not None else ""
            return self.with_object(f"{at}event {r(node.event)} user {r(node.user)}", " ", node.properties, "",
                                    indent)
        if isinstance(node, A.TestIdentify):
            at = f"at {self.stamp(node.at)} " if node.at is not None else ""
            return self.with_object(f"{at}identify user {r(node.user)}", " ", node.traits, "", indent,
                                    required=True)
        if isinstance(node, A.TestPrediction):
            value = "null" if node.value is None else format(node.value, ".6f").rstrip("0").rstrip(".")
            return [f"given user {r(node.user)} predicted {node.prediction.model.value} in "
                    f"{self.dur(node.prediction.horizon)} = {value}"]
        if isinstance(node, A.ExpectSend):
            if node.negated:
                tpl = f" {r(node.template)}" if node.template is not None else ""
                return [f"expect no {node.channel.value}{tpl} to {r(node.user)}" + self.when(node.when)]
            sup = f" suppressed by {node.suppressed.value}" if node.suppressed is not None else ""
            return [f"expect {node.channel.value} {r(node.template)} to {r(node.user)}{sup}" + self.when(node.when)]
        if isinstance(node, A.ExpectMembership):
            neg = " not" if node.negated else ""
            return [f"expect user {r(node.user)}{neg} in {node.kind} {r(node.name)}" + self.when(node.when)]
        if isinstance(node, A.ExpectTrait):
            return [f"expect user {r(node.user)} has {node.trait.value} {node.op} {self.expr(node.value)}"
                    + self.when(node.when)]
        if isinstance(node, A.ExpectTime):
            return [self.when(node).lstrip()]
        raise FormatError(f"cannot print a {type(node).__name__}")

    # -------------------------------------------------------------- expressions

    def wrap(self, node: A.Node, at_least: int) -> str:
        text = self.expr(node)
        return f"({text})" if _level(node) < at_least else text

    def expr(self, node: A.Node) -> str:
        """An expression with its literals as written; precedence as `journeys.unparse`."""
        if isinstance(node, A.Literal):
            if isinstance(node.value, bool) or node.value is None or node.span is None:
                return literal(node.value)
            return self.raw(node)
        if isinstance(node, A.ListExpr):
            return "[" + ", ".join(self.expr(i) for i in node.items) + "]"
        if isinstance(node, A.Name):
            return node.name
        if isinstance(node, A.Trait):
            return f"user.{node.name}"
        if isinstance(node, A.Attr):
            return f"{self.wrap(node.obj, _POSTFIX)}.{node.name}"
        if isinstance(node, A.Index):
            return f"{self.wrap(node.obj, _POSTFIX)}[{self.expr(node.index)}]"
        if isinstance(node, A.Unary):
            if node.op == "not":
                return f"not {self.wrap(node.operand, _NOT)}"
            return f"-{self.wrap(node.operand, _UNARY)}"
        if isinstance(node, A.Binary):
            level = _level(node)
            if level == _CMP:
                return f"{self.wrap(node.left, _SUM)} {node.op} {self.wrap(node.right, _SUM)}"
            return f"{self.wrap(node.left, level)} {node.op} {self.wrap(node.right, level + 1)}"
        if isinstance(node, A.InSegment):
            return f"user in segment {self.text_of(node.segment)}"
        if isinstance(node, A.Predicted):
            return f"predicted {node.model.value} in {self.dur(node.horizon)}"
        if isinstance(node, A.Call):
            return f"{node.func}(" + ", ".join(self.expr(a) for a in node.args) + ")"
        if isinstance(node, A.EventMatch):
            text = f"event {self.text_of(node.event)}"
            return text + (f" where {self.expr(node.where)}" if node.where is not None else "")
        if isinstance(node, A.Window):
            return f"last {self.dur(node.duration)}"
        raise FormatError(f"cannot print a {type(node).__name__}")


# ------------------------------------------------------------------------------ entry points


def comment_texts(text: str) -> list[str]:
    return [c.text for c in scan_comments(text)]


def format_text(text: str, path: str = "<string>") -> FormatResult:
    """The canonical text of one journey or scenario file. A file with syntax errors is not
    formatted: its result has `output` None and the diagnostics."""
    parsed = parse_text(text, path)
    errors = [d for d in parsed.diagnostics if d.is_error]
    if errors:
        return FormatResult(path, text, None, errors, parsed.lines)
    output = format_tree(text, parsed.file.items)
    again = parse_text(output, path)
    if any(d.is_error for d in again.diagnostics) or again.file.items != parsed.file.items:
        raise FormatError(f"{path}: formatting would change the file's meaning")
    if comment_texts(output) != comment_texts(text):
        raise FormatError(f"{path}: formatting would lose or reorder a comment")
    return FormatResult(path, text, output, [], parsed.lines)


def format_tree(text: str, items) -> str:
    """Print the parsed `items` of `text` (whose spans point into it) canonically."""
    return _Printer(text).file(items)


__all__ = ["FormatError", "FormatResult", "format_text", "format_tree", "scan_comments", "comment_texts"]
