"""Building the feed's protobuf frames (`FeedResponse`) from market snapshots.

Each instrument's update is serialised once per tick and mode as a ready-made `feeds` map entry;
a frame for a connection is then the concatenation of its entries between a header and the
timestamp (protobuf merges repeated map entries, so this is a valid `FeedResponse`). The entry
bytes are shared by every connection that wants that key in that mode.

Partial ticks: a live tick may leave out the sub-messages that did not change since the previous
tick of the instrument (`unchanged_parts`), as Upstox's do (a `marketFF` without `marketLevel`):
the depth (`marketLevel`, or `firstDepth` in option_greeks mode), the greeks (`optionGreeks`) and
the candles (`marketOHLC`). `ltpc` is always sent (it is the tick), and so are the scalars: proto3
gives them no presence, so a scalar left out would read as zero, not as unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from services.simulator.market import Candle, Snapshot
from shared.feed_frames import feed_entry, initial_frame, live_frame
from shared.instruments import Mode
from shared.proto import pb

# The frame builders are shared with the gateway's Upstox-protocol path (`shared.feed_frames`).
__all__ = [
    "build_feed",
    "feed_entry",
    "initial_frame",
    "live_frame",
    "malformed_frame",
    "market_info_frame",
    "unchanged_parts",
]

REQUEST_MODE: Final = {
    Mode.LTPC: pb.ltpc,
    Mode.OPTION_GREEKS: pb.option_greeks,
    Mode.FULL: pb.full_d5,
    Mode.FULL_D30: pb.full_d30,
}
DEPTH: Final = {Mode.LTPC: 0, Mode.OPTION_GREEKS: 1, Mode.FULL: 5, Mode.FULL_D30: 30}

# Parts a partial live tick leaves out (bit flags for `build_feed`'s `leave_out`).
SAME_DEPTH: Final = 1
SAME_GREEKS: Final = 2
SAME_OHLC: Final = 4

_TYPE_MARKET_INFO: Final = b"\x08\x02"


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


def _fill_quote(target: pb.Quote, bid: tuple[float, int], ask: tuple[float, int]) -> None:
    target.bidP, target.bidQ = bid
    target.askP, target.askQ = ask


def _greek_values(snap: Snapshot) -> tuple[float, float, float, float, float] | None:
    """The greeks as the feed carries them (rounded), None when the instrument has none."""
    greeks = snap.greeks
    if greeks is None:
        return None
    return (
        round(greeks.delta, 4),
        round(greeks.theta, 4),
        round(greeks.gamma, 6),
        round(greeks.vega, 4),
        round(greeks.rho, 4),
    )


def _fill_greeks(target: pb.OptionGreeks, snap: Snapshot) -> None:
    values = _greek_values(snap)
    if values is not None:
        target.delta, target.theta, target.gamma, target.vega, target.rho = values


def unchanged_parts(snap: Snapshot, previous: Snapshot | None, mode: Mode) -> int:
    """The parts of `snap` (`SAME_*` flags) that `mode`'s feed showed unchanged in `previous`,
    the instrument's previous tick (None: no previous tick to refer to, nothing is left out)."""
    if previous is None or mode is Mode.LTPC:
        return 0
    same = 0
    levels = DEPTH[mode]
    if (
        snap.bids
        and snap.bids[:levels] == previous.bids[:levels]
        and snap.asks[:levels] == previous.asks[:levels]
    ):
        same |= SAME_DEPTH
    greeks = _greek_values(snap)
    if greeks is not None and greeks == _greek_values(previous):
        same |= SAME_GREEKS
    if snap.day is not None and snap.day == previous.day and snap.minute == previous.minute:
        same |= SAME_OHLC
    return same


def build_feed(snap: Snapshot, mode: Mode, is_index: bool, leave_out: int = 0) -> pb.Feed:
    """The `Feed` message Upstox sends for an instrument subscribed in `mode`, without the
    parts flagged in `leave_out` (`SAME_*`: unchanged since the previous tick)."""
    feed = pb.Feed()
    if mode is Mode.LTPC:
        _fill_ltpc(feed.ltpc, snap)
    elif mode is Mode.OPTION_GREEKS:
        first = feed.firstLevelWithGreeks
        _fill_ltpc(first.ltpc, snap)
        if snap.bids and not leave_out & SAME_DEPTH:
            _fill_quote(first.firstDepth, snap.bids[0], snap.asks[0])
        if snap.greeks is not None and not leave_out & SAME_GREEKS:
            _fill_greeks(first.optionGreeks, snap)
        first.vtt = snap.vtt
        first.oi = snap.oi
        first.iv = snap.iv
    elif is_index:
        index = feed.fullFeed.indexFF
        _fill_ltpc(index.ltpc, snap)
        if not leave_out & SAME_OHLC:
            _fill_ohlc(index.marketOHLC, snap.day, snap.minute)
    else:
        market = feed.fullFeed.marketFF
        _fill_ltpc(market.ltpc, snap)
        if not leave_out & SAME_DEPTH:
            quotes = market.marketLevel.bidAskQuote
            levels = DEPTH[mode]
            for bid, ask in zip(snap.bids[:levels], snap.asks[:levels], strict=True):
                _fill_quote(quotes.add(), bid, ask)
        if snap.greeks is not None and not leave_out & SAME_GREEKS:
            _fill_greeks(market.optionGreeks, snap)
        if not leave_out & SAME_OHLC:
            _fill_ohlc(market.marketOHLC, snap.day, snap.minute)
        market.atp = snap.atp
        market.vtt = snap.vtt
        market.oi = snap.oi
        market.iv = snap.iv
        market.tbq = snap.tbq
        market.tsq = snap.tsq
    feed.requestMode = REQUEST_MODE[mode]
    return feed


def market_info_frame(statuses: Mapping[str, str], current_ms: int) -> bytes:
    response = pb.FeedResponse(type=pb.market_info, currentTs=current_ms)
    for segment, status in statuses.items():
        response.marketInfo.segmentStatus[segment] = pb.MarketStatus.Value(status)  # type: ignore[assignment]
    return response.SerializeToString()


def malformed_frame() -> bytes:
    """Bytes that are not a `FeedResponse`: a field-2 length prefix running past the end."""
    return b"\x12\xff\xff\xff\x0f\x00garbage"
