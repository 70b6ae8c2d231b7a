"""Property tests: the renderer's output, parsed, is exactly what MessageToDict gives.

Messages are drawn from the descriptors, so every field of the schema is covered: zeros (left
out), negatives, int64 extremes, NaN, the infinities, -0.0, unicode and spaces in strings and
map keys, empty and non-empty repeated fields, each oneof branch (and none), present-but-empty
sub-messages, unknown enum numbers and the market_info maps.
"""

from __future__ import annotations

import math
from typing import Any, cast

import orjson
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.json_format import MessageToDict, ParseDict
from google.protobuf.message import Message
from google.protobuf.message_factory import GetMessageClass
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from shared.instruments import Mode
from shared.proto import pb
from shared.render import (
    ProjectionError,
    RenderError,
    decode_frame,
    feed_mode,
    project,
    project_feed,
    render_feed,
    render_frame,
    render_frame_envelope,
)

SETTINGS = settings(
    max_examples=120,
    derandomize=True,  # the same examples on every run: failures reproduce, CI stays stable
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
PROJECTION_SETTINGS = settings(SETTINGS, max_examples=60)

INT64_EDGES = [0, 1, -1, 2**31, 2**53 + 1, 2**63 - 1, -(2**63)]
DOUBLE_EDGES = [
    0.0,
    -0.0,
    math.nan,
    math.inf,
    -math.inf,
    5e-324,
    1.7976931348623157e308,
    1e16,
    1e-7,
    0.1,
    1234.55,
    -12.34,
    123456789.0,
]
texts = st.text(st.characters(exclude_categories=["Cs"]), max_size=10)
keys = st.one_of(
    st.sampled_from(["NSE_FO|45450", "NSE_INDEX|Nifty 50", "NSE_EQ|INE002A01018", "", " "]),
    texts,
)


def scalars(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    """Values for a scalar field, zero about half the time (zero means "left out")."""
    cpp = field.cpp_type
    if cpp == FieldDescriptor.CPPTYPE_DOUBLE:
        values: st.SearchStrategy[Any] = st.one_of(st.sampled_from(DOUBLE_EDGES), st.floats())
    elif cpp == FieldDescriptor.CPPTYPE_INT64:
        values = st.one_of(st.sampled_from(INT64_EDGES), st.integers(-(2**63), 2**63 - 1))
    elif cpp == FieldDescriptor.CPPTYPE_BOOL:
        values = st.booleans()
    elif cpp == FieldDescriptor.CPPTYPE_STRING:
        values = st.one_of(st.sampled_from(["1d", "I1", "I30", "1 d", "₹", '"\\%s']), texts)
    elif cpp == FieldDescriptor.CPPTYPE_ENUM:
        assert field.enum_type is not None
        known = [value.number for value in field.enum_type.values]
        # proto3 enums are open: an unknown number is kept and rendered as a number.
        values = st.one_of(st.sampled_from(known), st.integers(-3, 40))
    else:
        raise AssertionError(f"no strategy for {field.full_name}")
    return st.one_of(st.just(field.default_value), values)


@st.composite
def messages(draw: st.DrawFn, cls: type[Message]) -> Message:
    message = cls()
    descriptor = cast(Descriptor, cls.DESCRIPTOR)
    for field in descriptor.fields:
        if field.containing_oneof is None:
            fill(draw, message, field)
    for oneof in descriptor.oneofs:
        branch = draw(st.sampled_from([None, *oneof.fields]))
        if branch is not None:
            getattr(message, branch.name).SetInParent()  # chosen: present, maybe empty
            fill(draw, message, branch)
    return message


def fill(draw: st.DrawFn, message: Message, field: FieldDescriptor) -> None:
    target = getattr(message, field.name)
    sub = field.message_type
    if sub is not None and sub.GetOptions().map_entry:
        value_field = sub.fields_by_name["value"]
        for key in draw(st.lists(keys, max_size=3, unique=True)):
            if value_field.message_type is not None:
                target[key].MergeFrom(draw(messages(GetMessageClass(value_field.message_type))))
            else:
                target[key] = draw(scalars(value_field))
    elif field.is_repeated:
        assert sub is not None, "the schema has no repeated scalars"
        for element in draw(st.lists(messages(GetMessageClass(sub)), max_size=7)):
            target.add().MergeFrom(element)
    elif sub is not None:
        presence = draw(st.sampled_from(["absent", "empty", "set"]))
        if presence != "absent":
            target.SetInParent()
        if presence == "set":
            target.MergeFrom(draw(messages(GetMessageClass(sub))))
    else:
        setattr(message, field.name, draw(scalars(field)))


def strict(value: Any) -> Any:
    """A form where equality also tells apart 0.0 and -0.0, and 1, 1.0 and True."""
    if isinstance(value, dict):
        return {key: strict(item) for key, item in value.items()}
    if isinstance(value, list):
        return [strict(item) for item in value]
    if isinstance(value, float):
        return ("float", repr(value))
    return (type(value).__name__, value)


def parsed(rendered: bytes) -> Any:
    return strict(orjson.loads(rendered))  # orjson.loads is strict JSON (no NaN tokens)


def expected(message: Message) -> Any:
    return strict(MessageToDict(message))


frames = messages(pb.FeedResponse)
feeds = messages(pb.Feed)


@SETTINGS
@given(frames)
def test_every_instrument_renders_as_message_to_dict(frame: pb.FeedResponse) -> None:
    rendered = render_frame(frame)
    assert sorted(rendered) == sorted(frame.feeds)
    for key, feed in frame.feeds.items():
        assert parsed(rendered[key]) == expected(feed)
        assert parsed(render_feed(feed)) == expected(feed)


@SETTINGS
@given(frames)
def test_the_envelope_renders_as_message_to_dict(frame: pb.FeedResponse) -> None:
    assert parsed(render_frame_envelope(frame)) == expected(frame)


@SETTINGS
@given(frames)
def test_frames_decoded_from_the_wire_render_the_same(frame: pb.FeedResponse) -> None:
    decoded = decode_frame(frame.SerializeToString())
    assert parsed(render_frame_envelope(decoded)) == expected(frame)


@SETTINGS
@given(st.binary(max_size=64))
def test_arbitrary_bytes_decode_or_raise_render_error(data: bytes) -> None:
    try:
        frame = decode_frame(data)
    except RenderError as exc:
        assert "undecodable feed frame" in str(exc)
    else:
        assert parsed(render_frame_envelope(frame)) == expected(frame)


# --- projections -----------------------------------------------------------------------------


def copy_field(target: Message, name: str, source: Message) -> None:
    """Set `target.name` to a copy of `source`, present even when `source` is empty."""
    field = getattr(target, name)
    field.SetInParent()
    field.MergeFrom(source)


def full_feed(branch: Message, mode: int) -> pb.Feed:
    feed = pb.Feed(requestMode=mode)  # type: ignore[arg-type]
    name = "marketFF" if isinstance(branch, pb.MarketFullFeed) else "indexFF"
    copy_field(feed.fullFeed, name, branch)
    return feed


market_full_feeds = st.builds(
    full_feed,
    messages(pb.MarketFullFeed),
    st.sampled_from([pb.full_d5, pb.full_d30]),
)
index_full_feeds = st.builds(
    full_feed,
    messages(pb.IndexFullFeed),
    st.sampled_from([pb.full_d5, pb.full_d30]),
)


def ltpc_mode(source: Message) -> pb.Feed:
    feed = pb.Feed()
    copy_field(feed, "ltpc", source)
    return feed


@PROJECTION_SETTINGS
@given(st.one_of(market_full_feeds, index_full_feeds))
def test_full_feeds_project_to_ltpc(feed: pb.Feed) -> None:
    branch = feed.fullFeed.marketFF if feed.fullFeed.HasField("marketFF") else feed.fullFeed.indexFF
    assert parsed(project(feed, Mode.LTPC)) == expected(ltpc_mode(branch.ltpc))


@PROJECTION_SETTINGS
@given(market_full_feeds)
def test_market_feeds_project_to_option_greeks(feed: pb.Feed) -> None:
    market = feed.fullFeed.marketFF
    first = pb.FirstLevelWithGreeks(vtt=market.vtt, oi=market.oi, iv=market.iv)
    if market.HasField("ltpc"):
        copy_field(first, "ltpc", market.ltpc)
    if market.marketLevel.bidAskQuote:
        copy_field(first, "firstDepth", market.marketLevel.bidAskQuote[0])
    if market.HasField("optionGreeks"):
        copy_field(first, "optionGreeks", market.optionGreeks)
    want = pb.Feed(requestMode=pb.option_greeks)
    copy_field(want, "firstLevelWithGreeks", first)
    assert parsed(project(feed, Mode.OPTION_GREEKS)) == expected(want)


@PROJECTION_SETTINGS
@given(index_full_feeds)
def test_index_feeds_project_to_option_greeks_with_just_ltpc(feed: pb.Feed) -> None:
    index = feed.fullFeed.indexFF
    first = pb.FirstLevelWithGreeks()
    if index.HasField("ltpc"):
        copy_field(first, "ltpc", index.ltpc)
    want = pb.Feed(requestMode=pb.option_greeks)
    copy_field(want, "firstLevelWithGreeks", first)
    assert parsed(project(feed, Mode.OPTION_GREEKS)) == expected(want)


@PROJECTION_SETTINGS
@given(st.one_of(market_full_feeds, index_full_feeds))
def test_full_d30_projects_to_full_with_five_levels(feed: pb.Feed) -> None:
    feed.requestMode = pb.full_d30
    want = pb.Feed()
    want.CopyFrom(feed)
    want.requestMode = pb.full_d5
    quotes = want.fullFeed.marketFF.marketLevel.bidAskQuote  # reading marks nothing present
    if len(quotes) > 5:
        del quotes[5:]
    assert parsed(project(feed, Mode.FULL)) == expected(want)


@PROJECTION_SETTINGS
@given(messages(pb.FirstLevelWithGreeks))
def test_option_greeks_feeds_project_to_ltpc(first: pb.FirstLevelWithGreeks) -> None:
    feed = pb.Feed(requestMode=pb.option_greeks)
    copy_field(feed, "firstLevelWithGreeks", first)
    assert parsed(project(feed, Mode.LTPC)) == expected(ltpc_mode(first.ltpc))


@PROJECTION_SETTINGS
@given(feeds, st.sampled_from(list(Mode)))
def test_projection_serves_poorer_modes_and_refuses_richer(feed: pb.Feed, mode: Mode) -> None:
    source = feed_mode(feed)
    if source is None or not source.covers(mode):
        try:
            project(feed, mode)
        except ProjectionError:
            return
        raise AssertionError(f"a {source} feed projected to {mode}")
    rendered = project(feed, mode)
    if mode == source:
        assert parsed(rendered) == expected(feed)
    else:  # the projection is valid Feed JSON, in the mode asked for
        assert feed_mode(ParseDict(orjson.loads(rendered), pb.Feed())) == mode


def thirty_levels() -> pb.Feed:
    feed = pb.Feed(requestMode=pb.full_d30)
    quotes = feed.fullFeed.marketFF.marketLevel.bidAskQuote
    for level in range(30):
        quotes.add(bidQ=level + 1, bidP=100.0 - level, askQ=level + 2, askP=100.5 + level)
    return feed


@settings(SETTINGS, max_examples=300)
@given(st.one_of(market_full_feeds, index_full_feeds, feeds), st.sampled_from(list(Mode)))
@example(thirty_levels(), Mode.FULL)
@example(thirty_levels(), Mode.OPTION_GREEKS)
def test_protobuf_projection_is_the_json_projection(feed: pb.Feed, mode: Mode) -> None:
    try:
        rendered = project(feed, mode)
    except ProjectionError:
        rendered = None
    try:
        projected = project_feed(feed, mode)
    except ProjectionError:
        assert rendered is None, f"project_feed refused what project served in {mode}"
        return
    assert rendered is not None, f"project_feed served what project refused in {mode}"
    assert expected(projected) == parsed(rendered)
    assert feed_mode(projected) == mode
