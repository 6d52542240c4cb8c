"""The shadow contract, pure: documents, delta, merge rules (stale version, capabilities), topics and codec."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas import codec
from schemas.envelope import make
from schemas.errors import SettingNotSupported, StaleVersion, TopicError, ValidationFailed
from schemas.export import asyncapi, json_schemas
from schemas.shadow import (
    GlassesSettings,
    QuietHours,
    RingSettings,
    ShadowDesired,
    ShadowReported,
    check_desired,
    delta,
    merge,
    parse_assignments,
    pending,
)
from schemas.topics import Channel, DeviceId, Kind, desired_topic, parse, reported_topic

RING = DeviceId("alice", Kind.RING, "ring-1")


def test_topics_round_trip() -> None:
    assert desired_topic(RING) == "wb/v1/alice/ring/ring-1/shadow/desired"
    where = parse(reported_topic(RING))
    assert where.channel is Channel.REPORTED
    assert where.device == "ring-1"
    assert str(where) == reported_topic(RING)
    with pytest.raises(TopicError, match="shadow/desired"):
        parse("wb/v1/alice/ring/ring-1/shadow/wanted")


def test_delta_is_what_desired_holds_that_reported_does_not() -> None:
    desired = ShadowDesired(version=3, settings=RingSettings(hr_interval_s=300, haptic_strength=0.5))
    reported = ShadowReported(version=2, settings=RingSettings(hr_interval_s=600, haptic_strength=0.5))
    assert delta(desired, reported) == {"hr_interval_s": 300}
    assert delta(desired, None) == {"hr_interval_s": 300, "haptic_strength": 0.5}
    assert delta(None, reported) == {}
    done = ShadowReported(version=3, settings=desired.settings)
    assert delta(desired, done) == {}


def test_a_rejected_value_stays_desired_but_is_not_pending() -> None:
    desired = ShadowDesired(version=4, settings=RingSettings(hr_interval_s=60))
    reported = ShadowReported(version=4, settings=RingSettings(hr_interval_s=300), rejected={"hr_interval_s": "no"})
    assert delta(desired, reported) == {"hr_interval_s": 60}
    assert pending(desired, reported) == {}


def test_merge_bumps_the_version_and_keeps_other_keys() -> None:
    first = merge(Kind.GLASSES, None, {"brightness": 0.4}, by="cli")
    assert first.version == 1
    assert first.by == "cli"
    second = merge(Kind.GLASSES, first, {"display_lang": "zh"})
    assert second.version == 2
    assert isinstance(second.settings, GlassesSettings)
    assert (second.settings.brightness, second.settings.display_lang) == (0.4, "zh")
    cleared = merge(Kind.GLASSES, second, {"brightness": None})
    assert isinstance(cleared.settings, GlassesSettings)
    assert cleared.settings.brightness is None


def test_a_stale_write_is_refused_with_its_reason() -> None:
    current = ShadowDesired(version=5, settings=RingSettings(hr_interval_s=300))
    with pytest.raises(StaleVersion, match="based on version 4, but desired is at 5") as info:
        merge(Kind.RING, current, {"hr_interval_s": 600}, expected_version=4)
    assert info.value.reason == "stale"
    assert merge(Kind.RING, current, {"hr_interval_s": 600}, expected_version=5).version == 6
    assert check_desired(current, 6) == "stale: desired version 5 is older than the applied version 6"
    assert check_desired(current, 5) is None


def test_a_setting_outside_the_birth_is_refused() -> None:
    with pytest.raises(SettingNotSupported, match="cannot apply haptic_strength: its birth lists only hr_interval_s"):
        merge(Kind.RING, None, {"haptic_strength": 0.2}, supported=["hr_interval_s"], device="ring/ring-1")


def test_assignments_are_validated_like_pub() -> None:
    assert parse_assignments(Kind.RING, ["hr_interval_s=300", "streams=hr,spo2", "quiet_hours=22:00-7:00"]) == {
        "hr_interval_s": 300,
        "streams": ["hr", "spo2"],
        "quiet_hours": {"start": "22:00", "end": "07:00"},
    }
    with pytest.raises(ValidationFailed, match="no setting 'brightness'; its settings: haptic_strength"):
        parse_assignments(Kind.RING, ["brightness=0.2"])
    with pytest.raises(ValidationFailed, match="greater than or equal to 60") as info:
        parse_assignments(Kind.RING, ["hr_interval_s=5"])
    assert info.value.field == "hr_interval_s"
    with pytest.raises(ValidationFailed, match="KEY=VALUE"):
        parse_assignments(Kind.GLASSES, ["brightness"])
    with pytest.raises(ValidationFailed):
        parse_assignments(Kind.GLASSES, ["display_lang=fr"])


def test_quiet_hours_span_midnight() -> None:
    q = QuietHours(start="22:00", end="07:00")
    assert q.contains(23 * 60)
    assert q.contains(6 * 60 + 59)
    assert not q.contains(7 * 60)
    assert not q.contains(12 * 60)
    day = QuietHours(start="13:00", end="14:00")
    assert day.contains(13 * 60 + 30)
    assert not day.contains(14 * 60)
    with pytest.raises(ValueError, match="same time"):
        QuietHours(start="10:00", end="10:00")


@given(minute=st.integers(0, 1439), a=st.integers(0, 1439), b=st.integers(0, 1439))
def test_quiet_hours_and_their_complement_cover_the_day(minute: int, a: int, b: int) -> None:
    if a == b:
        return
    fmt = "{:02d}:{:02d}".format
    q, rest = (
        QuietHours(start=fmt(*divmod(a, 60)), end=fmt(*divmod(b, 60))),
        QuietHours(start=fmt(*divmod(b, 60)), end=fmt(*divmod(a, 60))),
    )
    assert q.contains(minute) != rest.contains(minute)


def test_codec_takes_the_kind_from_the_topic_and_refuses_a_mismatch() -> None:
    topic = desired_topic(RING)
    raw = json.dumps({"id": "d1", "ts": 1, "data": {"version": 2, "settings": {"hr_interval_s": 300}}}).encode()
    message = codec.decode(topic, raw)
    assert isinstance(message.data, ShadowDesired)
    assert isinstance(message.data.settings, RingSettings)
    wrong = json.dumps({"id": "d1", "ts": 1, "data": {"version": 2, "settings": {"kind": "glasses"}}}).encode()
    with pytest.raises(ValidationFailed, match="settings of a 'glasses' on a ring topic"):
        codec.decode(topic, wrong)
    out = codec.encode(make(ShadowReported(version=2, settings=RingSettings(hr_interval_s=300))))
    back = codec.decode(reported_topic(RING), out)
    assert isinstance(back.data, ShadowReported)
    assert back.data.version == 2


def test_the_export_has_the_shadow_channels() -> None:
    schemas = json_schemas()
    assert "ring.shadow.desired" in schemas
    assert "glasses.shadow.reported" in schemas
    doc = asyncapi()
    assert doc["channels"]["earphones.shadow.desired"]["address"] == "wb/v1/{user}/earphones/{device}/shadow/desired"
    assert doc["operations"]["send.ring.shadow.desired"]["bindings"]["mqtt"]["retain"] is True


def test_the_command_line_validates_before_it_connects() -> None:
    from typer.testing import CliRunner  # noqa: PLC0415

    from cli.main import app, register_extensions  # noqa: PLC0415

    register_extensions(["shadow"])
    runner = CliRunner()
    bad = runner.invoke(
        app, ["shadow", "set", "-u", "alice", "-d", "ring/ring-1", "hr_interval_s=5", "-b", "mqtt://127.0.0.1:9"]
    )
    assert bad.exit_code == 2
    assert "hr_interval_s" in bad.output
    assert "greater than or equal to 60" in bad.output
    kind = runner.invoke(app, ["shadow", "get", "-u", "alice", "-d", "watch/w1", "-b", "mqtt://127.0.0.1:9"])
    assert kind.exit_code == 2
    assert "KIND/ID with KIND one of glasses, ring, earphones, phone" in kind.output


@given(
    patches=st.lists(
        st.fixed_dictionaries(
            {},
            optional={
                "brightness": st.none() | st.floats(0, 1),
                "display_lang": st.none() | st.sampled_from(["en", "zh"]),
            },
        ),
        min_size=1,
        max_size=6,
    )
)
def test_each_write_adds_one_version_and_a_device_that_applied_it_has_no_delta(
    patches: list[dict[str, object]],
) -> None:
    current: ShadowDesired | None = None
    for n, patch in enumerate(patches, start=1):
        current = merge(Kind.GLASSES, current, patch, expected_version=n - 1)
        assert current.version == n
        done = ShadowReported(version=current.version, settings=current.settings)
        assert delta(current, done) == {}
        assert pending(current, done) == {}
