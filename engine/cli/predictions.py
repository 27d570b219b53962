"""The predictions' commands (engine.dryrun.scores, engine.dryrun.backtest):

- `journeys score`: every user's predictions as of a moment, as CSV;
- `journeys models`: every model backtested on a time split of a log, beside its baselines (the
  terminal tables are drawn from the same dict `--json` writes).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, List, Mapping, Optional

import typer

_HORIZON = re.compile(r"^(\d+)([dhw])$")
_UNIT = {"h": 3600, "d": 86400, "w": 7 * 86400}


def parse_horizon(text: str) -> int:
    """`30d`, `12w`, `36h` → seconds, 1 hour to 3650 days; else a usage error naming the option."""
    from ._common import usage_error

    m = _HORIZON.match(text.strip())
    if not m:
        raise usage_error(f"--horizon: {text!r} is not a duration like 30d, 12w or 36h")
    value = int(m.group(1)) * _UNIT[m.group(2)]
    if not 3600 <= value <= 3650 * 86400:
        raise usage_error(f"--horizon: {text!r} is outside 1h..3650d")
    return value


def project_and_log(project: Path, events: List[Path], mapping: Optional[str], strict: bool, err: Any,
                    doing: str) -> tuple[Any, Any]:
    """The checked project's program and its event logs opened (not yet read), or the usage error
    or project errors every command that runs a log reports alike."""
    from rich.text import Text

    from ..dryrun.eventlog import LogError, open_logs
    from ._common import checked_inputs

    program, columns = checked_inputs(project, events, mapping, err, doing)
    try:
        log = open_logs([str(f) for f in events], columns, strict, None, None)
    except LogError as e:
        err.print(Text(f"error: {e}", style="bold red"))
        raise typer.Exit(1)
    for s in log.skipped[:10]:
        err.print(Text(f"skipped {s}", style="yellow"))
    return program, log


def score_command(
    project: Path = typer.Argument(Path("."), help="The project directory (with journeys.toml)."),
    events: List[Path] = typer.Option(..., "--events", "-e", help="Event log: JSONL or CSV, gzip too. Repeatable."),
    as_of: str = typer.Option(..., "--as-of", help="Score as of this moment (ISO-8601; UTC if no offset): only events before it are read."),
    horizon: List[str] = typer.Option(["30d"], "--horizon", help="Purchase and churn horizon, e.g. 90d (repeatable)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write the CSV here (default: stdout)."),
    mapping: Optional[str] = typer.Option(None, "--map", help="CSV columns, e.g. user_id=userId,event=event,timestamp=ts"),
    strict: bool = typer.Option(False, "--strict", help="A bad line is fatal instead of skipped."),
) -> None:
    """Every user's predictions as of a moment, trained only on the events before it: one CSV row per user."""
    from rich.console import Console
    from rich.text import Text

    from ..dryrun.eventlog import LogError, parse_time
    from ..dryrun.scores import score
    from ._common import usage_error

    err = Console(stderr=True, highlight=False, soft_wrap=True)
    horizons = [parse_horizon(h) for h in horizon]
    try:
        moment = parse_time(as_of, "--as-of")
    except ValueError as e:
        raise usage_error(str(e))
    assert moment is not None
    program, log = project_and_log(project, events, mapping, strict, err, "scoring")
    try:
        with log:
            result = score(program, log, moment, horizons)
    except LogError as e:
        err.print(Text(f"error: {e}", style="bold red"))
        raise typer.Exit(1)
    text = result.to_csv()
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text, encoding="utf-8")
    described = result.models.describe()
    err.print(Text(f"{len(result.rows)} users scored as of {described['trained_at']} with models {described['version']}",
                   style="dim"))
    for name, family in described["models"].items():
        if family["status"] != "ok":
            err.print(Text(f"{name}: {family['status']}: {family['reason']}", style="yellow"))
    for name, problem in described["problems"].items():
        err.print(Text(f"{name}: training failed: {problem}", style="red"))


# (section, title); the titles say what is predicted
SECTIONS = (("purchase", "Purchase within {h}"), ("churn", "Churn: no activity within {h}"),
            ("recommender", "Next products"), ("sendtime", "Best send time"), ("fatigue", "Learned frequency caps"))


def models_command(
    project: Path = typer.Argument(Path("."), help="The project directory (with journeys.toml)."),
    events: List[Path] = typer.Option(..., "--events", "-e", help="Event log: JSONL or CSV, gzip too. Repeatable."),
    cutoff: Optional[str] = typer.Option(
        None, "--cutoff", help="Train on the events up to this moment, judge on the horizon after it (ISO-8601; "
        "UTC if no offset). Default: 75 % into the log, at a day boundary."),
    horizon: str = typer.Option("30d", "--horizon",
                                help="How far after the cutoff the predictions are judged, e.g. 30d, 2w."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write every metric as JSON."),
    html_out: Optional[Path] = typer.Option(None, "--html", help="Write the backtest as one self-contained HTML page."),
    mapping: Optional[str] = typer.Option(None, "--map",
                                          help="CSV columns, e.g. user_id=userId,event=event,timestamp=ts"),
    strict: bool = typer.Option(False, "--strict", help="A bad line is fatal instead of skipped."),
) -> None:
    """Backtest every model on a time split of the log: each metric beside its baselines."""
    import orjson
    from rich.console import Console
    from rich.text import Text

    from ..dryrun.backtest import BacktestError, backtest
    from ..dryrun.eventlog import LogError, parse_time
    from ._common import usage_error

    err = Console(stderr=True, highlight=False, soft_wrap=True)
    seconds = parse_horizon(horizon)
    try:
        moment = parse_time(cutoff, "--cutoff")
    except ValueError as e:
        raise usage_error(str(e))
    program, log = project_and_log(project, events, mapping, strict, err, "backtesting")
    try:
        with log:
            result = backtest(program, log, cutoff=moment, horizon=seconds)
    except BacktestError as e:
        raise usage_error(str(e))
    except LogError as e:
        err.print(Text(f"error: {e}", style="bold red"))
        raise typer.Exit(1)
    result = {"parameters": {"project": str(project), "events": [str(f) for f in events], "map": mapping,
                             "cutoff": cutoff, "horizon": horizon, "skipped": len(log.skipped)}, **result}
    if json_out:
        json_out.write_bytes(orjson.dumps(result, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2) + b"\n")
    if html_out:
        from ..dryrun.models_report import render_backtest

        html_out.write_text(render_backtest(result), encoding="utf-8")
    out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 120)
    render_tables(result, out)


def _number(v: Any) -> str:
    return "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def render_tables(result: Mapping[str, Any], console: Any) -> None:
    """The split, then per model its metrics beside the baselines, the best of each row in bold
    with a `*`; a model that could not be judged says why."""
    from rich.table import Table
    from rich.text import Text

    log = result["log"]
    console.print(f"[bold]{log['messages']:,}[/] events, {log['users']:,} users, {log['first']} … {log['last']}")
    if result.get("cutoff"):
        console.print(f"trained as of [bold]{result['cutoff']}[/], judged on the [bold]{result['horizon']}[/] after")
    for note in result.get("notes") or []:
        console.print(Text(f"note: {note}", style="yellow"))
    for key, title in SECTIONS:
        part = result.get(key) or {}
        heading = title.format(h=result.get("horizon") or "the horizon")
        if part.get("status") != "ok":
            console.print(Text(f"{heading}: not evaluated: {part.get('reason')}", style="yellow"))
            continue
        rows = part["metrics"]
        names = list(rows[0]["baselines"]) if rows else []
        table = Table(title=f"{heading}{_counts(key, part)}", title_justify="left")
        table.add_column("metric")
        table.add_column("model", justify="right")
        for b in names:
            table.add_column(b.replace("_", " "), justify="right")
        table.add_column("better", justify="left")
        for row in rows:
            cells = []
            for who, v in [("model", row["model"])] + [(b, row["baselines"].get(b)) for b in names]:
                best = who == row["best"]
                cells.append(Text(_number(v) + (" *" if best else "  "), style="bold green" if best else ""))
            table.add_row(row["metric"], *cells, "higher" if row["higher_is_better"] else "lower")
        console.print(table)
        training = part.get("training") or {}
        if training.get("status") not in (None, "ok"):
            console.print(Text(f"  the model fell back to its population value: {training.get('reason') or ''}",
                               style="yellow"))
        importances = part.get("importances") or []
        if importances:
            console.print("  importances: " + ", ".join(f"{i['feature']} {i['importance']:.3f}"
                                                         for i in importances[:8]))


def _counts(key: str, part: Mapping[str, Any]) -> str:
    if key in ("purchase", "churn"):
        return f" ({part['users']:,} users, {part['positives']:,} positive)"
    if key == "recommender":
        return f" ({part['users']:,} users judged on their next {part.get('target', '')}s)"
    if key == "fatigue":
        return f" (messages after {part.get('split')})"
    return ""
