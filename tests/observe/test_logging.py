"""Log lines are JSON a machine can read: no terminal escapes inside, whoever logged them."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from worker.cli import log_level
from worker.observe.logging import configure_logging


@pytest.fixture
def log_stream() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    configure_logging("INFO", stream=stream)
    yield stream
    configure_logging("INFO")  # back to stderr for the tests that follow


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_a_library_that_colours_its_request_log_still_logs_plain_json(log_stream):
    # What Werkzeug's development server logs for each request on a terminal.
    logging.getLogger("werkzeug").info(
        '%s - - [06/Dec/2026 10:00:00] "%s" %s -',
        "127.0.0.1",
        "\x1b[1mGET /summary HTTP/1.1\x1b[0m",
        "\x1b[32m200\x1b[0m",
    )
    structlog.get_logger("test").warning("hostile", detail="\x1b]0;title\x07red \x1b[31mtext")
    raw = log_stream.getvalue()
    assert "\x1b" not in raw
    assert "\\u001b" not in raw  # nor escaped inside the JSON
    request, hostile = lines(log_stream)
    assert request["event"] == '127.0.0.1 - - [06/Dec/2026 10:00:00] "GET /summary HTTP/1.1" 200 -'
    assert request["logger"] == "werkzeug"
    assert hostile["detail"] == "red text"


@pytest.mark.parametrize(
    ("args", "environ", "terminal", "expected"),
    [
        # A report for a person on a terminal: only warnings, so log lines never cut into it.
        (["vendor", "push", "configs"], {}, True, "WARNING"),
        (["--debug", "backfill"], {}, True, "WARNING"),
        # Redirected, stderr gets everything (the journal, a file, a pipe).
        (["vendor", "push", "configs"], {}, False, "INFO"),
        # Services log what they do wherever they run; and an explicit level always wins.
        (["worker", "-c", "2"], {}, True, "INFO"),
        (["web"], {}, True, "INFO"),
        (["vendor", "push", "configs"], {"RECON_LOG_LEVEL": "info"}, True, "INFO"),
        (["worker"], {"RECON_LOG_LEVEL": "debug"}, False, "DEBUG"),
    ],
)
def test_the_log_level_of_a_run(args, environ, terminal, expected):
    assert log_level(args, environ=environ, terminal=terminal) == expected


class _Untouchable(dict):
    """A value no processor may read: masking it (or rendering it) raises."""

    def items(self):  # type: ignore[override]
        raise AssertionError("a processor worked on a line below the level")


def test_a_line_below_the_level_is_dropped_before_any_processor_works_on_it():
    stream = io.StringIO()
    configure_logging("WARNING", stream=stream)
    try:
        # Hot paths log each call and outcome at INFO; at WARNING, masking them is wasted work.
        structlog.get_logger("worker.reconcile.orders").info("outcome", detail=_Untouchable())
        structlog.get_logger("worker.reconcile.orders").warning("kept", password="hunter2")
    finally:
        configure_logging("INFO")
    (kept,) = lines(stream)
    assert kept["event"] == "kept"
    assert kept["password"] == "***"
