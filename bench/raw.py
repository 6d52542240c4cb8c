"""Raw baselines, each run as its own process: receivers (paho, ``mosquitto_sub``, our ``Bus``) and round trips.

Run as ``python -m bench.raw COMMAND --spec JSON``; the result is one JSON object on the last line of
stdout. The harness (:mod:`bench.harness`) starts these processes, so the client under test never shares
an interpreter (or a GIL) with the orchestrator.

- ``paho``: a plain paho-mqtt 2.x client with its own network thread (``loop_start``), counting in ``on_message``
  (MQTT 3.1.1, or MQTT 5 with ``protocol: 5``, the protocol the ``Bus`` speaks to Mosquitto).
- ``bus``: :class:`broker.client.Bus` on a persistent session, counting what :meth:`Bus.batches` yields (each
  message decoded and validated, as the agent receives it). Its CPU is counted after the envelope validators are
  built (:func:`schemas.codec.warm`), as the agent's is: ~40 models at ~1.4 ms each were ~0.5 µs of every message of
  the backlog, a cost of the first message of each kind, not of receiving.
- ``native`` and ``gmqtt``: the transport choice measured raw, as ``paho`` is: the native transport alone
  (:class:`broker.mqtt.Connection`) and gmqtt (asyncio, PyPI, maintained), each counting in its message callback.
- ``echo``: a single-threaded paho client that republishes each request to the reply topic (the raw "agent").
- ``rtt``: a single-threaded paho device that publishes a request and waits for the matching reply, in order;
  ``mode=echo`` matches the echoed bytes, ``mode=agent`` matches the action whose ``corr`` is the request's id
  and then acknowledges that action as a device would.

Every client sets TCP_NODELAY on its socket (P1) and caps paho's outgoing queue (P3).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import random
import resource
import signal
import socket
import sys
import threading
import time
from collections.abc import Sequence
from typing import Any

import msgpack
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bench import mix
from broker import mqtt
from broker.client import Bus, BusOptions
from schemas import codec
from schemas.topics import Channel, Kind, device_channel, device_prefix

_NODELAY = (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
MAX_TIMEOUT_STREAK = 20
HEARTBEAT_S = 10.0  # what the probe's devices announce in their birth (mix.state_payload)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values (``q`` in 0..1); 0 for no values."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(q * len(sorted_values)))
    return float(sorted_values[min(rank, len(sorted_values)) - 1])


def latency_summary(samples_us: Sequence[float]) -> dict[str, float]:
    """p50, p99, p99.9, max and mean of latencies in µs."""
    s = sorted(samples_us)
    return {
        "n": float(len(s)),
        "p50_us": percentile(s, 0.50),
        "p99_us": percentile(s, 0.99),
        "p999_us": percentile(s, 0.999),
        "max_us": float(s[-1]) if s else 0.0,
        "mean_us": sum(s) / len(s) if s else 0.0,
    }


def cpu_seconds() -> float:
    """User + system CPU seconds of this process so far."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _paho_client(client_id: str, clean: bool, spec: dict[str, Any]) -> paho.Client:
    if int(spec.get("protocol", 4)) == 5:
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5)
    else:
        client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean, protocol=paho.MQTTv311
        )
    if spec.get("username"):
        client.username_pw_set(spec["username"], spec.get("password"))
    client.max_queued_messages_set(1000)

    def on_socket_open(c: paho.Client, userdata: Any, sock: Any) -> None:
        sock.setsockopt(*_NODELAY)

    client.on_socket_open = on_socket_open
    return client


def _connect(client: paho.Client, spec: dict[str, Any], *, clean: bool = True) -> None:
    if int(spec.get("protocol", 4)) == 5:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 0 if clean else 3600
        client.connect(spec["host"], int(spec["port"]), keepalive=60, clean_start=clean, properties=props)
    else:
        client.connect(spec["host"], int(spec["port"]), keepalive=60)


# ---------------------------------------------------------------------------------------------- receivers


def paho_receive(spec: dict[str, Any]) -> dict[str, Any]:
    """Prepare, drain or clear a persistent session with a threaded paho client.

    ``spec``: host, port, client_id, qos, filters, action (prepare | drain | clear), expected, idle_s, max_s.
    """
    action = spec["action"]
    client = _paho_client(spec["client_id"], clean=action == "clear", spec=spec)
    if action in {"prepare", "clear"}:
        done = threading.Event()
        client.on_subscribe = lambda *a: done.set()
        _connect(client, spec, clean=action == "clear")
        client.loop_start()
        client.subscribe([(f, int(spec["qos"])) for f in spec["filters"]])
        ok = done.wait(10)
        client.disconnect()
        client.loop_stop()
        return {"ok": ok}
    expected = int(spec["expected"])
    state = {"n": 0, "first": 0.0, "last": 0.0}
    finished = threading.Event()

    def on_message(c: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        now = time.perf_counter()
        state["n"] += 1
        if state["n"] == 1:
            state["first"] = now
        state["last"] = now
        if state["n"] >= expected:
            finished.set()

    client.on_message = on_message
    cpu0 = cpu_seconds()
    _connect(client, spec, clean=False)
    client.loop_start()
    _wait(finished, state, float(spec.get("idle_s", 3)), float(spec.get("max_s", 60)))
    cpu = cpu_seconds() - cpu0
    client.disconnect()
    client.loop_stop()
    return _rate(state, expected, cpu)


def _wait(finished: threading.Event, state: dict[str, Any], idle_s: float, max_s: float) -> None:
    start = time.perf_counter()
    seen, seen_at = -1, start
    while not finished.wait(0.1):
        now = time.perf_counter()
        if state["n"] != seen:
            seen, seen_at = state["n"], now
        if now - seen_at > idle_s or now - start > max_s:
            return


def _rate(state: dict[str, Any], expected: int, cpu: float) -> dict[str, Any]:
    n = int(state["n"])
    span = float(state["last"]) - float(state["first"])
    rate = (n - 1) / span if n > 1 and span > 0 else 0.0
    return {"received": n, "expected": expected, "lost": max(0, expected - n), "rate": rate, "span_s": span,
            "cpu_s": cpu, "cpu_us_per_msg": cpu / n * 1e6 if n else 0.0}  # fmt: skip


async def bus_receive(spec: dict[str, Any]) -> dict[str, Any]:
    """Prepare, drain or clear a persistent session with :class:`broker.client.Bus` (same spec as paho)."""
    action = spec["action"]
    options = BusOptions(
        url=f"mqtt://{spec['host']}:{spec['port']}",
        client_id=spec["client_id"],
        username=spec.get("username"),
        password=spec.get("password"),
        persistent=action != "clear",
        transport=spec.get("transport", "auto"),
        name="bench-bus",
    )
    if action in {"prepare", "clear"}:
        async with Bus(options) as bus:
            for f in spec["filters"]:
                await bus.subscribe(f, int(spec["qos"]))
        return {"ok": True}
    expected = int(spec["expected"])
    idle_s, max_s = float(spec.get("idle_s", 3)), float(spec.get("max_s", 60))
    state: dict[str, Any] = {"n": 0, "first": 0.0, "last": 0.0}
    codec.warm()  # as the agent does at its start: its CPU per event is counted once it stores, after that
    cpu0 = cpu_seconds()
    async with Bus(options) as bus:
        start = time.perf_counter()
        while state["n"] < expected:
            batch = await bus.next_batch(500, timeout=idle_s)
            now = time.perf_counter()
            if not batch or now - start > max_s:
                break
            if not state["n"]:
                state["first"] = now
                state["n_first"] = len(batch)
            state["n"] += len(batch)
            state["last"] = now
        cpu = cpu_seconds() - cpu0
    n = int(state["n"])
    span = float(state["last"]) - float(state["first"])
    counted = n - int(state.get("n_first", 0))
    rate = counted / span if span > 0 else 0.0
    return {"received": n, "expected": expected, "lost": max(0, expected - n), "rate": rate, "span_s": span,
            "cpu_s": cpu, "cpu_us_per_msg": cpu / n * 1e6 if n else 0.0}  # fmt: skip


def _count(state: dict[str, Any], expected: int, finished: asyncio.Event) -> None:
    now = time.perf_counter()
    state["n"] += 1
    if state["n"] == 1:
        state["first"] = now
    state["last"] = now
    if state["n"] >= expected:
        finished.set()


async def _drain(finished: asyncio.Event, state: dict[str, Any], idle_s: float, max_s: float) -> None:
    """Wait until ``finished``, or nothing came for ``idle_s``, or ``max_s`` passed."""
    start = time.perf_counter()
    seen, seen_at = -1, start
    while not finished.is_set():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.1):
                await finished.wait()
        now = time.perf_counter()
        if state["n"] != seen:
            seen, seen_at = state["n"], now
        if now - seen_at > idle_s or now - start > max_s:
            return


async def native_receive(spec: dict[str, Any]) -> dict[str, Any]:
    """Prepare, drain or clear a persistent session with the native transport alone (:class:`broker.mqtt.Connection`,
    counting each PUBLISH it hands over, no decoding): the transport's own cost, to set beside paho's and gmqtt's."""
    action = spec["action"]
    expected = int(spec.get("expected", 0))
    state: dict[str, Any] = {"n": 0, "first": 0.0, "last": 0.0}
    finished = asyncio.Event()
    connect = mqtt.ConnectSpec(
        spec["client_id"],
        v5=int(spec.get("protocol", 4)) == 5,
        keepalive_s=60,
        clean_start=action == "clear",
        session_expiry_s=0 if action == "clear" else 3600,
        username=spec.get("username"),
        password=spec.get("password"),
    )

    def on_publish(topic: str, payload: bytes, qos: int, retain: bool, mid: int, content_type: str | None) -> None:
        _count(state, expected, finished)

    cpu0 = cpu_seconds()
    conn = await mqtt.Connection.open(spec["host"], int(spec["port"]), connect, on_publish, manual_ack=False)
    try:
        if action in {"prepare", "clear"}:
            await conn.subscribe([(f, int(spec["qos"])) for f in spec["filters"]])
            return {"ok": True}
        await _drain(finished, state, float(spec.get("idle_s", 3)), float(spec.get("max_s", 60)))
        cpu = cpu_seconds() - cpu0
    finally:
        conn.disconnect()
    return _rate(state, expected, cpu)


async def gmqtt_receive(spec: dict[str, Any]) -> dict[str, Any]:
    """Prepare, drain or clear a persistent session with gmqtt (asyncio, maintained, MQTT 3.1.1 / 5), counting in
    its ``on_message`` (same spec as paho)."""
    import gmqtt  # type: ignore[import-untyped]  # noqa: PLC0415  (a bench extra: only this receiver needs it)

    action = spec["action"]
    expected = int(spec.get("expected", 0))
    state: dict[str, Any] = {"n": 0, "first": 0.0, "last": 0.0}
    finished = asyncio.Event()
    subscribed = asyncio.Event()
    client = gmqtt.Client(spec["client_id"], clean_session=action == "clear", session_expiry_interval=3600)

    def on_message(_client: Any, topic: str, payload: bytes, qos: int, properties: Any) -> int:
        _count(state, expected, finished)
        return 0  # PUBACK: success

    client.on_message = on_message
    client.on_subscribe = lambda *_a: subscribed.set()
    if spec.get("username"):
        client.set_auth_credentials(spec["username"], spec.get("password"))
    version = gmqtt.constants.MQTTv50 if int(spec.get("protocol", 4)) == 5 else gmqtt.constants.MQTTv311
    cpu0 = cpu_seconds()
    await client.connect(spec["host"], int(spec["port"]), keepalive=60, version=version)
    try:
        if action in {"prepare", "clear"}:
            for f in spec["filters"]:
                client.subscribe(f, qos=int(spec["qos"]))
            async with asyncio.timeout(10):
                await subscribed.wait()
            return {"ok": True}
        await _drain(finished, state, float(spec.get("idle_s", 3)), float(spec.get("max_s", 60)))
        cpu = cpu_seconds() - cpu0
    finally:
        await client.disconnect()
    return _rate(state, expected, cpu)


# ---------------------------------------------------------------------------------------------- round trips


def echo(spec: dict[str, Any]) -> dict[str, Any]:
    """Republish every request to its user's reply topic until SIGTERM or ``max_s`` (single-threaded paho)."""
    client = _paho_client(f"bench-echo-{time.time_ns() % 10**9}", clean=True, spec=spec)
    qos = int(spec.get("qos", 1))
    stop = {"flag": False, "n": 0}

    def on_message(c: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        user = msg.topic.split("/", 3)[2]
        c.publish(f"{mix.device_prefix(user, Kind.GLASSES)}/cmd/probe", msg.payload, qos)
        stop["n"] += 1

    def on_term(signum: int, frame: Any) -> None:
        stop["flag"] = True

    signal.signal(signal.SIGTERM, on_term)
    client.on_message = on_message
    _connect(client, spec)
    client.subscribe(device_channel(device_prefix(kind=Kind.EARPHONES, device="e1"), Channel.COMMAND, "probe"), qos)
    print(json.dumps({"ready": True}), flush=True)
    deadline = time.monotonic() + float(spec.get("max_s", 120))
    while not stop["flag"] and time.monotonic() < deadline:
        client.loop(timeout=0.05)
    client.disconnect()
    return {"echoed": stop["n"]}


def rtt(spec: dict[str, Any]) -> dict[str, Any]:
    """Sequential round trips from an earphones publish to what reaches the glasses (single-threaded paho).

    ``spec``: host, port, mode (echo | agent), prefix, users, samples, warmup, timeout_s, max_s.
    """
    mode = spec["mode"]
    users = [mix.user_name(i, spec.get("prefix", "r")) for i in range(int(spec.get("users", 50)))]
    client = _paho_client(f"bench-rtt-{mode}-{time.time_ns() % 10**9}", clean=True, spec=spec)
    got: dict[str, Any] = {"key": None, "t": 0, "action": "", "action_id": ""}

    def on_message(c: paho.Client, userdata: Any, msg: paho.MQTTMessage) -> None:
        now = time.perf_counter_ns()
        if mode == "echo":
            key = msg.payload
        else:
            env = msgpack.unpackb(msg.payload)
            key = env.get("corr")
            got["action_id"] = env.get("id", "")
            got["action"] = msg.topic.rsplit("/", 1)[-1]
        if key == got["key"]:
            got["t"] = now
            got["topic"] = msg.topic

    client.on_message = on_message
    _connect(client, spec)
    client.subscribe([(f"{mix.device_prefix(u, Kind.GLASSES)}/cmd/#", 1) for u in users])
    for _ in range(20):
        client.loop(0.01)
    if mode == "agent":
        _bring_online(client, users)
    samples: list[float] = []
    timeouts = streak = 0
    n_total = int(spec.get("samples", 1000)) + int(spec.get("warmup", 50))
    deadline = time.monotonic() + float(spec.get("max_s", 60))
    wait_s = float(spec.get("timeout_s", 5))
    cpu0 = cpu_seconds()
    next_beat = time.monotonic() + HEARTBEAT_S
    for i in range(n_total):
        if time.monotonic() > deadline:
            break
        if mode == "agent" and time.monotonic() >= next_beat:  # the devices are alive (announced: every 10 s)
            next_beat += HEARTBEAT_S
            _heartbeats(client, users, i)
        user = users[i % len(users)]
        eid = f"p{time.time_ns():x}-{i}"
        seq = i // len(users) + 1  # each probe device counts its own events 1, 2, 3 (the agent orders by it)
        payload = mix.pack(eid, time.time_ns() // 1_000_000, seq, mix.utterance(mix.QUESTIONS[0]))
        got["key"] = payload if mode == "echo" else eid
        got["t"] = 0
        prefix = mix.device_prefix(user, Kind.EARPHONES)
        topic = f"{prefix}/cmd/probe" if mode == "echo" else f"{prefix}/evt/voice/utterance"
        t0 = time.perf_counter_ns()
        client.publish(topic, payload, 1)
        limit = time.monotonic() + wait_s
        while not got["t"] and time.monotonic() < limit:
            client.loop(timeout=0.001)
        if not got["t"]:
            timeouts += 1
            streak += 1
            if streak >= MAX_TIMEOUT_STREAK:
                break  # the other side is saturated: report what was measured, and the timeouts
            continue
        streak = 0
        if i >= int(spec.get("warmup", 50)):
            samples.append((got["t"] - t0) / 1000)
        if mode == "agent":
            glasses = mix.device_prefix(user, Kind.GLASSES)
            ack = mix.ack_payload(f"a{eid}", time.time_ns() // 1_000_000, got["action_id"], got["action"])
            client.publish(f"{glasses}/ack", ack, 1)
            client.loop(timeout=0)
    cpu = cpu_seconds() - cpu0
    client.disconnect()
    return {**latency_summary(samples), "timeouts": timeouts, "aborted": streak >= MAX_TIMEOUT_STREAK, "cpu_s": cpu}


def _heartbeats(client: paho.Client, users: list[str], n: int) -> None:
    """A heartbeat from each device of ``users`` (a run longer than three beats would find them silent)."""
    now = time.time_ns() // 1_000_000
    beats = [s for s in mix.default_streams() if s.name == "heartbeat"]
    for user in users:
        for stream in beats:
            body = stream.build(random.Random(n), now)
            eid = f"h{now:x}-{n}-{user}-{stream.kind.value}"
            client.publish(mix.topic_of(user, stream), mix.pack(eid, now, 0, body), 1)
    client.loop(timeout=0)


def _bring_online(client: paho.Client, users: list[str]) -> None:
    """Births of all four devices, glasses donned, ring on, earbuds in: the agent routes output to the glasses."""
    now = time.time_ns() // 1_000_000
    n = 0
    for user in users:
        for kind in mix.DEVICE_IDS:
            n += 1
            client.publish(f"{mix.device_prefix(user, kind)}/state",
                           mix.state_payload(f"s{now:x}-{n}", now, kind, True), 1, retain=True)  # fmt: skip
        for stream in (s for s in mix.default_streams() if s.period_s == 0):
            n += 1
            body = stream.build(random.Random(n), now)
            client.publish(mix.topic_of(user, stream), mix.pack(f"s{now:x}-{n}", now, 0, body), 1)
        for side in ("left", "right"):
            n += 1
            body = {"type": "earphones.in_ear", "side": side, "state": "in"}
            client.publish(f"{mix.device_prefix(user, Kind.EARPHONES)}/evt/system/in_ear",
                           mix.pack(f"s{now:x}-{n}", now, 0, body), 1)  # fmt: skip
        client.loop(0)
    end = time.monotonic() + 1.0
    while time.monotonic() < end:
        client.loop(0.01)


# ---------------------------------------------------------------------------------------------- entry point


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.raw {paho,bus,native,gmqtt,echo,rtt} --spec JSON``."""
    parser = argparse.ArgumentParser(prog="python -m bench.raw")
    parser.add_argument("command", choices=("paho", "bus", "native", "gmqtt", "echo", "rtt"))
    parser.add_argument("--spec", required=True, help="the case as a JSON object")
    args = parser.parse_args(argv)
    spec: dict[str, Any] = json.loads(args.spec)
    if args.command == "paho":
        result = paho_receive(spec)
    elif args.command == "bus":
        result = asyncio.run(bus_receive(spec))
    elif args.command == "native":
        result = asyncio.run(native_receive(spec))
    elif args.command == "gmqtt":
        result = asyncio.run(gmqtt_receive(spec))
    elif args.command == "echo":
        result = echo(spec)
    else:
        result = rtt(spec)
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
