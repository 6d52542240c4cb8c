"""Scenario scripts: loading a YAML file into a :class:`~devices.scenario_spec.Scenario`, with line numbers in errors.

A scenario is a YAML file validated on load (errors name the file, the line and the step). Every emulator process
loads the same file and plays the steps addressed to its kind, on the shared simulation clock, so no process
coordinates the others. The person-wide steps (``activity``, ``go``, ``force``) are seen by every process:
:class:`~devices.scenario_plan.Plan` turns them into what the user does at any offset and where they are. The
schema is :mod:`devices.scenario_spec`. See docs/scenarios.md.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from devices.scenario_spec import BUILTIN, PlaceRef, Scenario, format_offset, parse_offset
from schemas.errors import ConfigError

# --------------------------------------------------------------------------- loading, with line numbers in errors


class _Loader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false; ``on``, ``off``, ``yes`` and ``no`` stay words (``respond: {on: card}``)."""


_BOOL = "tag:yaml.org,2002:bool"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _BOOL]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def load(source: str | Path) -> Scenario:
    """Load a scenario file, or a built-in scenario by name (``day_in_the_life``).

    Raises:
        ConfigError: the file cannot be read or is not a valid scenario (the message names file, line and step).
    """
    if isinstance(source, str) and source in BUILTIN:
        text = resources.files("devices.scenarios").joinpath(f"{source}.yaml").read_text(encoding="utf-8")
        return parse(text, name=f"{source}.yaml")
    path = Path(source)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        builtin = ", ".join(BUILTIN)
        raise ConfigError(
            f"cannot read scenario {str(path)!r}: {exc.strerror} (built-in scenarios: {builtin})"
        ) from exc
    return parse(text, name=str(path))


def parse(text: str, name: str = "<scenario>") -> Scenario:
    """Parse and validate scenario YAML.

    Raises:
        ConfigError: with ``name:line: step N (at +H:MM:SS): what is wrong`` for every problem found.
    """
    try:
        root = yaml.compose(text, Loader=_Loader)
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader: builds plain data only)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{name}:{mark.line + 1}" if mark is not None else name
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: not valid YAML: {problem}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{name}:1: a scenario is a mapping with name, duration, profile, steps ...")
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as exc:
        problems = [_describe(name, root, data, tuple(err["loc"]), err["msg"]) for err in exc.errors()]
        shown = problems[:12] + ([f"... and {len(problems) - 12} more"] if len(problems) > 12 else [])
        raise ConfigError("\n".join(shown)) from exc
    _check(scenario, name, root)
    return scenario


def _check(scenario: Scenario, name: str, root: yaml.Node | None) -> None:
    """What needs the whole scenario: time order, steps inside the duration, places that exist."""
    problems: list[str] = []
    data: dict[str, Any] = {"steps": [{"at": format_offset(s.at)} for s in scenario.steps]}

    def fail(loc: tuple[str | int, ...], msg: str) -> None:
        problems.append(_describe(name, root, data, loc, msg))

    last = 0
    for i, step in enumerate(scenario.steps):
        if step.at < last:
            fail(
                ("steps", i, "at"),
                f"steps must be in time order: this one is before the one above ({format_offset(last)})",
            )
        last = max(last, step.at)
        if step.at > scenario.duration:
            fail(("steps", i, "at"), f"after the end of the scenario ({format_offset(scenario.duration)})")
        refs: list[tuple[tuple[str | int, ...], PlaceRef]] = []
        if step.go is not None:
            refs = [(("steps", i, "go", "to"), step.go.to)] + [
                (("steps", i, "go", "via", j), v) for j, v in enumerate(step.go.via)
            ]
        for loc, ref in refs:
            try:
                scenario.resolve(ref)
            except ConfigError as exc:
                fail(loc, str(exc))
    for j, ev in enumerate(scenario.calendar):
        if ev.place is not None:
            try:
                scenario.resolve(ev.place)
            except ConfigError as exc:
                fail(("calendar", j, "place"), str(exc))
    try:
        scenario.resolve(scenario.person.place)
    except ConfigError as exc:
        fail(("person", "place"), str(exc))
    if problems:
        raise ConfigError("\n".join(problems))


def _node_at(root: yaml.Node | None, loc: tuple[str | int, ...]) -> yaml.Node | None:
    """The deepest YAML node along ``loc`` (mapping keys and sequence indexes)."""
    node = root
    for part in loc:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            found = next((v for k, v in node.value if getattr(k, "value", None) == part), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            found = node.value[part]
        else:
            found = None
        if found is None:
            break
        node = found
    return node


def _describe(name: str, root: yaml.Node | None, data: Any, loc: tuple[str | int, ...], msg: str) -> str:
    node = _node_at(root, loc)
    line = f":{node.start_mark.line + 1}" if node is not None else ""
    where = ".".join(str(p) for p in loc) or "scenario"
    if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int):
        i = loc[1]
        at = ""
        steps = data.get("steps") if isinstance(data, dict) else None
        if isinstance(steps, list) and i < len(steps) and isinstance(steps[i], dict) and "at" in steps[i]:
            try:
                at = f" (at {format_offset(parse_offset(steps[i]['at']))})"
            except ValueError:
                at = ""
        field = ".".join(str(p) for p in loc[2:])
        where = f"step {i + 1}{at}" + (f": {field}" if field else "")
    return f"{name}{line}: {where}: {msg.removeprefix('Value error, ')}"
