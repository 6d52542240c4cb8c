"""The embedded MQTT broker (amqtt 0.12.1) for zero-install runs.

amqtt queues QoS 1/2 messages for an offline ``clean_session=False`` client only when its session is not
flagged anonymous (``Broker._broadcast_message`` skips ``session.is_anonymous``), and its stock plugins
cannot mix the two kinds of client: ``AnonymousAuthPlugin(allow_anonymous=True)`` flags *every* session
anonymous, even one that logs in with a valid password, while ``FileAuthPlugin`` alone refuses clients
without a username (it answers ``None``, and amqtt refuses a connection that no plugin accepted). So this
module brings its own auth plugin, :class:`WearbusAuthPlugin`:

- a known username with the right password is authenticated and *not* anonymous, so its persistent session
  gets offline queueing (the agent);
- a known username with a wrong password is refused;
- no username, or a username the broker does not know (a device holding Mosquitto credentials), is let in
  as anonymous when ``allow_anonymous`` is on (devices), else refused.

The embedded broker is a convenience for one user on a laptop, not a security boundary: it has no ACL, and
an anonymous client can take over any client id. Use Mosquitto (``broker.mosquitto``) beyond that.
"""

from __future__ import annotations

import asyncio
import errno
import hmac
import logging
import socket
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import structlog
from amqtt.broker import Broker
from amqtt.errors import BrokerError
from amqtt.plugins.base import BaseAuthPlugin
from pwdlib import PasswordHash
from pwdlib.exceptions import UnknownHashError
from pwdlib.hashers.argon2 import Argon2Hasher

from broker.net import free_port
from schemas.errors import BrokerPortInUse, BusError, ConfigError

__all__ = ["EmbeddedBroker", "free_port", "hash_amqtt_password", "read_amqtt_password_file", "serve_embedded"]

log = structlog.get_logger(__name__)

_HASHER = PasswordHash((Argon2Hasher(),))


def hash_amqtt_password(password: str) -> str:
    """An Argon2 hash in the form amqtt's ``FileAuthPlugin`` and :class:`EmbeddedBroker` read (pwdlib)."""
    return _HASHER.hash(password)


def read_amqtt_password_file(path: Path | str) -> dict[str, str]:
    """Read an amqtt password file: ``username:<argon2 hash>`` per line, ``#`` comments.

    Raises:
        ConfigError: the file is missing, unreadable, malformed or holds a hash that is not Argon2.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read password file {path}: {exc}") from exc
    users: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        username, sep, hashed = line.partition(":")
        if not sep or not username or not Argon2Hasher.identify(hashed):
            raise ConfigError(f"{path}:{number}: expected username:<argon2 hash> (see hash_amqtt_password)")
        users[username] = hashed
    return users


class WearbusAuthPlugin(BaseAuthPlugin):  # type: ignore[misc]  # amqtt ships no type information
    """amqtt auth plugin: password logins are real sessions, everyone else may come in as anonymous.

    Loaded by amqtt from the broker config by its dotted path; configured through :class:`Config`.
    """

    @dataclass
    class Config:
        """Plugin settings (amqtt builds this from the ``plugins`` section with dacite).

        Attributes:
            users: username -> plain-text password, held in memory only.
            hashed_users: username -> Argon2 hash, from an amqtt password file.
            allow_anonymous: let clients without a known username in (flagged anonymous: no offline queue).
        """

        users: dict[str, str] = field(default_factory=dict)
        hashed_users: dict[str, str] = field(default_factory=dict)
        allow_anonymous: bool = True

    async def authenticate(self, *, session: Any) -> bool:
        """Decide whether ``session`` may connect, and whether it counts as anonymous."""
        config: WearbusAuthPlugin.Config = self.context.config
        username: str | None = session.username
        password: str = session.password or ""
        if username in config.users:
            ok = hmac.compare_digest(password.encode(), config.users[username].encode())
        elif username in config.hashed_users:
            # Argon2 takes ~0.1 s of CPU: keep it off the event loop that also routes messages.
            ok = await asyncio.to_thread(_verify_hash, password, config.hashed_users[username])
        elif config.allow_anonymous:
            session.is_anonymous = True
            return True
        else:
            self.context.logger.info("refused %r: unknown user and anonymous access is off", username)
            return False
        if not ok:
            self.context.logger.info("refused %r: wrong password", username)
            return False
        # A reused session object keeps its old flag; a password login is never anonymous.
        session.is_anonymous = False
        return True


def _verify_hash(password: str, hashed: str) -> bool:
    try:
        return _HASHER.verify(password, hashed)
    except UnknownHashError:
        return False


_PLUGIN_PATH = f"{WearbusAuthPlugin.__module__}.{WearbusAuthPlugin.__qualname__}"
_SYS_PLUGIN_PATH = "amqtt.plugins.sys.broker.BrokerSysPlugin"


class EmbeddedBroker:
    """amqtt running in-process on the current event loop.

    Example::

        async with EmbeddedBroker(port=free_port(), users={"agent": "secret"}) as broker:
            print(broker.url)

    Args:
        host: the address to listen on.
        port: the TCP port for plain MQTT (3.1.1 only: amqtt speaks no MQTT 5).
        users: username -> password of the clients that log in (the agent); their ``clean_session=False``
            sessions get offline QoS 1/2 queueing.
        allow_anonymous: let clients without a known username in (the devices); they get no offline queue.
        ws_port: also listen for MQTT over WebSocket on this port.
        password_file: an amqtt password file (``username:<argon2 hash>``) with more logins.
        sys_interval: publish ``$SYS`` statistics every this many seconds (off by default).
        quiet: set amqtt's loggers to WARNING unless the application has set a level on them; amqtt logs
            every connection at INFO.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 1883,
        *,
        users: dict[str, str] | None = None,
        allow_anonymous: bool = True,
        ws_port: int | None = None,
        password_file: Path | str | None = None,
        sys_interval: int | None = None,
        quiet: bool = True,
    ) -> None:
        for p in (port, ws_port):
            if p is not None and not 1 <= p <= 65535:
                raise ConfigError(f"port {p} is not between 1 and 65535")
        if ws_port == port:
            raise ConfigError(f"the MQTT and WebSocket listeners cannot share port {port}")
        if sys_interval is not None and sys_interval < 1:
            raise ConfigError("sys_interval must be at least 1 second")
        self.host = host
        self.port = port
        self.ws_port = ws_port
        self._users = dict(users or {})
        self._password_file = password_file
        self._allow_anonymous = allow_anonymous
        self._sys_interval = sys_interval
        self._quiet = quiet
        self._broker: Any = None

    @property
    def url(self) -> str:
        """The broker URL for clients, e.g. ``mqtt://127.0.0.1:1883``."""
        return f"mqtt://{_url_host(self.host)}:{self.port}"

    @property
    def ws_url(self) -> str | None:
        """The WebSocket URL, if a WebSocket listener was asked for."""
        return None if self.ws_port is None else f"ws://{_url_host(self.host)}:{self.ws_port}"

    @property
    def running(self) -> bool:
        """Whether the broker is started."""
        return self._broker is not None

    def config(self) -> dict[str, Any]:
        """The amqtt broker configuration this broker starts with."""
        hashed = read_amqtt_password_file(self._password_file) if self._password_file else {}
        if not self._allow_anonymous and not (self._users or hashed):
            raise ConfigError("anonymous access is off and no users are given: nobody could connect")
        listeners: dict[str, Any] = {
            "default": {"type": "tcp", "bind": f"{self.host}:{self.port}", "max_connections": 0},
        }
        if self.ws_port is not None:
            listeners["ws"] = {"type": "ws", "bind": f"{self.host}:{self.ws_port}", "max_connections": 0}
        # Only the plugins we need: the default set adds event and packet loggers and $SYS every 20 s.
        plugins: dict[str, Any] = {
            _PLUGIN_PATH: {
                "users": self._users,
                "hashed_users": hashed,
                "allow_anonymous": self._allow_anonymous,
            },
        }
        if self._sys_interval is not None:
            plugins[_SYS_PLUGIN_PATH] = {"sys_interval": self._sys_interval}
        return {"listeners": listeners, "plugins": plugins}

    async def __aenter__(self) -> Self:
        if self._broker is not None:
            raise BusError("this embedded broker is already running")
        config = self.config()
        for port in (self.port, self.ws_port):
            if port is not None:
                self._check_port(port)
        if self._quiet:
            amqtt_log = logging.getLogger("amqtt")
            if amqtt_log.level == logging.NOTSET:
                amqtt_log.setLevel(logging.WARNING)
        broker = Broker(config)
        try:
            await broker.start()
        except BrokerError as exc:
            await _close_listeners(broker)
            if _is_addr_in_use(exc):
                raise BrokerPortInUse(self._in_use_message(self.port)) from exc
            raise BusError(f"the embedded broker did not start: {exc}") from exc
        self._broker = broker
        log.info("embedded_broker_started", url=self.url, ws_url=self.ws_url, users=sorted(self._users))
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        broker, self._broker = self._broker, None
        if broker is not None:
            _drop_clients(broker)
            try:
                # amqtt 0.12 can hang in shutdown() while a QoS 1 delivery waits for its PUBACK: bound it.
                async with asyncio.timeout(10.0):
                    await broker.shutdown()
            except TimeoutError:
                log.warning("embedded_broker_shutdown_timed_out", url=self.url)
                await _close_listeners(broker)
            log.info("embedded_broker_stopped", url=self.url)

    def _check_port(self, port: int) -> None:
        """Fail early, with advice, when the port is taken (amqtt would log a traceback first)."""
        try:
            infos = socket.getaddrinfo(self.host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise ConfigError(f"cannot resolve broker host {self.host!r}: {exc}") from exc
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as sock:
            # The same option asyncio.start_server uses, so a port in TIME_WAIT does not count as taken.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise BrokerPortInUse(self._in_use_message(port)) from exc
                raise BusError(f"cannot listen on {self.host}:{port}: {exc}") from exc

    def _in_use_message(self, port: int) -> str:
        host = _url_host(self.host)
        return (
            f"port {port} on {self.host} is already in use, so the embedded broker cannot listen there. "
            f"Choose another port with --port (e.g. --port {port + 1 if port < 65535 else 1884}), or attach "
            f"to the broker already there with --broker mqtt://{host}:{port}"
        )


async def serve_embedded(
    host: str,
    port: int,
    users: dict[str, str] | None,
    allow_anonymous: bool,
    ws_port: int | None,
) -> None:
    """Run the embedded broker until cancelled (``wearbus broker``).

    Raises:
        BrokerPortInUse: the port is taken.
        ConfigError: the settings cannot work.
    """
    async with EmbeddedBroker(host, port, users=users, allow_anonymous=allow_anonymous, ws_port=ws_port):
        await asyncio.Event().wait()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _is_addr_in_use(exc: BaseException) -> bool:
    """Whether an OSError EADDRINUSE is somewhere in the cause chain."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno == errno.EADDRINUSE:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


async def _close_listeners(broker: Any) -> None:
    """Close listeners a failed start left open (amqtt cannot shut down a broker that did not start)."""
    for server in list(getattr(broker, "_servers", {}).values()):
        try:
            await server.close_instance()
        except OSError:
            log.warning("embedded_broker_listener_close_failed", exc_info=True)


def _drop_clients(broker: Broker) -> None:
    """Close every client's socket before ``shutdown()``, as a broker process that ends does.

    amqtt 0.12's ``shutdown()`` stops each session's handler and waits for its reader task, which can hang in its
    connection-closed handling while the client keeps writing (seen with a subscriber acknowledging a stream of
    QoS 1 deliveries); the client then stays connected to a broker that is gone. Closing the sockets first ends
    every reader on its own and tells every client at once.
    """
    for _session, handler in list(broker._sessions.values()):
        writer = getattr(getattr(handler, "writer", None), "_writer", None)
        transport = getattr(writer, "transport", None)
        if transport is not None:
            transport.abort()
