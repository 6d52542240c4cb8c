"""The console's web server (aiohttp): static page, a Server-Sent Events stream of state deltas, the inject endpoint.

Served with aiohttp's web server (Home Assistant's choice too: one maintained HTTP/1.1 implementation with streaming
responses, body limits and a graceful shutdown, instead of a hand-written parser). Routes:

- ``GET /`` the page; ``GET /static/app.js`` and ``/static/style.css`` its script and style (nothing from the
  internet: the Content-Security-Policy allows only this origin);
- ``GET /events`` ``text/event-stream``: a ``snapshot`` event on connect, then ``delta`` events at most
  ``1 / tick_s`` times a second (5 by default), and a comment line every 15 s to keep proxies and the browser awake;
- ``GET /api/snapshot`` the full state as JSON (for scripts and tests);
- ``GET /healthz`` ``ok``;
- ``POST /api/inject`` (only with ``allow_inject``) ``{"topic": ..., "data": {...}}``: validated like
  ``wearbus pub`` and published, or answered with ``400`` and the validation error.

Every error is JSON (``{"ok": false, "error": ...}``) with its status. On a loopback address only a ``Host`` naming
loopback is served (421 otherwise), so a page elsewhere cannot rebind its DNS name to the console.

Hundreds of messages a second do not reach the page one by one: the consumer folds them into the
:class:`~console.state.ConsoleState`, and the broadcaster sends one delta per tick. A page that cannot keep
up (its queue holds more than ``max_backlog`` frames) is sent a fresh snapshot instead of the backlog.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import ipaddress
import json
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from aiohttp import web

from broker.bus import MqttProtocol, TransportName
from broker.client import Bus, BusOptions, Rejected
from broker.logs import get_logger
from console.state import ConsoleState, Limits, build_injection
from schemas.envelope import new_id, now_ms
from schemas.errors import BusConnectionError, ConfigError, ContractError, PublishError

STATIC_DIR = Path(__file__).parent / "static"
_STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/style.css": ("style.css", "text/css; charset=utf-8"),
}
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_SECURITY_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Content-Security-Policy": _CSP,
}
_MAX_LINE = 16 * 1024
_MAX_HEADERS = 64
_MAX_BODY = 64 * 1024
_PING_S = 15.0
_WRITE_TIMEOUT_S = 30.0
_SHUTDOWN_S = 5.0
_SUBSCRIPTION = "wb/#"
_BUS_CLOSE_S = 3.0
_MAX_INBOX = 20_000  # QoS 0 messages waiting for the consumer before the oldest are dropped (and counted)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(slots=True, eq=False)
class _Page:
    """One connected event stream: frames waiting to be written, bounded."""

    max_backlog: int
    frames: deque[bytes] = field(default_factory=deque)
    resync: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def push(self, frame: bytes) -> None:
        if len(self.frames) >= self.max_backlog:
            # It cannot keep up: drop the backlog and send it the whole state once it can take more.
            self.frames.clear()
            self.resync = True
        else:
            self.frames.append(frame)
        self.wake.set()


def sse_frame(event: str, data: Any) -> bytes:
    """One Server-Sent Events frame (JSON data on one line: ``json.dumps`` escapes newlines)."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return f"event: {event}\ndata: {text}\n\n".encode()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _host_name(host: str) -> str:
    """The name of a ``Host`` header without its port (``[::1]:80`` -> ``[::1]``)."""
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0]


def _json(status: int, data: Any, *, allow: str | None = None) -> web.Response:
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    response = web.Response(status=status, text=body, content_type="application/json", charset="utf-8")
    if allow:
        response.headers["Allow"] = allow
    return response


def _error(status: int, message: str, *, allow: str | None = None) -> web.Response:
    return _json(status, {"ok": False, "error": message}, allow=allow)


class ConsoleServer:
    """The live console: an HTTP server and a bus consumer. Use ``async with ConsoleServer(url) as console:``.

    Args:
        broker_url: the broker to watch.
        host: the address to listen on (loopback by default; the page shows health data).
        port: the HTTP port (0: any free port; read :attr:`port` after entering).
        allow_inject: offer the page a form to inject an utterance or a gesture (loopback only).
        tick_s: how often deltas go out (0.2 s: at most 5 updates a second).
        limits: how much history to keep.
        bus_options: the bus settings (the URL, name and reject handler are set here).
        clock: ms since the epoch (the wall clock by default).
        max_backlog: frames queued for a slow page before it is sent a snapshot instead.

    Raises:
        ConfigError: (on entering) the port is taken, or injection is asked for on a non-loopback address.
    """

    def __init__(
        self,
        broker_url: str,
        *,
        host: str = "127.0.0.1",
        port: int = 8787,
        allow_inject: bool = False,
        tick_s: float = 0.2,
        limits: Limits | None = None,
        bus_options: BusOptions | None = None,
        clock: Callable[[], int] = now_ms,
        max_backlog: int = 25,
        show_health: bool = False,
    ) -> None:
        if allow_inject and not _is_loopback(host):
            raise ConfigError(f"--allow-inject needs a loopback address to listen on, not {host!r}")
        if not 0 <= port <= 65535:
            raise ConfigError(f"port {port} is not between 0 and 65535")
        self.host = host
        self.port = port
        self.allow_inject = allow_inject
        self.tick_s = tick_s
        self.max_backlog = max_backlog
        self.state = ConsoleState(limits, allow_inject=allow_inject, show_health=show_health)
        self._clock = clock
        base = bus_options or BusOptions(max_inbox=_MAX_INBOX)
        options = dataclasses.replace(
            base,
            url=broker_url,
            name="console",
            # Start serving at once even if the broker is away: the page shows it, and the bus keeps retrying.
            connect_timeout_s=0,
            on_reject=[*base.on_reject, self._on_reject],
        )
        self.bus = Bus(options)
        self._static: dict[str, tuple[bytes, str]] = {}
        self._runner: web.AppRunner | None = None
        self._stack = contextlib.AsyncExitStack()
        self._tasks: list[asyncio.Task[None]] = []
        self._closing = asyncio.Event()
        self._pages: set[_Page] = set()
        self._log = get_logger("console")

    @property
    def url(self) -> str:
        """The page's address, e.g. ``http://127.0.0.1:8787/``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    @property
    def pages(self) -> int:
        """Pages connected to the event stream now."""
        return len(self._pages)

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        for path, (name, ctype) in _STATIC.items():
            try:
                self._static[path] = ((STATIC_DIR / name).read_bytes(), ctype)
            except OSError as exc:
                raise ConfigError(f"the console's page is missing from the installation ({exc})") from exc
        await self._start_http()
        try:
            await self._stack.enter_async_context(self.bus)
            await self.bus.subscribe(_SUBSCRIPTION, 0)
            group = await self._stack.enter_async_context(asyncio.TaskGroup())
            self._tasks = [
                group.create_task(self._consume(), name="console.consume"),
                group.create_task(self._broadcast(), name="console.broadcast"),
            ]
        except BaseException:
            await self._stop_http()
            await self._stack.aclose()
            raise
        self._log.info("console_serving", url=self.url, broker=self.bus.url.redacted(), inject=self.allow_inject)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stop_http()
        for task in self._tasks:
            task.cancel()
        self._tasks = []
        try:
            # The task group waits for its (cancelled) tasks, then the bus closes. Bounded: on Python 3.11,
            # asyncio.wait_for (inside aiomqtt) can swallow a cancellation that arrives together with the broker's
            # reply (bpo-42130), leaving the bus task waiting; the timeout cancels again.
            async with asyncio.timeout(_BUS_CLOSE_S):
                await self._stack.aclose()
        except TimeoutError:
            self._log.warning("console_bus_close_slow", timeout_s=_BUS_CLOSE_S)

    async def _start_http(self) -> None:
        app = web.Application(middlewares=[self._guard], client_max_size=_MAX_BODY, handler_args=self._limits())
        app.on_response_prepare.append(_add_security_headers)
        app.router.add_route("*", "/api/inject", self._inject)
        app.router.add_route("*", "/{tail:.*}", self._get)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=_SHUTDOWN_S)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            await self._stop_http()
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"port {self.port} on {self.host} is already in use: choose another with --port "
                    f"(e.g. --port {self.port + 1})"
                ) from exc
            raise ConfigError(f"the console cannot listen on {self.host}:{self.port}: {exc}") from exc
        addresses = self._runner.addresses  # (host, port, ...) of each socket listened on
        if addresses:
            self.port = int(addresses[0][1])

    @staticmethod
    def _limits() -> dict[str, Any]:
        return {"max_line_size": _MAX_LINE, "max_field_size": _MAX_LINE, "max_headers": _MAX_HEADERS}

    async def _stop_http(self) -> None:
        runner, self._runner = self._runner, None
        # Event streams end by themselves once they see that the console is closing; then the server stops.
        self._closing.set()
        for page in self._pages:
            page.wake.set()
        if runner is not None:
            await runner.cleanup()

    # ------------------------------------------------------------------ the bus side

    def _on_reject(self, rejected: Rejected) -> None:
        self.state.reject_error(rejected.topic, rejected.error, self._clock())

    async def _consume(self) -> None:
        async for batch in self.bus.batches(500):
            now = self._clock()
            for message in batch:
                try:
                    self.state.feed(message, now)
                except Exception:  # noqa: BLE001  # a bug in one view must not stop the console; it is logged
                    self._log.exception("console_feed_failed", topic=message.topic)

    def _refresh(self, now: int) -> None:
        """Tell the state what the bus knows (the bus has no callback for a lost connection, so it is polled)."""
        self.state.set_link(self.bus.connected, self.bus.url.redacted(), now)
        self.state.set_dropped(self.bus.stats.dropped)

    def snapshot(self) -> dict[str, Any]:
        """The whole state now, as a page gets it on connecting."""
        now = self._clock()
        self._refresh(now)
        return self.state.snapshot(now)

    async def _broadcast(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            now = self._clock()
            self._refresh(now)
            delta = self.state.delta(now)
            if delta is None or not self._pages:
                continue
            frame = sse_frame("delta", delta)
            for page in list(self._pages):
                page.push(frame)

    # ------------------------------------------------------------------ HTTP

    @web.middleware
    async def _guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Loopback Host only (on a loopback address), and every error as JSON."""
        if _is_loopback(self.host) and not _is_loopback(_host_name(request.host)):
            return _error(421, "this console answers only to a loopback Host")
        try:
            return await handler(request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            allow = exc.headers.get("Allow")
            return _error(exc.status, exc.reason if exc.text is None else exc.text.strip(), allow=allow)

    async def _get(self, request: web.Request) -> web.StreamResponse:
        path, method = request.path, request.method
        if method not in {"GET", "HEAD"}:
            return _error(405, f"{method} is not allowed here", allow="GET")
        if path in self._static:
            content, ctype = self._static[path]
            return web.Response(body=content, headers={"Content-Type": ctype})
        if path == "/events":
            return await self._events(request)
        if path == "/api/snapshot":
            return _json(200, self.snapshot())
        if path == "/healthz":
            return web.Response(text="ok\n", content_type="text/plain", charset="utf-8")
        if path == "/favicon.ico":
            return web.Response(status=204, headers={"Content-Type": "image/x-icon"})
        return _error(404, f"nothing at {path}")

    async def _events(self, request: web.Request) -> web.StreamResponse:
        page = _Page(self.max_backlog)
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream; charset=utf-8", "X-Accel-Buffering": "no"}
        )
        await response.prepare(request)
        try:
            await self._write(response, b"retry: 1000\n\n" + sse_frame("snapshot", self.snapshot()))
            self._pages.add(page)
            while not self._closing.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(_PING_S):
                        await page.wake.wait()
                if self._closing.is_set():
                    break
                page.wake.clear()
                if page.resync:
                    page.resync = False
                    page.frames.clear()
                    chunk = sse_frame("snapshot", self.snapshot())
                else:
                    chunk = b"".join(page.frames) or b": ping\n\n"
                    page.frames.clear()
                await self._write(response, chunk)
        except (ConnectionError, TimeoutError):
            pass  # the page went away (or stopped reading)
        finally:
            self._pages.discard(page)
        return response

    @staticmethod
    async def _write(response: web.StreamResponse, chunk: bytes) -> None:
        async with asyncio.timeout(_WRITE_TIMEOUT_S):
            await response.write(chunk)

    async def _inject(self, request: web.Request) -> web.StreamResponse:
        if request.method != "POST":
            return _error(405, "POST a JSON object here", allow="POST")
        if not self.allow_inject:
            return _error(403, "injection is off: start the console with --allow-inject")
        if not request.content_type.startswith("application/json"):
            # A form from another site cannot send application/json without a CORS preflight we never allow.
            return _error(415, "send Content-Type: application/json")
        origin = request.headers.get("Origin")
        if origin is not None and not _is_loopback(_host_name(origin.split("://", 1)[-1])):
            return _error(403, f"requests from {origin} are not accepted")
        try:
            obj = json.loads(await request.read())
        except (ValueError, UnicodeDecodeError) as exc:
            return _error(400, f"the request is not valid JSON: {exc}")
        if not isinstance(obj, dict):
            return _error(400, 'send {"topic": "...", "data": {...}}')
        topic = obj.get("topic")
        try:
            message, qos = build_injection(
                topic if isinstance(topic, str) else "", obj.get("data"), ts=self._clock(), msg_id=new_id()
            )
        except ContractError as exc:
            return _json(400, {"ok": False, "error": f"invalid: {exc}", "field": exc.field, "reason": exc.reason})
        try:
            await self.bus.publish(message.topic, message.envelope, qos=qos, wait=qos > 0)
        except (BusConnectionError, PublishError) as exc:
            return _error(503, f"not published: {exc}")
        self._log.info("console_injected", topic=message.topic, id=message.envelope.id)
        return _json(
            200,
            {"ok": True, "topic": message.topic, "id": message.envelope.id, "type": getattr(message.data, "type", "")},
        )


async def _add_security_headers(_request: web.Request, response: web.StreamResponse) -> None:
    for name, value in _SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


async def serve_console(
    broker_url: str,
    host: str = "127.0.0.1",
    port: int = 8787,
    allow_inject: bool = False,
    ready: asyncio.Future[str] | None = None,
    *,
    protocol: MqttProtocol = "auto",
    transport: TransportName = "auto",
    show_health: bool = False,
) -> None:
    """Serve the console until cancelled (``wearbus console``, ``wearbus up --console``).

    Args:
        broker_url: the broker to watch.
        host: the address to listen on.
        port: the HTTP port (0: any free one).
        allow_inject: let the page inject utterances and gestures.
        ready: set to the page's URL once it is served (or to the error if the console cannot start).
        protocol: the MQTT version its bus asks for.
        transport: the MQTT client under its bus.
        show_health: show health values (vitals, the health part of the context, alert texts); redacted otherwise.

    Raises:
        ConfigError: the port is taken, or injection is asked for on a non-loopback address.
    """
    try:
        options = BusOptions(max_inbox=_MAX_INBOX, protocol=protocol, transport=transport)
        console = ConsoleServer(
            broker_url, host=host, port=port, allow_inject=allow_inject, bus_options=options, show_health=show_health
        )
        async with console:
            if ready is not None and not ready.done():
                ready.set_result(console.url)
            await asyncio.Event().wait()
    except BaseException as exc:
        if ready is not None and not ready.done():
            if isinstance(exc, Exception):
                ready.set_exception(exc)
            else:
                ready.cancel()
        raise
