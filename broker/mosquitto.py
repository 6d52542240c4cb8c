"""Mosquitto 2.0 configuration for wearbus: mosquitto.conf, password file and pattern ACL.

Everything here is pure text generation except :func:`write_config`, which writes the files and prepares the
data directory.

**Credential scheme** (the device SDK and the agent follow it):

- a device logs in with username = client id = ``{user}/{kind}/{device}`` (``DeviceId.client_id``), e.g.
  ``alice/ring/ring-1``, and its own password. The ACL patterns use ``%u`` (the authenticated username, never
  the client-chosen client id), so ``pattern write wb/v1/%u/evt/#`` becomes ``wb/v1/alice/ring/ring-1/evt/#``:
  a device can write only under its own prefix and read only its own ``cmd/``.
- ``use_username_as_clientid true`` makes the broker replace whatever client id a client sends with its
  username, so a device cannot take over (disconnect) another device's session, and a persistent session
  belongs to exactly one login. Consequence: two connections with the same login kick each other off; every
  process needs its own login (one per agent instance, one per tap).
- agents and operators (taps) have plain usernames without ``/`` (default ``agent`` and ``tap``), each with a
  ``user`` block in the ACL.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import os
import pwd
import re
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from schemas.actions import ACCEPTS, ACTIONS
from schemas.codec import MAX_PAYLOAD, PACKET_OVERHEAD
from schemas.errors import ConfigError, TopicError
from schemas.events import EVENTS
from schemas.health import carries_health
from schemas.topics import DeviceId, Kind, check_name

MOSQUITTO_SYSTEM_USER = "mosquitto"

# mosquitto_passwd (2.0) writes "$7$" hashes: PBKDF2-HMAC-SHA512, 101 iterations, 12-byte salt, 64-byte
# digest, salt and digest in standard base64 (src/password_mosq.c, pw__hash with SALT_LEN 12).
_PBKDF2_ID = 7
_PBKDF2_ITERATIONS = 101
_SALT_LEN = 12
_DIGEST_LEN = 64

# Agent and operator logins: no "/" (so they can never collide with a device login), no ":" (the password
# file separator), no "+"/"#" (mosquitto denies all ACL access to such usernames).
_ROLE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


# --------------------------------------------------------------------------------------------- credentials


@dataclass(frozen=True, slots=True)
class DeviceCredential:
    """The login of one device.

    Attributes:
        user: the wearbus user, ``[a-z0-9-]{1,64}``.
        kind: ``glasses``, ``ring``, ``earphones`` or ``phone``.
        device: the device id, ``[a-z0-9-]{1,64}``.
        password: the device's MQTT password (plain text; only its hash goes into the password file).
    """

    user: str
    kind: str
    device: str
    password: str = field(repr=False)

    def __post_init__(self) -> None:
        try:
            DeviceId(self.user, Kind(self.kind), self.device)
        except (TopicError, ValueError) as exc:
            raise ConfigError(f"bad device credential {self.user}/{self.kind}/{self.device}: {exc}") from exc
        _check_password(self.password, self.username)

    @property
    def username(self) -> str:
        """The MQTT username, also the client id: ``{user}/{kind}/{device}``."""
        return f"{self.user}/{self.kind}/{self.device}"

    @property
    def client_id(self) -> str:
        """The MQTT client id, equal to the username."""
        return self.username

    @property
    def prefix(self) -> str:
        """The topic prefix the device owns: ``wb/v1/{user}/{kind}/{device}``."""
        return f"wb/v1/{self.username}"


@dataclass(frozen=True, slots=True)
class AgentCredential:
    """The login of one agent instance: reads all device events, acks and states, writes commands.

    Attributes:
        username: the MQTT username (also its client id and persistent-session key), default ``agent``.
        password: the plain-text password.
    """

    username: str
    password: str = field(repr=False)

    def __post_init__(self) -> None:
        _check_role_name(self.username)
        _check_password(self.password, self.username)


@dataclass(frozen=True, slots=True)
class OperatorCredential:
    """The login of an operator tap: reads everything under ``wb/`` (and ``$SYS/``) but health data, writes nothing.

    Attributes:
        username: the MQTT username, default ``tap``.
        password: the plain-text password.
        health: may also read the topics that carry health values (:func:`health_filters`).
    """

    username: str
    password: str = field(repr=False)
    health: bool = False

    def __post_init__(self) -> None:
        _check_role_name(self.username)
        _check_password(self.password, self.username)


@dataclass(frozen=True, slots=True)
class Credentials:
    """Every login the broker accepts."""

    devices: tuple[DeviceCredential, ...] = ()
    agents: tuple[AgentCredential, ...] = ()
    operators: tuple[OperatorCredential, ...] = ()

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for username, _ in self.logins():
            if username in seen:
                raise ConfigError(f"login {username!r} is given twice")
            seen.add(username)

    def logins(self) -> list[tuple[str, str]]:
        """All ``(username, password)`` pairs: devices, then agents, then operators."""
        return [
            *((d.username, d.password) for d in self.devices),
            *((a.username, a.password) for a in self.agents),
            *((o.username, o.password) for o in self.operators),
        ]

    def device(self, user: str, kind: str, device: str) -> DeviceCredential:
        """The credential of one device.

        Raises:
            ConfigError: no such device.
        """
        for cred in self.devices:
            if (cred.user, cred.kind, cred.device) == (user, kind, device):
                return cred
        raise ConfigError(f"no credential for device {user}/{kind}/{device}")


def generate_password(nbytes: int = 18) -> str:
    """A random URL-safe password (``secrets``); 18 bytes give 24 characters and 144 bits."""
    if nbytes < 12:
        raise ConfigError("a password needs at least 12 random bytes")
    return secrets.token_urlsafe(nbytes)


def parse_device_spec(spec: str) -> tuple[str, str]:
    """Split a ``kind:device`` command-line spec (``ring:ring-1``) into ``(kind, device)``.

    Raises:
        ConfigError: the spec is not ``kind:device`` with a known kind and a valid device id.
    """
    kind, sep, device = spec.partition(":")
    if not sep:
        raise ConfigError(f"device {spec!r} must be given as kind:device, e.g. ring:ring-1")
    try:
        DeviceId("x", Kind(kind), device)
    except (TopicError, ValueError) as exc:
        raise ConfigError(f"device {spec!r}: {exc} (kinds: {', '.join(Kind)})") from exc
    return kind, device


def new_credentials(
    user: str,
    device_specs: Iterable[str],
    *,
    agents: Sequence[str] = ("agent",),
    operators: Sequence[str] = ("tap",),
    password: Callable[[], str] = generate_password,
) -> Credentials:
    """Fresh credentials for one user's devices plus the agent and operator logins.

    Args:
        user: the wearbus user the devices belong to.
        device_specs: ``kind:device`` specs, e.g. ``["ring:ring-1", "glasses:g1"]``.
        agents: agent usernames, one per agent instance.
        operators: operator (tap) usernames.
        password: makes each password (injectable for tests).

    Raises:
        ConfigError: a bad name, spec or a duplicate login.
    """
    devices = tuple(DeviceCredential(user, k, d, password()) for k, d in map(parse_device_spec, device_specs))
    return Credentials(
        devices=devices,
        agents=tuple(AgentCredential(name, password()) for name in agents),
        operators=tuple(OperatorCredential(name, password()) for name in operators),
    )


def _check_role_name(name: str) -> None:
    if not _ROLE_NAME.match(name):
        raise ConfigError(f"login {name!r} must match [A-Za-z0-9_.-]{{1,64}} (no '/', ':', '+' or '#')")


def _check_password(password: str, username: str) -> None:
    if not password:
        raise ConfigError(f"login {username!r} has an empty password")
    # mosquitto_passwd reads one line per password; a newline could never be typed back.
    if "\n" in password or "\r" in password or "\0" in password:
        raise ConfigError(f"the password of {username!r} contains a line break or NUL")


# ---------------------------------------------------------------------------------------------- passwords


def new_salt() -> bytes:
    """A fresh random 12-byte salt, the length mosquitto_passwd uses."""
    return secrets.token_bytes(_SALT_LEN)


def hash_password(password: str, *, salt: bytes | None = None, iterations: int = _PBKDF2_ITERATIONS) -> str:
    """Hash a password the way ``mosquitto_passwd`` 2.0 does: ``$7$101$<salt b64>$<digest b64>``.

    Args:
        password: the plain-text password (UTF-8 encoded before hashing).
        salt: 12 random bytes; a fresh one from ``secrets`` when omitted.
        iterations: PBKDF2 rounds; mosquitto_passwd uses 101.
    """
    salt = new_salt() if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, _DIGEST_LEN)
    salt64 = base64.b64encode(salt).decode()
    digest64 = base64.b64encode(digest).decode()
    return f"${_PBKDF2_ID}${iterations}${salt64}${digest64}"


def verify_password(password: str, encoded: str) -> bool:
    """Whether ``password`` matches a ``$7$`` hash (ours or mosquitto_passwd's)."""
    parts = encoded.split("$")
    # "$7$101$salt$digest".split("$") == ["", "7", "101", "salt", "digest"]
    if len(parts) != 5 or parts[0] or parts[1] != str(_PBKDF2_ID) or not parts[2].isdigit():
        return False
    try:
        salt = base64.b64decode(parts[3], validate=True)
        expected = base64.b64decode(parts[4], validate=True)
    except ValueError:
        return False
    actual = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, int(parts[2]), len(expected))
    return hmac.compare_digest(actual, expected)


def render_password_file(logins: Iterable[tuple[str, str]], *, salt: Callable[[], bytes] = new_salt) -> str:
    """A mosquitto password file: one ``username:$7$...`` line per login.

    Args:
        logins: ``(username, plain password)`` pairs.
        salt: makes each salt (injectable so tests are deterministic).

    Raises:
        ConfigError: a username contains ``:`` or a line break.
    """
    lines = []
    for username, password in logins:
        if ":" in username or "\n" in username:
            raise ConfigError(f"username {username!r} may not contain ':' or a line break")
        lines.append(f"{username}:{hash_password(password, salt=salt())}\n")
    return "".join(lines)


# -------------------------------------------------------------------------------------------------- ACL


def health_filters() -> list[str]:
    """The topic filters whose messages can carry health values, from the contract's health mark: the events of a
    marked model, the commands whose texts may quote a value (``health`` flag), and ``wb/v1/{user}/agent/health``."""
    out = [f"wb/v1/+/{kind}/+/evt/{cls}/{name}" for (kind, cls, name), model in EVENTS.items() if carries_health(model)]
    out += [
        f"wb/v1/+/{kind}/+/cmd/{action}"
        for kind in Kind
        for action in sorted(ACCEPTS[kind])
        if carries_health(ACTIONS[action])
    ]
    out.append("wb/v1/+/agent/health")
    return out


def render_acl(
    agents: Sequence[str] = ("agent",),
    operators: Sequence[str] = ("tap",),
    *,
    health_operators: Sequence[str] = (),
    apps: Sequence[tuple[str, str]] = (),
    devices: Sequence[tuple[str, str]] = (),
) -> str:
    """The pattern-based ACL for the v1 topic layout.

    Health data (:func:`health_filters`) is read by the agents and by each user's own app only: an operator is
    denied it unless named in ``health_operators``.

    Args:
        agents: agent usernames (each gets the agent role).
        operators: operator (tap) usernames (each may read ``wb/#`` and ``$SYS/#`` but health topics).
        health_operators: those of ``operators`` that may read health topics too.
        apps: ``(username, user)`` of the app logins (the phones): each reads its user's context and health part.
        devices: ``(username, user)`` of the other device logins: each reads its user's consent state.
    """
    out = [
        "# wearbus v1 ACL for mosquitto 2.0 (generated by wearbus).",
        "#",
        "# Devices log in with username = client id = {user}/{kind}/{device} (e.g. alice/ring/ring-1).",
        "# %u is replaced by the *authenticated* username, so each device may write only under its own",
        "# wb/v1/{user}/{kind}/{device}/ and read only its own cmd/. Mosquitto checks read access per",
        "# message, so a device subscribed to wb/# still receives nothing but its own commands.",
        "# Patterns apply to every login (agents and taps too); their usernames have no '/', so for them",
        "# the patterns name topics no device or agent parses (wb/v1/agent/evt/... has no valid kind).",
        "",
        "# -- devices",
        "# An ACL line cannot refuse the retain flag (retain_available false is global and would end the",
        "# retained states): the agent dead-letters a retained event, and retained garbage, once.",
        "pattern write wb/v1/%u/evt/#",
        "pattern write wb/v1/%u/ack",
        "# the retained birth message and the Will (offline) go to the state topic",
        "pattern write wb/v1/%u/state",
        "pattern read wb/v1/%u/cmd/#",
        "# Every login may read the agents' retained online/offline state, so a device knows when to buffer.",
        "# Mosquitto warns at start that this pattern has no %u or %c; that warning is expected (topic lines",
        "# outside a user block would apply to anonymous clients only).",
        "pattern read wb/v1/_agent/+/state",
        "# settings (shadow): a device reads its own desired settings and writes what it applied",
        "pattern read wb/v1/%u/shadow/desired",
        "pattern write wb/v1/%u/shadow/reported",
    ]
    for name in agents:
        _check_role_name(name)
        out += [
            "",
            f"# -- agent instance {name}: reads device events, acks, states and settings; writes commands,",
            "# desired settings, the per-user context, the DLQ and its own online/offline state",
            f"user {name}",
            "topic read wb/v1/+/+/+/evt/#",
            "topic read wb/v1/+/+/+/ack",
            "topic read wb/v1/+/+/+/state",
            "topic write wb/v1/+/+/+/cmd/#",
            "topic read wb/v1/+/+/+/shadow/reported",
            "topic readwrite wb/v1/+/+/+/shadow/desired",
            "topic readwrite wb/v1/+/agent/context",
            "topic readwrite wb/v1/+/agent/health",
            "topic readwrite wb/v1/+/agent/consent",
            "topic read wb/v1/+/agent/consent/set",
            "topic readwrite wb/v1/_agent/#",
            "topic write wb/v1/_dlq/#",
        ]
    for name in operators:
        _check_role_name(name)
        health = name in health_operators
        out += [
            "",
            f"# -- operator tap {name}: read-only view of the whole bus and the broker's $SYS statistics"
            + (", health data included (configured)" if health else ", health data denied"),
            f"user {name}",
            "topic read wb/#",
            "topic read $SYS/#",
        ]
        if not health:
            out += [f"topic deny {f}" for f in health_filters()]
    for username, user in apps:
        check_name(user, "user")
        if "/" in username and not username.startswith(f"{user}/"):
            raise ConfigError(f"app login {username!r} is not one of {user}'s devices")
        out += [
            "",
            f"# -- {user}'s own app {username}: {user}'s fused context, health part included",
            f"user {username}",
            f"topic read wb/v1/{user}/agent/context",
            f"topic read wb/v1/{user}/agent/health",
            f"topic read wb/v1/{user}/agent/consent",
            f"topic write wb/v1/{user}/agent/consent/set",
        ]
    for username, user in devices:
        check_name(user, "user")
        if not username.startswith(f"{user}/"):
            raise ConfigError(f"device login {username!r} is not one of {user}'s devices")
        out += ["", f"# -- {user}'s device {username}: the consent state", f"user {username}",
                f"topic read wb/v1/{user}/agent/consent"]  # fmt: skip
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------ mosquitto.conf


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


# -------------------------------------------------------------------------------------------------- files


def password_variable(username: str) -> str:
    """The environment variable that holds a login's password: ``WB_PW_`` + the username in capitals with
    every other character as ``_`` (``alice/ring/ring-1`` -> ``WB_PW_ALICE_RING_RING_1``)."""
    return "WB_PW_" + re.sub(r"[^A-Z0-9]", "_", username.upper())


def render_credentials_json(credentials: Credentials) -> str:
    """The plain-text passwords as JSON: ``{"logins": [{"username", "password", "role", "env", ...}]}``.

    Devices also carry ``user``, ``kind`` and ``device``; ``env`` names the variable of ``credentials.env``.
    """
    logins: list[dict[str, str]] = []
    for d in credentials.devices:
        logins.append(
            {
                "username": d.username,
                "password": d.password,
                "role": "device",
                "user": d.user,
                "kind": d.kind,
                "device": d.device,
                "env": password_variable(d.username),
            }
        )
    for role, creds in (("agent", credentials.agents), ("operator", credentials.operators)):
        for c in creds:
            logins.append(
                {
                    "username": c.username,
                    "password": c.password,
                    "role": role,
                    "env": password_variable(c.username),
                }
            )
    return json.dumps({"logins": logins}, indent=2, ensure_ascii=False) + "\n"


def render_credentials_env(credentials: Credentials) -> str:
    """The plain-text passwords as an env file (for ``docker compose --env-file`` and shell ``source``).

    Raises:
        ConfigError: two logins map to the same variable, or a password holds a single quote.
    """
    lines = ["# wearbus broker logins: plain-text passwords. Hand each to its device, keep this file private."]
    seen: dict[str, str] = {}
    for username, password in credentials.logins():
        var = password_variable(username)
        if var in seen:
            raise ConfigError(f"logins {seen[var]!r} and {username!r} both map to {var}")
        seen[var] = username
        value = password
        if not re.fullmatch(r"[A-Za-z0-9_.,:+=@%/-]+", password):
            if "'" in password:
                raise ConfigError(f"the password of {username!r} holds a single quote; choose another")
            value = f"'{password}'"
        lines += [f"# {username}", f"{var}={value}"]
    return "\n".join(lines) + "\n"


@dataclass(frozen=True, slots=True)
class WrittenConfig:
    """What :func:`write_config` wrote.

    Attributes:
        conf: the mosquitto.conf path.
        password_file: the password file it wrote.
        acl_file: the ACL file it wrote.
        credentials_file: the plain-text ``credentials.env`` (mode 0600), if written.
        credentials_json: the same passwords as ``credentials.json`` (mode 0600), if written.
        data_dir: the data directory it prepared, if any.
        notes: what it did about file ownership, for the user to read.
    """

    conf: Path
    password_file: Path
    acl_file: Path
    credentials_file: Path | None
    credentials_json: Path | None
    data_dir: Path | None
    notes: tuple[str, ...]


def write_config(
    out_dir: Path | str,
    credentials: Credentials,
    settings: MosquittoSettings | None = None,
    *,
    prepare_data_dir: bool = True,
    write_secrets: bool = True,
    chown: bool | None = None,
) -> WrittenConfig:
    """Write mosquitto.conf, passwd and acl into ``out_dir`` (and a credentials list for the devices).

    Mosquitto 2.0 started as root drops privileges to the ``mosquitto`` user before it reads the password
    file and the ACL, and it writes persistence as that user. So when this runs as root and that user
    exists, the password file, the ACL and the data directory are chowned to it (``chown=None``, the
    default); the returned notes say so.

    Args:
        out_dir: where the files are written (created if missing).
        credentials: the logins.
        settings: mosquitto.conf settings; by default everything lives in ``out_dir``
            (:meth:`MosquittoSettings.in_dir`). Its paths are what the broker will open at run time.
        prepare_data_dir: create ``settings.data_dir`` (and chown it) on this machine.
        write_secrets: also write ``credentials.env`` (:func:`render_credentials_env`) and
            ``credentials.json`` (:func:`render_credentials_json`), mode 0600 and never chowned, so the
            passwords can be handed to the devices and to compose; delete them afterwards.
        chown: ``True`` to require the chown, ``False`` to skip it, ``None`` for "when running as root".

    Raises:
        ConfigError: a bad setting, or ``chown=True`` without a mosquitto user or root.
    """
    out = Path(out_dir)
    settings = settings or MosquittoSettings.in_dir(out)
    owner = _mosquitto_owner(chown)
    out.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []

    conf = out / "mosquitto.conf"
    _write(conf, render_conf(settings), 0o644)
    password_file = out / "passwd"
    _write(password_file, render_password_file(credentials.logins()), 0o600)
    acl_file = out / "acl"
    agents = [a.username for a in credentials.agents]
    operators = [o.username for o in credentials.operators]
    health_ops = [o.username for o in credentials.operators if o.health]
    apps = [(d.username, d.user) for d in credentials.devices if d.kind == Kind.PHONE.value]
    others = [(d.username, d.user) for d in credentials.devices if d.kind != Kind.PHONE.value]
    acl = render_acl(agents, operators, health_operators=health_ops, apps=apps, devices=others)
    _write(acl_file, acl, 0o600)
    to_chown = [password_file, acl_file]

    credentials_file = credentials_json = None
    if write_secrets:
        credentials_file = out / "credentials.env"
        _write(credentials_file, render_credentials_env(credentials), 0o600)
        credentials_json = out / "credentials.json"
        _write(credentials_json, render_credentials_json(credentials), 0o600)

    data_dir = None
    if prepare_data_dir:
        data_dir = Path(settings.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        data_dir.chmod(0o700)
        to_chown.append(data_dir)

    if owner is not None:
        uid, gid = owner
        for path in to_chown:
            os.chown(path, uid, gid)
        notes.append(
            f"running as root: chowned {', '.join(str(p) for p in to_chown)} to user "
            f"{MOSQUITTO_SYSTEM_USER}, which mosquitto switches to before it reads them and saves"
        )
    else:
        notes.append(
            f"not chowned: if mosquitto starts as root it runs as user {MOSQUITTO_SYSTEM_USER}; make the "
            f"password file, the ACL and the data directory its own (chown {MOSQUITTO_SYSTEM_USER}: ...)"
        )
    return WrittenConfig(conf, password_file, acl_file, credentials_file, credentials_json, data_dir, tuple(notes))


def _mosquitto_owner(chown: bool | None) -> tuple[int, int] | None:
    """The mosquitto user's (uid, gid) if files should be chowned to it."""
    if chown is False:
        return None
    is_root = os.geteuid() == 0
    try:
        entry = pwd.getpwnam(MOSQUITTO_SYSTEM_USER)
    except KeyError:
        entry = None
    if chown is True and (entry is None or not is_root):
        raise ConfigError(f"cannot chown to {MOSQUITTO_SYSTEM_USER}: needs root and that system user")
    if entry is None or not is_root:
        return None
    return entry.pw_uid, entry.pw_gid


def _write(path: Path, text: str, mode: int) -> None:
    """Write ``text`` to ``path`` with ``mode``, never leaving the file readable by others meanwhile."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    path.chmod(mode)


# ------------------------------------------------------------------------------------------ command line


def device_assignments(users: Sequence[str], devices: Sequence[str]) -> list[tuple[str, str, str]]:
    """Give each ``--device`` spec its user: ``(user, kind, device)`` triples.

    A spec is ``kind:device`` (the only ``--user``'s device) or ``user:kind:device`` (explicit; needed when
    more than one ``--user`` is given, since the order between two repeatable options is lost).

    Raises:
        ConfigError: a bad spec, an ambiguous ``kind:device``, or a device of a user not given by ``--user``.
    """
    for user in users:
        try:
            check_name(user, "user")
        except TopicError as exc:
            raise ConfigError(str(exc)) from exc
    triples = []
    for spec in devices:
        parts = spec.split(":")
        if len(parts) == 3:
            user, rest = parts[0], f"{parts[1]}:{parts[2]}"
            if user not in users:
                raise ConfigError(f"device {spec!r} names user {user!r}, who is not given with --user")
        elif len(users) == 1:
            user, rest = users[0], spec
        else:
            raise ConfigError(
                f"device {spec!r}: with {len(users)} users write it as USER:KIND:ID (e.g. alice:ring:ring-1)"
            )
        kind, device = parse_device_spec(rest)
        triples.append((user, kind, device))
    return triples


def config_from_cli(
    *,
    out_dir: Path,
    users: Sequence[str],
    devices: Sequence[str],
    host: str | None = None,
    port: int = 1883,
    tls_port: int | None = None,
    tls_host: str | None = None,
    cafile: Path | None = None,
    certfile: Path | None = None,
    keyfile: Path | None = None,
    agent_user: str = "agent",
    operator_user: str = "tap",
    operator_health: bool = False,
    layout: str = "local",
    password: Callable[[], str] = generate_password,
) -> list[Path]:
    """``wearbus broker config``: fresh passwords for every login, and all files written into ``out_dir``.

    Layouts: ``local`` (mosquitto.conf points into ``out_dir``; run ``mosquitto -c out_dir/mosquitto.conf``),
    ``systemd`` (paths of ``deploy/systemd``: copy the files to ``/etc/wearbus/mosquitto``), ``compose``
    (paths of the eclipse-mosquitto image, ``deploy/compose.yaml``; the listener binds every interface of
    the container). ``host`` ``*`` binds every interface. The systemd layout has a TLS listener on 8883
    with the certificates in ``/etc/wearbus/mosquitto/certs`` unless TLS files are given. The plain listener
    binds ``host`` (default 127.0.0.1); the TLS listener binds ``tls_host``, else ``host`` when given, else
    127.0.0.1 in the local layout and every interface in the systemd one (its device-facing listener).

    Returns:
        The paths written (mosquitto.conf, passwd, acl, credentials.env, credentials.json, and the data
        directory for the local layout).

    Raises:
        ConfigError: a bad name, spec, layout, port or TLS file set.
    """
    triples = device_assignments(users, devices)
    creds = Credentials(
        devices=tuple(DeviceCredential(u, k, d, password()) for u, k, d in triples),
        agents=(AgentCredential(agent_user, password()),),
        operators=(OperatorCredential(operator_user, password(), health=operator_health),),
    )
    base = settings_for(layout, out_dir, port=port)
    tls_files = (cafile, certfile, keyfile)
    tls = base.tls
    if any(tls_files):
        if not all(tls_files):
            raise ConfigError("a TLS listener needs --cafile, --certfile and --keyfile")
        ca, cert, key = (str(Path(f).absolute()) for f in tls_files if f is not None)
        tls = TlsListener(ca, cert, key, port=tls_port or 8883)
    elif tls_port is not None:
        if base.tls is None:
            raise ConfigError("a TLS listener needs --cafile, --certfile and --keyfile")
        tls = dataclasses.replace(base.tls, port=tls_port)

    # In a container the listener must face the compose network, whatever --host says.
    def address(given: str) -> str | None:
        return None if layout == "compose" or given in {"*", ""} else given

    bind = address(host or "127.0.0.1")
    if tls is not None:
        asked = tls_host if tls_host is not None else host
        tls = dataclasses.replace(tls, host=address(asked) if asked is not None else tls.host if layout == "systemd"
                                  else bind)  # fmt: skip
    settings = dataclasses.replace(base, host=bind, tls=tls)
    written = write_config(out_dir, creds, settings, prepare_data_dir=layout == "local")
    paths = [written.conf, written.password_file, written.acl_file]
    paths += [p for p in (written.credentials_file, written.credentials_json, written.data_dir) if p is not None]
    return paths
