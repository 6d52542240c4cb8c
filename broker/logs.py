"""One structlog configuration for every wearbus process: key-value events, JSON when not on a terminal."""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO, cast

import structlog
from pydantic import BaseModel

from schemas.codec import HEALTH_NAMES
from schemas.health import FLAG, hide, redact_by_name, redact_model

#: Keys of a log event whose value is a text that quotes a health value when the event has ``health=True``.
_TEXT_KEYS = frozenset({"text", "title", "body"})
#: structlog's own keys (``level`` is also the name of a health field, the stress level).
_RESERVED = frozenset({"event", "level", "timestamp", "logger", "component", "exc_info", "exception"})


class _Stderr:
    """Whatever ``sys.stderr`` is when a line is written: a test runner swaps it per test and closes the old one,
    and a logger holding the old one would raise on every later line (in the middle of a message callback)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


def redact_health(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: health values never reach a log line, and neither do payload bytes.

    A key that names a health-marked field of the contract (``bpm``, ``pct``, ...) is redacted, so is a text
    (``text``, ``title``, ``body``) of an event logged with ``health=True``; a pydantic body is logged with its
    health fields redacted (:func:`schemas.health.redact_model`), a map by name; bytes become their length.
    """
    flagged = bool(event.get(FLAG))
    for key, value in event.items():
        if key in _RESERVED:
            continue
        if (key in HEALTH_NAMES and not (key == FLAG and isinstance(value, bool))) or (flagged and key in _TEXT_KEYS):
            event[key] = hide(value)
        elif isinstance(value, bytes | bytearray | memoryview):
            event[key] = f"<{len(value)} bytes>"
        elif isinstance(value, BaseModel):
            event[key] = redact_model(value)
        elif isinstance(value, dict | list | tuple):
            event[key] = redact_by_name(value, HEALTH_NAMES)
    return event


def configure_logging(level: str = "info", *, json: bool | None = None, stream: Any = None) -> None:
    """Configure structlog (and the standard library's logging, which paho and amqtt use).

    Args:
        level: debug, info, warning or error.
        json: JSON lines when true, a console renderer when false; by default JSON unless the stream is a tty.
        stream: where to write (stderr by default, so that stdout stays free for a command's own output).
    """
    out = stream if stream is not None else cast(TextIO, _Stderr())
    use_json = not out.isatty() if json is None else json
    lvl = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    # Tracebacks without frame locals: a frame's locals hold payload bytes, socket buffers and health values.
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if use_json
        else structlog.dev.ConsoleRenderer(
            colors=out.isatty(), exception_formatter=structlog.dev.RichTracebackFormatter(show_locals=False)
        )
    )
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_health,
    ]
    if use_json:
        # Tracebacks without frame locals: they held whole payloads (a poison message logged 6.5 MB of them).
        no_locals = structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
        processors.append(structlog.processors.ExceptionRenderer(no_locals))
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=True,
    )
    logging.basicConfig(level=max(lvl, logging.WARNING), stream=out, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("amqtt", "transitions", "aiosqlite", "asyncio"):
        logging.getLogger(noisy).setLevel(max(lvl, logging.WARNING))


def get_logger(name: str, **bound: Any) -> Any:
    """A structlog logger with ``component`` and any other context bound."""
    return structlog.get_logger(component=name, **bound)
