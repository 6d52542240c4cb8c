"""The live web console: a page on 127.0.0.1 that shows devices, the glasses' display, vitals, tasks and the timeline.

Public API: :class:`ConsoleState` (pure, bounded state), :class:`ConsoleServer` (HTTP + SSE server and bus
consumer) and :func:`serve_console`. The ``wearbus console`` command is in :mod:`console.cli`.
"""

from console.server import ConsoleServer, serve_console
from console.state import ConsoleState, Limits

__all__ = ["ConsoleServer", "ConsoleState", "Limits", "serve_console"]
