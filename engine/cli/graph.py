"""`journeys graph`: a journey's compiled graph, every step with its path, as Mermaid (renders in
GitHub), Graphviz dot, or one self-contained HTML page, for review in a pull request."""

from __future__ import annotations

import enum
from pathlib import Path

import typer
from rich.console import Console

from journeys.project import load_project
from journeys.terminal import print_diagnostics

from ._common import existing, usage_error


class GraphFormat(str, enum.Enum):
    mermaid = "mermaid"
    dot = "dot"
    html = "html"


def graph_command(
    journey: str = typer.Argument(..., help="The journey's name (or its slug, as in step paths)."),
    path: Path = typer.Argument(Path("."), help="The project directory, or one file."),
    format: GraphFormat = typer.Option(GraphFormat.mermaid, "--format", help="mermaid (renders in GitHub), dot, or html (one self-contained page)."),
) -> None:
    """Print a journey's compiled graph, every step with its path, for review in a pull request."""
    from journeys.checker import check_and_compile
    from journeys.graph import slugify
    from journeys.graph_render import render_dot, render_mermaid
    from journeys.suggest import did_you_mean

    existing(path)
    project = load_project(path)
    diagnostics, compiled = check_and_compile(project)
    if compiled is None:
        errors = [d for d in diagnostics.sorted() if d.is_error]
        print_diagnostics(project, errors, Console(stderr=True, highlight=False, soft_wrap=True))
        raise typer.Exit(1)
    by_slug = {slugify(name): j for name, j in compiled.journeys.items()}
    found = compiled.journeys.get(journey) or by_slug.get(slugify(journey))
    if found is None:
        hint = did_you_mean(journey, compiled.journeys, quote='"', otherwise="journeys: " + ", ".join(compiled.journeys))
        raise usage_error(f"no journey named \"{journey}\"; {hint}")
    if format is GraphFormat.html:
        from ..dryrun.html_report import render_journey

        typer.echo(render_journey(found), nl=False)
        return
    typer.echo(render_mermaid(found) if format is GraphFormat.mermaid else render_dot(found), nl=False)
