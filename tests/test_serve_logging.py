"""`journeys serve --log-format`: JSON lines a log shipper can parse, text for a terminal."""

from __future__ import annotations

import io
import json
import logging

import pytest

from engine.daemon.logs import LogFormat, setup_logging


@pytest.fixture(autouse=True)
def restore_logging():
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_carry_level_logger_message_and_the_traceback():
    out = io.StringIO()
    setup_logging(LogFormat.json, out)
    log = logging.getLogger("journeys.daemon")
    log.warning("reloaded: %d journeys", 3)
    try:
        raise ValueError("bad row")
    except ValueError:
        log.exception("inbox message %d set aside", 7)
    first, second = (json.loads(line) for line in out.getvalue().splitlines() if line.startswith("{"))
    assert first["level"] == "WARNING" and first["logger"] == "journeys.daemon"
    assert first["message"] == "reloaded: 3 journeys" and first["time"]
    assert second["level"] == "ERROR" and "ValueError: bad row" in second["exc_info"]


def test_auto_is_text_on_a_terminal_and_json_otherwise():
    class Tty(io.StringIO):
        def isatty(self):
            return True

    tty, pipe = Tty(), io.StringIO()
    setup_logging(LogFormat.auto, tty)
    logging.getLogger("journeys.daemon").warning("hello")
    assert "WARNING journeys.daemon: hello" in tty.getvalue()
    setup_logging(LogFormat.auto, pipe)
    logging.getLogger("journeys.daemon").warning("hello")
    assert json.loads(pipe.getvalue())["message"] == "hello"
