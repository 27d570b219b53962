"""`journeys migrate`: bring a store's schema up to this engine's version, and say from which.

Opening a store migrates it too, so the command is for doing it on purpose: before a deploy, from
a release job, or to see where a database stands. The stores are imported when the command runs,
so that `journeys check` never imports a database driver. Exit codes: 0 done (or nothing to do), 1 the store cannot
be reached or is newer than this Journeys, 2 a usage error (a URL that names no store).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def migrate_command(
    project: Path = typer.Argument(Path("."), help="The project directory (with journeys.toml), for its [store] url."),
    store: Optional[str] = typer.Option(None, "--store", help="The store: sqlite:///path.db or "
                                        "postgresql://user@host:5432/db?schema=name; default: journeys.toml "
                                        "[store] url, relative to the project."),
) -> None:
    """Apply the store's missing schema migrations; print its version before and after."""
    from rich.console import Console
    from rich.text import Text

    from journeys.project import load_project

    from ..store.base import StoreError
    from ..store.open import migrate_store
    from ..store.urls import is_postgres, redact, resolve
    from ._common import existing, usage_error

    if store is None:
        existing(project)
        url, where = resolve(load_project(project).config.store.url, project.resolve()), "[store] url"
    else:
        url, where = store, "--store"
    try:
        before, after = migrate_store(url)
    except ValueError as e:
        raise usage_error(f"{where}: {e}")
    except StoreError as e:
        Console(stderr=True, highlight=False, soft_wrap=True).print(Text(f"error: {e}", style="bold red"))
        raise typer.Exit(1)
    shown = redact(url) if is_postgres(url) else url
    note = "up to date" if before == after else f"migrated {after - before} step{'s' if after - before != 1 else ''}"
    Console(highlight=False, soft_wrap=True).print(
        Text(f"{shown}: schema version {before} -> {after} ({note})", style="bold green"))
