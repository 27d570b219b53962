"""The daemon's logs: JSON lines for a log shipper, or plain text for a terminal.

Set up by `journeys serve` (engine.cli.serve) and again in the delivery process it starts
(engine.daemon.deliveries.process), so that both write the same lines to the same stream.

Levels: the daemon's own loggers (`journeys.*`) at INFO: the startup banner (address, store,
journeys loaded), every reload, retention rounds; what goes wrong at WARNING and above. The
libraries' loggers (`QUIET`) at WARNING: APScheduler writes a line each time it adds or runs a job,
which was most of a short run's log. Both formats carry the same fields: time, level, logger and
message, which holds everything a person reads; a JSON line adds the `extra` fields a call passes
(the banner's `address`, `store`, `journeys`; a reload's `journeys` and `changed`) as keys of their
own, for a log shipper to index.
"""

from __future__ import annotations

import enum
import logging
import sys

# Libraries whose INFO lines are noise in the daemon's log: a line per scheduled job (APScheduler),
# per provider call (httpx, httpcore: the outbox and /metrics say it better).
QUIET = ("apscheduler", "httpx", "httpcore")


class LogFormat(str, enum.Enum):
    auto = "auto"
    json = "json"
    text = "text"


def uses_json(log_format: LogFormat, stream=None) -> bool:
    """Whether the log is JSON lines: asked for, or `auto` with stderr not a terminal."""
    return log_format == LogFormat.json or (log_format == LogFormat.auto and not (stream or sys.stderr).isatty())


def setup_logging(log_format: LogFormat, stream=None) -> None:
    """The daemon's logs on stderr: JSON lines (time, level, logger, message, exc_info and any
    `extra` fields; python-json-logger) for a log shipper, or plain text for a terminal."""
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    if uses_json(log_format, stream):
        from pythonjsonlogger.json import JsonFormatter

        handler.setFormatter(JsonFormatter("{asctime}{levelname}{name}{message}", style="{",
                                           rename_fields={"asctime": "time", "levelname": "level", "name": "logger"}))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    for chatty in QUIET:
        logging.getLogger(chatty).setLevel(logging.WARNING)
