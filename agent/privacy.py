"""Erasing a user from the agent's stores: every SQLite table that names the user and the user's part of the saved
core state (:func:`forget_user`), or a cluster's Redis bucket store (:func:`forget_in_redis`). The command is
``wearbus forget`` (:mod:`cli.privacy`).
"""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path
from typing import Any

from agent.store import erase_user
from schemas.errors import ConfigError, StoreError
from schemas.topics import check_name


def forget_user(db: Path, user: str) -> dict[str, int]:
    """Delete every row of ``user`` from the agent's database (:func:`agent.store.erase_user`), with the agent
    stopped, then rewrite the file so that no free page keeps them.

    Returns:
        rows deleted per table (``core_state`` 1 when the saved state held the user).

    Raises:
        ConfigError: the database cannot be opened or written (locked by a running agent, not an agent's).
    """
    try:
        con = sqlite3.connect(db, timeout=10, isolation_level=None)
    except sqlite3.Error as exc:
        raise ConfigError(f"cannot open {db}: {exc}") from exc
    try:
        con.execute("BEGIN IMMEDIATE")
        removed = erase_user(con, user)
        con.execute("COMMIT")
        con.execute("VACUUM")  # the deleted pages are overwritten, not left in the free list
    except (sqlite3.Error, ValueError) as exc:
        with contextlib.suppress(sqlite3.Error):
            con.execute("ROLLBACK")
        raise ConfigError(f"cannot erase {user} from {db}: {exc}") from exc
    finally:
        con.close()
    return removed


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
    from agent.cluster import RedisBucketStore, bucket_of  # noqa: PLC0415 (redis is only needed here)

    store = RedisBucketStore(redis, cluster, bucket_of(check_name(user, "user"), buckets), "forget")
    try:
        return await store.forget(user)
    except StoreError as exc:
        raise ConfigError(f"cannot erase {user} from the cluster {cluster}: {exc}") from exc
