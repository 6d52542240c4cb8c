"""Mosquitto 2.0 configuration for wearbus: mosquitto.conf, password file and pattern ACL, by concern.

Everything here is pure text generation except :func:`~broker.mosquitto.files.write_config`, which writes the files
and prepares the data directory.

- :mod:`~broker.mosquitto.credentials`: who logs in. A device logs in with username = client id =
  ``{user}/{kind}/{device}`` (``DeviceId.client_id``) and its own password; agents and operators (taps) have plain
  usernames without ``/``; ``use_username_as_clientid true`` makes the broker replace whatever client id a client
  sends with its username, so a device cannot take over another device's session.
- :mod:`~broker.mosquitto.passwords`: PBKDF2-SHA512 hashes in Mosquitto's password-file format.
- :mod:`~broker.mosquitto.acl`: the pattern ACL. Patterns use ``%u`` (the authenticated username, never the
  client-chosen client id), so ``pattern write wb/v1/%u/evt/#`` becomes ``wb/v1/alice/ring/ring-1/evt/#``.
- :mod:`~broker.mosquitto.conf`: mosquitto.conf (listeners, TLS, persistence, limits) for the local, systemd and
  compose layouts.
- :mod:`~broker.mosquitto.files`: writing it all, with the file modes and owners Mosquitto needs.
- :mod:`~broker.mosquitto.assemble`: what ``wearbus broker config`` builds from its options.
"""

from broker.mosquitto.acl import health_filters, render_acl
from broker.mosquitto.assemble import config_from_cli, device_assignments
from broker.mosquitto.conf import (
    COMPOSE_CONF_DIR,
    COMPOSE_DATA_DIR,
    LAYOUTS,
    SYSTEMD_CONF_DIR,
    SYSTEMD_DATA_DIR,
    Limits,
    MosquittoSettings,
    TlsListener,
    compose_settings,
    render_conf,
    settings_for,
    systemd_settings,
)
from broker.mosquitto.credentials import (
    MOSQUITTO_SYSTEM_USER,
    AgentCredential,
    Credentials,
    DeviceCredential,
    OperatorCredential,
    check_role_name,
    generate_password,
    new_credentials,
    parse_device_spec,
)
from broker.mosquitto.files import (
    WrittenConfig,
    password_variable,
    render_credentials_env,
    render_credentials_json,
    write_config,
)
from broker.mosquitto.passwords import hash_password, new_salt, render_password_file, verify_password

__all__ = [
    "COMPOSE_CONF_DIR",
    "COMPOSE_DATA_DIR",
    "LAYOUTS",
    "MOSQUITTO_SYSTEM_USER",
    "SYSTEMD_CONF_DIR",
    "SYSTEMD_DATA_DIR",
    "AgentCredential",
    "Credentials",
    "DeviceCredential",
    "Limits",
    "MosquittoSettings",
    "OperatorCredential",
    "TlsListener",
    "WrittenConfig",
    "check_role_name",
    "compose_settings",
    "config_from_cli",
    "device_assignments",
    "generate_password",
    "hash_password",
    "health_filters",
    "new_credentials",
    "new_salt",
    "parse_device_spec",
    "password_variable",
    "render_acl",
    "render_conf",
    "render_credentials_env",
    "render_credentials_json",
    "render_password_file",
    "settings_for",
    "systemd_settings",
    "verify_password",
    "write_config",
]
