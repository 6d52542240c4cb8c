"""The shared days of `wearbus up` (see ``day.py``): each runs once per pytest worker, for the tests that use it.

A test that uses one must carry its group's mark (``ON_MOSQUITTO`` or ``ON_EMBEDDED``): pytest-xdist then hands all
of them to one worker, and the day runs once in the whole suite instead of once per worker that meets it.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import require_mosquitto
from tests.e2e.day import Day, day_on_embedded, day_on_mosquitto

ON_MOSQUITTO = pytest.mark.xdist_group("day-on-mosquitto")
ON_EMBEDDED = pytest.mark.xdist_group("day-on-embedded")


@pytest.fixture(scope="session")
def mosquitto_day(tmp_path_factory: pytest.TempPathFactory) -> Day:
    require_mosquitto()
    return asyncio.run(day_on_mosquitto(tmp_path_factory.mktemp("day-mosquitto")))


@pytest.fixture(scope="session")
def embedded_day(tmp_path_factory: pytest.TempPathFactory) -> Day:
    return asyncio.run(day_on_embedded(tmp_path_factory.mktemp("day-embedded")))
