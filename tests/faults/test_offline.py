"""Promise 3: a device that vanishes is noticed.

- kill -9 of a device process: the kernel closes its socket, so the broker publishes its Will (retained
  ``offline``) at once, long before a keep-alive could have expired, and the agent's context shows it offline.
- a silent network cut (:class:`~testkit.proxy.TcpProxy` between the device and the broker stops
  forwarding without closing anything): the agent marks the device offline within 1.5 x keep-alive + 5 s, in
  practice sooner, after three missed heartbeats; the Will follows when the broker's keep-alive check fires.
  Once the cut heals, the events the device held arrive in order (seq) and each is acted on once.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from schemas import codec
from schemas.events import GlassesWear, InEar, Utterance
from schemas.topics import Kind, state_topic
from testkit.proxy import TcpProxy
from tests.faults.conftest import Scale
from tests.faults.harness import (
    ROOT,
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

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.timeout(300)]
USER = "u0"


def offline_since(observer: Observer, topic: str, since: float) -> bool:
    """Whether an offline state arrived on ``topic`` after ``since``."""
    return any(not online and at > since for at, online, _ in observer.device_states.get(topic, []))


def agent_says(observer: Observer, device: str, online: bool, since: float) -> bool:
    """Whether a context the agent published after ``since`` shows ``device`` online (or offline)."""
    found = observer.contexts.get(USER)
    return found is not None and found[0] > since and observer.device_online(USER, device) is online


async def test_a_device_killed_with_sigkill_is_offline_through_its_will(
    mosquitto_binary: None, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    keepalive_s = 10
    creds = fleet([USER])
    ring = device_id(USER, Kind.RING)
    cred = creds.device(USER, "ring", ring.device)
    counts = Counts("device-kill9")
    log = tmp_path / "device.log"
    async with secure_broker(creds) as broker, contextlib.AsyncExitStack() as stack:
        observer = await stack.enter_async_context(Observer(broker.url, TAP.username, TAP.password))
        agent = AgentProcess(broker.url, tmp_path / "agent.db", tmp_path / "agent.log")
        stack.push_async_callback(agent.stop)
        await agent.start()
        await observer.agent_online(agent)
        argv = [sys.executable, "-m", "tests.faults.device_proc", broker.url, USER, "ring", ring.device,
                cred.password, str(keepalive_s), "2"]  # fmt: skip
        with log.open("ab") as out:
            proc = await asyncio.create_subprocess_exec(*argv, cwd=ROOT, stdout=out, stderr=out, start_new_session=True)

        async def reap() -> None:
            if proc.returncode is None:
                os.kill(proc.pid, signal.SIGKILL)
                await asyncio.wait_for(proc.wait(), 10)

        stack.push_async_callback(reap)
        await wait_for(lambda: "ready" in log.read_text(errors="replace"), "the device process to connect", 30)
        await wait_for(lambda: agent_says(observer, ring.device, True, 0), "the agent to see the ring online", 15)
        killed = time.monotonic()
        os.kill(proc.pid, signal.SIGKILL)
        await asyncio.wait_for(proc.wait(), 10)
        bound = 1.5 * keepalive_s + 5
        will_s = await wait_for(lambda: offline_since(observer, state_topic(ring), killed), "the Will", bound)
        agent_s = await wait_for(lambda: agent_says(observer, ring.device, False, killed), "the agent's context", bound)
        db = AgentDb(agent.db)
        states = await db.rows("SELECT payload FROM events WHERE topic = ? ORDER BY seq", state_topic(ring))
        offline = [p for (p,) in states if not codec.decode(state_topic(ring), p).data.online]  # type: ignore[attr-defined]
        counts["sent"] = 1  # the Will, published by the broker on the dead device's behalf
        counts["acknowledged"] = int(offline_since(observer, state_topic(ring), killed))
        counts["processed"] = len(offline)
        counts["lost"] = 1 - min(1, len(offline))
        counts["keepalive_s"] = keepalive_s
        counts["will_s"] = round(will_s, 3)
        counts["agent_offline_s"] = round(agent_s, 3)
        counts["exit"] = proc.returncode or 0
    counts.report(record_property)
    assert proc.returncode == -signal.SIGKILL
    assert counts["processed"] == 1, "the agent did not store the Will"
    # Sooner than any keep-alive timer could have fired: the Will came from the closed socket.
    assert will_s < 1.5 * keepalive_s


async def test_a_silent_network_cut_is_noticed_and_held_events_arrive_in_order_once(
    scale: Scale, mosquitto_binary: None, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    keepalive_s, heartbeat_s = 4, 1.0
    bound = 1.5 * keepalive_s + 5
    creds = fleet([USER])
    ears_id = device_id(USER, Kind.EARPHONES)
    counts = Counts("silent-cut")
    async with (
        secure_broker(creds) as broker,
        TcpProxy(broker.port) as proxy,
        contextlib.AsyncExitStack() as stack,
    ):
        observer = await stack.enter_async_context(Observer(broker.url, TAP.username, TAP.password))
        agent = AgentProcess(broker.url, tmp_path / "agent.db", tmp_path / "agent.log")
        stack.push_async_callback(agent.stop)
        db = AgentDb(agent.db)
        await agent.start()
        await observer.agent_online(agent)
        glasses = await stack.enter_async_context(make_device(creds, USER, Kind.GLASSES, broker.url))
        ears = make_device(creds, USER, Kind.EARPHONES, proxy.url, heartbeat_s=heartbeat_s, keepalive_s=keepalive_s)
        await stack.enter_async_context(ears)
        await glasses.wait_connected(15)
        await ears.wait_connected(15)
        glasses.emit(GlassesWear(state="donned"))
        ears.emit(InEar(side="left", state="in"))
        ears.emit(InEar(side="right", state="in"))
        ears.emit(Utterance(text="zorp before the cut"))
        await wait_for(lambda: len(glasses.carried) == 1, "the answer to the first utterance", 15)
        await wait_for(lambda: agent_says(observer, ears_id.device, True, 0), "the agent to see the earphones", 15)

        cut = time.monotonic()
        proxy.cut()
        held = [ears.emit(Utterance(text=f"zorp held {i}")).id for i in range(scale.held)]
        agent_s = await wait_for(
            lambda: agent_says(observer, ears_id.device, False, cut), "the agent to mark the earphones offline", bound
        )
        # The broker's own verdict, for the record (mosquitto checks keep-alives on a coarse timer).
        will_s = await wait_for(
            lambda: offline_since(observer, state_topic(ears_id), cut), "the Will after the silent cut", bound + 10
        )
        healed = time.monotonic()
        proxy.heal()

        back_s = await wait_for(
            lambda: agent_says(observer, ears_id.device, True, healed), "the earphones online again", 30
        )

        async def held_arrived() -> bool:
            return set(held) <= await db.ids()

        await wait_for_async(held_arrived, "the held events at the agent", 60)
        await wait_for(lambda: len(glasses.carried) == 1 + len(held), "an answer to every held utterance", 30)
        order = [seq for _, seq in await db.rows(
            "SELECT id, dev_seq FROM events WHERE device = ? AND type = 'voice.utterance' ORDER BY seq", ears_id.device
        )]  # fmt: skip
        # The agent's own verdict from missed heartbeats is stored like a Will (ids "silent-..."), so a restart
        # replays it.
        silent = await db.rows("SELECT id FROM events WHERE device = ? AND id LIKE 'silent-%'", ears_id.device)
        answers = dict(await db.rows(
            "SELECT corr, COUNT(*) FROM actions WHERE reason = 'skill:unknown' GROUP BY corr"
        ))  # fmt: skip
        counts["keepalive_s"] = keepalive_s
        counts["heartbeat_s"] = heartbeat_s
        counts["agent_offline_s"] = round(agent_s, 2)
        counts["will_s"] = round(will_s, 2)
        counts["back_online_s"] = round(back_s, 2)
        counts["sent"] = len(held)
        counts["acknowledged"] = ears.stats.sent
        counts["processed"] = len(set(held) & await db.ids())
        counts["duplicates"] = ears.stats.resent
        counts["lost"] = len(set(held) - await db.ids())
        counts["carried_out_twice"] = sum(1 for n in glasses.carried.values() if n > 1)
    counts.report(record_property)
    assert agent_s <= bound
    assert len(silent) == 1, "the agent did not mark the device offline from its missed heartbeats"
    assert order == sorted(set(order)), f"utterances stored out of order (or twice): {order}"
    assert len(order) == 1 + len(held)
    assert all(answers.get(h) == 1 for h in held), "a held utterance was answered 0 or 2+ times"
    assert max(glasses.carried.values()) == 1
