"""The live console in a real headless browser (Chromium driven by Selenium 4 through the system's chromedriver).

The stack: an embedded broker on a free port, the console on a free port, and a test bus that publishes as fake
devices and as the agent. The browser is the system's chromium with its chromedriver, named explicitly (nothing is
downloaded). Every wait is bounded. A screenshot is saved under ``test-artifacts/``; with
``WB_UPDATE_DOCS=1`` it is also copied to ``docs/console.png`` for the README.

The second half checks the server over plain HTTP (no browser): the event stream, batching, the inject endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import shutil
import signal
import socket
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import typer
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.options import Options as ChromeOptions
from selenium.webdriver.chrome.service import Service as ChromeService
from selenium.webdriver.chrome.webdriver import WebDriver
from typer.testing import CliRunner

from broker.client import Bus, BusOptions
from broker.embedded import EmbeddedBroker, free_port
from console.cli import _console, register
from console.server import ConsoleServer
from schemas import actions as act
from schemas import events as ev
from schemas.envelope import Message, make, now_ms
from schemas.shadow import GlassesSettings, ShadowDesired, ShadowReported
from schemas.tasks import cancel_and_wait
from schemas.topics import (
    DeviceId,
    Kind,
    ack_topic,
    agent_state_topic,
    command_topic,
    context_topic,
    desired_topic,
    event_topic,
    reported_topic,
    state_topic,
)
from tests.conftest import speak_311

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROME_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1440,1280",
]
WAIT_S = 30.0


# ------------------------------------------------------------------------------------------------ the browser


def _find_browser() -> tuple[str, str] | None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if chromium is None or driver is None:
        return None
    return chromium, driver


def require_browser() -> tuple[str, str]:
    """The Chromium and chromedriver binaries; skip without them, but fail under CI=true."""
    found = _find_browser()
    if found is not None:
        return found
    why = "chromium and chromedriver are not installed (apt-get install chromium chromium-driver)"
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but {why}: the project's set-up must install them")
    pytest.skip(f"{why}; the browser test of the console is skipped")


@pytest.fixture
async def browser() -> AsyncIterator[WebDriver]:
    """A headless Chromium session through Selenium 4, with the system's chromedriver (Selenium stops it on quit).

    The binary and the driver are given explicitly, so Selenium Manager never looks for (or downloads) either.
    """
    chromium, chromedriver = require_browser()
    with tempfile.TemporaryDirectory(prefix="wb-chromium-") as profile:
        options = ChromeOptions()
        options.binary_location = chromium
        options.page_load_strategy = "eager"  # the event stream never "finishes loading"
        for arg in [*CHROME_ARGS, f"--user-data-dir={Path(profile) / 'user-data'}"]:
            options.add_argument(arg)
        service = ChromeService(executable_path=chromedriver, log_output=str(Path(profile) / "chromedriver.log"))
        driver = await asyncio.to_thread(webdriver.Chrome, options=options, service=service)
        try:
            driver.set_page_load_timeout(60)
            yield driver
        finally:
            await asyncio.to_thread(driver.quit)


async def until(driver: WebDriver, script: str, ok: Callable[[Any], bool], what: str, timeout: float = WAIT_S) -> Any:
    """Poll a script in the page until ``ok`` holds for its value (bounded; a screenshot is saved on failure)."""
    value: Any = None
    try:
        async with asyncio.timeout(timeout):
            while True:
                value = await asyncio.to_thread(driver.execute_script, script)
                if ok(value):
                    return value
                await asyncio.sleep(0.1)
    except TimeoutError:
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "console-failure.png"
        with contextlib.suppress(OSError, WebDriverException):
            shot.write_bytes(await asyncio.to_thread(driver.get_screenshot_as_png))
        pytest.fail(f"the page did not show {what} within {timeout:g} s; last value {value!r}; see {shot}")


DEVICES_JS = """
return [...document.querySelectorAll('#devices .device')].map(e => [e.dataset.key, e.dataset.online]);
"""
HUD_JS = "return document.querySelector('#displays')?.innerText || '';"
SHADOW_JS = """
return [...document.querySelectorAll('#devices .device .shadow')]
  .map(e => [e.dataset.setting, e.className, e.innerText]);
"""
HR_JS = """
const p = document.getElementById('plot-hr');
if (!p) return [0, 0];
const d = p.getAttribute('d') || '';
return [Number(p.dataset.points || 0), (d.match(/[ML]/g) || []).length];
"""
BROKER_JS = "return document.getElementById('broker')?.dataset.connected || '';"
LIVE_JS = "return document.getElementById('link')?.classList.contains('ok') || false;"


# ------------------------------------------------------------------------------------------------ the fake stack


class FakeUser:
    """Publishes as the four devices of one user, and as the agent."""

    def __init__(self, bus: Bus, user: str) -> None:
        self.bus = bus
        self.user = user
        self.glasses = DeviceId(user, Kind.GLASSES, "s1")
        self.ring = DeviceId(user, Kind.RING, "ring-1")
        self.buds = DeviceId(user, Kind.EARPHONES, "buds-1")
        self.phone = DeviceId(user, Kind.PHONE, "phone-1")

    @property
    def devices(self) -> list[DeviceId]:
        return [self.glasses, self.ring, self.buds, self.phone]

    async def births(self) -> None:
        for dev in self.devices:
            birth = act.DeviceState(online=True, kind=dev.kind, model=f"{dev.kind.value}-emu", firmware="1.4.2")
            await self.bus.publish(state_topic(dev), make(birth), retain=True, wait=True)

    async def event(self, dev: DeviceId, cls: str, name: str, body: ev.Body, **kw: Any) -> str:
        envelope = make(body, **kw)
        await self.bus.publish(event_topic(dev, cls, name), envelope, wait=True)
        return envelope.id

    async def command(self, dev: DeviceId, body: ev.Body, corr: str) -> str:
        envelope = make(body, corr=corr)
        action = str(type(body).model_fields["type"].default)
        await self.bus.publish(command_topic(dev, action), envelope, wait=True)
        return envelope.id

    async def hr(self, first: int, n: int, t0: int) -> None:
        for i in range(first, first + n):
            bpm = 64 + 9 * math.sin(i / 5)
            await self.event(
                self.ring, "sensor", "hr", ev.HeartRate(bpm=bpm, source="realtime"), src_ts=t0 + i * 60_000
            )


@pytest.fixture
async def stack(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[EmbeddedBroker, ConsoleServer, Bus]]:
    speak_311(monkeypatch)  # amqtt: the console's bus skips the 3 s MQTT 5 probe
    async with (
        EmbeddedBroker(port=free_port()) as broker,
        ConsoleServer(broker.url, port=0, allow_inject=True, show_health=True) as console,
        Bus(BusOptions(url=broker.url, name="fake-devices", protocol="3.1.1")) as bus,
    ):
        await console.bus.wait_connected(WAIT_S)
        yield broker, console, bus


# ------------------------------------------------------------------------------------------------ the browser test


@pytest.mark.e2e
async def test_console_page_shows_the_live_stack(
    browser: WebDriver, stack: tuple[EmbeddedBroker, ConsoleServer, Bus]
) -> None:
    broker, console, bus = stack
    user = FakeUser(bus, "alice")  # the broker is the test's own
    await asyncio.to_thread(browser.get, console.url)
    await until(browser, LIVE_JS, bool, "the event stream connected")
    assert await asyncio.to_thread(browser.execute_script, BROKER_JS) == "true"

    # Births (retained device state) of the four devices, and the agent's presence.
    await user.births()
    presence = act.AgentState(online=True, instance="agent-1", version="0.1.0")
    await bus.publish(agent_state_topic("agent-1"), make(presence), retain=True, wait=True)
    online = await until(
        browser,
        DEVICES_JS,
        lambda v: len([1 for _, on in v if on == "true"]) == 4,
        "four devices online",
    )
    assert sorted(k for k, _ in online) == sorted(f"{d.kind.value}/{d.device}" for d in user.devices)

    # The glasses' settings: brightness desired at 30 %, still 80 % as reported (the device has not applied it).
    desired = ShadowDesired(version=2, settings=GlassesSettings(brightness=0.3, display_lang="zh"))
    await bus.publish(desired_topic(user.glasses), make(desired), retain=True, wait=True)
    reported = ShadowReported(version=1, settings=GlassesSettings(brightness=0.8, display_lang="zh"))
    await bus.publish(reported_topic(user.glasses), make(reported), retain=True, wait=True)

    def both_shown(rows: list[list[str]]) -> bool:  # the desired may show before the reported has come ("0.3 ← —")
        return len(rows) == 2 and "0.8" in {k: text for k, _, text in rows}.get("brightness", "")

    rows = await until(browser, SHADOW_JS, both_shown, "the glasses' settings, desired vs reported")
    by_key = {k: (cls, text) for k, cls, text in rows}
    assert "pending" in by_key["brightness"][0]
    assert "0.3 ← 0.8" in by_key["brightness"][1]
    assert "applied" in by_key["display_lang"][0]

    # Some device detail, for a screenshot that shows what the page is for.
    t0 = now_ms()
    cells = [ev.Cell(slot="left", level_pct=18), ev.Cell(slot="right", level_pct=74)]
    await user.event(user.glasses, "system", "battery", ev.GlassesBattery(level_pct=46, cells=cells))
    await user.event(user.glasses, "system", "wear", ev.GlassesWear(state="donned"))
    await user.event(user.ring, "system", "wear", ev.RingWear(state="on_finger"))
    await user.event(user.ring, "system", "battery", ev.RingBattery(level_pct=81))
    await user.event(user.buds, "system", "in_ear", ev.InEar(side="left", state="in"))
    await user.event(user.buds, "system", "battery", ev.EarBattery(left_pct=90, right_pct=87, case_pct=55))
    await user.event(user.phone, "system", "battery", ev.PhoneBattery(level_pct=57))

    # A proactive alert (a card with a dismiss:<rule> button, and the ring's haptic for the same cause).
    low = "Swap the left cell: 18 % left."
    alert = act.ShowCard(
        title="Glasses battery low",
        body=low,
        icon="battery",
        buttons=[act.CardButton(label="Dismiss", action_id="dismiss:glasses_battery_low")],
    )
    tick = f"tick-{user.user}"
    await user.command(user.glasses, alert, corr=tick)
    await user.command(user.ring, act.Haptic(pattern="double"), corr=tick)

    # An utterance, then the agent's card on the glasses (corr: the utterance) and the glasses' ack.
    said = await user.event(user.buds, "voice", "utterance", ev.Utterance(text="order my usual lunch"))
    title = "Beef noodles ¥32, 25 min"
    card = act.ShowCard(
        title=title,
        body="Lanzhou Noodle House, as last Friday. Pinch the ring or nod to order.",
        icon="food",
        buttons=[act.CardButton(label="Order", action_id="confirm"), act.CardButton(label="Cancel", action_id="no")],
        ttl_s=600,
    )
    card_id = await user.command(user.glasses, card, corr=said)
    speak = act.Speak(text="Beef noodles for 32 yuan, in about 25 minutes. Shall I order?")
    await user.command(user.buds, speak, corr=said)
    ack = act.Ack(action_id=card_id, action="display.card", status="done")
    await bus.publish(ack_topic(user.glasses), make(ack, corr=card_id), wait=True)
    hud = await until(browser, HUD_JS, lambda v: title in v, "the card in the glasses mirror")
    assert "Order" in hud

    # Heart rate: the plot gains points as samples arrive.
    await user.hr(0, 12, t0 - 40 * 60_000)
    before = await until(browser, HR_JS, lambda v: v[0] >= 12, "12 points in the heart-rate plot")
    assert before[1] == before[0], "one path command per point"
    await user.hr(12, 28, t0 - 40 * 60_000)
    after = await until(browser, HR_JS, lambda v: v[0] > before[0], "more points in the heart-rate plot")
    assert after[1] == after[0] > before[1]

    # The agent's context (baseline, task, health) and a proactive alert, for the rest of the page.
    task = {"task_id": "food-7", "skill": "order_food", "state": "awaiting_confirmation", "eta_s": 1500, "rounds": 1}
    context = act.ContextSnapshot(
        user=user.user,
        activity="walking",
        place="office",
        health={"hr": 70.0, "rhr_baseline": 61.0, "hrv": 48.0, "spo2": 97.0, "steps_today": 5231.0},
        tasks=[task],
        pending="confirm:food-7",
    )
    await bus.publish(context_topic(user.user), make(context), retain=True, wait=True)
    for i in range(8):
        src = t0 - (40 - i * 5) * 60_000
        await user.event(user.ring, "sensor", "hrv", ev.Hrv(rmssd_ms=44 + 3 * math.cos(i)), src_ts=src)
        await user.event(user.ring, "sensor", "spo2", ev.SpO2(pct=96 + (i % 3)), src_ts=src)
        await user.event(user.ring, "sensor", "skin_temp", ev.SkinTemp(celsius=32.6 + 0.1 * math.sin(i)), src_ts=src)
    status = ev.TaskStatus(task_id="food-7", skill="order_food", status="quoted", summary="beef noodles")
    await user.event(user.phone, "system", "task_status", status)
    await until(
        browser,
        "return document.getElementById('tasks').innerText + '|' + document.getElementById('vitals').innerText",
        lambda v: "food-7" in v and "baseline 61" in v,
        "the task and the HR baseline",
    )

    # A click on the utterance follows its correlation chain: the card and the speech it caused, the card's ack.
    linked = await asyncio.to_thread(
        browser.execute_script,
        "[...document.querySelectorAll('#timeline li')].find(li => li.innerText.includes('voice.utterance')).click();"
        "return [...document.querySelectorAll('#timeline li.hl .type')].map(e => e.textContent);",
    )
    assert sorted(linked) == ["ack", "audio.speak", "display.card", "voice.utterance"]

    ARTIFACTS.mkdir(exist_ok=True)
    shot = await asyncio.to_thread(browser.get_screenshot_as_png)
    assert shot[:8] == b"\x89PNG\r\n\x1a\n"
    (ARTIFACTS / "console.png").write_bytes(shot)
    if os.environ.get("WB_UPDATE_DOCS") == "1":
        (ROOT / "docs").mkdir(exist_ok=True)
        (ROOT / "docs" / "console.png").write_bytes(shot)

    # A flood (QoS 0, as fast as the test bus publishes) does not freeze the page: it keeps up and stays bounded.
    n = 1500
    for i in range(n):
        body = ev.HeartRate(bpm=60 + i % 30, source="realtime")
        await bus.publish(event_topic(user.ring, "sensor", "hr"), make(body, src_ts=t0 - (n - i) * 100), qos=0)
    await user.event(user.ring, "gesture", "pinch", ev.RingGesture(gesture="pinch"))
    points = console.state.limits.points
    await until(
        browser,
        "return [document.getElementById('plot-hr').dataset.points,"
        " document.getElementById('timeline').innerText.includes('pinch')];",
        lambda v: v == [str(points), True],
        f"a full heart-rate plot ({points} points) and the pinch after the flood",
    )
    # Sensor rows are filtered out by default; shown, the page holds as many as its bound, not the whole flood.
    sensor_rows = await asyncio.to_thread(
        browser.execute_script,
        "document.querySelector('#f-classes input[value=sensor]').click();"
        "return document.querySelectorAll('#timeline li[data-cls=sensor]').length;",
    )
    assert sensor_rows == console.state.limits.sensor_timeline

    # The broker goes away: the page says so; it comes back: the page says so too (the bus reconnects by itself).
    port = broker.port
    await broker.__aexit__(None, None, None)
    # amqtt 0.12 leaves the server side of its connections to the garbage collector, so the console's socket may stay
    # open after the broker stopped (a loaded run waited 30 s in vain): then the keep-alive ends it, 45 s (1.5 x 30 s)
    # after the last packet, checked every 15 s. The ceiling covers that path.
    await until(browser, BROKER_JS, lambda v: v == "false", "the broker shown as disconnected", timeout=90)
    async with EmbeddedBroker(port=port):
        await until(browser, BROKER_JS, lambda v: v == "true", "the broker shown as connected again", timeout=60)
        assert await asyncio.to_thread(browser.execute_script, LIVE_JS) is True


# ------------------------------------------------------------------------------------------------ the server over HTTP


async def _http(port: int, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> Any:
    """One request with aiohttp's client; ``(status, body bytes)``. The ``Host`` header may be overridden."""
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT_S)) as session,
        session.request(method, f"http://127.0.0.1:{port}{path}", data=body, headers=headers) as response,
    ):
        return response.status, await response.read()


async def _sse(port: int) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """The console's event stream, parsed into ``(event, data)`` pairs."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}/events", headers={"Accept": "text/event-stream"}) as response,
    ):
        assert response.headers["Content-Type"].startswith("text/event-stream")
        block: list[str] = []
        async for raw in response.content:
            line = raw.decode().rstrip("\n")
            if line:
                block.append(line)
                continue
            fields = dict(item.split(": ", 1) for item in block if ": " in item)
            block = []
            if "event" in fields:
                yield fields["event"], json.loads(fields["data"])


async def _next(stream: AsyncIterator[tuple[str, dict[str, Any]]], ok: Callable[[str, dict[str, Any]], bool]) -> Any:
    async with asyncio.timeout(WAIT_S):
        async for event, data in stream:
            if ok(event, data):
                return data
    raise AssertionError("the stream ended")  # pragma: no cover


@pytest.mark.broker
async def test_stream_batches_a_flood_into_few_deltas(stack: tuple[EmbeddedBroker, ConsoleServer, Bus]) -> None:
    _, console, bus = stack
    user = FakeUser(bus, "flood")
    stream = _sse(console.port)
    first = await _next(stream, lambda e, _: e == "snapshot")
    assert first["link"]["connected"] is True
    n = 400
    t0 = now_ms() - n * 1000
    await user.births()
    for i in range(n):
        body = ev.HeartRate(bpm=60 + i % 40, source="realtime")
        await bus.publish(event_topic(user.ring, "sensor", "hr"), make(body, src_ts=t0 - (n - i) * 100), qos=0)
    await bus.publish(event_topic(user.ring, "system", "wear"), make(ev.RingWear(state="on_finger")), wait=True)
    deltas = 0
    worn = False
    async with asyncio.timeout(WAIT_S):
        async for event, data in stream:
            assert event == "delta"
            deltas += 1
            devices = data.get("users", {}).get("flood", {}).get("devices", {})
            if devices.get("ring/ring-1", {}).get("worn"):
                worn = True
                break
    assert worn
    # 400 readings and more reached the page in a handful of deltas, not one event each.
    assert deltas < n / 10
    view = console.state.user_view("flood")
    assert view is not None
    assert len(view["vitals"]["hr"]) == console.state.limits.points
    assert len([e for e in view["timeline"] if e["cls"] == "sensor"]) == console.state.limits.sensor_timeline


@pytest.mark.broker
async def test_inject_validates_like_pub_and_publishes(stack: tuple[EmbeddedBroker, ConsoleServer, Bus]) -> None:
    _, console, bus = stack
    got: asyncio.Queue[Message] = asyncio.Queue()
    await bus.subscribe("wb/v1/injected/#", 1)

    async def collect() -> None:
        async for m in bus.messages():
            await got.put(m)

    task = asyncio.create_task(collect())
    try:
        json_headers = {"Content-Type": "application/json", "Origin": f"http://127.0.0.1:{console.port}"}
        topic = "wb/v1/injected/ring/ring-1/evt/gesture/pinch"
        status, body = await _http(
            console.port, "POST", "/api/inject", json.dumps({"topic": topic, "data": {}}).encode(), json_headers
        )
        assert status == 200, body
        async with asyncio.timeout(WAIT_S):
            message = await got.get()
        assert message.topic == topic
        assert isinstance(message.data, ev.RingGesture)
        assert message.data.gesture == "pinch"

        utterance = "wb/v1/injected/earphones/buds-1/evt/voice/utterance"
        status, body = await _http(
            console.port,
            "POST",
            "/api/inject",
            json.dumps({"topic": utterance, "data": {"text": ""}}).encode(),
            json_headers,
        )
        answer = json.loads(body)
        assert status == 400
        assert answer["error"].startswith("invalid:")
        assert answer["field"] == "data.text"

        sensor = "wb/v1/injected/ring/ring-1/evt/sensor/hr"
        status, body = await _http(
            console.port,
            "POST",
            "/api/inject",
            json.dumps({"topic": sensor, "data": {"bpm": 70}}).encode(),
            json_headers,
        )
        assert status == 400
        assert "only utterances" in json.loads(body)["error"]

        # Not JSON content (what a form on another site could send): refused before anything is read.
        status, _ = await _http(console.port, "POST", "/api/inject", b"topic=x", {"Content-Type": "text/plain"})
        assert status == 415
        status, _ = await _http(
            console.port, "POST", "/api/inject", b"{}", {**json_headers, "Origin": "http://evil.example"}
        )
        assert status == 403
        status, _ = await _http(console.port, "GET", "/", headers={"Host": "evil.example:80"})
        assert status == 421
        assert got.empty()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.broker
async def test_read_only_by_default_and_serves_the_page() -> None:
    async with EmbeddedBroker(port=free_port()) as broker, ConsoleServer(broker.url, port=0) as console:
        status, body = await _http(console.port, "POST", "/api/inject", b"{}", {"Content-Type": "application/json"})
        assert status == 403
        assert "--allow-inject" in json.loads(body)["error"]
        status, page = await _http(console.port, "GET", "/")
        assert status == 200
        assert b"/static/app.js" in page
        # Nothing fetched from the internet.
        assert b"http://" not in page
        assert b"https://" not in page
        status, _ = await _http(console.port, "GET", "/static/../server.py")
        assert status == 404
        status, snap = await _http(console.port, "GET", "/api/snapshot")
        assert status == 200
        assert json.loads(snap)["inject"]["enabled"] is False


@pytest.mark.broker
@pytest.mark.parametrize("stop", ["sigterm", "cancel"])
async def test_sigterm_stops_the_console_cleanly_and_a_cancellation_goes_on(
    stop: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGTERM (from `wearbus up` or a service manager) ends `wearbus console` as a clean stop; a cancellation of
    the console's own task (Ctrl-C: asyncio.run cancels it) is not swallowed."""
    loop = asyncio.get_running_loop()
    async with EmbeddedBroker(port=free_port()) as broker:
        task = asyncio.create_task(_console(broker.url, "127.0.0.1", 0, False, False, ("auto", "auto")))
        try:
            async with asyncio.timeout(30):
                while "wearbus console: http://" not in capsys.readouterr().out:  # noqa: ASYNC110 (printed, bounded)
                    await asyncio.sleep(0.02)
            if stop == "sigterm":
                os.kill(os.getpid(), signal.SIGTERM)  # its handler cancels the serving task
                await task  # ends without an exception
                assert not task.cancelled()
            else:
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
        finally:
            loop.remove_signal_handler(signal.SIGTERM)
            await cancel_and_wait(task)


def test_console_command_says_when_its_port_is_taken() -> None:
    app = typer.Typer()
    register(app)

    @app.command()
    def other() -> None:  # a second command, so typer keeps `console` as a sub-command
        """Nothing."""

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(app, ["console", "--port", str(port), "--broker", "mqtt://127.0.0.1:1"])
    assert result.exit_code == 1
    assert f"port {port} on 127.0.0.1 is already in use" in result.output
    result = CliRunner().invoke(app, ["console", "--host", "0.0.0.0", "--allow-inject"])  # noqa: S104
    assert result.exit_code == 1
    assert "needs a loopback address" in result.output
