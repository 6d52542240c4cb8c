"""Promise 4: nobody speaks for someone else, with the real agent process in the loop.

The broker runs the generated secure config (passwords, per-device pattern ACL) with a TLS listener whose
certificates the test makes with openssl. The agent and the devices connect over TLS; the observer (an operator
login, read-only) over the loopback listener. tests/contract/test_broker_infra.py checks the ACL with bare clients;
here the question is what reaches the agent and what the agent's actions reach:

- anonymous clients and wrong passwords are refused on both listeners;
- a device publishing as another device (of another user or of its own user), as the agent, or on the DLQ is
  refused (PUBACK 0x87 surfaces as PublishError) and the agent never stores it;
- a device subscribed to ``wb/#`` and to another user's ``cmd/#`` is granted the subscription, yet receives
  nothing but its own commands and the agents' presence, while the agent really sends the other user commands.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path

import pytest

from broker.client import Bus, BusOptions, Outgoing
from broker.embedded import free_port
from broker.mosquitto import TlsListener
from schemas import codec
from schemas.actions import Ack, AgentState, ClearDisplay, DeviceState
from schemas.envelope import Message, make
from schemas.errors import BusConnectionError, PublishError
from schemas.events import Body, GlassesWear, HeartRate, InEar, RingBattery, RingWear, Utterance
from schemas.topics import (
    Channel,
    Kind,
    ack_topic,
    agent_state_topic,
    consent_topic,
    context_topic,
    dlq_topic,
    state_topic,
)
from tests.conftest import needs_binary
from tests.contract.test_broker_infra import make_certs
from tests.faults.harness import (
    TAP,
    AgentDb,
    AgentProcess,
    Counts,
    Observer,
    device_id,
    fleet,
    make_device,
    secure_broker,
    wait_for,
    wait_for_async,
)

pytestmark = [
    pytest.mark.broker,
    pytest.mark.slow,
    pytest.mark.timeout(300),
    needs_binary("openssl", "openssl"),
]


class Spy:
    """Bob's ring, subscribed to far more than it may read; it records every topic it is really sent."""

    def __init__(self, url: str, username: str, password: str) -> None:
        self.bus = Bus(BusOptions(url=url, client_id=username, username=username, password=password, name="spy"))
        self.received: list[Message] = []
        self.refusals: list[str] = []
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Spy:
        await self.bus.__aenter__()
        self._task = asyncio.create_task(self._consume())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.bus.__aexit__(None, None, None)

    async def _consume(self) -> None:
        async for message in self.bus.messages():
            self.received.append(message)

    async def try_publish(self, topic: str, body: Body) -> tuple[str, bool]:
        """Publish at QoS 1: the envelope id, and whether the broker accepted it (False: PUBACK 0x87)."""
        envelope = make(body)
        try:
            await self.bus.publish_raw(Outgoing(topic, codec.encode(envelope), 1), wait=True)
        except PublishError as exc:
            self.refusals.append(str(exc))
            return envelope.id, False
        return envelope.id, True


async def refused_login(url: str, username: str | None, password: str | None) -> str:
    """Connect with these credentials; return the error that refused it (fails if it was accepted)."""
    try:
        async with Bus(BusOptions(url=url, username=username, password=password, connect_timeout_s=5)):
            pass
    except BusConnectionError as exc:
        return str(exc)
    pytest.fail(f"{username or 'anonymous'} was let in at {url}")


async def test_nobody_speaks_for_someone_else(
    mosquitto_binary: None, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    ca, cert, key = make_certs(tmp_path, "127.0.0.1")
    tls = TlsListener(str(ca), str(cert), str(key), port=free_port(), host="127.0.0.1")
    tls_url = f"mqtts://127.0.0.1:{tls.port}?ca={ca}"
    creds = fleet(["alice", "bob"])
    counts = Counts("security")
    alice_glasses, alice_ears = device_id("alice", Kind.GLASSES), device_id("alice", Kind.EARPHONES)
    bob_ring, bob_ears = device_id("bob", Kind.RING), device_id("bob", Kind.EARPHONES)
    async with secure_broker(creds, tls=tls) as broker, contextlib.AsyncExitStack() as stack:
        observer = await stack.enter_async_context(Observer(broker.url, TAP.username, TAP.password))
        agent = AgentProcess(tls_url, tmp_path / "agent.db", tmp_path / "agent.log")
        stack.push_async_callback(agent.stop)
        db = AgentDb(agent.db)
        await agent.start()
        await observer.agent_online(agent)

        # Logins: nobody without a password, nobody with another's password, on either listener.
        errors = await asyncio.gather(
            refused_login(broker.url, None, None),
            refused_login(tls_url, None, None),
            refused_login(tls_url, bob_ring.client_id, creds.device("alice", "ring", "r1").password),
        )
        assert all("refused the login" in e for e in errors), errors

        glasses = await stack.enter_async_context(make_device(creds, "alice", Kind.GLASSES, tls_url))
        ears = await stack.enter_async_context(make_device(creds, "alice", Kind.EARPHONES, tls_url))
        bob_voice = await stack.enter_async_context(make_device(creds, "bob", Kind.EARPHONES, tls_url))
        ring_cred = creds.device("bob", "ring", bob_ring.device)
        spy = await stack.enter_async_context(Spy(tls_url, ring_cred.username, ring_cred.password))
        for dev in (glasses, ears, bob_voice):
            await dev.wait_connected(15)
        await spy.bus.wait_connected(15)
        await spy.bus.subscribe("wb/#", 1)
        await spy.bus.subscribe("wb/v1/alice/+/+/cmd/#", 1)
        assert (await spy.try_publish(state_topic(bob_ring), DeviceState(online=True, kind=Kind.RING)))[1]
        assert (await spy.try_publish(f"{bob_ring.prefix}/evt/system/wear", RingWear(state="on_finger")))[1]
        glasses.emit(GlassesWear(state="donned"))
        ears.emit(InEar(side="left", state="in"))

        # Bob's ring tries to speak for others: alice's devices, bob's own other device, the agent, the DLQ.
        spoofs: list[tuple[str, Body]] = [
            (f"{alice_ears.prefix}/evt/voice/utterance", Utterance(text="order my usual noodles")),
            (f"{device_id('alice', Kind.RING).prefix}/evt/sensor/hr", HeartRate(bpm=190)),
            (state_topic(alice_glasses), DeviceState(online=False, kind=Kind.GLASSES)),
            (ack_topic(alice_glasses), Ack(action_id="x:1", action="display.card", status="done")),
            (f"{bob_ears.prefix}/evt/voice/utterance", Utterance(text="cancel everything")),
            (f"{alice_glasses.prefix}/cmd/display.clear", ClearDisplay()),
            (agent_state_topic(agent.instance), AgentState(online=False, instance=agent.instance)),
            (dlq_topic("decode"), HeartRate(bpm=60)),
            (context_topic("alice"), HeartRate(bpm=60)),
        ]
        attempts = [(t, *await spy.try_publish(t, body)) for t, body in spoofs]
        accepted = [t for t, _, ok in attempts if ok]
        spoof_ids = {eid for _, eid, _ in attempts}
        # (not a heart rate: a fresh one would answer bob's question below without asking the ring to measure)
        marker, ok = await spy.try_publish(f"{bob_ring.prefix}/evt/system/battery", RingBattery(level_pct=80))
        assert ok

        async def marker_stored() -> bool:
            return marker in await db.ids()

        await wait_for_async(marker_stored, "bob's own event at the agent", 20)
        stored = await db.ids()

        # Real commands for alice, then one for bob's ring: the spy must get bob's and nothing of alice's.
        ears.emit(Utterance(text="zorp for alice"))
        await wait_for(lambda: len(glasses.carried) == 1, "alice's glasses to carry out the agent's card", 20)
        bob_voice.emit(Utterance(text="what's my heart rate"))
        own_cmd = f"{bob_ring.prefix}/cmd/"
        await wait_for(
            lambda: any(m.topic.startswith(own_cmd) for m in spy.received), "the agent's command to bob's ring", 20
        )
        alice_cmds = [aid for aid, t in observer.command_topics.items() if t.startswith("wb/v1/alice/")]
        own_consent = consent_topic("bob")  # every device reads its own user's consent state (issue 22)
        leaked = [
            m.topic
            for m in spy.received
            if not (m.topic.startswith(own_cmd) or m.where.channel is Channel.AGENT_STATE or m.topic == own_consent)
        ]
        counts["sent"] = len(spoofs)
        counts["acknowledged"] = len(accepted)
        counts["refused"] = len(spoofs) - len(accepted)
        counts["processed"] = len(stored & spoof_ids)
        counts["lost"] = 0
        counts["duplicates"] = 0
        counts["alice_commands_sent"] = len(alice_cmds)
        counts["cross_user_deliveries"] = len(leaked)
        counts["spy_received"] = len(spy.received)
        counts["tls_round_trip"] = len(glasses.carried)
        counts["refused_logins"] = len(errors)
    counts.report(record_property)
    assert accepted == [], f"the broker accepted spoofed publishes on {accepted}"
    assert all("not authori" in r.lower() for r in spy.refusals), spy.refusals
    assert not stored & spoof_ids, "the agent stored a spoofed message"
    assert not observer.seen & spoof_ids, "a spoofed message reached the wire"
    assert alice_cmds, "the agent sent alice no command, so isolation was not tested"
    assert leaked == [], f"bob's ring received {leaked}"
