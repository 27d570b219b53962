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
from typing import Any, Optional

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
    from ..daemon.logs import setup_logging, uses_json
    from ..daemon.worker import serve, store_file
    from ._common import existing, usage_error

    existing(project)
    if admin_port is not None and admin_port == port:
        raise usage_error(f"--admin-port {admin_port}: the public --port; give the operator's routes a port of their own")
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    setup_logging(log_format)
    as_log = uses_json(log_format)  # a log shipper reads stderr: the diagnostics too as JSON lines
    try:
        loaded, compiled = load_checked(project)
    except ProjectError as e:
        report(e.project, [d for d in e.diagnostics if d.is_error], err, as_log,
               f"{project}: the project has errors; fix them before serving (journeys check {project})", error=True)
        raise typer.Exit(1)
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
    preflight_or_exit(loaded, compiled, project, err, as_log)
    from ..store.base import StoreError

    try:
        code = serve(Path(loaded.root), config, Program.build(compiled), path, keys, host=host, port=port,
                     admin_host=admin_host, admin_port=admin_port)
    except ConfigurationError as e:
        raise usage_error(str(e))
    except StoreError as e:  # unreachable, a schema from a newer Journeys, a file another daemon serves
        if as_log:
            import logging

            logging.getLogger("journeys.daemon").error(f"error: {e}")
        else:
            err.print(Text(f"error: {e}", style="bold red"))
        raise typer.Exit(1)
    raise typer.Exit(code)


def report(project: Any, diagnostics: list[Any], err: Any, as_log: bool, summary: str, *, error: bool) -> None:
    """Diagnostics found before the daemon starts, and the line that sums them up: on a terminal as
    `journeys check` prints them (the source line, a caret, `help:`); in a JSON log one record each
    (logger journeys.preflight, level ERROR or WARNING, message `file:line:col code message`, and
    the fields code, file, line, column, help), so that a log shipper never meets a line it cannot
    parse."""
    if not as_log:
        from rich.text import Text

        from journeys.terminal import print_diagnostics

        print_diagnostics(project, diagnostics, err)
        err.print(Text(summary, style="bold red" if error else "bold yellow"))
        return
    import logging

    from ..daemon.reload import diagnostic_line

    log = logging.getLogger("journeys.preflight")
    for d in diagnostics:
        span = d.span
        log.log(logging.ERROR if d.is_error else logging.WARNING, diagnostic_line(d),
                extra={"code": d.code, "file": span and span.file, "line": span and span.line,
                       "column": span and span.col, "help": d.help})
    log.log(logging.ERROR if error else logging.WARNING, summary)


def preflight_or_exit(loaded, compiled, project: Path, err, as_log: bool = False) -> None:
    """The delivery preflight's diagnostics on stderr (`report`); exit 1 on an error (connectors.preflight)."""
    import os

    from connectors.preflight import preflight

    found = preflight(loaded, compiled, os.environ, serving=True).sorted()
    if any(d.is_error for d in found):
        report(loaded, found, err, as_log, f"{project}: the journeys send through channels that could not deliver; "
               f"fix the errors above before serving (journeys check --env {project})", error=True)
        raise typer.Exit(1)
    if found:
        report(loaded, found, err, as_log, f"{project}: serving; what goes through a connector whose secret is not "
               "set fails, each delivery recorded with the reason", error=False)
