"""`wearbus up` end to end: real processes, the bundled day in the life on a fast clock, the summary checked, on
both brokers (the days are shared with other tests: ``day.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.conftest import ON_EMBEDDED, ON_MOSQUITTO
from tests.e2e.day import Day, wearbus

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(600)]
PAID = {"order_food", "hail_ride"}


def check_summary(day: Day) -> None:
    """The day ran whole: exit 0, every process ended, both paid tasks committed in two rounds, a rule fired."""
    code, data, output = day.code, day.summary, day.output
    assert code == 0, output[-4000:]
    assert day.started, "up started no processes"
    assert day.left_behind == [], f"processes left behind: {day.left_behind}"
    tasks = data["tasks"]
    assert isinstance(tasks, list)
    skills = {t["skill"] for t in tasks}
    assert skills >= PAID, output[-4000:]
    paid_rounds = data["paid_rounds"]
    assert isinstance(paid_rounds, list)
    assert paid_rounds, f"no paid task was committed: {tasks}"
    assert paid_rounds.count(2) >= 2, paid_rounds  # the food order and the ride: sentence + confirmation
    assert data["alerts"], "no proactive rule fired"
    assert data["failed_processes"] == []
    assert "Summary" in output


@ON_EMBEDDED
def test_day_in_the_life_on_the_embedded_broker(embedded_day: Day) -> None:
    check_summary(embedded_day)


@ON_MOSQUITTO
def test_day_in_the_life_on_mosquitto(mosquitto_day: Day) -> None:
    check_summary(mosquitto_day)


@ON_MOSQUITTO
async def test_the_days_recording_replays_identically_and_a_changed_rule_differs_only_there(
    mosquitto_day: Day, tmp_path: Path
) -> None:
    """The recording of the day on Mosquitto (with health values: the rules need them) replays into the agent
    identically twice, and an agent with a changed rule differs in exactly that rule's actions."""
    recording = mosquitto_day.recordings["full"]
    profiles = str(Path(__file__).parents[2] / "devices" / "scenarios" / "day_in_the_life.yaml")
    logs = {name: tmp_path / f"{name}.jsonl" for name in ("a", "b", "changed")}
    for name, extra in (("a", []), ("b", []), ("changed", ["--set", "hr_high_bpm=135"])):
        rc, text = await wearbus("replay-agent", str(recording), "-o", str(logs[name]), "--profiles", profiles, *extra)
        assert rc == 0, text
    rc, text = await wearbus("diff", str(logs["a"]), str(logs["b"]))
    assert rc == 0, text
    assert "no difference" in text
    rc, text = await wearbus("diff", str(logs["a"]), str(logs["changed"]))
    assert rc == 1, text
    changed = [line for line in text.splitlines() if line.startswith(("-+", "++")) and not line.startswith("+++")]
    assert changed, text
    assert all("rule:hr_high" in line or "hr_high" in line for line in changed), text
