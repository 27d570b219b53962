"""`journeys diff`: the command line around `engine.dryrun.diff` (terminal tables, markdown for a pull
request, or JSON)."""

from __future__ import annotations

import enum
import sys
import tempfile
from pathlib import Path
from typing import Any, List, Optional

import typer


class DiffFormat(str, enum.Enum):
    text = "text"
    markdown = "markdown"
    json = "json"


def diff_command(
    path: Path = typer.Argument(Path("."), help="The project directory (with journeys.toml), in a git repository."),
    base: str = typer.Option("HEAD", "--base", help="The git revision to compare the working tree with."),
    events: List[Path] = typer.Option([], "--events", "-e", help="Also run both on this event log (repeatable)."),
    mapping: Optional[str] = typer.Option(None, "--map", help="CSV columns, as for journeys simulate."),
    format: DiffFormat = typer.Option(DiffFormat.text, "--format", help="text, markdown (a PR comment) or json."),
    sample: int = typer.Option(10, "--sample", min=0, help="How many users whose messages change to show."),
) -> None:
    """What the working tree's journeys change against a git revision: steps, versions, and outcomes on events."""
    import orjson
    from rich.console import Console
    from rich.text import Text

    from journeys.checker import ProjectError

    from ..core.program import Program
    from ..dryrun.diff import DiffError, compare_journeys, compare_outcomes, load_both, metric_rows
    from ..dryrun.eventlog import LogError, MappingError, parse_mapping, read_logs
    from ._common import existing, project_errors, usage_error

    existing(path)
    for f in events:
        existing(f)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            old, new = load_both(path, base, Path(tmp))
        except DiffError as e:
            raise usage_error(str(e))
        except ProjectError as e:
            raise project_errors(e, err, f"{e.project.root}: the project has errors; fix them before diffing")
    changes = compare_journeys(dict(old.journeys), dict(new.journeys))
    outcomes = None
    if events:
        try:
            columns = parse_mapping(mapping) if mapping else None
            log = read_logs([str(f) for f in events], columns)
        except MappingError as e:
            raise usage_error(f"--map: {e}")
        except LogError as e:
            err.print(Text(f"error: {e}", style="bold red"))
            raise typer.Exit(1)
        outcomes = compare_outcomes(Program.build(old), Program.build(new), log.messages, sample)
    if format is DiffFormat.json:
        doc: dict[str, Any] = {"base": base, "journeys": [c.to_json() for c in changes]}
        if outcomes is not None:
            doc["outcomes"] = outcomes.to_json()
            doc["outcome_changes"] = [{"journey": j, "measure": m, "before": a, "after": b}
                                      for j, m, a, b in metric_rows(outcomes.before, outcomes.after)]
        sys.stdout.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode() + "\n")
        return
    lines = _markdown(base, changes, outcomes) if format is DiffFormat.markdown else None
    if lines is not None:
        sys.stdout.write("\n".join(lines) + "\n")
        return
    _terminal(base, changes, outcomes, Console(highlight=False, soft_wrap=True))


def _status_line(c) -> str:
    if c.status == "added":
        return f"{c.name}: new journey (version {c.new_version}, {len(c.steps_added)} steps)"
    if c.status == "removed":
        return f"{c.name}: removed (was version {c.old_version})"
    if c.status == "unchanged":
        return f"{c.name}: unchanged (version {c.old_version})"
    return f"{c.name}: version {c.old_version} → {c.new_version}"


def _in_flight(c, outcomes) -> str | None:
    if outcomes is None or c.status != "changed":
        return None
    n = outcomes.before.get(c.name, {}).get("still_in", 0)
    return f"{n} user(s) in flight at the end of the log stay on version {c.old_version} until they finish"


def _terminal(base, changes, outcomes, out) -> None:
    from rich.table import Table
    from rich.text import Text

    from ..dryrun.diff import metric_rows

    out.print(Text(f"journeys: working tree against {base}", style="bold"))
    for c in changes:
        style = {"added": "green", "removed": "red", "changed": "yellow"}.get(c.status, "")
        out.print(Text(_status_line(c), style=style))
        for p in c.steps_added if c.status == "changed" else []:
            out.print(Text(f"  + {p}", style="green"))
        for p in c.steps_removed if c.status == "changed" else []:
            out.print(Text(f"  - {p}", style="red"))
        for p, before, after in c.steps_changed:
            out.print(Text(f"  ~ {p}: {before}  →  {after}", style="yellow"))
        for what, before, after in c.declarations:
            out.print(Text(f"  ~ {what}: {before}  →  {after}", style="yellow"))
        note = _in_flight(c, outcomes)
        if note:
            out.print(Text(f"  {note}"))
    if outcomes is None:
        return
    table = Table(title="Outcomes on the events (before → after)", title_justify="left")
    for col in ("journey", "measure", "before", "after"):
        table.add_column(col, justify="right" if col in ("before", "after") else "left")
    for j, m, a, b in metric_rows(outcomes.before, outcomes.after):
        table.add_row(j, m, str(a), str(b))
    if table.row_count:
        out.print(table)
    else:
        out.print(Text("the events give the same outcomes before and after", style="green"))
    out.print(Text(f"{outcomes.users_changed} user(s) get different messages (what changes for some of them):",
                   style="bold"))
    for s in outcomes.sample:
        out.print(Text(f"  {s['user']}"))
        out.print(Text("    before: " + ("; ".join(s["before"]) or "nothing more")))
        out.print(Text("    after:  " + ("; ".join(s["after"]) or "nothing more")))


def _markdown(base, changes, outcomes) -> list[str]:
    from ..dryrun.diff import metric_rows

    lines = [f"### Journeys: changes against `{base}`", ""]
    for c in changes:
        if c.status == "unchanged" and not c.declarations:
            continue
        lines.append(f"- **{c.name}**: " + _status_line(c).split(": ", 1)[1])
        for p in c.steps_added if c.status == "changed" else []:
            lines.append(f"  - added `{p}`")
        for p in c.steps_removed if c.status == "changed" else []:
            lines.append(f"  - removed `{p}`")
        for p, before, after in c.steps_changed:
            lines.append(f"  - changed `{p}`: {before} → {after}")
        for what, before, after in c.declarations:
            lines.append(f"  - changed {what}: {before} → {after}")
        note = _in_flight(c, outcomes)
        if note:
            lines.append(f"  - {note}")
    if len(lines) == 2:
        lines.append("No journey changed.")
    if outcomes is not None:
        rows = list(metric_rows(outcomes.before, outcomes.after))
        lines += ["", "#### Outcomes on the events", ""]
        if rows:
            lines += ["| journey | measure | before | after |", "| --- | --- | ---: | ---: |"]
            lines += [f"| {j} | {m} | {a} | {b} |" for j, m, a, b in rows]
        else:
            lines.append("The events give the same outcomes before and after.")
        lines += ["", f"{outcomes.users_changed} user(s) get different messages (what changes for some of them):"]
        for s in outcomes.sample:
            lines.append(f"- `{s['user']}`: before {'; '.join(s['before']) or 'nothing more'}; "
                         f"after {'; '.join(s['after']) or 'nothing more'}")
    return lines
