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
    import orjson
    from rich.console import Console
    from rich.text import Text

    from journeys.checker import ProjectError, load_checked

    from ..core.program import Program
    from ..daemon.replay import compare as compare_runs, replay
    from ..dryrun.eventlog import LogError, MappingError, parse_mapping, parse_time, read_logs
    from ..dryrun.simulate import dry_run_actions
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
    try:
        log = read_logs([str(f) for f in events], columns, until=end)
    except LogError as e:
        err.print(Text(f"error: {e}", style="bold red"))
        raise typer.Exit(1)
    for s in log.skipped[:10]:
        err.print(Text(f"skipped {s}", style="yellow"))
    messages = log.messages
    run = replay(Path(loaded.root), loaded.config, Program.build(compiled), messages, until=end,
                 store_path=str(store.resolve()) if store is not None else None)
    out.print(f"daemon: {run.events} events through HTTP, {len(run.actions)} actions ({run.seconds:.1f}s)")
    if sends_out is not None:
        sends_out.write_bytes(b"".join(orjson.dumps(a, option=orjson.OPT_SORT_KEYS) + b"\n" for a in run.actions))
    if not compare:
        return
    compare_runs(run, dry_run_actions(Program.build(compiled), messages, end))
    out.print(f"dry-run: {len(run.dry_run or [])} actions")
    if run.identical:
        out.print(Text("identical: the daemon took exactly the dry-run's actions", style="bold green"))
        return
    for label, actions in (("only in the dry-run", run.missing), ("only in the daemon", run.extra)):
        for a in actions[:10]:
            out.print(Text(f"{label}: {a['time']} {a['user']} {a['journey']} {a['path']} {a['kind']} "
                           f"\"{a['target']}\" {a['outcome']} (id {a['id']})", style="red"))
        if len(actions) > 10:
            out.print(Text(f"{label}: ... and {len(actions) - 10} more", style="red"))
    out.print(Text(f"different: {len(run.missing)} only in the dry-run, {len(run.extra)} only in the daemon",
                   style="bold red"))
    raise typer.Exit(1)

