"""structlog set up once, with Celery's and kombu's stdlib logs rendered in the same JSON shape."""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from worker.observe.masking import redact_event_dict

_configured = False

#: Terminal control sequences: CSI (colours, cursor moves), OSC (titles, links), and any other
#: escape. A library that colours its own log lines for a terminal (Werkzeug's request log does)
#: would otherwise put them inside our JSON, where they garble whatever reads it.
_ESCAPES = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_]?)")


def strip_terminal_escapes(
    _logger: Any, _name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """Remove terminal escape sequences from every text value of a log line."""
    for key, value in event_dict.items():
        if isinstance(value, str) and "\x1b" in value:
            event_dict[key] = _ESCAPES.sub("", value)
    return event_dict


def _shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        # Last line of defence: whatever a caller passed, credentials never reach the output.
        redact_event_dict,
    ]


def configure_logging(level: str = "INFO", *, json: bool = True, stream: Any = None) -> None:
    """Idempotent: Celery may call us from several signals, tests from fixtures."""
    global _configured
    renderer: Any = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared_processors(),
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            strip_terminal_escapes,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_recon", False):
            root.removeHandler(old)
    handler._recon = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("urllib3", "amqp", "kombu", "celery.utils.functional", "alembic"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))
    if not _configured:
        structlog.configure(
            processors=[
                # Below the level, a line is dropped before any processor has worked on it.
                structlog.stdlib.filter_by_level,
                *_shared_processors(),
                structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
            ],
            logger_factory=structlog.stdlib.LoggerFactory(),
            wrapper_class=structlog.stdlib.BoundLogger,
            cache_logger_on_first_use=False,
        )
    _configured = True


def is_configured() -> bool:
    return _configured
