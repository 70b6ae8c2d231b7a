"""The renderer's implementation; `shared.render`'s docstring is the contract."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import orjson
from google.protobuf.message import DecodeError

from shared.instruments import Mode
from shared.proto import pb
from shared.render._builders import Builder, compile_builders


class RenderError(ValueError):
    """Bytes that are not a decodable `FeedResponse`."""


class ProjectionError(ValueError):
    """A feed that cannot serve the requested mode (it is poorer, or carries no data)."""


def _name(message: Any) -> str:
    return str(message.DESCRIPTOR.full_name)


_ALL: Final = compile_builders(pb.FeedResponse.DESCRIPTOR)
# full_d30 -> full: the same MarketFullFeed builder, cut to Upstox's 5 levels of full mode.
_D5: Final = compile_builders(
    pb.MarketFullFeed.DESCRIPTOR,
    limits={pb.MarketLevel.DESCRIPTOR.fields_by_name["bidAskQuote"].full_name: 5},
)


@dataclass(frozen=True)
class _Set:
    """One variant (fast or NaN-safe) of every builder the renderer calls."""

    response: Builder
    feed: Builder
    ltpc: Builder
    quote: Builder
    greeks: Builder
    index_ff: Builder
    market_ff_d5: Builder
    safe: bool

    @classmethod
    def of(cls, safe: bool) -> _Set:
        b, d5 = (_ALL.safe, _D5.safe) if safe else (_ALL.fast, _D5.fast)
        return cls(
            response=b[_name(pb.FeedResponse)],
            feed=b[_name(pb.Feed)],
            ltpc=b[_name(pb.LTPC)],
            quote=b[_name(pb.Quote)],
            greeks=b[_name(pb.OptionGreeks)],
            index_ff=b[_name(pb.IndexFullFeed)],
            market_ff_d5=d5[_name(pb.MarketFullFeed)],
            safe=safe,
        )


_FAST: Final = _Set.of(safe=False)
_SAFE: Final = _Set.of(safe=True)


def _dumps(build: Callable[[_Set], object]) -> bytes:
    out = orjson.dumps(build(_FAST))
    # orjson writes NaN and the infinities as null, and nothing else of ours is a bare null:
    # a hit (or a string that merely contains "null") costs one safe re-render.
    if b"null" in out:
        out = orjson.dumps(build(_SAFE))
    return out


def decode_frame(data: bytes | bytearray | memoryview) -> pb.FeedResponse:
    """Parse one binary feed frame; `RenderError` says why when the bytes are malformed."""
    try:
        return pb.FeedResponse.FromString(bytes(data))
    except DecodeError as exc:
        raise RenderError(f"undecodable feed frame ({len(data)} bytes): {exc}") from None


_FEED_FAST: Final = _FAST.feed
_FEED_SAFE: Final = _SAFE.feed
_json: Final = orjson.dumps


def render_feed(feed: pb.Feed) -> bytes:
    # `_dumps` inlined: this is the per-instrument hot path.
    out = _json(_FEED_FAST(feed))
    return _json(_FEED_SAFE(feed)) if b"null" in out else out


def render_frame(frame: pb.FeedResponse) -> dict[str, bytes]:
    rendered = {}
    for key, feed in frame.feeds.items():
        out = _json(_FEED_FAST(feed))
        rendered[key] = _json(_FEED_SAFE(feed)) if b"null" in out else out
    return rendered


def render_frame_envelope(frame: pb.FeedResponse) -> bytes:
    return _dumps(lambda b: b.response(frame))


def feed_mode(feed: pb.Feed) -> Mode | None:
    branch = feed.WhichOneof("FeedUnion")
    if branch == "fullFeed":
        return Mode.FULL_D30 if feed.requestMode == pb.full_d30 else Mode.FULL
    if branch == "firstLevelWithGreeks":
        return Mode.OPTION_GREEKS
    if branch == "ltpc":
        return Mode.LTPC
    return None


def project(feed: pb.Feed, mode: Mode) -> bytes:
    source = feed_mode(feed)
    if source is None:
        raise ProjectionError("the feed carries no ltpc, fullFeed or firstLevelWithGreeks")
    if source == mode:
        return render_feed(feed)
    if not source.covers(mode):
        raise ProjectionError(f"a {source} feed cannot serve {mode}: it lacks that data")
    if mode == Mode.LTPC:
        return _dumps(lambda b: _as_ltpc(feed, b))
    if mode == Mode.OPTION_GREEKS:
        return _dumps(lambda b: _as_option_greeks(feed, b))
    return _dumps(lambda b: _as_full(feed, b))  # full from full_d30


def _message(builder: Builder, parent: Any, field: str) -> dict[str, Any] | None:
    """A singular sub-message's rendering, or None when it is absent (not merely empty)."""
    rendered = builder(getattr(parent, field))
    return rendered if rendered or parent.HasField(field) else None


def _double(value: float, safe: bool) -> float | str | None:
    """A double field's JSON value, or None when proto3 would leave it out."""
    if not value and math.copysign(1.0, value) > 0.0:
        return None
    if safe and value - value != 0.0:
        return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
    return value


def _source_ltpc(feed: pb.Feed) -> pb.LTPC:
    """The feed's LTPC, wherever its branch keeps it (a default instance when absent)."""
    branch = feed.WhichOneof("FeedUnion")
    if branch == "firstLevelWithGreeks":
        return feed.firstLevelWithGreeks.ltpc
    if branch == "fullFeed":
        full = feed.fullFeed
        if full.WhichOneof("FullFeedUnion") == "indexFF":
            return full.indexFF.ltpc
        return full.marketFF.ltpc
    return feed.ltpc


def _as_ltpc(feed: pb.Feed, b: _Set) -> dict[str, Any]:
    # In ltpc mode Upstox always sets the `ltpc` member, so it is present even when empty.
    return {"ltpc": b.ltpc(_source_ltpc(feed))}


def _as_option_greeks(feed: pb.Feed, b: _Set) -> dict[str, Any]:
    full = feed.fullFeed
    out: dict[str, Any] = {}
    if full.WhichOneof("FullFeedUnion") == "indexFF":
        ltpc = _message(b.ltpc, full.indexFF, "ltpc")
        if ltpc is not None:
            out["ltpc"] = ltpc
        return {"firstLevelWithGreeks": out, "requestMode": "option_greeks"}
    market = full.marketFF
    ltpc = _message(b.ltpc, market, "ltpc")
    if ltpc is not None:
        out["ltpc"] = ltpc
    quotes = market.marketLevel.bidAskQuote
    if quotes:
        out["firstDepth"] = b.quote(quotes[0])
    greeks = _message(b.greeks, market, "optionGreeks")
    if greeks is not None:
        out["optionGreeks"] = greeks
    if market.vtt:
        out["vtt"] = str(market.vtt)
    for name in ("oi", "iv"):
        value = _double(getattr(market, name), b.safe)
        if value is not None:
            out[name] = value
    return {"firstLevelWithGreeks": out, "requestMode": "option_greeks"}


def _as_full(feed: pb.Feed, b: _Set) -> dict[str, Any]:
    full = feed.fullFeed
    branch = full.WhichOneof("FullFeedUnion")
    body: dict[str, Any] = {}
    if branch == "indexFF":
        body["indexFF"] = b.index_ff(full.indexFF)
    elif branch == "marketFF":
        body["marketFF"] = b.market_ff_d5(full.marketFF)
    return {"fullFeed": body, "requestMode": "full_d5"}
