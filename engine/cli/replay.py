"""`journeys replay`: the daemon fed a log through HTTP, its actions compared with the dry-run's.

Exit codes: 0 when the two agree (or `--no-compare`), 1 when they differ or the project or the log
has errors, 2 for a usage error.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer


def replay_command(
    project: Path = typer.Argument(Path("."), help="The project directory (with journeys.toml)."),
    events: List[Path] = typer.Option(..., "--events", "-e", help="Event log: JSONL or CSV, gzip too. Repeatable."),
    mapping: Optional[str] = typer.Option(None, "--map", help="CSV columns, e.g. user_id=userId,event=event,timestamp=ts"),
    until: Optional[str] = typer.Option(None, "--until", help="Timers due by then fire after the last event. "
                                        "Default: the last event's time, as in simulate."),
    compare: bool = typer.Option(True, "--compare/--no-compare", help="Compare with `journeys simulate` on the same log."),
    store: Optional[Path] = typer.Option(None, "--store", help="Keep the daemon's SQLite store here (a new file) "
                                         "instead of a temporary one."),
    sends_out: Optional[Path] = typer.Option(None, "--sends", help="Write the daemon's actions as JSON lines."),
) -> None:
    """Run the daemon on a log through its HTTP API, with the dry-run's clock and no deliveries, and check
    that it takes the same actions as `journeys simulate`."""
    import tempfile

    from rich.console import Console
    from rich.text import Text

    from journeys.checker import ProjectError, load_checked

    from ..core.program import Program
    from ..daemon.replay import ActionLog, compare as compare_runs, logged_actions, replay
    from ..dryrun.eventlog import LogError, MappingError, open_logs, parse_mapping, parse_time
    from ..dryrun.simulate import simulate
    from ._common import existing, project_errors, usage_error

    err = Console(stderr=True, highlight=False, soft_wrap=True)
    out = Console(highlight=False, soft_wrap=True)
    existing(project)
    for f in events:
        existing(f)
    if store is not None and store.exists():
        raise usage_error(f"--store: {store} exists; the replay needs a new store")
    try:
        columns = parse_mapping(mapping) if mapping else None
        end = parse_time(until, "until") if until else None
    except (MappingError, ValueError) as e:
        raise usage_error(str(e))
    try:
        loaded, compiled = load_checked(project)
    except ProjectError as e:
        raise project_errors(e, err, f"{project}: the project has errors; fix them before replaying"
                                     f" (journeys check {project})")
    try:  # indexed once; the daemon and the dry-run each read the messages from the files again
        log = open_logs([str(f) for f in events], columns, until=end)
    except LogError as e:
        err.print(Text(f"error: {e}", style="bold red"))
        raise typer.Exit(1)
    for s in log.skipped[:10]:
        err.print(Text(f"skipped {s}", style="yellow"))
    with log, tempfile.TemporaryDirectory(prefix="journeys-replay-") as tmp:
        try:
            run = replay(Path(loaded.root), loaded.config, Program.build(compiled), log,
                         str(store.resolve()) if store is not None else str(Path(tmp) / "replay.db"), until=end)
            out.print(f"daemon: {run.events} events through HTTP, {run.actions} actions ({run.seconds:.1f}s)")
            if sends_out is not None:
                with open(sends_out, "wb") as sends:
                    sends.writelines(action + b"\n" for _, action in logged_actions(run.store))
            if not compare:
                return
            with ActionLog(Path(tmp) / "dry-run.db") as dry_run:
                simulate(Program.build(compiled), log, until=end, sinks=[dry_run])
                result = compare_runs(logged_actions(run.store), dry_run.actions())
        except LogError as e:  # a log changed since it was first read
            err.print(Text(f"error: {e}", style="bold red"))
            raise typer.Exit(1)
    out.print(f"dry-run: {result.dry_run} actions")
    if result.identical:
        out.print(Text("identical: the daemon took exactly the dry-run's actions", style="bold green"))
        return
    for label, shown, count in (("only in the dry-run", result.missing, result.missing_count),
                                ("only in the daemon", result.extra, result.extra_count)):
        for a in shown:
            out.print(Text(f"{label}: {a['time']} {a['user']} {a['journey']} {a['path']} {a['kind']} "
                           f"\"{a['target']}\" {a['outcome']} (id {a['id']})", style="red"))
        if count > len(shown):
            out.print(Text(f"{label}: ... and {count - len(shown)} more", style="red"))
    out.print(Text(f"different: {result.missing_count} only in the dry-run, {result.extra_count} only in the daemon",
                   style="bold red"))
    raise typer.Exit(1)
