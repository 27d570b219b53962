"""Lark's LALR parser, with reductions that build the typed tree directly.

Lark can run a transformer inside the LALR parser, but such a transformer sees only the filtered
children of a rule, never its position: the keyword a statement starts with (`wait`, `journey`)
is not among them, and `v_args(meta=True)` is refused there. Building a parse tree with positions
and transforming it afterwards cost about 60 % of the parse (position bookkeeping on every tree
node, then a second walk over the whole tree).

So each rule's callback here sees the raw children (every token, keywords included), measures
the rule's extent from them as Lark's `propagate_positions` would (first token to last token, a
child rule counting with the text it covers, parentheses included), then runs Lark's own child
filter and hands the filtered children to the `AstBuilder` method of the rule. A value on the
parser's stack is a `Held`: the built value and the extent it came from.

This replaces the rule callbacks that Lark prepares (`Lark._prepare_callbacks`, called both when
the grammar is analysed and when it is loaded from Lark's cache); everything else, the lexer, the
parse table, error recovery with `on_error`, is Lark's.
"""

from __future__ import annotations

from copy import copy

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedInput

from .builder import AstBuilder

Extent = tuple[int, int, int, int]  # line, column, end line, end column (Lark's, 1-based)


class Held:
    """A reduced rule on the parser's stack: what it built and the text it covers (None: none)."""

    __slots__ = ("value", "extent")

    def __init__(self, value, extent: Extent | None):
        self.value = value
        self.extent = extent


def _extent(raw: list) -> Extent | None:
    """From the start of the first child that covers text to the end of the last one."""
    start = end = None
    for c in raw:
        if type(c) is Held:
            if c.extent is not None:
                start = c.extent
                break
        else:
            start = (c.line, c.column)
            break
    if start is None:
        return None
    for c in reversed(raw):
        if type(c) is Held:
            if c.extent is not None:
                end = c.extent[2:]
                break
        else:
            end = (c.end_line, c.end_column)
            break
    return start[0], start[1], end[0], end[1]


def _reduction(shape, builder: AstBuilder):
    """The callback of one rule: `shape` is Lark's chain for it (child filter, single-child
    inlining) around the builder's method."""

    def reduce(raw: list) -> Held:
        extent = builder.extent = _extent(raw)
        return Held(shape([c.value if type(c) is Held else c for c in raw]), extent)

    return reduce


def _method(builder: AstBuilder, name: str):
    """The builder's method for rule `name`; rules without one (`_step`, Lark's helper rules for
    `x*`) stay trees, which Lark's child filter inlines into their parent rule."""
    method = getattr(builder, name, None)
    if method is None:
        return lambda children: Tree(name, children)
    return method


class TypedLark(Lark):
    """A Lark LALR parser whose `parse` returns a `Held` list of typed top-level items."""

    def __init__(self, grammar: str, **options):
        if options.get("propagate_positions") or options.get("transformer") is not None:
            raise ValueError("TypedLark measures positions itself and builds with its AstBuilder")
        self.builder = AstBuilder()
        super().__init__(grammar, **options)

    def _prepare_callbacks(self) -> None:
        super()._prepare_callbacks()
        for rule, chain in self._parse_tree_builder.rule_builders:
            shape = _method(self.builder, rule.alias or rule.options.template_source or rule.origin.name)
            for wrap in chain:
                shape = wrap(shape)
            self._callbacks[rule] = _reduction(shape, self.builder)

    def parse_items(self, text: str, file: str, line_offset: int, on_error=None) -> list:
        """The typed items of `text`, one chunk of `file` starting after `line_offset` lines."""
        self.builder.reset(file, line_offset)
        return self.parse(text, on_error=on_error).value


# ------------------------------------------------------------------------ repairs after an error
# Lark's interactive parser (`UnexpectedInput.interactive_parser`) can be fed tokens, and its stacks
# and lexer position changed, before parsing resumes: that is how a syntax error is repaired.


def trial(ip):
    """A copy of the parser to try tokens on: it builds nothing (a reduction's callback may
    change the values it shares with the parser: Lark's child filter extends lists in place)."""
    copied = ip.copy(deepcopy_values=False)
    conf = copy(copied.parser_state.parse_conf)
    conf.callbacks = {}
    copied.parser_state.parse_conf = conf
    return copied


def accepts(ip, tokens: list[Token], pop: int = 0) -> bool:
    """Whether the parser takes `tokens`, after taking `pop` values back off its stack."""
    copied = trial(ip)
    unshift(copied, pop)
    try:
        for t in tokens:
            copied.feed_token(t)
    except UnexpectedInput:
        return False
    return True


def unshift(ip, n: int) -> None:
    """Take the last `n` values (shifted tokens or reduced rules) back off the parser's stacks."""
    state = ip.parser_state
    for _ in range(n):
        state.state_stack.pop()
        state.value_stack.pop()


def move_lexer(ip, text: str, pos: int) -> None:
    """Make the lexer read on from `pos` in `text` (back or forward)."""
    ctr = ip.lexer_thread.state.line_ctr
    ctr.char_pos = pos
    ctr.line, ctr.column = position(text, pos)
    ctr.line_start_pos = pos - ctr.column + 1


def position(text: str, pos: int) -> tuple[int, int]:
    """(line, column) of offset `pos` in `text`, both 1-based, as Lark counts them."""
    return text.count("\n", 0, pos) + 1, pos - text.rfind("\n", 0, pos)
