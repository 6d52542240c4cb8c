"""Writing the configuration: files with the modes and owners Mosquitto needs, and the data directory."""

from __future__ import annotations

import json
import os
import pwd
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from broker.mosquitto.acl import render_acl
from broker.mosquitto.conf import MosquittoSettings, render_conf
from broker.mosquitto.credentials import MOSQUITTO_SYSTEM_USER
from broker.mosquitto.passwords import render_password_file
from schemas.errors import ConfigError
from schemas.topics import Kind

if TYPE_CHECKING:
    from broker.mosquitto.credentials import Credentials


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
