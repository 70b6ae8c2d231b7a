"""Ending background tasks for good: the one way services cancel what they started.

It owns one rule, learnt from redis-py (see `shared.redis_link.guarded`): a library that catches
`CancelledError` mid-call can leave a cancelled task running. A stopping service must neither
hang on such a task nor lose its own cancellation while it waits.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

__all__ = ["cancel_and_wait"]

RECANCEL_AFTER = 1.0  # seconds a cancelled task may take before it is cancelled again


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel `tasks` and wait until every one has ended, whatever it ends with (they are being
    dropped: their exceptions are retrieved, not raised). A task still running a second after
    its cancellation swallowed it and is cancelled again. A cancellation of the caller while it
    waits is raised again at the end, never swallowed."""
    tasks = list(tasks)
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        try:
            _, pending = await asyncio.wait(pending, timeout=RECANCEL_AFTER)
        except asyncio.CancelledError:
            pending = {task for task in pending if not task.done()}  # raised again below
    for task in tasks:
        if not task.cancelled():
            task.exception()  # retrieved, so asyncio does not log it as never retrieved
    current = asyncio.current_task()
    if current is not None and current.cancelling():
        raise asyncio.CancelledError
