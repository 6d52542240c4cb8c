"""Health data after a whole `wearbus up` (the day on Mosquitto that ``day.py`` runs once for several tests):
nothing a person reads by default holds a health value.

The ground truth is a recording made with ``--include-health``: every health value that crossed the bus, found by
the contract's mark (what :func:`schemas.codec.redact_payload` changes). Then the timeline on stdout, the agent's and
devices' logs, every dead letter and a default recording must hold none of them; with ``--show-health`` the timeline
shows them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from schemas import codec
from schemas.errors import DecodeError
from schemas.health import FLAG, REDACTED
from testkit.record import load_recording
from tests.e2e.conftest import ON_EMBEDDED, ON_MOSQUITTO
from tests.e2e.day import Day

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]

NAMES = sorted(codec.HEALTH_NAMES - {FLAG})


def _diff(original: Any, redacted: Any, found: list[Any]) -> None:
    """The leaves of ``original`` that redaction hid."""
    if isinstance(original, dict) and isinstance(redacted, dict):
        for k, v in original.items():
            _diff(v, redacted.get(k), found)
    elif isinstance(original, list) and isinstance(redacted, list):
        for a, b in zip(original, redacted, strict=False):
            _diff(a, b, found)
    elif redacted == REDACTED and original != REDACTED:
        found.append(original)


def health_values(path: Path) -> tuple[list[Any], list[str]]:
    """Every health value in a recording (numbers and sleep stages), and the texts that quote one."""
    values: list[Any] = []
    for rec in load_recording(path):
        try:
            obj = codec.loads(rec.topic, rec.payload)
        except DecodeError:
            continue
        _diff(obj, codec.redact_payload(rec.topic, obj), values)
    texts = [v for v in values if isinstance(v, str) and len(v) > 8]
    return values, texts


def leaks(text: str, texts: list[str], *, style: str) -> list[str]:
    """Health values shown in ``text``: a marked field with a value other than the redaction mark, or a quoted
    alert text. ``style`` is ``timeline`` (``"bpm"=72``) or ``json`` (``"bpm": 72``)."""
    sep = "=" if style == "timeline" else ": "
    hidden = json.dumps(REDACTED, ensure_ascii=style == "json")
    names = [n for n in NAMES if not (style == "json" and n == "level")]  # structlog's level key
    pattern = re.compile(rf'"({"|".join(names)})"{re.escape(sep)}(?!{re.escape(hidden)}|null|\{{\}})')
    flat = re.sub(r"\s*\n\s*", "", text)  # rich wraps long timeline lines
    found = [flat[m.start() : m.end() + 40] for m in pattern.finditer(flat)]
    for quote in texts:
        squashed = re.sub(r"\s+", "", text)
        if re.sub(r"\s+", "", quote) in squashed or re.sub(r"\s+", "", json.dumps(quote)[1:-1]) in squashed:
            found.append(quote)
    return found


@ON_MOSQUITTO
def test_after_up_nothing_people_read_holds_a_health_value(mosquitto_day: Day) -> None:
    code, stdout, full = mosquitto_day.code, mosquitto_day.output, mosquitto_day.recordings["full"]
    assert code == 0, stdout[-4000:]
    values, texts = health_values(full)
    assert len(values) > 20, "the scenario published health values"
    assert texts, "a health alert or answer quoted a value"

    # The timeline on stdout.
    assert "sensor/spo2" in stdout
    assert leaks(stdout, texts, style="timeline") == []
    assert REDACTED in stdout
    # The agent's and the devices' logs.
    logs = sorted(mosquitto_day.workdir.glob("run-*/*.log"))
    processes = {"agent", "console", "ring-alice", "glasses-alice", "phone-alice", "earphones-alice"}
    assert {p.stem for p in logs} >= processes
    for log in logs:
        assert leaks(log.read_text(), texts, style="json") == [], log
        assert log.stat().st_mode & 0o777 == 0o600
    # The summary written for programs (--json-summary).
    summary = json.dumps(mosquitto_day.summary, ensure_ascii=False)
    assert mosquitto_day.summary, "up wrote no JSON summary"
    assert leaks(summary, texts, style="json") == []
    # Every dead letter: the out-of-range reading is there, redacted.
    letters = [rec for rec in load_recording(full) if rec.topic.startswith("wb/v1/_dlq/")]
    bodies = [json.loads(codec.loads(r.topic, r.payload)["data"]["payload"]) for r in letters]
    assert any(b["data"]["bpm"] == REDACTED for b in bodies), bodies
    for rec in letters:
        assert b"251.5" not in rec.payload
        letter = codec.loads(rec.topic, rec.payload)["data"]
        assert codec.redact_wire(letter["topic"], letter["payload"].encode()) is None
    # A recording made with the default options.
    default = mosquitto_day.recordings["default"]
    assert default.stat().st_mode & 0o777 == 0o600
    kept = load_recording(default)
    assert len(kept) > 100
    for rec in kept:
        assert codec.redact_wire(rec.topic, rec.payload) is None, rec.topic
    assert not any(t.encode() in rec.payload for rec in kept for t in texts)


@ON_EMBEDDED
def test_show_health_shows_them(embedded_day: Day) -> None:
    code, stdout = embedded_day.code, embedded_day.output
    assert code == 0, stdout[-4000:]
    assert re.search(r'"pct"=\d', stdout), stdout[-4000:]  # SpO2 spot readings
    assert re.search(r"health/alice\s+♥ health", stdout)
