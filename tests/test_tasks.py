"""shared.tasks.cancel_and_wait: stubborn tasks end, the caller's own cancellation survives."""

from __future__ import annotations

import asyncio

from shared.tasks import cancel_and_wait


async def _swallows_one_cancellation(seen: list[str]) -> None:
    try:
        await asyncio.sleep(60)
    except asyncio.CancelledError:
        seen.append("swallowed")  # as redis-py can: the task carries on
    await asyncio.sleep(60)


async def _fails() -> None:
    raise ValueError("dropped")


async def test_a_task_that_swallowed_its_cancellation_is_cancelled_again() -> None:
    seen: list[str] = []
    stubborn = asyncio.create_task(_swallows_one_cancellation(seen))
    failing = asyncio.create_task(_fails())
    await asyncio.sleep(0)
    await cancel_and_wait([stubborn, failing])
    assert seen == ["swallowed"]
    assert stubborn.cancelled()
    assert isinstance(failing.exception(), ValueError)  # retrieved, not raised


async def test_the_callers_cancellation_is_raised_after_the_tasks_ended() -> None:
    seen: list[str] = []
    stubborn = asyncio.create_task(_swallows_one_cancellation(seen))
    await asyncio.sleep(0)
    stopper = asyncio.create_task(cancel_and_wait([stubborn]))
    await asyncio.sleep(0.1)  # the stopper waits for the stubborn task's second cancellation
    stopper.cancel()
    done, _ = await asyncio.wait({stopper}, timeout=10)
    assert stopper in done and stopper.cancelled()
    assert stubborn.done()
