"""Stopping a command cleanly on SIGINT or SIGTERM, whatever signal handling the process inherited."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Coroutine
from typing import Any

from schemas.tasks import first_of

SIGNALS = (signal.SIGINT, signal.SIGTERM)


async def until_signalled(job: Coroutine[Any, Any, None], *, name: str) -> None:
    """Run ``job`` until it ends, or until SIGINT or SIGTERM: then it is cancelled and awaited, so its clean-up runs
    (a device says goodbye instead of leaving its Will). asyncio's own Ctrl-C handling is not enough: a process that
    a shell starts in the background, or a test runner, inherits SIGINT ignored, and SIGTERM would end it at once.

    Raises:
        Exception: what ``job`` raised, as itself.
    """
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for sig in SIGNALS:
        with contextlib.suppress(NotImplementedError, RuntimeError):  # not on this platform / not the main thread
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)

    async def signalled() -> None:
        await stop.wait()

    try:
        await first_of(job, signalled(), name=name)
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
