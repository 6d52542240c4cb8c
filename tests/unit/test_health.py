"""The health mark in the contract and the redaction it drives (pure: no broker)."""

from __future__ import annotations

import io
import json
from typing import Any

import structlog
from hypothesis import given
from hypothesis import strategies as st

from broker.logs import configure_logging, get_logger, redact_health
from schemas import codec
from schemas.actions import ACTIONS, ContextSnapshot, HealthSnapshot, ShowCard, Speak
from schemas.envelope import make
from schemas.errors import DecodeError, ValidationFailed
from schemas.events import EVENTS, HeartRate, Hrv, SkinTemp, SleepSegment, SpO2, Steps, SyncBatch
from schemas.export import asyncapi, json_schemas
from schemas.health import HEALTH_KEY, REDACTED, always_health, carries_health, marks, redact_model


def _leaves(obj: Any) -> list[Any]:
    if isinstance(obj, dict):
        return [x for v in obj.values() for x in _leaves(v)]
    if isinstance(obj, list):
        return [x for v in obj for x in _leaves(v)]
    return [obj]


def test_every_vital_is_marked_once_in_the_contract() -> None:
    assert marks(HeartRate) == {"bpm": True}
    assert marks(Hrv) == {"rmssd_ms": True}
    assert marks(SpO2) == {"pct": True}
    assert marks(SkinTemp) == {"celsius": True, "deviation_c": True}
    assert marks(SleepSegment) == {"stage": True}
    assert marks(ContextSnapshot) == {"health": True}
    assert marks(HealthSnapshot) == {"values": True}
    assert marks(ShowCard) == {"title": "if-flagged", "body": "if-flagged"}
    assert not carries_health(Steps)
    assert always_health(SyncBatch)  # through its items
    health_topics = {key for key, model in EVENTS.items() if always_health(model)}
    assert {name for _, _, name in health_topics} == {
        "hr",
        "hrv",
        "spo2",
        "skin_temp",
        "resp_rate",
        "sleep",
        "stress",
        "batch",
    }


def test_the_export_shows_the_mark() -> None:
    hr = json.dumps(json_schemas()["ring.evt.sensor.hr"])
    assert f'"{HEALTH_KEY}": true' in hr
    assert HEALTH_KEY not in json.dumps(json_schemas()["ring.evt.system.battery"])
    doc = json.dumps(asyncapi())
    assert f'"{HEALTH_KEY}": true' in doc
    assert f'"{HEALTH_KEY}": "if-flagged"' in doc
    assert "wb/v1/{user}/agent/health" in doc


def test_redaction_keeps_the_shape() -> None:
    batch = SyncBatch(
        from_ts=0,
        to_ts=10,
        items=[
            HeartRate(bpm=87, src_ts=1),
            Steps(steps=12, bucket_start=0, src_ts=2),
            SleepSegment(stage="rem", start_ts=0, end_ts=1, src_ts=3),
        ],
    )
    out = redact_model(batch)
    assert out["items"][0] == {**batch.items[0].model_dump(mode="json"), "bpm": REDACTED}
    assert out["items"][1] == batch.items[1].model_dump(mode="json")
    assert out["items"][2]["stage"] == REDACTED
    assert redact_model(SkinTemp(deviation_c=0.4))["celsius"] is None  # None reveals nothing
    ctx = redact_model(ContextSnapshot(user="alice", health={"hr": 70.0, "spo2": None}))
    assert ctx["health"] == {"hr": REDACTED, "spo2": None}


def test_flagged_texts_are_redacted_others_kept() -> None:
    alert = redact_model(ShowCard(title="Heart rate", body="Your heart rate is 131 bpm.", health=True))
    assert (alert["title"], alert["body"], alert["icon"]) == (REDACTED, REDACTED, "info")
    taxi = redact_model(Speak(text="Your car is here."))
    assert taxi["text"] == "Your car is here."


@given(st.floats(min_value=30, max_value=220), st.sampled_from(["periodic", "spot", "sleep"]))
def test_a_health_payload_never_survives_redaction(bpm: float, source: str) -> None:
    raw = codec.encode(make(HeartRate(bpm=bpm, source=source)), "json")
    for topic in ("wb/v1/alice/ring/r1/evt/sensor/hr", "wb/v1/alice/ring/r1/evt/sensor/unknown-name"):
        out = json.loads(codec.redact_bytes(topic, raw))
        assert out["data"]["bpm"] == REDACTED
        assert out["data"]["source"] == source
        assert bpm not in _leaves(out)


def test_the_dlq_carries_a_redacted_copy() -> None:
    bad = b'{"data":{"type":"ring.spo2","pct":300,"source":"spot"}}'
    letter = codec.dead_letter("wb/v1/alice/ring/r1/evt/sensor/spo2", bad, ValidationFailed("too high"))
    assert "300" not in letter.payload
    assert json.loads(letter.payload)["data"]["pct"] == REDACTED
    assert letter.topic == "wb/v1/alice/ring/r1/evt/sensor/spo2"
    assert letter.reason == "schema"
    garbage = codec.dead_letter("wb/v1/alice/ring/r1/evt/sensor/hr", b"\xc1bpm 88", DecodeError("bad"))
    assert garbage.payload == REDACTED  # undecodable bytes on a health topic may hold a value


def test_the_log_processor_redacts_by_the_mark() -> None:
    event = redact_health(
        None,
        "info",
        {
            "event": "x",
            "bpm": 131,
            "payload": b"\x81\xa3bpm\xcc\x83",
            "sample": HeartRate(bpm=131),
            "raw": {"data": {"pct": 88.0, "steps": 5}},
            "text": "Your heart rate is 131",
            "health": True,
        },
    )
    assert event["bpm"] == REDACTED
    assert event["text"] == REDACTED
    assert event["payload"] == "<7 bytes>"
    assert event["sample"]["bpm"] == REDACTED
    assert event["raw"] == {"data": {"pct": REDACTED, "steps": 5}}
    plain = redact_health(None, "info", {"event": "y", "text": "Your car is here", "level": "info"})
    assert plain["text"] == "Your car is here"
    assert plain["level"] == "info"  # structlog's own key, though a health field (stress) is called level too


_SECRET = "-".join(["secret", "payload", "bytes"])  # built, so no source line shown in a traceback holds it
_BPM = 171.0 + 0.5


def _fail(payload: bytes, bpm_value: float) -> None:
    raise ValueError(f"bad input of {len(payload)} bytes, {bpm_value > 0}")


def test_exception_logs_carry_no_frame_locals() -> None:
    for as_json in (True, False):
        out = io.StringIO()
        configure_logging("info", json=as_json, stream=out)
        try:
            _fail(_SECRET.encode(), _BPM)
        except ValueError:
            get_logger("t").exception("failed")
        text = out.getvalue()
        assert "failed" in text
        assert "ValueError" in text
        assert _SECRET not in text
        assert str(_BPM) not in text
    structlog.reset_defaults()


def test_every_action_with_a_health_flag_marks_its_texts() -> None:
    for model in ACTIONS.values():
        if "health" in model.model_fields:
            assert any(m == "if-flagged" for m in marks(model).values()), model


def _message(topic: str, body: Any) -> Any:
    return codec.decode(topic, codec.encode(make(body)))


def test_the_timeline_and_tap_redact_unless_asked_for() -> None:
    from rich.console import Console  # noqa: PLC0415

    from cli.main import render  # noqa: PLC0415
    from cli.up import Timeline  # noqa: PLC0415

    hr = _message("wb/v1/alice/ring/ring-1/evt/sensor/hr", HeartRate(bpm=131.5))
    card = _message(
        "wb/v1/alice/glasses/g1/cmd/display.card", ShowCard(title="Heart rate", body="At 131.5 bpm.", health=True)
    )
    shown: dict[bool, str] = {}
    for show in (False, True):
        console = Console(record=True, width=300)
        timeline = Timeline(console, show=True, show_health=show)
        timeline.feed(hr)
        timeline.feed(card)
        shown[show] = console.export_text()
    assert "131.5" not in shown[False]
    assert shown[False].count(REDACTED) == 3  # bpm, the card's title and body
    assert "131.5" in shown[True]
    assert render(hr)["envelope"]["data"]["bpm"] == REDACTED
    assert render(hr, show_health=True)["envelope"]["data"]["bpm"] == 131.5


def test_the_privacy_commands_say_what_is_wrong(tmp_path: Any) -> None:
    import typer  # noqa: PLC0415
    from typer.testing import CliRunner  # noqa: PLC0415

    from cli.privacy import register  # noqa: PLC0415

    app = typer.Typer()
    register(app)
    runner = CliRunner()
    bad_state = runner.invoke(app, ["consent", "maybe", "--user", "alice"])
    assert bad_state.exit_code == 2
    assert "on or off" in bad_state.output
    bad_purpose = runner.invoke(app, ["consent", "on", "--user", "alice", "--purpose", "ads"])
    assert bad_purpose.exit_code == 2
    assert "proactive-health" in bad_purpose.output
    missing = runner.invoke(app, ["forget", "--user", "alice", "--db", str(tmp_path / "none.db")])
    assert missing.exit_code == 1
    assert "no database" in missing.output
    no_cluster = runner.invoke(app, ["forget", "--user", "alice", "--redis", "redis://127.0.0.1:1/0"])
    assert no_cluster.exit_code == 1
    assert "--cluster" in no_cluster.output
    key = tmp_path / "k"
    assert runner.invoke(app, ["health-key", "--out", str(key)]).exit_code == 0
    again = runner.invoke(app, ["health-key", "--out", str(key)])
    assert again.exit_code == 1
    assert "exists" in again.output
