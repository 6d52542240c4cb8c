"""Three agents on a three-node NATS cluster with 50 users: kill the busiest agent and one broker node mid-stream.

Counted from what is durable: every event id the devices sent and got a PUBACK for; every event the agents
processed, in processing order, from the buckets' logs in Redis (each entry names the member that handled it);
every action stored and every action a monitor subscriber received. Then: zero lost, zero processed twice, zero
repeated actions, zero out of order per device. The counts are printed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.cluster import scenario
from tests.cluster.harness import (
    NatsCluster,
    RedisServer,
    nats_version,
    require_nats_server,
    require_redis_client,
    require_redis_server,
)

# The two failovers (three agents, 50-100 devices, a broker cluster each) run one after the other on one xdist
# worker: side by side on a 2-core machine they would starve each other's members of their heartbeats.
pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.xdist_group("cluster")]


async def test_kill_busiest_agent_and_a_broker_node(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    nats_bin = require_nats_server()
    redis_bin = require_redis_server()
    require_redis_client()
    buckets = 64
    async with RedisServer(redis_bin) as redis_server, NatsCluster(nats_bin, buckets, tmp_path) as nats:

        async def kill_node() -> str:
            leader = await asyncio.to_thread(nats.meta_leader)
            node = 0 if leader is None else leader
            await nats.kill9(node)
            return f"kill -9 NATS node n{node + 1} (the JetStream meta leader)"

        # nats-server < 2.10 rejects '.' in MQTT topics and drops the publisher; every command topic has one
        # (cmd/display.card), so there the agents send commands escaped and the monitor reads them back.
        escape = nats_version(nats_bin) < (2, 10)
        counts = await scenario.run(
            scenario.Plan(
                urls=nats.urls, redis_url=redis_server.url, buckets=buckets, users=50, stream_s=24.0,
                kill_agent_at=0.3, kill_node=kill_node, kill_node_at=0.55, logs=tmp_path,
                member_args=("--escape-dots",) if escape else (), escaped_commands=escape,
            )
        )  # fmt: skip
    report = "\n[nats cluster failover] " + "\n[nats cluster failover] ".join(counts.report)
    with capsys.disabled():
        print(report)
    assert counts.lost == 0, report
    assert counts.processed_twice == 0, report
    # late redeliveries included: the agents put each device's events in seq order (agent/ordering.py)
    assert counts.out_of_order == 0, report
    assert counts.repeated == 0, report
    assert counts.unpublished == 0, report
    assert counts.undelivered == 0, report
    assert counts.members_processing == 3, report
    assert counts.settled, report
