"""A compiled journey as a Mermaid flowchart or a Graphviz digraph, for docs, reviews and the CLI.

Both renderings come from one list of boxes and edges (`layout`), so they always agree: an entry
box, one box per step labelled with its path and a short description, an end box, and, when the
journey has `on exit` steps, an "on exit" box that starts them. Node ids are generated (`n1`,
`n2`...), never taken from user text, and every label is escaped for its format, so any journey
name, template or condition renders into a valid file. The output is deterministic: nodes come in
the compiled order.
"""

from __future__ import annotations

from dataclasses import dataclass

from .graph import BranchNode, CompiledJourney, Node

MAX_LABEL = 80  # characters of a description; conditions are cut with an ellipsis


@dataclass(frozen=True)
class Box:
    id: str
    lines: tuple[str, ...]
    terminal: bool = False  # entry, end, on exit: drawn rounded


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    label: str = ""


def _short(text: str) -> str:
    return text if len(text) <= MAX_LABEL else text[: MAX_LABEL - 1].rstrip() + "…"


def describe(node: Node) -> tuple[str, ...]:
    """The description lines of a step: one, or for an `if` one per condition."""
    if isinstance(node, BranchNode) and node.arms:
        return tuple(_short(("if " if i == 0 else "else if ") + arm.condition.source)
                     for i, arm in enumerate(node.arms))
    return (_short(node.describe()),)


def layout(journey: CompiledJourney) -> tuple[list[Box], list[Edge]]:
    ids = {path: f"n{i}" for i, path in enumerate(journey.nodes, 1)}
    boxes = [Box("entry", (journey.name, _short(journey.entry.describe())), terminal=True)]
    edges = [Edge("entry", ids[journey.first] if journey.first is not None else "done")]
    for path, node in journey.nodes.items():
        boxes.append(Box(ids[path], (path, *describe(node))))
        for label, target in node.targets():
            edges.append(Edge(ids[path], ids[target] if target is not None else "done", label))
    if journey.on_exit:
        boxes.append(Box("on_exit", ("on exit",), terminal=True))
        edges.append(Edge("on_exit", ids[journey.on_exit[0]]))
    boxes.append(Box("done", ("end",), terminal=True))
    return boxes, edges


# ---------------------------------------------------------------------------------- Mermaid

# Mermaid decodes `#name;` / `#123;` entities inside quoted labels; `#` itself goes first so the
# entities added after it stay intact.
_MERMAID_ESCAPES = (("#", "#35;"), ('"', "#quot;"), ("<", "#lt;"), (">", "#gt;"), ("|", "#124;"),
                    ("`", "#96;"), ("\n", " "), ("\r", " "))


def _mermaid_text(text: str) -> str:
    for raw, escaped in _MERMAID_ESCAPES:
        text = text.replace(raw, escaped)
    return text


def render_mermaid(journey: CompiledJourney) -> str:
    boxes, edges = layout(journey)
    out = ["flowchart TD"]
    for b in boxes:
        label = "<br/>".join(_mermaid_text(line) for line in b.lines)
        out.append(f'    {b.id}(["{label}"])' if b.terminal else f'    {b.id}["{label}"]')
    for e in edges:
        if e.label:
            out.append(f'    {e.source} -->|"{_mermaid_text(e.label)}"| {e.target}')
        else:
            out.append(f"    {e.source} --> {e.target}")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------- Graphviz


def _dot_string(text: str) -> str:
    """A DOT quoted string. Backslashes are doubled so `\\n`, `\\l`, `\\N` in user text stay literal."""
    text = text.replace("\\", "\\\\").replace('"', '\\"').replace("\r", " ").replace("\n", " ")
    return f'"{text}"'


def render_dot(journey: CompiledJourney) -> str:
    boxes, edges = layout(journey)
    out = [
        f"digraph {_dot_string(journey.slug)} {{",
        "    rankdir=TB;",
        '    node [shape=box, style="rounded,filled", fillcolor="#ffffff", fontname="Helvetica"];',
        '    edge [fontname="Helvetica"];',
    ]
    for b in boxes:
        # `\n` is DOT's centred line break: the lines are escaped first, then joined.
        label = '"' + "\\n".join(_dot_string(line)[1:-1] for line in b.lines) + '"'
        shape = ', shape=oval, fillcolor="#eeeeee"' if b.terminal else ""
        out.append(f"    {b.id} [label={label}{shape}];")
    for e in edges:
        attrs = f" [label={_dot_string(e.label)}]" if e.label else ""
        out.append(f"    {e.source} -> {e.target}{attrs};")
    out.append("}")
    return "\n".join(out) + "\n"
