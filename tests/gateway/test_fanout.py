"""The fan-out core without I/O: who gets which update, when, and what is conflated."""

from __future__ import annotations

import json
from typing import Any

from websockets.frames import Frame
from websockets.streams import StreamReader

from services.gateway.fanout import Channel, FanOut, FirstValues, Subscriber
from services.gateway.protocol import FeedItem
from shared.instruments import Mode
from shared.redis_contract import encode_tick, tick_channel

NIFTY = "NSE_INDEX|Nifty 50"
BANK = "NSE_INDEX|Nifty Bank"


class RecordingSink:
    """Collects the frames a subscriber is sent, decoded."""

    def __init__(self) -> None:
        self.frames: list[dict[str, Any]] = []

    def send_frame(self, frame: bytes) -> None:
        reader = StreamReader()
        reader.feed_data(frame)
        parser = Frame.parse(reader.read_exact, mask=False)
        try:
            next(parser)
        except StopIteration as done:
            self.frames.append(json.loads(bytes(done.value.data)))
            return
        raise AssertionError("the sink got an incomplete frame")

    def backlog(self) -> int:
        return 0

    def seqs(self, key: str) -> list[int]:
        return [f["meta"][key]["seq"] for f in self.frames if key in f.get("meta", {})]


def tick(seq: int, price: float = 1.0) -> bytes:
    return encode_tick(b'{"ltpc":{"ltp":%s}}' % str(price).encode(), seq, "e1", 1000 + seq)


def name(key: str, mode: Mode = Mode.LTPC) -> bytes:
    return tick_channel(mode, key).encode()


def subscribed(fan: FanOut, *keys: str, mode: Mode = Mode.LTPC) -> tuple[Subscriber, RecordingSink]:
    sink = RecordingSink()
    sub = Subscriber(sink)
    channels = [fan.join(sub, mode, key).channel for key in keys]
    assert fan.complete(sub, [(ch, None) for ch in channels]) is not None
    return sub, sink


def test_one_channel_per_key_and_mode_shared_by_subscribers() -> None:
    fan = FanOut(lambda: 1)
    a, b = Subscriber(RecordingSink()), Subscriber(RecordingSink())
    first = fan.join(a, Mode.LTPC, NIFTY)
    second = fan.join(b, Mode.LTPC, NIFTY)
    other = fan.join(b, Mode.FULL, BANK)
    assert first.opened and not second.opened and other.opened
    assert first.channel is second.channel
    assert set(fan.channels) == {(Mode.LTPC, NIFTY), (Mode.FULL, BANK)}
    assert fan.modes_of(NIFTY) == {Mode.LTPC} and fan.modes_of("NSE_EQ|X") == set()
    assert fan.part(a, NIFTY) == (True, None)  # b still holds it
    held, closed = fan.part(b, NIFTY)
    assert held and isinstance(closed, Channel) and closed.key == NIFTY
    assert fan.part(b, NIFTY) == (False, None)
    assert fan.remove(b)[0].key == BANK
    assert fan.channels == {} and fan.by_name == {}


def test_switching_mode_leaves_the_old_channel() -> None:
    fan = FanOut(lambda: 1)
    sub = Subscriber(RecordingSink())
    fan.join(sub, Mode.LTPC, NIFTY)
    switch = fan.join(sub, Mode.FULL, NIFTY)
    assert switch.opened and switch.closed is not None and switch.closed.mode is Mode.LTPC
    assert sub.subs[NIFTY].mode is Mode.FULL
    assert fan.modes_of(NIFTY) == {Mode.FULL}
    again = fan.join(sub, Mode.FULL, NIFTY)
    assert not again.opened and again.closed is None


def test_joiners_get_no_live_update_before_their_snapshot() -> None:
    fan = FanOut(lambda: 1)
    sink = RecordingSink()
    sub = Subscriber(sink)
    channel = fan.join(sub, Mode.LTPC, NIFTY).channel
    assert fan.publish(name(NIFTY), tick(1)) is False  # nobody is live on it yet
    fan.flush()
    assert sink.frames == []
    frame = fan.complete(sub, [(channel, channel.latest)])
    assert frame is not None
    sink.send_frame(frame)
    assert sink.frames[0]["type"] == "initial_feed" and sink.seqs(NIFTY) == [1]
    assert fan.publish(name(NIFTY), tick(2))
    fan.flush()
    assert [f["type"] for f in sink.frames] == ["initial_feed", "live_feed"]
    assert sink.seqs(NIFTY) == [1, 2]


def test_updates_are_coalesced_into_one_frame_per_flush() -> None:
    fan = FanOut(lambda: 1)
    _sub, sink = subscribed(fan, NIFTY, BANK)
    sink.frames.clear()
    fan.publish(name(NIFTY), tick(1))
    fan.publish(name(BANK), tick(1))
    assert fan.flush() == 1
    assert len(sink.frames) == 1
    assert list(sink.frames[0]["feeds"]) == [NIFTY, BANK]
    assert fan.flush() == 0


def test_a_client_that_keeps_up_gets_every_update_in_order() -> None:
    fan = FanOut(lambda: 1)
    _, sink = subscribed(fan, NIFTY)
    sink.frames.clear()
    for seq in range(1, 6):
        fan.publish(name(NIFTY), tick(seq))
    fan.flush()
    assert sink.seqs(NIFTY) == [1, 2, 3, 4, 5]
    assert fan.stats.conflated == 0 and len(sink.frames) == 5  # four of them flushed early


def test_an_overloaded_fanout_supersedes_instead_of_multiplying_frames() -> None:
    fan = FanOut(lambda: 1)
    _, sink = subscribed(fan, NIFTY)
    sink.frames.clear()
    fan.eager = False  # what the hub sets while its flushes run late
    for seq in range(1, 6):
        fan.publish(name(NIFTY), tick(seq))
    fan.flush()
    assert sink.seqs(NIFTY) == [5]
    assert fan.stats.conflated == 4 and len(sink.frames) == 1  # none flushed early


def test_a_client_behind_gets_the_latest_value_only_once_it_drains() -> None:
    fan = FanOut(lambda: 1)
    slow, slow_sink = subscribed(fan, NIFTY, BANK)
    _fast, fast_sink = subscribed(fan, NIFTY)
    slow_sink.frames.clear()
    fast_sink.frames.clear()
    slow.behind = True
    for seq in range(1, 6):
        fan.publish(name(NIFTY), tick(seq, price=seq))
    fan.publish(name(BANK), tick(1))
    fan.flush()
    assert slow_sink.frames == []
    assert fast_sink.seqs(NIFTY) == [1, 2, 3, 4, 5]
    assert fan.stats.conflated == 4
    assert fan.resume(slow)
    fan.flush()
    assert len(slow_sink.frames) == 1
    assert slow_sink.frames[0]["feeds"][NIFTY] == {"ltpc": {"ltp": 5}}
    assert slow_sink.seqs(NIFTY) == [5] and slow_sink.seqs(BANK) == [1]
    assert not fan.resume(slow)  # nothing pending any more


def test_resolve_prefers_a_live_update_that_arrived_during_the_read() -> None:
    fan = FanOut(lambda: 1)
    sub = Subscriber(RecordingSink())
    channel = fan.join(sub, Mode.LTPC, NIFTY).channel
    before = channel.version
    fan.publish(name(NIFTY), tick(9))  # arrives while the MGET is in flight
    item = fan.resolve(channel, tick(8), before)
    assert item is channel.latest and item is not None and b'"seq":9' in item.meta
    before = channel.version
    item = fan.resolve(channel, tick(10), before)  # nothing arrived: Redis's value is newest
    assert item is not None and b'"seq":10' in item.meta and channel.latest is item
    assert fan.resolve(channel, None, channel.version) is channel.latest


def test_snapshot_drops_pending_updates_it_supersedes() -> None:
    fan = FanOut(lambda: 1)
    sub, sink = subscribed(fan, NIFTY)
    sink.frames.clear()
    sub.behind = True
    fan.publish(name(NIFTY), tick(1))
    channel = sub.subs[NIFTY]
    frame = fan.complete(sub, [(channel, channel.latest)])
    assert frame is not None and not sub.pending
    sub.behind = False
    assert not fan.resume(sub)


def test_stray_messages_and_removed_subscribers() -> None:
    fan = FanOut(lambda: 1)
    sub, sink = subscribed(fan, NIFTY)
    assert fan.publish(name(BANK), tick(1)) is False
    assert fan.stats.messages == 1 and fan.stats.delivered == 0
    fan.publish(name(NIFTY), tick(1))
    fan.remove(sub)
    sink.frames.clear()
    assert fan.flush() == 0 and sink.frames == []
    assert fan.complete(sub, []) is None


# ---- first values: a key without a value waits for its first ------------------------------


def waiting(
    fan: FanOut, *keys: str, values: dict[str, bytes] | None = None
) -> tuple[Subscriber, RecordingSink, FirstValues | None]:
    """A subscriber joining `keys` whose snapshot has `values` (the others have none)."""
    sink = RecordingSink()
    sub = Subscriber(sink)
    items: list[tuple[Channel, FeedItem | None]] = []
    for key in keys:
        channel = fan.join(sub, Mode.LTPC, key).channel
        stored = (values or {}).get(key)
        items.append((channel, None if stored is None else fan.resolve(channel, stored, 0)))
    frame, first = fan.complete_waiting(sub, items)
    if frame is not None:
        sink.send_frame(frame)
    return sub, sink, first


def kinds(sink: RecordingSink) -> list[tuple[str, dict[str, int]]]:
    return [(f["type"], {k: m["seq"] for k, m in f["meta"].items()}) for f in sink.frames]


def test_keys_with_values_go_at_once_and_a_first_value_follows_as_initial_feed() -> None:
    fan = FanOut(lambda: 1)
    sub, sink, first = waiting(fan, NIFTY, BANK, values={NIFTY: tick(7)})
    assert kinds(sink) == [("initial_feed", {NIFTY: 7})]
    assert first is not None and first.sent and sub.awaiting == {sub.subs[BANK]: first}
    fan.publish(name(BANK), tick(1))
    fan.publish(name(NIFTY), tick(8))
    fan.flush()
    fan.publish(name(BANK), tick(2))
    fan.flush()
    assert kinds(sink)[1:] == [
        ("initial_feed", {BANK: 1}),  # the first value, ahead of the live frame of the flush
        ("live_feed", {NIFTY: 8}),
        ("live_feed", {BANK: 2}),
    ]
    assert fan.expire(sub, first) is None  # nothing left to send
    assert fan.stats.first_value_waits == 1 and fan.stats.first_value_misses == 0


def test_with_no_value_at_all_the_initial_feed_waits_for_the_first_ones() -> None:
    fan = FanOut(lambda: 1)
    sub, sink, first = waiting(fan, NIFTY, BANK)
    assert sink.frames == [] and first is not None and not first.sent
    fan.publish(name(NIFTY), tick(1))
    fan.publish(name(BANK), tick(1))
    fan.flush()
    assert kinds(sink) == [("initial_feed", {NIFTY: 1, BANK: 1})]  # one frame for the flush
    assert first.sent and not sub.awaiting
    assert fan.expire(sub, first) is None


def test_at_the_end_of_the_wait_a_key_without_value_is_absent_and_then_live() -> None:
    fan = FanOut(lambda: 1)
    sub, sink, first = waiting(fan, NIFTY, BANK)
    assert first is not None
    fan.publish(name(NIFTY), tick(1))
    fan.flush()
    frame = fan.expire(sub, first)
    assert frame is None  # the request was answered by NIFTY's first value
    fan.publish(name(BANK), tick(1))
    fan.flush()
    assert kinds(sink) == [("initial_feed", {NIFTY: 1}), ("live_feed", {BANK: 1})]
    assert fan.stats.first_value_waits == 2 and fan.stats.first_value_misses == 1

    lone, lone_sink, lone_first = waiting(fan, BANK)
    assert lone_sink.frames == [] and lone_first is not None
    frame = fan.expire(lone, lone_first)
    assert frame is not None  # never answered: an empty initial_feed at the end of the wait
    lone_sink.send_frame(frame)
    fan.publish(name(BANK), tick(2))
    fan.flush()
    assert kinds(lone_sink) == [("initial_feed", {}), ("live_feed", {BANK: 2})]


def test_a_first_value_goes_ahead_of_a_live_frame_flushed_early() -> None:
    fan = FanOut(lambda: 1)
    _, sink, _ = waiting(fan, NIFTY, BANK, values={NIFTY: tick(1)})
    sink.frames.clear()
    fan.publish(name(BANK), tick(1))
    fan.publish(name(NIFTY), tick(2))
    fan.publish(name(BANK), tick(2))  # BANK pending again: the pending frame goes first
    fan.flush()
    assert kinds(sink) == [
        ("initial_feed", {BANK: 1}),
        ("live_feed", {NIFTY: 2}),
        ("live_feed", {BANK: 2}),
    ]


def test_a_subscriber_behind_gets_its_latest_first_value_when_the_wait_ends() -> None:
    fan = FanOut(lambda: 1)
    sub, sink, first = waiting(fan, BANK)
    sub.behind = True
    fan.publish(name(BANK), tick(1))
    fan.publish(name(BANK), tick(2))  # conflated while behind
    fan.flush()
    assert sink.frames == [] and first is not None
    frame = fan.expire(sub, first)
    assert frame is not None
    sink.send_frame(frame)
    assert kinds(sink) == [("initial_feed", {BANK: 2})]
    assert not fan.resume(sub)  # nothing pending any more
    assert fan.stats.first_value_misses == 0


def test_a_resent_snapshot_or_leaving_ends_a_wait() -> None:
    fan = FanOut(lambda: 1)
    sub, _, first = waiting(fan, NIFTY, BANK)
    assert first is not None
    nifty = sub.subs[NIFTY]
    frame = fan.complete(sub, [(nifty, fan.resolve(nifty, tick(5), nifty.version))])
    assert frame is not None  # e.g. the snapshots resent after a Redis outage
    assert first.sent and set(sub.awaiting) == {sub.subs[BANK]}
    fan.part(sub, BANK)
    assert sub.awaiting == {}
    assert fan.expire(sub, first) is None
    assert fan.stats.first_value_misses == 0  # BANK was left, not missed


def test_hopeless_keys_do_not_wait_and_closed_subscribers_get_nothing() -> None:
    fan = FanOut(lambda: 1)
    sub = Subscriber(RecordingSink())
    channel = fan.join(sub, Mode.LTPC, NIFTY).channel
    frame, first = fan.complete_waiting(sub, [(channel, None)], hopeless={channel})
    assert frame is not None and first is None and sub.awaiting == {}
    other, _, other_first = waiting(fan, BANK)
    assert other_first is not None
    fan.remove(other)
    assert other.awaiting == {} and fan.expire(other, other_first) is None
    assert fan.complete_waiting(other, []) == (None, None)
