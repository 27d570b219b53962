"""Message templates as the checker sees them: front matter, body, and the variables they use.

A template is one file, `templates/<channel>/<name>.j2`: YAML front matter between `---` lines,
then a Jinja2 body. The environment is sandboxed with strict undefined variables: a template can
neither reach Python internals nor render a hole where a value was missing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import yaml
from jinja2 import StrictUndefined, TemplateSyntaxError, meta, nodes
from jinja2.sandbox import SandboxedEnvironment

from .diagnostics import Diagnostics, Span

REQUIRED_FIELDS = {"email": ("subject", "from"), "push": ("title",), "sms": ()}

# Variables every template may use whatever the send provides.
ALWAYS_PROVIDED = {"user", "event", "current_event", "journey", "recommended", "predicted"}
# What the engine's models give every message (docs/language.md, "Predictions"): `recommended`
# (`.products`, dicts with at least `product_id` and `category`, best first; `.categories`, names)
# and `predicted`, the user's scores by `journeys.functions.prediction_key` (`predicted.purchase_30d`).
MODEL_PROVIDED = frozenset({"recommended", "predicted"})
PROVIDED_BY_CHANNEL = {"email": {"unsubscribe_url"}}
# A journey whose entry names a "... Viewed" event with `as` also gives `last_viewed` (the latest
# such named event); connectors.render provides it by this same rule.
VIEWED_SUFFIX = "Viewed"
VIEWED_HELPERS = {"last_viewed"}

_FRONT = re.compile(r"\A---[ \t]*\r?\n(.*?)^---[ \t]*\r?\n?", re.S | re.M)


def environment() -> SandboxedEnvironment:
    return SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)


@dataclass
class Template:
    channel: str
    name: str
    path: str  # as displayed in diagnostics
    front: dict = field(default_factory=dict)
    body: str = ""
    body_line: int = 1  # the line the body starts at
    variables: dict[str, tuple[int, int]] = field(default_factory=dict)  # name → (line, col) of first use
    lines: list[str] = field(default_factory=list)
    # of OPTIONAL (variables a send may lack), those read outside a guard → (line, col) of the first such read
    unguarded: dict[str, tuple[int, int]] = field(default_factory=dict)
    # the keys read from `predicted` (`predicted.purchase_30d`, `predicted["churn_60d"]`) → (line, col)
    predicted: dict[str, tuple[int, int]] = field(default_factory=dict)


def load_template(path: Path, channel: str, display: str, diags: Diagnostics) -> Template:
    tpl = Template(channel, path.stem, display)
    try:
        text = path.read_text(encoding="utf-8")
        tpl.lines = text.splitlines()
    except (OSError, UnicodeDecodeError) as e:
        diags.error("J036", f"cannot read template: {e}", Span.point(display, 1, 1))
        return tpl
    m = _FRONT.match(text)
    if m:
        try:
            front = yaml.safe_load(m.group(1)) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            line, col = (mark.line + 2, mark.column + 1) if mark else (2, 1)
            diags.error("J036", f"front matter is not valid YAML: {getattr(e, 'problem', e)}", Span.point(display, line, col))
            front = {}
        if not isinstance(front, dict):
            diags.error("J036", "front matter must be `key: value` lines", Span.point(display, 2, 1))
            front = {}
        tpl.front = front
        tpl.body = text[m.end():]
        tpl.body_line = text.count("\n", 0, m.end()) + 1
    else:
        tpl.body = text
    for key in REQUIRED_FIELDS.get(channel, ()):
        if key not in tpl.front:
            diags.error("J036", f"{channel} template has no `{key}` in its front matter", Span.point(display, 1, 1),
                        f"start the file with:\n---\n{key}: ...\n---")
    env = environment()
    sources = [(str(v), 2 + i) for i, v in enumerate(tpl.front.values()) if isinstance(v, str)]
    sources.append((tpl.body, tpl.body_line))
    for source, first_line in sources:
        try:
            parsed = env.parse(source)
        except TemplateSyntaxError as e:
            diags.error("J036", f"template syntax error: {e.message}", Span.point(display, first_line + (e.lineno or 1) - 1, 1))
            continue
        for var in sorted(meta.find_undeclared_variables(parsed)):
            tpl.variables.setdefault(var, _first_use(source, var, first_line))
        for var, line in _unguarded(parsed, OPTIONAL & tpl.variables.keys()).items():
            tpl.unguarded.setdefault(var, (first_line + line - 1, _first_use(source, var, first_line)[1]))
        if "predicted" in tpl.variables:
            for key in _keys_read(parsed, "predicted"):
                tpl.predicted.setdefault(key, _first_use(source, key, first_line))
    return tpl


def _keys_read(tree: nodes.Node, name: str) -> list[str]:
    """The constant keys read from variable `name`: `name.key` and `name["key"]`."""
    keys = []
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        if isinstance(node.node, nodes.Name) and node.node.name == name:
            if isinstance(node, nodes.Getattr):
                keys.append(node.attr)
            elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
                keys.append(node.arg.value)
    return keys


OPTIONAL = frozenset({"event", "current_event"})  # the events some actions do not have


def _unguarded(tree: nodes.Node, names: set[str]) -> dict[str, int]:
    """The first line at which each of `names` is read outside a guard. A read is guarded inside
    an `{% if %}` (or `x if ... else y`) whose test reads the same variable, in that test itself,
    and under a `default` filter: a template that says what to do without the value never fails
    for lack of it."""
    found: dict[str, int] = {}
    if not names:
        return found

    def visit(node: nodes.Node, guarded: frozenset[str]) -> None:
        if isinstance(node, nodes.Name):
            if node.name in names and node.name not in guarded:
                found.setdefault(node.name, node.lineno)
            return
        if isinstance(node, nodes.Filter) and node.name == "default":
            visit_all(node.iter_child_nodes(), guarded | _read(node.node))
            return
        if isinstance(node, (nodes.If, nodes.CondExpr)):
            tested = _read(node.test)
            visit(node.test, guarded | tested)
            body = node.body if isinstance(node, nodes.If) else [node.expr1]
            visit_all(body, guarded | tested)
            rest = ([*node.elif_, *node.else_] if isinstance(node, nodes.If)
                    else [node.expr2] if node.expr2 is not None else [])
            visit_all(rest, guarded)
            return
        visit_all(node.iter_child_nodes(), guarded)

    def visit_all(children, guarded: frozenset[str]) -> None:
        for child in children:
            visit(child, guarded)

    visit(tree, frozenset())
    return found


def _read(node: nodes.Node | None) -> frozenset[str]:
    """The variables an expression reads (find_all looks below a node, not at it)."""
    if node is None:
        return frozenset()
    own = {node.name} if isinstance(node, nodes.Name) else set()
    return frozenset(own | {n.name for n in node.find_all(nodes.Name)})


def _first_use(source: str, var: str, first_line: int) -> tuple[int, int]:
    m = re.search(r"\b" + re.escape(var) + r"\b", source)
    if not m:
        return first_line, 1
    line = source.count("\n", 0, m.start())
    col = m.start() - (source.rfind("\n", 0, m.start()) + 1) + 1
    return first_line + line, col


def discover(root: Path, diags: Diagnostics, display: Callable[[Path], str]) -> dict[tuple[str, str], Template]:
    """Every template of a project, keyed by (channel, name)."""
    found: dict[tuple[str, str], Template] = {}
    tdir = root / "templates"
    if not tdir.is_dir():
        return found
    for path in sorted(tdir.glob("*/*.j2")):
        channel = path.parent.name
        found[(channel, path.stem)] = load_template(path, channel, display(path), diags)
    return found
