"""Building the feed's protobuf frames (`FeedResponse`) from market snapshots.

Each instrument's update is serialised once per tick and mode as a ready-made `feeds` map entry;
a frame for a connection is then the concatenation of its entries between a header and the
timestamp (protobuf merges repeated map entries, so this is a valid `FeedResponse`). The entry
bytes are shared by every connection that wants that key in that mode.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

from services.simulator.market import Candle, Snapshot
from shared.instruments import Mode
from shared.proto import pb

REQUEST_MODE: Final = {
    Mode.LTPC: pb.ltpc,
    Mode.OPTION_GREEKS: pb.option_greeks,
    Mode.FULL: pb.full_d5,
    Mode.FULL_D30: pb.full_d30,
}
DEPTH: Final = {Mode.LTPC: 0, Mode.OPTION_GREEKS: 1, Mode.FULL: 5, Mode.FULL_D30: 30}

_TYPE_INITIAL: Final = b""  # initial_feed is enum value 0: proto3 leaves it out
_TYPE_LIVE: Final = b"\x08\x01"
_TYPE_MARKET_INFO: Final = b"\x08\x02"


def _varint(value: int) -> bytes:
    out = bytearray()
    value &= (1 << 64) - 1
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _fill_ltpc(target: pb.LTPC, snap: Snapshot) -> None:
    target.ltp = snap.ltp
    target.ltt = snap.ltt
    target.ltq = snap.ltq
    target.cp = snap.cp


def _fill_ohlc(target: pb.MarketOHLC, day: Candle | None, minute: Candle | None) -> None:
    for interval, candle in (("1d", day), ("I1", minute)):
        if candle is None:
            continue
        entry = target.ohlc.add()
        entry.interval = interval
        entry.open = candle.open
        entry.high = candle.high
        entry.low = candle.low
        entry.close = candle.close
        entry.vol = candle.volume
        entry.ts = candle.ts


def _fill_greeks(target: pb.OptionGreeks, snap: Snapshot) -> None:
    greeks = snap.greeks
    if greeks is None:
        return
    target.delta = round(greeks.delta, 4)
    target.theta = round(greeks.theta, 4)
    target.gamma = round(greeks.gamma, 6)
    target.vega = round(greeks.vega, 4)
    target.rho = round(greeks.rho, 4)


def build_feed(snap: Snapshot, mode: Mode, is_index: bool) -> pb.Feed:
    """The `Feed` message Upstox sends for an instrument subscribed in `mode`."""
    feed = pb.Feed()
    if mode is Mode.LTPC:
        _fill_ltpc(feed.ltpc, snap)
    elif mode is Mode.OPTION_GREEKS:
        first = feed.firstLevelWithGreeks
        _fill_ltpc(first.ltpc, snap)
        if snap.bids:
            bid_price, bid_quantity = snap.bids[0]
            ask_price, ask_quantity = snap.asks[0]
            depth = first.firstDepth
            depth.bidQ, depth.bidP, depth.askQ, depth.askP = (
                bid_quantity,
                bid_price,
                ask_quantity,
                ask_price,
            )
        if snap.greeks is not None:
            _fill_greeks(first.optionGreeks, snap)
        first.vtt = snap.vtt
        first.oi = snap.oi
        first.iv = snap.iv
    elif is_index:
        index = feed.fullFeed.indexFF
        _fill_ltpc(index.ltpc, snap)
        _fill_ohlc(index.marketOHLC, snap.day, snap.minute)
    else:
        market = feed.fullFeed.marketFF
        _fill_ltpc(market.ltpc, snap)
        quotes = market.marketLevel.bidAskQuote
        for (bid_price, bid_quantity), (ask_price, ask_quantity) in zip(
            snap.bids[: DEPTH[mode]], snap.asks[: DEPTH[mode]], strict=True
        ):
            quote = quotes.add()
            quote.bidQ, quote.bidP, quote.askQ, quote.askP = (
                bid_quantity,
                bid_price,
                ask_quantity,
                ask_price,
            )
        if snap.greeks is not None:
            _fill_greeks(market.optionGreeks, snap)
        _fill_ohlc(market.marketOHLC, snap.day, snap.minute)
        market.atp = snap.atp
        market.vtt = snap.vtt
        market.oi = snap.oi
        market.iv = snap.iv
        market.tbq = snap.tbq
        market.tsq = snap.tsq
    feed.requestMode = REQUEST_MODE[mode]
    return feed


_SMALL_VARINTS: Final = tuple(_varint(value) for value in range(1 << 14))


def _length(value: int) -> bytes:
    return _SMALL_VARINTS[value] if value < 16_384 else _varint(value)


def feed_entry(key: str, feed: pb.Feed) -> bytes:
    """`feeds` map entry bytes (field 2) for one instrument, ready to concatenate."""
    key_bytes = key.encode()
    feed_bytes = feed.SerializeToString()
    entry = b"\x0a" + _length(len(key_bytes)) + key_bytes
    entry += b"\x12" + _length(len(feed_bytes)) + feed_bytes
    return b"\x12" + _length(len(entry)) + entry


def _timestamp(current_ms: int) -> bytes:
    return b"\x18" + _varint(current_ms)


def live_frame(entries: Iterable[bytes], current_ms: int) -> bytes:
    return _TYPE_LIVE + b"".join(entries) + _timestamp(current_ms)


def initial_frame(entries: Iterable[bytes], current_ms: int) -> bytes:
    return _TYPE_INITIAL + b"".join(entries) + _timestamp(current_ms)


def market_info_frame(statuses: Mapping[str, str], current_ms: int) -> bytes:
    response = pb.FeedResponse(type=pb.market_info, currentTs=current_ms)
    for segment, status in statuses.items():
        response.marketInfo.segmentStatus[segment] = pb.MarketStatus.Value(status)  # type: ignore[assignment]
    return response.SerializeToString()


def malformed_frame() -> bytes:
    """Bytes that are not a `FeedResponse`: a field-2 length prefix running past the end."""
    return b"\x12\xff\xff\xff\x0f\x00garbage"
