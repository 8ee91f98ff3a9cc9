"""structlog for every process: JSON lines by default, console on demand.

Standard-library loggers (the web server, dramatiq, apscheduler) go through
the same processors, so one process writes one format. Context (event id,
type, request id) is bound with contextvars by the entry points.

No line carries a secret, a header value, payload text or personal data.
Our own lines log ids, types, counts and reasons we wrote; an exception is
logged as its type, SQLSTATE and frames (`safe_exception`), never with its
local variables, and with its message only when the exception class says
its messages quote nothing it was given (`Loggable`): a database error's
message can quote a row, a library's can quote its input.
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import MutableMapping
from typing import Any

import structlog

_configured = False
# The innermost frames say where it failed; more only make the line long.
MAX_FRAMES = 8


class Loggable:
    """Mixed into an exception whose messages quote nothing of a payload, a header or a secret."""


def describe_exception(exc: BaseException) -> dict[str, Any]:
    """An exception as a log line may carry it: type, SQLSTATE, frames; the message only if `Loggable`."""
    described: dict[str, Any] = {"type": type(exc).__name__}
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str):
        described["sqlstate"] = sqlstate
    if isinstance(exc, Loggable):
        described["message"] = " ".join(str(exc).split())
    frames = traceback.extract_tb(exc.__traceback__)[-MAX_FRAMES:]
    described["frames"] = [f"{frame.filename.rsplit('/', 2)[-1]}:{frame.lineno} {frame.name}" for frame in frames]
    cause = exc.__cause__ or exc.__context__
    if cause is not None and not exc.__suppress_context__:
        described["cause"] = type(cause).__name__
    return described


def safe_exception(_logger: Any, _name: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: `exc_info` becomes `describe_exception`'s dict under `exception`."""
    exc_info = event_dict.pop("exc_info", None)
    if exc_info is True:
        exc_info = sys.exc_info()
    if isinstance(exc_info, BaseException):
        event_dict["exception"] = describe_exception(exc_info)
    elif isinstance(exc_info, tuple) and len(exc_info) == 3 and isinstance(exc_info[1], BaseException):
        event_dict["exception"] = describe_exception(exc_info[1])
    event_dict.pop("stack_info", None)
    return event_dict


def _shared_processors() -> list[structlog.types.Processor]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        safe_exception,
    ]


def formatter(log_format: str = "json") -> logging.Formatter:
    """A stdlib formatter rendering like structlog: for loggers we do not own (granian, dramatiq)."""
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback)
        if log_format == "console"
        else structlog.processors.JSONRenderer()
    )
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared_processors(),
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )


def configure(log_format: str = "json", level: int = logging.INFO) -> None:
    global _configured  # noqa: PLW0603 - configuring logging is process-wide
    if _configured:
        return
    _configured = True
    shared = _shared_processors()
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
    # "Optimization"): skip finding them for every record, a large share of
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
