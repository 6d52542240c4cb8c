"""Settings read from the environment (prefix ``WB_``), shared by every command: read once, at the edge.

The library never reads the environment: a command builds its options from these settings and its own
command-line options (which win), and hands them down (``wearbus up`` passes them to its child processes as
command-line options).
"""

from __future__ import annotations

from typing import Annotated

import typer
from pydantic_settings import BaseSettings, SettingsConfigDict

from broker.bus import BusOptions, MqttProtocol, TransportName
from schemas.errors import ConfigError


class Settings(BaseSettings):
    """Defaults for every wearbus process; command-line options win over them.

    Attributes:
        broker: the broker URL (``WB_BROKER``).
        log_level: debug, info, warning or error (``WB_LOG_LEVEL``).
        log_json: force JSON logs on or off (``WB_LOG_JSON``); by default JSON when not on a terminal.
        protocol: ``auto``, ``5`` or ``3.1.1`` (``WB_PROTOCOL``; 3.1.1 skips the MQTT 5 probe of a 3.1.1-only broker).
        transport: ``auto``, ``native`` or ``paho`` (``WB_TRANSPORT``; WebSocket URLs always use paho).
    """

    model_config = SettingsConfigDict(env_prefix="WB_", extra="ignore")

    broker: str = "mqtt://127.0.0.1:1883"
    log_level: str = "info"
    log_json: bool | None = None
    protocol: MqttProtocol = "auto"
    transport: TransportName = "auto"


ProtocolOpt = Annotated[
    str | None,
    typer.Option("--protocol", help="MQTT version: auto (5, else 3.1.1), 5 or 3.1.1; env WB_PROTOCOL."),
]
TransportOpt = Annotated[
    str | None,
    typer.Option("--transport", help="The MQTT client under the bus: auto, native or paho; env WB_TRANSPORT."),
]


def mqtt_choice(protocol: str | None, transport: str | None) -> tuple[MqttProtocol, TransportName]:
    """The protocol and transport from the command line, else from the environment (``WB_PROTOCOL``,
    ``WB_TRANSPORT``).

    Raises:
        ConfigError: a value that is not one of the choices (from the option or the environment).
    """
    try:
        settings = Settings()
    except ValueError as exc:
        raise ConfigError(f"WB_PROTOCOL is auto, 5 or 3.1.1 and WB_TRANSPORT auto, native or paho: {exc}") from exc
    chosen_protocol = protocol or settings.protocol
    chosen_transport = transport or settings.transport
    if chosen_protocol not in ("auto", "5", "3.1.1"):
        raise ConfigError(f"--protocol is auto, 5 or 3.1.1, not {chosen_protocol!r}")
    if chosen_transport not in ("auto", "native", "paho"):
        raise ConfigError(f"--transport is auto, native or paho, not {chosen_transport!r}")
    return chosen_protocol, chosen_transport  # type: ignore[return-value]  # checked just above


def client_options(url: str, name: str) -> BusOptions:
    """The options of a short-lived command's client (``wearbus shadow``, ``consent``, ``record`` ...): the broker
    URL and a name, with the MQTT version and client of ``WB_PROTOCOL`` / ``WB_TRANSPORT`` (``3.1.1`` skips the
    3 s MQTT 5 probe against the embedded broker, which speaks only 3.1.1)."""
    protocol, transport = mqtt_choice(None, None)
    return BusOptions(url=url, name=name, protocol=protocol, transport=transport)
