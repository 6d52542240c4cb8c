"""mosquitto.conf: listeners, TLS, persistence that survives kill -9, limits; local, systemd, compose."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from schemas.codec import MAX_PAYLOAD, PACKET_OVERHEAD
from schemas.errors import ConfigError


@dataclass(frozen=True, slots=True)
class TlsListener:
    """A TLS listener (MQTT over TLS, conventionally port 8883).

    Attributes:
        cafile: the CA certificate (PEM) that signed the server certificate (and client certs, if required).
        certfile: the server certificate (PEM).
        keyfile: the server private key (PEM); must be readable by the mosquitto user.
        port: the TCP port.
        host: the address to bind; ``None`` binds every interface.
        require_certificate: demand a client certificate signed by ``cafile`` (mutual TLS) in addition to
            the password.
    """

    cafile: str
    certfile: str
    keyfile: str
    port: int = 8883
    host: str | None = None
    require_certificate: bool = False


@dataclass(frozen=True, slots=True)
class Limits:
    """Broker limits. The defaults are sized for the agent's backlog (performance.md P2).

    Attributes:
        max_packet_size: bytes; bigger packets get DISCONNECT 0x95 (the contract's largest payload, 256 KiB, plus
            a topic and headers: every valid event fits).
        max_queued_messages: per client, beyond those in flight; past it mosquitto drops silently (0 = no
            limit).
        max_queued_bytes: per client, queued payload bytes (0 = no limit).
        max_inflight_messages: QoS 1/2 messages in flight per client (0 = no limit).
        max_keepalive: seconds; MQTT 5 clients are told to use at most this (mosquitto 2.0.11 still accepts
            a longer keep-alive from an MQTT 3.1.1 client).
        max_connections: -1 = no limit.
    """

    max_packet_size: int = MAX_PAYLOAD + PACKET_OVERHEAD
    max_queued_messages: int = 100_000
    max_queued_bytes: int = 268_435_456
    max_inflight_messages: int = 100
    max_keepalive: int = 120
    max_connections: int = -1

    def __post_init__(self) -> None:
        if self.max_packet_size < 20:
            raise ConfigError("max_packet_size must be at least 20 bytes")
        for name in ("max_queued_messages", "max_queued_bytes", "max_inflight_messages"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0 (0 means no limit)")
        if not 10 <= self.max_keepalive <= 65535:
            raise ConfigError("max_keepalive must be between 10 and 65535 seconds")


@dataclass(frozen=True, slots=True)
class MosquittoSettings:
    """What goes into mosquitto.conf. Paths are as the broker will see them at run time.

    Attributes:
        password_file: the password file path.
        acl_file: the ACL file path.
        data_dir: the persistence directory; must be writable by the mosquitto user.
        host: the plain-MQTT listener address (loopback by default: local tools and a co-located agent);
            ``None`` binds every interface (inside a container network).
        port: the plain-MQTT listener port.
        tls: an optional TLS listener for devices on the network.
        limits: broker limits.
        persistent_client_expiration: how long a disconnected persistent session (the agent's) is kept.
        use_username_as_clientid: tie the client id to the login (see the module docstring).
        autosave_on_changes: save after every change instead of once a second.
        log_dest: mosquitto ``log_dest`` (``stderr`` suits systemd's journal and containers).
        extra_lines: appended verbatim at the end.
    """

    password_file: str
    acl_file: str
    data_dir: str
    host: str | None = "127.0.0.1"
    port: int = 1883
    tls: TlsListener | None = None
    limits: Limits = field(default_factory=Limits)
    persistent_client_expiration: str = "14d"
    use_username_as_clientid: bool = True
    autosave_on_changes: bool = True
    log_dest: str = "stderr"
    extra_lines: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        ports = [self.port, self.tls.port] if self.tls else [self.port]
        for port in ports:
            if not 1 <= port <= 65535:
                raise ConfigError(f"port {port} is not between 1 and 65535")
        if self.tls and self.tls.port == self.port:
            raise ConfigError(f"the TLS listener and the plain listener both use port {self.port}")
        if not re.fullmatch(r"\d+[hdwmy]", self.persistent_client_expiration):
            raise ConfigError("persistent_client_expiration must look like 14d (units h, d, w, m, y)")
        for value in (self.password_file, self.acl_file, self.data_dir, self.host or "-", self.log_dest):
            if not value or "\n" in value:
                raise ConfigError(f"empty or multi-line setting {value!r}")

    @classmethod
    def in_dir(
        cls,
        conf_dir: Path | str,
        *,
        host: str | None = "127.0.0.1",
        port: int = 1883,
        tls: TlsListener | None = None,
        limits: Limits | None = None,
        extra_lines: Sequence[str] = (),
        autosave_on_changes: bool = True,
    ) -> MosquittoSettings:
        """Settings whose password file, ACL and data directory (``data/``) all live in ``conf_dir``."""
        base = Path(conf_dir).absolute()
        return cls(
            password_file=str(base / "passwd"),
            acl_file=str(base / "acl"),
            data_dir=str(base / "data"),
            host=host,
            port=port,
            tls=tls,
            limits=limits or Limits(),
            extra_lines=tuple(extra_lines),
            autosave_on_changes=autosave_on_changes,
        )


SYSTEMD_CONF_DIR = "/etc/wearbus/mosquitto"
SYSTEMD_DATA_DIR = "/var/lib/wearbus-mosquitto"
COMPOSE_CONF_DIR = "/mosquitto/config"
COMPOSE_DATA_DIR = "/mosquitto/data"
LAYOUTS = ("local", "systemd", "compose")


def systemd_settings(*, port: int = 1883, tls_port: int | None = 8883) -> MosquittoSettings:
    """The layout of ``deploy/systemd/wearbus-broker.service``.

    Files in ``/etc/wearbus/mosquitto`` (certificates in its ``certs/``), data in
    ``/var/lib/wearbus-mosquitto``; plain MQTT on loopback, TLS on every interface (``tls_port=None``: none).
    """
    conf = SYSTEMD_CONF_DIR
    tls = None
    if tls_port is not None:
        tls = TlsListener(f"{conf}/certs/ca.crt", f"{conf}/certs/server.crt", f"{conf}/certs/server.key", tls_port)
    return MosquittoSettings(f"{conf}/passwd", f"{conf}/acl", SYSTEMD_DATA_DIR, port=port, tls=tls)


def compose_settings(*, port: int = 1883) -> MosquittoSettings:
    """The layout of ``deploy/compose.yaml`` (the eclipse-mosquitto image's paths).

    Plain MQTT on every interface of the container; the compose network is the trust boundary.
    """
    conf = COMPOSE_CONF_DIR
    return MosquittoSettings(f"{conf}/passwd", f"{conf}/acl", COMPOSE_DATA_DIR, host=None, port=port)


def settings_for(layout: str, out_dir: Path | str, *, port: int = 1883) -> MosquittoSettings:
    """Settings for a layout: ``local`` (everything in ``out_dir``, loopback), ``systemd`` or ``compose``.

    Raises:
        ConfigError: an unknown layout.
    """
    if layout == "local":
        return MosquittoSettings.in_dir(out_dir, port=port)
    if layout == "systemd":
        return systemd_settings(port=port)
    if layout == "compose":
        return compose_settings(port=port)
    raise ConfigError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")


def render_conf(settings: MosquittoSettings) -> str:
    """mosquitto.conf text for ``settings``, with a comment on why each choice was made."""
    s, lim = settings, settings.limits
    out = [
        "# mosquitto.conf for wearbus (generated by wearbus; mosquitto 2.0).",
        "# Each choice cites the pitfall it avoids (design notes: performance.md section 1,",
        "# reliability.md sections A2 and A2.4); everything not set here keeps mosquitto's default.",
        "",
        "# One set of auth, ACL and limits for every listener.",
        "per_listener_settings false",
        "",
        "# -- listeners",
        "# Plain MQTT. Keep it on loopback unless a private network (a container network) is trusted.",
        f"listener {s.port}" + (f" {s.host}" if s.host else ""),
    ]
    if s.tls:
        t = s.tls
        out += [
            "",
            "# MQTT over TLS for devices on the network (TLS 1.2 or newer).",
            f"listener {t.port}" + (f" {t.host}" if t.host else ""),
            f"cafile {t.cafile}",
            f"certfile {t.certfile}",
            f"keyfile {t.keyfile}",
            "tls_version tlsv1.2",
            f"require_certificate {_bool(t.require_certificate)}",
        ]
    out += [
        "",
        "# -- who may connect, and what they may touch",
        "# Identity comes from the topic, which the ACL ties to the login: no anonymous clients.",
        "allow_anonymous false",
        "# username:$7$... lines (PBKDF2-SHA512), as mosquitto_passwd writes them. Mosquitto 2.0 reads this",
        "# file and the ACL *after* dropping root privileges: both must be readable by the mosquitto user.",
        f"password_file {s.password_file}",
        "# Pattern ACL: a device may write only under wb/v1/{its username}/ and read only its own cmd/.",
        f"acl_file {s.acl_file}",
    ]
    if s.use_username_as_clientid:
        out += [
            "# The client id is replaced by the username, so one device cannot take over another's session",
            "# and each persistent session belongs to one login (every process needs its own login).",
            "use_username_as_clientid true",
        ]
    out += [
        "# Persistent sessions are keyed by client id; an empty one could not be resumed. Mosquitto checks",
        "# this before it applies use_username_as_clientid: clients must send a client id (the SDK sends",
        "# its username; with mosquitto_sub pass -i).",
        "allow_zero_length_clientid false",
        "",
        "# -- latency",
        "# P1: mosquitto leaves Nagle's algorithm on by default; a QoS 1 request/reply then took 44-88 ms",
        "# instead of ~0.15 ms (Nagle + delayed ACK). Clients must set TCP_NODELAY on their side too.",
        "set_tcp_nodelay true",
        "",
        "# -- persistence",
        "# G5: with the default autosave_interval 1800 a broker kill -9 lost all 500 queued events and the",
        "# agent's session; saving every second or on every change lost none. The directory must be",
        "# writable by the mosquitto user, or nothing is saved at all (the only hint is in the log).",
        "persistence true",
        f"persistence_location {s.data_dir.rstrip('/')}/",
        "persistence_file mosquitto.db",
    ]
    if s.autosave_on_changes:
        out += [
            "# With autosave_on_changes the interval counts changes (queued and retained messages,",
            "# subscriptions): save after every change. Each save rewrites the whole database, so at",
            "# sustained high rates with big backlogs set autosave_on_changes false (a save per second).",
            "autosave_on_changes true",
        ]
    else:
        out += [
            "# Save once a second (a kill -9 can lose at most the last second).",
            "autosave_on_changes false",
        ]
    out += [
        "autosave_interval 1",
        "# How long the agent's persistent session (and its queued events) outlives a disconnect.",
        f"persistent_client_expiration {s.persistent_client_expiration}",
        "",
        "# -- limits",
        "# P2: the default max_queued_messages 1000 silently dropped QoS 1 messages (0.2-45 % of a run)",
        "# for a subscriber that fell behind. Sized for the agent's backlog while it restarts.",
        f"max_queued_messages {lim.max_queued_messages}",
        f"max_queued_bytes {lim.max_queued_bytes}",
        "# QoS 1/2 messages on the wire per client (default 20); the agent acks after its store commits.",
        f"max_inflight_messages {lim.max_inflight_messages}",
        "# Mosquitto 2.0 has no per-client publish rate limit, and these limits are global settings applied",
        "# per client: the agent limits each device's rate and shares its batches round-robin by user.",
        "# Bigger packets are refused with DISCONNECT 0x95 (a 20 kB publish against a 16 kB limit was).",
        "# The contract's largest payload (256 KiB) plus a topic and headers: every valid event fits.",
        f"max_packet_size {lim.max_packet_size}",
        "# Devices choose their keep-alive (the Will fires after ~1.5 x keep-alive + 5 s on a silent loss).",
        "# MQTT 5 clients are told to use at most this; 2.0.11 still accepts more from an MQTT 3.1.1 client.",
        f"max_keepalive {lim.max_keepalive}",
        "# A truncated CONNECT held a socket open > 25 s (slowloris); cap connections on exposed listeners.",
        f"max_connections {lim.max_connections}",
        "",
        "# -- logging",
        f"log_dest {s.log_dest}",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",
        "connection_messages true",
        "log_timestamp true",
        "log_timestamp_format %Y-%m-%dT%H:%M:%S",
    ]
    if s.extra_lines:
        out += ["", "# -- extra settings", *s.extra_lines]
    return "\n".join(out) + "\n"


def _bool(value: bool) -> str:
    return "true" if value else "false"
