"""The tick processor: frames in, (channel, last key, payload) out; sequences and epochs."""

from __future__ import annotations

import orjson
import pytest
from google.protobuf.json_format import MessageToDict

from services.ingestor.processor import TickProcessor
from shared import redis_contract as rc
from shared.instruments import Mode
from shared.proto import pb
from shared.render import RenderError, project, render_frame_envelope

TS = 1_740_727_891_235
EQ, IDX = "NSE_EQ|INE002A01018", "NSE_INDEX|Nifty 50"


def full_equity(feed: pb.Feed, ltp: float) -> None:
    ff = feed.fullFeed.marketFF
    ff.ltpc.ltp = ltp
    ff.ltpc.ltt = TS - 5
    ff.ltpc.ltq = 10
    ff.ltpc.cp = ltp - 1
    for level in range(5):
        quote = ff.marketLevel.bidAskQuote.add()
        quote.bidQ, quote.bidP = 100 + level, ltp - 0.05 * (level + 1)
        quote.askQ, quote.askP = 200 + level, ltp + 0.05 * (level + 1)
    ff.optionGreeks.delta = 0.5
    candle = ff.marketOHLC.ohlc.add()
    candle.interval, candle.open, candle.high = "1d", ltp - 3, ltp + 2
    candle.low, candle.close, candle.vol, candle.ts = ltp - 4, ltp, 779400, TS - 60_000
    ff.atp, ff.vtt, ff.tbq, ff.tsq = ltp - 0.5, 123456, 1000.0, 2000.0
    feed.requestMode = pb.full_d5


def ltpc_only(feed: pb.Feed, ltp: float) -> None:
    feed.ltpc.ltp = ltp
    feed.ltpc.ltt = TS - 7
    feed.ltpc.cp = ltp - 2


def frame_of(builders: dict[str, tuple[object, float]], ts: int = TS) -> pb.FeedResponse:
    frame = pb.FeedResponse(type=pb.live_feed, currentTs=ts)
    for key, (build, ltp) in builders.items():
        build(frame.feeds[key], ltp)  # type: ignore[operator]
    return frame


def meta(payload: bytes) -> dict[str, object]:
    value, meta_json = rc.split_tick(payload)
    assert orjson.loads(value) is not None
    result: dict[str, object] = orjson.loads(meta_json)
    return result


def test_each_demanded_mode_is_rendered_once_and_stamped() -> None:
    frame = frame_of({EQ: (full_equity, 2500.5), "NSE_EQ|INE009A01021": (full_equity, 1500.0)})
    processor = TickProcessor()
    processor.set_render(
        {EQ: frozenset({Mode.FULL, Mode.LTPC}), "NSE_EQ|INE009A01021": frozenset({Mode.FULL})}
    )
    result = processor.process(frame.SerializeToString())

    assert result.feeds == 2 and result.ts == TS and result.market_info is None
    by_channel = {channel: (last, payload) for channel, last, payload, _ in result.ticks}
    assert len(result.ticks) == 3
    for key, mode in ((EQ, Mode.FULL), (EQ, Mode.LTPC), ("NSE_EQ|INE009A01021", Mode.FULL)):
        last, payload = by_channel[rc.tick_channel(mode, key).encode()]
        assert last == rc.last_value_key(mode, key).encode()
        feed = frame.feeds[key]
        assert payload == rc.encode_tick(project(feed, mode), 1, processor.epoch, TS)
    # The full value is exactly what Upstox's SDK would give for feeds[key].
    full_value, _ = rc.split_tick(by_channel[rc.tick_channel(Mode.FULL, EQ).encode()][1])
    assert orjson.loads(full_value) == MessageToDict(frame.feeds[EQ])
    ltpc_value, _ = rc.split_tick(by_channel[rc.tick_channel(Mode.LTPC, EQ).encode()][1])
    assert set(orjson.loads(ltpc_value)) == {"ltpc"}


def test_sequences_count_per_key_and_mode_and_restart_with_a_new_epoch() -> None:
    processor = TickProcessor()
    processor.set_render({EQ: frozenset({Mode.FULL, Mode.LTPC}), IDX: frozenset({Mode.LTPC})})
    seen: dict[bytes, list[int]] = {}
    for n in range(3):
        builders: dict[str, tuple[object, float]] = {EQ: (full_equity, 100.0 + n)}
        if n != 1:
            builders[IDX] = (ltpc_only, 22000.0 + n)
        for channel, _, payload, _ in processor.process(
            frame_of(builders).SerializeToString()
        ).ticks:
            seen.setdefault(channel, []).append(int(meta(payload)["seq"]))  # type: ignore[call-overload]
    assert seen == {
        rc.tick_channel(Mode.LTPC, EQ).encode(): [1, 2, 3],
        rc.tick_channel(Mode.FULL, EQ).encode(): [1, 2, 3],
        rc.tick_channel(Mode.LTPC, IDX).encode(): [1, 2],
    }
    first_epoch = processor.epoch
    second_epoch = processor.new_epoch()
    assert second_epoch != first_epoch
    ticks = processor.process(frame_of({IDX: (ltpc_only, 1.0)}).SerializeToString()).ticks
    assert [meta(p) for _, _, p, _ in ticks] == [{"seq": 1, "epoch": second_epoch, "ts": TS}]


def test_demand_changes_keep_counters_within_an_epoch() -> None:
    processor = TickProcessor()
    processor.set_render({IDX: frozenset({Mode.LTPC})})
    frame = frame_of({IDX: (ltpc_only, 1.0)}).SerializeToString()
    processor.process(frame)
    processor.set_render({})
    assert processor.process(frame).ticks == []
    processor.set_render({IDX: frozenset({Mode.LTPC})})
    (tick,) = processor.process(frame).ticks
    assert meta(tick[2])["seq"] == 2  # never goes back within one epoch


def test_keys_without_demand_and_modes_the_feed_lacks_are_skipped() -> None:
    processor = TickProcessor()
    # IDX arrives in ltpc mode: its full demand cannot be served from it (yet), its ltpc can.
    processor.set_render({IDX: frozenset({Mode.FULL, Mode.LTPC})})
    result = processor.process(
        frame_of({IDX: (ltpc_only, 5.0), EQ: (full_equity, 9.0)}).SerializeToString()
    )
    assert result.feeds == 2
    assert [tick[0] for tick in result.ticks] == [rc.tick_channel(Mode.LTPC, IDX).encode()]


def test_market_info_frames_become_the_market_status() -> None:
    frame = pb.FeedResponse(type=pb.market_info, currentTs=TS)
    frame.marketInfo.segmentStatus["NSE_EQ"] = pb.NORMAL_OPEN
    frame.marketInfo.segmentStatus["MCX_FO"] = pb.NORMAL_CLOSE
    processor = TickProcessor()
    result = processor.process(frame.SerializeToString())
    assert result.ticks == []
    assert result.market_info is not None
    # Equal as JSON: protobuf map order may differ between a message and its re-parsed copy.
    assert orjson.loads(result.market_info) == orjson.loads(render_frame_envelope(frame))
    assert orjson.loads(result.market_info) == MessageToDict(frame)
    assert processor.market_info == result.market_info


def test_latest_keeps_the_newest_payload_of_each_demanded_route() -> None:
    processor = TickProcessor()
    render = {EQ: frozenset({Mode.FULL}), IDX: frozenset({Mode.LTPC})}
    processor.set_render(render, render)
    processor.process(frame_of({EQ: (full_equity, 1.0), IDX: (ltpc_only, 2.0)}).SerializeToString())
    result = processor.process(frame_of({EQ: (full_equity, 3.0)}).SerializeToString())
    newest, newest_entry = result.ticks[0], result.entries[0]
    latest = {channel: payload for channel, _, payload, _ in processor.latest()}
    assert latest[newest[0]] == newest[2]
    assert latest[newest_entry[0]] == newest_entry[2]
    assert len(latest) == 4  # a JSON tick and a protobuf entry per route
    processor.set_render({EQ: frozenset({Mode.FULL})}, {EQ: frozenset({Mode.FULL})})
    assert [tick[0] for tick in processor.latest()] == [newest[0], newest_entry[0]]
    processor.forget()
    assert processor.latest() == []


@pytest.mark.parametrize("data", [b"\xff\xff\xff", b"\x12\x05garbage-that-is-not-a-frame"])
def test_malformed_bytes_raise_render_error(data: bytes) -> None:
    with pytest.raises(RenderError):
        TickProcessor().process(data)


def test_a_large_frame_comes_out_in_parts() -> None:
    keys = [f"NSE_EQ|K{i}" for i in range(5)]
    frame = frame_of({key: (ltpc_only, 10.0 + i) for i, key in enumerate(keys)})
    processor = TickProcessor()
    processor.set_render({key: frozenset({Mode.LTPC}) for key in keys})
    parts = list(processor.process_parts(frame.SerializeToString(), part_size=2))
    assert [len(part.ticks) for part in parts] == [2, 2, 1]
    assert [part.more for part in parts] == [True, True, False]
    assert [part.feeds for part in parts] == [5, 0, 0]  # counted once per frame
    assert {part.ts for part in parts} == {TS}
    channels = [tick[0] for part in parts for tick in part.ticks]
    assert sorted(channels) == sorted(rc.tick_channel(Mode.LTPC, key).encode() for key in keys)
    whole = TickProcessor()
    whole.set_render({key: frozenset({Mode.LTPC}) for key in keys})
    (single,) = whole.process_parts(frame.SerializeToString(), part_size=0)
    assert not single.more and len(single.ticks) == 5


def test_a_malformed_frame_fails_before_any_part() -> None:
    with pytest.raises(RenderError):
        next(TickProcessor().process_parts(b"\xff\xff", part_size=2))
