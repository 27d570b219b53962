"""The dry-run's report (and a journey's graph) as one self-contained HTML page.

`render_report(report_json, program)` draws what `journeys simulate --html FILE` writes: the run's
parameters and skipped lines, an overview of every journey, then per journey its steps as a
diagram with the counts on them, an entry-to-goal funnel, its delivery facts (sent, audience
updates, suppressed by reason, capped, deferred), and its splits' arms against control. An audience
change that passed is an audience update ("updated"), never a send. Sends per day per kind, and
audience updates per day, are each a
stacked bar chart. `render_journey(journey)` draws one journey's diagram without counts
(`journeys graph JOURNEY --format html`).

The page works offline and alone: inline CSS, inline SVG, no script, no fonts or images from
anywhere. The diagram is `journeys.graph_svg`'s (laid out in Python from the boxes and edges of
`journeys.graph_render.layout`, so it agrees with the Mermaid and DOT renderings, and the same the
daemon's console draws with live counts); this module turns the run's counts into its notes.

Every piece of user text (journey, step, template, goal names, conditions, file names) goes
through `html.escape`; element ids are generated (`j1`, `j2`...), never taken from user text.
The output depends only on its inputs, and on no dictionary's order: the same report gives the
same bytes, whether it comes from memory or from `--json`'s sorted file.
"""

from __future__ import annotations

import math
from html import escape
from typing import Any, Iterable, Mapping, Sequence

from journeys.graph import AudienceNode, CompiledJourney, SendNode, SplitNode, WebhookNode
from journeys.graph_svg import CSS as GRAPH_CSS
from journeys.graph_svg import render_svg

# ---------------------------------------------------------------------------------- formatting


def _e(text: Any) -> str:
    return escape(str(text), quote=True)


def _n(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else ("—" if value is None else _e(value))


def _pct(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "—"
    text = f"{abs(value) * 100:.1f}%"
    if not signed:
        return text
    return ("+" if value > 0 else "−" if value < 0 else "±") + text


def _share(part: int, whole: int) -> str:
    return f"{part / whole * 100:.1f}%" if whole else "—"


def _f(x: float) -> str:
    """An SVG coordinate: at most one decimal, no trailing zeros (deterministic and short)."""
    text = f"{x:.1f}"
    return text[:-2] if text.endswith(".0") else text


def _by_count(counter: Mapping[str, int]) -> list[tuple[str, int]]:
    return sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))


# Known kinds get fixed colours; any other kind one of the spare ones, by its sorted position.
_KIND_COLOURS = {"email": "#4e79a7", "push": "#f28e2b", "sms": "#e15759", "webhook": "#b07aa1",
                 "audience_add": "#59a14f", "audience_remove": "#9c755f", "ads": "#76b7b2"}
_SPARE_COLOURS = ("#edc948", "#ff9da7", "#bab0ac", "#86bcb6", "#d37295", "#a0cbe8")


def _colours(kinds: Iterable[str]) -> dict[str, str]:
    out, spare = {}, 0
    for kind in sorted(set(kinds)):
        if kind in _KIND_COLOURS:
            out[kind] = _KIND_COLOURS[kind]
        else:
            out[kind] = _SPARE_COLOURS[spare % len(_SPARE_COLOURS)]
            spare += 1
    return out


# ---------------------------------------------------------------------------------- the diagram

def _passed(key: str) -> str:
    """What the report calls an action of this `templates` key that passed: an audience change is
    `updated` (an audience update), anything else `sent`."""
    return "updated" if key.startswith("audience_") else "sent"


def _action_key(node: Any) -> str | None:
    """The report's `templates` key of what a step sends ("kind target"), None for other steps."""
    if isinstance(node, SendNode):
        return f"{node.channel} {node.template}"
    if isinstance(node, AudienceNode):
        return f"audience_{node.op} {node.audience}"
    if isinstance(node, WebhookNode):
        return f"webhook {node.name}"
    return None


def _diagram(journey: CompiledJourney, counts: Mapping[str, Any] | None, uid: str = "d") -> str:
    """The journey's steps as an inline SVG (journeys.graph_svg); with `counts` (the report's
    journey), the run's counts on them."""
    if counts is None:
        return render_svg(journey, None, uid)
    reached: Mapping[str, int] = counts.get("reached", {})
    templates: Mapping[str, int] = counts.get("templates", {})
    keys: dict[str, list[str]] = {}  # templates key → step paths that send it
    for path, node in journey.nodes.items():
        key = _action_key(node)
        if key is not None:
            keys.setdefault(key, []).append(path)
    notes: dict[str, list[str]] = {"entry": [f"entered {counts.get('entered', 0):,}"],
                                   "done": [f"completed {counts.get('completed', 0):,}"]}
    if journey.on_exit:
        notes["on_exit"] = [f"ran {reached.get(journey.on_exit[0], 0):,}"]
    arms: dict[str, str] = {}
    for path, node in journey.nodes.items():
        lines = notes[path] = []
        parts = [f"reached {reached.get(path, 0):,}"]
        key = _action_key(node)
        by_step = (counts.get("actions_by_step") or {}).get(path)
        passed = _passed(key or "")
        if by_step is not None or (key is not None and "actions_by_step" in counts):
            by_step = by_step or {}
            parts.append(f"{passed} {by_step.get(passed, 0):,}")
            lines.append(" · ".join(parts))
            held = [f"{what} {n:,}" for what, n in sorted(by_step.items()) if what != passed]
            if held:
                lines.append(" · ".join(held))
            parts = []
        elif key is not None:  # a report from before per-step counts: infer from templates
            n = templates.get(key, 0)
            shared = len(keys.get(key, ()))
            parts.append(f"{passed} {n:,}" + (f" (all {shared} steps)" if shared > 1 else ""))
        if parts:
            lines.append(" · ".join(parts))
        if isinstance(node, SplitNode):  # each arm's edge: its users
            for arm in [a.slug for a in node.arms] + ["control"]:
                arms[f"{path}/{arm}"] = f"{reached.get(f'{path}/{arm}', 0):,}"
    return render_svg(journey, notes, uid, arms)


# ---------------------------------------------------------------------------------- page parts

CSS = """
:root { --fg: #1f2937; --muted: #6b7280; --line: #d1d5db; --bg: #ffffff; --panel: #f9fafb; --accent: #2563eb; }
* { box-sizing: border-box; }
body { margin: 0; padding: 24px 32px 48px; font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; color: var(--fg); background: var(--bg); }
h1 { font-size: 22px; margin: 0 0 4px; }
h2 { font-size: 18px; margin: 36px 0 8px; padding-top: 12px; border-top: 2px solid var(--line); }
h3 { font-size: 14px; margin: 18px 0 6px; color: var(--muted); text-transform: uppercase; letter-spacing: .04em; }
code, .mono { font-family: ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; font-size: 12.5px; }
.sub { color: var(--muted); margin: 0 0 16px; }
table { border-collapse: collapse; margin: 4px 0 8px; }
th, td { text-align: left; padding: 4px 10px; border-bottom: 1px solid #e5e7eb; vertical-align: top; }
th { font-weight: 600; color: var(--muted); font-size: 12.5px; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.params td:first-child { color: var(--muted); white-space: nowrap; }
.params code { overflow-wrap: anywhere; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 8px 0 4px; }
.card { background: var(--panel); border: 1px solid #e5e7eb; border-radius: 8px; padding: 8px 14px; min-width: 110px; }
.card b { display: block; font-size: 20px; font-variant-numeric: tabular-nums; }
.card span { color: var(--muted); font-size: 12px; }
.scroll { overflow-x: auto; border: 1px solid #e5e7eb; border-radius: 8px; background: #fcfcfd; padding: 4px; }
.cols { display: flex; gap: 12px 40px; align-items: flex-start; }
.cols > div { flex: 0 1 auto; min-width: 0; }
@media (max-width: 900px) { .cols { flex-wrap: wrap; } }
.funnel { max-width: 760px; }
.funnel td { border: 0; padding: 3px 8px; }
.funnel td.num, .funnel th { white-space: nowrap; }
.funnel .label { max-width: 360px; }
.bar { position: relative; height: 18px; width: 260px; background: #eef2f7; border-radius: 3px; }
.bar i, .bar s { position: absolute; left: 0; top: 0; bottom: 0; border-radius: 3px; }
.bar i { background: #93b4e8; }
.bar s { background: var(--accent); }
.bar.goal i { background: #16a34a; }
.bar.end i { background: #9ca3af; }
.legend { display: flex; flex-wrap: wrap; gap: 14px; margin: 4px 0; font-size: 12.5px; }
.legend span::before { content: ""; display: inline-block; width: 11px; height: 11px; border-radius: 2px; margin-right: 5px; vertical-align: -1px; background: var(--c); }
.up { color: #15803d; } .down { color: #b91c1c; }
.none { color: var(--muted); }
details { margin: 6px 0; } summary { cursor: pointer; color: var(--accent); }
pre { background: var(--panel); padding: 8px; border-radius: 6px; overflow-x: auto; max-height: 320px; }""" + GRAPH_CSS + """svg.chart text { font-size: 11px; fill: var(--muted); }
svg.chart .grid { stroke: #e5e7eb; }
svg.chart .axis { stroke: #9ca3af; }
@media print { .scroll { overflow: visible; } }
"""


def _page(title: str, body: Iterable[str]) -> str:
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title>",
        f"<style>{CSS}</style>",
        "</head>",
        "<body>",
        *body,
        "</body>",
        "</html>",
        "",
    ])


def _table(head: Sequence[str], rows: Iterable[Sequence[str]], numeric: Sequence[int] = (), cls: str = "") -> str:
    """Cells are HTML already (escape user text before)."""
    def cell(tag: str, k: int, text: str) -> str:
        return f'<{tag} class="num">{text}</{tag}>' if k in numeric else f"<{tag}>{text}</{tag}>"
    out = [f'<table class="{cls}">' if cls else "<table>", "<thead><tr>"]
    out += [cell("th", k, h) for k, h in enumerate(head)]
    out.append("</tr></thead><tbody>")
    for row in rows:
        out.append("<tr>" + "".join(cell("td", k, c) for k, c in enumerate(row)) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _parameters(report: Mapping[str, Any]) -> list[str]:
    p = report.get("parameters") or {}
    rows = []
    for key, label in (("project", "project"), ("events", "events"), ("map", "CSV columns (--map)"),
                       ("from", "from"), ("until", "until"), ("journeys", "journeys (--journey)"),
                       ("messages", "messages read"), ("skipped", "lines skipped")):
        if key not in p:
            continue
        value = p[key]
        if isinstance(value, list):
            text = "<br>".join(f"<code>{_e(v)}</code>" for v in value) if value else '<span class="none">all</span>'
        elif value is None:
            text = '<span class="none">—</span>'
        elif isinstance(value, int):
            text = _n(value)
        else:
            text = f"<code>{_e(value)}</code>"
        rows.append((_e(label), text))
    for key in sorted(k for k in p if k not in {"project", "events", "map", "from", "until", "journeys", "messages",
                                                "skipped", "skipped_lines"}):
        rows.append((_e(key), f"<code>{_e(p[key])}</code>"))
    out = ["<h3>Run</h3>", _table(("parameter", "value"), rows, cls="params")]
    skipped = p.get("skipped_lines") or []
    if skipped:
        more = p.get("skipped", len(skipped)) - len(skipped)
        out.append(f"<details><summary>{len(skipped):,} skipped line{'s' if len(skipped) != 1 else ''}"
                   f"{f' (and {more:,} more not listed)' if more > 0 else ''}</summary><pre>"
                   + "\n".join(_e(s) for s in skipped) + "</pre></details>")
    return out


def _inputs(report: Mapping[str, Any]) -> list[str]:
    inputs = report.get("inputs") or {}
    cards = [("users", report.get("users", 0))] + [(k, v) for k, v in sorted(inputs.items())]
    return ["<h3>Inputs</h3>", '<div class="cards">' + "".join(
        f'<div class="card"><b>{_n(v)}</b><span>{_e(k)}</span></div>' for k, v in cards) + "</div>"]


def _total(counter: Mapping[str, int] | None) -> int:
    return sum((counter or {}).values())


def _overview(names: Sequence[str], journeys: Mapping[str, Any]) -> list[str]:
    rows = []
    for n, name in enumerate(names, 1):
        j = journeys[name]
        conv = ", ".join(f"{_e(g)} {c:,}" for g, c in sorted((j.get("conversions") or {}).items())) or '<span class="none">—</span>'
        rows.append((f'<a href="#j{n}">{_e(name)}</a>', _n(j.get("entered", 0)), _n(j.get("still_in", 0)),
                     _n(j.get("completed", 0)), _n(_total(j.get("exited"))), _n(_total(j.get("sent"))),
                     _n(_total(j.get("audience_updates"))), _n(_total(j.get("suppressed"))),
                     _n(_total(j.get("failed"))), conv))
    return ["<h3>Journeys</h3>",
            _table(("journey", "entered", "still in", "completed", "exited", "sent", "audience updates", "suppressed",
                    "failed", "conversions"), rows, numeric=(1, 2, 3, 4, 5, 6, 7, 8))]


def _bar(value: int, scale: int, inner: int | None = None, cls: str = "") -> str:
    w = lambda v: f"{min(v / scale, 1) * 100:.1f}%" if scale else "0%"  # noqa: E731
    inside = f'<i style="width:{w(value)}"></i>'
    if inner is not None:
        inside += f'<s style="width:{w(inner)}"></s>'
    return f'<div class="bar{(" " + cls) if cls else ""}">{inside}</div>'


def _funnel(j: Mapping[str, Any], journey: CompiledJourney | None) -> str:
    entered = j.get("entered", 0)
    reached = j.get("reached") or {}
    templates = j.get("templates") or {}
    steps: list[tuple[str, int, int, str]] = []  # (label html, reached, sent or updated, which of the two)
    if journey is not None:
        on_exit = set()
        if journey.on_exit:
            on_exit = {p for p in journey.nodes if p.startswith(journey.on_exit[0].rsplit("/", 1)[0] + "/")}
        for path, node in journey.nodes.items():
            key = _action_key(node)
            if key is None or path in on_exit:
                continue
            by_step = (j.get("actions_by_step") or {}).get(path)
            passed = _passed(key)
            n = by_step.get(passed, 0) if by_step is not None else templates.get(key, 0)
            steps.append((f"<code>{_e(path)}</code><br>{_e(node.describe())}", reached.get(path, 0), n, passed))
    else:
        for key, n in sorted(templates.items()):
            steps.append((f"{_passed(key)} <code>{_e(key)}</code>", n, n, _passed(key)))
    goals = j.get("conversions") or {}
    scale = max([entered, j.get("completed", 0)] + [r for _, r, _, _ in steps] + list(goals.values()) + [1])
    rows = [("entered", _bar(entered, scale), _n(entered), "")]
    for label, r, s, passed in steps:
        rows.append((label, _bar(r, scale, s), f"{r:,} reached<br>{s:,} {passed}", _share(s, entered)))
    rows.append(("completed", _bar(j.get("completed", 0), scale, cls="end"), _n(j.get("completed", 0)),
                 _share(j.get("completed", 0), entered)))
    for goal in (list(goals) if journey is None else [g.name for g in journey.goals if g.name in goals]
                 + sorted(g for g in goals if g not in {x.name for x in journey.goals})):
        c = goals[goal]
        rows.append((f"converted: {_e(goal)}", _bar(c, scale, cls="goal"), _n(c), _share(c, entered)))
    body = "".join(f'<tr><td class="label">{a}</td><td>{b}</td><td class="num">{c}</td>'
                   f'<td class="num">{d}</td></tr>' for a, b, c, d in rows)
    return ('<table class="funnel"><thead><tr><th></th><th></th><th class="num">users</th>'
            '<th class="num">of entered</th></tr></thead><tbody>' + body + "</tbody></table>")


def _facts(j: Mapping[str, Any]) -> str:
    rows: list[tuple[str, str]] = []

    def counter(title: str, c: Mapping[str, int] | None, code: bool = False) -> None:
        if not c:
            rows.append((title, '<span class="none">none</span>'))
            return
        items = [f"{f'<code>{_e(k)}</code>' if code else _e(k)}: <b>{v:,}</b>" for k, v in _by_count(c)]
        rows.append((title, "<br>".join(items)))

    rows.append(("still in", f"<b>{_n(j.get('still_in', 0))}</b>"))
    counter("exited", j.get("exited"))
    counter("sent", j.get("sent"))
    counter("audience updates", j.get("audience_updates"))
    counter("templates", j.get("templates"), code=True)
    counter("suppressed", j.get("suppressed"))
    counter("failed (would not render or reach the user)", j.get("failed"))
    counter("parked (the engine could not run a step)", j.get("parked"))
    counter("capped by rule", j.get("capped_by_rule"), code=True)
    counter("deferred by quiet hours", j.get("deferred_by_quiet_hours"), code=True)
    return _table(("", ""), rows, cls="params")


def _splits(j: Mapping[str, Any], journey: CompiledJourney | None) -> list[str]:
    splits = j.get("splits") or {}
    if not splits:
        return []
    out = ["<h3>Splits</h3>"]
    for split in sorted(splits):
        arms = splits[split]
        node = journey.nodes.get(split) if journey is not None else None
        shares: dict[str, str] = {}
        names: dict[str, str] = {}
        arm_order: list[str] = []
        if isinstance(node, SplitNode):
            for a in node.arms:
                shares[a.slug], names[a.slug] = f"{a.percent:g}%", a.name
                arm_order.append(a.slug)
            if node.control_percent is not None:
                shares["control"] = f"{node.control_percent:g}%"
        arm_order = [a for a in arm_order if a in arms] + sorted(a for a in arms if a not in arm_order and a != "control")
        if "control" in arms:
            arm_order.append("control")
        goals = sorted({g for row in arms.values() for g in (row.get("conversions") or {})})
        if journey is not None:
            declared = [g.name for g in journey.goals if g.name in goals]
            goals = declared + [g for g in goals if g not in declared]
        head = ["arm", "share", "users"]
        for g in goals:
            head += [f"{_e(g)}: conversions", "rate", "", "uplift vs control"]
        max_rate = max([row.get("rate", {}).get(g) or 0 for row in arms.values() for g in goals] + [0])
        rows = []
        for arm in arm_order:
            row = arms[arm]
            cells = [f"<b>{_e(names.get(arm, arm))}</b>", _e(shares.get(arm, "")), _n(row.get("users", 0))]
            for g in goals:
                rate = (row.get("rate") or {}).get(g)
                uplift = (row.get("uplift") or {}).get(g)
                if arm == "control":
                    up = '<span class="none">baseline</span>'
                elif "uplift" not in row:
                    up = '<span class="none">no control group</span>'
                elif uplift is None:
                    up = '<span class="none">— (control has no conversions)</span>'
                else:
                    cls = "up" if uplift > 0 else "down" if uplift < 0 else ""
                    up = f'<span class="{cls}">{_pct(uplift, signed=True)}</span>'
                scale_pct = (rate or 0) / max_rate if max_rate else 0
                bar = (f'<div class="bar" style="width:160px"><i style="width:{scale_pct * 100:.1f}%'
                       f'{";background:#9ca3af" if arm == "control" else ""}"></i></div>')
                cells += [_n((row.get("conversions") or {}).get(g, 0)), _pct(rate), bar, up]
            rows.append(cells)
        numeric = [2] + [3 + 4 * k for k in range(len(goals))] + [4 + 4 * k for k in range(len(goals))] \
            + [6 + 4 * k for k in range(len(goals))]
        out.append(f"<p>split <code>{_e(split)}</code></p>")
        out.append(_table(head, rows, numeric=numeric))
    return out


def _nice(n: int) -> int:
    """The smallest 1, 2 or 5 × 10^k at or above n."""
    if n <= 1:
        return 1
    k = 10 ** (len(str(n)) - 1)
    for m in (1, 2, 5, 10):
        if m * k >= n:
            return m * k
    return 10 * k


def _per_day_chart(title: str, sends: Mapping[str, Mapping[str, int]], nothing: str) -> list[str]:
    """A stacked bar per day, a segment per kind (sends, or audience updates), with the numbers."""
    if not sends:
        return [f"<h2>{_e(title)}</h2>", f'<p class="none">{_e(nothing)}</p>']
    days = sorted(sends)
    kinds = sorted({k for v in sends.values() for k in v})
    colours = _colours(kinds)
    top = _nice(max(sum(v.values()) for v in sends.values()))
    bar_w = max(6, min(28, 900 // len(days) - 4))
    step = bar_w + 4
    left, chart_h, bottom = 48, 200, 36
    width = left + step * len(days) + 12
    height = 12 + chart_h + bottom
    svg = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(title.lower())} per kind">']
    for t in range(5):
        v = top * t // 4
        y = 12 + chart_h - chart_h * t / 4
        svg.append(f'<line class="grid" x1="{left}" y1="{_f(y)}" x2="{width - 8}" y2="{_f(y)}"/>')
        svg.append(f'<text x="{left - 6}" y="{_f(y + 4)}" text-anchor="end">{v:,}</text>')
    every = max(1, math.ceil(len(days) / 12))
    for n, day in enumerate(days):
        x = left + 4 + n * step
        y = 12 + chart_h
        for kind in kinds:
            v = sends[day].get(kind, 0)
            if not v:
                continue
            h = chart_h * v / top
            y -= h
            svg.append(f'<rect x="{x}" y="{_f(y)}" width="{bar_w}" height="{_f(h)}" fill="{colours[kind]}">'
                       f"<title>{_e(day)} {_e(kind)}: {v:,}</title></rect>")
        if n % every == 0:
            svg.append(f'<text x="{_f(x + bar_w / 2)}" y="{12 + chart_h + 16}" text-anchor="middle">'
                       f"{_e(day[5:] if len(day) == 10 else day)}</text>")
    svg.append(f'<line class="axis" x1="{left}" y1="{12 + chart_h}" x2="{width - 8}" y2="{12 + chart_h}"/>')
    svg.append(f'<text x="{left}" y="{height - 4}">{_e(days[0])} … {_e(days[-1])} (UTC days)</text>')
    svg.append("</svg>")
    legend = '<div class="legend">' + "".join(
        f'<span style="--c:{colours[k]}">{_e(k)} ({sum(v.get(k, 0) for v in sends.values()):,})</span>'
        for k in kinds) + "</div>"
    table = _table(["day"] + [_e(k) for k in kinds] + ["total"],
                   ([_e(d)] + [_n(sends[d].get(k, 0)) for k in kinds] + [_n(sum(sends[d].values()))] for d in days),
                   numeric=range(1, len(kinds) + 2))
    return [f"<h2>{_e(title)}</h2>", legend, '<div class="scroll">' + "\n".join(svg) + "</div>",
            f"<details><summary>the numbers</summary>{table}</details>"]


def _compiled(program: Any, name: str, version: str | None) -> CompiledJourney | None:
    if program is None:
        return None
    by_version = getattr(program, "journey", None)
    if callable(by_version) and version is not None:
        found = by_version(name, version)
        if found is not None:
            return found
    return (getattr(program, "journeys", None) or {}).get(name)


# ---------------------------------------------------------------------------------- entry points


def render_report(report_json: Mapping[str, Any], program: Any = None) -> str:
    """The report of `journeys simulate` (`Report.to_json(parameters)`) as one HTML page.

    `program`: the `engine.core.program.Program` (or a `CompiledProject`) that ran, for the diagrams,
    the order of the journeys and the splits' shares; None draws the counts without diagrams."""
    journeys: Mapping[str, Any] = report_json.get("journeys") or {}
    known = list((getattr(program, "journeys", None) or {}) if program is not None else [])
    names = [n for n in known if n in journeys] + sorted(n for n in journeys if n not in known)
    project = (report_json.get("parameters") or {}).get("project")
    title = f"Dry-run report: {project}" if project else "Dry-run report"
    body: list[str] = [f"<h1>{_e(title)}</h1>",
                       '<p class="sub">What <code>journeys simulate</code> would have done: every count is '
                       "from replaying the events through the engine on a virtual clock.</p>"]
    body += _inputs(report_json)
    body.append('<div class="cols"><div>' + "".join(_parameters(report_json)) + "</div><div>"
                + "".join(_overview(names, journeys)) + "</div></div>")
    body += _per_day_chart("Sends per day", report_json.get("sends_per_day") or {}, "Nothing was sent.")
    if report_json.get("audience_updates_per_day"):
        body += _per_day_chart("Audience updates per day", report_json["audience_updates_per_day"], "")
    for n, name in enumerate(names, 1):
        j = journeys[name]
        compiled = _compiled(program, name, j.get("version"))
        body.append(f'<section id="j{n}">')
        body.append(f"<h2>{_e(name)}</h2>")
        body.append(f'<p class="sub">version <code>{_e(j.get("version", ""))}</code>'
                    + (f" · {_e(compiled.entry.describe())}" if compiled is not None else "") + "</p>")
        body.append('<div class="cards">' + "".join(
            f'<div class="card"><b>{_n(v)}</b><span>{_e(k)}</span></div>' for k, v in (
                ("entered", j.get("entered", 0)), ("still in", j.get("still_in", 0)),
                ("completed", j.get("completed", 0)), ("exited", _total(j.get("exited"))),
                ("sent", _total(j.get("sent"))), ("audience updates", _total(j.get("audience_updates"))),
                ("suppressed", _total(j.get("suppressed"))), ("failed", _total(j.get("failed"))))) + "</div>")
        if compiled is not None:
            body.append("<h3>Steps</h3>")
            if compiled.version != j.get("version"):
                body.append(f'<p class="sub">drawn from version <code>{_e(compiled.version)}</code>; the counts are '
                            f'of version <code>{_e(j.get("version", ""))}</code></p>')
            body.append('<div class="scroll">' + _diagram(compiled, j, f"d{n}") + "</div>")
            others = sorted(p for p in (j.get("reached") or {}) if p not in compiled.nodes
                            and p.rpartition("/")[0] not in compiled.nodes)
            if others:
                body.append("<p>also reached: " + ", ".join(
                    f"<code>{_e(p)}</code> {j['reached'][p]:,}" for p in others) + "</p>")
        else:
            reached = j.get("reached") or {}
            if reached:
                body.append("<h3>Steps reached</h3>")
                body.append(_table(("step", "reached"), ((f"<code>{_e(p)}</code>", _n(v))
                                                          for p, v in sorted(reached.items())), numeric=(1,)))
        body.append('<div class="cols"><div><h3>Funnel</h3>' + _funnel(j, compiled) + "</div>"
                    "<div><h3>Delivery</h3>" + _facts(j) + "</div></div>")
        body += _splits(j, compiled)
        body.append("</section>")
    body += models_section(report_json.get("models") or [])
    return _page(title, body)


def render_journey(journey: CompiledJourney) -> str:
    """One journey's steps as an HTML page with its diagram, no counts (`journeys graph --format html`)."""
    body = [f"<h1>{_e(journey.name)}</h1>",
            f'<p class="sub">version <code>{_e(journey.version)}</code> · {_e(journey.entry.describe())}'
            + (f" · file <code>{_e(journey.file)}</code>" if journey.file else "") + "</p>"]
    if journey.goals:
        body.append("<p>goals: " + ", ".join(f"<b>{_e(g.name)}</b> (<code>{_e(g.match)}</code> within "
                                             f"{_e(_duration(g.seconds))})" for g in journey.goals) + "</p>")
    body.append('<div class="scroll">' + _diagram(journey, None) + "</div>")
    return _page(journey.name, body)


def _duration(seconds: int) -> str:
    from journeys.graph import format_duration
    return format_duration(seconds)


# ---------------------------------------------------------------------------------- the models' trainings
# (here rather than in models_report, which draws `journeys models` with this module's helpers: one way)


def _num(v: Any, digits: int = 3) -> str:
    if v is None:
        return "—"
    if isinstance(v, (bool, int)):
        return _n(v)
    if isinstance(v, float):
        return f"{v:.{digits}f}" if math.isfinite(v) else "—"
    return _e(v)


def models_section(trainings: Sequence[Mapping[str, Any]]) -> list[str]:
    """The "Models" section of the dry-run report: every training of the run (`ModelsTrained.to_json`)."""
    if not trainings:
        return []
    families = sorted({f for t in trainings for key in ("models", "problems")
                       for f in ((t.get("summary") or {}).get(key) or {})})
    rows = []
    for t in trainings:
        s = t.get("summary") or {}
        models = s.get("models") or {}
        cells = [_e(t.get("time")), f"<code>{_e(t.get('version'))}</code>", _n(s.get("users", 0))]
        for f in families:
            m = models.get(f)
            status = "—" if m is None else m.get("status")
            failed = f in (s.get("problems") or {})
            cells.append(f'<span class="{"up" if status == "ok" else "down" if m else "none"}">{_e(status)}</span>'
                         + (' <span class="down" title="training failed">⚠ failed</span>' if failed else ""))
        rows.append(cells)
    out = ["<h2>Models</h2>",
           (f'<p class="sub">The models trained {len(trainings):,} time{"s" if len(trainings) != 1 else ""} during '
            "the run, each as of its moment from the features that held nothing later.</p>"),
           _table(["trained as of", "version", "users"] + [_e(f) for f in families], rows, numeric=(2,))]
    for t in trainings:
        s = t.get("summary") or {}
        detail = []
        for name, m in sorted((s.get("models") or {}).items()):
            metrics = "<br>".join(f"{_e(k)}: {_num(v)}" for k, v in sorted((m.get("metrics") or {}).items()))
            detail.append((f"<b>{_e(name)}</b>", _e(m.get("status")), _e(m.get("reason") or "—"),
                           _n(m.get("evidence")), metrics or '<span class="none">—</span>'))
        for name, problem in sorted((s.get("problems") or {}).items()):
            detail.append((f"<b>{_e(name)}</b>", '<span class="down">training failed</span>', _e(problem), "—",
                           "kept the last good version"))
        window = s.get("window")
        out.append(f"<details><summary>{_e(t.get('time'))} · <code>{_e(t.get('version'))}</code></summary>"
                   + (f'<p class="sub">data window {_e(window[0])} … {_e(window[1])}</p>' if window else "")
                   + _table(("model", "status", "reason", "evidence", "metrics"), detail, numeric=(3,)) + "</details>")
    return out
