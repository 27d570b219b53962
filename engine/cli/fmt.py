"""`journeys fmt`: rewrite journey and scenario files in the canonical layout (`journeys.fmt`)."""

from __future__ import annotations

import difflib
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import typer

SUFFIXES = (".journey", ".test")


def _files(path: Path) -> list[Path]:
    """`path` itself when it is a file, else every *.journey and *.test file below it."""
    from journeys.project import SKIP_DIRS

    if path.is_file():
        return [path]
    out = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS and not d.startswith("."))
        out.extend(Path(dirpath) / f for f in sorted(filenames) if f.endswith(SUFFIXES))
    return out


def fmt_command(
    path: Path = typer.Argument(Path("."), help="A project directory, any directory, or one file."),
    check: bool = typer.Option(False, "--check", help="Change nothing; list the files that would change, "
                               "exit 1 if any."),
    diff: bool = typer.Option(False, "--diff", help="Change nothing; print the changes as a unified diff."),
) -> None:
    """Format *.journey and *.test files canonically (2-space blocks, one statement a line, comments
    kept); prints the files it changed. Files with syntax errors are reported and left alone."""
    from rich.console import Console
    from rich.text import Text

    from journeys.diagnostics import Diagnostic, Diagnostics, Severity, Span
    from journeys.fmt import FormatError, format_text
    from journeys.parser import decode
    from journeys.project import display_path
    from journeys.terminal import print_diagnostics

    from ._common import existing

    existing(path)
    out = Console(highlight=False, soft_wrap=True)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    failed = changed = 0
    for file in _files(path):
        shown = display_path(file)
        diags = Diagnostics()
        try:
            data = file.read_bytes()
        except OSError as e:
            data = None
            diags.error("J008", f"cannot read file: {e.strerror or e}", Span.point(shown, 1, 1))
        text = decode(data, shown, diags) if data is not None else None
        lines: list[str] = []
        result = None
        if text is not None:
            try:
                result = format_text(text, shown)
            except RecursionError:
                diags.error("J006", "this file is nested too deeply to format", Span.point(shown, 1, 1))
            except Exception as e:  # FormatError or a bug: the formatter's fault; leave the file as it is
                message = str(e) if isinstance(e, FormatError) else repr(e)
                diags.items.append(Diagnostic("J000", Severity.ERROR, f"internal error while formatting: {message}",
                                              Span.point(shown, 1, 1), "please report this with the file attached"))
            else:
                diags.extend(result.diagnostics)
                lines = result.lines
        if diags.has_errors or result is None or result.output is None:
            failed += 1
            print_diagnostics(SimpleNamespace(lines={shown: lines}), diags.sorted(), err)
            continue
        if not result.changed:
            continue
        changed += 1
        if diff:
            sys.stdout.writelines(difflib.unified_diff(
                text.splitlines(keepends=True), result.output.splitlines(keepends=True),
                f"{shown} (original)", f"{shown} (formatted)"))
        elif check:
            out.print(Text(shown))
        else:
            try:
                file.write_bytes(result.output.encode("utf-8"))
            except OSError as e:
                failed += 1
                err.print(Text(f"error: {shown}: cannot write: {e.strerror or e}", style="bold red"))
                continue
            out.print(Text(shown))
    if failed:
        err.print(Text(f"{failed} file{'s' if failed != 1 else ''} not formatted: fix the errors above",
                       style="bold red"))
    raise typer.Exit(1 if failed or (check and changed) else 0)
