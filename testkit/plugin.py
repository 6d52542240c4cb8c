"""The wearbus pytest plugin (entry point ``pytest11``): broker, bus, expectations, contract, processes.

Fixtures:

- ``wb_broker_url`` (session): ``--wb-broker URL``, or an embedded broker started on a free port for the
  session.
- ``wb_url``: the broker URL a test's other fixtures use; ``wb_broker_url`` unless a test module overrides it
  (e.g. with a parametrized fixture that starts a Mosquitto).
- ``wb_topics``: a :class:`~testkit.expect.UserTopics` with a user id of its own (``t-<hex>``).
- ``wb_bus``: a connected :class:`~broker.client.Bus` with a unique client id.
- ``wb_expect``: an :class:`~testkit.expect.Expect` recording ``wb/#`` from the start of the test.
- ``wb_contract``: a :class:`~testkit.contract.Contract` over ``wb_expect``; violations fail the test
  at teardown. Used automatically by tests marked ``@pytest.mark.wb_contract``, and with ``--wb-contract`` by
  every test that uses a ``wb_`` fixture.
- ``wb_process``: a :class:`~testkit.process.ProcessFactory`, e.g.
  ``await wb_process("tap", "--broker", url)``.

On failure, the output of every process a test started and the last messages seen on the bus are attached to
the report.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import threading
from collections.abc import AsyncIterator, Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from broker.client import Bus, BusOptions, Protocol
from schemas.errors import BrokerPortInUse, BusError
from testkit.contract import Contract
from testkit.expect import Expect, UserTopics, context_lines, fresh_id
from testkit.process import ProcessFactory

_asyncio_fixture: Any
try:
    from pytest_asyncio import fixture as _asyncio_fixture
except ImportError:  # pragma: no cover (the dev extra installs it)
    _asyncio_fixture = None

_EXPECT = pytest.StashKey[Expect]()
_PROTOCOLS = pytest.StashKey[dict[str, Protocol]]()
_PROCESSES = pytest.StashKey[ProcessFactory]()
_STARTUP_S = 30.0


def _async_fixture(fn: Callable[..., Any]) -> Any:
    """``pytest_asyncio.fixture``, or, without pytest-asyncio, a fixture that says what to install."""
    if _asyncio_fixture is not None:
        return _asyncio_fixture(fn)

    @functools.wraps(fn)
    def missing(*_args: Any, **_kwargs: Any) -> None:  # pragma: no cover
        pytest.fail("the wearbus fixtures need pytest-asyncio: pip install 'wearbus[dev]'", pytrace=False)

    return pytest.fixture(missing)


# ------------------------------------------------------------------------------------------- options


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--wb-broker`` and ``--wb-contract``."""
    group = parser.getgroup("wearbus")
    group.addoption(
        "--wb-broker",
        metavar="URL",
        default=None,
        help="broker for the wearbus fixtures (default: an embedded broker on a free port for the session)",
    )
    group.addoption(
        "--wb-contract",
        action="store_true",
        default=False,
        help="check every message seen by tests that use wearbus fixtures against the contract",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the marker (the project runs with --strict-markers)."""
    config.addinivalue_line(
        "markers",
        "wb_contract: check every message seen on wb/# during the test against the schemas and AsyncAPI",
    )


# ------------------------------------------------------------------------------------------- broker


class BrokerThread:
    """An embedded broker on its own event loop in a daemon thread, so it serves whatever loop a test runs.

    Args:
        host: the address to listen on.
        port: the port (a free one, retried if taken meanwhile, when ``None``).
    """

    def __init__(self, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.host = host
        self.port = port
        self.url = ""
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="wearbus-embedded-broker", daemon=True)

    def start(self, timeout: float = _STARTUP_S) -> str:
        """Start it and return its URL.

        Raises:
            BusError: it did not start within ``timeout`` seconds, or failed (with the reason).
        """
        self._thread.start()
        if not self._ready.wait(timeout):
            raise BusError(f"the embedded test broker did not start within {timeout:g} s")
        if self._error is not None:
            raise BusError(f"the embedded test broker did not start: {self._error}") from self._error
        return self.url

    def stop(self, timeout: float = _STARTUP_S) -> None:
        """Stop it and wait for its thread."""
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout)

    def _main(self) -> None:
        try:
            asyncio.run(self._serve())
        except Exception as exc:  # noqa: BLE001 (handed to the thread that waits in start())
            self._error = exc
        finally:
            self._ready.set()

    async def _serve(self) -> None:
        from broker.embedded import EmbeddedBroker, free_port  # noqa: PLC0415 (amqtt only when a test needs it)

        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        for attempt in range(3):
            port = self.port or free_port()
            broker = EmbeddedBroker(self.host, port, allow_anonymous=True)
            async with contextlib.AsyncExitStack() as stack:
                try:
                    await stack.enter_async_context(broker)
                except BrokerPortInUse:
                    if self.port is not None or attempt == 2:
                        raise
                    continue  # the free port was taken meanwhile: try another
                self.port, self.url = port, broker.url
                self._ready.set()
                await self._stop.wait()
            return


@pytest.fixture(scope="session")
def wb_broker_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """The broker URL of the session: ``--wb-broker``, else an embedded broker started for the session."""
    url: str | None = request.config.getoption("--wb-broker")
    if url:
        yield url
        return
    thread = BrokerThread()
    try:
        url = thread.start()
        _protocols(request)[url] = "3.1.1"  # amqtt: do not spend seconds on an MQTT 5 attempt per connection
        yield url
    finally:
        thread.stop()


def _protocols(request: pytest.FixtureRequest) -> dict[str, Protocol]:
    """The MQTT version each broker URL spoke at its first connection this session."""
    return request.config.stash.setdefault(_PROTOCOLS, {})


@pytest.fixture
def wb_url(wb_broker_url: str) -> str:
    """The broker URL this test's wearbus fixtures use (override it in a module to use another broker)."""
    return wb_broker_url


@pytest.fixture
def wb_topics() -> UserTopics:
    """Topics under a user id of this test's own (``t-<hex>``), so tests sharing a broker do not meet."""
    return UserTopics.fresh()


@_async_fixture
async def wb_bus(request: pytest.FixtureRequest, wb_url: str) -> AsyncIterator[Bus]:
    """A connected bus with a unique client id."""
    known = _protocols(request)
    options = BusOptions(url=wb_url, client_id=fresh_id("wb-bus"), protocol=known.get(wb_url, "auto"), name="wb_bus")
    async with Bus(options) as bus:
        known.setdefault(wb_url, bus.protocol)
        yield bus


@_async_fixture
async def wb_expect(request: pytest.FixtureRequest, wb_url: str) -> AsyncIterator[Expect]:
    """Everything on ``wb/#`` from the start of the test, decoded; ``await wb_expect.message(...)``."""
    known = _protocols(request)
    async with Expect(wb_url, protocol=known.get(wb_url, "auto")) as expect:
        known.setdefault(wb_url, expect.bus.protocol)
        request.node.stash[_EXPECT] = expect
        yield expect


@_async_fixture
async def wb_contract(wb_expect: Expect, wb_topics: UserTopics) -> AsyncIterator[Contract]:
    """Checks every message of the test against the contract; a violation fails the test at teardown."""
    contract = Contract(wb_expect, owned=[wb_topics.all])
    yield contract
    failure = ""
    try:
        await contract.finish()
    except AssertionError as exc:
        failure = str(exc)
    if failure:  # outside the except block, so the report shows it once, not chained
        pytest.fail(failure, pytrace=False)


@pytest.fixture(autouse=True)
def _wb_contract_auto(request: pytest.FixtureRequest) -> None:
    """Turn ``wb_contract`` on for marked tests, and with ``--wb-contract`` for tests using wb_ fixtures."""
    marked = request.node.get_closest_marker("wb_contract") is not None
    wanted = request.config.getoption("--wb-contract") and any(name.startswith("wb_") for name in request.fixturenames)
    if marked or wanted:
        request.getfixturevalue("wb_contract")


@_async_fixture
async def wb_process(request: pytest.FixtureRequest, tmp_path: Path, wb_url: str) -> AsyncIterator[ProcessFactory]:
    """Start ``wearbus ...`` commands as real processes (``WB_BROKER`` set to this test's broker).

    All are stopped at teardown (SIGTERM, SIGKILL after 5 s), and their output joins a failure report.
    """
    factory = ProcessFactory(tmp_path / "wb_process", {"WB_BROKER": wb_url})
    request.node.stash[_PROCESSES] = factory
    try:
        yield factory
    finally:
        await factory.stop_all()


# ------------------------------------------------------------------------------------------- reports


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Attach process output and the bus's last messages to a failed test's report."""
    report = yield
    if not report.failed:
        return report
    factory = item.stash.get(_PROCESSES, None)
    if factory is not None:
        for title, text in factory.reports():
            report.sections.append((title, text))
    expect = item.stash.get(_EXPECT, None)
    if expect is not None and report.when == "call":
        lines = context_lines(expect.records, "#", annotate=False)
        report.sections.append(("wearbus bus (last messages on wb/#)", "\n".join(lines)))
    return report
