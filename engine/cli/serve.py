"""`journeys serve`: the daemon's command line (the daemon itself is `engine.daemon`).

The daemon is imported when the command runs, so that `journeys check` never imports the engine,
uvicorn or FastAPI.
Before it opens the store it runs the delivery preflight (connectors.preflight), as `journeys check
--env` does: a channel the journeys use that could not deliver (an email without `[project]
public_url` or JOURNEYS_UNSUBSCRIBE_SECRET, a connector whose settings are wrong) is an error, and
serve does not start; a provider's secret that is not set is a warning (that connector's deliveries
fail, recorded, and the other channels deliver).
Exit codes: 0 after SIGTERM/SIGINT, 1 if the project has errors, a used channel could not deliver or
the server cannot start, 2 for a usage error (no write keys, a store that is not a SQLite file, bad
connector limits).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from ..daemon.logs import LogFormat


def serve_command(
    project: Path = typer.Argument(Path("."), help="The project directory (with journeys.toml)."),
    host: str = typer.Option("127.0.0.1", "--host", help="The address to listen on (0.0.0.0: every interface)."),
    port: int = typer.Option(8080, "--port", help="The TCP port of the ingest and the health checks."),
    admin_port: Optional[int] = typer.Option(None, "--admin-port", min=1, max=65535,
                                             help="Serve the operator's routes (/admin/..., /metrics, /openapi.json, "
                                             "the console) on this port instead of the public one (still behind "
                                             "JOURNEYS_ADMIN_TOKEN); the public port then answers 404 for them."),
    admin_host: str = typer.Option("127.0.0.1", "--admin-host",
                                   help="The address of --admin-port's listener (loopback by default)."),
    store: Optional[str] = typer.Option(None, "--store", help="The store: sqlite:///path.db, or postgresql://user@host/db?schema=name "
                                        "(several workers may share it); default: journeys.toml [store] url, relative to the project."),
    log_format: LogFormat = typer.Option(LogFormat.auto, "--log-format", envvar="JOURNEYS_LOG_FORMAT",
                                         help="json: one JSON object per line (for log shippers; the same fields as "
                                         "text, and the structured ones of a line); text: for people; auto: json "
                                         "unless stderr is a terminal. Our INFO lines (the startup banner, reloads) "
                                         "show; libraries' (APScheduler, httpx) from WARNING."),
) -> None:
    """Run the daemon: the Segment-compatible ingest, the journeys, timers and deliveries. Stops on SIGTERM."""
    from rich.console import Console
    from rich.text import Text

    from connectors.errors import ConfigurationError
    from journeys.checker import ProjectError, load_checked

    from ..core.program import Program
    from ..daemon.ingest import write_keys_from_env
    from ..daemon.logs import setup_logging
    from ..daemon.worker import serve, store_file
    from ._common import existing, project_errors, usage_error

    existing(project)
    if admin_port is not None and admin_port == port:
        raise usage_error(f"--admin-port {admin_port}: the public --port; give the operator's routes a port of their own")
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    try:
        loaded, compiled = load_checked(project)
    except ProjectError as e:
        raise project_errors(e, err, f"{project}: the project has errors; fix them before serving"
                                     f" (journeys check {project})")
    config = loaded.config
    keys = write_keys_from_env(config)
    if not keys:
        names = config.ingest.write_keys_env
        if names:
            raise usage_error(f"no write keys: set {' or '.join(names)} ([ingest] write_keys_env in journeys.toml)")
        raise usage_error("no write keys: journeys.toml names none ([ingest] write_keys_env = [\"JOURNEYS_WRITE_KEY\"])")
    try:
        path = store_file(store, None) if store is not None else store_file(config.store.url, Path(loaded.root))
    except ValueError as e:
        raise usage_error(f"--store: {e}" if store is not None else f"[store] url: {e}")
    preflight_or_exit(loaded, compiled, project, err)
    setup_logging(log_format)
    from ..store.base import StoreError

    try:
        code = serve(Path(loaded.root), config, Program.build(compiled), path, keys, host=host, port=port,
                     admin_host=admin_host, admin_port=admin_port)
    except ConfigurationError as e:
        raise usage_error(str(e))
    except StoreError as e:  # unreachable, a schema from a newer Journeys, a file another daemon serves
        err.print(Text(f"error: {e}", style="bold red"))
        raise typer.Exit(1)
    raise typer.Exit(code)


def preflight_or_exit(loaded, compiled, project: Path, err) -> None:
    """The delivery preflight's diagnostics on stderr; exit 1 on an error (connectors.preflight)."""
    import os

    from rich.text import Text

    from connectors.preflight import preflight
    from journeys.terminal import print_diagnostics

    found = preflight(loaded, compiled, os.environ, serving=True).sorted()
    print_diagnostics(loaded, found, err)
    if any(d.is_error for d in found):
        err.print(Text(f"{project}: the journeys send through channels that could not deliver; fix the errors above "
                       f"before serving (journeys check --env {project})", style="bold red"))
        raise typer.Exit(1)
    if found:
        err.print(Text(f"{project}: serving; what goes through a connector whose secret is not set fails, each "
                       "delivery recorded with the reason", style="bold yellow"))
