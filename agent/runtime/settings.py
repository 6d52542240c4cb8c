"""How the agent runs (:class:`AgentSettings`) and what it counts (:class:`AgentStats`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from agent.admission import AdmissionConfig
from agent.core.config import CoreConfig
from agent.llm import ChatResolver
from broker.bus import MqttProtocol, TransportName
from schemas.topics import AGENT_FILTERS

VERSION = "0.1.0"


@dataclass(slots=True)
class AgentSettings:
    """How the agent runs.

    Attributes:
        url: broker URL.
        db: SQLite file.
        instance: the agent instance id (its client id and its state topic).
        username: login (the embedded broker needs one for the persistent session to queue while away).
        password: password.
        protocol: the MQTT version to ask for (``auto``: 5, else 3.1.1).
        transport: the MQTT client under the bus (``auto``, ``native``, ``paho``).
        users: only these users (None: all), for partitioned deployments.
        batch: messages per store transaction at most.
        tick_s: wall seconds between timer ticks.
        snapshot_s: wall seconds between core snapshots (the log since the last one is replayed on restart).
        context_s: wall seconds between retained context republishes per user.
        heartbeat_misses: a device whose birth announced heartbeats (``heartbeat_s``) and that has sent nothing for
            this many heartbeat intervals is marked offline, before its Will (which a silent network cut delays to
            ~1.5x keep-alive + 5 s); 0: wait for the Will.
        resolver: the optional LLM resolver for sentences the built-in parser does not understand (off: None).
        core: the core's thresholds and user profiles.
        admission: limits on timestamps and rates.
        subscriptions: the filters the agent subscribes (a cluster's bucket session selects its users with them).
        presence: publish the retained ``wb/v1/_agent/{instance}/state`` with a Will (a cluster's bucket sessions
            leave that to their member).
        slow_turn_ms: a pump turn that holds the event loop longer than this logs ``pump_turn_slow`` with the time
            of each of its parts and of the garbage collections in it (every event behind it waited that long); 0:
            never.
        linger_s: when a few messages are waiting and none is interactive
            (:data:`agent.runtime.interactive.INTERACTIVE`), wait up to this long for more before a turn (each turn
            costs a transaction and a dedup query whatever its size: fewer, fuller turns leave the loop free more
            often for the next sentence or gesture, which never lingers); 0: never.
        max_attempts: a message in a batch the agent did not survive this many times is parked on the DLQ
            (``wb/v1/_dlq/parked``) instead of being handled again (agent.parking); 0: never.
        db_max_mb: a cap on the database's size (SQLite's ``max_page_count``): past it every write fails with
            "database or disk is full", as on a full disk, and the agent ends (:mod:`agent.failfast`), unless the log's
            retention can make room first: past :data:`agent.store.LOG_PRESSURE` of it, the oldest events a restart
            no longer needs are deleted whatever their age; 0: none.
        log_retention_s: how long the events log keeps an event (by its arrival), and so how long a repeat of a QoS 1
            event is recognised (its id leaves the dedup check with it); the agent deletes older events while it
            runs, but never one a restart still needs; 0: for ever (with ``db_max_mb``, the oldest still go as the
            file nears the cap).
        health_retention_s: how long the raw payload of a health event (heart rate, SpO2, ...) is kept; then the
            agent, while it runs, replaces it by a redacted copy (the fused baselines and the context stay).
        health_hourly_retention_s: how long the hourly aggregates (count, sum, min, max) of pruned health values
            are kept, by their sample time.
        health_key: an AES-256-GCM key file: health event payloads, the per-user state and the context snapshots
            are sealed with it in the database (:mod:`agent.sealing`).
        order_wait_s: how long a device's event waits for a missing predecessor (by ``seq``) before the agent gives
            up on it, handles the device's events in order from there and records the gap (``order_gap``); a QoS 0
            event may be lost for good, so this bounds how long one loss holds that device back (agent/ordering.py).
    """

    url: str = "mqtt://127.0.0.1:1883"
    db: Path = Path(".wearbus/agent.db")
    instance: str = "agent-1"
    username: str | None = None
    password: str | None = None
    protocol: MqttProtocol = "auto"
    transport: TransportName = "auto"
    users: frozenset[str] | None = None
    batch: int = 500
    tick_s: float = 0.2
    snapshot_s: float = 2.0
    context_s: float = 1.0
    heartbeat_misses: int = 3
    resolver: ChatResolver | None = None
    core: CoreConfig = field(default_factory=CoreConfig)
    admission: AdmissionConfig = field(default_factory=AdmissionConfig)
    subscriptions: tuple[str, ...] = AGENT_FILTERS
    presence: bool = True
    slow_turn_ms: float = 100.0
    linger_s: float = 0.005
    db_max_mb: float = 0.0
    max_attempts: int = 3
    log_retention_s: float = 7 * 86_400.0
    health_retention_s: float = 7 * 86_400.0
    health_key: Path | None = None
    health_hourly_retention_s: float = 365 * 86_400.0
    order_wait_s: float = 1.0


@dataclass(slots=True)
class AgentStats:
    """What the runtime counts."""

    processed: int = 0
    duplicates: int = 0
    refused: int = 0
    actions: int = 0
    republished: int = 0
    replayed: int = 0
    alerts: int = 0
    batches: int = 0
    silent: int = 0
    llm_late: int = 0  # utterances handled after the LLM resolver answered (off the pump)
    sampled_out: int = 0  # refused for rate and counted, without a dead letter of their own
    order_gaps: int = 0
    in_hand_peak: int = 0  # the most messages taken from the bus and not handled yet (at most two batches)
