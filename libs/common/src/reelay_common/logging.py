"""Structured logging, configured once per process: JSON lines in production, console in a terminal."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any, Literal, TextIO, cast

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from reelay_common.tracing import current_trace_id

LogFormat = Literal["auto", "json", "console"]

# Third-party libraries are chatty at INFO; their warnings and errors still reach our renderer.
_NOISY_LIBRARIES = (
    "aiokafka",
    "kafka",
    "pymongo",
    "uvicorn",
    "uvicorn.error",
    "uvicorn.access",
    "httpx",
    "httpcore",
)

# Field names whose values must never reach a log line, whoever passes them.
_SECRET_KEYS = frozenset(
    {
        "access_token",
        "refresh_token",
        "token",
        "client_secret",
        "secret",
        "password",
        "authorization",
        "api_key",
        "cookie",
        "code_verifier",
        "upload_token",
    }
)
_SECRET_SUFFIXES = ("_token", "_secret", "_password", "_api_key")
REDACTED = "[redacted]"


def _is_secret_key(key: str) -> bool:
    k = key.lower()
    return k in _SECRET_KEYS or k.endswith(_SECRET_SUFFIXES)


def redact_secrets(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Replace the values of secret-looking keys (tokens, secrets, passwords) with a marker."""
    for key in list(event_dict):
        if _is_secret_key(key) and event_dict[key] is not None:
            event_dict[key] = REDACTED
    return event_dict


def add_trace_id(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Add the current trace id (tracing on and a span recording); nothing when tracing is off."""
    trace_id = current_trace_id()
    if trace_id is not None:
        event_dict.setdefault("trace_id", trace_id)
    return event_dict


def _drop_color_message(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    # uvicorn duplicates its message with ANSI colours in `color_message`.
    event_dict.pop("color_message", None)
    return event_dict


def _use_json(fmt: LogFormat) -> bool:
    if fmt == "json":
        return True
    if fmt == "console":
        return False
    return not sys.stdout.isatty()


def configure_logging(level: str = "info", fmt: LogFormat = "auto", *, stream: TextIO | None = None) -> None:
    """Configure structlog and stdlib logging once: JSON when not a TTY (or fmt=json), context merged;
    to stdout unless `stream` says otherwise (a command whose stdout is its report logs to stderr)."""
    numeric_level = logging.getLevelNamesMapping().get(level.upper())
    if numeric_level is None:
        raise ValueError(f"unknown log level {level!r}; use debug, info, warning or error")

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.stdlib.ExtraAdder(),
        _drop_color_message,
        add_trace_id,
        redact_secrets,
    ]
    renderer: Processor
    if _use_json(fmt):
        renderer = structlog.processors.JSONRenderer()
        shared_tail: list[Processor] = [
            structlog.processors.StackInfoRenderer(),
            structlog.processors.dict_tracebacks,
        ]
    else:
        renderer = structlog.dev.ConsoleRenderer()
        shared_tail = [structlog.processors.StackInfoRenderer()]

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            *shared_tail,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached, so structlog.testing.capture_logs and a second configure_logging both take effect.
        cache_logger_on_first_use=False,
    )

    formatter = structlog.stdlib.ProcessorFormatter(
        # Records from stdlib loggers (aiokafka, pymongo, uvicorn) get the same treatment as ours.
        foreign_pre_chain=[*shared, *shared_tail],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
    )
    handler = logging.StreamHandler(stream if stream is not None else sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric_level)

    for name in _NOISY_LIBRARIES:
        lib = logging.getLogger(name)
        lib.handlers.clear()
        lib.propagate = True
        lib.setLevel(max(numeric_level, logging.WARNING))


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    """A structlog logger; bind facts to it, never secrets."""
    return cast(structlog.stdlib.BoundLogger, structlog.get_logger(name))


def bound_context() -> MutableMapping[str, Any]:
    """The context variables bound in the current task (request_id, topic, ...), for tests and hooks."""
    return structlog.contextvars.get_contextvars()


@contextmanager
def unit_of_work(**fields: Any) -> Iterator[None]:
    """Bind `fields` to every log line of one unit of work: a Kafka record, an HTTP request, a poll.

    The one place context is bound (the consumer loop, the HTTP middleware, the poll scheduler), with
    structlog's `bound_contextvars`. Whatever is learnt inside (`bind_learned`) ends with it too.
    """
    outer = set(structlog.contextvars.get_contextvars())
    with structlog.contextvars.bound_contextvars(**fields):
        try:
            yield
        finally:
            learned = set(structlog.contextvars.get_contextvars()) - outer - fields.keys()
            structlog.contextvars.unbind_contextvars(*learned)


def bind_learned(**fields: Any) -> None:
    """Add to the current unit of work a field learnt on the way (a publish_id), once."""
    structlog.contextvars.bind_contextvars(**fields)
