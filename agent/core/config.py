"""Settings of the pure core: every threshold of the proactive rules, timers, and the users' profiles."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

from schemas.geo import Place
from schemas.profile import UserProfile, UsualOrder

__all__ = ["REPLY_TIMERS", "REPLY_WALL_S", "CoreConfig", "Place", "UserProfile", "UsualOrder", "at_speed"]

_EMPTY: Mapping[str, str] = MappingProxyType({})
_NO_BASELINES: Mapping[str, float] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class CoreConfig:
    """Every threshold and timer of the core (reference/devices.md §4.3 and §5).

    Attributes:
        hr_high_bpm: sustained high heart rate at rest.
        hr_low_bpm: sustained low heart rate (awake).
        hr_sustain_s: how long the heart rate must stay past a threshold.
        hr_max_gap_s: the longest gap between samples that still counts as "stayed" (5-min sampling + slack).
        rest_steps_per_bucket: at most this many steps in a 15-min bucket still counts as resting.
        low_hr_while_asleep: judge low heart rate during sleep too.
        min_quality: a reading with a lower signal quality is not valid.
        spo2_low_pct: low blood oxygen.
        spo2_consecutive: how many valid low readings in a row it takes.
        spo2_recheck: ask the ring for a spot SpO2 after the first fresh low reading.
        night_rhr_delta_bpm: a night resting heart rate this far above the baseline is "elevated".
        skin_temp_dev_c: a nightly skin temperature deviation above this is flagged.
        min_night_samples: heart-rate samples a night needs to be judged.
        baseline_min_days: nights of data before a learned baseline is trusted.
        baseline_prior_days: how many days the prior counts for in the running baseline.
        baseline_min_alpha: the smallest weight a new day gets once the baseline is old.
        prior_rhr_bpm: the prior resting heart rate.
        prior_hrv_ms: the prior night HRV.
        prior_skin_temp_c: the prior night skin temperature.
        prior_resp_brpm: the prior night breathing rate.
        glasses_cell_low_pct: a glasses cell below this, while the other cell is present, should be swapped.
        courier_near_s: a courier this close (ETA) is announced.
        leave_buffer_s: leave-now fires when calendar start - travel ETA - this buffer is reached.
        travel_speed_mps: average door-to-door speed to estimate travel time.
        default_travel_s: travel time when the event or the user has no position.
        confirm_expiry_s: a confirmation (or a slot question) not answered in this time expires.
        undo_window_s: T1 actions can be undone for this long.
        ack_deadline_s: an output not acknowledged in this time goes to the next device.
        quote_timeout_s: a task the phone does not quote in this time fails.
        measure_timeout_s: a spot measurement without a result in this time is given up.
        rate_limit_s: at most one nudge per user and metric in this time.
        stale_ttl_s: acute rules (heart rate, SpO2) drop samples older than this.
        stale_ttl_daily_s: night rules (resting HR, skin temperature) drop nights older than this.
        fresh_sample_s: a reading this recent answers a health question without measuring again.
        night_start_hour: local hour the night window starts.
        night_end_hour: local hour the night window ends (the night is judged then).
        night_close_grace_s: if no sample closes the night, a tick closes it this long after night_end_hour.
        quiet_start_hour: local hour quiet hours start.
        quiet_end_hour: local hour quiet hours end.
        quiet_keywords: calendar titles or places containing one of these make a quiet setting.
        event_default_s: assumed length of a calendar event.
        asleep_window_s: a sleep sign this recent means the user is asleep.
        moving_speed_mps: phone speed above this means moving.
        place_radius_m: a position this close to a known place is at that place.
        learn_min_s: dwell time before a learned home or office is trusted.
        profiles: profiles by user.
        default_profile: the profile of users not in ``profiles``.
    """

    hr_high_bpm: float = 120.0
    hr_low_bpm: float = 45.0
    hr_sustain_s: int = 600
    hr_max_gap_s: int = 660
    rest_steps_per_bucket: int = 60
    low_hr_while_asleep: bool = False
    min_quality: float = 0.6
    spo2_low_pct: float = 90.0
    spo2_consecutive: int = 2
    spo2_recheck: bool = True
    night_rhr_delta_bpm: float = 5.0
    skin_temp_dev_c: float = 0.6
    min_night_samples: int = 6
    baseline_min_days: int = 3
    baseline_prior_days: float = 3.0
    baseline_min_alpha: float = 0.1
    prior_rhr_bpm: float = 60.0
    prior_hrv_ms: float = 45.0
    prior_skin_temp_c: float = 33.0
    prior_resp_brpm: float = 14.0
    glasses_cell_low_pct: float = 15.0
    courier_near_s: int = 180
    leave_buffer_s: int = 300
    travel_speed_mps: float = 8.0
    default_travel_s: int = 1200
    confirm_expiry_s: int = 60
    undo_window_s: int = 10
    ack_deadline_s: int = 5
    quote_timeout_s: int = 30
    measure_timeout_s: int = 90
    rate_limit_s: int = 6 * 3600
    stale_ttl_s: int = 2 * 3600
    stale_ttl_daily_s: int = 18 * 3600
    fresh_sample_s: int = 600
    night_start_hour: int = 22
    night_end_hour: int = 7
    night_close_grace_s: int = 2 * 3600
    quiet_start_hour: int = 23
    quiet_end_hour: int = 7
    quiet_keywords: tuple[str, ...] = (
        "meeting",
        "library",
        "cinema",
        "movie",
        "theater",
        "theatre",
        "concert",
        "会议",
        "开会",
        "图书馆",
        "电影",
        "剧院",
        "音乐会",
    )
    event_default_s: int = 3600
    asleep_window_s: int = 20 * 60
    moving_speed_mps: float = 1.0
    place_radius_m: float = 150.0
    learn_min_s: int = 3 * 3600
    profiles: Mapping[str, UserProfile] = field(default_factory=dict)
    default_profile: UserProfile = field(default_factory=UserProfile)

    def profile(self, user: str) -> UserProfile:
        """The profile of ``user`` (the default profile if none is configured)."""
        return self.profiles.get(user, self.default_profile)


#: The timers that wait for something to come back across the bus: an acknowledgement, a quote, a spot measurement's
#: result, a person's answer to a card (two hops: the card out, the click back), an undo.
REPLY_TIMERS = ("ack_deadline_s", "quote_timeout_s", "measure_timeout_s", "confirm_expiry_s", "undo_window_s")
_HOUR_S = 3600
#: The wall time :func:`at_speed` adds to each of them on a fast clock.
REPLY_WALL_S = 2.0


def at_speed(config: CoreConfig, speed: float, wall_s: float = REPLY_WALL_S) -> CoreConfig:
    """The settings for a clock ``speed`` times faster than the wall (``wearbus up``'s simulated day).

    The broker and the processes are no faster on a fast clock: at x240 the 30 s quote timeout is 125 ms of wall time,
    and on a busy machine a phone's quote that took 185 ms to come back failed the food order it quoted. Each of
    :data:`REPLY_TIMERS` gets ``wall_s`` seconds of wall time more, counted in simulated seconds (x240: 480 s), up to
    an hour (a card's longest ``ttl_s``: a confirmation card stays up as long as it can be answered); the thresholds
    of the rules and the timers that only watch the clock keep their values. At ``speed`` <= 1 (the wall clock, the
    default) nothing changes.
    """
    if speed <= 1:
        return config
    extra = math.ceil(speed * wall_s)

    def longer(value: int) -> int:
        return max(value, min(value + extra, _HOUR_S))

    return replace(  # the fields of REPLY_TIMERS (tests/unit/test_core_confirm.py checks that they are the same)
        config,
        ack_deadline_s=longer(config.ack_deadline_s),
        quote_timeout_s=longer(config.quote_timeout_s),
        measure_timeout_s=longer(config.measure_timeout_s),
        confirm_expiry_s=longer(config.confirm_expiry_s),
        undo_window_s=longer(config.undo_window_s),
    )
