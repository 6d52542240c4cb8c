"""Which store failures end the agent (issue 18, item 3): decided on SQLite's result codes, not on message text."""

from __future__ import annotations

import asyncio
import errno
import os
import sqlite3
import sys
from pathlib import Path

import pytest

from agent.failfast import EXIT_STORE, StoreFailed, blames_the_messages, unrecoverable
from cli.up import Proc, Supervisor
from schemas.errors import StoreError


def _wrapped(exc: BaseException) -> StoreError:
    wrapped = StoreError("could not store a batch")
    wrapped.__cause__ = exc  # as ``raise StoreError(...) from exc`` leaves it
    return wrapped


def _error_of(fn: object) -> sqlite3.Error:
    with pytest.raises(sqlite3.Error) as info:
        fn()  # type: ignore[operator]
    return info.value


def test_a_full_database_is_unrecoverable(tmp_path: Path) -> None:
    con = sqlite3.connect(tmp_path / "db", isolation_level=None)
    con.execute("CREATE TABLE t (x BLOB)")
    con.execute("PRAGMA max_page_count = 4")
    exc = _error_of(lambda: con.execute("INSERT INTO t VALUES (zeroblob(100000))"))
    assert unrecoverable(_wrapped(exc)) == "SQLITE_FULL"


def test_a_read_only_database_is_unrecoverable(tmp_path: Path) -> None:
    path = tmp_path / "db"
    sqlite3.connect(path).execute("CREATE TABLE t (x)").connection.commit()
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    exc = _error_of(lambda: con.execute("INSERT INTO t VALUES (1)"))
    assert unrecoverable(_wrapped(exc)) == "SQLITE_READONLY"


def test_a_file_that_is_no_database_is_unrecoverable(tmp_path: Path) -> None:
    path = tmp_path / "db"
    path.write_bytes(os.urandom(8192))
    exc = _error_of(lambda: sqlite3.connect(path).execute("SELECT * FROM sqlite_master").fetchall())
    assert unrecoverable(_wrapped(exc)) in {"SQLITE_NOTADB", "SQLITE_CORRUPT"}


def test_a_busy_database_or_a_bug_is_not(tmp_path: Path) -> None:
    con = sqlite3.connect(tmp_path / "db")
    exc = _error_of(lambda: con.execute("SELECT * FROM missing"))
    assert unrecoverable(_wrapped(exc)) is None
    assert unrecoverable(ValueError("disk is full")) is None  # the words alone decide nothing
    assert unrecoverable(_wrapped(OSError(errno.ENOSPC, "No space left on device"))) == "ENOSPC"


def test_only_a_message_s_own_failure_counts_toward_parking(tmp_path: Path) -> None:
    path = tmp_path / "db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN IMMEDIATE")
    other = sqlite3.connect(path, timeout=0, isolation_level=None)
    busy = _error_of(lambda: other.execute("BEGIN IMMEDIATE"))
    assert not blames_the_messages(_wrapped(busy))  # another process holds the lock: nobody's message
    holder.execute("ROLLBACK")
    holder.execute("CREATE TRIGGER no BEFORE INSERT ON t BEGIN SELECT RAISE(ABORT, 'no'); END")
    refused = _error_of(lambda: holder.execute("INSERT INTO t VALUES (1)"))
    assert blames_the_messages(_wrapped(refused))
    assert blames_the_messages(ValueError("a bug this message triggers"))
    full = _wrapped(OSError(errno.ENOSPC, "No space left on device"))
    assert not blames_the_messages(full)


def test_the_failure_says_what_to_do() -> None:
    text = str(StoreFailed("SQLITE_FULL", "database or disk is full"))
    assert "free disk space" in text
    assert "74" in text


async def test_up_says_why_the_agent_ended(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``wearbus up``'s supervisor restarts a child that ended with 74 and says that its store failed."""
    sup = Supervisor(max_restarts=0)
    await sup.start(Proc("agent", [sys.executable, "-c", f"raise SystemExit({EXIT_STORE})"], tmp_path / "a.log"))
    await asyncio.wait_for(sup.changed.wait(), 30)
    await sup.stop()
    said = capsys.readouterr().err
    assert f"exited with {EXIT_STORE} (its store failed" in " ".join(said.split())
