"""What ``wearbus broker config`` builds from its options: users' devices, credentials and settings."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path

from broker.mosquitto.conf import TlsListener, settings_for
from broker.mosquitto.credentials import (
    AgentCredential,
    Credentials,
    DeviceCredential,
    OperatorCredential,
    generate_password,
    parse_device_spec,
)
from broker.mosquitto.files import write_config
from schemas.errors import ConfigError, TopicError
from schemas.topics import check_name


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
