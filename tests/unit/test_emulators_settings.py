"""Settings applied by the emulators (no broker): the ring's cadence, streams, haptic strength and quiet hours, the
glasses' brightness and language, the earphones' wake word and volume, the phone's quiet notifications; a version
is applied once, an older one refused, a value the device cannot take rejected with why."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from devices.earphones import EarphonesEmulator
from devices.glasses import GlassesEmulator
from devices.phone import PhoneEmulator
from devices.ring import RingEmulator
from devices.sdk import ActionRejected, DeviceConfig
from schemas.actions import Earcon, Haptic, Notify
from schemas.clock import ManualClock
from schemas.envelope import make
from schemas.events import HeartRate, Hrv, SyncBatch, Wake
from schemas.shadow import (
    EarphonesSettings,
    GlassesSettings,
    PhoneSettings,
    QuietHours,
    RingSettings,
    ShadowDesired,
)

T0 = 1_764_018_000_000  # 21:00 UTC
MIN = 60_000
QUIET = QuietHours(start="20:00", end="23:00")


def test_ring_cadence_streams_and_haptics() -> None:
    clock = ManualClock(T0)
    ring = RingEmulator("alice", "ring-1", clock=clock, start_ms=T0)
    ring.begin()
    desired = ShadowDesired(version=1, settings=RingSettings(hr_interval_s=120, streams=["hr"], haptic_strength=0.5))
    assert ring.apply_desired(desired)
    assert ring.stats.settings_applied == 3
    assert ring.sampler.cadence.hr_interval_s == 120
    clock.advance(30 * MIN / 1000)  # seconds
    ring.sync(clock.now_ms())
    items = [it for b in ring.emitted(SyncBatch) for it in b.items]
    hr = sorted(it.src_ts for it in items if isinstance(it, HeartRate) and it.src_ts and it.src_ts > T0)
    assert len(hr) >= 14  # every 2 min, not every 5
    assert {b - a for a, b in itertools.pairwise(hr)} == {120_000}
    assert not [it for it in items if isinstance(it, Hrv)]  # the HRV stream is off
    assert not ring.apply_desired(desired)  # the same version again: nothing
    assert ring.stats.settings_applied == 3


async def test_ring_quiet_hours_and_haptic_strength() -> None:
    clock = ManualClock(T0)
    ring = RingEmulator("alice", "ring-1", clock=clock, start_ms=T0)
    ring.begin()
    ring.apply_desired(ShadowDesired(version=1, settings=RingSettings(quiet_hours=QUIET, haptic_strength=0.5)))
    with pytest.raises(ActionRejected, match="quiet hours"):
        await ring.haptic(Haptic(pattern="tap"), make(Haptic(pattern="tap")))
    alert = Haptic(pattern="alert", intensity=1.0)
    assert await ring.haptic(alert, make(alert)) == "buzzed alert at 50%"


def test_an_older_version_is_refused_and_a_bad_value_rejected(tmp_path: Path) -> None:
    ring = RingEmulator("alice", "ring-1", DeviceConfig(shadow_file=tmp_path / "r.json"), clock=ManualClock(T0))
    ring.begin()
    assert ring.apply_desired(ShadowDesired(version=3, settings=RingSettings(hr_interval_s=600)))
    assert not ring.apply_desired(ShadowDesired(version=2, settings=RingSettings(hr_interval_s=60)))
    assert ring.refused is not None
    assert ring.refused.reason == "stale: desired version 2 is older than the applied version 3"
    assert ring.sampler.cadence.hr_interval_s == 600
    again = RingEmulator("alice", "ring-1", DeviceConfig(shadow_file=tmp_path / "r.json"), clock=ManualClock(T0))
    assert again.shadow_version == 3  # kept in its flash
    assert again.settings.hr_interval_s == 600  # type: ignore[union-attr]

    buds = EarphonesEmulator("alice", "b-1", clock=ManualClock(T0))
    assert buds.apply_desired(ShadowDesired(version=1, settings=EarphonesSettings(wake_word="  ", volume=0.3)))
    assert buds.rejected == {"wake_word": "an empty wake word cannot be detected"}
    assert buds.volume == 0.3
    assert buds.settings.wake_word is None  # type: ignore[union-attr]


async def test_glasses_earphones_and_phone() -> None:
    glasses = GlassesEmulator("alice", "g-1", clock=ManualClock(T0))
    glasses.worn, glasses.hud.kind = True, "text"  # worn, something on the display
    glasses.apply_desired(ShadowDesired(version=1, settings=GlassesSettings(brightness=0.8)))
    bright = glasses.cells.runtime_left_s(T0)
    glasses.apply_desired(ShadowDesired(version=2, settings=GlassesSettings(brightness=0.25, display_lang="zh")))
    assert (glasses.brightness, glasses.display_lang) == (0.25, "zh")
    assert glasses.cells.runtime_left_s(T0) > bright * 1.1  # a dimmer display draws less
    glasses.apply_desired(ShadowDesired(version=3, settings=GlassesSettings(quiet_hours=QUIET)))
    with pytest.raises(ActionRejected, match="no earcons"):
        await glasses.earcon(Earcon(name="notify"), make(Earcon(name="notify")))

    buds = EarphonesEmulator("alice", "b-1", clock=ManualClock(T0))
    buds.apply_desired(ShadowDesired(version=1, settings=EarphonesSettings(wake_word="Hey Ring")))
    [wake] = buds.wake_bodies("wake_word", "zh")
    assert isinstance(wake, Wake)
    assert wake.keyword == "Hey Ring"

    phone = PhoneEmulator("alice", "p-1", clock=ManualClock(T0))
    phone.apply_desired(ShadowDesired(version=1, settings=PhoneSettings(quiet_hours=QUIET)))
    note = Notify(title="hi")
    assert str(await phone.notify(note, make(note))).startswith("posted silently")
    assert phone.silenced == 1


def test_two_writers_racing_to_one_version_are_told() -> None:
    ring = RingEmulator("alice", "ring-1", clock=ManualClock(T0))
    assert ring.apply_desired(ShadowDesired(version=1, settings=RingSettings(hr_interval_s=600)))
    assert not ring.apply_desired(ShadowDesired(version=1, settings=RingSettings(hr_interval_s=600)))
    assert reason(ring) is None  # the same document again: nothing to say
    assert not ring.apply_desired(ShadowDesired(version=1, settings=RingSettings(hr_interval_s=900)))
    assert str(reason(ring)).startswith("conflict: version 1 was applied with other settings")
    assert ring.apply_desired(ShadowDesired(version=2, settings=RingSettings(hr_interval_s=900)))
    assert reason(ring) is None


def reason(dev: RingEmulator) -> str | None:
    """Why the device refused the last desired document (a function: mypy keeps no narrowing across calls)."""
    return dev.refused.reason if dev.refused is not None else None
