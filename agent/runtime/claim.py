"""The instance-id claim: an agent refuses to start while another running agent holds its instance id.

Two agents with one id would take the session from each other in a loop. A holder on this host is judged by its
process id (a crashed one is no holder, a running one refuses us at once); one elsewhere gets ``1.5 x keep-alive``
for its Will to say offline.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from typing import Any

from agent.runtime.settings import AgentSettings
from broker.bus import Bus, BusOptions
from schemas.actions import AgentState
from schemas.envelope import Message
from schemas.errors import ConfigError
from schemas.topics import agent_state_topic

#: Seconds to reach the broker for the instance-id check, and to wait for the retained agent state after it.
CLAIM_CONNECT_S = 10.0
CLAIM_RETAINED_S = 1.0
#: Seconds the broker keeps the probe's session (MQTT 5): a leftover one goes soon.
CLAIM_SESSION_S = 60


class InstanceTaken(ConfigError):
    """Another running agent holds this instance id."""


async def claim_instance(settings: AgentSettings, bus_factory: Callable[[BusOptions], Bus], log: Any) -> str:
    """The protocol the broker spoke (no second probe for it), once no running agent holds the instance id.

    Raises:
        InstanceTaken: a live agent holds the id.
    """
    s = settings
    topic = agent_state_topic(s.instance)
    # A broker that makes the username the client id (Mosquitto's use_username_as_clientid, as generated) gives
    # this probe the agent's own session: it must resume it, not wipe it (no clean start), and leave what is
    # queued there unacknowledged (redelivered to the agent), and its subscription must go again.
    options = BusOptions(
        url=s.url, client_id=f"{s.instance}.claim", username=s.username, password=s.password,
        protocol=s.protocol, transport=s.transport, persistent=True, session_expiry_s=CLAIM_SESSION_S,
        manual_ack=True, observe_only=True, name=f"{s.instance}.claim",
        connect_timeout_s=CLAIM_CONNECT_S,
    )  # fmt: skip
    probe = bus_factory(options)
    async with probe:
        await probe.subscribe(topic, 0)  # the retained state at QoS 0: nothing for this probe to acknowledge
        try:
            return await judge_holder(probe, topic, s.instance, log)
        finally:
            await probe.unsubscribe(topic)


async def judge_holder(probe: Bus, topic: str, instance: str, log: Any) -> str:
    """The protocol the broker speaks, once nobody running holds the id (else raises InstanceTaken)."""
    seen: list[Message] = []
    deadline = time.monotonic() + CLAIM_RETAINED_S
    while not any(m.topic == topic for m in seen) and (left := deadline - time.monotonic()) > 0:
        seen += await probe.next_batch(100, timeout=left)  # (the agent's queued events, too: left unacked)
    holder = holder_of(seen, topic)
    here = running_here(holder) if holder is not None else None
    if holder is None or here is False:
        return probe.protocol
    wait_s = 1.5 * probe.options.keepalive_s + 2
    if here is None:
        log.warning("instance_held", instance=instance, host=holder.host, pid=holder.pid, wait_s=wait_s)
    deadline = time.monotonic() + wait_s
    while here is None and (left := deadline - time.monotonic()) > 0:  # elsewhere: its Will may come
        batch = await probe.next_batch(100, timeout=left)
        if any(m.topic == topic for m in batch) and holder_of(batch, topic) is None:
            return probe.protocol  # its Will (or a clean stop) came: free
    where = f"pid {holder.pid} on host {holder.host}" if holder.host else "an agent of an older version"
    raise InstanceTaken(
        f"agent instance id {instance!r} is held by a running agent ({where}; its retained state on {topic} "
        f"says online). Stop that agent, or start this one with another --instance."
    )


def holder_of(batch: list[Message], topic: str) -> AgentState | None:
    """The agent that holds the id, per the last state on ``topic`` in ``batch`` (None: nobody, or offline)."""
    states = [m.data for m in batch if m.topic == topic and isinstance(m.data, AgentState)]
    return states[-1] if states and states[-1].online else None


def running_here(holder: AgentState) -> bool | None:
    """Whether the holder is a running process of this host (None: it runs elsewhere, or we cannot tell)."""
    if holder.host != socket.gethostname() or holder.pid is None:
        return None
    try:
        os.kill(holder.pid, 0)
    except ProcessLookupError:
        return False  # an agent that crashed: no holder
    except PermissionError:
        return True  # another user's process
    return True
