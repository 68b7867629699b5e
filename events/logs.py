"""structlog set-up shared by every Conveyor process: JSON lines, or a console renderer."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

import structlog


def configure_logging(
    json: bool = False,
    level: str = "info",
    extra_processors: Sequence[structlog.typing.Processor] = (),
) -> None:
    """Configure structlog for a Conveyor process. `extra_processors` run before rendering
    (the worker adds the one that copies a task's structlog lines into its task log)."""
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            *extra_processors,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
