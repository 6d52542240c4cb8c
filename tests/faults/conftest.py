"""Options and fixtures of the fault-injection tests: ``--soak`` runs them longer (more events, more seeds)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import structlog

from broker.logs import configure_logging
from tests.conftest import require_mosquitto


@dataclass(frozen=True, slots=True)
class Scale:
    """How hard the fault tests push.

    Attributes:
        soak: whether this is a soak run.
        seeds: seeds of the agent kill -9 test (one run each).
        events: events per agent kill -9 run.
        users: users (four devices each) publishing in the kill -9 runs.
        kills: agent kills per run.
        queued: events queued for an offline agent across a broker kill -9.
        live: events streamed across a broker kill -9 with the agent online.
        held: events a device emits while its network is silently cut.
        flood: events one device floods the agent with.
        storm: mutated payloads sent through the broker to the agent.
        fuzz_decode: decoder fuzz cases (in process).
        fuzz_core: messages handed to the core by the core fuzz (in process).
    """

    soak: bool = False
    seeds: tuple[int, ...] = (1, 2, 3)
    events: int = 600
    users: int = 2
    kills: int = 2
    queued: int = 500
    live: int = 400
    held: int = 8
    flood: int = 1500
    storm: int = 2000
    fuzz_decode: int = 50_000
    fuzz_core: int = 30_000


SOAK = Scale(
    soak=True,
    seeds=(1, 2, 3, 4, 5, 6, 7, 8),
    events=3000,
    users=4,
    kills=4,
    queued=2000,
    live=2000,
    held=40,
    flood=6000,
    storm=10_000,
    fuzz_decode=500_000,
    fuzz_core=300_000,
)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--soak",
        action="store_true",
        default=False,
        help="run the fault-injection tests longer: more events, more seeds (also WB_SOAK=1)",
    )


def soaking(config: pytest.Config) -> bool:
    """Whether ``--soak`` was given (or WB_SOAK=1 is set, for runs where this conftest loads too late to add it)."""
    try:
        given = bool(config.getoption("--soak"))
    except ValueError:
        given = False
    return given or os.environ.get("WB_SOAK") == "1"


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "seed" in metafunc.fixturenames:
        scale = SOAK if soaking(metafunc.config) else Scale()
        metafunc.parametrize("seed", scale.seeds, ids=[f"seed{s}" for s in scale.seeds])


@pytest.fixture
def scale(pytestconfig: pytest.Config) -> Scale:
    """The scale of this run."""
    return SOAK if soaking(pytestconfig) else Scale()


@pytest.fixture
def mosquitto_binary() -> None:
    """Skip without mosquitto (fail under CI=true)."""
    require_mosquitto()


@pytest.fixture(autouse=True, scope="package")
def quiet_logs() -> Iterator[None]:
    """Errors only from the buses these tests open (thousands of refused messages would each log a warning)."""
    old = structlog.get_config()
    configure_logging("error")
    yield
    structlog.configure(**old)
