"""Who logs in: device, agent and operator credentials, and how they are generated and checked."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from schemas.errors import ConfigError, TopicError
from schemas.topics import DeviceId, Kind, login_prefix

MOSQUITTO_SYSTEM_USER = "mosquitto"

# mosquitto_passwd (2.0) writes "$7$" hashes: PBKDF2-HMAC-SHA512, 101 iterations, 12-byte salt, 64-byte
# digest, salt and digest in standard base64 (src/password_mosq.c, pw__hash with SALT_LEN 12).

# Agent and operator logins: no "/" (so they can never collide with a device login), no ":" (the password
# file separator), no "+"/"#" (mosquitto denies all ACL access to such usernames).
_ROLE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


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
        return login_prefix(self.username)


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
        check_role_name(self.username)
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
        check_role_name(self.username)
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


def check_role_name(name: str) -> None:
    if not _ROLE_NAME.match(name):
        raise ConfigError(f"login {name!r} must match [A-Za-z0-9_.-]{{1,64}} (no '/', ':', '+' or '#')")


def _check_password(password: str, username: str) -> None:
    if not password:
        raise ConfigError(f"login {username!r} has an empty password")
    # mosquitto_passwd reads one line per password; a newline could never be typed back.
    if "\n" in password or "\r" in password or "\0" in password:
        raise ConfigError(f"the password of {username!r} contains a line break or NUL")
