"""User profiles from YAML: a scenario's ``profile:`` section, or a file of ``users: {name: profile}``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import yaml

from schemas.errors import ConfigError
from schemas.profile import UserProfile, profile_from


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
