"""structlog configuration: JSON lines in production, readable console output in development.

The request id is bound in a contextvar by the request-id middleware, so every line logged
while a request is handled carries it, whichever module logs; with tracing on, so does
the current trace id.
"""

from __future__ import annotations

import logging
import sys

import structlog

from shelfwise.config import Settings
from shelfwise.observability.tracing import current_trace_id


def add_trace_id(
    logger: object, method: str, event: structlog.types.EventDict
) -> structlog.types.EventDict:
    """`trace_id` on every line logged inside a span, to jump from a log line to its trace
    (nothing when tracing is off)."""
    if "trace_id" not in event and (trace_id := current_trace_id()) is not None:
        event["trace_id"] = trace_id
    return event


class AddInstance:
    """`instance` on every line: which of several API instances or workers logged it."""

    def __init__(self, instance: str) -> None:
        self.instance = instance

    def __call__(
        self, logger: object, method: str, event: structlog.types.EventDict
    ) -> structlog.types.EventDict:
        event.setdefault("instance", self.instance)
        return event


def configure_logging(settings: Settings) -> None:
    level = logging.getLevelNamesMapping().get(settings.log_level.upper(), logging.INFO)
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        add_trace_id,
        AddInstance(settings.instance_name),
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: structlog.types.Processor
    if settings.json_logs:
        shared.append(structlog.processors.format_exc_info)
        renderer = structlog.processors.JSONRenderer()
    else:
        # Never show_locals (structlog's default with rich): a frame's locals hold the
        # passwords and tokens being processed when the exception happened.
        renderer = structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(),
            exception_formatter=structlog.dev.RichTracebackFormatter(show_locals=False),
        )
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    # Stdlib loggers (uvicorn, procrastinate, alembic, sqlalchemy) go through the same
    # processors and renderer, so production gets one JSON line format from every library.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    logging.basicConfig(level=level, handlers=[handler], force=True)
    logging.getLogger("uvicorn.access").disabled = True  # our access log replaces it
    logging.getLogger("pgserver").setLevel(logging.WARNING)  # chatty at INFO
