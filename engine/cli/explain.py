"""`journeys explain J030`: the long explanation of a diagnostic code (journeys.codes)."""

from __future__ import annotations

import typer

from journeys.codes import CODES, explain as explain_code

from ._common import usage_error


def explain_command(code: str = typer.Argument(..., help="A diagnostic code such as J001.")) -> None:
    """Print the long explanation of a diagnostic code."""
    found = explain_code(code)
    if found is None:
        raise usage_error(f"unknown code `{code}`; codes are {', '.join(CODES)}")
    typer.echo(f"{found.code}: {found.title}\n\n{found.explanation}")
