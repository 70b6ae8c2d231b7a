"""The lease is never held twice, with real processes: an active ingestor frozen past its lease
(SIGSTOP, as a long pause, a frozen VM or a partition would freeze it) is replaced by the
standby, and once it runs again it finds it lost the lease: no tick it publishes under its old
epoch reaches Redis after the first tick of the new holder's epoch.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Iterator

import httpx
import orjson
import pytest

from services.dev.topology import REDIS
from shared import redis_contract as rc
from shared.instruments import Mode
from tests.ingestor.conftest import Listener
from tests.support.stack import FAST_SETTINGS, Stack, running_stack
from tests.support.waiting import eventually
from tests.system.feed import FeedClient

pytestmark = pytest.mark.timeout(240)

KEYS = ["NSE_INDEX|Nifty 50", "NSE_EQ|INE002A01018"]
CHANNELS = [rc.tick_channel(Mode.LTPC, key) for key in KEYS]
NEW_TICKS = 20  # published by the new holder while the old one is frozen (its socket fills up)
# Long enough for the active's next lease renewal to be sent (it renews several times a TTL).
REDIS_FROZEN = int(FAST_SETTINGS["INGESTOR_LEASE_TTL_MS"]) / 1000 * 0.8


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with running_stack(gateways=1) as running:
        yield running


def epoch_of(payload: bytes) -> str:
    return str(orjson.loads(rc.split_tick(payload)[1])["epoch"])


async def state_of(stack: Stack, name: str) -> str:
    async with httpx.AsyncClient(timeout=5, trust_env=False) as http:
        return str((await http.get(stack.dev.urls[name] + "/healthz")).json().get("state"))


async def test_a_frozen_active_ingestor_never_publishes_after_its_successor(stack: Stack) -> None:
    async with FeedClient(stack.front_ws_url, KEYS, origin=stack.front_url) as client:
        await client.wait_live(5)  # the client's demand is in, ticks flow
        old = await stack.active_ingestor()
        assert old in stack.ingestors
        (new,) = [name for name in stack.ingestors if name != old]
        pids = stack.pids()
        async with Listener(stack.redis_url, CHANNELS) as ear:
            await eventually(lambda: len(ear.messages) >= 3, "ticks of the current holder")
            old_epoch = epoch_of(ear.messages[-1][1])

            def new_ticks() -> int:
                return sum(epoch_of(payload) != old_epoch for _, payload in ear.messages)

            async def old_standing_by() -> bool:
                return await state_of(stack, old) == "standby"

            # The worst moment to freeze: with a renewal in flight. Redis, paused, holds it;
            # then the active freezes and Redis answers "renewed" into the frozen process, an
            # answer long stale when it wakes, after the standby has taken over.
            os.kill(pids[REDIS], signal.SIGSTOP)
            try:
                await asyncio.sleep(REDIS_FROZEN)
                os.kill(pids[old], signal.SIGSTOP)
            finally:
                os.kill(pids[REDIS], signal.SIGCONT)
            try:
                await eventually(lambda: new_ticks() >= NEW_TICKS, "the new holder's ticks")
                assert await stack.active_ingestor() == new
            finally:
                os.kill(pids[old], signal.SIGCONT)
            await eventually(old_standing_by, "the woken instance standing by")
            seen = len(ear.messages)
            await eventually(lambda: len(ear.messages) >= seen + 5, "more ticks after it woke")

        epochs = [epoch_of(payload) for _, payload in ear.messages]
        first_new = next(i for i, epoch in enumerate(epochs) if epoch != old_epoch)
        late = [i for i in range(first_new, len(epochs)) if epochs[i] == old_epoch]
        assert not late, f"{len(late)} ticks of the old epoch after the new holder's first"
        assert {epochs[i] for i in range(first_new, len(epochs))} == {epochs[first_new]}
        assert await stack.active_ingestor() == new
        assert stack.pids() == pids  # every process woke up; none crashed
        await client.wait_live(5, client.mark(), "updates through the front after all that")
