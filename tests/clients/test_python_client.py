"""tickstream-client (clients/python) against the real system through the front: `tickstream
dev`'s processes with viewer tokens required. Typed fields in ltpc, full and option_greeks; a
gateway SIGKILLed under the client (it reconnects through the front to the other, subscribes
again, takes a snapshot and goes on, with no exception to its user); refused keys and tokens as
the documented exceptions; the pure policies (backoff, sequence tracking, partial merge)."""

from __future__ import annotations

import ast
import asyncio
import itertools
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import tickstream_client
from tickstream_client import (
    Event,
    Feed,
    ForbiddenKeys,
    SequenceTracker,
    TokenExpired,
    Unauthorized,
    UnknownKeys,
    Update,
    backoff_delay,
    connect,
    merge_value,
)

from tests.support.stack import Stack, running_stack
from tests.support.waiting import eventually

pytestmark = pytest.mark.timeout(180)

SECRET = "python-client-tests-secret-" + "9" * 16
NIFTY = "NSE_INDEX|Nifty 50"
RELIANCE = "NSE_EQ|INE002A01018"
NOT_LISTED = "NSE_EQ|INE000X00000"


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    overrides = {"GATEWAY_VIEWER_ACCESS": "token", "GATEWAY_TOKEN_SECRET": SECRET}
    with running_stack(gateways=2, overrides=overrides) as running:
        yield running


def token(ttl: float = 600, **claims: Any) -> str:
    payload = {"sub": "python-client", "exp": int(time.time() + ttl), **claims}
    return jwt.encode(payload, SECRET.encode(), algorithm="HS256")


async def take(feed: Feed, wanted: Any, what: str, within: float = 30) -> list[Update]:
    """Updates until `wanted(seen)` holds (bounded wait)."""
    seen: list[Update] = []
    async with asyncio.timeout(within):
        async for update in feed:
            seen.append(update)
            if wanted(seen):
                return seen
    raise AssertionError(f"the feed ended before {what}")


def live_and_snapshot(keys: set[str]) -> Any:
    def done(seen: list[Update]) -> bool:
        snap = {u.key for u in seen if u.snapshot}
        live = {u.key for u in seen if not u.snapshot}
        return keys <= snap and keys <= live

    return done


async def option_key(stack: Stack) -> str:
    async with httpx.AsyncClient(trust_env=False, timeout=15) as web:
        found = await web.get(
            stack.front_url + "/api/instruments",
            params={"q": "NIFTY", "limit": 200},
            headers={"Authorization": f"Bearer {token()}"},
        )
    found.raise_for_status()
    body = found.json()
    rows = body if isinstance(body, list) else body.get("instruments", body.get("data", []))
    keys = [row["instrument_key"] for row in rows if row.get("instrument_type") in ("CE", "PE")]
    assert keys, f"no option in {str(body)[:300]}"
    return str(keys[0])


async def test_typed_fields_in_ltpc_full_and_option_greeks(stack: Stack) -> None:
    option = await option_key(stack)
    async with connect(stack.front_ws_url, token=token()) as feed:
        assert await feed.subscribe([NIFTY], "ltpc") == (NIFTY,)
        await feed.subscribe([RELIANCE], "full")
        await feed.subscribe([option], "option_greeks")
        seen = await take(feed, live_and_snapshot({NIFTY, RELIANCE, option}), "every key")
    last = {u.key: u for u in seen}
    nifty, reliance, opt = last[NIFTY], last[RELIANCE], last[option]
    assert (nifty.mode, reliance.mode, opt.mode) == ("ltpc", "full", "option_greeks")
    for update in (nifty, reliance, opt):
        assert isinstance(update.ltp, float) and update.ltp > 0
        assert update.close_price and update.change is not None
        assert update.change_percent == pytest.approx(update.change / update.close_price * 100)
        assert update.seq is not None and update.epoch and update.raw
    assert "ltpc" in nifty.raw and nifty.depth is None and nifty.oi is None
    assert reliance.depth is not None and len(reliance.depth.levels) == 5
    assert reliance.depth.bids[0][0] > 0 and reliance.depth.asks[0][0] > 0
    assert reliance.volume is not None and "fullFeed" in reliance.raw
    assert opt.greeks is not None and opt.oi is not None and opt.depth is not None
    assert len(opt.depth.levels) == 1 and "firstLevelWithGreeks" in opt.raw
    # Partial live ticks leave the book out when it did not change: the whole value keeps it.
    for update in seen:
        if update.key == RELIANCE:
            assert update.depth is not None, update.raw
    # Within one connection and epoch, a key's seq only increases; a jump is flagged as a gap.
    for key in (NIFTY, RELIANCE, option):
        mine = [u for u in seen if u.key == key and not u.snapshot]
        for a, b in itertools.pairwise(mine):
            assert a.seq is not None and b.seq is not None
            assert b.seq > a.seq and b.gap == b.seq - a.seq - 1


async def gateway_holding_one_client(stack: Stack) -> str | None:
    async with httpx.AsyncClient(trust_env=False, timeout=5) as web:
        for name in stack.gateways:
            status = await web.get(
                stack.dev.urls[name] + "/api/status",
                headers={"Authorization": f"Bearer {token()}"},
            )
            if status.json()["clients"] == 1:
                return name
    return None


async def test_a_gateway_killed_under_the_client(stack: Stack) -> None:
    events: list[Event] = []
    async with connect(
        stack.front_ws_url, token=token(), on_event=events.append, backoff_base=0.2
    ) as feed:
        await feed.subscribe([NIFTY, RELIANCE], "full")
        await take(feed, live_and_snapshot({NIFTY, RELIANCE}), "the first updates")
        victim = await eventually(lambda: gateway_holding_one_client(stack), "our gateway")
        before = stack.pids()
        await stack.akill(victim)
        try:
            after = await take(
                feed,
                lambda seen: feed.connects == 2 and live_and_snapshot({NIFTY, RELIANCE})(seen),
                "updates on the second connection",
            )
            assert feed.subscriptions == {NIFTY: "full", RELIANCE: "full"}
            assert any(e.kind == "disconnected" for e in events)
            assert [e.kind for e in events].count("connected") == 2
            assert {u.key for u in after if u.snapshot} == {NIFTY, RELIANCE}
            stack.assert_survivors(before, killed=victim)
        finally:
            await stack.astart(victim)


async def test_a_new_epoch_brings_a_snapshot(stack: Stack) -> None:
    async with connect(stack.front_ws_url, token=token()) as feed:
        await feed.subscribe([NIFTY, RELIANCE], "full")
        first = await take(feed, live_and_snapshot({NIFTY, RELIANCE}), "the first updates")
        old_epoch = first[-1].epoch
        active = await stack.active_ingestor()
        assert active in stack.ingestors
        before = stack.pids()
        await stack.akill(active)
        try:

            def resynced(seen: list[Update]) -> bool:
                turned = [i for i, u in enumerate(seen) if u.key == NIFTY and u.new_epoch]
                return bool(turned) and any(
                    u.key == NIFTY and u.snapshot for u in seen[turned[0] :]
                )

            after = await take(feed, resynced, "a new epoch, then a snapshot")
            turn = next(u for u in after if u.new_epoch)
            assert turn.epoch != old_epoch and not turn.snapshot and turn.gap == 0
            assert feed.connects == 1  # continuity lost upstream: no reconnect needed
            stack.assert_survivors(before, killed=active)
        finally:
            await stack.astart(active)


async def test_unknown_and_forbidden_keys(stack: Stack) -> None:
    async with connect(stack.front_ws_url, token=token()) as feed:
        with pytest.raises(UnknownKeys) as unknown:
            await feed.subscribe([NOT_LISTED, NIFTY], "ltpc")
        assert unknown.value.keys == (NOT_LISTED,) and unknown.value.subscribed == (NIFTY,)
        assert feed.subscriptions == {NIFTY: "ltpc"}
        await take(feed, live_and_snapshot({NIFTY}), "the good key")
    async with connect(stack.front_ws_url, token=token(keys=["NSE_INDEX|*"])) as feed:
        with pytest.raises(ForbiddenKeys) as forbidden:
            await feed.subscribe([RELIANCE, NIFTY], "ltpc")
        assert forbidden.value.keys == (RELIANCE,) and forbidden.value.subscribed == (NIFTY,)


async def test_refused_and_expiring_tokens(stack: Stack) -> None:
    with pytest.raises(TokenExpired):
        async with connect(stack.front_ws_url, token=token(ttl=-60)):
            pass
    with pytest.raises(Unauthorized) as bad:
        async with connect(stack.front_ws_url, token="not-a-token"):
            pass
    assert not isinstance(bad.value, TokenExpired) and "not-a-token" not in str(bad.value)
    # A token that expires while streaming: close 4003, raised to the iterating user.
    async with connect(stack.front_ws_url, token=token(ttl=6)) as feed:
        await feed.subscribe([NIFTY])
        with pytest.raises(TokenExpired):
            async with asyncio.timeout(30):
                async for _ in feed:
                    pass
    # With a provider, the expired token is replaced and the feed goes on.
    minted: list[str] = []

    async def provider() -> str:
        minted.append(token(ttl=3))
        return minted[-1]

    async with connect(stack.front_ws_url, token_provider=provider, backoff_base=0.1) as feed:
        await feed.subscribe([NIFTY])
        await take(
            feed, lambda seen: feed.connects >= 2 and not seen[-1].snapshot, "a 2nd token", 40
        )
    assert len(minted) >= 2


# ---- the pure policies ---------------------------------------------------------------------


def test_the_package_needs_websockets_only() -> None:
    root = Path(tickstream_client.__file__).parent
    with (root.parent / "pyproject.toml").open("rb") as project:
        assert tomllib.load(project)["project"]["dependencies"] == ["websockets>=13"]
    imported: set[str] = set()
    for module in root.glob("*.py"):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported.add(node.module.split(".")[0])
    assert imported - sys.stdlib_module_names <= {"websockets", "tickstream_client"}, imported
    assert (root / "py.typed").exists()


def test_backoff_is_jittered_exponential_and_capped() -> None:
    assert [backoff_delay(n, 0.5, 30, lambda: 0.0) for n in range(4)] == [0.25, 0.5, 1.0, 2.0]
    assert backoff_delay(20, 0.5, 30, lambda: 0.999) < 30
    assert backoff_delay(3, 0.5, 30, lambda: 0.0) != backoff_delay(3, 0.5, 30, lambda: 0.9)


def test_sequence_tracker() -> None:
    tracker = SequenceTracker()
    assert tracker.check("k", 5, "e1", initial=True).accept
    assert tracker.check("k", 6, "e1", initial=False).gap == 0
    jumped = tracker.check("k", 9, "e1", initial=False)
    assert jumped.accept and jumped.gap == 2 and not jumped.resync
    assert not tracker.check("k", 9, "e1", initial=False).accept  # a repeat
    assert tracker.check("k", 3, "e1", initial=False).resync  # backwards: ask for a snapshot
    fresh = tracker.check("k", 1, "e2", initial=False)
    assert fresh.accept and fresh.new_epoch and fresh.resync


def test_partial_values_merge_part_wise() -> None:
    whole = {"fullFeed": {"marketFF": {"ltpc": {"ltp": 1.0}, "marketLevel": {"bidAskQuote": []}}}}
    tick = {"fullFeed": {"marketFF": {"ltpc": {"ltp": 2.0}, "vtt": "7"}}}
    merged = merge_value(whole, tick)
    assert merged["fullFeed"]["marketFF"]["marketLevel"] == {"bidAskQuote": []}
    assert merged["fullFeed"]["marketFF"]["ltpc"] == {"ltp": 2.0}
    assert "marketLevel" not in tick["fullFeed"]["marketFF"]  # the input is left alone
    assert merge_value({"ltpc": {"ltp": 1.0}}, tick) == tick  # another shape: taken as it is
