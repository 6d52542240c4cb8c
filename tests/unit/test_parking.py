"""What the agent keeps beside its store (issue 18): retained digests and failed attempts survive a restart."""

from __future__ import annotations

from pathlib import Path

from agent.parking import Attempts, SeenFile


def test_seen_file_survives_a_restart_and_stays_bounded(tmp_path: Path) -> None:
    path = tmp_path / "agent.db.retained"
    seen = SeenFile(path, limit=3)
    for key in "abcd":
        seen.add(key)
    assert "a" not in seen
    assert set(seen) == {"b", "c", "d"}
    again = SeenFile(path, limit=3)
    assert set(again) == {"b", "c", "d"}
    again.discard("c")
    assert set(SeenFile(path, limit=3)) == {"b", "d"}


def test_attempts_count_across_restarts_until_parked(tmp_path: Path) -> None:
    path = tmp_path / "agent.db.attempts"
    for _ in range(3):
        attempts = Attempts(path, max_attempts=3)  # a new process each time
        assert not attempts.exhausted("poison")
        attempts.failed(["poison", "innocent"] if not attempts.suspect("poison") else ["poison"])
    attempts = Attempts(path, max_attempts=3)
    assert attempts.exhausted("poison")
    assert attempts.count("innocent") == 1
    assert not attempts.exhausted("innocent")
    attempts.settled(["poison", "innocent"])
    assert len(Attempts(path)) == 0


def test_a_damaged_attempts_file_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / "agent.db.attempts"
    path.write_text("{not json", encoding="utf-8")
    assert len(Attempts(path)) == 0
