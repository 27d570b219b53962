"""A compiled journey as an inline SVG diagram, with notes (counts) on its boxes: the third renderer
beside `graph_render`'s Mermaid and DOT, drawn from the same boxes and edges (`graph_render.layout`).

The dry-run's HTML report draws each journey with it (the counts of the run), `journeys graph
--format html` without notes, and the daemon's console with live counts. It depends only on the
compiled graph and the notes it is given, so the language package holds it and both the dry-run
and the daemon may import it (neither may import the other).

Layout, in Python: a layered top-down DAG (longest-path layers, long edges routed through
placeholder points, a few barycenter sweeps to order each layer), text widths estimated for a
monospace font. Every piece of text goes through `html.escape`; element ids are made from `uid`
(the caller's, never user text). The output depends only on its inputs, never on a dictionary's
order: the same journey and notes give the same bytes.

Notes: `notes[key]` are lines drawn in a box below its description (class `count`), keyed by the
step's path, or `entry`, `done` (the end box) and `on_exit` for the rounded boxes; `arm_notes`
are appended to a split's arm edges, keyed `<split path>/<arm slug>` (or `/control`). `CSS` is the
stylesheet the diagram expects on its page.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape
from typing import Any, Iterable, Mapping, Sequence

from .graph import (AudienceNode, BranchNode, CompiledJourney, ExitNode, SendNode, SplitNode, WaitForNode, WaitNode,
                    WaitUntilNode, WebhookNode, format_percent)
from .graph_render import layout


def _e(text: Any) -> str:
    return escape(str(text), quote=True)


def _f(x: float) -> str:
    """An SVG coordinate: at most one decimal, no trailing zeros (deterministic and short)."""
    text = f"{x:.1f}"
    return text[:-2] if text.endswith(".0") else text


# ---------------------------------------------------------------------------------- layout

FONT = 12  # px, monospace in the diagram
CHAR = 7.3  # px per character at FONT: a little wider than DejaVu Sans Mono's 0.602 em
LINE = 16  # px per text line
PAD_X, PAD_Y = 10, 8
WRAP = 46  # characters per line in a box
GAP_X = 28  # between boxes of a layer
GAP_Y = 60  # between layers: room for the edge labels
DUMMY_W = 14  # the width a long edge takes where it crosses a layer
MARGIN = 16


@dataclass
class _Item:
    id: str
    layer: int
    width: float
    height: float
    lines: list[tuple[str, str]] = field(default_factory=list)  # (css class, text)
    kind: str = "step"  # entry, end, on_exit, step kinds; "dummy" for a long edge's point
    title: str = ""
    x: float = 0.0  # left
    y: float = 0.0  # top

    @property
    def cx(self) -> float:
        return self.x + self.width / 2


@dataclass
class _Route:
    source: str
    target: str
    label: str
    points: list[str]  # item ids from source to target, dummies between


def _wrap(text: str, width: int = WRAP) -> list[str]:
    """Word-wrap at spaces; a word longer than a line is cut."""
    out: list[str] = []
    line = ""
    for word in text.split(" "):
        while len(word) > width:
            if line:
                out.append(line)
                line = ""
            out.append(word[:width])
            word = word[width:]
        candidate = f"{line} {word}" if line else word
        if len(candidate) > width:
            out.append(line)
            line = word
        else:
            line = candidate
    if line or not out:
        out.append(line)
    return out


def _layers(ids: Sequence[str], edges: Sequence[tuple[str, str]]) -> dict[str, int]:
    """Longest-path layers from the roots; edges that close a cycle are ignored; `done` last."""
    succ: dict[str, list[str]] = {i: [] for i in ids}
    indeg = {i: 0 for i in ids}
    for s, t in edges:
        succ[s].append(t)
    # drop back edges (a DFS from every root in order), so what is left is a DAG
    state: dict[str, int] = {}
    forward: list[tuple[str, str]] = []

    def visit(start: str) -> None:
        stack = [(start, iter(succ[start]))]
        state[start] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[node] = 2
                stack.pop()
                continue
            if state.get(nxt) == 1:
                continue  # a back edge
            forward.append((node, nxt))
            if nxt not in state:
                state[nxt] = 1
                stack.append((nxt, iter(succ[nxt])))

    for i in ids:
        if i not in state:
            visit(i)
    forward = list(dict.fromkeys(forward))
    fsucc: dict[str, list[str]] = {i: [] for i in ids}
    for s, t in forward:
        fsucc[s].append(t)
        indeg[t] += 1
    layer = {i: 0 for i in ids}
    ready = [i for i in ids if indeg[i] == 0]
    while ready:
        node = ready.pop(0)
        for t in fsucc[node]:
            layer[t] = max(layer[t], layer[node] + 1)
            indeg[t] -= 1
            if indeg[t] == 0:
                ready.append(t)
    if "done" in layer:
        layer["done"] = max([v for k, v in layer.items() if k != "done"] + [-1]) + 1
    return layer


def _place(items: dict[str, _Item], routes: list[_Route], order: Sequence[str]) -> tuple[float, float]:
    """Order each layer (barycenters), then x by the neighbours' centres, y by layer. → (width, height)."""
    depth = max((it.layer for it in items.values()), default=0) + 1
    rows: list[list[str]] = [[] for _ in range(depth)]
    rank = {i: n for n, i in enumerate(order)}
    for i in sorted(items, key=lambda k: rank.get(k, len(rank))):
        rows[items[i].layer].append(i)
    up: dict[str, list[str]] = {i: [] for i in items}
    down: dict[str, list[str]] = {i: [] for i in items}
    for r in routes:
        for a, b in zip(r.points, r.points[1:]):
            down[a].append(b)
            up[b].append(a)

    def sweep(rows_: list[list[str]], neighbours: dict[str, list[str]], rng: Iterable[int]) -> None:
        for li in rng:
            pos = {i: n for row in rows_ for n, i in enumerate(row)}
            def key(i: str) -> tuple[float, int]:
                ns = neighbours[i]
                return (sum(pos[n] for n in ns) / len(ns) if ns else pos[i], pos[i])
            rows_[li] = sorted(rows_[li], key=key)

    for _ in range(2):
        sweep(rows, up, range(1, depth))
        sweep(rows, down, range(depth - 2, -1, -1))
    sweep(rows, up, range(1, depth))

    # x: pack each layer, then pull every item towards its neighbours' centres, keeping the order
    for row in rows:
        x = 0.0
        for i in row:
            items[i].x = x
            x += items[i].width + GAP_X

    def align(neighbours: dict[str, list[str]], rng: Iterable[int]) -> None:
        for li in rng:
            row = rows[li]
            want = []
            for i in row:
                ns = neighbours[i]
                c = sum(items[n].cx for n in ns) / len(ns) if ns else items[i].cx
                want.append(c - items[i].width / 2)
            # left to right: as wanted, but never overlapping the previous item
            left = []
            edge = -math.inf
            for i, w in zip(row, want):
                x = max(w, edge)
                left.append(x)
                edge = x + items[i].width + GAP_X
            # right to left: as wanted, but never overlapping the next item
            right = []
            edge = math.inf
            for i, w in zip(reversed(row), reversed(want)):
                x = min(w, edge - items[i].width)
                right.append(x)
                edge = x - GAP_X
            right.reverse()
            # the average of the two passes keeps the order and no overlap
            for i, a, b in zip(row, left, right):
                items[i].x = (a + b) / 2

    for _ in range(3):
        align(up, range(1, depth))
        align(down, range(depth - 2, -1, -1))
    align(up, range(1, depth))

    heights = [max((items[i].height for i in row if items[i].kind != "dummy"), default=0.0) for row in rows]
    y = float(MARGIN)
    tops = []
    for h in heights:
        tops.append(y)
        y += h + GAP_Y
    for li, row in enumerate(rows):
        for i in row:
            it = items[i]
            if it.kind == "dummy":
                it.y, it.height = tops[li], heights[li]
            else:
                it.y = tops[li] + (heights[li] - it.height) / 2
    min_x = min((it.x for it in items.values()), default=0.0)
    for it in items.values():
        it.x = round(it.x - min_x + MARGIN, 1)
        it.y = round(it.y, 1)
    width = max((it.x + it.width for it in items.values()), default=0.0) + MARGIN
    height = y - GAP_Y + MARGIN
    return width, height


# ---------------------------------------------------------------------------------- the diagram

_STEP_KIND = {SendNode: "send", AudienceNode: "audience", WebhookNode: "webhook", BranchNode: "branch",
              SplitNode: "split", WaitForNode: "wait", WaitNode: "wait", WaitUntilNode: "wait", ExitNode: "exit"}


def render_svg(journey: CompiledJourney, notes: Mapping[str, Sequence[str]] | None = None, uid: str = "d",
               arm_notes: Mapping[str, str] | None = None) -> str:
    """The journey's steps as an inline SVG, each box with its `notes` lines and each split arm's
    edge with its `arm_notes` text (see the module's docstring); `uid` prefixes the element ids
    (several diagrams on one page need different ones)."""
    boxes, edges = layout(journey)
    notes = notes or {}
    items: dict[str, _Item] = {}
    order: list[str] = []
    path_of: dict[str, str] = {}
    for b in boxes:
        lines: list[tuple[str, str]] = []
        title = " / ".join(b.lines)
        if b.terminal:
            key = b.id
            kind = {"entry": "entry", "done": "end", "on_exit": "on_exit"}.get(b.id, "end")
            lines += [("name" if i == 0 and kind == "entry" else "desc", part)
                      for i, line in enumerate(b.lines) for part in _wrap(line)]
        else:
            key = path = b.lines[0]
            path_of[b.id] = path
            kind = _STEP_KIND.get(type(journey.nodes[path]), "step")
            lines += [("path", part) for part in _wrap(path)]
            lines += [("desc", part) for line in b.lines[1:] for part in _wrap(line)]
        lines += [("count", text) for text in notes.get(key, ())]
        width = max(len(text) for _, text in lines) * CHAR + 2 * PAD_X
        if b.terminal:
            width += 2 * PAD_X
        items[b.id] = _Item(b.id, 0, round(width, 1), len(lines) * LINE + 2 * PAD_Y, lines, kind, title)
        order.append(b.id)

    # edge labels, with the split arms' notes
    routes: list[_Route] = []
    for e in edges:
        label = e.label
        source_path = path_of.get(e.source)
        if arm_notes is not None and source_path is not None and isinstance(journey.nodes[source_path], SplitNode):
            split = journey.nodes[source_path]
            arm = next((a.slug for a in split.arms if label == _arm_label(a)), None)
            if arm is None and label.startswith("control "):
                arm = "control"
            if arm is not None and f"{source_path}/{arm}" in arm_notes:
                label += f" · {arm_notes[f'{source_path}/{arm}']}"
        routes.append(_Route(e.source, e.target, label, [e.source, e.target]))

    layer = _layers(order, [(r.source, r.target) for r in routes])
    for i, it in items.items():
        it.layer = layer[i]
    # long edges get a placeholder point in every layer they cross; an edge up (a cycle) none
    dummies = 0
    for r in routes:
        a, b = layer[r.source], layer[r.target]
        if b - a > 1:
            points = [r.source]
            for li in range(a + 1, b):
                dummies += 1
                d = f"_d{dummies}"
                items[d] = _Item(d, li, DUMMY_W, 0, kind="dummy")
                order.append(d)
                points.append(d)
            r.points = points + [r.target]
    width, height = _place(items, routes, order)

    # ports: a box's outgoing edges leave its bottom spread out, incoming ones arrive spread on top
    outs: dict[str, list[tuple[float, int]]] = {}
    ins: dict[str, list[tuple[float, int]]] = {}
    for n, r in enumerate(routes):
        outs.setdefault(r.points[0], []).append((items[r.points[1]].cx, n))
        ins.setdefault(r.points[-1], []).append((items[r.points[-2]].cx, n))
    out_x: dict[int, float] = {}
    in_x: dict[int, float] = {}
    for ports, into in ((outs, out_x), (ins, in_x)):
        for box, lst in ports.items():
            it = items[box]
            lst.sort()
            for k, (_, n) in enumerate(lst):
                into[n] = it.x + it.width * (k + 1) / (len(lst) + 1)

    svg: list[str] = [
        f'<svg class="diagram" xmlns="http://www.w3.org/2000/svg" width="{_f(width)}" height="{_f(height)}" '
        f'viewBox="0 0 {_f(width)} {_f(height)}" role="img" aria-label="{_e(journey.name)}: steps">',
        f'<defs><marker id="{uid}-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#6b7280"/></marker></defs>',
    ]
    labels: dict[str, list[list[Any]]] = {}  # source → [centre x, centre y, width, text]
    for n, r in enumerate(routes):
        src, dst = items[r.points[0]], items[r.points[-1]]
        pts = [(out_x[n], src.y + src.height)]
        for d in r.points[1:-1]:
            it = items[d]
            pts += [(it.cx, it.y), (it.cx, it.y + it.height)]
        pts.append((in_x[n], dst.y))
        if dst.y <= src.y:  # an edge back up: a plain line
            d = f"M{_f(pts[0][0])},{_f(pts[0][1])} L{_f(pts[-1][0])},{_f(pts[-1][1])}"
        else:
            d = f"M{_f(pts[0][0])},{_f(pts[0][1])}"
            for k in range(0, len(pts) - 1):
                (x1, y1), (x2, y2) = pts[k], pts[k + 1]
                if k % 2 == 1:  # through a layer, straight down
                    d += f" L{_f(x2)},{_f(y2)}"
                else:
                    m = (y1 + y2) / 2
                    d += f" C{_f(x1)},{_f(m)} {_f(x2)},{_f(m)} {_f(x2)},{_f(y2)}"
        svg.append(f'<path class="edge" d="{d}" marker-end="url(#{uid}-arrow)"/>')
        if r.label:  # halfway along the edge's first stretch
            (x1, y1), (x2, y2) = pts[0], pts[1]
            w = len(r.label) * CHAR * 11 / FONT + 8
            labels.setdefault(r.points[0], []).append([(x1 + x2) / 2, (y1 + y2) / 2, w, r.label])
    for i in order:
        it = items[i]
        if it.kind == "dummy":
            continue
        rx = min(it.height / 2, 18) if it.kind in ("entry", "end", "on_exit") else 6
        svg.append(f'<g class="box k-{it.kind}"><title>{_e(it.title)}</title>'
                   f'<rect x="{_f(it.x)}" y="{_f(it.y)}" width="{_f(it.width)}" height="{_f(it.height)}" rx="{_f(rx)}"/>')
        cx = it.cx
        for k, (cls, text) in enumerate(it.lines):
            ty = it.y + PAD_Y + LINE * k + 12
            svg.append(f'<text class="{cls}" x="{_f(cx)}" y="{_f(ty)}">{_e(text)}</text>')
        svg.append("</g>")
    for group in labels.values():  # one source's labels side by side, never overlapping
        group.sort(key=lambda g: g[0])
        wanted = [g[0] for g in group]
        for a, b in zip(group, group[1:]):
            b[0] = max(b[0], a[0] + (a[2] + b[2]) / 2 + 4)
        shift = sum(w - g[0] for w, g in zip(wanted, group)) / len(group)
        for lx, ly, w, text in group:
            lx = max(lx + shift, w / 2 + 2)
            svg.append(f'<g class="elabel"><rect x="{_f(lx - w / 2)}" y="{_f(ly - 9)}" width="{_f(w)}" '
                       f'height="18" rx="4"/><text x="{_f(lx)}" y="{_f(ly + 4)}">{_e(text)}</text></g>')
    svg.append("</svg>")
    return "\n".join(svg)


def _arm_label(arm: Any) -> str:
    """The label `SplitNode.targets` gives an arm's edge."""
    return f"{arm.name} {format_percent(arm.percent)}"


# the diagram's stylesheet (the page defines --fg)
CSS = """
svg.diagram text { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 12px; text-anchor: middle; fill: var(--fg); }
svg.diagram text.path { font-weight: 700; fill: #374151; }
svg.diagram text.name { font-weight: 700; }
svg.diagram text.count { fill: #1d4ed8; font-weight: 700; }
svg.diagram .box rect { fill: #ffffff; stroke: #9ca3af; stroke-width: 1.2; }
svg.diagram .k-send rect { fill: #eff6ff; stroke: #3b82f6; }
svg.diagram .k-audience rect { fill: #f0fdf4; stroke: #22c55e; }
svg.diagram .k-webhook rect { fill: #faf5ff; stroke: #a855f7; }
svg.diagram .k-branch rect, svg.diagram .k-split rect { fill: #fffbeb; stroke: #f59e0b; }
svg.diagram .k-wait rect { fill: #f9fafb; stroke: #9ca3af; }
svg.diagram .k-exit rect { fill: #fef2f2; stroke: #ef4444; }
svg.diagram .k-entry rect, svg.diagram .k-end rect, svg.diagram .k-on_exit rect { fill: #f3f4f6; stroke: #6b7280; }
svg.diagram .edge { fill: none; stroke: #6b7280; stroke-width: 1.4; }
svg.diagram .elabel rect { fill: #ffffff; stroke: #d1d5db; }
svg.diagram .elabel text { font-size: 11px; fill: #374151; }
"""
