"""The renderer on concrete messages: the documented JSON form, projections, modes, errors."""

from __future__ import annotations

import math
from typing import Any

import orjson
import pytest
from google.protobuf.json_format import MessageToDict

from bench.frames import FrameKind, build_frames, market_info_frame, mixed_frames
from shared.instruments import Mode
from shared.proto import pb
from shared.render import (
    ProjectionError,
    RenderError,
    decode_frame,
    feed_mode,
    project,
    render_feed,
    render_frame,
    render_frame_envelope,
)


def loads(data: bytes) -> Any:
    return orjson.loads(data)


def option_feed(levels: int = 5, mode: int = pb.full_d5) -> pb.Feed:
    market = pb.MarketFullFeed(
        ltpc=pb.LTPC(ltp=182.35, ltt=1740727891235, ltq=75, cp=171.4),
        optionGreeks=pb.OptionGreeks(delta=0.51, theta=-12.3, gamma=0.0011, vega=3.2, rho=0.4),
        atp=180.1,
        vtt=5543200,
        oi=1234500.0,
        iv=0.1834,
        tbq=123450.0,
        tsq=234525.0,
    )
    for level in range(levels):
        market.marketLevel.bidAskQuote.add(
            bidQ=75 * (level + 1), bidP=182.3 - level / 20, askQ=150, askP=182.4 + level / 20
        )
    market.marketOHLC.ohlc.add(interval="1d", open=170.0, high=190.5, low=168.2, close=182.35)
    market.marketOHLC.ohlc[0].vol = 779400
    market.marketOHLC.ohlc[0].ts = 1740700800000
    return pb.Feed(fullFeed=pb.FullFeed(marketFF=market), requestMode=mode)  # type: ignore[arg-type]


def test_the_documented_json_form() -> None:
    feed = option_feed()
    rendered = loads(render_feed(feed))
    assert rendered == MessageToDict(feed)
    market = rendered["fullFeed"]["marketFF"]
    assert rendered["requestMode"] == "full_d5"  # enum by name
    assert market["ltpc"] == {"ltp": 182.35, "ltt": "1740727891235", "ltq": "75", "cp": 171.4}
    assert market["vtt"] == "5543200"  # int64 as a decimal string
    assert "iep" not in market and "casEligible" not in market  # defaults left out
    assert market["marketOHLC"]["ohlc"][0]["vol"] == "779400"
    assert len(market["marketLevel"]["bidAskQuote"]) == 5


def test_special_doubles_empty_messages_wrappers_and_unknown_enums() -> None:
    feed = pb.Feed(requestMode=42)  # type: ignore[arg-type]  # proto3 enums are open
    feed.ltpc.ltp = math.nan
    feed.ltpc.cp = -0.0
    feed.ltpc.iep.value = 0.0  # a present DoubleValue holding zero
    rendered = loads(render_feed(feed))
    assert rendered == MessageToDict(feed)
    assert rendered == {"requestMode": 42, "ltpc": {"ltp": "NaN", "cp": -0.0, "iep": 0.0}}
    assert math.copysign(1.0, rendered["ltpc"]["cp"]) == -1.0

    greeks = pb.Feed()
    greeks.firstLevelWithGreeks.optionGreeks.SetInParent()
    greeks.firstLevelWithGreeks.optionGreeks.theta = -math.inf
    greeks.firstLevelWithGreeks.firstDepth.SetInParent()
    assert loads(render_feed(greeks)) == {
        "firstLevelWithGreeks": {"optionGreeks": {"theta": "-Infinity"}, "firstDepth": {}}
    }


def test_int64_extremes_render_as_strings() -> None:
    feed = pb.Feed(ltpc=pb.LTPC(ltt=2**63 - 1, ltq=-(2**63)))
    assert loads(render_feed(feed)) == {
        "ltpc": {"ltt": "9223372036854775807", "ltq": "-9223372036854775808"}
    }


def test_render_frame_renders_every_instrument() -> None:
    frame = pb.FeedResponse(type=pb.live_feed, currentTs=1740727891235)
    frame.feeds["NSE_FO|45450"].CopyFrom(option_feed())
    frame.feeds["NSE_INDEX|Nifty 50"].ltpc.ltp = 22500.5
    frame.feeds["unicode ₹ key"].SetInParent()
    rendered = render_frame(frame)
    assert {key: loads(value) for key, value in rendered.items()} == MessageToDict(frame)["feeds"]
    assert loads(render_frame_envelope(frame)) == MessageToDict(frame)


def test_market_info_envelope() -> None:
    frame = market_info_frame()
    frame.marketInfo.casMarketStatus["NSE_EQ"].status = "open"
    frame.marketInfo.preOpenSessionStatus["NSE_EQ"].updatedTime = 1740700800000
    rendered = loads(render_frame_envelope(frame))
    assert rendered == MessageToDict(frame)
    assert rendered["type"] == "market_info"
    assert rendered["marketInfo"]["segmentStatus"]["NSE_FO"] == "NORMAL_OPEN"


@pytest.mark.parametrize("kind", list(FrameKind))
def test_realistic_frames_render_as_message_to_dict(kind: FrameKind) -> None:
    for frame in build_frames(kind, 3):
        for key, value in render_frame(frame).items():
            assert loads(value) == MessageToDict(frame.feeds[key])


def test_mixed_frames_envelopes() -> None:
    for frame in mixed_frames(12, feeds_per_frame=3):
        assert loads(render_frame_envelope(frame)) == MessageToDict(frame)


# --- modes and projections -------------------------------------------------------------------


def test_feed_mode() -> None:
    assert feed_mode(option_feed()) == Mode.FULL
    assert feed_mode(option_feed(30, pb.full_d30)) == Mode.FULL_D30
    assert feed_mode(pb.Feed(ltpc=pb.LTPC(ltp=1.0))) == Mode.LTPC
    flwg = pb.Feed(
        firstLevelWithGreeks=pb.FirstLevelWithGreeks(vtt=1), requestMode=pb.option_greeks
    )
    assert feed_mode(flwg) == Mode.OPTION_GREEKS
    assert feed_mode(pb.Feed(requestMode=pb.full_d5)) is None  # no branch: nothing to serve


def test_projection_to_ltpc() -> None:
    assert loads(project(option_feed(), Mode.LTPC)) == {
        "ltpc": {"ltp": 182.35, "ltt": "1740727891235", "ltq": "75", "cp": 171.4}
    }


def test_projection_to_option_greeks() -> None:
    rendered = loads(project(option_feed(), Mode.OPTION_GREEKS))
    assert rendered == {
        "firstLevelWithGreeks": {
            "ltpc": {"ltp": 182.35, "ltt": "1740727891235", "ltq": "75", "cp": 171.4},
            "firstDepth": {"bidQ": "75", "bidP": 182.3, "askQ": "150", "askP": 182.4},
            "optionGreeks": {
                "delta": 0.51,
                "theta": -12.3,
                "gamma": 0.0011,
                "vega": 3.2,
                "rho": 0.4,
            },
            "vtt": "5543200",
            "oi": 1234500.0,
            "iv": 0.1834,
        },
        "requestMode": "option_greeks",
    }


def test_projection_of_an_index_to_option_greeks_keeps_only_ltpc() -> None:
    index = pb.IndexFullFeed(ltpc=pb.LTPC(ltp=22500.5, ltt=1740727891235, cp=22400.0))
    index.marketOHLC.ohlc.add(interval="1d", open=22400.0)
    feed = pb.Feed(fullFeed=pb.FullFeed(indexFF=index), requestMode=pb.full_d5)
    assert loads(project(feed, Mode.OPTION_GREEKS)) == {
        "firstLevelWithGreeks": {"ltpc": {"ltp": 22500.5, "ltt": "1740727891235", "cp": 22400.0}},
        "requestMode": "option_greeks",
    }


def test_projection_from_full_d30_to_full_keeps_five_levels() -> None:
    feed = option_feed(levels=30, mode=pb.full_d30)
    rendered = loads(project(feed, Mode.FULL))
    assert rendered["requestMode"] == "full_d5"
    levels = rendered["fullFeed"]["marketFF"]["marketLevel"]["bidAskQuote"]
    assert levels == MessageToDict(feed)["fullFeed"]["marketFF"]["marketLevel"]["bidAskQuote"][:5]
    assert loads(project(feed, Mode.FULL_D30)) == MessageToDict(feed)  # own mode: unchanged


def test_projection_keeps_nan_as_protobuf_writes_it() -> None:
    feed = option_feed()
    feed.fullFeed.marketFF.iv = math.nan
    feed.fullFeed.marketFF.optionGreeks.delta = math.inf
    first = loads(project(feed, Mode.OPTION_GREEKS))["firstLevelWithGreeks"]
    assert first["iv"] == "NaN"
    assert first["optionGreeks"]["delta"] == "Infinity"


@pytest.mark.parametrize(
    ("feed", "mode"),
    [
        (pb.Feed(ltpc=pb.LTPC(ltp=1.0)), Mode.OPTION_GREEKS),
        (pb.Feed(ltpc=pb.LTPC(ltp=1.0)), Mode.FULL),
        (pb.Feed(firstLevelWithGreeks=pb.FirstLevelWithGreeks(vtt=1)), Mode.FULL),
        (option_feed(), Mode.FULL_D30),
        (pb.Feed(), Mode.LTPC),
    ],
)
def test_projection_refuses_what_the_feed_cannot_serve(feed: pb.Feed, mode: Mode) -> None:
    with pytest.raises(ProjectionError):
        project(feed, mode)


def test_projection_error_is_a_value_error() -> None:
    assert issubclass(ProjectionError, ValueError)
    assert issubclass(RenderError, ValueError)


# --- decoding --------------------------------------------------------------------------------


def test_decode_frame_round_trip() -> None:
    frame = build_frames(FrameKind.FULL_OPTION, 1)[0]
    assert decode_frame(frame.SerializeToString()) == frame
    assert decode_frame(bytearray(frame.SerializeToString())) == frame
    assert decode_frame(b"") == pb.FeedResponse()


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xff\xff",  # a field number of zero / bad wire type
        b"\x18",  # currentTs tag with its varint missing
        b"\x12\x05ab",  # feeds entry longer than the frame
        b"\x12\x04\x0a\x02\xff\xfe",  # a map key that is not UTF-8
    ],
)
def test_decode_frame_rejects_malformed_bytes(data: bytes) -> None:
    with pytest.raises(RenderError, match=rf"undecodable feed frame \({len(data)} bytes\)"):
        decode_frame(data)
