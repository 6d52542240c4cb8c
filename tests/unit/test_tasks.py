"""A TaskScope owns an object's background tasks: none outlives it, no failure is lost, no cancellation swallowed."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import pytest

from schemas.tasks import TaskScope, cancel_and_wait, cancellation_kept, first_of, raise_if_cancelling


class Boom(Exception):
    pass


async def fail_soon() -> None:
    await asyncio.sleep(0)
    raise Boom("the task failed")


async def test_tasks_still_running_at_exit_are_cancelled_and_awaited() -> None:
    started = asyncio.Event()
    ended: list[str] = []

    async def forever() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        finally:
            ended.append("forever")

    async with TaskScope() as tasks:
        task = tasks.start(forever(), name="forever")
        await started.wait()
    assert task.cancelled()
    assert ended == ["forever"]
    assert len(tasks) == 0


async def test_a_failed_task_stops_the_owner_and_comes_out_of_the_exit_as_itself() -> None:
    reached: list[bool] = []

    async def owner() -> None:
        async with TaskScope() as tasks:
            tasks.start(fail_soon(), name="fails")
            await asyncio.wait_for(asyncio.Event().wait(), timeout=30)  # cancelled by the failure
            reached.append(True)

    with pytest.raises(Boom, match="the task failed"):
        await owner()
    assert not reached
    current = asyncio.current_task()
    assert current is not None
    assert current.cancelling() == 0  # the group's own cancellation of the owner is undone


async def test_two_failures_come_out_together() -> None:
    async def fail() -> None:
        raise Boom("one of two")

    async def owner() -> None:
        async with TaskScope() as tasks:
            tasks.start(fail(), name="a")
            tasks.start(fail(), name="b")
            await asyncio.wait_for(asyncio.Event().wait(), timeout=30)  # cancelled by the failures

    with pytest.raises(BaseExceptionGroup) as caught:
        await owner()
    assert len(caught.value.exceptions) == 2


async def test_the_body_exception_goes_on_unchanged() -> None:
    async def owner() -> None:
        async with TaskScope() as tasks:
            tasks.start(asyncio.Event().wait(), name="idle")
            raise KeyError("body")

    with pytest.raises(KeyError):
        await owner()


async def test_cancelling_the_owner_is_not_swallowed() -> None:
    inside = asyncio.Event()

    async def owner() -> None:
        async with TaskScope() as tasks:
            tasks.start(asyncio.Event().wait(), name="idle")
            inside.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(owner())
    await inside.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_a_task_started_outside_its_scope_is_refused() -> None:
    scope = TaskScope()
    job = asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="outside its scope"):
        scope.start(job, name="early")


async def test_first_of_ends_with_the_first_job_and_cancels_the_others() -> None:
    woken = asyncio.Event()
    ended: list[str] = []

    async def sleeper() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            ended.append("sleeper")

    async def waker() -> None:
        await woken.wait()

    woken.set()
    await first_of(sleeper(), waker())
    assert ended == ["sleeper"]
    with pytest.raises(Boom):
        await first_of(sleeper(), fail_soon())


async def test_a_task_that_swallows_its_first_cancellation_is_cancelled_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """Python 3.11's wait_for can swallow a cancellation that comes with its result (bpo-42130): the scope cancels
    what still runs again until it is done, instead of waiting for ever."""
    monkeypatch.setattr("schemas.tasks.RECANCEL_S", 0.05)
    started = asyncio.Event()
    cancellations: list[int] = []

    async def swallows_once() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancellations.append(1)
            me = asyncio.current_task()
            assert me is not None
            me.uncancel()  # as the 3.11 bug leaves it: the cancellation is gone
        await asyncio.Event().wait()  # runs on, until cancelled again

    async with asyncio.timeout(10):
        async with TaskScope() as scope:
            task = scope.start(swallows_once(), name="swallows-once")
            await started.wait()
    assert task.cancelled()
    assert cancellations == [1]


async def swallowing_call() -> str:
    """A library call that swallows a cancellation (as Python 3.11's wait_for does when the result is ready)."""
    try:
        await asyncio.sleep(10)
    except asyncio.CancelledError:
        return "result"
    return "late"


async def test_a_cancellation_swallowed_in_the_block_is_raised_at_its_end() -> None:
    after: list[str] = []

    async def job() -> None:
        with cancellation_kept():
            await swallowing_call()
        after.append("went on")  # pragma: no cover (must not run)

    task = asyncio.create_task(job())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert after == []


async def test_a_cancellation_handled_on_purpose_is_not_raised_again() -> None:
    async def job() -> str:
        with cancellation_kept():
            try:
                async with asyncio.timeout(0.01):  # its own cancellation, taken back as TimeoutError
                    await asyncio.sleep(10)
            except TimeoutError:
                return "timed out"
        return "not reached"  # pragma: no cover

    assert await asyncio.create_task(job()) == "timed out"


async def test_clean_up_after_a_delivered_cancellation_is_not_cut_short() -> None:
    cleaned: list[str] = []

    async def job() -> None:
        try:
            await asyncio.sleep(10)
        finally:  # the task is being cancelled (cancelling() == 1): the clean-up's own calls still complete
            with cancellation_kept():
                await asyncio.sleep(0)
            cleaned.append("saved")

    task = asyncio.create_task(job())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == ["saved"]


async def test_raise_if_cancelling_raises_a_swallowed_cancellation_later() -> None:
    async def job() -> None:
        await swallowing_call()
        raise_if_cancelling()

    task = asyncio.create_task(job())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    raise_if_cancelling()  # the test's own task: nothing pending


async def test_cancel_and_wait_stops_the_helpers_and_keeps_the_callers_own_cancellation() -> None:
    stopping = asyncio.Event()
    helpers: list[asyncio.Task[None]] = []
    carried_on: list[bool] = []

    async def slow_to_stop() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            stopping.set()
            await asyncio.sleep(10)  # its clean-up takes a while (the owner's own cancellation cuts it short)

    async def owner() -> None:
        helpers.append(asyncio.create_task(slow_to_stop()))
        await asyncio.sleep(0)  # the helper runs up to its wait
        await cancel_and_wait(*helpers)
        carried_on.append(True)  # must not happen: the owner was cancelled meanwhile

    task = asyncio.create_task(owner())
    await stopping.wait()  # the owner waits in cancel_and_wait for its helper's clean-up
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert helpers[0].done()  # no helper outlives its owner's wait
    assert not carried_on


async def test_cancel_and_wait_returns_for_cancelled_helpers_and_raises_a_helpers_failure() -> None:
    idle = asyncio.create_task(asyncio.Event().wait())
    failed = asyncio.create_task(fail_soon())
    await asyncio.wait([failed])  # it failed before it was stopped
    await cancel_and_wait(idle)
    assert idle.cancelled()
    with pytest.raises(Boom):
        await cancel_and_wait(failed)


SIGNAL_PROBE = """
import asyncio, json, os, signal
from schemas.tasks import SignalStop

async def stopped_by(cause: str) -> str:
    stop = SignalStop()
    try:
        if cause == "signal":
            os.kill(os.getpid(), signal.SIGTERM)
        else:
            asyncio.get_running_loop().call_soon(asyncio.current_task().cancel)
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        if not stop.taken():
            return "re-raised"
        return f"taken, still cancelling: {asyncio.current_task().cancelling()}"
    return "not stopped"

async def main() -> list[str]:
    return [await asyncio.create_task(stopped_by(cause)) for cause in ("signal", "other")]

print(json.dumps(asyncio.run(main())))
"""


def test_a_signal_stop_is_taken_back_and_any_other_cancellation_is_not() -> None:
    # In a process of its own: the probe sends SIGTERM to itself.
    done = subprocess.run([sys.executable, "-c", SIGNAL_PROBE], capture_output=True, text=True, check=True, timeout=60)
    assert json.loads(done.stdout) == ["taken, still cancelling: 0", "re-raised"]
