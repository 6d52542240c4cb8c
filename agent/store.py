"""The agent's SQLite store (aiosqlite, WAL, versioned migrations).

What it keeps:

- ``events``: every processed event, ack and device state, keyed by envelope id (the dedup key), in the order the
  agent handled it, with the simulated time it was handled at (so a restart can replay it into the core);
- ``actions``: every command the core decided, stored *before* it is published, with ``published`` and the
  device's ack;
- ``tasks``, ``alerts``, ``context`` (the last snapshot per user) and ``core_state`` (periodic snapshots of the
  core with the event watermark they include).

One batch of messages is one transaction: events, actions, tasks and alerts commit together before any action is
published and before any MQTT acknowledgement, so a crash at any point neither loses nor repeats an effect.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiosqlite

from schemas.errors import StoreError

MIGRATIONS: tuple[str, ...] = (
    # v1
    """
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        topic TEXT NOT NULL,
        user TEXT,
        kind TEXT,
        device TEXT,
        channel TEXT NOT NULL,
        type TEXT NOT NULL,
        ts INTEGER NOT NULL,
        src_ts INTEGER,
        dev_seq INTEGER,
        corr TEXT,
        handled_ms INTEGER NOT NULL,
        received_wall_ms INTEGER NOT NULL,
        qos INTEGER NOT NULL,
        retain INTEGER NOT NULL,
        payload BLOB NOT NULL
    );
    CREATE INDEX events_user ON events(user, handled_ms);
    CREATE TABLE actions (
        id TEXT PRIMARY KEY,
        event_seq INTEGER,
        topic TEXT NOT NULL,
        user TEXT NOT NULL,
        kind TEXT NOT NULL,
        device TEXT NOT NULL,
        type TEXT NOT NULL,
        corr TEXT NOT NULL,
        reason TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        created_wall_ms INTEGER NOT NULL,
        published_wall_ms INTEGER,
        status TEXT NOT NULL DEFAULT 'pending',
        detail TEXT NOT NULL DEFAULT '',
        acked_ms INTEGER,
        payload BLOB NOT NULL
    );
    CREATE INDEX actions_unpublished ON actions(published_wall_ms) WHERE published_wall_ms IS NULL;
    CREATE TABLE tasks (
        task_id TEXT PRIMARY KEY,
        user TEXT NOT NULL,
        skill TEXT NOT NULL,
        state TEXT NOT NULL,
        slots TEXT NOT NULL,
        rounds INTEGER NOT NULL,
        slots_autofilled TEXT NOT NULL,
        slots_asked TEXT NOT NULL,
        confirm_modality TEXT,
        created_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL
    );
    CREATE TABLE alerts (
        n INTEGER PRIMARY KEY AUTOINCREMENT,
        rule TEXT NOT NULL,
        user TEXT NOT NULL,
        text TEXT NOT NULL,
        at_ms INTEGER NOT NULL
    );
    CREATE TABLE context (
        user TEXT PRIMARY KEY,
        snapshot TEXT NOT NULL,
        updated_ms INTEGER NOT NULL
    );
    CREATE TABLE core_state (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        state TEXT NOT NULL,
        event_seq INTEGER NOT NULL,
        tick_ms INTEGER NOT NULL,
        saved_wall_ms INTEGER NOT NULL
    );
    CREATE TABLE ticks (
        n INTEGER PRIMARY KEY AUTOINCREMENT,
        after_event_seq INTEGER NOT NULL,
        at_ms INTEGER NOT NULL
    );
    """,
    # v2: intents the optional LLM resolver gave for utterances, so a replay after a restart sees them too
    """
    CREATE TABLE resolutions (
        event_id TEXT PRIMARY KEY,
        intent TEXT NOT NULL
    );
    """,
)


@dataclass(frozen=True, slots=True)
class EventRow:
    """An event as stored."""

    id: str
    topic: str
    user: str | None
    kind: str | None
    device: str | None
    channel: str
    type: str
    ts: int
    src_ts: int | None
    dev_seq: int
    corr: str | None
    handled_ms: int
    received_wall_ms: int
    qos: int
    retain: bool
    payload: bytes


@dataclass(frozen=True, slots=True)
class ActionRow:
    """A command as stored before publishing."""

    id: str
    topic: str
    user: str
    kind: str
    device: str
    type: str
    corr: str
    reason: str
    created_ms: int
    created_wall_ms: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class TaskRow:
    """A task as stored."""

    task_id: str
    user: str
    skill: str
    state: str
    slots: dict[str, Any]
    rounds: int
    slots_autofilled: tuple[str, ...]
    slots_asked: tuple[str, ...]
    confirm_modality: str | None
    created_ms: int
    updated_ms: int


class Store:
    """The agent's database. ``async with Store(path) as store:``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db: aiosqlite.Connection | None = None

    @property
    def db(self) -> aiosqlite.Connection:
        """The open connection."""
        if self._db is None:
            raise StoreError("the store is not open")
        return self._db

    async def __aenter__(self) -> Self:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = await aiosqlite.connect(self.path)
            await self.db.execute("PRAGMA journal_mode=WAL")
            await self.db.execute("PRAGMA synchronous=NORMAL")
            await self.db.execute("PRAGMA foreign_keys=ON")
            await self._migrate()
        except (aiosqlite.Error, OSError, StoreError) as exc:
            if self._db is not None:  # close its thread now, not when the event loop is gone
                await self._db.close()
                self._db = None
            if isinstance(exc, StoreError):
                raise
            raise StoreError(f"cannot open the agent's database {self.path}: {exc}") from exc
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    async def _migrate(self) -> None:
        async with self.db.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        version = int(row[0]) if row else 0
        if version > len(MIGRATIONS):
            raise StoreError(
                f"{self.path} has schema version {version}, newer than this wearbus knows "
                f"({len(MIGRATIONS)}); upgrade wearbus"
            )
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            await self.db.executescript(f"BEGIN; {script}; PRAGMA user_version = {number}; COMMIT;")

    async def schema_version(self) -> int:
        """The migration level of the database."""
        async with self.db.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        return int(row[0]) if row else 0

    # ------------------------------------------------------------------ the batch transaction

    async def known(self, ids: Iterable[str]) -> set[str]:
        """Which of these envelope ids were already processed (the dedup check)."""
        wanted = list(ids)
        found: set[str] = set()
        for i in range(0, len(wanted), 500):
            chunk = wanted[i : i + 500]
            marks = ",".join("?" * len(chunk))
            async with self.db.execute(f"SELECT id FROM events WHERE id IN ({marks})", chunk) as cur:  # noqa: S608
                found.update(r[0] for r in await cur.fetchall())
        return found

    async def commit_batch(
        self,
        events: Sequence[EventRow],
        actions: Sequence[ActionRow],
        tasks: Sequence[TaskRow],
        alerts: Sequence[tuple[str, str, str, int]],
        ticks: Sequence[int] = (),
        resolutions: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Store one batch atomically (events, the actions they caused, tasks, alerts, tick times, resolutions)."""
        db = self.db
        try:
            await db.execute("BEGIN")
            if ticks:
                async with db.execute("SELECT COALESCE(MAX(seq), 0) FROM events") as cur:
                    row = await cur.fetchone()
                last = int(row[0]) if row else 0
                await db.executemany(
                    "INSERT INTO ticks (after_event_seq, at_ms) VALUES (?, ?)", [(last, t) for t in ticks]
                )
            await db.executemany(
                "INSERT OR IGNORE INTO events (id, topic, user, kind, device, channel, type, ts, src_ts, dev_seq, corr,"
                " handled_ms, received_wall_ms, qos, retain, payload) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (
                        e.id, e.topic, e.user, e.kind, e.device, e.channel, e.type, e.ts, e.src_ts, e.dev_seq,
                        e.corr, e.handled_ms, e.received_wall_ms, e.qos, int(e.retain), e.payload,
                    )
                    for e in events
                ],
            )  # fmt: skip
            await db.executemany(
                "INSERT OR IGNORE INTO actions (id, topic, user, kind, device, type, corr, reason, created_ms,"
                " created_wall_ms, payload) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                [
                    (a.id, a.topic, a.user, a.kind, a.device, a.type, a.corr, a.reason, a.created_ms,
                     a.created_wall_ms, a.payload)
                    for a in actions
                ],
            )  # fmt: skip
            await db.executemany(
                "INSERT INTO tasks (task_id, user, skill, state, slots, rounds, slots_autofilled, slots_asked,"
                " confirm_modality, created_ms, updated_ms) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
                " ON CONFLICT(task_id) DO UPDATE SET state=excluded.state, slots=excluded.slots,"
                " rounds=excluded.rounds, slots_autofilled=excluded.slots_autofilled,"
                " slots_asked=excluded.slots_asked, confirm_modality=excluded.confirm_modality,"
                " updated_ms=excluded.updated_ms",
                [
                    (t.task_id, t.user, t.skill, t.state, json.dumps(t.slots, ensure_ascii=False, default=str),
                     t.rounds, json.dumps(list(t.slots_autofilled)), json.dumps(list(t.slots_asked)),
                     t.confirm_modality, t.created_ms, t.updated_ms)
                    for t in tasks
                ],
            )  # fmt: skip
            await db.executemany("INSERT INTO alerts (rule, user, text, at_ms) VALUES (?,?,?,?)", alerts)
            await db.executemany("INSERT OR REPLACE INTO resolutions (event_id, intent) VALUES (?,?)", resolutions)
            await db.commit()
        except aiosqlite.Error as exc:
            await db.rollback()
            raise StoreError(f"could not store a batch of {len(events)} events: {exc}") from exc

    async def mark_published(self, ids: Sequence[str], wall_ms: int) -> None:
        """Record that these actions reached the broker."""
        if ids:
            await self.db.executemany(
                "UPDATE actions SET published_wall_ms = ? WHERE id = ?", [(wall_ms, i) for i in ids]
            )
            await self.db.commit()

    async def mark_acks(self, acks: Sequence[tuple[str, str, str, int]]) -> None:
        """Record device acks: ``(action_id, status, detail, at_ms)``."""
        if acks:
            await self.db.executemany(
                "UPDATE actions SET status = ?, detail = ?, acked_ms = ? WHERE id = ?",
                [(status, detail, at, action_id) for action_id, status, detail, at in acks],
            )
            await self.db.commit()

    async def unpublished(self) -> list[tuple[str, str, bytes]]:
        """Actions stored but not known to be published: ``(id, topic, payload)`` in creation order."""
        async with self.db.execute(
            "SELECT id, topic, payload FROM actions WHERE published_wall_ms IS NULL ORDER BY rowid"
        ) as cur:
            return [(r[0], r[1], bytes(r[2])) for r in await cur.fetchall()]

    # ------------------------------------------------------------------ core snapshots and replay

    async def save_core(self, state: dict[str, Any], tick_ms: int, wall_ms: int) -> None:
        """Snapshot the core, with the last event it includes."""
        async with self.db.execute("SELECT COALESCE(MAX(seq), 0) FROM events") as cur:
            row = await cur.fetchone()
        seq = int(row[0]) if row else 0
        await self.db.execute(
            "INSERT INTO core_state (id, state, event_seq, tick_ms, saved_wall_ms) VALUES (1, ?, ?, ?, ?)"
            " ON CONFLICT(id) DO UPDATE SET state=excluded.state, event_seq=excluded.event_seq,"
            " tick_ms=excluded.tick_ms, saved_wall_ms=excluded.saved_wall_ms",
            (json.dumps(state, ensure_ascii=False, separators=(",", ":")), seq, tick_ms, wall_ms),
        )
        await self.db.execute("DELETE FROM ticks WHERE after_event_seq < ?", (seq,))
        await self.db.commit()

    async def load_core(self) -> tuple[dict[str, Any], int, int] | None:
        """The last core snapshot: ``(state, event_seq, tick_ms)``, or None."""
        async with self.db.execute("SELECT state, event_seq, tick_ms FROM core_state WHERE id = 1") as cur:
            row = await cur.fetchone()
        if row is None:
            return None
        return json.loads(row[0]), int(row[1]), int(row[2])

    async def since(self, event_seq: int) -> list[tuple[str, Any]]:
        """What happened after a snapshot, in order: ``("event", EventRow)`` and ``("tick", at_ms)``."""
        out: list[tuple[int, int, tuple[str, Any]]] = []
        async with self.db.execute(
            "SELECT seq, id, topic, user, kind, device, channel, type, ts, src_ts, dev_seq, corr, handled_ms,"
            " received_wall_ms, qos, retain, payload FROM events WHERE seq > ? ORDER BY seq",
            (event_seq,),
        ) as cur:
            async for r in cur:
                row = EventRow(
                    id=r[1], topic=r[2], user=r[3], kind=r[4], device=r[5], channel=r[6], type=r[7], ts=r[8],
                    src_ts=r[9], dev_seq=r[10], corr=r[11], handled_ms=r[12], received_wall_ms=r[13], qos=r[14],
                    retain=bool(r[15]), payload=bytes(r[16]),
                )  # fmt: skip
                out.append((int(r[0]), 0, ("event", row)))
        async with self.db.execute(
            "SELECT after_event_seq, n, at_ms FROM ticks WHERE after_event_seq >= ? ORDER BY n", (event_seq,)
        ) as cur:
            async for r in cur:
                out.append((int(r[0]), 1 + int(r[1]), ("tick", int(r[2]))))
        out.sort(key=lambda x: (x[0], x[1]))
        return [item for _, _, item in out]

    async def resolutions(self) -> dict[str, str]:
        """Resolved intents (JSON) by utterance event id."""
        return {str(r[0]): str(r[1]) for r in await self.rows("SELECT event_id, intent FROM resolutions")}

    async def save_contexts(self, snapshots: Sequence[tuple[str, str, int]]) -> None:
        """Keep the last context snapshot per user: ``(user, json, at_ms)``."""
        if snapshots:
            await self.db.executemany(
                "INSERT INTO context (user, snapshot, updated_ms) VALUES (?,?,?) ON CONFLICT(user) DO UPDATE SET"
                " snapshot=excluded.snapshot, updated_ms=excluded.updated_ms",
                snapshots,
            )
            await self.db.commit()

    # ------------------------------------------------------------------ reading (report, tests)

    async def tasks(self) -> list[TaskRow]:
        """Every task, oldest first."""
        async with self.db.execute(
            "SELECT task_id, user, skill, state, slots, rounds, slots_autofilled, slots_asked, confirm_modality,"
            " created_ms, updated_ms FROM tasks ORDER BY created_ms, task_id"
        ) as cur:
            rows = await cur.fetchall()
        return [
            TaskRow(r[0], r[1], r[2], r[3], json.loads(r[4]), int(r[5]), tuple(json.loads(r[6])),
                    tuple(json.loads(r[7])), r[8], int(r[9]), int(r[10]))
            for r in rows
        ]  # fmt: skip

    async def scalar(self, sql: str, *args: Any) -> Any:
        """One value of a query."""
        async with self.db.execute(sql, args) as cur:
            row = await cur.fetchone()
        return row[0] if row else None

    async def rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """All rows of a query."""
        async with self.db.execute(sql, args) as cur:
            return [tuple(r) for r in await cur.fetchall()]
