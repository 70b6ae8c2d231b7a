"""Realistic V3 feed frames for benchmarks (and tests that want lifelike data).

Values follow what Upstox sends in each mode: prices on the 0.05 tick, quantities in lots,
millisecond timestamps, 5 (or 30) depth levels, 1d and I1 OHLC candles, greeks for options,
OI/IV for derivatives, and several instruments per frame. Every feed differs (a seeded random
walk), so nothing benefits from repeated identical values.
"""

from __future__ import annotations

import enum
import random
from typing import Final

from shared.instruments import SEGMENTS
from shared.proto import pb

BASE_TS: Final = 1_740_727_891_235  # ms since epoch, a trading day at 13:01 IST
DAY_START: Final = 1_740_700_800_000
FEEDS_PER_FRAME: Final = 20


class FrameKind(enum.StrEnum):
    """One kind of frame: which mode it was subscribed in and which instruments it carries."""

    FULL_OPTION = "full option (5 levels, 1d+I1, greeks)"
    FULL_EQUITY = "full equity (5 levels, 1d+I1)"
    FULL_INDEX = "full index (indexFF, 1d+I1)"
    FULL_D30 = "full_d30 option (30 levels)"
    OPTION_GREEKS = "option_greeks option"
    LTPC = "ltpc"


def _price(rng: random.Random, around: float) -> float:
    """A price on the exchange's 0.05 tick, as the feed carries it."""
    return round(round(around * rng.uniform(0.97, 1.03) / 0.05) * 0.05, 2)


def _ltpc(rng: random.Random, around: float, ts: int, index: bool = False) -> pb.LTPC:
    return pb.LTPC(
        ltp=_price(rng, around),
        ltt=ts - rng.randrange(0, 900),
        ltq=0 if index else 75 * rng.randrange(1, 40),
        cp=_price(rng, around),
    )


def _ohlc(rng: random.Random, around: float, ts: int, volume: bool) -> list[pb.OHLC]:
    candles = []
    for interval, start, scale in (("1d", DAY_START, 400), ("I1", ts - ts % 60_000, 1)):
        low, high = sorted((_price(rng, around * 0.98), _price(rng, around * 1.02)))
        candles.append(
            pb.OHLC(
                interval=interval,
                open=_price(rng, around),
                high=high,
                low=low,
                close=_price(rng, around),
                vol=75 * rng.randrange(1, 20_000) * scale if volume else 0,
                ts=start,
            )
        )
    return candles


def _depth(rng: random.Random, ltp: float, levels: int) -> list[pb.Quote]:
    return [
        pb.Quote(
            bidQ=75 * rng.randrange(1, 200),
            bidP=round(ltp - 0.05 * (level + 1), 2),
            askQ=75 * rng.randrange(1, 200),
            askP=round(ltp + 0.05 * (level + 1), 2),
        )
        for level in range(levels)
    ]


def _greeks(rng: random.Random) -> pb.OptionGreeks:
    return pb.OptionGreeks(
        delta=round(rng.uniform(-1, 1), 4),
        theta=round(rng.uniform(-40, -0.5), 4),
        gamma=round(rng.uniform(0.0001, 0.01), 4),
        vega=round(rng.uniform(0.5, 20), 4),
        rho=round(rng.uniform(-5, 5), 4),
    )


def build_feed(kind: FrameKind, rng: random.Random, ts: int) -> pb.Feed:
    if kind == FrameKind.LTPC:
        return pb.Feed(ltpc=_ltpc(rng, 2500.0, ts))
    if kind == FrameKind.OPTION_GREEKS:
        ltpc = _ltpc(rng, 180.0, ts)
        first = pb.FirstLevelWithGreeks(
            ltpc=ltpc,
            firstDepth=_depth(rng, ltpc.ltp, 1)[0],
            optionGreeks=_greeks(rng),
            vtt=75 * rng.randrange(1, 500_000),
            oi=75.0 * rng.randrange(1, 100_000),
            iv=round(rng.uniform(0.08, 0.6), 4),
        )
        return pb.Feed(firstLevelWithGreeks=first, requestMode=pb.option_greeks)
    if kind == FrameKind.FULL_INDEX:
        index = pb.IndexFullFeed(ltpc=_ltpc(rng, 22500.0, ts, index=True))
        index.marketOHLC.ohlc.extend(_ohlc(rng, 22500.0, ts, volume=False))
        return pb.Feed(fullFeed=pb.FullFeed(indexFF=index), requestMode=pb.full_d5)
    option = kind in (FrameKind.FULL_OPTION, FrameKind.FULL_D30)
    around = 180.0 if option else 2500.0
    market = pb.MarketFullFeed(
        ltpc=_ltpc(rng, around, ts),
        atp=_price(rng, around),
        vtt=75 * rng.randrange(1, 500_000),
        tbq=float(75 * rng.randrange(1, 50_000)),
        tsq=float(75 * rng.randrange(1, 50_000)),
    )
    levels = 30 if kind == FrameKind.FULL_D30 else 5
    market.marketLevel.bidAskQuote.extend(_depth(rng, market.ltpc.ltp, levels))
    market.marketOHLC.ohlc.extend(_ohlc(rng, around, ts, volume=True))
    if option:
        market.optionGreeks.CopyFrom(_greeks(rng))
        market.oi = 75.0 * rng.randrange(1, 100_000)
        market.iv = round(rng.uniform(0.08, 0.6), 4)
    mode = pb.full_d30 if kind == FrameKind.FULL_D30 else pb.full_d5
    return pb.Feed(fullFeed=pb.FullFeed(marketFF=market), requestMode=mode)


def instrument_key(kind: FrameKind, number: int) -> str:
    if kind == FrameKind.FULL_INDEX:
        return f"NSE_INDEX|Index {number}"
    if kind in (FrameKind.FULL_EQUITY, FrameKind.LTPC):
        return f"NSE_EQ|INE{number:06d}01018"
    return f"NSE_FO|{45000 + number}"


def build_frames(
    kind: FrameKind, count: int, feeds_per_frame: int = FEEDS_PER_FRAME, seed: int = 1
) -> list[pb.FeedResponse]:
    """`count` live_feed frames of `kind`, each with `feeds_per_frame` instruments."""
    rng = random.Random(f"{kind.name}:{seed}")
    frames = []
    for number in range(count):
        ts = BASE_TS + 250 * number
        frame = pb.FeedResponse(type=pb.live_feed, currentTs=ts)
        for slot in range(feeds_per_frame):
            frame.feeds[instrument_key(kind, slot)].CopyFrom(build_feed(kind, rng, ts))
        frames.append(frame)
    return frames


def mixed_frames(
    count: int, feeds_per_frame: int = FEEDS_PER_FRAME, seed: int = 1
) -> list[pb.FeedResponse]:
    """Frames mixing every kind in turn, as one upstream connection sees them."""
    kinds = list(FrameKind)
    per_kind = {kind: build_frames(kind, count, feeds_per_frame, seed) for kind in kinds}
    return [per_kind[kinds[number % len(kinds)]][number] for number in range(count)]


def market_info_frame() -> pb.FeedResponse:
    """The market_info frame Upstox sends first on every connection."""
    frame = pb.FeedResponse(type=pb.market_info, currentTs=BASE_TS)
    for segment in SEGMENTS:
        frame.marketInfo.segmentStatus[segment] = pb.NORMAL_OPEN
    return frame
