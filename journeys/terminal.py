"""Diagnostics printed to a terminal: each as `render` writes it (the code and message, the arrow
to file:line:col, the source line, the caret, the help), the first line red for an error and
yellow for a warning, a blank line after each. Every command that reports a project's problems
prints them with this, so they look the same everywhere.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.text import Text

from .diagnostics import Diagnostic, render

if TYPE_CHECKING:
    from .project import Project


def printable(text: str) -> str:
    """`text` as UTF-8 can carry it: a lone surrogate (a `"\\ud800"` escape in a journey file) is
    shown as its escape instead of failing the terminal's encoder."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def print_diagnostics(project: Project, diagnostics: list[Diagnostic], console: Console) -> None:
    for d in diagnostics:
        lines = project.lines.get(d.span.file, []) if d.span else []
        source = lines[d.span.line - 1] if d.span and 0 < d.span.line <= len(lines) else None
        text = printable(render(d, source))
        head, _, rest = text.partition("\n")
        style = "bold red" if d.is_error else "bold yellow"
        console.print(Text(head, style=style))
        if rest:
            console.print(Text(rest), highlight=False)
        console.print()
