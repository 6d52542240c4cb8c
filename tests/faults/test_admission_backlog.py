"""The per-device limit charges an event at the time it was published: a backlog is not a flood, a flood still is."""

from __future__ import annotations

from agent.admission import Admission, AdmissionConfig
from schemas import codec
from schemas.envelope import Message, make
from schemas.events import HeartRate

T0 = 1_764_000_000_000
CONFIG = AdmissionConfig(rate_per_s=20, burst=200, backlog_s=600)


def hr(ts: int) -> Message:
    return codec.decode("wb/v1/alice/ring/r1/evt/sensor/hr", codec.encode(make(HeartRate(bpm=60), ts=ts)))


def refused(adm: Admission, stamps: list[int], now: int) -> int:
    return sum(adm.check(hr(ts), now) is not None for ts in stamps)


def test_a_backlog_published_at_an_ordinary_pace_arrives_at_once_and_is_admitted() -> None:
    # Ten minutes of one event a second, held while the agent was away, delivered in one go.
    stamps = [T0 - 600_000 + i * 1000 for i in range(600)]
    assert refused(Admission(CONFIG), stamps, T0) == 0


def test_a_flood_stamped_now_is_refused_beyond_the_burst() -> None:
    assert refused(Admission(CONFIG), [T0] * 1000, T0) == 800


def test_back_dating_buys_at_most_the_backlog_window() -> None:
    # A device that stamps a flood as if spread over a whole day gets the last ten minutes' allowance, no more.
    stamps = [T0 - 86_400_000 + i * 4320 for i in range(20_000)]
    admitted = 20_000 - refused(Admission(CONFIG), stamps, T0)
    assert admitted <= 200 + 600 * 20


def test_time_never_runs_backwards_for_a_device() -> None:
    adm = Admission(CONFIG)
    assert refused(adm, [T0] * 200, T0) == 0
    # An event stamped earlier than the last one earns nothing.
    assert refused(adm, [T0 - 60_000] * 10, T0) == 10
