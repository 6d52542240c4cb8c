"""The optional LLM resolver against a local fake OpenAI-compatible server, alone and inside the agent."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, Self

import pytest

from agent.llm import ChatResolver, ResolverConfig, parse_reply
from agent.runtime import AgentRuntime, AgentSettings
from agent.store import Store
from broker.client import Bus, BusOptions
from broker.embedded import EmbeddedBroker, free_port
from schemas.actions import DeviceState
from schemas.envelope import make
from schemas.events import Utterance
from schemas.topics import Channel, Kind
from tests.conftest import speak_311

SENTENCE = "could you sort out transport to the airport for me"


class FakeOpenAI:
    """Answers /v1/chat/completions: a hail_ride tool call when the sentence mentions an airport, else text."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.port = free_port()
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> Self:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(
            next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
        )
        body = json.loads(await reader.readexactly(length))
        self.requests.append(body)
        text = body["messages"][-1]["content"]
        if "airport" in text:
            message: dict[str, Any] = {"role": "assistant", "content": None, "tool_calls": [{
                "id": "c1", "type": "function",
                "function": {"name": "hail_ride", "arguments": json.dumps({"destination": "airport"})}}]}  # fmt: skip
        else:
            message = {"role": "assistant", "content": "no tool fits"}
        data = json.dumps({"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}).encode()
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(data) + data
        )
        await writer.drain()
        writer.close()


@pytest.fixture
async def fake() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        yield server


def resolver(port: int) -> ChatResolver:
    return ChatResolver(ResolverConfig(f"http://127.0.0.1:{port}/v1", "qwen-test", api_key="k"))


async def test_resolves_with_a_tool_call(fake: FakeOpenAI) -> None:
    intent = await resolver(fake.port).resolve(SENTENCE, "en")
    assert intent is not None
    assert intent.skill == "hail_ride"
    assert dict(intent.slots) == {"destination": "airport"}
    [request] = fake.requests
    assert request["model"] == "qwen-test"
    assert {t["function"]["name"] for t in request["tools"]} >= {"order_food", "hail_ride", "navigate"}


async def test_no_tool_call_and_no_server_give_none(fake: FakeOpenAI) -> None:
    assert await resolver(fake.port).resolve("what a nice day", "en") is None
    assert await resolver(free_port()).resolve(SENTENCE, "en") is None  # nothing listens there


def test_malformed_replies_give_none() -> None:
    assert parse_reply({}, "x", "en") is None
    bad = {"choices": [{"message": {"tool_calls": [{"function": {"name": "launch_rocket", "arguments": "{}"}}]}}]}
    assert parse_reply(bad, "x", "en") is None


@pytest.mark.broker
async def test_the_agent_uses_it_for_what_the_parser_misses(
    fake: FakeOpenAI, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    speak_311(monkeypatch)  # amqtt: no 3 s MQTT 5 probe per connection
    user = f"t-{uuid.uuid4().hex[:8]}"
    async with EmbeddedBroker(port=free_port(), users={"agent": "pw"}) as broker:
        settings = AgentSettings(url=broker.url, db=tmp_path / "a.db", instance=f"agent-{user}", username="agent",
                                 password="pw", resolver=resolver(fake.port))  # fmt: skip
        async with AgentRuntime(settings) as agent, Bus(BusOptions(url=broker.url)) as dev:
            await agent.wait_connected(15)
            await dev.subscribe(f"wb/v1/{user}/+/+/cmd/#", 1)
            for kind, did in (("phone", "p1"), ("earphones", "b1")):
                await dev.publish(f"wb/v1/{user}/{kind}/{did}/state", make(DeviceState(online=True, kind=Kind(kind))),
                                  retain=True, wait=True)  # fmt: skip
            await dev.publish(
                f"wb/v1/{user}/earphones/b1/evt/voice/utterance", make(Utterance(text=SENTENCE)), wait=True
            )
            async with asyncio.timeout(15):
                async for m in dev.messages():
                    if m.where.channel is Channel.COMMAND and m.where.name == "task.start":
                        assert m.data.skill == "hail_ride"  # type: ignore[attr-defined]
                        break
    async with Store(tmp_path / "a.db") as store:
        assert len(await store.resolutions()) == 1


class SlowOpenAI(FakeOpenAI):
    """As FakeOpenAI, but each answer waits until the test lets it go (the endpoint is slow, up to its timeout)."""

    def __init__(self) -> None:
        super().__init__()
        self.asked = asyncio.Event()
        self.release = asyncio.Event()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.asked.set()
        await self.release.wait()
        await super()._serve(reader, writer)


@pytest.mark.broker
async def test_a_slow_llm_call_blocks_nobody_else(tmp_path: Path) -> None:
    """The issue: while one user's sentence waited for the endpoint, every other user's answers waited too.

    Alice's sentence goes to an LLM that does not answer until Bob has had his answer: with the call on the pump,
    Bob's answer never comes first and this test times out. Then Alice's late answer is applied to her context.
    """
    alice, bob = (f"{n}-{uuid.uuid4().hex[:6]}" for n in ("alice", "bob"))
    async with SlowOpenAI() as slow, EmbeddedBroker(port=free_port(), users={"agent": "pw"}) as broker:
        config = ResolverConfig(f"http://127.0.0.1:{slow.port}/v1", "qwen-test", timeout_s=30)
        settings = AgentSettings(url=broker.url, db=tmp_path / "a.db", instance="agent-hol", username="agent",
                                 password="pw", resolver=ChatResolver(config))  # fmt: skip
        async with AgentRuntime(settings) as agent, Bus(BusOptions(url=broker.url)) as dev:
            await agent.wait_connected(15)
            for user in (alice, bob):
                await dev.subscribe(f"wb/v1/{user}/+/+/cmd/#", 1)
                for kind, did in (("phone", "p1"), ("earphones", "b1"), ("glasses", "g1")):
                    state = make(DeviceState(online=True, kind=Kind(kind)))
                    await dev.publish(f"wb/v1/{user}/{kind}/{did}/state", state, retain=True, wait=True)
            await dev.publish(
                f"wb/v1/{alice}/earphones/b1/evt/voice/utterance", make(Utterance(text=SENTENCE)), wait=True
            )
            async with asyncio.timeout(15):
                await slow.asked.wait()  # Alice's sentence is with the LLM now
            await dev.publish(f"wb/v1/{bob}/glasses/g1/evt/voice/utterance", make(Utterance(text="Take a photo")),
                              wait=True)  # fmt: skip
            seen: list[tuple[str, str]] = []
            async with asyncio.timeout(15):
                async for m in dev.messages():
                    if m.where.channel is not Channel.COMMAND:
                        continue
                    seen.append((m.where.user or "", m.where.name or ""))
                    if (bob, "camera.capture") in seen and not slow.release.is_set():
                        assert all(user != alice for user, _ in seen)  # nothing for Alice yet: she waits alone
                        slow.release.set()  # now the LLM answers
                    if (alice, "task.start") in seen:
                        break
            assert seen.index((bob, "camera.capture")) < seen.index((alice, "task.start"))
            assert agent.stats.llm_late == 1
    async with Store(tmp_path / "a.db") as store:
        assert len(await store.resolutions()) == 1  # stored with the utterance: a replay gives the same hint
