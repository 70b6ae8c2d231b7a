"""The feed renderer: V3 protobuf feeds to Upstox's JSON, the hot path of the whole system.

Every function returns compact JSON bytes of exactly the value
`google.protobuf.json_format.MessageToDict` gives for the same message (what Upstox's SDK hands
its users): camelCase field names, int64 as decimal strings, enum names (an unknown enum number
stays a number), fields holding their default left out, present-but-empty sub-messages as `{}`,
a double holding -0.0 kept (protobuf counts it as set), NaN / Infinity / -Infinity as the
strings "NaN" / "Infinity" / "-Infinity", `DoubleValue` as a bare number. Key order is not
MessageToDict's; the parsed value is equal. Doubles are written by orjson in their shortest
round-trip form, so they parse back to the identical float.

API
- `decode_frame(data) -> pb.FeedResponse`: parse one binary frame; `RenderError` when malformed.
- `render_feed(feed) -> bytes`: one `Feed` (the value of `feeds[key]`).
- `render_frame(frame) -> dict[str, bytes]`: instrument key -> `render_feed` of its feed.
- `render_frame_envelope(frame) -> bytes`: the whole `FeedResponse` (market_info frames,
  `tickstream decode`).
- `feed_mode(feed) -> Mode | None`: the mode a feed was sent in, from its oneof branch
  (`ltpc`, `firstLevelWithGreeks` = option_greeks, `fullFeed` = full, or full_d30 when
  `requestMode` says `full_d30`); None when no branch is set.
- `project(feed, mode) -> bytes`: what Upstox sends for `feeds[key]` in `mode`, derived from
  a feed received in a mode at least as rich (full_d30 > full > option_greeks > ltpc), so one
  upstream subscription serves clients of every mode. `ProjectionError` when it cannot.

Projection rules (the projected JSON equals `MessageToDict` of the Feed Upstox would build):
- `mode` equal to the feed's own mode: `render_feed(feed)`, unchanged.
- a poorer feed, or a feed with no branch set: `ProjectionError` (e.g. ltpc asked for full).
- ltpc: `{"ltpc": L}` where L is the source's LTPC: `fullFeed.marketFF.ltpc`,
  `fullFeed.indexFF.ltpc` or `firstLevelWithGreeks.ltpc`, every field (iep included) as is.
  `ltpc` is always present, `{}` when the source has none, because Upstox always sets the
  oneof member in ltpc mode. `requestMode` is ltpc (0), the default, so it is left out.
- option_greeks from a `marketFF` (full or full_d30):
  `{"firstLevelWithGreeks": {...}, "requestMode": "option_greeks"}` with
  `ltpc` = marketFF.ltpc (left out when absent, `{}` when present but empty);
  `firstDepth` = marketFF.marketLevel.bidAskQuote[0], the best level (left out when there
  are no levels; `{}` when the first level is all zeros);
  `optionGreeks` = marketFF.optionGreeks (absent stays absent);
  `vtt`, `oi`, `iv` = the marketFF fields of the same names (zero stays left out).
  The other marketFF fields (depth beyond level 1, OHLC, atp, tbq, tsq, auction fields) have
  no place in `FirstLevelWithGreeks` and are dropped.
- option_greeks from an `indexFF` (an index subscribed in full): an index has no depth,
  greeks, volume or OI, so Upstox's option_greeks feed for it can only carry the price:
  `{"firstLevelWithGreeks": {"ltpc": indexFF.ltpc}, "requestMode": "option_greeks"}`
  (`ltpc` left out when the indexFF has none).
- full from full_d30: the same `fullFeed` with `marketFF.marketLevel.bidAskQuote` cut to its
  first 5 levels (full mode's depth) and `requestMode` `full_d5`; an `indexFF` is unchanged
  apart from `requestMode`. A `fullFeed` with neither branch stays `{}`.
Projections render straight from the source's fields; no protobuf message is built per tick.
- `project_feed(feed, mode) -> pb.Feed`: the same projection as a protobuf message (for the
  Upstox-compatible wire, which carries serialized feeds); its `MessageToDict` equals
  `project`'s JSON.

Partial ticks (Upstox's live ticks may leave out sub-messages that did not change):
- `present_parts(feed) -> int`: bits of the feed's branch (`BRANCH_BITS`) and of the parts it
  carries: `ltpc` (`LTPC_BIT`), `marketLevel`, `optionGreeks`, `marketOHLC` (marketFF; ltpc and
  marketOHLC in indexFF), `firstDepth`, `optionGreeks` (firstLevelWithGreeks). Scalars are no
  parts: proto3 gives them no presence (left out means zero).
- `merge_value(whole, update) -> bytes | None`: a rendered `update` of one key in one mode,
  completed part-wise with the parts it lacks from `whole` (that key's previous whole value in
  that mode): a present part replaces the old one whole (a new book replaces the old book, never
  appends to it), scalars come from `update`. None when `update` lacked none of `whole`'s parts
  or the shapes differ. The result equals the projection of the part-wise merged feed, because
  every projection maps parts to parts (`marketLevel` to `firstDepth`, 30 levels to 5).
- `merge_feed(whole, update) -> pb.Feed`: the same merge on protobuf feeds (a copy of `update`
  with each part it lacks copied from `whole`; never `MergeFrom`, which appends repeated fields).

Speed: see `shared/render/_builders.py` (per-type builders generated from the descriptors)
and `bench/render.py`.
"""

from shared.render._core import (
    ProjectionError,
    RenderError,
    decode_frame,
    feed_mode,
    project,
    render_feed,
    render_frame,
    render_frame_envelope,
)
from shared.render._merge import BRANCHES as BRANCH_BITS
from shared.render._merge import LTPC as LTPC_BIT
from shared.render._merge import merge_feed, merge_value, present_parts
from shared.render._proto import project_feed

__all__ = [
    "BRANCH_BITS",
    "LTPC_BIT",
    "ProjectionError",
    "RenderError",
    "decode_frame",
    "feed_mode",
    "merge_feed",
    "merge_value",
    "present_parts",
    "project",
    "project_feed",
    "render_feed",
    "render_frame",
    "render_frame_envelope",
]
