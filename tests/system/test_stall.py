"""The upstream stall watchdog in the whole system (`tickstream dev`'s processes): a feed that
stays connected, answers pings and sends no data heals without anyone doing anything, and a
closed market's silence is left alone.

Each test has a stack of its own (one gateway) with a short silence limit: the first an
always-open market, the second the exchange calendar on a Sunday.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.stack import Stack, running_stack
from tests.system.feed import FeedClient

pytestmark = pytest.mark.timeout(300)

KEYS = ["NSE_INDEX|Nifty 50", "NSE_EQ|INE002A01018"]
FLOWING = 5  # updates that prove data flows
SILENCE = 2.0  # INGESTOR_SILENCE_SECONDS of these stacks


@pytest.fixture
def open_market() -> Iterator[Stack]:
    with running_stack(gateways=1, overrides={"INGESTOR_SILENCE_SECONDS": str(SILENCE)}) as stack:
        yield stack


@pytest.fixture
def closed_market() -> Iterator[Stack]:
    overrides = {
        "INGESTOR_SILENCE_SECONDS": str(SILENCE),
        "SIMULATOR_MARKET_CLOCK": "ist",
        "SIMULATOR_MARKET_CLOCK_START": "2026-01-04T11:00:00",  # a Sunday, IST
    }
    with running_stack(gateways=1, overrides=overrides) as stack:
        yield stack


async def ingestor_samples(stack: Stack) -> dict[str, float]:
    """The active ingestor's metric samples, `name{label="value"}` -> value."""
    active = await stack.active_ingestor()
    assert active is not None, "no ingestor holds the lease"
    async with httpx.AsyncClient(timeout=5, trust_env=False) as http:
        text = (await http.get(stack.dev.urls[active] + "/metrics")).text
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


STALLS = 'tickstream_ingestor_stalls_total{action="%s"}'


async def test_a_stalled_upstream_connection_heals_by_itself(open_market: Stack) -> None:
    stack = open_market
    before = stack.pids()
    async with FeedClient(stack.front_ws_url, KEYS, origin=stack.front_url) as client:
        await client.wait_live(FLOWING)
        old_epochs = client.epochs()
        stalled = await stack.admin("stall", seconds=3600)  # the open connection, for an hour
        assert stalled["connections"] == 1

        def resumed() -> bool:
            fresh = [u for u in client.live() if u.epoch not in old_epochs]
            return len(fresh) >= FLOWING and {u.key for u in fresh} == set(KEYS)

        await client.wait_for(resumed, "updates again, from a new upstream connection")
        await client.wait_for(
            lambda: client.statuses[-1].get("ingestor") == "connected", "a status saying live"
        )
        samples = await ingestor_samples(stack)
    assert samples[STALLS % "resubscribe"] == 1
    assert samples[STALLS % "reconnect"] >= 1
    assert samples['tickstream_ingestor_upstream_failures_total{reason="stalled"}'] >= 1
    told = [s["message"] for s in client.statuses if s.get("ingestor") == "stalled"]
    assert told, f"the client was never told of the stall: {client.statuses}"
    assert client.connections == 1  # the client saw a new epoch, nothing more
    stack.assert_survivors(before)


async def test_a_closed_market_is_not_a_stall(closed_market: Stack) -> None:
    stack = closed_market
    async with FeedClient(stack.front_ws_url, KEYS, origin=stack.front_url) as client:
        # Each key's value: the upstream's snapshot (Friday's close), as the client's snapshot
        # or, if it reached Redis after that, as the first update.
        await client.wait_for(
            lambda: {u.key for u in client.updates} == set(KEYS), "a value of every key"
        )
        mark = client.mark()
        connections = (await stack.admin("stats", method="GET"))["connections_total"]
        # Quiet for three silence limits: the watchdog checks several times a limit.
        await asyncio.sleep(3 * SILENCE)
        samples = await ingestor_samples(stack)
        assert (await stack.admin("stats", method="GET"))["connections_total"] == connections
    assert client.since(mark) == []  # the market is shut: no ticks at all
    assert samples[STALLS % "resubscribe"] == 0
    assert samples[STALLS % "reconnect"] == 0
    assert samples["tickstream_ingestor_upstream_connections_total"] == 1
    assert all(s.get("ingestor") != "stalled" for s in client.statuses)
