"""The models as HTML: `journeys models --html` (a backtest) and the dry-run report's "Models" section.

`render_backtest(result)` draws `engine.dryrun.backtest.backtest`'s dict as one page: per purchase
and churn a calibration plot (predicted against observed, with the diagonal), a cumulative gains
chart (the model, recency rank and random targeting), ROC AUC, PR AUC and Brier score beside the
baselines, and the feature importances; then the next-products, send-time and cap metrics beside
their baselines. `models_section(trainings)` — defined in engine.dryrun.html_report, which calls it,
so that the two modules import one way — lists each training of a simulate run (time, version,
users, each family's status, reason, evidence and metrics).

Same rules as engine.dryrun.html_report, whose page, table, escaping and CSS this reuses: inline
SVG only (no script, nothing from the network), user text escaped, and the output a function of
the input alone.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

from .html_report import (
    _e,
    _f,
    _n,
    _num,
    _page,
    _table,
)

MODEL_COLOUR = "#2563eb"
BASELINE_COLOURS = ("#f28e2b", "#59a14f", "#b07aa1", "#76b7b2")
RANDOM_COLOUR = "#9ca3af"
PLOT = 240  # px: the side of a square plot's area
LEFT, TOP, BOTTOM = 44, 12, 40

SECTIONS = (("purchase", "Purchase within {h}"), ("churn", "Churn: no activity within {h}"),
            ("recommender", "Next products"), ("sendtime", "Best send time"), ("fatigue", "Learned frequency caps"))


# ---------------------------------------------------------------------------------- small pieces


def _label(name: str) -> str:
    return _e(name.replace("_", " "))


def _colour_of(names: Sequence[str]) -> dict[str, str]:
    """The model blue; the baselines by their order in the metrics rows (so a part's charts agree)."""
    out = {"model": MODEL_COLOUR}
    for k, b in enumerate(n for n in names if n != "model"):
        out[b] = BASELINE_COLOURS[k % len(BASELINE_COLOURS)]
    return out


def _baselines(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    return list(rows[0]["baselines"]) if rows else []


def _legend(colours: Mapping[str, str]) -> str:
    return '<div class="legend">' + "".join(f'<span style="--c:{c}">{_label(n)}</span>'
                                            for n, c in colours.items()) + "</div>"


def _svg_open(width: float, height: float, label: str) -> str:
    return (f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{_f(width)}" height="{_f(height)}" '
            f'viewBox="0 0 {_f(width)} {_f(height)}" role="img" aria-label="{_e(label)}">')


def _unit_axes(x_title: str, y_title: str) -> list[str]:
    """Grid lines and ticks at 0, .25, .5, .75, 1 on both axes of a PLOT × PLOT square."""
    out = []
    for k in range(5):
        v = k / 4
        x, y = LEFT + PLOT * v, TOP + PLOT * (1 - v)
        out.append(f'<line class="grid" x1="{LEFT}" y1="{_f(y)}" x2="{LEFT + PLOT}" y2="{_f(y)}"/>')
        out.append(f'<line class="grid" x1="{_f(x)}" y1="{TOP}" x2="{_f(x)}" y2="{TOP + PLOT}"/>')
        out.append(f'<text x="{LEFT - 6}" y="{_f(y + 4)}" text-anchor="end">{v:g}</text>')
        out.append(f'<text x="{_f(x)}" y="{TOP + PLOT + 14}" text-anchor="middle">{v:g}</text>')
    out.append(f'<rect x="{LEFT}" y="{TOP}" width="{PLOT}" height="{PLOT}" fill="none" stroke="#9ca3af"/>')
    out.append(f'<text x="{LEFT + PLOT / 2}" y="{TOP + PLOT + 32}" text-anchor="middle">{_e(x_title)}</text>')
    out.append(f'<text x="12" y="{TOP + PLOT / 2}" text-anchor="middle" '
               f'transform="rotate(-90 12 {TOP + PLOT / 2})">{_e(y_title)}</text>')
    return out


def _xy(u: float, v: float) -> tuple[float, float]:
    return LEFT + PLOT * min(max(u, 0.0), 1.0), TOP + PLOT * (1 - min(max(v, 0.0), 1.0))


# ---------------------------------------------------------------------------------- charts


def calibration_plot(table: Sequence[Mapping[str, Any]], title: str) -> str:
    """Observed rate against mean prediction per bin (a dot sized by its users), and the diagonal
    a calibrated model would follow."""
    w, h = LEFT + PLOT + 16, TOP + PLOT + BOTTOM
    svg = [_svg_open(w, h, f"calibration plot: {title}"), *_unit_axes("mean predicted", "observed rate")]
    a, b = _xy(0, 0), _xy(1, 1)
    svg.append(f'<line class="diagonal" x1="{_f(a[0])}" y1="{_f(a[1])}" x2="{_f(b[0])}" y2="{_f(b[1])}" '
               f'stroke="{RANDOM_COLOUR}" stroke-dasharray="4 3"/>')
    most = max((int(r["n"]) for r in table), default=1) or 1
    points = [_xy(r["mean_predicted"], r["observed"]) for r in table]
    if len(points) > 1:
        svg.append(f'<polyline fill="none" stroke="{MODEL_COLOUR}" stroke-width="1.5" points="'
                   + " ".join(f"{_f(x)},{_f(y)}" for x, y in points) + '"/>')
    for (x, y), r in zip(points, table):
        radius = 2.5 + 5.5 * math.sqrt(int(r["n"]) / most)
        svg.append(f'<circle class="bin" cx="{_f(x)}" cy="{_f(y)}" r="{_f(radius)}" fill="{MODEL_COLOUR}" '
                   f'fill-opacity="0.7"><title>predicted {r["mean_predicted"]:.3f}, observed {r["observed"]:.3f}, '
                   f'{int(r["n"]):,} users</title></circle>')
    svg.append("</svg>")
    return "".join(svg)


def gains_chart(gains: Mapping[str, Any], title: str, colours: Mapping[str, str]) -> str:
    """The share of the positives captured by targeting the top share of users by each score, with
    random targeting (the diagonal). `colours`: name → colour, as the part's other charts use them."""
    shares = gains.get("share_targeted") or []
    curves = [(k, v) for k, v in gains.items() if k != "share_targeted"]
    colours = {k: colours.get(k, RANDOM_COLOUR) for k, _ in [("model", None)] + curves}
    w, h = LEFT + PLOT + 16, TOP + PLOT + BOTTOM
    svg = [_svg_open(w, h, f"cumulative gains: {title}"), *_unit_axes("share of users targeted", "share of positives")]
    a, b = _xy(0, 0), _xy(1, 1)
    svg.append(f'<line class="random" x1="{_f(a[0])}" y1="{_f(a[1])}" x2="{_f(b[0])}" y2="{_f(b[1])}" '
               f'stroke="{RANDOM_COLOUR}" stroke-dasharray="4 3"><title>random</title></line>')
    for name, values in sorted(curves, key=lambda kv: kv[0] == "model"):  # the model on top
        pts = " ".join(f"{_f(x)},{_f(y)}" for x, y in (_xy(s, v) for s, v in zip(shares, values)))
        svg.append(f'<polyline class="curve" fill="none" stroke="{colours[name]}" stroke-width="2" points="{pts}">'
                   f"<title>{_label(name)}</title></polyline>")
    svg.append("</svg>")
    return "".join(svg) + _legend({**colours, "random": RANDOM_COLOUR})


def metric_bars(rows: Sequence[Mapping[str, Any]], title: str) -> str:
    """Each metric's value for the model and each baseline as grouped bars (0..1), the best marked."""
    names = ["model"] + _baselines(rows)
    colours = _colour_of(names)
    bar_h, gap, scale = 14, 14, 220
    label_w = 16 + 7 * max((len(r["metric"]) for r in rows), default=8)
    height = TOP + sum(len(names) * bar_h + gap for _ in rows) + 8
    width = label_w + scale + 90
    svg = [_svg_open(width, height, f"metrics beside the baselines: {title}")]
    y = TOP
    for row in rows:
        svg.append(f'<text x="{label_w - 8}" y="{_f(y + bar_h * len(names) / 2 + 4)}" text-anchor="end">'
                   f'{_label(row["metric"])}</text>')
        for who in names:
            v = row["model"] if who == "model" else row["baselines"].get(who)
            length = scale * min(max(v or 0.0, 0.0), 1.0)
            best = row["best"] == who
            svg.append(f'<rect class="metric" x="{label_w}" y="{y}" width="{_f(length)}" height="{bar_h - 2}" '
                       f'fill="{colours[who]}"><title>{_label(who)}: {_num(v, 4)}</title></rect>')
            weight = ' font-weight="700"' if best else ""
            svg.append(f'<text x="{_f(label_w + length + 4)}" y="{y + bar_h - 4}"{weight}>'
                       f'{_num(v)}{" ★" if best else ""}</text>')
            y += bar_h
        y += gap
    svg.append("</svg>")
    return "".join(svg) + _legend(colours)


def importance_bars(importances: Sequence[Mapping[str, Any]], limit: int = 15) -> str:
    """The model's feature importances (largest first, as the backtest lists them) as horizontal bars."""
    items = [(str(i["feature"]), float(i["importance"])) for i in importances[:limit]]
    if not items:
        return '<p class="none">The model reports no importances.</p>'
    top = max(abs(v) for _, v in items) or 1.0
    label_w = min(260, 16 + 7 * max(len(k) for k, _ in items))
    bar_h, scale = 18, 240
    height = TOP + bar_h * len(items) + 8
    svg = [_svg_open(label_w + scale + 70, height, "feature importances")]
    for k, (name, v) in enumerate(items):
        y = TOP + k * bar_h
        length = scale * abs(v) / top
        svg.append(f'<text x="{label_w - 8}" y="{y + 12}" text-anchor="end">{_e(name)}</text>')
        svg.append(f'<rect class="importance" x="{label_w}" y="{y + 2}" width="{_f(length)}" height="{bar_h - 5}" '
                   f'fill="{MODEL_COLOUR}"><title>{_e(name)}: {v:.4f}</title></rect>')
        svg.append(f'<text x="{_f(label_w + length + 4)}" y="{y + 12}">{v:.3f}</text>')
    svg.append("</svg>")
    return "".join(svg)


def metrics_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The metrics beside the baselines, the best of each row in bold with a ★."""
    if not rows:
        return '<p class="none">No metric.</p>'
    names = list(rows[0]["baselines"])
    body = []
    for row in rows:
        cells = [f"<code>{_e(row['metric'])}</code>"]
        for who in ["model"] + names:
            v = row["model"] if who == "model" else row["baselines"].get(who)
            cells.append(f"<b>{_num(v)} ★</b>" if row["best"] == who else _num(v))
        cells.append("higher" if row["higher_is_better"] else "lower")
        body.append(cells)
    return _table(["metric", "model"] + [_label(b) for b in names] + ["better"], body,
                  numeric=range(1, len(names) + 2), cls="metrics")


# ---------------------------------------------------------------------------------- the backtest page


def _probability_part(part: Mapping[str, Any], title: str) -> list[str]:
    out = [(f'<p class="sub">{_n(part.get("users", 0))} users judged, {_n(part.get("positives", 0))} positive '
            f'({_num(part.get("rate"))}); {_n(part.get("users_left_out", 0))} left out (their features could not '
            "be rewound exactly)</p>")]
    pop = part.get("population_rate")
    if pop:
        out.append(f'<p class="sub">population rate: {_num(pop["rate"])}, measured on {_n(pop["users"])} users over '
                   f'the {_e(pop["window"])} before the cutoff</p>')
    out.append('<div class="cols"><div><h3>Beside the baselines</h3>' + metric_bars(part["metrics"], title)
               + metrics_table(part["metrics"]) + "</div>")
    bins = part.get("calibration") or []
    out.append("<div><h3>Calibration</h3>" + calibration_plot(bins, title)
               + "<details><summary>the bins</summary>" + _table(
                   ("mean predicted", "observed", "users"),
                   ((_num(r["mean_predicted"]), _num(r["observed"]), _n(r["n"])) for r in bins),
                   numeric=(0, 1, 2)) + "</details></div>")
    colours = _colour_of(_baselines(part["metrics"]))
    out.append("<div><h3>Cumulative gains</h3>" + gains_chart(part.get("gains") or {}, title, colours)
               + "</div></div>")
    out.append("<h3>Feature importances</h3>" + importance_bars(part.get("importances") or []))
    out.append(_training(part.get("training") or {}))
    return out


def _training(training: Mapping[str, Any]) -> str:
    if not training:
        return ""
    metrics = ", ".join(f"{_e(k)} {_num(v)}" for k, v in (training.get("metrics") or {}).items())
    return (f'<p class="sub">trained as of the cutoff: {_e(training.get("status"))}'
            + (f" ({_e(training['reason'])})" if training.get("reason") else "")
            + f", evidence {_n(training.get('evidence'))}"
            + (f"; internal split: {metrics}" if metrics else "") + "</p>")


def _other_part(key: str, part: Mapping[str, Any], title: str) -> list[str]:
    out = []
    if key == "recommender":
        out.append(f'<p class="sub">{_n(part.get("users", 0))} users judged on their next '
                   f'{_e(part.get("target", ""))}s ({_n(part.get("users_with_history", 0))} with a history before the '
                   f'cutoff); the <code>history_</code> rows count only those</p>')
    elif key == "fatigue":
        out.append(f'<p class="sub">engagement per message, trained on the messages whose labels closed by the cutoff, '
                   f'judged on those sent after {_e(part.get("split"))}</p>')
    elif key == "sendtime":
        users = ", ".join(f"{_e(c)}: {_n(v.get('users', 0))}" for c, v in (part.get("channels") or {}).items())
        out.append(f'<p class="sub">users judged on the local hour of their next engagement — {users}</p>')
    out.append(metric_bars(part["metrics"], title) + metrics_table(part["metrics"]))
    return out


def backtest_sections(result: Mapping[str, Any]) -> list[str]:
    body: list[str] = []
    horizon = result.get("horizon") or "the horizon"
    for n, (key, heading) in enumerate(SECTIONS, 1):
        part = result.get(key) or {}
        title = heading.format(h=horizon)
        body.append(f'<section id="m{n}"><h2>{_e(title)}</h2>')
        if part.get("status") != "ok":
            body.append(f'<p class="none">Not evaluated: {_e(part.get("reason"))}</p>')
            if key in ("purchase", "churn") and part.get("training"):
                body.append(_training(part["training"]))
        elif key in ("purchase", "churn"):
            body += _probability_part(part, title)
        else:
            body += _other_part(key, part, title)
        body.append("</section>")
    return body


def render_backtest(result: Mapping[str, Any]) -> str:
    """`journeys models --html`: the backtest as one self-contained page."""
    p = result.get("parameters") or {}
    log = result.get("log") or {}
    project = p.get("project")
    title = f"Models backtest: {project}" if project else "Models backtest"
    body = [f"<h1>{_e(title)}</h1>",
            ('<p class="sub">Every model trained on the users\' features as they stood at the cutoff, judged on what '
             "they did in the horizon after it, beside baselines fitted in the same run.</p>"),
            '<div class="cards">' + "".join(f'<div class="card"><b>{v}</b><span>{_e(k)}</span></div>' for k, v in (
                ("events", _n(log.get("messages", 0))), ("users", _n(log.get("users", 0))),
                ("cutoff", _e(result.get("cutoff") or "—")), ("horizon", _e(result.get("horizon") or "—")))) + "</div>",
            _table(("", ""), [("log", f"{_e(log.get('first'))} … {_e(log.get('last'))}"),
                              ("events", "<br>".join(f"<code>{_e(f)}</code>" for f in p.get("events") or ()) or "—")],
                   cls="params")]
    for note in result.get("notes") or []:
        body.append(f'<p class="sub">note: {_e(note)}</p>')
    body += backtest_sections(result)
    return _page(title, body)
