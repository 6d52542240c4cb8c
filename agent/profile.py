"""User profiles from YAML: a scenario's ``profile:`` section, or a file of ``users: {name: profile}``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from agent.core.config import Place, UserProfile, UsualOrder
from schemas.actions import PURPOSES
from schemas.errors import ConfigError


def _place(raw: Any, where: str) -> Place:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: a place is a mapping with name, lat and lon")
    try:
        return Place(str(raw.get("name", "")), float(raw["lat"]), float(raw["lon"]), str(raw.get("address", "")))
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{where}: a place needs numeric lat and lon ({exc})") from exc


def profile_from(raw: Mapping[str, Any], where: str = "profile") -> UserProfile:
    """Build a :class:`UserProfile` from plain data (unknown keys are refused, so typos are caught)."""
    known = {"lang", "tz_offset_min", "home", "office", "places", "usual_order", "ride_product", "music_app",
             "scripts", "baselines", "muted_rules", "consent"}  # fmt: skip
    unknown = set(raw) - known
    if unknown:
        raise ConfigError(f"{where}: unknown keys {sorted(unknown)}; known: {sorted(known)}")
    order = raw.get("usual_order")
    usual = None
    if order is not None:
        if not isinstance(order, Mapping) or "dish" not in order:
            raise ConfigError(f"{where}.usual_order: needs at least a dish")
        usual = UsualOrder(str(order["dish"]), str(order.get("restaurant", "")), int(order.get("qty", 1)),
                           str(order.get("notes", "")))  # fmt: skip
    return UserProfile(
        lang=str(raw.get("lang", "en")),
        tz_offset_min=int(raw.get("tz_offset_min", 0)),
        home=_place(raw["home"], f"{where}.home") if raw.get("home") else None,
        office=_place(raw["office"], f"{where}.office") if raw.get("office") else None,
        places=tuple(_place(p, f"{where}.places[{i}]") for i, p in enumerate(raw.get("places") or [])),
        usual_order=usual,
        ride_product=str(raw.get("ride_product", "standard")),
        music_app=str(raw.get("music_app", "")),
        scripts=MappingProxyType({str(k): str(v) for k, v in (raw.get("scripts") or {}).items()}),
        baselines=MappingProxyType({str(k): float(v) for k, v in (raw.get("baselines") or {}).items()}),
        muted_rules=frozenset(str(r) for r in raw.get("muted_rules") or ()),
        consent=_purposes(raw.get("consent") or (), f"{where}.consent"),
    )


def _purposes(raw: Any, where: str) -> frozenset[str]:
    purposes = frozenset(str(p) for p in raw)
    unknown = purposes - set(PURPOSES)
    if unknown:
        raise ConfigError(f"{where}: unknown purposes {sorted(unknown)}; known: {list(PURPOSES)}")
    return purposes


def load_profiles(path: Path) -> dict[str, UserProfile]:
    """Profiles by user from a scenario (``user:`` + ``profile:``) or a profiles file (``users:``).

    Raises:
        ConfigError: the file is missing, not YAML, or a profile is malformed.
    """
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read profiles from {path}: {exc}") from exc
    if not isinstance(doc, Mapping):
        raise ConfigError(f"{path}: expected a mapping at the top")
    if "users" in doc and isinstance(doc["users"], Mapping):
        return {str(u): profile_from(p or {}, f"{path}: users.{u}") for u, p in doc["users"].items()}
    if "profile" in doc:
        return {str(doc.get("user", "alice")): profile_from(doc["profile"] or {}, f"{path}: profile")}
    raise ConfigError(f"{path}: no `profile:` (scenario) or `users:` (profiles file) section")
