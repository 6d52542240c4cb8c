"""The agent's SQLite store (aiosqlite, WAL, versioned migrations): one :class:`~agent.storage.AgentStore`.

Its callers use the protocol's domain operations; ``rows`` and ``scalar`` (SQL) are for tests and debugging only.

What it keeps:

- ``events``: every processed event, ack and device state, in the order the agent handled it, with the simulated
  time it was handled at (so a restart can replay it into the core); no index: a new row goes at its end; the
  oldest are deleted past the log's retention once no restart needs them (:meth:`Store.prune_log`);
- ``dedup``: the envelope ids of the QoS 1 events (the dedup key of the wire contract: a retry keeps its id, not
  necessarily its ts), merged in sorted runs; those stored after ``dedup_mark`` are held in memory
  (:class:`Unmerged`);
- ``actions``: every command the core decided, stored *before* it is published, with ``published`` and the
  device's ack;
- ``tasks``, ``alerts``, ``context`` (the last snapshot per user) and ``core_state`` (periodic snapshots of the
  core with the event watermark they include).

One batch of messages is one transaction: events, actions, tasks and alerts commit together before any action is
published and before any MQTT acknowledgement, so a crash at any point neither loses nor repeats an effect.

Two connections to one WAL file. The ingest path (the dedup check ``known`` and every write: ``commit_batch``,
``mark_published``, ``mark_acks``, ``save_core``, ``save_contexts``) runs on a plain :mod:`sqlite3` connection on
the event loop's own thread, synchronously, behind the same async methods: a 500-row batch commits in a few ms
(WAL, ``synchronous=NORMAL``, one transaction per batch; only another process writing the same file could make it
wait, for at most the 5 s busy timeout). Through aiosqlite each call is a hand-off to its thread
and back, and every hand-off waits for the GIL: while the event loop is busy (a deep backlog) the worker gets the
GIL only at the 5 ms switch interval, so a batch of a handful of calls costs tens of ms of convoy, which collapsed
the agent behind a backlog and added milliseconds to every utterance -> card round trip. The aiosqlite connection
stays for the migrations and the read side (report, replay, tests: ``tasks``, ``since``, ``load_core``,
``unpublished``, the counts, ``rows``, ...); it runs in autocommit mode and the store never writes through it,
so the two never wait on each other's write lock (WAL readers never block the writer). SQLite's automatic
checkpoint is off on the writer (it would copy the WAL into the database, with an fsync, inside whichever commit
crossed 1000 pages: a stall of the event loop of several ms); a passive checkpoint runs on aiosqlite's thread
instead, at most every :data:`CHECKPOINT_EVERY_S` after a write (passive: it never takes the write lock, so the
writer never waits for it).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self

import aiosqlite

from agent.core.api import TaskRecord
from agent.sealing import HealthCipher
from agent.storage import (
    HEALTH_EVENT_TYPES,
    LOG_PRUNE_CHUNK,
    ActionRow,
    EventRow,
    HealthSeal,
    Hourly,
    Mark,
    Readings,
    Snapshot,
    TickRow,
    fold,
    message_class,
)
from broker.files import private_dir, private_file
from broker.logs import get_logger
from schemas.errors import StoreError
from schemas.health import REDACTED
from schemas.topics import DeviceKey

# The rows and the protocol are defined in agent.storage; these names stay importable from here.
__all__ = ["CHECKPOINT_EVERY_S", "DEDUP_TABLE", "MERGE_SQL", "MIGRATIONS", "USER_TABLES", "ActionRow", "EventRow",
           "Mark", "Snapshot", "Store", "TickRow", "Unmerged", "erase_user"]  # fmt: skip

#: The columns of the events table after ``seq`` and ``id``, as every version of it has them.
_EVENT_FIELDS = """
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
"""


def _rebuild_events(table: str, id_column: str) -> str:
    """A migration that copies the events table into a new one (SQLite cannot drop a column's constraint)."""
    columns = ("seq, id, topic, user, kind, device, channel, type, ts, src_ts, dev_seq, corr, handled_ms,"
               " received_wall_ms, qos, retain, payload")  # fmt: skip
    return f"""
    CREATE TABLE {table} (
        seq INTEGER PRIMARY KEY,
        {id_column},{_EVENT_FIELDS}    );
    INSERT INTO {table} SELECT {columns} FROM events ORDER BY seq;
    DROP TABLE events;
    ALTER TABLE {table} RENAME TO events;
    """  # noqa: S608 (constants only)


#: The QoS 1 events' ids (store v11): the dedup check's table, filled in sorted runs (:class:`Unmerged`).
DEDUP_TABLE = "CREATE TABLE dedup (id TEXT PRIMARY KEY) WITHOUT ROWID"

#: The health event types and the redaction mark as SQL literals (constants of this code, not input).
_HEALTH_TYPES_SQL = ",".join(f"'{t}'" for t in sorted(HEALTH_EVENT_TYPES))
_REDACTED_SQL = f"X'{REDACTED.encode().hex()}'"
#: An event the retention has yet to redact: a health event whose payload still holds its values.
_DUE_SQL = f"type IN ({_HEALTH_TYPES_SQL}) AND instr(payload, {_REDACTED_SQL}) = 0"

MIGRATIONS: tuple[str, ...] = (
    # v1
    """
    CREATE TABLE events (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,"""
    + _EVENT_FIELDS
    + """    );
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
    # v3: the core snapshot per user, so a snapshot writes only the users that changed (core_state keeps the rest)
    """
    CREATE TABLE core_users (
        user TEXT PRIMARY KEY,
        state TEXT NOT NULL
    );
    """,
    # v4: the events table on the ingest path writes one B-tree and one index per event, not four: no
    # AUTOINCREMENT (it rewrote the sqlite_sequence row in every transaction; events are never deleted, so the rowid
    # already only grows) and no index on (user, handled_ms) (nothing queries it: the replay reads by seq, the
    # dedup by id). The table is copied, so upgrading a large database takes a while once.
    _rebuild_events("events_v4", "id TEXT NOT NULL UNIQUE") + "DELETE FROM sqlite_sequence WHERE name = 'events';",  # noqa: S608
    # v5: a tick may cover some users only (the pump ticks its users in slices, so a tick of thousands of users
    # never holds the event loop at once): the users a stored tick covered, as a JSON list (NULL: every user)
    """
    ALTER TABLE ticks ADD COLUMN users TEXT;
    """,
    # v6: a snapshot is written a slice of users at a time, so each user's row says how far it goes (the last event
    # and the last tick it includes). Rows of before were written all together, at core_state.event_seq, before
    # every tick still stored (ticks before it were deleted with that snapshot).
    """
    ALTER TABLE core_users ADD COLUMN event_seq INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE core_users ADD COLUMN tick_n INTEGER NOT NULL DEFAULT 0;
    UPDATE core_users SET event_seq = COALESCE((SELECT event_seq FROM core_state WHERE id = 1), 0),
        tick_n = COALESCE((SELECT MIN(n) - 1 FROM ticks), 0);
    """,
    # v7: the dedup key is (ts, id), the publish time first, not the id alone. Ids are a device's prefix and its
    # counter, so an index on id put each event on its own device's leaf page: a batch dirtied a page per event and
    # the WAL grew by ~3.5 KB an event. Publish times arrive nearly in order, so (ts, id) appends to a few pages
    # (~1 KB an event, 4-6 us less of CPU an insert). A redelivery is the same message, so it has the same ts.
    _rebuild_events("events_v7", "id TEXT NOT NULL") + "CREATE UNIQUE INDEX events_key ON events(ts, id);",
    # v8: the dedup key is the id alone, as the wire contract says: a device keeps an event's id across its retries,
    # and a retry may carry a fresh ts, which (ts, id) took for a new event and acted on twice. Such pairs stored
    # under v7 stay in the log (it is what happened, and what a replay re-runs): the later copies are renamed
    # ``{id}#dup{seq}`` so that the ids are unique. The cost v7 avoided comes back (an id index dirties a leaf page
    # per device in a batch: docs/benchmarks.md section 7 has the figures).
    """
    UPDATE events SET id = id || '#dup' || seq WHERE seq NOT IN (SELECT MIN(seq) FROM events GROUP BY id);
    DROP INDEX events_key;
    CREATE UNIQUE INDEX events_id ON events(id);
    """,
    # v9: the health events whose payload the retention has yet to redact, by arrival. The retention looked for them
    # in the whole log once a minute, on the event loop: 0.4-0.8 s a pass at 2 million events, and the log grows
    # by ~20 million an hour at 1,000 users. Now it reads only what is due.
    f"""
    CREATE TABLE health_due (seq INTEGER PRIMARY KEY, received_wall_ms INTEGER NOT NULL);
    INSERT INTO health_due SELECT seq, received_wall_ms FROM events WHERE {_DUE_SQL};
    CREATE INDEX health_due_at ON health_due(received_wall_ms);
    """,  # noqa: S608 (constants only)
    # v10: the dedup index holds the QoS 1 events only, the ones the contract deduplicates (a QoS 0 message is
    # delivered at most once). Ids are a device's own prefix and counter, so every id the index holds puts its event
    # on its own device's leaf page: each event of a batch dirtied a page of its own, ~4 KB of log and checkpoint,
    # 23 -> 6 us of SQLite CPU an event at 10,000 devices with the samples at QoS 0 (docs/benchmarks.md, section
    # 15). The samples, most of what devices send, now write only to the end of the table.
    """
    DROP INDEX events_id;
    CREATE UNIQUE INDEX events_id_q1 ON events(id) WHERE qos > 0;
    """,
    # v11: the QoS 1 ids in a table of their own, merged into it in sorted runs. An index on the events put each
    # QoS 1 event on its own device's leaf page (a device's ids share its prefix): a batch of events of different
    # devices dirtied a page an event, 4 KB of log and again at the checkpoint, 12-22 us of SQLite CPU an event
    # (docs/benchmarks.md, section 16). The events now only append; the ids stored since ``dedup_mark`` are held in
    # memory (:class:`Unmerged`, read back from the events on open) and written to ``dedup`` in sorted chunks, a
    # device's ids of a whole run on its page at once. The ids are copied and sorted once: a large database takes a
    # while to upgrade.
    f"""
    {DEDUP_TABLE};
    INSERT OR IGNORE INTO dedup SELECT id FROM events WHERE qos > 0 ORDER BY id;
    DROP INDEX events_id_q1;
    CREATE TABLE dedup_mark (one INTEGER PRIMARY KEY CHECK (one = 1), seq INTEGER NOT NULL);
    INSERT INTO dedup_mark VALUES (1, (SELECT COALESCE(MAX(seq), 0) FROM events));
    """,  # noqa: S608 (constants only)
)


#: Hourly aggregates of health values, kept longer than the raw samples (made when the store opens, outside the
#: numbered migrations: a database of an agent of before simply has none).
_HOURLY_TABLE = """CREATE TABLE IF NOT EXISTS health_hourly (
    user TEXT NOT NULL, metric TEXT NOT NULL, hour_ms INTEGER NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (user, metric, hour_ms))"""

_HOURLY_INDEX = "CREATE INDEX IF NOT EXISTS health_hourly_hour ON health_hourly(hour_ms)"  # its retention's DELETE
#: The health events a batch just stored whose payload still holds its values, onto the retention's list: one pass
#: over the batch's own rows, after ``seq`` (the table's end before the batch; the events have no index on the id).
#: A payload redacted already, as without the user's consent, is not listed.
_INSERT_DUE = (
    "INSERT OR IGNORE INTO health_due (seq, received_wall_ms) SELECT seq, received_wall_ms FROM events"  # noqa: S608
    f" WHERE seq > ? AND {_DUE_SQL}"
)
_INSERT_EVENT = (
    "INSERT OR IGNORE INTO events (id, topic, user, kind, device, channel, type, ts, src_ts, dev_seq, corr,"
    " handled_ms, received_wall_ms, qos, retain, payload) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
)
_KNOWN_CHUNK = 512  # ids per dedup query at most: a power of two (see _known_sql), under SQLite's parameter limit
#: QoS 1 ids held in memory, not yet in the dedup table, at which a merge of them begins (store v11). The more a run
#: holds, the more of a device's ids share each page it writes; sorting it holds the event loop ~2 ms.
MERGE_AT = 8_192
#: Ids of a merge written with each batch at least, and at least twice the QoS 1 ids the batch adds, so a merge
#: ends while at most half a run more comes in. A merge is spread over the batches in proportion to what they add
#: (a batch of 270 QoS 1 events writes 540, ~2 ms; one of a few, 64, ~0.2 ms), never one long transaction.
MERGE_CHUNK = 64
#: Writes an id of a merge into the dedup table (one already there, from a merge a crash cut short, is ignored).
MERGE_SQL = "INSERT OR IGNORE INTO dedup (id) VALUES (?)"
_MARK_SQL = "UPDATE dedup_mark SET seq = ? WHERE one = 1"
_UNMERGED_SQL = "SELECT id FROM events WHERE qos > 0 AND seq > (SELECT seq FROM dedup_mark WHERE one = 1)"
_LAST_SEQ_SQL = "SELECT COALESCE(MAX(seq), 0) FROM events"
#: The share of ``max_mb`` the file's pages in use may reach before the log's retention deletes the oldest events
#: it may delete whatever their age, so a capped database makes room instead of failing every write.
LOG_PRESSURE = 0.8
#: The newest event the log's retention may delete: at or before the last complete snapshot round's start (a
#: restart replays only what follows), merged into the dedup table (its id leaves the table with it), and never the
#: last event (a table emptied would number its next event 1 again).
_PRUNABLE_SQL = (
    "SELECT MIN((SELECT event_seq FROM core_state WHERE id = 1), (SELECT seq FROM dedup_mark WHERE one = 1),"
    " (SELECT MAX(seq) FROM events) - 1)"
)
CHECKPOINT_EVERY_S = 1.0  # seconds between two background checkpoints of the WAL (when something was written)
#: Seconds between two catch-ups of a background checkpoint on the writer (:meth:`Store._checkpoint_wal`), each of
#: which lets the log start over. A catch-up holds the event loop for its fsyncs: 7 ms at the median and up to 18 ms
#: at 2,500 users, whatever it copies, so it comes once in this many checkpoints, not after each (the log then
#: holds up to this many seconds of writes: ~80 MB at that load).
CATCH_UP_EVERY_S = 10.0
WAL_KEEP_BYTES = 64 * 2**20  # the WAL file is cut back to this once its log starts over (SQLite's journal_size_limit)


@functools.cache
def _known_sql(size: int) -> str:
    """The dedup query for ``size`` ids. Only powers of two are asked for, so the connection's statement cache holds
    at most ten of them. One text per batch size filled that cache with 128 statements of up to ~94 KiB each (12 MiB
    of SQLite's memory, out of Python's sight) over minutes of batches of every size."""
    return f"SELECT id FROM dedup WHERE id IN ({','.join(['?'] * size)})"  # noqa: S608 (placeholders only)


class Unmerged:
    """The QoS 1 ids stored after the dedup table's mark and not yet merged into it, and the merge in progress.

    Pure bookkeeping (the store does the I/O): a batch's transaction writes :meth:`chunk` of the run into the dedup
    table, and the mark once the run ends there (:meth:`ends`); after the commit, :meth:`committed` drops the merged
    ids and takes the batch's own, and begins the next run (all the ids held, sorted) once :data:`MERGE_AT` wait. A
    sorted run puts each device's ids of the run on its page in one go: a page written per device, not per event.

    Every QoS 1 id at or before the mark is in the table; every one after it is held here (and, from a crash
    between two chunks, maybe in the table too: merging it again is ignored). So ``unmerged.ids`` and the table
    together are exactly the stored QoS 1 ids.
    """

    def __init__(self, ids: Iterable[str] = (), *, merge_at: int = MERGE_AT, chunk: int = MERGE_CHUNK) -> None:
        self.ids: set[str] = set(ids)
        self.merge_at = merge_at
        self.min_chunk = chunk
        self.run: list[str] = []
        self.pos = 0
        self.run_mark = 0  # the events' seq the run covers: the dedup table's mark once it is merged

    def __len__(self) -> int:
        return len(self.ids)

    def chunk(self, added: int) -> list[str]:
        """The ids of the run to merge with a batch that adds ``added`` QoS 1 ids (none when no run is going)."""
        size = max(self.min_chunk, 2 * added)
        return self.run[self.pos : self.pos + size]

    def ends(self, chunk: Sequence[str]) -> bool:
        """Whether ``chunk`` (from :meth:`chunk`) is the run's last."""
        return bool(chunk) and self.pos + len(chunk) >= len(self.run)

    def committed(self, chunk: Sequence[str], added: Iterable[str], mark: Callable[[], int]) -> bool:
        """The batch that wrote ``chunk`` and stored the QoS 1 ids ``added`` committed; ``mark()`` reads the events'
        last seq (only when a run begins). Whether a run began."""
        if chunk:
            self.pos += len(chunk)
            self.ids.difference_update(chunk)
            if self.pos >= len(self.run):
                self.run, self.pos = [], 0
        self.ids.update(added)
        if self.run or len(self.ids) < self.merge_at:
            return False
        self.run, self.pos, self.run_mark = sorted(self.ids), 0, mark()
        return True


class Store:
    """The agent's database. ``async with Store(path) as store:``."""

    #: Whether a snapshot may be written a slice of users at a time (each user's row has its own mark).
    sliced_snapshots: ClassVar[bool] = True

    def __init__(self, path: str | Path, *, cipher: HealthCipher | None = None, max_mb: float = 0) -> None:
        self.path = Path(path)
        self.seal = HealthSeal(cipher, str(self.path))  # health payloads, per-user state and context at rest
        self.max_mb = max_mb  # a cap on the file's size (SQLite's max_page_count; 0: none)
        self._max_pages = 0  # that cap in pages, once open
        self._db: aiosqlite.Connection | None = None
        self._writer: sqlite3.Connection | None = None
        self._checkpoint: asyncio.Task[None] | None = None
        self._checkpointed = time.monotonic()
        self._catch_up = False  # a background checkpoint ended: the writer finishes it before its next transaction
        self._caught_up = time.monotonic()  # when the writer last did
        self.unmerged = Unmerged()  # the QoS 1 ids not yet in the dedup table (read back on open: _read_unmerged)

    @property
    def db(self) -> aiosqlite.Connection:
        """The open read connection (aiosqlite, autocommit)."""
        if self._db is None:
            raise StoreError("the store is not open")
        return self._db

    @property
    def writer(self) -> sqlite3.Connection:
        """The connection every write goes through (plain sqlite3, used on the event loop's thread only)."""
        if self._writer is None:
            raise StoreError("the store is not open")
        return self._writer

    async def __aenter__(self) -> Self:
        try:
            private_dir(self.path.parent)
            private_file(self.path)  # 0600 before SQLite writes a byte; its -wal and -shm files take the same mode
            self._db = await aiosqlite.connect(self.path, isolation_level=None)
            await self.db.execute("PRAGMA journal_mode=WAL")
            await self.db.execute("PRAGMA synchronous=NORMAL")
            await self.db.execute("PRAGMA foreign_keys=ON")
            await self._migrate()
            await self.db.execute(_HOURLY_TABLE)  # once per open: a database of an agent of before has none yet
            await self.db.execute(_HOURLY_INDEX)
            self._writer = sqlite3.connect(self.path, isolation_level=None, timeout=5.0)
            self._writer.execute("PRAGMA synchronous=NORMAL")
            self._writer.execute("PRAGMA foreign_keys=ON")
            self._writer.execute("PRAGMA wal_autocheckpoint=0")  # checkpoints run off the loop: _maybe_checkpoint
            self._writer.execute(f"PRAGMA journal_size_limit = {WAL_KEEP_BYTES}")  # the log's file, once started over
            if self.max_mb > 0:  # past it every write fails with SQLITE_FULL, as on a full disk
                page = int(self._writer.execute("PRAGMA page_size").fetchone()[0])
                pages = max(1, int(self.max_mb * 1024 * 1024 / page))
                self._writer.execute(f"PRAGMA max_page_count = {pages}")
                self._max_pages = pages
            self._read_unmerged()
        except (sqlite3.Error, OSError, StoreError) as exc:
            await self._close()  # close aiosqlite's thread now, not when the event loop is gone
            if isinstance(exc, StoreError):
                raise
            raise StoreError(f"cannot open the agent's database {self.path}: {exc}") from exc
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._close()

    async def _close(self) -> None:
        if self._checkpoint is not None:
            await self._checkpoint  # it logs its errors rather than raise them
            self._checkpoint = None
        writer, self._writer = self._writer, None
        db, self._db = self._db, None
        try:
            if writer is not None:
                writer.close()
        finally:
            if db is not None:
                await db.close()

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
        return int(await self.scalar("PRAGMA user_version") or 0)

    @contextlib.contextmanager
    def _transaction(self, what: str) -> Iterator[sqlite3.Connection]:
        """One write transaction on the writer connection; a SQLite error becomes :class:`StoreError`."""
        con = self.writer
        try:
            if self._catch_up:  # between two transactions: see _checkpoint_wal
                self._catch_up = False
                self._caught_up = time.monotonic()
                con.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            con.execute("BEGIN IMMEDIATE")
            try:
                yield con
            except BaseException:
                if con.in_transaction:
                    con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
        except sqlite3.Error as exc:
            raise StoreError(f"could not store {what}: {exc}") from exc
        self._maybe_checkpoint()

    def _maybe_checkpoint(self) -> None:
        """After a write: start a passive checkpoint on aiosqlite's thread if the last one is old and done."""
        now = time.monotonic()
        if now - self._checkpointed < CHECKPOINT_EVERY_S or (self._checkpoint and not self._checkpoint.done()):
            return
        self._checkpointed = now
        self._checkpoint = asyncio.get_running_loop().create_task(self._checkpoint_wal())

    async def _checkpoint_wal(self) -> None:
        """Copy the log into the database off the event loop; the next transaction finishes the copy on the writer.

        SQLite writes the log again from its start only when a write transaction begins on a log that is wholly
        copied. Under a steady stream of batches that never happened: each transaction added frames while this
        checkpoint ran, so the log grew for as long as the agent ran (3.1 GB in 5.5 minutes at 1,000 users, 5.3
        times the database). The writer now copies what came meanwhile before its next ``BEGIN``, which then starts
        the log over; ``journal_size_limit`` gives the disk back. That catch-up is fsync-bound (7 ms of the event
        loop at the median, up to 18 ms, at 2,500 users, for the ~50 frames that came meanwhile), so it follows one
        checkpoint in :data:`CATCH_UP_EVERY_S` seconds' worth rather than each.
        """
        try:
            async with self.db.execute("PRAGMA wal_checkpoint(PASSIVE)") as cur:
                await cur.fetchall()
        except (sqlite3.Error, StoreError, ValueError) as exc:  # closed meanwhile, or the disk is failing
            get_logger("store").warning("checkpoint_failed", db=str(self.path), error=str(exc))
            return
        self._catch_up = time.monotonic() - self._caught_up >= CATCH_UP_EVERY_S

    # ------------------------------------------------------------------ the batch transaction

    async def prune_health(self, before_wall_ms: int, *, limit: int = 500, hourly_before_ms: int | None = None) -> int:
        """Retention (:meth:`agent.storage.AgentStore.prune_health`): the redacted copy replaces the payload in its
        row; the hourly aggregates go to ``health_hourly`` (count, sum, min, max per user, field and hour of sample
        time). Synchronous on the writer connection, like every write: it reads only the events due, from
        ``health_due`` (migration v9), never the log."""
        with self._transaction("the health retention") as con:
            rows = con.execute(
                "SELECT h.seq, e.id, e.topic, e.user, e.payload FROM health_due h JOIN events e ON e.seq = h.seq"
                " WHERE h.received_wall_ms < ? ORDER BY h.received_wall_ms LIMIT ?",
                (before_wall_ms, limit),
            ).fetchall()
            hourly: Readings = {}
            redacted = [
                (self.seal.redact(event_id, topic, user, bytes(stored), hourly), seq)
                for seq, event_id, topic, user, stored in rows
            ]
            con.executemany("UPDATE events SET payload = ? WHERE seq = ?", redacted)
            con.executemany("DELETE FROM health_due WHERE seq = ?", [(seq,) for seq, *_ in rows])
            for (user, metric, hour), values in hourly.items():
                row = con.execute(
                    "SELECT data FROM health_hourly WHERE user = ? AND metric = ? AND hour_ms = ?", (user, metric, hour)
                ).fetchone()
                agg = fold(None if row is None else self.seal.open_hour(row[0], user, metric, hour), values)
                con.execute(
                    "INSERT INTO health_hourly (user, metric, hour_ms, data) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT(user, metric, hour_ms) DO UPDATE SET data = excluded.data",
                    (user, metric, hour, self.seal.seal_hour(agg, user, metric, hour)),
                )
            if hourly_before_ms is not None:
                con.execute("DELETE FROM health_hourly WHERE hour_ms < ?", (hourly_before_ms,))
        return len(rows)

    async def prune_log(self, before_wall_ms: int | None, *, limit: int = LOG_PRUNE_CHUNK) -> int:
        """Retention of the events log (:meth:`agent.storage.AgentStore.prune_log`).

        Deletes, oldest first, at most ``limit`` events received before ``before_wall_ms`` (None: none by age), and
        the oldest whatever their age while the file's pages in use pass :data:`LOG_PRESSURE` of ``max_mb``. Only
        events no restart needs (:data:`_PRUNABLE_SQL`); with them their ids leave the dedup table (the dedup's
        horizon is the log's), their LLM resolutions and their place on the health retention's list. Reads the
        log's first ``limit`` rows by its key, never the log."""
        with self._transaction("the log's retention") as con:
            upto = con.execute(_PRUNABLE_SQL).fetchone()[0]
            if upto is None or upto < 1:
                return 0
            pressed = self._pressed(con)
            rows = con.execute(
                "SELECT seq, received_wall_ms FROM events WHERE seq <= ? ORDER BY seq LIMIT ?", (upto, limit)
            ).fetchall()
            last = 0
            for seq, received in rows:
                if not pressed and (before_wall_ms is None or received >= before_wall_ms):
                    break
                last = seq
            if not last:
                return 0
            con.execute("DELETE FROM dedup WHERE id IN (SELECT id FROM events WHERE seq <= ? AND qos > 0)", (last,))
            if con.execute("SELECT 1 FROM resolutions LIMIT 1").fetchone():  # (an LLM resolver's; a search each)
                con.execute("DELETE FROM resolutions WHERE event_id IN (SELECT id FROM events WHERE seq <= ?)", (last,))
            con.execute("DELETE FROM health_due WHERE seq <= ?", (last,))
            return int(con.execute("DELETE FROM events WHERE seq <= ?", (last,)).rowcount)

    def _pressed(self, con: sqlite3.Connection) -> bool:
        """Whether the file's pages in use passed :data:`LOG_PRESSURE` of ``max_mb`` (never without a cap)."""
        if not self._max_pages:
            return False
        pages = int(con.execute("PRAGMA page_count").fetchone()[0])
        free = int(con.execute("PRAGMA freelist_count").fetchone()[0])
        return pages - free > LOG_PRESSURE * self._max_pages

    async def health_hourly(self, user: str) -> list[tuple[str, int, Hourly]]:
        """The hourly aggregates of a user: ``(metric, hour_ms, {n, sum, min, max})``, oldest first."""
        async with self._reading("the hourly aggregates") as db:
            rows = await db.execute_fetchall(
                "SELECT metric, hour_ms, data FROM health_hourly WHERE user = ? ORDER BY hour_ms, metric", (user,)
            )
        return [(str(m), int(h), self.seal.open_hour(data, user, str(m), int(h))) for m, h, data in rows]

    async def known(self, ids: Iterable[str]) -> set[str]:
        """Which of these events were already processed (the dedup check), by envelope id alone: a device keeps the
        id of an event across its retries, even when it stamps a fresh ``ts``. Only events delivered at QoS 1 are
        looked up and found (migration v10): the contract deduplicates those; a QoS 0 message comes at most once.
        Those stored lately are held in memory (v11: :class:`Unmerged`); the rest are looked up in the dedup table."""
        held = self.unmerged.ids
        asked = list(ids)
        found = {key for key in asked if key in held}
        wanted = [key for key in asked if key not in held] if found else asked
        con = self.writer
        try:
            for i in range(0, len(wanted), _KNOWN_CHUNK):
                chunk = wanted[i : i + _KNOWN_CHUNK]
                size = 1 << (len(chunk) - 1).bit_length()  # the next power of two; the padding repeats an id
                found.update(row[0] for row in con.execute(_known_sql(size), chunk + chunk[:1] * (size - len(chunk))))
        except sqlite3.Error as exc:
            raise StoreError(f"could not check {len(wanted)} ids against the stored events: {exc}") from exc
        return found

    async def commit_batch(
        self,
        events: Sequence[EventRow],
        actions: Sequence[ActionRow],
        tasks: Sequence[TaskRecord],
        alerts: Sequence[tuple[str, str, str, int]],
        ticks: Sequence[TickRow] = (),
        resolutions: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Store one batch atomically (events, the actions they caused, tasks, alerts, ticks, resolutions), and the
        next chunk of the dedup table's merge (:class:`Unmerged`). The caller asked :meth:`known` first: the events
        are stored as given."""
        if not (events or actions or tasks or alerts or ticks or resolutions):
            return
        unmerged = self.unmerged
        added = [row.id for row in events if row.qos]
        merge = unmerged.chunk(len(added))
        with self._transaction(f"a batch of {len(events)} events") as con:
            due = any(row.type in HEALTH_EVENT_TYPES for row in events)
            # the log's end before this batch: where its ticks go, and after which its health events are found
            last = int(con.execute(_LAST_SEQ_SQL).fetchone()[0]) if ticks or due else 0
            if ticks:
                con.executemany(
                    "INSERT INTO ticks (after_event_seq, at_ms, users) VALUES (?, ?, ?)",
                    [(last, t.at_ms, None if t.users is None else json.dumps(t.users)) for t in ticks],
                )
            if events:
                if self.seal.cipher is not None:
                    events = [self.seal.seal_event(row) for row in events]
                con.executemany(_INSERT_EVENT, events)  # an EventRow is a tuple in column order
                if due:
                    con.execute(_INSERT_DUE, (last,))
            if actions:
                con.executemany(
                    "INSERT OR IGNORE INTO actions (id, topic, user, kind, device, type, corr, reason, created_ms,"
                    " created_wall_ms, payload) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    [
                        (a.id, a.topic, a.user, a.kind, a.device, a.type, a.corr, a.reason, a.created_ms,
                         a.created_wall_ms, a.payload)
                        for a in actions
                    ],
                )  # fmt: skip
            if tasks:
                con.executemany(
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
            if alerts:
                con.executemany("INSERT INTO alerts (rule, user, text, at_ms) VALUES (?,?,?,?)", alerts)
            if resolutions:
                con.executemany("INSERT OR REPLACE INTO resolutions (event_id, intent) VALUES (?,?)", resolutions)
            if merge:
                con.executemany(MERGE_SQL, [(key,) for key in merge])
                if unmerged.ends(merge):
                    con.execute(_MARK_SQL, (unmerged.run_mark,))
        unmerged.committed(merge, added, self._last_seq)

    def _read_unmerged(self) -> None:
        """The QoS 1 ids stored after the dedup table's mark, from the events (on open, and after an erasure)."""
        ids = (row[0] for row in self.writer.execute(_UNMERGED_SQL))
        self.unmerged = Unmerged(ids, merge_at=MERGE_AT, chunk=MERGE_CHUNK)

    def _last_seq(self) -> int:
        """The events' last seq (the writer's view)."""
        return int(self.writer.execute(_LAST_SEQ_SQL).fetchone()[0])

    async def mark_published(self, ids: Sequence[str], wall_ms: int) -> None:
        """Record that these actions reached the broker (at ``wall_ms``)."""
        if ids:
            with self._transaction(f"{len(ids)} published marks") as con:
                con.executemany("UPDATE actions SET published_wall_ms = ? WHERE id = ?", [(wall_ms, i) for i in ids])

    async def mark_acks(self, acks: Sequence[tuple[str, str, str, int]]) -> None:
        """Record device acks: ``(action_id, status, detail, at_ms)``."""
        if acks:
            with self._transaction(f"{len(acks)} device acks") as con:
                con.executemany(
                    "UPDATE actions SET status = ?, detail = ?, acked_ms = ? WHERE id = ?",
                    [(status, detail, at, action_id) for action_id, status, detail, at in acks],
                )

    async def unpublished(self) -> list[tuple[str, str, bytes]]:
        """Actions stored but not known to be published: ``(id, topic, payload)`` in creation order."""
        rows = await self.rows("SELECT id, topic, payload FROM actions WHERE published_wall_ms IS NULL ORDER BY rowid")
        return [(r[0], r[1], bytes(r[2])) for r in rows]

    # ------------------------------------------------------------------ core snapshots and replay

    async def save_core(
        self,
        state: dict[str, Any],
        tick_ms: int,
        wall_ms: int,
        *,
        round_start: Mark | None = None,
        complete: bool = True,
    ) -> Mark:
        """Snapshot users of the core, each with the mark of what it includes (everything stored so far).

        A snapshot is written in rounds: the users changed since the last round, a slice at a time (a slice holds the
        event loop, so the runtime keeps it short). ``state["users"]`` holds one slice (``export_users``); every
        other user's row stays as it was, which is still their state as of their own mark. When ``complete``, the
        round that began at ``round_start`` (None: with this slice) is written entirely, and the replay after a
        restart can start there: every user with an event since then has a row that covers it.

        Returns:
            the mark of this slice (the caller keeps the first as ``round_start`` for the rest of the round).
        """
        users: Mapping[str, Any] = state.get("users", {})
        head = {k: v for k, v in state.items() if k != "users"}
        text = json.dumps(head, ensure_ascii=False, separators=(",", ":"))
        with self._transaction("the core snapshot") as con:
            row = con.execute(
                "SELECT (SELECT COALESCE(MAX(seq), 0) FROM events), (SELECT COALESCE(MAX(n), 0) FROM ticks)"
            ).fetchone()
            mark = Mark(int(row[0]), int(row[1]))
            con.executemany(
                "INSERT INTO core_users (user, state, event_seq, tick_n) VALUES (?, ?, ?, ?)"
                " ON CONFLICT(user) DO UPDATE SET state=excluded.state, event_seq=excluded.event_seq,"
                " tick_n=excluded.tick_n",
                (
                    (
                        user,
                        self.seal.seal_text(json.dumps(data, ensure_ascii=False, separators=(",", ":")), user),
                        mark.event_seq,
                        mark.tick_n,
                    )
                    for user, data in users.items()
                ),
            )
            con.execute(
                "INSERT INTO core_state (id, state, event_seq, tick_ms, saved_wall_ms) VALUES (1, ?, 0, ?, ?)"
                " ON CONFLICT(id) DO UPDATE SET state=excluded.state, tick_ms=excluded.tick_ms,"
                " saved_wall_ms=excluded.saved_wall_ms",
                (text, tick_ms, wall_ms),
            )
            if complete:
                replay_from = (round_start or mark).event_seq
                con.execute("UPDATE core_state SET event_seq = ? WHERE id = 1", (replay_from,))
                con.execute("DELETE FROM ticks WHERE after_event_seq < ?", (replay_from,))
        return mark

    async def load_core(self) -> Snapshot | None:
        """The last core snapshot, or None."""
        head = await self.rows("SELECT state, event_seq, tick_ms FROM core_state WHERE id = 1")
        if not head:
            return None
        row = head[0]
        state: dict[str, Any] = json.loads(row[0])  # a snapshot written before v3 holds every user in here
        marks: dict[str, Mark] = {}
        users: dict[str, Any] = {}
        for user, data, event_seq, tick_n in await self.rows("SELECT user, state, event_seq, tick_n FROM core_users"):
            users[user] = json.loads(self.seal.open_text(data, user))
            marks[user] = Mark(int(event_seq), int(tick_n))
        if users:
            state.setdefault("users", {}).update(users)
        return Snapshot(state, int(row[1]), int(row[2]), marks)

    async def since(self, event_seq: int) -> list[tuple[str, Any, int]]:
        """What happened after a snapshot, in order: ``("event", EventRow, seq)`` and ``("tick", TickRow, n)``."""
        out: list[tuple[int, int, tuple[str, Any, int]]] = []
        for r in await self.rows(
            "SELECT seq, id, topic, user, kind, device, channel, type, ts, src_ts, dev_seq, corr, handled_ms,"
            " received_wall_ms, qos, retain, payload FROM events WHERE seq > ? ORDER BY seq",
            event_seq,
        ):
            row = EventRow(
                id=r[1], topic=r[2], user=r[3], kind=r[4], device=r[5], channel=r[6], type=r[7], ts=r[8],
                src_ts=r[9], dev_seq=r[10], corr=r[11], handled_ms=r[12], received_wall_ms=r[13], qos=r[14],
                retain=bool(r[15]), payload=self.seal.open(bytes(r[16]), r[1]),
            )  # fmt: skip
            out.append((int(r[0]), 0, ("event", row, int(r[0]))))
        for r in await self.rows(
            "SELECT after_event_seq, n, at_ms, users FROM ticks WHERE after_event_seq >= ? ORDER BY n", event_seq
        ):
            users = None if r[3] is None else tuple(json.loads(r[3]))
            out.append((int(r[0]), 1 + int(r[1]), ("tick", TickRow(int(r[2]), users), int(r[1]))))
        out.sort(key=lambda x: (x[0], x[1]))
        return [item for _, _, item in out]

    async def last_seqs(self, recent: int = 100_000) -> dict[DeviceKey, int]:
        """The ``seq`` of each device's last handled event among the ``recent`` last events stored, by (user, kind,
        device): where a restarted agent's per-device order gate takes up (agent/ordering.py)."""
        out: dict[DeviceKey, int] = {}
        for user, kind, device, dev_seq in await self.rows(
            "SELECT user, kind, device, dev_seq FROM events WHERE seq > (SELECT COALESCE(MAX(seq), 0) FROM events) - ?"
            " AND channel = 'evt' AND dev_seq > 0 ORDER BY seq",
            recent,
        ):
            if user and kind and device:
                out[(user, kind, device)] = int(dev_seq)  # the later one wins
        return out

    async def resolutions(self) -> dict[str, str]:
        """Resolved intents (JSON) by utterance event id."""
        return {str(r[0]): str(r[1]) for r in await self.rows("SELECT event_id, intent FROM resolutions")}

    async def save_contexts(self, snapshots: Sequence[tuple[str, str, int]]) -> None:
        """Keep the last context snapshot per user: ``(user, json, at_ms)``."""
        if snapshots:
            with self._transaction(f"{len(snapshots)} context snapshots") as con:
                con.executemany(
                    "INSERT INTO context (user, snapshot, updated_ms) VALUES (?,?,?) ON CONFLICT(user) DO UPDATE SET"
                    " snapshot=excluded.snapshot, updated_ms=excluded.updated_ms",
                    [(user, self.seal.seal_text(text, user), at) for user, text, at in snapshots],
                )

    async def contexts(self) -> dict[str, tuple[str, int]]:
        """The last context snapshot per user: ``(json, at_ms)``."""
        rows = await self.rows("SELECT user, snapshot, updated_ms FROM context")
        return {str(u): (self.seal.open_text(text, str(u)), int(at)) for u, text, at in rows}

    # ------------------------------------------------------------------ health data and privacy

    async def health_samples(self) -> dict[str, tuple[int, int]]:
        """Per health event type: how many stored payloads hold their values, and how many of those this store can
        read (sealed ones need the key; redacted ones are not counted)."""
        types = sorted(HEALTH_EVENT_TYPES)
        marks = ",".join("?" * len(types))
        out: dict[str, tuple[int, int]] = {}
        rows = await self.rows(
            f"SELECT id, type, topic, payload FROM events WHERE type IN ({marks}) AND instr(payload, ?) = 0",  # noqa: S608
            *types, REDACTED.encode(),
        )  # fmt: skip
        for event_id, kind, topic, payload in rows:
            held, readable = out.get(kind, (0, 0))
            out[kind] = (held + 1, readable + self.seal.readable(topic, bytes(payload), event_id))
        return out

    async def forget(self, user: str) -> dict[str, int]:
        """Erase every row of ``user`` (:func:`erase_user`), then rewrite the file so that no deleted page keeps
        them."""
        with self._transaction(f"the erasure of {user}") as con:
            removed = erase_user(con, user)
        try:
            self._read_unmerged()  # without the user's ids
            self.writer.execute("VACUUM")
        except sqlite3.Error as exc:
            raise StoreError(f"could not compact {self.path} after erasing a user: {exc}") from exc
        return removed

    # ------------------------------------------------------------------ reading (report, benches, tests)

    async def tasks(self) -> list[TaskRecord]:
        """Every task, oldest first."""
        rows = await self.rows(
            "SELECT task_id, user, skill, state, slots, rounds, slots_autofilled, slots_asked, confirm_modality,"
            " created_ms, updated_ms FROM tasks ORDER BY created_ms, task_id"
        )
        return [
            TaskRecord(r[0], r[1], r[2], r[3], json.loads(r[4]), int(r[5]), tuple(json.loads(r[6])),
                    tuple(json.loads(r[7])), r[8], int(r[9]), int(r[10]))
            for r in rows
        ]  # fmt: skip

    async def count_events(self, channel: str | None = None) -> int:
        """How many events are stored (of one channel)."""
        if channel is None:
            return int(await self.scalar("SELECT COUNT(*) FROM events") or 0)
        return int(await self.scalar("SELECT COUNT(*) FROM events WHERE channel = ?", channel) or 0)

    async def message_counts(self) -> dict[str, int]:
        """Stored events per :func:`agent.storage.message_class`."""
        counts: Counter[str] = Counter()
        for channel, topic, n in await self.rows("SELECT channel, topic, COUNT(*) FROM events GROUP BY channel, topic"):
            counts[message_class(str(channel), str(topic))] += int(n)
        return dict(sorted(counts.items()))

    async def alert_counts(self) -> dict[str, int]:
        """Stored alerts per rule."""
        rows = await self.rows("SELECT rule, COUNT(*) FROM alerts GROUP BY rule ORDER BY rule")
        return {str(rule): int(n) for rule, n in rows}

    async def action_status_counts(self) -> dict[str, int]:
        """Stored actions per ack status."""
        return {str(st): int(n) for st, n in await self.rows("SELECT status, COUNT(*) FROM actions GROUP BY status")}

    async def first_action_latencies(self) -> list[tuple[str, float | None]]:
        """See :meth:`agent.storage.AgentStore.first_action_latencies`."""
        rows = await self.rows(
            "SELECT e.id, MIN(CASE WHEN a.created_ms = e.handled_ms THEN a.published_wall_ms END)"
            " - e.received_wall_ms FROM actions a JOIN events e ON e.id = a.corr"
            " WHERE a.published_wall_ms IS NOT NULL AND e.channel = 'evt' GROUP BY e.id"
        )
        return [(str(event_id), None if latency is None else float(latency)) for event_id, latency in rows]

    async def stored_counts(self) -> dict[str, int]:
        """Rows per table: ``events``, ``actions``, ``tasks``, ``alerts``, ``context``."""
        return {
            table: int(await self.scalar(f"SELECT COUNT(*) FROM {table}") or 0)  # noqa: S608 (constant names)
            for table in ("events", "actions", "tasks", "alerts", "context")
        }

    @contextlib.asynccontextmanager
    async def _reading(self, what: str) -> AsyncIterator[aiosqlite.Connection]:
        """A read on the aiosqlite connection; a SQLite error becomes :class:`StoreError`."""
        try:
            yield self.db
        except sqlite3.Error as exc:
            raise StoreError(f"could not read {what} from {self.path}: {exc}") from exc

    async def scalar(self, sql: str, *args: Any) -> Any:
        """One value of a query. SQLite only (tests, debugging): not part of :class:`~agent.storage.AgentStore`;
        product code uses its domain queries."""
        async with self._reading("a value") as db:
            rows = await db.execute_fetchall(sql, args)
        return next(iter(rows), (None,))[0]

    async def rows(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """All rows of a query. SQLite only, as :meth:`scalar`."""
        async with self._reading("rows") as db:
            return [tuple(r) for r in await db.execute_fetchall(sql, args)]


#: Tables with a ``user`` column, deleted from by :func:`erase_user` (events last: resolutions refer to them).
USER_TABLES = ("actions", "tasks", "alerts", "context", "core_users", "events")


def erase_user(con: sqlite3.Connection, user: str) -> dict[str, int]:
    """Delete every row of ``user`` (inside the caller's transaction), the user from the saved core state and from
    the stored ticks' user lists; rows deleted per table (``core_state`` 1 when the saved state held the user)."""
    removed: dict[str, int] = {}
    con.execute("DELETE FROM health_due WHERE seq IN (SELECT seq FROM events WHERE user = ?)", (user,))
    if con.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'dedup'").fetchone():  # v11 on
        con.execute("DELETE FROM dedup WHERE id IN (SELECT id FROM events WHERE user = ? AND qos > 0)", (user,))
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
    removed["ticks"] = 0
    for tick, users in con.execute("SELECT n, users FROM ticks WHERE users IS NOT NULL").fetchall():
        names = json.loads(users)
        if user in names:
            rest = [u for u in names if u != user]
            if rest:
                con.execute("UPDATE ticks SET users = ? WHERE n = ?", (json.dumps(rest), tick))
            else:
                con.execute("DELETE FROM ticks WHERE n = ?", (tick,))
            removed["ticks"] += 1
    if con.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'health_hourly'").fetchone():
        removed["health_hourly"] = con.execute("DELETE FROM health_hourly WHERE user = ?", (user,)).rowcount
    return removed
