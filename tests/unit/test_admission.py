"""Admission: timestamps that cannot be right and per-device floods are refused with a reason."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from agent.admission import Admission, AdmissionConfig
from schemas import codec
from schemas.envelope import Message, make
from schemas.events import HeartRate

T0 = 1_764_000_000_000


def hr(ts: int, device: str = "r1") -> Message:
    return codec.decode(f"wb/v1/alice/ring/{device}/evt/sensor/hr", codec.encode(make(HeartRate(bpm=60), ts=ts)))


def test_future_and_stale_timestamps() -> None:
    adm = Admission()
    assert adm.check(hr(T0), T0) is None
    future = adm.check(hr(T0 + 3_600_000), T0)
    assert future is not None
    assert future[0] == "future"
    stale = adm.check(hr(T0 - 30 * 86_400_000), T0)
    assert stale is not None
    assert stale[0] == "stale"


def test_flood_from_one_device_does_not_starve_another() -> None:
    adm = Admission(AdmissionConfig(rate_per_s=10, burst=20))
    refused = sum(adm.check(hr(T0, "flood"), T0) is not None for _ in range(1000))
    assert refused == 980
    assert adm.check(hr(T0, "calm"), T0) is None
    # the bucket refills with time
    assert adm.check(hr(T0 + 1000, "flood"), T0 + 1000) is None


@given(st.lists(st.integers(min_value=0, max_value=5000), max_size=300))
def test_tracked_devices_stay_bounded(devices: list[int]) -> None:
    adm = Admission(AdmissionConfig(max_devices=50))
    for d in devices:
        adm.check(hr(T0, f"d{d}"), T0)
    assert len(adm._buckets) <= 50
