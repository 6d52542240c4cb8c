"""Erasing a user from the agent's stores: every SQLite table that names the user and the user's part of the saved
core state (:func:`forget_user`), or a cluster's Redis bucket store (:func:`forget_in_redis`). The command is
``wearbus forget`` (:mod:`cli.privacy`).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import msgpack

from schemas.errors import ConfigError
from schemas.topics import check_name

#: Tables with a ``user`` column, deleted from by :func:`forget_user` (events last: resolutions refer to them).
USER_TABLES = ("actions", "tasks", "alerts", "context", "core_users", "events")


def forget_user(db: Path, user: str) -> dict[str, int]:
    """Delete every row of ``user`` from the agent's database and the user from the saved core state.

    Returns:
        rows deleted per table (``core_state`` 1 when the saved state held the user).

    Raises:
        ConfigError: the database cannot be opened or written (locked by a running agent, not an agent's).
    """
    removed: dict[str, int] = {}
    try:
        con = sqlite3.connect(db, timeout=10, isolation_level=None)
    except sqlite3.Error as exc:
        raise ConfigError(f"cannot open {db}: {exc}") from exc
    try:
        con.execute("BEGIN IMMEDIATE")
        removed["resolutions"] = con.execute(
            "DELETE FROM resolutions WHERE event_id IN (SELECT id FROM events WHERE user = ?)", (user,)
        ).rowcount
        for table in USER_TABLES:
            removed[table] = con.execute(f"DELETE FROM {table} WHERE user = ?", (user,)).rowcount  # noqa: S608
        removed["core_state"] = 0
        for (state,) in con.execute("SELECT state FROM core_state").fetchall():
            data = json.loads(state)
            if isinstance(data.get("users"), dict) and data["users"].pop(user, None) is not None:
                con.execute("UPDATE core_state SET state = ?", (json.dumps(data),))
                removed["core_state"] = 1
        removed["ticks"] = _forget_in_ticks(con, user)
        if con.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'health_hourly'").fetchone():
            removed["health_hourly"] = con.execute("DELETE FROM health_hourly WHERE user = ?", (user,)).rowcount
        con.execute("COMMIT")
        con.execute("VACUUM")  # the deleted pages are overwritten, not left in the free list
    except (sqlite3.Error, ValueError) as exc:
        with contextlib.suppress(sqlite3.Error):
            con.execute("ROLLBACK")
        raise ConfigError(f"cannot erase {user} from {db}: {exc}") from exc
    finally:
        con.close()
    return removed


def _forget_in_ticks(con: sqlite3.Connection, user: str) -> int:
    """Take ``user`` out of the stored ticks' user lists (a tick of that user alone is deleted)."""
    n = 0
    rows = con.execute("SELECT n, users FROM ticks WHERE users IS NOT NULL").fetchall()
    for tick, users in rows:
        names = json.loads(users)
        if user in names:
            rest = [u for u in names if u != user]
            if rest:
                con.execute("UPDATE ticks SET users = ? WHERE n = ?", (json.dumps(rest), tick))
            else:
                con.execute("DELETE FROM ticks WHERE n = ?", (tick,))
            n += 1
    return n


async def forget_in_redis(redis: Any, cluster: str, buckets: int, user: str) -> dict[str, int]:
    """Erase ``user`` from an agent cluster's Redis bucket store (the bucket the user hashes to): their entries of
    the event log and the alerts stream, their actions (with outbox and acks), tasks, context, per-user snapshot and
    LLM resolutions. Run it with the cluster stopped (a member would write back what it holds).

    Args:
        redis: a ``redis.asyncio`` client.
        cluster: the cluster name.
        buckets: the number of buckets (as the members were started with).
        user: the user.
    """
    from agent.cluster import bucket_of, bucket_prefix  # noqa: PLC0415 (redis is only needed here)

    p = bucket_prefix(cluster, bucket_of(check_name(user, "user"), buckets))
    name = user.encode()
    removed: dict[str, int] = {}
    events: list[bytes] = []
    for stream in ("log", "alerts"):
        ids = []
        for entry_id, fields in await redis.xrange(p + stream, min="-", max="+"):
            if fields.get(b"user") == name:
                ids.append(entry_id)
                if b"id" in fields:
                    events.append(fields[b"id"])
        removed[stream] = await redis.xdel(p + stream, *ids) if ids else 0
    actions = [aid for aid, row in (await redis.hgetall(p + "actions")).items() if msgpack.unpackb(row)[2] == user]
    tasks = [tid for tid, row in (await redis.hgetall(p + "tasks")).items() if json.loads(row)[0] == user]
    removed["actions"] = await redis.hdel(p + "actions", *actions) if actions else 0
    if actions:
        await redis.zrem(p + "outbox", *actions)
        await redis.hdel(p + "acks", *actions)
    removed["tasks"] = await redis.hdel(p + "tasks", *tasks) if tasks else 0
    removed["resolutions"] = await redis.hdel(p + "resolutions", *events) if events else 0
    removed["ctx"] = await redis.hdel(p + "ctx", user)
    removed["core_users"] = await redis.hdel(p + "core_users", user)
    return removed
