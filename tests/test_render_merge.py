"""Partial ticks in the renderer: which parts a feed carries, and merging a partial value.

Every lifelike feed shape (bench.frames) with every subset of its parts left out, in every mode
it can serve: merging the rendered partial value onto the rendered whole one gives exactly the
rendering of the part-wise merged protobuf feed, which is what Upstox's own SDK user would hold.
"""

from __future__ import annotations

import itertools
import random

import orjson
import pytest
from google.protobuf.json_format import MessageToDict

from bench.frames import BASE_TS, FrameKind, build_feed
from shared.instruments import Mode
from shared.proto import pb
from shared.render import (
    LTPC_BIT,
    feed_mode,
    merge_feed,
    merge_value,
    present_parts,
    project,
)

PARTS = {
    FrameKind.FULL_OPTION: ("ltpc", "marketLevel", "optionGreeks", "marketOHLC"),
    FrameKind.FULL_EQUITY: ("ltpc", "marketLevel", "marketOHLC"),
    FrameKind.FULL_D30: ("ltpc", "marketLevel", "optionGreeks", "marketOHLC"),
    FrameKind.FULL_INDEX: ("ltpc", "marketOHLC"),
    FrameKind.OPTION_GREEKS: ("ltpc", "firstDepth", "optionGreeks"),
}


def holder(feed: pb.Feed) -> pb.MarketFullFeed | pb.IndexFullFeed | pb.FirstLevelWithGreeks:
    if feed.HasField("firstLevelWithGreeks"):
        return feed.firstLevelWithGreeks
    full = feed.fullFeed
    return full.indexFF if full.HasField("indexFF") else full.marketFF


def partial(feed: pb.Feed, left_out: tuple[str, ...]) -> pb.Feed:
    out = pb.Feed()
    out.CopyFrom(feed)
    for part in left_out:
        holder(out).ClearField(part)
    return out


CASES = [
    (kind, left_out)
    for kind, parts in PARTS.items()
    for size in range(len(parts) + 1)
    for left_out in itertools.combinations(parts, size)
]


@pytest.mark.parametrize(("kind", "left_out"), CASES)
def test_merging_the_rendered_partial_equals_rendering_the_merged_feed(
    kind: FrameKind, left_out: tuple[str, ...]
) -> None:
    rng = random.Random(f"{kind}:{left_out}")
    whole, newer = build_feed(kind, rng, BASE_TS), build_feed(kind, rng, BASE_TS + 500)
    update = partial(newer, left_out)
    merged = merge_feed(whole, update)
    for part in PARTS[kind]:  # each part from the newer feed if it carried it, else the old
        source = whole if part in left_out else newer
        assert getattr(holder(merged), part) == getattr(holder(source), part)
    source_mode = feed_mode(whole)
    assert source_mode is not None
    for mode in (m for m in Mode if source_mode.covers(m)):
        if mode is Mode.LTPC and "ltpc" in left_out:
            continue  # ltpc mode has nothing else: a processor sends that mode nothing
        expected = orjson.loads(project(merged, mode))
        result = merge_value(project(whole, mode), project(update, mode))
        # None: the partial value lacked nothing this mode shows, so it is the whole value.
        got = project(update, mode) if result is None else result
        assert orjson.loads(got) == expected
    assert orjson.loads(project(merged, source_mode)) == MessageToDict(merged)


def test_a_new_book_replaces_the_old_one_and_is_never_appended() -> None:
    rng = random.Random(3)
    whole = build_feed(FrameKind.FULL_EQUITY, rng, BASE_TS)
    newer = partial(build_feed(FrameKind.FULL_EQUITY, rng, BASE_TS + 500), ("marketOHLC",))
    merged = merge_feed(whole, newer)
    assert len(merged.fullFeed.marketFF.marketLevel.bidAskQuote) == 5
    assert merged.fullFeed.marketFF.marketLevel == newer.fullFeed.marketFF.marketLevel
    value = merge_value(project(whole, Mode.FULL), project(newer, Mode.FULL))
    assert value is not None
    assert len(orjson.loads(value)["fullFeed"]["marketFF"]["marketLevel"]["bidAskQuote"]) == 5


def test_present_parts_tells_branches_and_parts_apart() -> None:
    rng = random.Random(5)
    option = build_feed(FrameKind.FULL_OPTION, rng, BASE_TS)
    without_book = present_parts(partial(option, ("marketLevel",)))
    assert present_parts(option) & ~without_book  # the book's bit
    assert (
        present_parts(option) & LTPC_BIT
        and not present_parts(partial(option, ("ltpc",))) & LTPC_BIT
    )
    index = present_parts(build_feed(FrameKind.FULL_INDEX, rng, BASE_TS))
    greeks = present_parts(build_feed(FrameKind.OPTION_GREEKS, rng, BASE_TS))
    ltpc = present_parts(build_feed(FrameKind.LTPC, rng, BASE_TS))
    assert len({present_parts(option), index, greeks, ltpc}) == 4 and present_parts(pb.Feed()) == 0


def test_other_shapes_are_not_merged() -> None:
    rng = random.Random(7)
    market = project(build_feed(FrameKind.FULL_EQUITY, rng, BASE_TS), Mode.FULL)
    index = project(build_feed(FrameKind.FULL_INDEX, rng, BASE_TS), Mode.FULL)
    assert merge_value(market, index) is None
    assert merge_value(b"{}", market) is None
