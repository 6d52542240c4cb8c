"""Scenario files: parsing, clear errors with line and step numbers, the person's plan, and the shipped day."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from devices.models import Activity, OverrideKind, haversine_m
from devices.scenario import load, parse
from devices.scenario_plan import Plan
from devices.scenario_spec import BUILTIN, Scenario, format_offset, guess_lang, parse_offset
from schemas.errors import ConfigError
from schemas.topics import Kind

HEAD = """\
name: t
duration: "02:00:00"
profile:
  lang: en
  tz_offset_min: 480
  home: {name: home, lat: 30.2745, lon: 120.1390}
  office: {name: office, lat: 30.2790, lon: 120.0265}
  places: [{name: Cafe, lat: 30.2700, lon: 120.1400}]
steps:
"""


def scenario(steps: str, head: str = HEAD) -> Scenario:
    return parse(head + steps, name="t.yaml")


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse(text, name="t.yaml")
    return str(info.value)


# --------------------------------------------------------------------------- times


@pytest.mark.parametrize(
    ("value", "ms"),
    [("+00:10:00", 600_000), ("01:30:00", 5_400_000), ("+0:00:05", 5_000), (5400, 5_400_000), (1.5, 1_500)],
)
def test_offsets_parse_as_hours_minutes_seconds_or_seconds(value: object, ms: int) -> None:
    assert parse_offset(value) == ms


@pytest.mark.parametrize("value", ["10:00", "+1:60:00", "soon", "-00:01:00", -5, True, None, "1h"])
def test_bad_offsets_are_refused(value: object) -> None:
    with pytest.raises(ValueError, match="time"):
        parse_offset(value)


@given(st.integers(min_value=0, max_value=999 * 3600 + 3599))
def test_format_and_parse_round_trip(seconds: int) -> None:
    assert parse_offset(format_offset(seconds * 1000)) == seconds * 1000


def test_unquoted_yaml_base_60_times_read_as_seconds() -> None:
    s = scenario("  - {at: 1:30:00, activity: walking}\n")  # YAML 1.1 reads 1:30:00 as the integer 5400
    assert s.steps[0].at == 5_400_000


def test_on_off_yes_no_stay_words() -> None:
    s = scenario(
        "  - {at: +00:01:00, device: glasses, wear: off}\n"
        "  - {at: +00:02:00, device: glasses, respond: {on: card, do: click}}\n"
    )
    assert s.steps[0].wear == "off"
    assert s.steps[1].respond is not None
    assert s.steps[1].respond.on == "card"


def test_start_is_an_iso_time_or_a_time_of_day_in_the_profile_zone() -> None:
    s = scenario("", head=HEAD.replace("name: t", 'name: t\nstart: "2025-11-25T05:00:00+08:00"'))
    assert s.start_ms(0) == 1_764_018_000_000
    local = scenario("", head=HEAD.replace("name: t", 'name: t\nstart: "05:00"'))
    day = 1_764_000_000_000  # 2025-11-24T16:00Z = 2025-11-25 00:00 in +08:00
    assert local.start_ms(day + 3_600_000) == day + 5 * 3_600_000
    assert scenario("").start_ms(1234) == 1234


# --------------------------------------------------------------------------- errors name the file, line and step


def test_a_bad_time_names_the_line_and_the_step() -> None:
    text = HEAD + "  - {at: +00:01:00, activity: walking}\n  - {at: soon, activity: resting}\n"
    message = error_of(text)
    assert re.search(r"^t\.yaml:11: step 2: at: 'soon' is not a time", message), message


def test_an_unknown_action_is_an_error_on_its_step() -> None:
    message = error_of(HEAD + "  - {at: +00:01:00, dance: tango}\n")
    assert "t.yaml:10: step 1 (at +00:01:00): dance: Extra inputs are not permitted" in message


def test_two_actions_in_one_step_are_refused() -> None:
    message = error_of(HEAD + "  - {at: +00:01:00, device: glasses, say: hi, wear: on}\n")
    assert "t.yaml:10: step 1 (at +00:01:00)" in message
    assert "exactly one action" in message
    assert "say, wear" in message


@pytest.mark.parametrize(
    ("step", "fragment"),
    [
        ("{at: +00:01:00, say: hello}", "say needs a device"),
        ("{at: +00:01:00, device: ring, say: hello}", "say is for earphones, glasses, phone, not ring"),
        ("{at: +00:01:00, device: phone, activity: walking}", "activity is about the person: it takes no device"),
        ("{at: +00:01:00, device: glasses, touch: press}", "glasses touch must be one of"),
        ("{at: +00:01:00, device: phone, respond: {on: card, do: click}}", "respond is for glasses, not phone"),
        ("{at: +00:01:00, device: glasses, respond: {on: card, do: confirm}}", "cannot respond with 'confirm'"),
        ("{at: +00:01:00, device: earphones, respond: {on: speak, do: say}}", "do: say needs the text"),
        ("{at: +00:01:00, device: glasses, respond: {on: card, do: click, match: '('}}", "not a regular expression"),
        ("{at: +00:01:00, force: {hr: 300, for: '00:10:00'}}", "hr must be within 30.0..220.0"),
        ("{at: +00:01:00, force: {hr: 100, spo2: 88, for: '00:10:00'}}", "force exactly one"),
    ],
)
def test_step_errors_say_what_is_wrong(step: str, fragment: str) -> None:
    message = error_of(HEAD + f"  - {step}\n")
    assert "t.yaml:10: step 1 (at +00:01:00)" in message
    assert fragment in message


def test_steps_out_of_order_or_after_the_end_are_refused() -> None:
    message = error_of(
        HEAD + "  - {at: +00:10:00, activity: walking}\n"
        "  - {at: +00:05:00, activity: resting}\n"
        "  - {at: +03:00:00, activity: resting}\n"
    )
    assert "t.yaml:11: step 2 (at +00:05:00): at: steps must be in time order" in message
    assert "t.yaml:12: step 3 (at +03:00:00): at: after the end of the scenario (+02:00:00)" in message


def test_an_unknown_place_is_named_with_the_known_ones() -> None:
    message = error_of(HEAD + "  - {at: +00:01:00, go: {to: Atlantis}}\n")
    assert "t.yaml:10: step 1 (at +00:01:00): go.to: unknown place 'Atlantis'" in message
    assert "cafe" in message


def test_yaml_syntax_errors_name_the_line() -> None:
    message = error_of(HEAD + "  - {at: +00:01:00, activity: walking\n  - x\n")
    assert re.match(r"t\.yaml:1[12]: not valid YAML: expected ',' or '}'", message), message


def test_a_scenario_must_be_a_mapping_with_a_duration() -> None:
    assert "a scenario is a mapping" in error_of("- 1\n- 2\n")
    assert "duration: Field required" in error_of("name: t\n")


def test_a_missing_file_says_which_and_lists_the_built_in_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read scenario .*nope\.yaml.*day_in_the_life"):
        load(tmp_path / "nope.yaml")


# --------------------------------------------------------------------------- steps


def test_steps_default_their_device_when_only_one_kind_can_play_them() -> None:
    s = scenario(
        "  - {at: +00:01:00, ring: press}\n"
        "  - {at: +00:02:00, measure: spo2}\n"
        "  - {at: +00:03:00, swap_cell: left}\n"
        "  - {at: +00:04:00, notify: {app: WeChat, title: Mom}}\n"
    )
    assert [st.device for st in s.steps] == [Kind.RING, Kind.RING, Kind.GLASSES, Kind.PHONE]
    assert [n for n, _ in s.steps_for(Kind.RING)] == [1, 2]


def test_person_steps_reach_every_device() -> None:
    s = scenario("  - {at: +00:01:00, activity: walking}\n  - {at: +00:02:00, device: glasses, wear: off}\n")
    for kind in Kind:
        assert 1 in [n for n, _ in s.steps_for(kind)]
    assert [n for n, _ in s.steps_for(Kind.GLASSES)] == [1, 2]


def test_a_force_names_its_kind_and_value() -> None:
    s = scenario("  - {at: +00:01:00, force: {spo2: 87, for: '00:15:00'}}\n")
    force = s.steps[0].force
    assert force is not None
    assert (force.kind, force.value, force.for_) == (OverrideKind.SPO2, 87, 900_000)


def test_the_language_of_speech_is_given_or_guessed() -> None:
    s = scenario(
        "  - {at: +00:01:00, device: glasses, say: 帮我打车去公司}\n"
        "  - {at: +00:02:00, device: glasses, say: Take a photo}\n"
        "  - {at: +00:03:00, device: glasses, say: Bonjour, lang: fr}\n"
    )
    assert [st.spoken_lang() for st in s.steps] == ["zh", "en", "fr"]
    assert guess_lang("ok 好") == "zh"


def test_the_profile_is_plain_data_shaped_like_the_agents_user_profile() -> None:
    profile = load("day_in_the_life").profile_dict()
    assert set(profile) == {
        "lang",
        "tz_offset_min",
        "home",
        "office",
        "places",
        "usual_order",
        "ride_product",
        "music_app",
        "scripts",
        "baselines",
        "muted_rules",
        "consent",
    }
    assert profile["consent"] == ["proactive-health"]
    assert profile["home"] == {"name": "home", "lat": 30.2745, "lon": 120.139, "address": "黄龙 家", "label": ""}
    assert profile["usual_order"]["dish"] == "牛肉面"
    assert set(profile["baselines"]) == {"rhr_bpm", "hrv_ms", "skin_temp_c", "resp_brpm"}


# --------------------------------------------------------------------------- the plan


def test_a_trip_sets_the_activity_on_the_way_and_on_arrival() -> None:
    s = scenario("  - {at: +00:10:00, go: {to: office, mode: drive, then: sitting}}\n")
    plan = Plan.of(s)
    leg = plan.legs[0]
    assert leg.route.start_ms == 600_000
    assert plan.activity_at(0) is Activity.RESTING
    assert plan.motion_at(600_000) == "automotive"
    assert plan.motion_at(leg.until_ms) == "stationary"
    assert plan.activity_at(leg.until_ms) is Activity.SITTING
    home, office = s.resolve("home"), s.resolve("office")
    assert plan.position_at(0).place == "home"
    middle = plan.position_at((leg.route.start_ms + leg.until_ms) // 2)
    assert middle.speed_mps == 10.0
    assert middle.place is None
    end = plan.position_at(leg.until_ms + 1)
    assert haversine_m(end.lat, end.lon, office.lat, office.lon) < 1
    assert end.place == "office"
    assert haversine_m(home.lat, home.lon, office.lat, office.lon) == pytest.approx(leg.route.distance_m)


def test_a_new_trip_cuts_the_current_one_short_where_the_person_is() -> None:
    s = scenario(
        "  - {at: +00:00:00, go: {to: office, mode: walk, navigate: true}}\n"
        "  - {at: +00:30:00, go: {to: home, mode: walk}}\n"
    )
    plan = Plan.of(s)
    first, second = plan.legs
    assert first.until_ms == 1_800_000
    cut = first.route.position(1_800_000)
    assert second.route.points[0] == pytest.approx((cut.lat, cut.lon))
    assert plan.position_at(600_000).navigating
    assert not plan.position_at(2_000_000).navigating
    arrivals = [c for c in plan.changes if c.at_ms == first.route.end_ms]
    assert arrivals == []  # the first trip never arrived


def test_an_idle_plan_stays_put() -> None:
    from devices.scenario_plan import Plan  # noqa: PLC0415

    plan = Plan.idle(Activity.SITTING)
    assert plan.activity_at(10**9) is Activity.SITTING
    assert plan.position_at(10**9).speed_mps == 0


# --------------------------------------------------------------------------- the shipped day


def test_every_built_in_scenario_loads() -> None:
    for name in BUILTIN:
        assert load(name).steps


def test_the_day_lasts_at_most_four_hours_and_starts_before_waking() -> None:
    day = load("day_in_the_life")
    assert day.duration_ms <= 4 * 3_600_000
    start_local_h = (day.start_ms(0) // 1000 + day.profile.tz_offset_min * 60) % 86_400 / 3600
    assert start_local_h < 5.5
    assert day.person.activity is Activity.SLEEPING
    wake = next(s for s in day.steps if s.activity is not None)
    assert wake.activity is Activity.RESTING


def test_the_day_creates_the_conditions_of_every_health_rule() -> None:
    day = load("day_in_the_life")
    forces = [(s.at, s.force) for s in day.steps if s.force is not None]
    wake = next(s.at for s in day.steps if s.activity is Activity.RESTING)
    rhr = day.profile.baselines["rhr_bpm"]
    # night: HR held >= baseline + 5 through the wake; skin temperature +0.6 °C or more
    assert any(f.kind is OverrideKind.HR and f.value - 3 >= rhr + 5 and at == 0 and f.for_ > wake for at, f in forces)
    assert any(f.kind is OverrideKind.SKIN_TEMP_OFFSET and f.value > 0.6 and at == 0 for at, f in forces)
    # day: sustained (>= 10 min) high and low HR, and low SpO2 measured twice
    assert any(f.kind is OverrideKind.HR and f.value - 3 > 120 and f.for_ >= 15 * 60_000 for _, f in forces)
    assert any(f.kind is OverrideKind.HR and f.value + 3 < 45 and f.for_ >= 15 * 60_000 for _, f in forces)
    spo2 = next((at, f) for at, f in forces if f.kind is OverrideKind.SPO2)
    assert spo2[1].value + 0.5 < 90
    assert any(s.measure == "spo2" and spo2[0] < s.at < spo2[0] + spo2[1].for_ for s in day.steps)
    # the glasses' left cell starts low enough to need a swap, which the user answers with one
    assert day.devices.glasses.left_pct < 25
    assert any(s.respond is not None and s.respond.do == "swap_cell" for s in day.steps)


def test_the_day_exercises_every_device_interaction_the_brief_lists() -> None:
    day = load("day_in_the_life")
    actions = {s.action for s in day.steps}
    assert {"say", "ring", "touch", "wear", "offline", "go", "activity", "force", "respond"} <= actions
    said = [s.say for s in day.steps if s.say]
    assert any(guess_lang(t) == "zh" for t in said)
    assert any(guess_lang(t) == "en" for t in said)
    responses = {(s.device, s.respond.on, s.respond.do) for s in day.steps if s.respond is not None}
    assert (Kind.GLASSES, "card", "click") in responses  # the usual order, confirmed on the card
    assert (Kind.GLASSES, "card", "nod") in responses  # the leave-now taxi
    assert (Kind.EARPHONES, "speak", "say") in responses  # the taxi booked by voice with the glasses off
    off = next(s for s in day.steps if s.device is Kind.GLASSES and s.wear == "off")
    on_again = next(s for s in day.steps if s.device is Kind.GLASSES and s.wear == "on" and s.at > off.at)
    booked = next(s for s in day.steps if s.device is Kind.EARPHONES and s.say and off.at < s.at < on_again.at)
    assert "打车" in (booked.say or "")
    assert day.calendar
    assert day.calendar[0].place is not None
