"""Export the contract: one JSON Schema per message, and an AsyncAPI 3.0 document with every channel.

The AsyncAPI document is written from the agent's point of view: it *receives* events, acks and device state, and
*sends* actions, the fused context, its own state and dead letters. Each operation carries its MQTT binding (QoS and
retain flag) as set by the design's topic table.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic.json_schema import models_json_schema

from schemas.actions import (
    ACCEPTS,
    ACTIONS,
    Ack,
    AgentState,
    ConsentRequest,
    ConsentState,
    ContextSnapshot,
    DeadLetter,
    DeviceState,
    HealthSnapshot,
)
from schemas.envelope import Envelope, envelope_of
from schemas.events import EVENT_QOS, EVENTS, Body
from schemas.shadow import ShadowDesired, ShadowReported
from schemas.topics import Kind

VERSION = "1.0.0"
_MQTT_BINDING = "0.2.0"


def _catalogue() -> list[dict[str, Any]]:
    """Every message of the contract: its id, address, parameters, model, QoS, retain flag and direction."""
    out: list[dict[str, Any]] = []
    for (kind, cls, name), model in EVENTS.items():
        out.append(
            {
                "id": f"{kind}.evt.{cls}.{name}",
                "address": f"wb/v1/{{user}}/{kind}/{{device}}/evt/{cls}/{name}",
                "params": ["user", "device"],
                "model": model,
                "qos": EVENT_QOS[(kind, cls, name)],
                "retain": False,
                "action": "receive",
                "summary": (model.__doc__ or "").strip().splitlines()[0],
            }
        )
    for kind in Kind:
        for action in sorted(ACCEPTS[kind]):
            model = ACTIONS[action]
            out.append(
                {
                    "id": f"{kind}.cmd.{action}",
                    "address": f"wb/v1/{{user}}/{kind}/{{device}}/cmd/{action}",
                    "params": ["user", "device"],
                    "model": model,
                    "qos": 1,
                    "retain": False,
                    "action": "send",
                    "summary": (model.__doc__ or "").strip().splitlines()[0],
                }
            )
        fixed: list[tuple[str, str, type[Body], bool, str]] = [
            ("ack", "ack", Ack, False, "receive"),
            ("state", "state", DeviceState, True, "receive"),
            ("shadow.desired", "shadow/desired", ShadowDesired, True, "send"),
            ("shadow.reported", "shadow/reported", ShadowReported, True, "receive"),
        ]
        for suffix, leaf, model, retain, direction in fixed:
            out.append(
                {
                    "id": f"{kind}.{suffix}",
                    "address": f"wb/v1/{{user}}/{kind}/{{device}}/{leaf}",
                    "params": ["user", "device"],
                    "model": model,
                    "qos": 1,
                    "retain": retain,
                    "action": direction,
                    "summary": (model.__doc__ or "").strip().splitlines()[0],
                }
            )
    out += [
        {
            "id": "agent.context",
            "address": "wb/v1/{user}/agent/context",
            "params": ["user"],
            "model": ContextSnapshot,
            "qos": 1,
            "retain": True,
            "action": "send",
            "summary": "The fused context snapshot of a user, without health values.",
        },
        {
            "id": "agent.health",
            "address": "wb/v1/{user}/agent/health",
            "params": ["user"],
            "model": HealthSnapshot,
            "qos": 1,
            "retain": True,
            "action": "send",
            "summary": "The health part of a user's fused context (the agent and the user's own app may read it).",
        },
        {
            "id": "agent.consent",
            "address": "wb/v1/{user}/agent/consent",
            "params": ["user"],
            "model": ConsentState,
            "qos": 1,
            "retain": True,
            "action": "send",
            "summary": "The consents the agent holds for a user, per purpose.",
        },
        {
            "id": "agent.consent.set",
            "address": "wb/v1/{user}/agent/consent/set",
            "params": ["user"],
            "model": ConsentRequest,
            "qos": 1,
            "retain": False,
            "action": "receive",
            "summary": "A change of a user's consent (from the user's app or wearbus consent).",
        },
        {
            "id": "agent.state",
            "address": "wb/v1/_agent/{instance}/state",
            "params": ["instance"],
            "model": AgentState,
            "qos": 1,
            "retain": True,
            "action": "send",
            "summary": "The agent's presence (its Will sets it offline).",
        },
        {
            "id": "dlq",
            "address": "wb/v1/_dlq/{reason}",
            "params": ["reason"],
            "model": DeadLetter,
            "qos": 1,
            "retain": False,
            "action": "send",
            "summary": "What was rejected, from which topic, and why.",
        },
    ]
    return out


def _schema_name(model: type[Body]) -> str:
    return f"Envelope_{model.__name__}"


def json_schemas() -> dict[str, dict[str, Any]]:
    """One standalone JSON Schema (draft 2020-12, as pydantic writes it) per message id."""
    result: dict[str, dict[str, Any]] = {}
    for entry in _catalogue():
        schema = envelope_of(entry["model"]).model_json_schema()
        schema["title"] = entry["id"]
        schema["description"] = f"{entry['summary']} Topic: {entry['address']}"
        schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
        result[entry["id"]] = schema
    return result


def asyncapi() -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document of the v1 contract."""
    catalogue = _catalogue()
    models = sorted({e["model"] for e in catalogue}, key=lambda m: m.__name__)
    envelopes: list[type[Envelope[Any]]] = [envelope_of(m) for m in models]
    _, defs = models_json_schema(
        [(env, "validation") for env in envelopes], ref_template="#/components/schemas/{model}"
    )
    schemas: dict[str, Any] = _asyncapi_dialect(defs.get("$defs", {}))
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    params_doc = {
        "user": {"description": "The user id, [a-z0-9-]{1,64}."},
        "device": {"description": "The device id, [a-z0-9-]{1,64}."},
        "instance": {"description": "The agent instance id."},
        "reason": {"description": "Why the message was rejected: decode, schema, topic, ..."},
    }
    for entry in catalogue:
        key = entry["id"]
        env_name = envelope_of(entry["model"]).__name__
        ref_name = _ref_for(env_name, schemas)
        messages[key] = {
            "name": key,
            "title": entry["model"].__name__,
            "summary": entry["summary"],
            "contentType": "application/msgpack",
            "payload": {"$ref": f"#/components/schemas/{ref_name}"},
        }
        channels[key] = {
            "address": entry["address"],
            "description": f"{entry['summary']} QoS {entry['qos']}, retained: {entry['retain']}.",
            "parameters": {p: params_doc[p] for p in entry["params"]},
            "messages": {key: {"$ref": f"#/components/messages/{key}"}},
        }
        operations[f"{entry['action']}.{key}"] = {
            "action": entry["action"],
            "channel": {"$ref": f"#/channels/{key}"},
            "messages": [{"$ref": f"#/channels/{key}/messages/{key}"}],
            "bindings": {"mqtt": {"qos": entry["qos"], "retain": entry["retain"], "bindingVersion": _MQTT_BINDING}},
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "wearbus",
            "version": VERSION,
            "description": (
                "The wearbus v1 wire contract: AI glasses, ring, earphones and phone publish events over MQTT; "
                "a central agent fuses context and sends actions back. Payloads are msgpack by default; JSON is "
                "accepted on every topic (told apart by the MQTT 5 content type, else by the first byte; a JSON "
                "envelope without `ts` gets its arrival time). A device is answered in the language it speaks: "
                "its actions are JSON (content type application/json) once its birth or its last event or ack came "
                "as JSON, msgpack otherwise; `encoding` in its birth (`json` or `msgpack`) overrides that. Written "
                "from the agent's point of view."
            ),
        },
        "defaultContentType": "application/msgpack",
        "servers": {
            "local": {
                "host": "127.0.0.1:1883",
                "protocol": "mqtt",
                "protocolVersion": "5",
                "description": "The embedded broker (`wearbus broker`, MQTT 3.1.1) or a local Mosquitto (MQTT 5).",
            }
        },
        "channels": channels,
        "operations": operations,
        "components": {"schemas": schemas, "messages": messages},
    }


def _asyncapi_dialect(node: Any) -> Any:
    """AsyncAPI's schema object names the discriminator property as a plain string, not OpenAPI's object."""
    if isinstance(node, dict):
        out = {k: _asyncapi_dialect(v) for k, v in node.items()}
        disc = out.get("discriminator")
        if isinstance(disc, dict):
            out["discriminator"] = disc["propertyName"]
        return out
    if isinstance(node, list):
        return [_asyncapi_dialect(v) for v in node]
    return node


def _ref_for(env_name: str, schemas: dict[str, Any]) -> str:
    """The components/schemas key pydantic gave an envelope class (it mangles generic names)."""
    if env_name in schemas:
        return env_name
    mangled = env_name.replace("[", "_").replace("]", "_")
    for candidate in (mangled, mangled.rstrip("_")):
        if candidate in schemas:
            return candidate
    raise KeyError(f"no schema for {env_name}")


def export(out_dir: Path) -> list[Path]:
    """Write ``asyncapi.json`` and ``schemas/<message>.json`` under ``out_dir``; return the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "schemas").mkdir(exist_ok=True)
    written: list[Path] = []
    for key, schema in json_schemas().items():
        path = out_dir / "schemas" / f"{key}.json"
        path.write_text(json.dumps(schema, indent=2, ensure_ascii=False) + "\n")
        written.append(path)
    doc = out_dir / "asyncapi.json"
    doc.write_text(json.dumps(asyncapi(), indent=2, ensure_ascii=False) + "\n")
    written.append(doc)
    return written
