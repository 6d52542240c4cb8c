"""Micro-benchmark: another user's answer latency while one user's LLM call is slow (issue #24).

``python -m bench.llm`` runs the real agent runtime against an in-process broker and a local
OpenAI-compatible endpoint that holds every answer for ``--delay`` seconds. User B asks "Take a photo" ``--n`` times
(the time from the utterance's publish to the agent's ``camera.capture``), first with nothing else going on, then
while user A's sentence waits for the slow endpoint. It prints both medians and maxima and their ratio: with the
LLM call off the pump the ratio stays near 1; with the call on the pump B's first answer waited for A's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path

from agent.llm import ChatResolver, ResolverConfig
from agent.runtime import AgentRuntime, AgentSettings
from broker.client import Bus, BusOptions
from broker.embedded import EmbeddedBroker, free_port
from broker.logs import configure_logging
from schemas.actions import DeviceState
from schemas.envelope import make
from schemas.events import Utterance
from schemas.topics import Channel, DeviceId, Kind, device_channel, device_prefix, event_topic, state_topic

PASSWORD = "bench"  # noqa: S105 (a throwaway in-process broker)


class SlowEndpoint:
    """A chat-completions endpoint that answers after ``delay`` seconds with no tool call."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.port = free_port()
        self.asked = asyncio.Event()
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> SlowEndpoint:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = next(int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length"))
        await reader.readexactly(length)
        self.asked.set()
        await asyncio.sleep(self.delay)
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": "no tool"}}]}).encode()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(data))
        writer.write(data)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()


async def _born(dev: Bus, user: str) -> None:
    for kind, did in (("phone", "p1"), ("glasses", "g1"), ("earphones", "b1")):
        state = make(DeviceState(online=True, kind=Kind(kind)))
        await dev.publish(state_topic(DeviceId(user, Kind(kind), did)), state, retain=True, wait=True)


async def _answer_ms(dev: Bus, user: str) -> float:
    """Publish "Take a photo" for ``user`` and wait for the capture command: milliseconds."""
    started = time.perf_counter()
    topic = event_topic(DeviceId(user, Kind.GLASSES, "g1"), "voice", "utterance")
    await dev.publish(topic, make(Utterance(text="Take a photo")), wait=True)
    async with asyncio.timeout(30):
        async for m in dev.messages():
            if m.where.user == user and m.where.channel is Channel.COMMAND and m.where.name == "camera.capture":
                return (time.perf_counter() - started) * 1000
    raise AssertionError("no answer")  # pragma: no cover


async def run(n: int, delay: float) -> tuple[list[float], list[float]]:
    """B's answer times (ms) alone, and while A's LLM call is pending."""
    a, b = (f"{name}-{uuid.uuid4().hex[:6]}" for name in ("a", "b"))
    with tempfile.TemporaryDirectory(prefix="wearbus-llm-bench-") as tmp:
        async with (
            SlowEndpoint(delay) as slow,
            EmbeddedBroker(port=free_port(), users={"agent": PASSWORD}) as broker,
        ):
            resolver = ChatResolver(ResolverConfig(f"http://127.0.0.1:{slow.port}/v1", "bench", timeout_s=delay + 5))
            settings = AgentSettings(url=broker.url, db=Path(tmp) / "a.db", instance="agent-llm-bench",
                                     username="agent", password=PASSWORD, resolver=resolver)  # fmt: skip
            async with AgentRuntime(settings) as agent, Bus(BusOptions(url=broker.url)) as dev:
                await agent.wait_connected(15)
                for user in (a, b):
                    await dev.subscribe(device_channel(device_prefix(user), Channel.COMMAND), 1)
                    await _born(dev, user)
                await _answer_ms(dev, b)  # warm-up
                alone = [await _answer_ms(dev, b) for _ in range(n)]
                sentence = make(Utterance(text="could you sort out something for me"))
                await dev.publish(
                    event_topic(DeviceId(a, Kind.GLASSES, "g1"), "voice", "utterance"), sentence, wait=True
                )
                await slow.asked.wait()
                pending = time.perf_counter()
                during: list[float] = []
                while len(during) < n and time.perf_counter() - pending < delay * 0.8:
                    during.append(await _answer_ms(dev, b))
    return alone, during


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20, help="answers of user B to time in each phase")
    parser.add_argument("--delay", type=float, default=3.0, help="seconds the endpoint holds each answer")
    parser.add_argument("--log-level", default="error", help="debug, info, warning or error")
    args = parser.parse_args()
    configure_logging(args.log_level)
    alone, during = asyncio.run(run(args.n, args.delay))
    p50a, p50d = statistics.median(alone), statistics.median(during)
    print(
        f"user B's answer (utterance -> camera.capture), {len(alone)} alone: p50 {p50a:.1f} ms, "
        f"max {max(alone):.1f} ms; {len(during)} while user A's LLM call waits {args.delay:.1f} s: "
        f"p50 {p50d:.1f} ms, max {max(during):.1f} ms; ratio p50 {p50d / p50a:.2f}"
    )


if __name__ == "__main__":
    main()
