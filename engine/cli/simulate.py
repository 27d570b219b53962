"""`journeys simulate`: the command line around `engine.dryrun.simulate`.

Everything heavy is imported when the command runs, so that `journeys check` never imports the
engine.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, List, Optional

import typer


def simulate_command(
    project: Path = typer.Argument(Path("."), help="The project directory (with journeys.toml)."),
    events: List[Path] = typer.Option(..., "--events", "-e", help="Event log: JSONL or CSV, gzip too. Repeatable."),
    mapping: Optional[str] = typer.Option(None, "--map", help="CSV columns, e.g. user_id=userId,event=event,timestamp=ts"),
    since: Optional[str] = typer.Option(None, "--from", help="Only events at or after this time (ISO-8601; UTC if no offset)."),
    until: Optional[str] = typer.Option(None, "--until", help="Only events up to this time; timers due by then fire. Default: the last event."),
    journey: List[str] = typer.Option([], "--journey", help="Run only this journey (repeatable)."),
    strict: bool = typer.Option(False, "--strict", help="A bad line is fatal instead of skipped."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the whole report as JSON."),
    html_out: Optional[Path] = typer.Option(None, "--html", help="Write the report as one self-contained HTML page."),
    sends_out: Optional[Path] = typer.Option(None, "--sends", help="Write every action as JSON lines."),
    trace: Optional[str] = typer.Option(None, "--trace", help="Print this user's timeline."),
    store: Optional[str] = typer.Option(None, "--store", help="Keep the run's state in a store instead of memory: a SQLite file (sqlite:///path.db) or a PostgreSQL schema (postgresql://user@host/db?schema=name)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No summary table."),
) -> None:
    """Replay recorded events through the engine on a virtual clock: what would be sent, to whom, when, why."""
    import orjson
    from rich.console import Console
    from rich.text import Text

    from ..dryrun.eventlog import LogError, open_logs, parse_time
    from ..dryrun.simulate import SendsWriter, StoreInUse, open_dry_run_store, simulate
    from ..dryrun.summary import render_summary
    from ..dryrun.trace import Trace
    from ..store.base import StoreError
    from ._common import checked_inputs, usage_error

    err = Console(stderr=True, highlight=False, soft_wrap=True)
    program, columns = checked_inputs(project, events, mapping, err, "simulating", journey or None)

    with _progress(err) as progress:
        total = sum(f.stat().st_size for f in events)
        task = progress.add_task("reading", total=total) if progress else None
        try:
            log = open_logs([str(f) for f in events], columns, strict, since, until,
                            progress=(lambda n: progress.update(task, completed=n)) if progress else None)
        except LogError as e:
            err.print(Text(f"error: {e}", style="bold red"))
            raise typer.Exit(1)
        except ValueError as e:  # --from / --until
            raise usage_error(str(e))
        for s in log.skipped[:10]:
            err.print(Text(f"skipped {s}", style="yellow"))
        if len(log.skipped) > 10:
            err.print(Text(f"... and {len(log.skipped) - 10} more skipped lines (all listed in --json)", style="yellow"))
        sinks: list[Any] = []
        tracer = Trace(trace) if trace else None
        if tracer:
            sinks.append(tracer)
        writer = SendsWriter(sends_out) if sends_out else None
        if writer:
            sinks.append(writer)
        try:
            the_store = open_dry_run_store(store) if store else None
        except (StoreInUse, ValueError) as e:
            raise usage_error(f"--store: {e}")
        except StoreError as e:  # unreachable, or a schema from a newer Journeys
            err.print(Text(f"error: --store: {e}", style="bold red"))
            raise typer.Exit(1)
        run_task = progress.add_task("simulating", total=log.count) if progress else None
        try:  # the messages are read from the files again as the run goes
            with log:
                run = simulate(program, log, until=parse_time(until, "until") if until else None, store=the_store,
                               sinks=sinks, templates=project,
                               progress=(lambda n: progress.update(run_task, completed=n)) if progress else None)
        except LogError as e:  # a log changed since it was first read
            err.print(Text(f"error: {e}", style="bold red"))
            raise typer.Exit(1)
        if writer:
            writer.close()

    parameters = {
        "project": str(project), "events": [str(f) for f in events], "map": mapping, "from": since, "until": until,
        "journeys": list(journey), "messages": log.count, "skipped": len(log.skipped),
        "skipped_lines": [str(s) for s in log.skipped[:1000]],
    }
    report = run.report.to_json(parameters)
    if json_out:
        json_out.write_bytes(orjson.dumps(report, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2) + b"\n")
    if html_out:
        from ..dryrun.html_report import render_report

        html_out.write_text(render_report(report, program), encoding="utf-8")
    out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 120)
    if tracer:
        out.print(Text(f"trace of {trace}", style="bold"))
        for line in tracer.lines() or [f"(no events for {trace})"]:
            out.print(Text(line))
        out.print()
    if not quiet:
        render_summary(report, out)
    if hasattr(the_store, "close"):
        the_store.close()


class _progress:
    """A rich progress bar on stderr when it is a terminal; nothing in pipes and CI logs."""

    def __init__(self, console):
        self.console = console
        self.bar = None

    def __enter__(self):
        if not sys.stderr.isatty():
            return None
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeRemainingColumn

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeRemainingColumn(),
                            console=self.console, transient=True)
        self.bar.__enter__()
        return self.bar

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.__exit__(*exc)
        return False
