"""Broker infrastructure against real brokers: the generated Mosquitto config and the embedded amqtt broker.

Clients are plain paho-mqtt. Its network loop runs in paho's own thread and every wait runs in a worker
thread with a deadline, so the event loop (which hosts the embedded broker) keeps running meanwhile.
Absence of a message is shown with a marker: the sender publishes the forbidden message, waits for its
PUBACK, then publishes an allowed marker; if the first thing the receiver gets is the marker, the forbidden
message was not delivered (one broker, messages processed in order).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import socket
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Literal

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from broker.embedded import EmbeddedBroker, free_port, hash_amqtt_password, serve_embedded
from broker.mosquitto import AgentCredential, Credentials, DeviceCredential, OperatorCredential, TlsListener
from schemas.errors import BrokerPortInUse, ConfigError
from testkit.mosquitto import MosquittoProcess, mosquitto_available
from tests.conftest import needs_binary

pytestmark = [pytest.mark.broker, pytest.mark.timeout(120)]

# Skipped without mosquitto on a laptop; under CI=true never (the test runs and fails on the missing binary).
needs_mosquitto = pytest.mark.skipif(
    not mosquitto_available() and os.environ.get("CI") != "true",
    reason="mosquitto is not installed (apt-get install mosquitto)",
)

WAIT = 10.0  # seconds any single wait may take before the test fails
NOT_AUTHORIZED = 135
BAD_LOGIN = 134
DISCONNECT_WITH_WILL = 4

ALICE_RING = DeviceCredential("alice", "ring", "ring-1", "ring-secret-1")
ALICE_GLASSES = DeviceCredential("alice", "glasses", "g1", "glasses-secret-1")
BOB_RING = DeviceCredential("bob", "ring", "ring-2", "bob-ring-secret")
AGENT = AgentCredential("agent", "agent-secret-1")
# A password with spaces and non-ASCII letters: our PBKDF2 hash must agree with mosquitto's on UTF-8.
TAP = OperatorCredential("tap", "tåp sécret ∑ 42")
ALICE_PHONE = DeviceCredential("alice", "phone", "p1", "alice-phone-secret")
HEALTH_TAP = OperatorCredential("clinic", "clinic-secret-1", health=True)
CREDENTIALS = Credentials(
    devices=(ALICE_RING, ALICE_GLASSES, BOB_RING, ALICE_PHONE), agents=(AGENT,), operators=(TAP, HEALTH_TAP)
)


class Peer:
    """A paho client for async tests.

    Args:
        port: broker port on 127.0.0.1.
        client_id: the MQTT client id.
        login: (username, password) or None for anonymous.
        protocol: ``mqtt.MQTTv5`` or ``mqtt.MQTTv311``.
        clean: clean start / clean session.
        will: (topic, payload) of a retained QoS 1 Will.
    """

    def __init__(
        self,
        port: int,
        client_id: str,
        login: tuple[str, str] | None = None,
        *,
        protocol: MQTTProtocolVersion = mqtt.MQTTv5,
        clean: bool = True,
        will: tuple[str, bytes] | None = None,
        transport: Literal["tcp", "websockets"] = "tcp",
        tls_ca: Path | None = None,
    ) -> None:
        self.port = port
        self.protocol = protocol
        self.clean = clean
        kwargs: dict[str, Any] = {} if protocol == mqtt.MQTTv5 else {"clean_session": clean}
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol, transport=transport, **kwargs
        )
        if login:
            self.client.username_pw_set(*login)
        if will:
            self.client.will_set(will[0], will[1], qos=1, retain=True)
        if tls_ca:
            self.client.tls_set(ca_certs=str(tls_ca))
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self._connack: queue.Queue[tuple[ReasonCode, bool]] = queue.Queue()
        self._acks: dict[int, queue.Queue[Any]] = {}
        self.client.on_connect = self._on_connect
        self.client.on_message = lambda _c, _u, msg: self.messages.put(msg)
        self.client.on_subscribe = lambda _c, _u, mid, codes, _p: self._ack(mid).put(codes)
        self.client.on_publish = lambda _c, _u, mid, code, _p: self._ack(mid).put(code)

    def _on_connect(self, _c: Any, _u: Any, flags: Any, code: ReasonCode, _p: Any) -> None:
        self._connack.put((code, bool(flags.session_present)))

    def _ack(self, mid: int) -> queue.Queue[Any]:
        return self._acks.setdefault(mid, queue.Queue())

    async def connect(self) -> tuple[ReasonCode, bool]:
        """Connect; return the CONNACK reason code and session-present flag. A refused client is stopped."""
        props = None
        if self.protocol == mqtt.MQTTv5 and not self.clean:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = 3600
        extra: dict[str, Any] = {"clean_start": self.clean} if self.protocol == mqtt.MQTTv5 else {}
        self.client.connect_async("127.0.0.1", self.port, keepalive=30, properties=props, **extra)
        self.client.loop_start()
        code, present = await _get(self._connack, "CONNACK")
        if code.is_failure:
            await self.close()
        return code, present

    async def subscribe(self, topic: str, qos: int = 1) -> list[ReasonCode]:
        """Subscribe and wait for the SUBACK; return its reason codes."""
        rc, mid = self.client.subscribe(topic, qos)
        assert rc == mqtt.MQTT_ERR_SUCCESS
        assert mid is not None
        codes: list[ReasonCode] = await _get(self._ack(mid), f"SUBACK for {topic}")
        return codes

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False) -> ReasonCode:
        """Publish at QoS 1 and wait for the PUBACK; return its reason code."""
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS
        code: ReasonCode = await _get(self._ack(info.mid), f"PUBACK for {topic}")
        return code

    async def next_message(self) -> mqtt.MQTTMessage:
        """The next message received, waiting at most WAIT seconds."""
        message: mqtt.MQTTMessage = await _get(self.messages, "a message")
        return message

    async def close(self, *, with_will: bool = False) -> None:
        """Disconnect (optionally asking the broker to publish the Will) and stop the network thread."""
        if with_will:
            self.client.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, identifier=DISCONNECT_WITH_WILL))
        else:
            self.client.disconnect()
        await asyncio.to_thread(self.client.loop_stop)


async def _get(source: queue.Queue[Any], what: str) -> Any:
    try:
        return await asyncio.to_thread(source.get, True, WAIT)
    except queue.Empty:
        pytest.fail(f"no {what} within {WAIT} s")


@contextlib.asynccontextmanager
async def connected(
    port: int, client_id: str, login: tuple[str, str] | None = None, **kwargs: Any
) -> AsyncIterator[Peer]:
    """A connected Peer that must be accepted; closed on exit."""
    peer = Peer(port, client_id, login, **kwargs)
    code, _ = await peer.connect()
    assert not code.is_failure, f"{client_id} was refused: {code}"
    try:
        yield peer
    finally:
        await peer.close()


def login(cred: DeviceCredential | AgentCredential | OperatorCredential) -> tuple[str, str]:
    return cred.username, cred.password


# ------------------------------------------------------------------------------------------- mosquitto


@pytest.fixture
async def mosq() -> AsyncIterator[MosquittoProcess]:
    async with MosquittoProcess(credentials=CREDENTIALS) as broker:
        yield broker


@needs_mosquitto
async def test_anonymous_and_bad_passwords_are_refused(mosq: MosquittoProcess) -> None:
    code, _ = await Peer(mosq.port, "nobody").connect()
    assert code.value == NOT_AUTHORIZED
    code, _ = await Peer(mosq.port, ALICE_RING.client_id, (ALICE_RING.username, "wrong")).connect()
    assert code.value in {BAD_LOGIN, NOT_AUTHORIZED}
    # The right password for another login does not work either.
    code, _ = await Peer(mosq.port, ALICE_RING.client_id, (ALICE_RING.username, BOB_RING.password)).connect()
    assert code.value in {BAD_LOGIN, NOT_AUTHORIZED}


@needs_mosquitto
async def test_every_generated_hash_is_accepted_by_mosquitto(mosq: MosquittoProcess) -> None:
    for username, password in CREDENTIALS.logins():
        async with connected(mosq.port, username, (username, password)):
            pass


@needs_mosquitto
async def test_device_event_reaches_agent(mosq: MosquittoProcess) -> None:
    async with (
        connected(mosq.port, AGENT.username, login(AGENT)) as agent,
        connected(mosq.port, ALICE_RING.client_id, login(ALICE_RING)) as ring,
    ):
        assert [c.value for c in await agent.subscribe("wb/v1/+/+/+/evt/#")] == [1]
        topic = f"{ALICE_RING.prefix}/evt/sensor/hr"
        assert not (await ring.publish(topic, b'{"bpm": 61}')).is_failure
        msg = await agent.next_message()
        assert (msg.topic, msg.payload) == (topic, b'{"bpm": 61}')


@needs_mosquitto
async def test_publish_under_another_device_prefix_is_refused_and_not_delivered(
    mosq: MosquittoProcess,
) -> None:
    async with (
        connected(mosq.port, AGENT.username, login(AGENT)) as agent,
        connected(mosq.port, ALICE_RING.client_id, login(ALICE_RING)) as ring,
    ):
        await agent.subscribe("wb/v1/+/+/+/evt/#")
        await agent.subscribe("wb/v1/+/+/+/state")
        for spoof in (
            f"{BOB_RING.prefix}/evt/sensor/hr",  # another user's device
            f"{ALICE_GLASSES.prefix}/evt/gesture/tap",  # the same user's other device
            f"{BOB_RING.prefix}/state",
        ):
            code = await ring.publish(spoof, b"spoof")
            assert code.value == NOT_AUTHORIZED, spoof
        marker = f"{ALICE_RING.prefix}/evt/system/marker"
        await ring.publish(marker, b"marker")
        assert (await agent.next_message()).topic == marker


@needs_mosquitto
async def test_device_subscribed_to_everything_receives_only_its_own_commands(mosq: MosquittoProcess) -> None:
    async with (
        connected(mosq.port, AGENT.username, login(AGENT)) as agent,
        connected(mosq.port, ALICE_RING.client_id, login(ALICE_RING)) as ring,
        connected(mosq.port, BOB_RING.client_id, login(BOB_RING)) as bob,
    ):
        # Granted at subscribe time; mosquitto filters each message by the read ACL.
        assert [c.value for c in await ring.subscribe("wb/#")] == [1]
        for rounds in range(2):
            assert not (await agent.publish(f"{BOB_RING.prefix}/cmd/haptic", b"for bob")).is_failure
            assert not (await agent.publish(f"{ALICE_GLASSES.prefix}/cmd/display.card", b"glasses")).is_failure
            assert not (await bob.publish(f"{BOB_RING.prefix}/evt/sensor/hr", b"bob hr")).is_failure
            await agent.publish(f"{ALICE_RING.prefix}/cmd/haptic", f"own {rounds}".encode())
            msg = await ring.next_message()
            assert (msg.topic, msg.payload) == (f"{ALICE_RING.prefix}/cmd/haptic", f"own {rounds}".encode())


@needs_mosquitto
async def test_devices_see_the_agent_state_and_the_agent_gets_their_will(mosq: MosquittoProcess) -> None:
    state = f"{ALICE_RING.prefix}/state"
    async with connected(mosq.port, AGENT.username, login(AGENT)) as agent:
        assert not (await agent.publish("wb/v1/_agent/a1/state", b"online", retain=True)).is_failure
        await agent.subscribe("wb/v1/+/+/+/state")
        ring = Peer(mosq.port, ALICE_RING.client_id, login(ALICE_RING), will=(state, b"offline"))
        code, _ = await ring.connect()
        assert not code.is_failure
        await ring.subscribe("wb/v1/_agent/+/state")
        retained = await ring.next_message()
        assert (retained.topic, retained.payload, retained.retain) == (
            "wb/v1/_agent/a1/state",
            b"online",
            True,
        )
        assert not (await ring.publish(state, b"online", retain=True)).is_failure
        assert (await agent.next_message()).payload == b"online"
        await ring.close(with_will=True)
        will = await agent.next_message()
        assert (will.topic, will.payload) == (state, b"offline")
    # The Will was retained: a late reader sees the device offline.
    async with connected(mosq.port, TAP.username, login(TAP)) as tap:
        await tap.subscribe(state)
        late = await tap.next_message()
        assert (late.payload, late.retain) == (b"offline", True)


@needs_mosquitto
async def test_a_will_on_another_device_state_is_not_published(mosq: MosquittoProcess) -> None:
    async with connected(mosq.port, AGENT.username, login(AGENT)) as agent:
        await agent.subscribe("wb/v1/+/+/+/state")
        forger = Peer(mosq.port, ALICE_RING.client_id, login(ALICE_RING), will=(f"{BOB_RING.prefix}/state", b"x"))
        code, _ = await forger.connect()
        if not code.is_failure:  # mosquitto 2.0 may accept the CONNECT and drop the Will when it fires
            await forger.close(with_will=True)
        async with connected(mosq.port, BOB_RING.client_id, login(BOB_RING)) as bob:
            await bob.publish(f"{BOB_RING.prefix}/state", b"marker", retain=True)
        assert (await agent.next_message()).payload == b"marker"


@needs_mosquitto
async def test_tap_reads_the_whole_bus_and_writes_nothing(mosq: MosquittoProcess) -> None:
    async with (
        connected(mosq.port, TAP.username, login(TAP)) as tap,
        connected(mosq.port, AGENT.username, login(AGENT)) as agent,
        connected(mosq.port, BOB_RING.client_id, login(BOB_RING)) as bob,
    ):
        await tap.subscribe("wb/#")
        assert (await tap.publish(f"{BOB_RING.prefix}/cmd/haptic", b"x")).value == NOT_AUTHORIZED
        await bob.publish(f"{BOB_RING.prefix}/evt/sensor/steps", b"steps")
        await agent.publish(f"{BOB_RING.prefix}/cmd/haptic", b"buzz")
        await agent.publish("wb/v1/_dlq/decode", b"bad")
        topics = [(await tap.next_message()).topic for _ in range(3)]
        assert topics == [
            f"{BOB_RING.prefix}/evt/sensor/steps",
            f"{BOB_RING.prefix}/cmd/haptic",
            "wb/v1/_dlq/decode",
        ]


@needs_mosquitto
async def test_health_topics_reach_only_the_agent_the_users_app_and_a_configured_tap(mosq: MosquittoProcess) -> None:
    glasses = ALICE_GLASSES.prefix
    health_bearing = [  # what the contract's mark makes health data, on the wire
        f"{ALICE_RING.prefix}/evt/sensor/hr",
        f"{ALICE_RING.prefix}/evt/sensor/spo2",
        f"{ALICE_RING.prefix}/evt/sensor/batch",
        f"{glasses}/cmd/display.card",
        "wb/v1/alice/agent/health",
    ]
    plain = [f"{ALICE_RING.prefix}/evt/sensor/steps", f"{glasses}/cmd/display.clear", "wb/v1/alice/agent/context"]
    async with (
        connected(mosq.port, TAP.username, login(TAP)) as tap,
        connected(mosq.port, HEALTH_TAP.username, login(HEALTH_TAP)) as clinic,
        connected(mosq.port, ALICE_PHONE.client_id, login(ALICE_PHONE)) as phone,
        connected(mosq.port, BOB_RING.client_id, login(BOB_RING)) as bob,
        connected(mosq.port, AGENT.username, login(AGENT)) as agent,
        connected(mosq.port, ALICE_RING.client_id, login(ALICE_RING)) as ring,
    ):
        for peer in (tap, clinic, phone, bob, agent, ring):
            await peer.subscribe("wb/#")
        for topic in [*health_bearing, *plain]:
            sender = ring if topic.startswith(ALICE_RING.prefix) else agent
            assert not (await sender.publish(topic, topic.encode())).is_failure
        end = "wb/v1/_agent/x/state"  # every login reads it: once it arrives, all before it was delivered or not
        assert not (await agent.publish(end, b"end")).is_failure
        everything = [*health_bearing, *plain, end]
        assert await _topics_until(clinic, end) == everything
        assert await _topics_until(agent, end) == [t for t in everything if "/cmd/" not in t]
        assert await _topics_until(tap, end) == [*plain, end]  # nothing health-bearing
        # Alice's phone reads Alice's context, health part included; Bob's ring reads neither.
        assert await _topics_until(phone, end) == ["wb/v1/alice/agent/health", "wb/v1/alice/agent/context", end]
        assert await _topics_until(bob, end) == [end]
        assert await _topics_until(ring, end) == [end]
        # Every device reads its own user's consent state; a device still reads its own commands.
        await agent.publish("wb/v1/alice/agent/consent", b"alice", retain=False)
        await agent.publish("wb/v1/bob/agent/consent", b"bob", retain=False)
        await agent.publish(f"{BOB_RING.prefix}/cmd/ring.haptic", b"buzz", retain=False)
        await agent.publish(end, b"end")
        assert await _topics_until(ring, end) == ["wb/v1/alice/agent/consent", end]
        assert await _topics_until(bob, end) == ["wb/v1/bob/agent/consent", f"{BOB_RING.prefix}/cmd/ring.haptic", end]


async def _topics_until(peer: Peer, last: str) -> list[str]:
    """The topics ``peer`` receives up to and including ``last``."""
    topics: list[str] = []
    while not topics or topics[-1] != last:
        topics.append((await peer.next_message()).topic)
    return topics


@needs_mosquitto
async def test_agent_session_and_queued_events_survive_a_broker_restart(mosq: MosquittoProcess) -> None:
    agent = Peer(mosq.port, AGENT.username, login(AGENT), clean=False)
    await agent.connect()
    await agent.subscribe("wb/v1/+/+/+/evt/#")
    await agent.close()
    async with connected(mosq.port, ALICE_RING.client_id, login(ALICE_RING)) as ring:
        for i in range(3):
            assert not (await ring.publish(f"{ALICE_RING.prefix}/evt/sensor/hr", str(i).encode())).is_failure
    await mosq.restart()  # SIGTERM: mosquitto saves on the way out
    assert (mosq.data_dir / "mosquitto.db").is_file()
    agent = Peer(mosq.port, AGENT.username, login(AGENT), clean=False)
    code, present = await agent.connect()
    try:
        assert not code.is_failure
        assert present
        assert [(await agent.next_message()).payload for _ in range(3)] == [b"0", b"1", b"2"]
    finally:
        await agent.close()


@needs_mosquitto
async def test_kill9_and_restart_keep_port_and_saved_session(mosq: MosquittoProcess) -> None:
    agent = Peer(mosq.port, AGENT.username, login(AGENT), clean=False)
    await agent.connect()
    await agent.subscribe("wb/v1/+/+/+/evt/#")
    await agent.close()
    # autosave_on_changes: the subscription is saved at once, by the unprivileged mosquitto user.
    db = mosq.data_dir / "mosquitto.db"
    await _wait_for(db.is_file, f"{db} to appear")
    old_pid, port = mosq.pid, mosq.port
    await mosq.kill9()
    assert not mosq.running
    await mosq.restart()
    assert (mosq.port, mosq.running) == (port, True)
    assert mosq.pid != old_pid
    agent = Peer(mosq.port, AGENT.username, login(AGENT), clean=False)
    code, present = await agent.connect()
    await agent.close()
    assert (code.is_failure, present) == (False, True)


def make_certs(directory: Path, ip: str) -> tuple[Path, Path, Path]:
    """A CA and a server certificate for ``ip``, made with the openssl commands of deploy/README.md."""

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True, timeout=60)

    openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "3650",
        "-subj",
        "/CN=wearbus CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
    )
    openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        f"/CN={ip}",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    )
    (directory / "san.ext").write_text(f"subjectAltName=IP:{ip}\n", encoding="utf-8")
    openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "825",
        "-extfile",
        "san.ext",
        "-out",
        "server.crt",
    )
    return directory / "ca.crt", directory / "server.crt", directory / "server.key"


@needs_mosquitto
@needs_binary("openssl", "openssl")
async def test_tls_listener_with_readme_certificates(tmp_path: Path) -> None:
    ca, cert, key = make_certs(tmp_path, "127.0.0.1")
    tls = TlsListener(str(ca), str(cert), str(key), port=free_port(), host="127.0.0.1")
    async with MosquittoProcess(credentials=CREDENTIALS, tls=tls) as broker:
        async with (
            connected(broker.port, AGENT.username, login(AGENT)) as agent,
            connected(tls.port, ALICE_RING.client_id, login(ALICE_RING), tls_ca=ca) as ring,
        ):
            await agent.subscribe("wb/v1/+/+/+/evt/#")
            await ring.publish(f"{ALICE_RING.prefix}/evt/sensor/hr", b"over tls")
            assert (await agent.next_message()).payload == b"over tls"
        # The TLS listener enforces the same logins.
        code, _ = await Peer(tls.port, "nobody", tls_ca=ca).connect()
        assert code.value == NOT_AUTHORIZED


async def _wait_for(condition: Any, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail(f"waited {WAIT} s for {what}")
        await asyncio.sleep(0.02)


# --------------------------------------------------------------------------------------------- embedded


@pytest.fixture
async def embedded() -> AsyncIterator[EmbeddedBroker]:
    async with EmbeddedBroker(port=free_port(), users={"agent": "agent-pw"}) as broker:
        yield broker


async def test_embedded_queues_for_an_offline_authenticated_persistent_session(
    embedded: EmbeddedBroker,
) -> None:
    v311: dict[str, Any] = {"protocol": mqtt.MQTTv311}
    agent = Peer(embedded.port, "agent-1", ("agent", "agent-pw"), clean=False, **v311)
    await agent.connect()
    await agent.subscribe("wb/v1/+/+/+/evt/#")
    await agent.close()
    async with connected(embedded.port, "alice/ring/ring-1", **v311) as device:  # anonymous device
        for i in range(3):
            assert not (await device.publish("wb/v1/alice/ring/ring-1/evt/sensor/hr", str(i).encode())).is_failure
    agent = Peer(embedded.port, "agent-1", ("agent", "agent-pw"), clean=False, **v311)
    code, present = await agent.connect()
    try:
        assert (code.is_failure, present) == (False, True)
        assert [(await agent.next_message()).payload for _ in range(3)] == [b"0", b"1", b"2"]
    finally:
        await agent.close()


async def test_embedded_keeps_no_queue_for_anonymous_sessions(embedded: EmbeddedBroker) -> None:
    # amqtt's rule, documented so nobody relies on it: only logins get offline queueing.
    v311: dict[str, Any] = {"protocol": mqtt.MQTTv311}
    listener = Peer(embedded.port, "anon-listener", clean=False, **v311)
    await listener.connect()
    await listener.subscribe("wb/v1/+/+/+/evt/#")
    await listener.close()
    async with connected(embedded.port, "alice/ring/ring-1", **v311) as device:
        await device.publish("wb/v1/alice/ring/ring-1/evt/sensor/hr", b"while away")
        async with connected(embedded.port, "anon-listener", clean=False, **v311) as back:
            await back.subscribe("wb/v1/+/+/+/evt/#")
            await device.publish("wb/v1/alice/ring/ring-1/evt/system/marker", b"marker")
            assert (await back.next_message()).payload == b"marker"


async def test_embedded_refuses_a_wrong_password_and_admits_unknown_users_as_anonymous(
    embedded: EmbeddedBroker,
) -> None:
    code, _ = await Peer(embedded.port, "agent-x", ("agent", "wrong"), protocol=mqtt.MQTTv311).connect()
    assert code.is_failure
    # A device holding Mosquitto credentials still gets in (as anonymous) for a zero-install run.
    async with connected(embedded.port, "alice/ring/ring-1", ("alice/ring/ring-1", "pw"), protocol=mqtt.MQTTv311):
        pass


async def test_embedded_without_anonymous_admits_only_logins(tmp_path: Path) -> None:
    passwd = tmp_path / "amqtt_passwd"
    passwd.write_text(f"# logins\nring:{hash_amqtt_password('ring-pw')}\n", encoding="utf-8")
    v311: dict[str, Any] = {"protocol": mqtt.MQTTv311}
    async with EmbeddedBroker(port=free_port(), allow_anonymous=False, password_file=passwd) as broker:
        assert (await Peer(broker.port, "anon", **v311).connect())[0].is_failure
        assert (await Peer(broker.port, "ring", ("ring", "nope"), **v311).connect())[0].is_failure
        async with connected(broker.port, "ring", ("ring", "ring-pw"), **v311):
            pass


async def test_embedded_websocket_listener(tmp_path: Path) -> None:
    port, ws_port = free_port(), free_port()
    async with EmbeddedBroker(port=port, ws_port=ws_port) as broker:
        assert broker.ws_url == f"ws://127.0.0.1:{ws_port}"
        v311: dict[str, Any] = {"protocol": mqtt.MQTTv311}
        async with (
            connected(port, "tcp-side", **v311) as tcp,
            connected(ws_port, "ws-side", transport="websockets", **v311) as ws,
        ):
            await tcp.subscribe("wb/v1/alice/ring/ring-1/cmd/#")
            await ws.publish("wb/v1/alice/ring/ring-1/cmd/haptic", b"via ws")
            assert (await tcp.next_message()).payload == b"via ws"


async def test_embedded_reports_a_taken_port_with_advice() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(BrokerPortInUse) as info:
            async with EmbeddedBroker(port=port):
                pass
    message = str(info.value)
    assert f"port {port}" in message
    assert "--port" in message
    assert f"--broker mqtt://127.0.0.1:{port}" in message


async def test_embedded_rejects_settings_that_cannot_work() -> None:
    with pytest.raises(ConfigError):
        EmbeddedBroker(port=0)
    with pytest.raises(ConfigError):
        async with EmbeddedBroker(port=free_port(), allow_anonymous=False):
            pass


async def test_serve_embedded_runs_until_cancelled() -> None:
    port = free_port()
    task = asyncio.create_task(serve_embedded("127.0.0.1", port, {"agent": "pw"}, True, None))
    try:
        async with connected(port, "probe", protocol=mqtt.MQTTv311):
            pass
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    # The listener is closed: the port can be bound again.
    with socket.socket() as again:
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))
