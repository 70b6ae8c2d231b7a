"""A Redis crash never loses a login: the whole topology (`tickstream dev`), Redis SIGKILLed (no
graceful save) and started again from its data directory, a client subscribed through the front.

The crash must land inside Redis's snapshot interval after the login, as in the issue: each
drill turns Redis's save points off (`CONFIG SET save ""`, undone by the restart) so the
snapshot on disk predates the login. The login is DEMO02's, through the browser, while auth's
UPSTOX_ACCESS_TOKEN is DEMO01's: a feed connected as DEMO02 after the crash can only come from
auth's durable copy (or the ingestor's memory of the token), never from the environment.

The drills run in order on one stack: the logout drill last, as it ends the login.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import redis.asyncio as aioredis

from tests.support.stack import Stack, running_stack
from tests.support.waiting import eventually
from tests.system.feed import FeedClient

pytestmark = pytest.mark.timeout(300)

KEYS = ["NSE_INDEX|Nifty 50", "NSE_EQ|INE002A01018"]
FLOWING = 5  # updates that prove data flows
USER = "DEMO02"  # the browser login (the environment's token is DEMO01's)


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with running_stack(gateways=1, overrides={"AUTH_RESTORE_INTERVAL_SECONDS": "0.5"}) as whole:
        yield whole


@pytest.fixture
async def client(stack: Stack) -> AsyncIterator[FeedClient]:
    """A client subscribed through the front, with live updates already flowing."""
    stack.heal()
    async with FeedClient(stack.front_ws_url, KEYS, origin=stack.front_url) as feed:
        await feed.wait_live(FLOWING)
        yield feed


async def feed_users(stack: Stack) -> list[str]:
    """The users of the simulator's open feed connections."""
    stats = await stack.admin("stats", method="GET")
    return [str(connection["user_id"]) for connection in stats["connections"]]


async def auth_get(stack: Stack, path: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=10, trust_env=False) as http:
        return await http.get(stack.auth_url + path)


async def logins(stack: Stack) -> float:
    for line in (await auth_get(stack, "/metrics")).text.splitlines():
        if line.startswith("tickstream_auth_logins_total "):
            return float(line.split()[1])
    raise AssertionError("auth reports no logins counter")


async def no_snapshots(stack: Stack) -> None:
    """Turn Redis's save points off until its next start: the crash falls between snapshots."""
    client: aioredis.Redis = aioredis.Redis.from_url(stack.redis_url)
    try:
        await client.config_set("save", "")
    finally:
        await client.aclose()


async def snapshot_now(stack: Stack) -> None:
    client: aioredis.Redis = aioredis.Redis.from_url(stack.redis_url)
    try:
        await client.save()
    finally:
        await client.aclose()


async def new_epoch_updates(client: FeedClient, old_epochs: set[str], what: str) -> None:
    def resumed() -> bool:
        fresh = [u for u in client.live() if u.epoch not in old_epochs]
        return len(fresh) >= FLOWING and {u.key for u in fresh} == set(KEYS)

    await client.wait_for(resumed, what)


async def crash_redis(stack: Stack) -> None:
    """SIGKILL Redis with the login newer than its snapshot, and start it from its directory."""
    await stack.akill("redis")
    await stack.astart("redis")


async def test_a_redis_crash_then_an_upstream_drop_resumes_without_a_login(
    stack: Stack, client: FeedClient
) -> None:
    await no_snapshots(stack)
    await stack.login(user_id=USER)
    old_epochs = client.epochs()
    await stack.admin("drop-connections", code=1011)  # the feed takes the new login
    await new_epoch_updates(client, old_epochs, f"updates as {USER}")
    assert await feed_users(stack) == [USER]
    before, signed_in = stack.pids(), await logins(stack)

    await crash_redis(stack)
    await client.wait_live(FLOWING, client.mark(), "updates after Redis came back")
    old_epochs = client.epochs()
    assert (await stack.admin("drop-connections", code=1011))["dropped"] >= 1
    await new_epoch_updates(client, old_epochs, "updates after the upstream reconnect")

    assert await feed_users(stack) == [USER]
    assert await logins(stack) == signed_in  # nobody logged in again
    async with stack.operator() as operator:
        session = (await operator.get(stack.front_url + "/session")).json()
    assert (session["logged_in"], session["user_id"]) == (True, USER)
    assert client.connections == 1
    stack.assert_survivors(before, killed="redis")


async def test_a_redis_crash_then_a_standby_takeover_resumes_without_a_login(
    stack: Stack, client: FeedClient
) -> None:
    await no_snapshots(stack)  # the restart brought the save points back
    await eventually(lambda: _feed_is(stack, [USER]), f"the feed connected as {USER}")
    signed_in = await logins(stack)

    await crash_redis(stack)
    await client.wait_live(FLOWING, client.mark(), "updates after Redis came back")
    old_epochs = client.epochs()
    await eventually(lambda: _lease_held(stack), "the lease retaken after the crash", within=60)
    active = await stack.active_ingestor()
    assert active in stack.ingestors
    (standby,) = [name for name in stack.ingestors if name != active]
    await stack.akill(active)  # the standby takes over, with no memory of any token
    await new_epoch_updates(client, old_epochs, f"updates from {standby} after killing {active}")

    assert await stack.active_ingestor() == standby
    assert await feed_users(stack) == [USER]  # auth's copy, not the environment's DEMO01
    assert await logins(stack) == signed_in
    await stack.astart(active)


async def test_a_logout_while_redis_is_down_stops_the_feed_once_it_is_back(
    stack: Stack, client: FeedClient
) -> None:
    await eventually(lambda: _feed_is(stack, [USER]), f"the feed connected as {USER}")
    # The snapshot holds the login: Redis comes back with it, and must still forget it.
    await snapshot_now(stack)

    async with stack.operator() as browser:  # signed in while Redis is up
        await stack.akill("redis")
        try:
            logout = await browser.post(
                stack.front_url + "/logout", headers={"Accept": "application/json"}
            )
        finally:
            await stack.astart("redis")
    assert logout.status_code == 200, logout.text
    assert (logout.json()["logged_out"], logout.json()["user_id"]) == (True, USER)

    await eventually(
        lambda: _logged_out(stack), "auth's session gone once Redis is back", within=60
    )
    await eventually(lambda: _feed_is(stack, []), "no feed connection", within=60)
    await eventually(lambda: _ingestor_waiting(stack), "the ingestor waiting for a login")
    mark, epochs = client.mark(), client.epochs()
    await asyncio.sleep(2)  # several restore rounds and token rechecks: nothing comes back
    assert await feed_users(stack) == []
    assert [u for u in client.since(mark) if u.epoch not in epochs] == []
    assert (await auth_get(stack, "/session")).json() == {"logged_in": False}


# ---- helpers -----------------------------------------------------------------------------------


async def _feed_is(stack: Stack, users: list[str]) -> bool:
    return await feed_users(stack) == users


async def _lease_held(stack: Stack) -> bool:
    return await stack.active_ingestor() is not None


async def _logged_out(stack: Stack) -> bool:
    body: dict[str, object] = (await auth_get(stack, "/session")).json()
    return body == {"logged_in": False}


async def _ingestor_waiting(stack: Stack) -> bool:
    async with httpx.AsyncClient(timeout=5, trust_env=False) as http:
        for name in stack.ingestors:
            if stack.running(name):
                response = await http.get(stack.dev.urls[name] + "/healthz")
                if response.json().get("state") == "waiting_token":
                    return True
    return False
