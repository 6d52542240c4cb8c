"""The background tasks of a long-lived object, owned by one :class:`asyncio.TaskGroup`.

An object that runs tasks enters a :class:`TaskScope` in its ``__aenter__`` (an ``AsyncExitStack`` keeps it) and
leaves it in its ``__aexit__``: every task it started that is still running is cancelled then and awaited, and any
task's failure comes out of the exit. A task that fails earlier cancels the owner's task at once (the TaskGroup's
rule), so nothing fails unseen while the owner carries on.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Coroutine, Iterable, Iterator
from types import TracebackType
from typing import Any, Self, TypeVar

T = TypeVar("T")


class TaskScope:
    """The tasks of one owner. ``async with TaskScope() as tasks: tasks.start(job(), name="...")``."""

    __slots__ = ("_group", "_running")

    def __init__(self) -> None:
        self._group: asyncio.TaskGroup | None = None
        self._running: set[asyncio.Task[Any]] = set()

    async def __aenter__(self) -> Self:
        group = asyncio.TaskGroup()
        await group.__aenter__()
        self._group = group
        return self

    def start(self, job: Coroutine[Any, Any, T], *, name: str) -> asyncio.Task[T]:
        """Run ``job`` as a task of this scope (ended at the latest when the scope is left)."""
        if self._group is None:
            job.close()
            raise RuntimeError(f"task {name!r} started outside its scope")
        task = self._group.create_task(job, name=name)
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return task

    def __len__(self) -> int:
        return len(self._running)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        group, self._group = self._group, None
        if group is None:
            return
        cancelled = await cancel_until_done(self._running)  # the scope is over: what still runs stops
        failure: BaseException | None = None
        try:
            await group.__aexit__(exc_type, exc, tb)
        except BaseExceptionGroup as errors:
            # The body's own exception goes on as it is; a lone failure of a task comes out as itself.
            rest = errors.subgroup(lambda e: not isinstance(e, BaseExceptionGroup) and e is not exc)
            if rest is not None:
                failure = rest.exceptions[0] if len(rest.exceptions) == 1 else rest
        if failure is not None:
            raise failure
        if cancelled is not None:  # we were cancelled ourselves while the tasks stopped: that goes on
            raise cancelled


#: Seconds between cancellations of a task that has not stopped yet: longer than any clean stop takes (a bus says
#: goodbye and waits for its acknowledgements within 4 s), so a task's own clean-up is not cut short.
RECANCEL_S = 10.0


async def cancel_until_done(
    tasks: Iterable[asyncio.Task[Any]], every_s: float | None = None
) -> asyncio.CancelledError | None:
    """Cancel ``tasks`` and wait until they are done, cancelling again every ``every_s`` (default ``RECANCEL_S``)
    those that are not: on
    Python 3.11 ``asyncio.wait_for`` (in aiomqtt, redis-py) swallows a cancellation that arrives together with the
    result it waits for (bpo-42130), and a task cancelled once would run on. Returns our own cancellation if one
    came meanwhile (the caller re-raises it once the tasks are done)."""
    pending = {t for t in tasks if not t.done()}
    for task in pending:
        task.cancel()
    cancelled: asyncio.CancelledError | None = None
    while pending:
        try:
            _, pending = await asyncio.wait(pending, timeout=RECANCEL_S if every_s is None else every_s)
        except asyncio.CancelledError as exc:  # kept and re-raised by the caller: the tasks must end first
            cancelled = exc
        for task in pending:
            task.cancel()
    return cancelled


async def cancel_and_wait(*tasks: asyncio.Task[Any]) -> None:
    """Stop helper tasks of our own: cancel them and wait until they are done.

    Unlike ``task.cancel()`` then ``await`` under ``suppress(CancelledError)``, this does not swallow a cancellation
    of the caller that comes meanwhile: it goes on once the tasks are done. A task that had failed before it was
    cancelled raises its failure here.
    """
    cancelled = await cancel_until_done(tasks)
    if cancelled is not None:
        raise cancelled
    for task in tasks:
        failure = None if task.cancelled() else task.exception()
        if failure is not None:
            raise failure


class SignalStop:
    """SIGINT and SIGTERM cancel the task that made this (a second signal cuts a slow clean-up short too).

    In that task's ``except asyncio.CancelledError``, :meth:`taken` tells the stop asked for (and takes its
    cancellation back, ``Task.uncancel``) from any other cancellation, which the caller re-raises.
    """

    __slots__ = ("_task", "signals")

    def __init__(self) -> None:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("SignalStop needs a running task")
        self._task = task
        self.signals = 0  # how many came
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._stop)

    def _stop(self) -> None:
        self.signals += 1
        self._task.cancel()

    def taken(self) -> bool:
        """Whether the cancellation being handled is the stop a signal asked for; if so, it is taken back."""
        for _ in range(self.signals):
            self._task.uncancel()
        return self.signals > 0


@contextlib.contextmanager
def cancellation_kept() -> Iterator[None]:
    """Raise :class:`asyncio.CancelledError` at the end of the block if the task was cancelled inside it and a
    library swallowed that cancellation.

    On Python 3.11, ``asyncio.wait_for`` returns the result instead of raising when the task is cancelled just as
    the awaited operation completes (gh-86296, fixed in 3.12). redis-py sends every command through such a
    ``wait_for`` (its ``socket_timeout``), so a task cancelled while it talks to Redis often simply goes on: of 1,280
    tasks cancelled in the middle of an ``HGETALL`` (redis-py 8.2, Python 3.11.7), 704 went on. A stopped cluster
    bucket then ran for 10 s more and held up its hand-over (``tests/cluster/test_redis_store.py``).
    The task's own count of cancellation requests (:meth:`asyncio.Task.cancelling`) still says so, and this reads
    it: a cancellation that arrived in the block and did not come out of it is raised here. One that was delivered
    and handled on purpose (``asyncio.timeout`` turning it into ``TimeoutError``) has been taken back from that count
    (``uncancel``), so it is not raised again.
    """
    task = asyncio.current_task()
    before = task.cancelling() if task is not None else 0
    yield
    if task is not None and task.cancelling() > before:
        raise asyncio.CancelledError


def raise_if_cancelling() -> None:
    """In a task that never handles a cancellation on purpose: raise one that a library swallowed earlier (see
    :func:`cancellation_kept`)."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def first_of(*jobs: Coroutine[Any, Any, object], name: str = "first_of") -> None:
    """Run the jobs until the first one ends, then cancel the others; a job's failure comes out as itself.

    ``name``: the tasks are named ``{name}.0``, ``{name}.1``, ...
    """
    async with TaskScope() as scope:
        tasks = [scope.start(job, name=f"{name}.{i}") for i, job in enumerate(jobs)]
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for task in done:
        task.result()
