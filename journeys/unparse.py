"""Expressions back to source text, in one canonical spelling.

Compiled conditions keep this text so that graphs, traces and error messages show the condition a
marketer wrote (modulo layout and redundant parentheses) without holding on to the tree.
"""

from __future__ import annotations

from . import ast as A

# Binding strength, loosest first; mirrors the grammar's expression levels.
_OR, _AND, _NOT, _CMP, _SUM, _PRODUCT, _UNARY, _POSTFIX = range(1, 9)
_LEVEL = {"or": _OR, "and": _AND, "+": _SUM, "-": _SUM, "*": _PRODUCT, "/": _PRODUCT}


def quote(text: str) -> str:
    body = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\t", "\\t")
    return f'"{body}"'


def _level(node: A.Node) -> int:
    if isinstance(node, A.Binary):
        return _LEVEL.get(node.op, _CMP)
    if isinstance(node, A.InSegment):
        return _CMP
    if isinstance(node, A.Unary):
        return _NOT if node.op == "not" else _UNARY
    if isinstance(node, A.Literal) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool) \
            and node.value < 0:
        return _UNARY
    return _POSTFIX + 1


def _wrap(node: A.Node, at_least: int) -> str:
    text = unparse(node)
    return f"({text})" if _level(node) < at_least else text


def literal(value: object) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return quote(value)
    return str(value)  # numbers, Duration (`20m`), TimeOfDay (`10:00`)


def unparse(node: A.Node) -> str:
    """Source text of an expression (or an event match, or a window)."""
    if isinstance(node, A.Literal):
        return literal(node.value)
    if isinstance(node, A.ListExpr):
        return "[" + ", ".join(unparse(i) for i in node.items) + "]"
    if isinstance(node, A.Name):
        return node.name
    if isinstance(node, A.Trait):
        return f"user.{node.name}"
    if isinstance(node, A.Attr):
        return f"{_wrap(node.obj, _POSTFIX)}.{node.name}"
    if isinstance(node, A.Index):
        return f"{_wrap(node.obj, _POSTFIX)}[{unparse(node.index)}]"
    if isinstance(node, A.Unary):
        if node.op == "not":
            return f"not {_wrap(node.operand, _NOT)}"
        return f"-{_wrap(node.operand, _UNARY)}"
    if isinstance(node, A.Binary):
        level = _level(node)
        if level == _CMP:  # comparisons do not chain: both sides are sums
            return f"{_wrap(node.left, _SUM)} {node.op} {_wrap(node.right, _SUM)}"
        return f"{_wrap(node.left, level)} {node.op} {_wrap(node.right, level + 1)}"
    if isinstance(node, A.InSegment):
        return f"user in segment {quote(node.segment.value)}"
    if isinstance(node, A.Predicted):
        return f"predicted {node.model.value} in {node.horizon}"
    if isinstance(node, A.Call):
        return f"{node.func}(" + ", ".join(unparse(a) for a in node.args) + ")"
    if isinstance(node, A.EventMatch):
        text = f"event {quote(node.event.value)}"
        return text + (f" where {unparse(node.where)}" if node.where is not None else "")
    if isinstance(node, A.Window):
        return f"last {node.duration}"
    return f"<{type(node).__name__}>"
