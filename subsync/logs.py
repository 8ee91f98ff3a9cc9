"""structlog for every process: JSON lines by default, console on demand.

Standard-library loggers (gunicorn, dramatiq, apscheduler) go through the same
processors, so one process writes one format. Context (event id, type,
request id) is bound with contextvars by the entry points.
"""

from __future__ import annotations

import logging
import os
import sys

import structlog

_configured = False


def _shared_processors(log_format: str) -> list[structlog.types.Processor]:
    shared: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if log_format != "console":
        shared.append(structlog.processors.dict_tracebacks)
    return shared


def formatter(log_format: str = "json") -> logging.Formatter:
    """A stdlib formatter rendering like structlog: for loggers we do not own (gunicorn)."""
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer() if log_format == "console" else structlog.processors.JSONRenderer()
    )
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared_processors(log_format),
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )


def formatter_from_env() -> logging.Formatter:
    """For gunicorn's logconfig_dict, which builds formatters by factory name."""
    return formatter(os.environ.get("LOG_FORMAT", "json"))


def configure(log_format: str = "json", level: int = logging.INFO) -> None:
    global _configured  # noqa: PLW0603 - configuring logging is process-wide
    if _configured:
        return
    _configured = True
    shared = _shared_processors(log_format)
    structlog.configure(
        # Drop a line below the level first, before any processor runs: the
        # worker's debug lines would otherwise cost as much as its info lines.
        processors=[structlog.stdlib.filter_by_level, *shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(log_format))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # No line renders the call site, thread or process (the logging HOWTO's
    # "Optimization"): skip finding them for every record, about a fifth of
    # a line's cost, paid once per webhook.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # The stripe library logs every request at INFO: a reconciliation would
    # write thousands of lines. Its warnings and errors still come through.
    logging.getLogger("stripe").setLevel(logging.WARNING)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.stdlib.get_logger(name)
