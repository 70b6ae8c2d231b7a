"""Partial ticks in the ingestor: the channel gets what came, the last value stays whole."""

from __future__ import annotations

import random

import orjson
import redis.asyncio as aioredis
from google.protobuf.json_format import MessageToDict

from bench.frames import BASE_TS, FrameKind, build_feed
from services.ingestor.processor import Tick, TickProcessor
from shared import redis_contract as rc
from shared.instruments import Mode
from shared.proto import pb
from shared.render import merge_feed, project
from tests.ingestor.conftest import Listener
from tests.ingestor.test_publisher import Harness

KEY = "NSE_FO|45001"


def frame(feed: pb.Feed, kind: int = pb.live_feed, ts: int = BASE_TS) -> bytes:
    response = pb.FeedResponse(type=kind, currentTs=ts)  # type: ignore[arg-type]
    response.feeds[KEY].CopyFrom(feed)
    return response.SerializeToString()


def without(feed: pb.Feed, *parts: str) -> pb.Feed:
    out = pb.Feed()
    out.CopyFrom(feed)
    for part in parts:
        out.fullFeed.marketFF.ClearField(part)
    return out


class Feeds:
    """Successive lifelike full-mode feeds of one option."""

    def __init__(self) -> None:
        self.rng = random.Random(11)
        self.ts = BASE_TS

    def next(self) -> pb.Feed:
        self.ts += 500
        return build_feed(FrameKind.FULL_OPTION, self.rng, self.ts)


def by_mode(ticks: list[Tick]) -> dict[Mode, Tick]:
    return {rc.parse_tick_channel(tick[0].decode())[0]: tick for tick in ticks}


def value_of(payload: bytes) -> object:
    return orjson.loads(rc.split_tick(payload)[0])


def last_value(tick: Tick) -> bytes:
    return tick[3] or tick[2]


def test_a_partial_tick_is_published_as_it_came_and_its_last_value_is_merged() -> None:
    feeds = Feeds()
    processor = TickProcessor()
    processor.set_render({KEY: frozenset({Mode.FULL, Mode.OPTION_GREEKS, Mode.LTPC})})
    first = feeds.next()
    whole = by_mode(processor.process(frame(first, pb.initial_feed)).ticks)
    assert all(tick[3] == b"" for tick in whole.values())  # whole: SET what is published
    update = without(feeds.next(), "marketLevel", "marketOHLC")
    ticks = by_mode(processor.process(frame(update)).ticks)
    merged = merge_feed(first, update)

    full = ticks[Mode.FULL]
    assert value_of(full[2]) == MessageToDict(update)  # what Upstox sent, as it came
    assert rc.is_partial(rc.split_tick(full[2])[1])
    assert value_of(full[3]) == MessageToDict(merged)  # the snapshot: whole
    assert not rc.is_partial(rc.split_tick(full[3])[1])
    assert orjson.loads(rc.split_tick(full[3])[1])["seq"] == 2

    greeks = ticks[Mode.OPTION_GREEKS]  # no firstDepth in what came: partial in that mode too
    assert "firstDepth" not in value_of(greeks[2])["firstLevelWithGreeks"]  # type: ignore[index]
    assert value_of(greeks[3]) == orjson.loads(project(merged, Mode.OPTION_GREEKS))

    ltpc = ticks[Mode.LTPC]  # ltpc mode lacks nothing: whole, SET as published
    assert ltpc[3] == b"" and not rc.is_partial(rc.split_tick(ltpc[2])[1])
    assert {
        tick[2]
        for tick in processor.latest()
        if tick[0].startswith(rc.TICK_CHANNEL_PREFIX.encode())
    } == {last_value(t) for t in ticks.values()}


def test_partial_ticks_in_a_row_keep_each_part_from_the_last_tick_that_carried_it() -> None:
    feeds = Feeds()
    processor = TickProcessor()
    processor.set_render({KEY: frozenset({Mode.FULL})})
    expected = feeds.next()
    processor.process(frame(expected))
    for left_out in (("marketLevel",), ("marketOHLC", "optionGreeks"), (), ("marketLevel",)):
        update = without(feeds.next(), *left_out)
        expected = merge_feed(expected, update)
        (tick,) = processor.process(frame(update)).ticks
        assert value_of(last_value(tick)) == MessageToDict(expected)
        assert (tick[3] != b"") == bool(left_out)
    book = expected.fullFeed.marketFF.marketLevel.bidAskQuote
    assert len(book) == 5  # replaced, never appended to


def test_a_snapshot_frame_is_whole_even_when_it_lacks_a_part() -> None:
    feeds = Feeds()
    processor = TickProcessor()
    processor.set_render({KEY: frozenset({Mode.FULL})})
    processor.process(frame(feeds.next()))
    no_greeks = without(feeds.next(), "optionGreeks")
    (tick,) = processor.process(frame(no_greeks, pb.initial_feed)).ticks
    assert tick[3] == b"" and value_of(tick[2]) == MessageToDict(no_greeks)
    (tick,) = processor.process(frame(without(feeds.next(), "optionGreeks"))).ticks
    assert tick[3] == b""  # the key's feeds carry no greeks any more: nothing is missing


def test_a_mode_added_while_the_key_streams_gets_a_whole_first_value() -> None:
    feeds = Feeds()
    processor = TickProcessor()
    processor.set_render({KEY: frozenset({Mode.FULL})})
    first = feeds.next()
    processor.process(frame(first, pb.initial_feed))
    processor.set_render({KEY: frozenset({Mode.FULL, Mode.OPTION_GREEKS})})  # no new snapshot
    update = without(feeds.next(), "marketLevel")
    greeks = by_mode(processor.process(frame(update)).ticks)[Mode.OPTION_GREEKS]
    whole = orjson.loads(project(merge_feed(first, update), Mode.OPTION_GREEKS))
    assert "firstDepth" in whole["firstLevelWithGreeks"]
    assert greeks[3] == b"" and value_of(greeks[2]) == whole  # published and kept whole
    assert not rc.is_partial(rc.split_tick(greeks[2])[1])


def test_an_ltpc_route_gets_nothing_from_a_feed_without_ltpc() -> None:
    feeds = Feeds()
    processor = TickProcessor()
    processor.set_render({KEY: frozenset({Mode.FULL, Mode.LTPC})})
    processor.process(frame(feeds.next()))
    ticks = by_mode(processor.process(frame(without(feeds.next(), "ltpc"))).ticks)
    assert set(ticks) == {Mode.FULL}
    assert "ltpc" in value_of(ticks[Mode.FULL][3])["fullFeed"]["marketFF"]  # type: ignore[index]


async def test_the_publisher_publishes_the_partial_value_and_sets_the_whole_one(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    feeds = Feeds()
    processor = TickProcessor()
    processor.set_render({KEY: frozenset({Mode.FULL, Mode.LTPC})})
    whole = processor.process(frame(feeds.next(), pb.initial_feed))
    partial = processor.process(frame(without(feeds.next(), "marketLevel")))
    channel = rc.tick_channel(Mode.FULL, KEY)
    harness = Harness(redis_url, ttl=3600)
    try:
        async with Listener(redis_url, [channel]) as ear:
            harness.publisher.submit(whole)
            harness.publisher.submit(partial)
            await harness.publisher.idle()
            got = await ear.wait(channel, 2)
    finally:
        await harness.close()
    sent = by_mode(partial.ticks)
    assert got == [by_mode(whole.ticks)[Mode.FULL][2], sent[Mode.FULL][2]]
    stored = await redis_client.mget([rc.last_value_key(mode, KEY) for mode in sent])
    assert stored == [last_value(tick) for tick in sent.values()]
    assert sent[Mode.FULL][3] and not sent[Mode.LTPC][3]  # the partial one, and a whole one
