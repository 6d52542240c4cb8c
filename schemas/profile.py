"""A user's profile: what the agent knows before it has learned anything, as a scenario or a profiles file gives it.

One definition for the scenario files (``profile:``), the agent (``--profiles``) and its pure core.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from schemas.actions import PURPOSES
from schemas.errors import ConfigError
from schemas.geo import Place

#: The personal baselines a profile may give.
BASELINES = frozenset({"rhr_bpm", "hrv_ms", "skin_temp_c", "resp_brpm"})


class UsualOrder(BaseModel):
    """What the user usually orders (the default when they say "my usual").

    Attributes:
        dish: the dish.
        restaurant: where from.
        qty: how many.
        notes: notes for the kitchen ("less spicy").
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    dish: str = Field(min_length=1, max_length=64)
    restaurant: str = ""
    qty: int = Field(default=1, ge=1, le=20)
    notes: str = ""


class UserProfile(BaseModel):
    """What the agent knows about a user before it has learned anything.

    Attributes:
        lang: the user's language (``en`` or ``zh``): used for proactive messages until the user speaks.
        tz_offset_min: the user's offset from UTC in minutes (China: 480), for night, quiet hours, weekdays.
        home: home, if known (learned from where the user sleeps otherwise).
        office: the office, if known (learned from where weekday daytime is spent otherwise).
        places: other named places (for ``navigate`` and ``hail_ride`` destinations).
        usual_order: the default food order.
        ride_product: the default ride product.
        music_app: the music app to name in ``media.control`` queries (empty: the phone's default).
        scripts: teleprompter scripts by name.
        baselines: known personal baselines (``rhr_bpm``, ``hrv_ms``, ``skin_temp_c``, ``resp_brpm``); a given
            baseline counts as learned, so the rules that compare with it are active from the first night.
        muted_rules: proactive rules the user switched off ("don't show again").
        consent: the purposes the user consented to when provisioned (``proactive-health``); the user changes
            them with ``wearbus consent`` or their app, and what the agent then stores wins.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    lang: Literal["en", "zh"] = "en"
    tz_offset_min: int = Field(default=0, ge=-720, le=840)
    home: Place | None = None
    office: Place | None = None
    places: tuple[Place, ...] = Field(default=(), max_length=50)
    usual_order: UsualOrder | None = None
    ride_product: str = "standard"
    music_app: str = ""
    scripts: Mapping[str, str] = Field(default_factory=dict)
    baselines: Mapping[str, float] = Field(default_factory=dict)
    muted_rules: frozenset[str] = frozenset()
    consent: frozenset[str] = frozenset()

    @field_validator("consent")
    @classmethod
    def _known_purposes(cls, value: frozenset[str]) -> frozenset[str]:
        unknown = sorted(value - set(PURPOSES))
        if unknown:
            raise ValueError(f"unknown purposes {unknown}; known: {list(PURPOSES)}")
        return value

    @field_validator("baselines")
    @classmethod
    def _known_baselines(cls, value: Mapping[str, float]) -> Mapping[str, float]:
        unknown = sorted(set(value) - BASELINES)
        if unknown:
            raise ValueError(f"unknown baselines {unknown}; known: {sorted(BASELINES)}")
        return value


def profile_from(raw: Mapping[str, Any], where: str = "profile") -> UserProfile:
    """A :class:`UserProfile` from plain data (unknown keys are refused, so typos are caught).

    Raises:
        ConfigError: the data is not a valid profile; the message names ``where`` and each wrong field.
    """
    try:
        return UserProfile.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}" for err in exc.errors())
        raise ConfigError(f"{where}: {problems}") from exc
