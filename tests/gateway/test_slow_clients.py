"""A client that stops reading is conflated, then dropped; one that reads gets everything.

The slow client is a bare socket with a small receive buffer that the test reads only when it
chooses; the gateway's socket send buffer and backlog bound are small so the backlog builds up
after a few dozen frames. Every check is on counts and sequence numbers, none on timings.
"""

from __future__ import annotations

import itertools

import redis.asyncio as aioredis

from tests.gateway.conftest import NIFTY, Client, StartGateway, client, eventually, publish_tick
from tests.gateway.rawclient import RawClient

VALUE_PAD = b"x" * 1500  # makes each update ~1.6 KB so buffers fill quickly


def value(seq: int) -> bytes:
    return b'{"ltpc":{"ltp":%d,"ltt":"1","ltq":"1","cp":1.0},"pad":"%b"}' % (seq, VALUE_PAD)


async def publish_batch(redis: aioredis.Redis, fast: Client, first: int, count: int) -> int:
    """Publish `count` updates, each once the fast client has the one before: it keeps up by
    construction, however slow the machine, so only the slow client can fall behind."""
    last = first + count - 1
    for seq in range(first, last + 1):
        await publish_tick(redis, NIFTY, seq, value=value(seq))
        await fast.collect_until(NIFTY, seq)
    return last + 1


async def test_slow_client_is_conflated_then_dropped_while_a_fast_one_gets_everything(
    start_gateway: StartGateway, redis_client: aioredis.Redis
) -> None:
    gateway = await start_gateway(
        gateway_max_backlog_bytes=16 * 1024,
        gateway_max_backlog_seconds=3.0,
        gateway_socket_send_buffer_bytes=8 * 1024,
    )
    hub = gateway.hub
    slow = await RawClient.connect(gateway.ws_url, receive_buffer=4096)
    try:
        await slow.send({"op": "subscribe", "keys": [NIFTY], "id": "slow"})
        await slow.read_until(lambda c: any(f["type"] == "initial_feed" for f in c.frames))
        async with client(gateway.ws_url, max_size=None) as fast:
            await fast.subscribe([NIFTY])
            seq = 1

            # 1. The slow client stops reading: its backlog grows until updates are conflated.
            while hub.fanout.stats.conflated == 0:
                seq = await publish_batch(redis_client, fast, seq, 20)
                assert seq < 5000, "the slow client never fell behind"

            # 2. It reads again: what it was owed arrives as the latest value (a jump in seq).
            def jumped(c: RawClient) -> bool:
                seqs = c.seqs(NIFTY)
                return any(b - a > 1 for a, b in itertools.pairwise(seqs))

            await slow.read_until(jumped, size=4096)
            assert hub.stats.slow_dropped == 0

            # 3. It stops again and stays behind: it is closed as a slow consumer.
            while hub.stats.slow_dropped == 0:
                seq = await publish_batch(redis_client, fast, seq, 20)
                assert seq < 100_000, "the slow client was never dropped"
            last = seq - 1

            # The fast client, reading all along, saw every update exactly once, in order.
            assert fast.updates(NIFTY) == list(range(1, last + 1))
            assert fast.ws.close_code is None

        # 4. What the slow client finally reads: increasing sequence numbers with gaps, each
        #    value the one for its seq (never a stale value), then the 4000 close.
        await slow.read_until_closed()
    finally:
        slow.close()
    assert (slow.close_code, slow.close_reason) == (4000, "slow consumer")
    seqs = slow.seqs(NIFTY)
    assert seqs == sorted(set(seqs)), "sequence numbers must only increase"
    assert len(seqs) < last
    for frame in slow.frames:
        if frame["type"] == "live_feed":
            assert frame["feeds"][NIFTY]["ltpc"]["ltp"] == frame["meta"][NIFTY]["seq"]
    assert hub.stats.slow_dropped == 1
    assert hub.fanout.stats.conflated > 0
    await eventually(lambda: len(hub.clients) == 0, "both clients gone")
