"""The fan-out on Upstox's wire: binary `FeedResponse` frames spliced from ingestor entries."""

from __future__ import annotations

from google.protobuf.json_format import MessageToDict
from websockets.frames import Opcode

from services.gateway.fanout import FanOut, Subscriber
from services.gateway.wires import UPSTOX
from services.ingestor.processor import TickProcessor
from shared import redis_contract as rc
from shared.instruments import Mode
from shared.proto import pb
from shared.render import merge_feed
from tests.gateway.test_protocol import parse_server_frame
from tests.ingestor.test_partial_ticks import KEY, Feeds, frame, without

OTHER = "NSE_INDEX|Nifty 50"


class ProtobufSink:
    """Collects the binary frames a subscriber is sent, decoded as Upstox's SDK would."""

    def __init__(self) -> None:
        self.frames: list[pb.FeedResponse] = []

    def send_frame(self, data: bytes) -> None:
        frame = parse_server_frame(data)
        assert frame.opcode is Opcode.BINARY
        self.frames.append(pb.FeedResponse.FromString(bytes(frame.data)))

    def backlog(self) -> int:
        return 0


def upstox_subscriber(fan: FanOut, mode: Mode, *keys: str) -> ProtobufSink:
    sink = ProtobufSink()
    sub = Subscriber(sink)
    channels = [fan.join(sub, mode, key).channel for key in keys]
    assert all(channel.name == rc.entry_channel(mode, channel.key).encode() for channel in channels)
    snapshot = fan.complete(sub, [(channel, None) for channel in channels])
    assert snapshot is not None
    sink.send_frame(snapshot)
    return sink


def test_live_entries_of_several_keys_go_out_as_one_live_feed_frame() -> None:
    fan = FanOut(lambda: 1234, wire=UPSTOX)
    sink = upstox_subscriber(fan, Mode.LTPC, KEY, OTHER)
    processor = TickProcessor()
    processor.set_render({}, {KEY: frozenset({Mode.LTPC}), OTHER: frozenset({Mode.LTPC})})
    response = pb.FeedResponse(type=pb.live_feed, currentTs=1)
    response.feeds[KEY].ltpc.ltp = 101.5
    response.feeds[OTHER].ltpc.ltp = 24000.25
    for channel, _, payload, _ in processor.process(response.SerializeToString()).entries:
        fan.publish(channel, payload)
    assert fan.flush() == 1
    [initial, live] = sink.frames
    assert initial.type == pb.initial_feed and not initial.feeds
    assert live.type == pb.live_feed and live.currentTs == 1234
    assert {key: feed.ltpc.ltp for key, feed in live.feeds.items()} == {
        KEY: 101.5,
        OTHER: 24000.25,
    }


def test_a_snapshot_comes_from_the_stored_last_entry() -> None:
    fan = FanOut(lambda: 9, wire=UPSTOX)
    processor = TickProcessor()
    processor.set_render({}, {KEY: frozenset({Mode.FULL})})
    first = Feeds().next()
    [(_, _, stored, _)] = processor.process(frame(first, pb.initial_feed)).entries
    sink = ProtobufSink()
    sub = Subscriber(sink)
    channel = fan.join(sub, Mode.FULL, KEY).channel
    item = fan.resolve(channel, stored, channel.version)
    snapshot_frame = fan.complete(sub, [(channel, item)])
    assert snapshot_frame is not None
    sink.send_frame(snapshot_frame)
    [snapshot] = sink.frames
    assert snapshot.type == pb.initial_feed and snapshot.currentTs == 9
    assert snapshot.feeds[KEY] == first


def test_a_client_behind_gets_partial_entries_merged_not_superseded() -> None:
    fan = FanOut(lambda: 1, wire=UPSTOX)
    feeds = Feeds()
    processor = TickProcessor()
    processor.set_render({}, {KEY: frozenset({Mode.FULL})})
    first = feeds.next()
    processor.process(frame(first, pb.initial_feed))
    sink = ProtobufSink()
    sub = Subscriber(sink)
    channel = fan.join(sub, Mode.FULL, KEY).channel
    fan.complete(sub, [(channel, None)])
    sub.behind = True
    whole = feeds.next()
    update = without(feeds.next(), "marketLevel", "marketOHLC")
    for feed in (whole, update):
        [(name, _, payload, _)] = processor.process(frame(feed)).entries
        fan.publish(name, payload)
    assert fan.stats.conflated == 1
    assert fan.resume(sub)
    fan.flush()
    live = sink.frames[-1]
    assert live.type == pb.live_feed
    assert MessageToDict(live.feeds[KEY]) == MessageToDict(merge_feed(whole, update))
    assert live.feeds[KEY].fullFeed.marketFF.marketLevel.bidAskQuote  # from the superseded one
