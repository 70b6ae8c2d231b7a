"""Whole-system fault drills, as a user meets the system: `tickstream dev`'s topology (two
ingestors, two gateways, the front), a client subscribed through the front, and one fault at a
time. Each drill asserts that updates resume and that no process died but the one killed.

One stack serves the module; each drill leaves it whole (the killed service is started again),
and the token drill runs last because it spends the demo token.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import httpx
import pytest
import redis.asyncio as aioredis

from shared import redis_contract as rc
from tests.support.stack import Stack
from tests.support.waiting import eventually as wait_until
from tests.system.feed import FeedClient

pytestmark = pytest.mark.timeout(300)

KEYS = ["NSE_INDEX|Nifty 50", "NSE_EQ|INE002A01018"]
FLOWING = 5  # updates that prove data flows


@pytest.fixture
def stack(whole_stack: Stack) -> Iterator[Stack]:
    """The module's stack, checked whole before each drill (healed if a failed drill broke it)."""
    healed = whole_stack.heal()
    assert not whole_stack.unexpected_exits() or healed, whole_stack.unexpected_exits()
    yield whole_stack


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[FeedClient]:
    """A client subscribed through the front, with live updates already flowing."""
    async with FeedClient(stack.front_ws_url, KEYS, origin=stack.front_url) as feed:
        await feed.wait_for(
            lambda: any(u.kind == "initial_feed" for u in feed.updates) or bool(feed.live()),
            "the first data after subscribing",
        )
        await feed.wait_live(FLOWING)
        yield feed


async def new_epoch_updates(client: FeedClient, old_epochs: set[str], what: str) -> None:
    """Wait for live updates of every key under an epoch not seen before the fault."""

    def resumed() -> bool:
        fresh = [u for u in client.live() if u.epoch not in old_epochs]
        return len(fresh) >= FLOWING and {u.key for u in fresh} == set(KEYS)

    await client.wait_for(resumed, what)


async def eventually(check: Callable[[], Awaitable[bool]], what: str, within: float = 60) -> None:
    """Poll an async check; `within` (s) is only an upper bound for waiting."""
    await wait_until(check, what, within=within, interval=0.1)


async def ingestor_in_state(stack: Stack, state: str) -> bool:
    """Whether an ingestor reports `state` on its /healthz."""
    async with httpx.AsyncClient(timeout=5, trust_env=False) as http:
        for name in stack.ingestors:
            if stack.running(name):
                response = await http.get(stack.dev.urls[name] + "/healthz")
                if response.json().get("state") == state:
                    return True
    return False


async def serving_gateway(stack: Stack) -> str:
    """The gateway replica the client is connected to: the only one with demand for our keys."""
    redis: aioredis.Redis = aioredis.Redis.from_url(stack.redis_url)
    try:
        for _ in range(200):
            holders = [
                name
                for name in stack.gateways
                if stack.running(name) and await redis.hexists(rc.demand_key(name), KEYS[0])
            ]
            if len(holders) == 1:
                return holders[0]
            await asyncio.sleep(0.1)
    finally:
        await redis.aclose()
    raise AssertionError(f"no single gateway holds the client's demand (holders: {holders})")


async def test_active_ingestor_killed_the_standby_takes_over(
    stack: Stack, client: FeedClient
) -> None:
    active = await stack.active_ingestor()
    assert active in stack.ingestors, f"lease holder {active!r} is not one of {stack.ingestors}"
    (standby,) = [name for name in stack.ingestors if name != active]
    before, old_epochs = stack.pids(), client.epochs()

    await stack.akill(active)
    await new_epoch_updates(client, old_epochs, f"updates from {standby} after killing {active}")

    assert await stack.active_ingestor() == standby
    assert client.connections == 1  # the browser never noticed more than a new epoch
    stack.assert_survivors(before, killed=active)
    await stack.astart(active)  # back, as the standby now
    assert await stack.active_ingestor() == standby


async def test_gateway_killed_the_client_reconnects_through_the_front(
    stack: Stack, client: FeedClient
) -> None:
    victim = await serving_gateway(stack)
    before = stack.pids()
    connections = client.connections

    await stack.akill(victim)
    reconnected = connections + 1
    await client.wait_for(
        lambda: client.snapshot_keys(reconnected) == set(KEYS),
        "a snapshot of every key on the new connection",
    )
    await client.wait_for(
        lambda: len(client.live(connection=reconnected)) >= FLOWING,
        "live updates on the new connection",
    )

    assert client.closes[0][0] == 1012  # the front says "service restart": reconnect
    assert await serving_gateway(stack) != victim
    stack.assert_survivors(before, killed=victim)
    await stack.astart(victim)


async def test_redis_restarted_updates_resume(stack: Stack, client: FeedClient) -> None:
    before = stack.pids()
    connections = client.connections

    await stack.astop("redis")
    await stack.astart("redis")
    mark = client.mark()
    await client.wait_live(FLOWING, mark, "live updates after Redis came back")

    assert client.connections == connections  # clients stay connected through a Redis outage
    # and the operator can log in at once: auth's first Redis calls after the restart must not
    # fail (Redis came back empty: the operator signs in again)
    async with stack.operator() as browser:
        authorize = await browser.get(stack.front_url + "/authorize", follow_redirects=False)
    assert authorize.status_code == 302, f"auth after a Redis restart: {authorize.text[:200]}"
    stack.assert_survivors(before, killed="redis")


async def test_upstream_drops_every_connection_updates_resume(
    stack: Stack, client: FeedClient
) -> None:
    before, old_epochs = stack.pids(), client.epochs()

    dropped = await stack.admin("drop-connections", code=1011)
    assert dropped["dropped"] >= 1
    await new_epoch_updates(client, old_epochs, "updates after the upstream reconnect")

    stack.assert_survivors(before)


async def test_upstream_expires_the_token_flow_resumes_after_a_new_login(
    stack: Stack, client: FeedClient
) -> None:
    before, old_epochs = stack.pids(), client.epochs()

    expired = await stack.admin("expire-tokens", include_demo="true")
    assert expired["expired"] >= 1
    await eventually(
        lambda: ingestor_in_state(stack, "waiting_token"), "an ingestor waiting for a new token"
    )
    mark = client.mark()
    assert [u for u in client.since(mark) if u.epoch not in old_epochs] == []

    await stack.login()
    await new_epoch_updates(client, old_epochs, "updates after logging in again")

    stack.assert_survivors(before)
