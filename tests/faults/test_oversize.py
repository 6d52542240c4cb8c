"""Issue 18, item 4, over the wire: an event the broker can never take does not block the device's outbox.

A ``SyncBatch`` of 4,000-5,000 items (300-380 KB) was valid by the schema but over the broker's packet limit: the
broker disconnected the ring, the outbox sent the same event again on every reconnect, the Will fired on every try
and nothing after it was delivered. The contract now caps a batch so that it always fits the generated broker's
limit; against a broker with a smaller limit (64 KiB here) the ring's outbox must dead-letter the batch (a reason,
a log line, a stat) and deliver what follows.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

import pytest

from broker.mosquitto import Limits
from schemas.envelope import now_ms
from schemas.events import MAX_BATCH_ITEMS, HeartRate, Steps, SyncBatch
from schemas.topics import Kind
from tests.faults.harness import TAP, Counts, Observer, fleet, make_device, secure_broker, wait_for

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.timeout(180)]


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
async def test_an_oversize_event_is_dead_lettered_and_the_next_is_delivered(
    protocol: str,
    mosquitto_binary: None,
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    """MQTT 5: the broker's CONNACK gives its Maximum Packet Size, so the batch is never sent. MQTT 3.1.1: no limit
    is known, the broker closes the connection on each try, and the batch is given up after ``max_send_tries``."""
    creds = fleet(["alice"])
    counts = Counts(f"oversize-{protocol}")
    async with (
        secure_broker(creds, limits=Limits(max_packet_size=64 * 1024)) as broker,
        contextlib.AsyncExitStack() as stack,
    ):
        observer = await stack.enter_async_context(Observer(broker.url, TAP.username, TAP.password))
        ring = make_device(creds, "alice", Kind.RING, broker.url, protocol="5" if protocol == "5" else "3.1.1")
        await stack.enter_async_context(ring)
        await ring.wait_connected(15)
        now = now_ms()
        items = [
            Steps(steps=9999, calories_kcal=123.456789, distance_m=9876.54321, bucket_start=now - i, src_ts=now - i)
            for i in range(MAX_BATCH_ITEMS)
        ]
        batch = ring.emit(SyncBatch(from_ts=now - MAX_BATCH_ITEMS, to_ts=now, items=items), src_ts=now - 1000)
        after = ring.emit(HeartRate(bpm=64, source="spot"))
        took = await wait_for(lambda: observer.events[after.id] > 0, "the event behind the oversize batch", 60)
        offline = sum(1 for states in observer.device_states.values() for _, online, _ in states if not online)

    counts["sent"] = 2
    counts["processed"] = int(observer.events[after.id] > 0)
    counts["dead_lettered"] = ring.stats.dead_lettered
    counts["wills"] = offline
    counts["next_delivered_s"] = round(took, 2)
    counts.report(record_property)
    assert observer.events[batch.id] == 0
    assert ring.stats.dead_lettered == 1
    reason = ring.dead_letters[0][1]
    if protocol == "5":
        assert reason == "too_large"
        assert offline == 0, f"the Will fired {offline} times"
    else:
        assert reason == "connection_lost"
        assert offline <= ring.config.max_send_tries, f"the Will fired {offline} times"
