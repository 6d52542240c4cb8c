"""The same failover on one Mosquitto with per-user filters (``--partitions filters``): kill the busiest agent.

Mosquitto has no subject mapping, so each bucket session subscribes its users' topics (the user list is known),
and it resends a resumed session's unacknowledged messages first, so no reconnect hold is needed.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from testkit.mosquitto import MosquittoProcess
from tests.cluster import scenario
from tests.cluster.harness import RedisServer, require_redis_client, require_redis_server
from tests.conftest import require_mosquitto

# The two failovers (three agents, 50-100 devices, a broker cluster each) run one after the other on one xdist
# worker: side by side on a 2-core machine they would starve each other's members of their heartbeats.
pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.xdist_group("cluster")]


async def test_kill_busiest_agent_on_mosquitto(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    require_mosquitto()
    redis_bin = require_redis_server()
    require_redis_client()
    async with RedisServer(redis_bin) as redis_server, MosquittoProcess() as broker:
        counts = await scenario.run(
            scenario.Plan(
                urls=[broker.url], redis_url=redis_server.url, buckets=64, users=20, stream_s=12.0,
                kill_agent_at=0.4, logs=tmp_path, member_args=("--partitions", "filters"), user_list=True,
            )
        )  # fmt: skip
    report = "\n[mosquitto members failover] " + "\n[mosquitto members failover] ".join(counts.report)
    with capsys.disabled():
        print(report)
    assert counts.lost == 0, report
    assert counts.processed_twice == 0, report
    assert counts.out_of_order == 0, report
    assert counts.repeated == 0, report
    assert counts.unpublished == 0, report
    assert counts.undelivered == 0, report
    assert counts.members_processing == 3, report
    assert counts.settled, report
