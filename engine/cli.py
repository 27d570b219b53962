"""The `journeys` command line. Exit codes: 0 clean (warnings allowed), 1 problems found, 2 usage error."""

from __future__ import annotations

import enum
import gc
import json
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.text import Text

from journeys.checker import check_project
from journeys.codes import CODES, explain as explain_code
from journeys.diagnostics import Diagnostic, render
from journeys.project import Project, load_project

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Journeys: customer journeys as code.")


class Format(str, enum.Enum):
    text = "text"
    json = "json"


def _usage_error(message: str) -> typer.Exit:
    Console(stderr=True, soft_wrap=True, highlight=False).print(Text(f"error: {message}", style="bold red"))
    return typer.Exit(2)


def _existing(path: Path) -> Path:
    if not path.exists():
        raise _usage_error(f"{path}: no such file or directory")
    return path


def print_diagnostics(project: Project, diagnostics: list[Diagnostic], console: Console) -> None:
    for d in diagnostics:
        lines = project.lines.get(d.span.file, []) if d.span else []
        source = lines[d.span.line - 1] if d.span and 0 < d.span.line <= len(lines) else None
        text = render(d, source)
        head, _, rest = text.partition("\n")
        style = "bold red" if d.is_error else "bold yellow"
        console.print(Text(head, style=style))
        if rest:
            console.print(Text(rest), highlight=False)
        console.print()


@app.command()
def check(
    path: Path = typer.Argument(Path("."), help="A project directory (with journeys.toml), or one file."),
    format: Format = typer.Option(Format.text, "--format", help="text for people, json for CI annotations."),
    env: bool = typer.Option(False, "--env", help="Also check that every secret journeys.toml names is set in "
                             "this environment (run it where the daemon runs)."),
) -> None:
    """Check every journey, segment, policy, template and scenario; report every problem."""
    _existing(path)
    project = load_project(path)
    diagnostics = check_project(project)
    if env:
        import os

        from journeys.checker import check_environment

        diagnostics.extend(check_environment(project, os.environ))
    diagnostics = diagnostics.sorted()
    errors = sum(d.is_error for d in diagnostics)
    warnings = len(diagnostics) - errors
    if format is Format.json:
        for d in diagnostics:
            sys.stdout.write(json.dumps(d.as_json(), ensure_ascii=False) + "\n")
    else:
        console = Console(highlight=False, soft_wrap=True)
        print_diagnostics(project, diagnostics, console)
        files = len(project.journey_files) + len(project.test_files)
        summary = (f"checked {files} file{'s' if files != 1 else ''}, {len(project.journeys)} journeys, "
                   f"{len(project.segments)} segments, {len(project.scenarios)} scenarios: "
                   f"{errors} error{'s' if errors != 1 else ''}, {warnings} warning{'s' if warnings != 1 else ''}")
        console.print(Text(summary, style="bold red" if errors else "bold green"))
    raise typer.Exit(1 if errors else 0)


class GraphFormat(str, enum.Enum):
    mermaid = "mermaid"
    dot = "dot"
    html = "html"


@app.command()
def graph(
    journey: str = typer.Argument(..., help="The journey's name (or its slug, as in step paths)."),
    path: Path = typer.Argument(Path("."), help="The project directory, or one file."),
    format: GraphFormat = typer.Option(GraphFormat.mermaid, "--format", help="mermaid (renders in GitHub), dot, or html (one self-contained page)."),
) -> None:
    """Print a journey's compiled graph, every step with its path, for review in a pull request."""
    from journeys.checker import check_and_compile
    from journeys.graph import slugify
    from journeys.graph_render import render_dot, render_mermaid
    from journeys.suggest import did_you_mean

    _existing(path)
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
        raise _usage_error(f"no journey named \"{journey}\"; {hint}")
    if format is GraphFormat.html:
        from .html_report import render_journey

        typer.echo(render_journey(found), nl=False)
        return
    typer.echo(render_mermaid(found) if format is GraphFormat.mermaid else render_dot(found), nl=False)


@app.command()
def explain(code: str = typer.Argument(..., help="A diagnostic code such as J001.")) -> None:
    """Print the long explanation of a diagnostic code."""
    found = explain_code(code)
    if found is None:
        raise _usage_error(f"unknown code `{code}`; codes are {', '.join(CODES)}")
    typer.echo(f"{found.code}: {found.title}\n\n{found.explanation}")


def _register_engine_commands() -> None:
    """Engine commands live in their own modules and import the engine only when they run."""
    from .diff_cli import diff_command
    from .fmt_cli import fmt_command
    from .generate_cli import generate_command
    from .migrate_cli import migrate_command
    from .render_cli import render_command
    from .replay_cli import replay_command
    from .simulate_cli import simulate_command
    from .scenario_cli import test_command
    from .serve_cli import serve_command

    app.command("simulate")(simulate_command)
    app.command("test")(test_command)
    app.command("generate")(generate_command)
    app.command("diff")(diff_command)
    app.command("fmt")(fmt_command)
    app.command("render")(render_command)
    app.command("serve")(serve_command)
    app.command("replay")(replay_command)
    app.command("migrate")(migrate_command)


_register_engine_commands()


def main() -> None:
    # Everything imported so far lives until the process exits. Freezing it keeps the cyclic
    # garbage collector from traversing those objects again at every full collection while a
    # check allocates its trees: about 10 % of a cold `journeys check` on 200 files.
    gc.freeze()
    app()


if __name__ == "__main__":
    main()
