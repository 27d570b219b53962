"""`journeys check`: every problem of every file of a project (journeys.checker), for people or as
JSON lines for CI annotations. Exit codes: 0 clean (warnings allowed), 1 errors, 2 usage error."""

from __future__ import annotations

import enum
import json
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.text import Text

from journeys.checker import check_and_compile
from journeys.project import load_project
from journeys.terminal import print_diagnostics, printable

from ._common import existing


class Format(str, enum.Enum):
    text = "text"
    json = "json"


def check_command(
    path: Path = typer.Argument(Path("."), help="A project directory (with journeys.toml), or one file."),
    format: Format = typer.Option(Format.text, "--format", help="text for people, json for CI annotations."),
    env: bool = typer.Option(False, "--env", help="Also check this environment (run it where the daemon runs): "
                             "every secret journeys.toml names is set, and the channels the journeys use have every "
                             "setting and secret they need to deliver."),
) -> None:
    """Check every journey, segment, policy, template and scenario; report every problem."""
    existing(path)
    project = load_project(path)
    diagnostics, compiled = check_and_compile(project)
    if env:
        import os

        from connectors.preflight import preflight

        diagnostics.extend(preflight(project, compiled, os.environ))
    diagnostics = diagnostics.sorted()
    errors = sum(d.is_error for d in diagnostics)
    warnings = len(diagnostics) - errors
    if format is Format.json:
        for d in diagnostics:
            sys.stdout.write(printable(json.dumps(d.as_json(), ensure_ascii=False)) + "\n")
    else:
        console = Console(highlight=False, soft_wrap=True)
        print_diagnostics(project, diagnostics, console)
        files = len(project.journey_files) + len(project.test_files)
        summary = (f"checked {files} file{'s' if files != 1 else ''}, {len(project.journeys)} journeys, "
                   f"{len(project.segments)} segments, {len(project.scenarios)} scenarios: "
                   f"{errors} error{'s' if errors != 1 else ''}, {warnings} warning{'s' if warnings != 1 else ''}")
        console.print(Text(summary, style="bold red" if errors else "bold green"))
    raise typer.Exit(1 if errors else 0)
