"""What the commands share: a usage error (one red line on stderr, exit code 2), the check that a
path given on the command line exists, and a project that does not check clean (its errors, then
one red line saying what could not be done, exit code 1)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.text import Text

from journeys.checker import ProjectError
from journeys.terminal import print_diagnostics


def usage_error(message: str) -> typer.Exit:
    Console(stderr=True, soft_wrap=True, highlight=False).print(Text(f"error: {message}", style="bold red"))
    return typer.Exit(2)


def existing(path: Path) -> Path:
    if not path.exists():
        raise usage_error(f"{path}: no such file or directory")
    return path


def project_errors(e: ProjectError, console: Console, message: str) -> typer.Exit:
    print_diagnostics(e.project, [d for d in e.diagnostics if d.is_error], console)
    console.print(Text(message, style="bold red"))
    return typer.Exit(1)


def checked_inputs(project: Path, events: list[Path], mapping: str | None, err: Console, doing: str,
                   journeys: list[str] | None = None) -> tuple[object, object]:
    """The checked project's program (only `journeys`, if named) and the log's CSV column mapping,
    after every path given was found to exist: or the usage error or project errors every command
    that runs a log reports alike."""
    from ..dryrun.eventlog import MappingError, parse_mapping
    from ..dryrun.simulate import load_program

    existing(project)
    for f in events:
        existing(f)
    try:
        columns = parse_mapping(mapping) if mapping else None
    except MappingError as e:
        raise usage_error(f"--map: {e}")
    try:
        program = load_program(project, journeys)
    except ProjectError as e:
        raise project_errors(e, err, f"{project}: the project has errors; fix them before {doing}"
                                     f" (journeys check {project})")
    except ValueError as e:  # a journey the project does not have
        raise usage_error(str(e))
    return program, columns
