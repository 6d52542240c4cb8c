"""One structlog configuration for every wearbus process: key-value events, JSON when not on a terminal."""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO, cast

import structlog


class _Stderr:
    """Whatever ``sys.stderr`` is when a line is written: a test runner swaps it per test and closes the old one,
    and a logger holding the old one would raise on every later line (in the middle of a message callback)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()

    def isatty(self) -> bool:
        return sys.stderr.isatty()


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
    renderer: Any = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
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
