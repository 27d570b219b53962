"""The `journeys` command line: the Typer app and its commands, one module each in this room.

Exit codes: 0 clean (warnings allowed), 1 problems found, 2 usage error. Each command module imports
the engine only when its command runs, so `journeys check` never loads the engine, a database
driver, uvicorn or FastAPI.
"""

from __future__ import annotations

import gc

import typer

from .admin import admin_app
from .check import check_command
from .diff import diff_command
from .explain import explain_command
from .fmt import fmt_command
from .generate import generate_command
from .graph import graph_command
from .migrate import migrate_command
from .predictions import models_command, score_command
from .render import render_command
from .replay import replay_command
from .serve import serve_command
from .simulate import simulate_command
from .test import test_command

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Journeys: customer journeys as code.")

# In the order `journeys --help` lists them.
for name, command in (("check", check_command), ("graph", graph_command), ("explain", explain_command),
                      ("simulate", simulate_command), ("test", test_command), ("generate", generate_command),
                      ("score", score_command), ("models", models_command), ("diff", diff_command),
                      ("fmt", fmt_command), ("render", render_command), ("serve", serve_command), ("replay", replay_command),
                      ("migrate", migrate_command)):
    app.command(name)(command)
app.add_typer(admin_app, name="admin")  # journeys admin ...: against a running daemon (engine.cli.admin)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"journeys {version('journeys')}")
        except PackageNotFoundError:  # run from a source tree that was never installed
            typer.echo("journeys (not installed: no version)")
        raise typer.Exit(0)


@app.callback()
def _options(show_version: bool = typer.Option(False, "--version", is_eager=True, callback=_version,
                                              help="Print the version of Journeys and exit.")) -> None:
    """Journeys: customer journeys as code."""


def main() -> None:
    # Everything imported so far lives until the process exits. Freezing it keeps the cyclic
    # garbage collector from traversing those objects again at every full collection while a
    # check allocates its trees: about 10 % of a cold `journeys check` on 200 files.
    gc.freeze()
    app()


if __name__ == "__main__":
    main()
