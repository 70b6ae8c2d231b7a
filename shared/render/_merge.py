"""Partial ticks: which parts a feed carries, and a partial value merged onto the whole one.

`shared.render`'s docstring is the contract. A part is a sub-message that a live tick may leave
out when it did not change: `ltpc`, `marketLevel`, `optionGreeks`, `marketOHLC` (in `marketFF`;
`ltpc` and `marketOHLC` in `indexFF`) and `ltpc`, `firstDepth`, `optionGreeks` (in
`firstLevelWithGreeks`). Scalars are not parts: proto3 gives them no presence, so one left out
is zero, and a merge takes them from the newer value.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

from shared.proto import pb

# `present_parts` bits: a part of the branch, and the branch itself (a feed arriving in another
# branch than before starts over: its parts are not comparable).
LTPC: Final = 1
DEPTH: Final = 2
GREEKS: Final = 4
OHLC: Final = 8
FIRST_DEPTH: Final = 16
MARKET_FF: Final = 32
INDEX_FF: Final = 64
FIRST_LEVEL: Final = 128
LTPC_ONLY: Final = 256
BRANCHES: Final = MARKET_FF | INDEX_FF | FIRST_LEVEL | LTPC_ONLY


def present_parts(feed: pb.Feed) -> int:
    """The feed's branch and the parts it carries, as bits (0: no branch)."""
    branch = feed.WhichOneof("FeedUnion")
    if branch == "fullFeed":
        full = feed.fullFeed
        if full.WhichOneof("FullFeedUnion") == "indexFF":
            index = full.indexFF
            bits = INDEX_FF | (LTPC if index.HasField("ltpc") else 0)
            return bits | (OHLC if index.HasField("marketOHLC") else 0)
        market = full.marketFF
        bits = MARKET_FF | (LTPC if market.HasField("ltpc") else 0)
        bits |= DEPTH if market.HasField("marketLevel") else 0
        bits |= GREEKS if market.HasField("optionGreeks") else 0
        return bits | (OHLC if market.HasField("marketOHLC") else 0)
    if branch == "firstLevelWithGreeks":
        first = feed.firstLevelWithGreeks
        bits = FIRST_LEVEL | (LTPC if first.HasField("ltpc") else 0)
        bits |= FIRST_DEPTH if first.HasField("firstDepth") else 0
        return bits | (GREEKS if first.HasField("optionGreeks") else 0)
    if branch == "ltpc":
        return LTPC_ONLY | LTPC
    return 0


_BRANCH_PARTS: Final = {
    "marketFF": ("ltpc", "marketLevel", "optionGreeks", "marketOHLC"),
    "indexFF": ("ltpc", "marketOHLC"),
    "firstLevelWithGreeks": ("ltpc", "firstDepth", "optionGreeks"),
    "ltpc": ("ltpc",),
}


def _branch(feed: pb.Feed) -> tuple[str, Any] | None:
    """(branch name, the message holding its parts); None for an ltpc feed or no branch."""
    branch = feed.WhichOneof("FeedUnion")
    if branch == "fullFeed":
        name = feed.fullFeed.WhichOneof("FullFeedUnion")
        return None if name is None else (name, getattr(feed.fullFeed, name))
    if branch == "firstLevelWithGreeks":
        return branch, feed.firstLevelWithGreeks
    return None


def merge_feed(whole: pb.Feed, update: pb.Feed) -> pb.Feed:
    """A copy of `update` completed part-wise from `whole` (each part it lacks, copied whole:
    `MergeFrom` would append the old book's levels to a new one)."""
    merged = pb.Feed()
    merged.CopyFrom(update)
    old, new = _branch(whole), _branch(merged)
    if old is not None and new is not None and old[0] == new[0]:
        for part in _BRANCH_PARTS[new[0]]:
            if not new[1].HasField(part) and old[1].HasField(part):
                getattr(new[1], part).CopyFrom(getattr(old[1], part))
    return merged


def _body(value: Any) -> tuple[str, dict[str, Any]] | None:
    """(branch, the dict holding its parts) of a rendered value, None for no known shape."""
    if not isinstance(value, dict):
        return None
    full = value.get("fullFeed")
    if isinstance(full, dict):
        for branch in ("marketFF", "indexFF"):
            body = full.get(branch)
            if isinstance(body, dict):
                return branch, body
        return None
    first = value.get("firstLevelWithGreeks")
    if isinstance(first, dict):
        return "firstLevelWithGreeks", first
    if "ltpc" in value:
        return "ltpc", value
    return None


def merge_value(whole: bytes, update: bytes) -> bytes | None:
    """`update` (a rendered value that may leave out unchanged parts) completed with the parts
    it lacks from `whole` (the previous whole value of the same key and mode), as JSON bytes;
    None when it lacked none of `whole`'s parts (it is whole itself) or the shapes differ."""
    old, new = _body(orjson.loads(whole)), orjson.loads(update)
    body = _body(new)
    if old is None or body is None or old[0] != body[0]:
        return None
    taken = False
    for part in _BRANCH_PARTS[body[0]]:
        if part not in body[1] and part in old[1]:
            body[1][part] = old[1][part]
            taken = True
    return orjson.dumps(new) if taken else None
