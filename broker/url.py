"""Broker URLs: ``mqtt://user:pass@host:1883``, ``mqtts://host:8883?ca=ca.pem``, ``ws://host:8080/mqtt``."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

from schemas.errors import ConfigError

_DEFAULT_PORTS = {"mqtt": 1883, "tcp": 1883, "mqtts": 8883, "ssl": 8883, "ws": 8080, "wss": 8443}


@dataclass(frozen=True, slots=True)
class BrokerUrl:
    """A parsed broker URL.

    Attributes:
        scheme: mqtt, mqtts, ws or wss.
        host: host name or address.
        port: TCP port.
        username: user name, if any.
        password: password, if any.
        path: the WebSocket path (ws/wss only).
        ca: a CA file for TLS (``?ca=...``).
        insecure: skip TLS host-name verification (``?insecure=1``), for test certificates only.
    """

    scheme: str
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    path: str = "/mqtt"
    ca: str | None = None
    insecure: bool = False

    @property
    def tls(self) -> bool:
        """Whether the connection uses TLS."""
        return self.scheme in {"mqtts", "ssl", "wss"}

    @property
    def websocket(self) -> bool:
        """Whether the transport is WebSockets."""
        return self.scheme in {"ws", "wss"}

    def redacted(self) -> str:
        """The URL without its password, for logs and messages."""
        auth = f"{self.username}:***@" if self.username else ""
        path = self.path if self.websocket else ""
        return f"{self.scheme}://{auth}{self.host}:{self.port}{path}"

    def with_credentials(self, username: str | None, password: str | None) -> BrokerUrl:
        """A copy with other credentials (an explicit one wins over the URL's)."""
        return BrokerUrl(
            self.scheme,
            self.host,
            self.port,
            username if username is not None else self.username,
            password if password is not None else self.password,
            self.path,
            self.ca,
            self.insecure,
        )

    @classmethod
    def parse(cls, url: str) -> BrokerUrl:
        """Parse a broker URL; a bare ``host:port`` means ``mqtt://host:port``.

        Raises:
            ConfigError: the scheme is unknown or the port is not a number.
        """
        if "://" not in url:
            url = f"mqtt://{url}"
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in _DEFAULT_PORTS:
            raise ConfigError(f"broker URL {url!r}: scheme must be one of mqtt, mqtts, ws, wss")
        try:
            port = parts.port or _DEFAULT_PORTS[scheme]
        except ValueError as exc:
            raise ConfigError(f"broker URL {url!r}: the port is not a number") from exc
        query = parse_qs(parts.query)
        return cls(
            scheme=scheme,
            host=parts.hostname or "127.0.0.1",
            port=port,
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            path=parts.path or "/mqtt",
            ca=query.get("ca", [None])[0],
            insecure=query.get("insecure", ["0"])[0] in {"1", "true", "yes"},
        )
