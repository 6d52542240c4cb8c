"""Promise 5, in process: the decoder and the agent's core survive generated input.

- decoder: mutated msgpack and JSON payloads (and now and then a mutated topic or a wrong content type) either
  decode into a message that round-trips, or raise a :class:`~schemas.errors.ContractError` with a reason that
  a dead letter can carry; nothing else escapes.
- core: a seeded stream of valid decoded messages generated from the JSON Schemas (every event of every device
  kind, with phrases the intent parser knows; births and Wills; acks of the actions the core itself sent) never
  makes ``AgentCore.handle`` or ``tick`` raise; every command it decides decodes on its device's topic (so a
  device of that kind accepts it); every thousand cases its state goes through export and restore, as at a
  restart, and it carries on from there.
"""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from pydantic import ValidationError

from agent.core.engine import AgentCore
from agent.core.testing import config
from schemas import codec
from schemas.actions import Ack, DeviceState
from schemas.envelope import Envelope, Message, envelope_of, make
from schemas.errors import ContractError
from schemas.events import EVENTS, RingGesture
from schemas.topics import DeviceId, ack_topic, command_topic, event_topic, parse, state_topic
from tests.faults.conftest import Scale
from tests.faults.generate import Generator
from tests.faults.harness import DEVICE_NAMES, KINDS, Counts, mixed_event
from tests.faults.mutate import envelope, mutate, mutate_topic

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]
T0 = 1_764_000_000_000
USERS = ("u0", "u1")


def samples(rng: random.Random) -> list[tuple[str, bytes]]:
    """Valid payloads of every device kind's usual events, both encodings, plus states and acks."""
    out: list[tuple[str, bytes]] = []
    for kind in KINDS:
        dev = DeviceId("u0", kind, DEVICE_NAMES[kind])
        for n in range(40):
            body = mixed_event(kind, rng, n, T0)
            key = next(k for k, m in EVENTS.items() if k[0] is kind and m is type(body))
            fmt: codec.Format = "json" if n % 3 == 0 else "msgpack"
            out.append((event_topic(dev, key[1], key[2]), codec.encode(envelope(body, rng, T0 + n, n), fmt)))
        out.append((state_topic(dev), codec.encode(envelope(DeviceState(online=True, kind=kind), rng, T0, 0))))
        ack = Ack(action_id="a:1", action="display.card", status="done")
        out.append((ack_topic(dev), codec.encode(envelope(ack, rng, T0, 0), "json")))
    return out


def test_decoder_fuzz_raises_only_contract_errors(scale: Scale, record_property: Callable[[str, object], None]) -> None:
    rng = random.Random(20_261_126)
    pool = samples(rng)
    payloads = [p for _, p in pool]
    outcomes: Counter[str] = Counter()
    started = time.monotonic()
    for case in range(scale.fuzz_decode):
        topic, payload = rng.choice(pool)
        if rng.random() < 0.05:
            topic = mutate_topic(topic, rng)
        bad = mutate(payload, rng, payloads)
        content_type = rng.choice([None, None, None, codec.JSON, codec.MSGPACK, "text/plain"])
        try:
            message = codec.decode(topic, bad, content_type=content_type, qos=1)
        except ContractError as exc:
            outcomes[exc.reason] += 1
            if exc.reason not in {"topic", "decode", "schema"} or not exc.detail:
                pytest.fail(f"case {case}: an unclear answer {exc.reason!r}: {exc.detail!r}")
            letter = codec.dead_letter(topic, bad, exc, seen_by="fuzz")  # what the DLQ would carry
            codec.encode(make(letter, ts=T0))
            continue
        except Exception as exc:  # noqa: BLE001 (the point: report any other exception with its input)
            pytest.fail(f"case {case}: {type(exc).__name__}: {exc} for {topic!r} {bad[:200]!r} ({content_type})")
        outcomes["decoded"] += 1
        again = codec.decode(topic, codec.encode(message.envelope))
        assert again.envelope == message.envelope, f"case {case}: does not round-trip"
    counts = Counts("fuzz-decode")
    counts["sent"] = counts["acknowledged"] = scale.fuzz_decode
    counts["processed"] = sum(outcomes.values())  # decoded, or refused with a reason
    counts["lost"] = scale.fuzz_decode - sum(outcomes.values())
    for reason, n in sorted(outcomes.items()):
        counts[reason] = n
    counts["seconds"] = round(time.monotonic() - started, 1)
    counts.report(record_property)
    assert sum(outcomes.values()) == scale.fuzz_decode
    assert outcomes["decoded"] > 0, "no mutation decoded: validation was never reached"
    assert all(outcomes[r] > 0 for r in ("topic", "decode", "schema")), outcomes


# ----------------------------------------------------------------------------------------------------- core

EVENT_KEYS = sorted(EVENTS, key=str)
SCHEMAS = {key: envelope_of(EVENTS[key]).model_json_schema() for key in EVENT_KEYS}


def generated(gen: Generator, rng: random.Random, now: int) -> tuple[Message | None, str]:
    """A decoded event, birth or Will of one of two users' devices (None: the schema's draw was not valid)."""
    user = rng.choice(USERS)
    if rng.random() < 0.08:
        kind = rng.choice(KINDS)
        dev = DeviceId(user, kind, DEVICE_NAMES[kind])
        battery = None if rng.random() < 0.5 else rng.uniform(0, 100)
        body = DeviceState(online=rng.random() < 0.7, kind=kind, battery_pct=battery)
        return Message(state_topic(dev), parse(state_topic(dev)), make(body, ts=now), qos=1), "device.state"
    kind, event_class, name = key = rng.choice(EVENT_KEYS)
    model = EVENTS[key]
    raw = gen.value(SCHEMAS[key])
    if model is RingGesture:
        raw["data"]["gesture"] = name
    try:
        env: Envelope[Any] = envelope_of(model).model_validate(raw)
    except ValidationError:
        return None, "invalid"  # the schema cannot say everything (src_ts in batches, one-of fields, ordering)
    topic = event_topic(DeviceId(user, kind, DEVICE_NAMES[kind]), event_class, name)
    return Message(topic, parse(topic), env, qos=1), env.data.type


def test_core_fuzz_never_raises_and_sends_only_what_devices_accept(
    scale: Scale, record_property: Callable[[str, object], None]
) -> None:
    rng = random.Random(20_261_127)
    handled: Counter[str] = Counter()
    types: Counter[str] = Counter()
    started = time.monotonic()
    core = AgentCore(config())
    now = T0
    sent: list[tuple[str, str, DeviceId]] = []
    for case in range(scale.fuzz_core):
        now += rng.choice([0, 50, 1_000, 30_000, 600_000])
        gen = Generator(rng, now)
        message, kind = generated(gen, rng, now)
        types[kind] += 1
        if message is None:
            handled["invalid_draws"] += 1
            continue
        try:
            out = core.handle(message, now)
            if rng.random() < 0.2:
                out.extend(core.tick(now))
                handled["ticks"] += 1
        except Exception as exc:  # noqa: BLE001 (report the input that broke it)
            pytest.fail(f"case {case}: {type(exc).__name__}: {exc} handling {message.topic} {message.envelope!r}")
        handled["messages"] += 1
        for cmd in out.commands:
            action: str = cmd.body.type  # type: ignore[attr-defined]
            wire = codec.encode(envelope_of(type(cmd.body))(id=cmd.id, ts=now, corr=cmd.corr, data=cmd.body))
            codec.decode(command_topic(cmd.device, action), wire)  # raises if the device kind does not accept it
            sent.append((cmd.id, action, cmd.device))
            handled["commands"] += 1
        if sent and rng.random() < 0.3:
            action_id, action, device = rng.choice(sent[-50:])
            ack = Ack(action_id=action_id, action=action, status=rng.choice(["done", "done", "rejected", "expired"]))
            core.handle(Message(ack_topic(device), parse(ack_topic(device)), make(ack, ts=now), qos=1), now)
            handled["acks"] += 1
        if case % 1000 == 999:
            # A restart at any point: the state survives export and restore, and the core carries on with it.
            state = json.loads(json.dumps(core.export_state()))
            core = AgentCore(config())
            core.restore(state)
            assert json.loads(json.dumps(core.export_state())) == state
            handled["restarts"] += 1
    counts = Counts("fuzz-core")
    counts["sent"] = scale.fuzz_core
    counts["acknowledged"] = handled["messages"]  # valid draws handed to the core
    counts["processed"] = handled["messages"]  # handled without an exception
    counts.values.update(handled)
    counts["event_types"] = len(types)
    counts["seconds"] = round(time.monotonic() - started, 1)
    counts.report(record_property)
    assert handled["messages"] + handled["invalid_draws"] == scale.fuzz_core
    assert handled["invalid_draws"] < scale.fuzz_core // 5, "most generated cases never reached the core"
    assert handled["commands"] > 0, "the core never decided anything: the fuzz did not reach the skills"
