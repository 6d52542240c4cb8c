"""The load generator: every packet it sends comes from broker.mqtt's encoders, and it reassembles what a broker
sends it however the stream is cut (unit), and it works against a real broker (the embedded one)."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.loadgen import Will, WireClient
from broker import mqtt
from broker.embedded import EmbeddedBroker, free_port


class Capture(asyncio.Transport):
    """A transport that keeps what is written."""

    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()

    def write(self, data: Any) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return False


topics = st.text(alphabet="abcdefghij/-_0123456789", min_size=1, max_size=80)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    packets=st.lists(st.tuples(topics, st.binary(max_size=400), st.sampled_from([0, 1])), min_size=1, max_size=20),
    cuts=st.lists(st.integers(1, 64), min_size=1, max_size=50),
)
def test_publishes_cut_anywhere_are_reassembled_and_acknowledged(
    packets: list[tuple[str, bytes, int]], cuts: list[int]
) -> None:
    async def run() -> None:
        got: list[tuple[str, bytes, int]] = []
        client = WireClient("c", lambda _c, t, p, q: got.append((t, p, q)))
        transport = Capture()
        client.connection_made(transport)
        stream = b"".join(
            mqtt.encode_publish(t.encode(), p, q, False, i + 1 if q else 0, b"") for i, (t, p, q) in enumerate(packets)
        )
        pos, i = 0, 0
        while pos < len(stream):
            step = cuts[i % len(cuts)]
            client.data_received(stream[pos : pos + step])
            pos += step
            i += 1
        assert got == packets
        acks = b"".join(mqtt.encode_puback(i + 1) for i, (_, _, q) in enumerate(packets) if q)
        assert bytes(transport.written) == acks

    asyncio.run(run())


async def test_against_the_embedded_broker() -> None:
    async with EmbeddedBroker(port=free_port()) as broker:
        seen: list[tuple[str, bytes, int]] = []  # every QoS 1 delivery was acknowledged, or amqtt would resend
        done = asyncio.Event()

        def on_message(_c: WireClient, topic: str, payload: bytes, qos: int) -> None:
            seen.append((topic, payload, qos))
            if len(seen) == 20:
                done.set()

        will = Will("wb/v1/u/ring/r1/state", b"off", retain=True)
        sub = await WireClient.open("127.0.0.1", broker.port, "lg-sub", on_message=on_message)
        pub = await WireClient.open("127.0.0.1", broker.port, "lg-pub", will=will, keepalive=30)
        try:
            await sub.subscribe([("wb/v1/u/#", 1)])
            for i in range(20):
                pub.publish("wb/v1/u/ring/r1/evt/sensor/hr", bytes([i]), qos=i % 2)
                await pub.window(4)
            await pub.drain(10)
            async with asyncio.timeout(10):
                await done.wait()
        finally:
            pub.disconnect()
            sub.disconnect()
        assert pub.acked == 10
        assert [p for _, p, _ in seen] == [bytes([i]) for i in range(20)]
        # (amqtt delivers at the subscription's QoS, not min(publish, subscription): the QoS seen says nothing here)
