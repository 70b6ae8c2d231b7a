"""The ingestor's protobuf `feeds` entries: the same values as its JSON ticks, spliceable, and
only where a replica asks for them."""

from __future__ import annotations

import orjson
from google.protobuf.json_format import MessageToDict

from services.ingestor.processor import Tick, TickProcessor
from shared import redis_contract as rc
from shared.feed_frames import initial_frame, live_frame
from shared.instruments import Mode
from shared.proto import pb
from shared.render import merge_feed, project_feed
from tests.ingestor.test_partial_ticks import KEY, Feeds, frame, without

MODES = frozenset({Mode.FULL_D30, Mode.FULL, Mode.OPTION_GREEKS, Mode.LTPC})


def decoded(entry: bytes) -> dict[str, object]:
    """The entry spliced alone into a live frame and decoded by protobuf, as a client would."""
    response = pb.FeedResponse.FromString(live_frame([entry], 1))
    assert list(response.feeds) == [KEY]
    return MessageToDict(response.feeds[KEY])


def json_value(tick: Tick) -> object:
    return orjson.loads(rc.split_tick(tick[2])[0])


def test_each_route_gets_an_entry_holding_its_json_value_on_its_own_channel() -> None:
    processor = TickProcessor()
    processor.set_render({KEY: MODES}, {KEY: MODES})
    source = Feeds().next()
    source.requestMode = pb.full_d30
    result = processor.process(frame(source, pb.initial_feed))
    ticks = {rc.parse_tick_channel(tick[0].decode())[0]: tick for tick in result.ticks}
    assert len(result.entries) == len(ticks) == len(MODES)
    for channel, last_key, entry, last in result.entries:
        mode = Mode(channel.decode().removeprefix(rc.ENTRY_CHANNEL_PREFIX).partition(":")[0])
        assert channel == rc.entry_channel(mode, KEY).encode()
        assert last_key == rc.last_entry_key(mode, KEY).encode()
        assert last == b""  # whole: the entry is its own last value
        assert rc.split_entry(entry) == (entry, False)
        assert decoded(entry) == json_value(ticks[mode])
    in_arrival_mode = rc.entry_channel(Mode.FULL_D30, KEY).encode()
    entry = next(entry for channel, _, entry, _ in result.entries if channel == in_arrival_mode)
    assert pb.FeedResponse.FromString(live_frame([entry], 1)).feeds[KEY] == source


def test_a_partial_entry_goes_out_as_it_came_and_its_last_value_is_merged() -> None:
    feeds = Feeds()
    processor = TickProcessor()
    processor.set_render({}, {KEY: frozenset({Mode.FULL})})
    first = feeds.next()
    processor.process(frame(first, pb.initial_feed))
    update = without(feeds.next(), "marketLevel", "marketOHLC")
    [(_, _, payload, last)] = processor.process(frame(update)).entries
    entry, partial = rc.split_entry(payload)
    assert partial and payload != entry
    assert decoded(entry) == MessageToDict(update)
    assert rc.split_entry(last) == (last, False)
    assert decoded(last) == MessageToDict(merge_feed(first, update))
    assert [
        tick[2]
        for tick in processor.latest()
        if tick[0].startswith(rc.ENTRY_CHANNEL_PREFIX.encode())
    ] == [last]


def test_entries_of_many_keys_splice_into_one_frame() -> None:
    processor = TickProcessor()
    keys = [f"NSE_FO|{n}" for n in range(40)]
    processor.set_render({}, {key: frozenset({Mode.LTPC}) for key in keys})
    response = pb.FeedResponse(type=pb.live_feed, currentTs=5)
    for n, key in enumerate(keys):
        response.feeds[key].ltpc.ltp = n + 0.5
    result = processor.process(response.SerializeToString())
    assert not result.ticks  # nobody asked for JSON
    entries = [tick[2] for tick in result.entries]
    spliced = pb.FeedResponse.FromString(initial_frame(entries, 7))
    assert spliced.type == pb.initial_feed and spliced.currentTs == 7
    assert {key: feed.ltpc.ltp for key, feed in spliced.feeds.items()} == {
        key: n + 0.5 for n, key in enumerate(keys)
    }


def test_entries_go_only_to_the_modes_and_keys_asked_for_on_upstoxs_wire() -> None:
    processor = TickProcessor()
    other = "NSE_FO|45002"
    processor.set_render({KEY: MODES, other: MODES}, {KEY: frozenset({Mode.FULL})})
    source = Feeds().next()
    source.requestMode = pb.full_d30
    response = pb.FeedResponse.FromString(frame(source, pb.initial_feed))
    response.feeds[other].CopyFrom(source)
    result = processor.process(response.SerializeToString())
    assert len(result.ticks) == 2 * len(MODES)
    assert [tick[0] for tick in result.entries] == [rc.entry_channel(Mode.FULL, KEY).encode()]
    entry_channels = {tick[0] for tick in processor.latest()} - {tick[0] for tick in result.ticks}
    assert entry_channels == {rc.entry_channel(Mode.FULL, KEY).encode()}
    processor.set_render({KEY: MODES, other: MODES})  # the Upstox client left
    assert not processor.process(response.SerializeToString()).entries
    assert all(tick[0].startswith(rc.TICK_CHANNEL_PREFIX.encode()) for tick in processor.latest())


def test_a_projected_partial_entry_is_merged_on_protobuf() -> None:
    feeds = Feeds()
    processor = TickProcessor()
    processor.set_render({}, {KEY: frozenset({Mode.FULL, Mode.OPTION_GREEKS})})
    first = feeds.next()
    processor.process(frame(first, pb.initial_feed))
    update = without(feeds.next(), "marketLevel", "optionGreeks")
    entries = {tick[0]: tick for tick in processor.process(frame(update)).entries}
    _, _, payload, last = entries[rc.entry_channel(Mode.OPTION_GREEKS, KEY).encode()]
    entry, partial = rc.split_entry(payload)
    assert partial
    assert decoded(entry) == MessageToDict(project_feed(update, Mode.OPTION_GREEKS))
    merged = project_feed(merge_feed(first, update), Mode.OPTION_GREEKS)
    assert decoded(last) == MessageToDict(merged)
    assert "firstDepth" in decoded(last)["firstLevelWithGreeks"]  # type: ignore[operator]


def test_a_wire_taken_up_again_starts_whole_from_the_other_wires_value() -> None:
    feeds = Feeds()
    processor = TickProcessor()
    full = frozenset({Mode.FULL})
    processor.set_render({KEY: full}, {KEY: full})
    processor.process(frame(feeds.next(), pb.initial_feed))
    processor.set_render({KEY: full})  # Upstox's client leaves; JSON keeps the key streaming
    moved = feeds.next()  # a whole live feed the entries no longer follow
    processor.process(frame(moved))
    processor.set_render({KEY: full}, {KEY: full})  # and comes back: no snapshot upstream
    update = without(feeds.next(), "marketLevel")
    [(_, _, payload, last)] = processor.process(frame(update)).entries
    assert not rc.split_entry(payload)[1] and last == b""  # whole, not a stale merge
    assert decoded(payload) == MessageToDict(merge_feed(moved, update))
