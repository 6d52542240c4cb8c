"""Places and distances on the earth (WGS-84 degrees): one definition for the devices, the agent and the tools."""

from __future__ import annotations

import math

from pydantic import BaseModel, ConfigDict, Field

EARTH_RADIUS_M = 6_371_008.8  # IUGG mean radius; haversine error at city scale is far below GPS noise


class Place(BaseModel):
    """A named place.

    Attributes:
        name: how the user and the phone app name it (``home``, ``office``, ``Hangzhou East Station``).
        lat: latitude (WGS-84 degrees).
        lon: longitude (WGS-84 degrees).
        address: a street address, when known.
        label: how a map app shows it (``杭州东站``), when it differs from the name.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=64)
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    address: str = ""
    label: str = ""


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance between two points, in metres."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp = p2 - p1
    dl = math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))
