"""The console's web server: static page, a Server-Sent Events stream of state deltas, and the opt-in inject endpoint.

A tiny HTTP/1.1 server on :func:`asyncio.start_server` (no web framework): every response but the event stream is
sent with ``Connection: close``. Routes:

- ``GET /`` the page; ``GET /static/app.js`` and ``/static/style.css`` its script and style (nothing from the
  internet: the Content-Security-Policy allows only this origin);
- ``GET /events`` ``text/event-stream``: a ``snapshot`` event on connect, then ``delta`` events at most
  ``1 / tick_s`` times a second (5 by default), and a comment line every 15 s to keep proxies and the browser awake;
- ``GET /api/snapshot`` the full state as JSON (for scripts and tests);
- ``GET /healthz`` ``ok``;
- ``POST /api/inject`` (only with ``allow_inject``) ``{"topic": ..., "data": {...}}``: validated like
  ``wearbus pub`` and published, or answered with ``400`` and the validation error.

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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

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
_REASONS = {
    200: "OK",
    204: "No Content",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
    421: "Misdirected Request",
    503: "Service Unavailable",
}
_MAX_LINE = 16 * 1024
_MAX_HEADERS = 64
_MAX_BODY = 64 * 1024
_REQUEST_TIMEOUT_S = 10.0
_PING_S = 15.0
_WRITE_TIMEOUT_S = 30.0
_SUBSCRIPTION = "wb/#"
_BUS_CLOSE_S = 3.0
_MAX_INBOX = 20_000  # QoS 0 messages waiting for the consumer before the oldest are dropped (and counted)


@dataclass(slots=True)
class _Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes = b""


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


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
        self.state = ConsoleState(limits, allow_inject=allow_inject)
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
        self._server: asyncio.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._handlers: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}
        self._closing = False
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
        try:
            self._server = await asyncio.start_server(self._handle, self.host, self.port, limit=_MAX_LINE)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"port {self.port} on {self.host} is already in use: choose another with --port "
                    f"(e.g. --port {self.port + 1})"
                ) from exc
            raise ConfigError(f"the console cannot listen on {self.host}:{self.port}: {exc}") from exc
        self.port = int(self._server.sockets[0].getsockname()[1])
        try:
            await self.bus.__aenter__()
            await self.bus.subscribe(_SUBSCRIPTION, 0)
        except BaseException:
            await self._close_server()
            raise
        self._tasks = [
            asyncio.create_task(self._consume(), name="console.consume"),
            asyncio.create_task(self._broadcast(), name="console.broadcast"),
        ]
        self._log.info("console_serving", url=self.url, broker=self.bus.url.redacted(), inject=self.allow_inject)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        await self._close_server()
        try:
            # Bounded: on Python 3.11, asyncio.wait_for (inside aiomqtt) can swallow a cancellation that arrives
            # together with the broker's reply (bpo-42130), leaving the bus task waiting; the timeout cancels again.
            await asyncio.wait_for(self.bus.__aexit__(exc_type, exc, tb), _BUS_CLOSE_S)
        except TimeoutError:
            self._log.warning("console_bus_close_slow", timeout_s=_BUS_CLOSE_S)

    async def _close_server(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        # Let every handler end by itself (a cancelled one would be logged by asyncio's streams as an error):
        # closing its socket ends a pending read, and a woken event stream sees that the server is closing.
        self._closing = True
        for page in self._pages:
            page.wake.set()
        for writer in list(self._handlers.values()):
            writer.close()
        handlers = list(self._handlers)
        if handlers:
            await asyncio.wait(handlers, timeout=5.0)
        await server.wait_closed()

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

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers[task] = writer
        try:
            try:
                request = await asyncio.wait_for(self._read(reader), _REQUEST_TIMEOUT_S)
            except _BadRequest as exc:
                await self._json(writer, exc.status, {"ok": False, "error": str(exc)})
                return
            except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                return
            await self._route(request, reader, writer)
        except (ConnectionError, TimeoutError):
            pass  # the page went away
        finally:
            if task is not None:
                self._handlers.pop(task, None)
            writer.close()
            with contextlib.suppress(ConnectionError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 2.0)

    async def _read(self, reader: asyncio.StreamReader) -> _Request:
        try:
            line = await reader.readuntil(b"\r\n")
            parts = line.decode("latin-1").strip().split(" ")
            if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
                raise _BadRequest(400, "malformed request line")
            method, target = parts[0], parts[1]
            headers: dict[str, str] = {}
            for _ in range(_MAX_HEADERS + 1):
                raw = await reader.readuntil(b"\r\n")
                if raw == b"\r\n":
                    break
                name, sep, value = raw.decode("latin-1").partition(":")
                if not sep:
                    raise _BadRequest(400, "malformed header")
                headers[name.strip().lower()] = value.strip()
            else:
                raise _BadRequest(400, "too many headers")
        except (asyncio.LimitOverrunError, ValueError) as exc:
            raise _BadRequest(400, "request line or header too long") from exc
        body = b""
        length = headers.get("content-length", "0")
        if not length.isdigit():
            raise _BadRequest(400, "bad Content-Length")
        if int(length) > _MAX_BODY:
            raise _BadRequest(413, f"the body is larger than {_MAX_BODY} bytes")
        if int(length):
            body = await reader.readexactly(int(length))
        path = target.split("?", 1)[0]
        return _Request(method, path, headers, body)

    def _host_ok(self, request: _Request) -> bool:
        """On loopback, only a Host naming loopback is served (a page from elsewhere cannot rebind its DNS to us)."""
        if not _is_loopback(self.host):
            return True
        host = request.headers.get("host", "")
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return _is_loopback(name)

    async def _route(self, request: _Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._host_ok(request):
            await self._json(writer, 421, {"ok": False, "error": "this console answers only to a loopback Host"})
            return
        path, method = request.path, request.method
        if path == "/api/inject":
            if method != "POST":
                await self._json(writer, 405, {"ok": False, "error": "POST a JSON object here"}, allow="POST")
                return
            status, answer = await self._inject(request)
            await self._json(writer, status, answer)
            return
        if method not in {"GET", "HEAD"}:
            await self._json(writer, 405, {"ok": False, "error": f"{method} is not allowed here"}, allow="GET")
            return
        if path in self._static:
            content, ctype = self._static[path]
            await self._send(writer, 200, content if method == "GET" else b"", ctype, length=len(content))
        elif path == "/events":
            await self._events(reader, writer)
        elif path == "/api/snapshot":
            await self._json(writer, 200, self.snapshot())
        elif path == "/healthz":
            await self._send(writer, 200, b"ok\n", "text/plain; charset=utf-8")
        elif path == "/favicon.ico":
            await self._send(writer, 204, b"", "image/x-icon")
        else:
            await self._json(writer, 404, {"ok": False, "error": f"nothing at {path}"})

    async def _send(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        body: bytes,
        ctype: str,
        *,
        length: int | None = None,
        allow: str | None = None,
    ) -> None:
        head = [
            f"HTTP/1.1 {status} {_REASONS.get(status, 'OK')}",
            f"Content-Type: {ctype}",
            f"Content-Length: {len(body) if length is None else length}",
            "Cache-Control: no-store",
            "X-Content-Type-Options: nosniff",
            "Referrer-Policy: no-referrer",
            f"Content-Security-Policy: {_CSP}",
            "Connection: close",
        ]
        if allow:
            head.append(f"Allow: {allow}")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)
        await asyncio.wait_for(writer.drain(), _WRITE_TIMEOUT_S)

    async def _json(self, writer: asyncio.StreamWriter, status: int, data: Any, *, allow: str | None = None) -> None:
        body = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
        await self._send(writer, status, body, "application/json; charset=utf-8", allow=allow)

    async def _events(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        page = _Page(self.max_backlog)
        head = (
            "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nCache-Control: no-store\r\n"
            "X-Accel-Buffering: no\r\nConnection: keep-alive\r\n\r\n"
        )
        writer.write(head.encode() + b"retry: 1000\n\n" + sse_frame("snapshot", self.snapshot()))
        await asyncio.wait_for(writer.drain(), _WRITE_TIMEOUT_S)
        self._pages.add(page)
        # A page that goes away closes its socket: the read returns, and we stop writing to it.
        gone = asyncio.ensure_future(reader.read(1024))
        try:
            while not gone.done() and not self._closing:
                woken = asyncio.ensure_future(page.wake.wait())
                try:
                    await asyncio.wait({woken, gone}, timeout=_PING_S, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    woken.cancel()
                if gone.done() or self._closing:
                    break
                page.wake.clear()
                if page.resync:
                    page.resync = False
                    page.frames.clear()
                    chunk = sse_frame("snapshot", self.snapshot())
                else:
                    chunk = b"".join(page.frames) or b": ping\n\n"
                    page.frames.clear()
                writer.write(chunk)
                await asyncio.wait_for(writer.drain(), _WRITE_TIMEOUT_S)
        finally:
            self._pages.discard(page)
            gone.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await gone

    async def _inject(self, request: _Request) -> tuple[int, dict[str, Any]]:
        if not self.allow_inject:
            return 403, {"ok": False, "error": "injection is off: start the console with --allow-inject"}
        ctype = request.headers.get("content-type", "")
        if not ctype.startswith("application/json"):
            # A form from another site cannot send application/json without a CORS preflight we never allow.
            return 415, {"ok": False, "error": "send Content-Type: application/json"}
        origin = request.headers.get("origin")
        if origin is not None and not _is_loopback(origin.split("://", 1)[-1].rsplit(":", 1)[0]):
            return 403, {"ok": False, "error": f"requests from {origin} are not accepted"}
        try:
            obj = json.loads(request.body)
        except (ValueError, UnicodeDecodeError) as exc:
            return 400, {"ok": False, "error": f"the request is not valid JSON: {exc}"}
        if not isinstance(obj, dict):
            return 400, {"ok": False, "error": 'send {"topic": "...", "data": {...}}'}
        topic = obj.get("topic")
        try:
            message, qos = build_injection(
                topic if isinstance(topic, str) else "", obj.get("data"), ts=self._clock(), msg_id=new_id()
            )
        except ContractError as exc:
            return 400, {"ok": False, "error": f"invalid: {exc}", "field": exc.field, "reason": exc.reason}
        try:
            await self.bus.publish(message.topic, message.envelope, qos=qos, wait=qos > 0)
        except (BusConnectionError, PublishError) as exc:
            return 503, {"ok": False, "error": f"not published: {exc}"}
        self._log.info("console_injected", topic=message.topic, id=message.envelope.id)
        return 200, {
            "ok": True,
            "topic": message.topic,
            "id": message.envelope.id,
            "type": getattr(message.data, "type", ""),
        }


async def serve_console(
    broker_url: str,
    host: str = "127.0.0.1",
    port: int = 8787,
    allow_inject: bool = False,
    ready: asyncio.Future[str] | None = None,
) -> None:
    """Serve the console until cancelled (``wearbus console``, ``wearbus up --console``).

    Args:
        broker_url: the broker to watch.
        host: the address to listen on.
        port: the HTTP port (0: any free one).
        allow_inject: let the page inject utterances and gestures.
        ready: set to the page's URL once it is served (or to the error if the console cannot start).

    Raises:
        ConfigError: the port is taken, or injection is asked for on a non-loopback address.
    """
    try:
        console = ConsoleServer(broker_url, host=host, port=port, allow_inject=allow_inject)
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
