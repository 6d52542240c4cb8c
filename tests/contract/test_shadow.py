"""Device shadows on both brokers: a setting written while the device is offline reaches it at its next birth (with
the real `wearbus shadow set|get` processes), a stale version and a setting outside the birth are refused with their
reasons, and a device restarted in the middle of an update applies it once and reports it once."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from agent.runtime import AgentRuntime, AgentSettings
from broker.client import Bus, BusOptions
from broker.mosquitto import AgentCredential, Credentials, DeviceCredential
from broker.shadow import publish_desired, read, wait_applied, write
from devices.earphones import EarphonesEmulator
from devices.glasses import GlassesEmulator
from devices.ring import RingEmulator
from devices.sdk import DeviceConfig
from schemas.actions import ContextSnapshot
from schemas.envelope import make
from schemas.errors import PublishError, SettingNotSupported, StaleVersion
from schemas.events import Utterance, Wake
from schemas.shadow import QuietHours, RingSettings, ShadowDesired, ShadowReported
from schemas.topics import DeviceId, Kind, desired_topic, reported_topic
from testkit.expect import Expect
from testkit.mosquitto import MosquittoProcess
from testkit.process import ProcessFactory
from tests.conftest import AGENT_PASSWORD, AGENT_USER, BrokerUnderTest, require_mosquitto
from tests.faults.harness import wait_for

pytestmark = [pytest.mark.broker]

USER = "sh"
RING = DeviceId(USER, Kind.RING, "ring-1")


async def cli(*args: str) -> tuple[int, str, str]:
    """Run ``wearbus`` as its own process."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cli.main",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@asynccontextmanager
async def bus_on(url: str) -> AsyncIterator[Bus]:
    async with Bus(BusOptions(url=url, name="test")) as bus:
        yield bus


class Reports:
    """Every ``shadow/reported`` of one device seen live, in order (on a connection of its own)."""

    def __init__(self, url: str, dev: DeviceId) -> None:
        self.bus, self.dev = Bus(BusOptions(url=url, name="reports")), dev
        self.seen: list[ShadowReported] = []
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Reports:
        await self.bus.__aenter__()
        await self.bus.subscribe(reported_topic(self.dev), 1)
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self.bus.__aexit__(None, None, None)

    async def _run(self) -> None:
        async for message in self.bus.messages():
            if isinstance(message.data, ShadowReported):
                self.seen.append(message.data)
                self._changed.set()

    async def until(self, pred: Callable[[ShadowReported], bool], timeout: float = 20.0) -> ShadowReported:
        async with asyncio.timeout(timeout):
            while True:
                for r in self.seen:
                    if pred(r):
                        return r
                self._changed.clear()
                await self._changed.wait()

    def versions(self) -> list[int]:
        return [r.version for r in self.seen if r.refused is None]


def config(url: str, tmp_path: Path, name: str = "ring-1") -> DeviceConfig:
    return DeviceConfig(url=url, heartbeat_s=0, shadow_file=tmp_path / f"{name}.shadow.json")


async def test_set_while_offline_is_applied_at_the_next_birth(any_broker: BrokerUnderTest, tmp_path: Path) -> None:
    url = any_broker.url
    rc, out, err = await cli(
        "shadow",
        "set",
        "--user",
        USER,
        "--device",
        "ring/ring-1",
        "hr_interval_s=120",
        "haptic_strength=0.3",
        "-b",
        url,
    )
    assert rc == 0, err
    assert "desired v1 written for sh/ring/ring-1" in out
    async with Reports(url, RING) as reports, RingEmulator(USER, "ring-1", config(url, tmp_path)) as ring:
        first = await reports.until(lambda r: r.version == 1)
        assert ring.sampler.cadence.hr_interval_s == 120
        assert ring.haptic_strength == 0.3
        assert ring.stats.settings_applied == 2
        assert isinstance(first.settings, RingSettings)
        assert first.settings.hr_interval_s == 120
        assert not first.rejected
        rc, out, err = await cli("shadow", "get", "--user", USER, "--device", "ring/ring-1", "--json", "-b", url)
        assert rc == 0, err
        shown = json.loads(out)["sh/ring/ring-1"]
        assert shown["delta"] == {}
        assert shown["desired"]["version"] == shown["reported"]["version"] == 1
        assert shown["online"] is True
        rc, out, _ = await cli("shadow", "get", "--user", USER, "-b", url)
        assert "ring/ring-1" in out
        assert "applied" in out
    assert reports.versions() == [1]


async def test_the_other_emulators_apply_real_effects(any_broker: BrokerUnderTest, tmp_path: Path) -> None:
    url = any_broker.url
    glasses_id, buds_id = DeviceId(USER, Kind.GLASSES, "g-1"), DeviceId(USER, Kind.EARPHONES, "b-1")
    async with bus_on(url) as bus:
        await write(bus, glasses_id, {"brightness": 0.2, "display_lang": "zh"}, by="test")
        await write(bus, buds_id, {"wake_word": "Hey Ring", "quiet_hours": {"start": "00:00", "end": "23:59"}}, by="t")
        async with (
            GlassesEmulator(USER, "g-1", config(url, tmp_path, "g-1")) as glasses,
            EarphonesEmulator(USER, "b-1", config(url, tmp_path, "b-1")) as buds,
        ):
            await wait_applied(bus, glasses_id, 1, timeout_s=20)
            await wait_applied(bus, buds_id, 1, timeout_s=20)
            assert (glasses.brightness, glasses.display_lang) == (0.2, "zh")
            wake = buds.wake_bodies("wake_word", "en")[0]
            assert isinstance(wake, Wake)
            assert wake.keyword == "Hey Ring"
            assert buds.settings.quiet_hours == QuietHours(start="00:00", end="23:59")


class NarrowRing(RingEmulator):
    """A ring of another maker: it can only change its heart-rate interval and quiet hours."""

    @property
    def setting_keys(self) -> list[str]:
        return ["hr_interval_s", "quiet_hours"]


async def test_stale_version_and_unsupported_setting_are_refused(any_broker: BrokerUnderTest, tmp_path: Path) -> None:
    url = any_broker.url
    async with (
        bus_on(url) as bus,
        Reports(url, RING) as reports,
        NarrowRing(USER, "ring-1", config(url, tmp_path)) as ring,
    ):
        await ring.wait_connected()
        async with asyncio.timeout(10):  # the birth is what `set` checks against
            while (await read(bus, USER, RING, settle_s=0.2)).get(RING).supported is None:
                pass
        rc, _, err = await cli("shadow", "set", "-u", USER, "-d", "ring/ring-1", "haptic_strength=0.5", "-b", url)
        assert rc == 1
        assert "refused (capability)" in err
        assert "cannot apply haptic_strength: its birth lists only hr_interval_s, quiet_hours" in err
        with pytest.raises(SettingNotSupported):
            await write(bus, RING, {"streams": ["hr"]}, by="test")

        rc, out, err = await cli(
            "shadow", "set", "-u", USER, "-d", "ring/ring-1", "hr_interval_s=600", "--wait", "20", "-b", url
        )
        assert rc == 0, err
        assert "applied desired v1" in out
        rc, _, err = await cli(
            "shadow", "set", "-u", USER, "-d", "ring/ring-1", "hr_interval_s=900", "--version", "0", "-b", url
        )
        assert rc == 1
        assert "refused (stale)" in err
        assert "based on version 0, but desired is at 1" in err
        with pytest.raises(StaleVersion):
            await write(bus, RING, {"hr_interval_s": 900}, by="test", expected_version=0)

        # A writer that ignores the rules publishes an older version: the device refuses it, with the reason.
        await publish_desired(bus, RING, ShadowDesired(version=0, settings=RingSettings(hr_interval_s=60)))
        refused = await reports.until(lambda r: r.refused is not None)
        assert refused.refused is not None
        assert refused.refused.version == 0
        assert "stale: desired version 0 is older than the applied version 1" in refused.refused.reason
        assert ring.sampler.cadence.hr_interval_s == 600


class FreezingRing(RingEmulator):
    """A ring that loses power after applying a setting and before reporting it (its report never leaves)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.frozen = asyncio.Event()

    async def report_shadow(self) -> None:
        self.frozen.set()
        await asyncio.Event().wait()


async def test_restart_in_the_middle_of_an_update(any_broker: BrokerUnderTest, tmp_path: Path) -> None:
    url = any_broker.url
    async with bus_on(url) as bus, Reports(url, RING) as reports:
        first = FreezingRing(USER, "ring-1", config(url, tmp_path))
        async with first:
            await write(bus, RING, {"hr_interval_s": 120}, by="test")
            await asyncio.wait_for(first.frozen.wait(), 20)  # applied (and kept in its flash), but not reported
            assert first.shadow_version == 1
        assert first.stats.settings_applied == 1
        assert reports.versions() == []

        async with RingEmulator(USER, "ring-1", config(url, tmp_path)) as second:
            await reports.until(lambda r: r.version == 1)
            assert second.stats.settings_applied == 0  # restored from its flash, not applied again
            assert second.sampler.cadence.hr_interval_s == 120
            await write(bus, RING, {"hr_interval_s": 180}, by="test")
            await reports.until(lambda r: r.version == 2)
            assert second.stats.settings_applied == 1
            # the broker has the report; the ring counts it once the PUBACK is back (a ring switched off before
            # that owes it, and reports it again at its next boot: at least once, as a device cannot know)
            await wait_for(lambda: second.stats.reported >= 2, "the ring to hold its report acknowledged", 20)
        async with RingEmulator(USER, "ring-1", config(url, tmp_path)) as third:
            await third.wait_connected()
            await write(bus, RING, {"haptic_strength": 0.5}, by="test")
            await reports.until(lambda r: r.version == 3)
            assert third.stats.settings_applied == 1
    assert reports.versions() == [1, 2, 3]  # each version reported once, across two restarts


async def test_the_test_kit_asserts_on_shadows(any_broker: BrokerUnderTest, tmp_path: Path) -> None:
    url = any_broker.url
    glasses_id = DeviceId(USER, Kind.GLASSES, "g-2")
    async with Expect(url, topic_filter=f"wb/v1/{USER}/#") as expect, bus_on(url) as bus:
        await write(bus, glasses_id, {"brightness": 0.1}, by="test")
        with pytest.raises(AssertionError, match=r"expected sh/glasses/g-2 to report the desired version.*pending"):
            await expect.shadow(glasses_id, within=0.5)  # asleep: desired v1, nothing reported
        async with GlassesEmulator(USER, "g-2", config(url, tmp_path, "g-2")):
            shadow = await expect.shadow(glasses_id, within=20)
        assert shadow.reported is not None
        assert shadow.reported.version == 1
        assert shadow.describe()["delta"] == {}


async def test_the_agent_changes_a_sleeping_rings_setting_from_one_sentence(
    any_broker: BrokerUnderTest, tmp_path: Path
) -> None:
    url = any_broker.url
    async with RingEmulator(USER, "ring-1", config(url, tmp_path)) as ring:  # known to the bus, then asleep
        await ring.wait_connected()
    settings = AgentSettings(
        url=url, db=tmp_path / "a.db", instance="agent-sh", username=AGENT_USER, password=AGENT_PASSWORD
    )
    async with (
        Expect(url, topic_filter=f"wb/v1/{USER}/#") as expect,
        AgentRuntime(settings) as agent,
        bus_on(url) as buds,
    ):
        await agent.wait_connected(15)
        await expect.message(f"wb/v1/{USER}/ring/ring-1/state", within=10)
        await buds.publish(
            f"wb/v1/{USER}/earphones/b-1/evt/voice/utterance",
            make(Utterance(text="把戒指心率测量改成每五分钟", lang="zh")),
            wait=True,
        )
        desired = await expect.message(desired_topic(RING), within=10)
        assert isinstance(desired.data, ShadowDesired)
        assert desired.data.by == "agent"
        assert isinstance(desired.data.settings, RingSettings)
        assert desired.data.settings.hr_interval_s == 300
        async with RingEmulator(USER, "ring-1", config(url, tmp_path)) as ring:  # wakes up: applies at its birth
            await expect.shadow(RING, within=20)
            assert ring.sampler.cadence.hr_interval_s == 300

            def applied(m: object) -> bool:
                data = getattr(m, "data", None)
                return (
                    isinstance(data, ContextSnapshot)
                    and data.settings.get("ring/ring-1", {}).get("hr_interval_s") == "applied"
                )

            await expect.message(f"wb/v1/{USER}/agent/context", where=applied, within=20)


async def test_real_processes_set_offline_then_kill_9_and_restart(any_broker: BrokerUnderTest, tmp_path: Path) -> None:
    """The issue's "done when", with every part its own process: `wearbus shadow set` while the ring is off, the
    ring (`wearbus device ring --state-dir`) applies it at its birth, `wearbus shadow get` shows no delta; after a
    kill -9 and a restart it neither applies nor reports that version again."""
    url = any_broker.url
    processes = ProcessFactory(tmp_path / "logs")
    ring_argv = ["device", "ring", "-u", USER, "--id", "ring-1", "-b", url, "--heartbeat", "0"]
    ring_argv += ["--state-dir", str(tmp_path / "flash"), "--log-level", "info"]
    try:
        async with Reports(url, RING) as reports:
            setter = await processes("shadow", "set", "-u", USER, "-d", "ring/ring-1", "hr_interval_s=180", "-b", url)
            assert await setter.wait(60) == 0, setter.output()
            first = await processes(*ring_argv, name="ring-1st")
            await reports.until(lambda r: r.version == 1, timeout=60)
            getter = await processes("shadow", "get", "-u", USER, "-d", "ring/ring-1", "--json", "-b", url)
            assert await getter.wait(60) == 0, getter.output()
            shown = json.loads(getter.output().strip().splitlines()[-1])["sh/ring/ring-1"]
            assert shown["delta"] == {}
            assert shown["reported"]["settings"]["hr_interval_s"] == 180
            await first.kill9()
            assert first.output().count("shadow_applied") == 1

            second = await processes(*ring_argv, name="ring-2nd")
            async with bus_on(url) as bus:
                await second.wait_output("connected", within=60)
                await write(bus, RING, {"hr_interval_s": 240}, by="test")
            await reports.until(lambda r: r.version == 2, timeout=60)
            assert reports.versions() == [1, 2]  # v1 was not reported again after the restart
            assert second.output().count("shadow_applied") == 1  # only v2: v1 came back from its flash
    finally:
        await processes.stop_all()


async def test_the_generated_acl_lets_each_role_do_its_part(tmp_path: Path) -> None:
    """With the ACL `wearbus broker config` writes: the agent writes desired settings and reads reports; a device
    reads only its own desired settings and writes only its own report."""
    require_mosquitto()
    ring_cred = DeviceCredential(USER, "ring", "ring-1", "ring-secret")
    other_cred = DeviceCredential(USER, "ring", "ring-2", "other-secret")
    credentials = Credentials(devices=(ring_cred, other_cred), agents=(AgentCredential("agent", "agent-secret"),))
    async with MosquittoProcess(credentials=credentials) as broker:
        host = broker.url.removeprefix("mqtt://")
        agent_url = f"mqtt://agent:agent-secret@{host}"
        async with Bus(BusOptions(url=agent_url, client_id="agent", name="agent")) as agent:
            await write(agent, RING, {"hr_interval_s": 900}, by="agent")
        cfg = DeviceConfig(url=broker.url, password="ring-secret", heartbeat_s=0, shadow_file=tmp_path / "r.json")
        async with Reports(agent_url, RING) as reports, RingEmulator(USER, "ring-1", cfg) as ring:
            await reports.until(lambda r: r.version == 1, timeout=20)
            assert ring.sampler.cadence.hr_interval_s == 900
        # Another device may neither read nor write this ring's settings.
        other = Bus(BusOptions(url=broker.url, client_id=other_cred.username, username=other_cred.username,
                               password="other-secret", name="other"))  # fmt: skip
        async with other:
            await other.subscribe(f"{RING.prefix}/shadow/#", 1)
            forged = ShadowDesired(version=7, settings=RingSettings(hr_interval_s=60))
            with pytest.raises(PublishError, match="Not authorized"):  # MQTT 5: the broker says so
                await publish_desired(other, RING, forged)
            assert await other.next_batch(timeout=1.0) == []  # and delivers nothing it may not read
        async with bus_on(agent_url) as check:
            book = await read(check, USER, RING)
        desired = book.get(RING).desired
        assert desired is not None
        assert desired.version == 1
