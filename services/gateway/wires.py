"""The two wire formats one replica fans out: our JSON (`/ws`) and Upstox's protobuf.

A `Wire` is what `FanOut` needs to know of a format, and nothing else: which Redis channel and
last value carry a (mode, key), how a payload from there becomes a spliceable `FeedItem`, how two
items merge when a partial one is conflated onto another, and how items become one frame. Every
client of a fan-out speaks its wire; a replica runs one fan-out per wire, so a (mode, key)
wanted on both is two channels.

`UPSTOX`: a `FeedItem.feed` is one `FeedResponse.feeds` map entry as the ingestor serialized
it, and a frame is the concatenation of entries between the type and the timestamp
(`shared.feed_frames`); a partial item's `meta` is the partial mark, a whole one's empty, so
`redis_contract.is_partial` reads both wires alike. Only a partial conflated onto a pending
value costs a decode and an encode, once per channel, not per client.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Final

from google.protobuf import json_format
from google.protobuf.message import Error as ProtobufError

from services.gateway.protocol import (
    FEED_END,
    FEED_META,
    FEED_TS,
    INITIAL_FEED,
    LIVE_FEED,
    FeedItem,
    key_json,
)
from services.gateway.wsframe import binary_frame_of, text_header
from shared import redis_contract as rc
from shared.feed_frames import feed_entry, frame_parts, timestamp_field
from shared.instruments import Mode
from shared.proto import pb
from shared.render import merge_feed, merge_value

__all__ = ["JSON", "UPSTOX", "Wire"]

logger = logging.getLogger(__name__)

_FRAME_FIXED: Final = len(FEED_META) + len(FEED_TS) + len(FEED_END)


class Wire:
    """Our JSON protocol (`/ws`); `UpstoxWire` overrides each part."""

    name = "json"

    def channel_name(self, mode: Mode, key: str) -> bytes:
        return rc.tick_channel(mode, key).encode()

    def last_value_key(self, mode: Mode, key: str) -> str:
        return rc.last_value_key(mode, key)

    def encoded_key(self, key: str) -> bytes:
        return key_json(key)

    def item(self, encoded_key: bytes, payload: bytes) -> FeedItem:
        value, meta = rc.split_tick(payload)
        return FeedItem.of(encoded_key, value, meta)

    def merged(self, encoded_key: bytes, older: FeedItem, newer: FeedItem) -> FeedItem:
        """The partial `newer` completed with the parts it lacks from `older`: what a client
        that applied both holds (whole if `older` was)."""
        start = len(encoded_key) + 1
        value = merge_value(older.feed[start:], newer.feed[start:])
        if value is None:
            return newer
        meta = newer.meta[start:]
        if not rc.is_partial(older.meta):
            meta = rc.whole_meta(meta)
        return FeedItem.of(encoded_key, value, meta)

    def stamp(self, epoch_ms: int) -> bytes:
        """A frame's time as `frame` takes it: formatted once per flush, not per frame."""
        return b"%d" % epoch_ms

    def frame(self, initial: bool, items: Collection[FeedItem], stamp: bytes) -> bytes:
        """One feed frame, WebSocket header included, joined once. The hot path of a flush
        (one call per frame): timed on three-update ltpc frames, building the payload's parts
        first and framing them after cost 1.2 µs a frame against 0.8 µs for this."""
        feeds = b",".join([item.feed for item in items])
        metas = b",".join([item.meta for item in items])
        head = INITIAL_FEED if initial else LIVE_FEED
        length = len(head) + len(feeds) + len(metas) + len(stamp) + _FRAME_FIXED
        return b"".join(
            (text_header(length), head, feeds, FEED_META, metas, FEED_TS, stamp, FEED_END)
        )


_WHOLE: Final = b""


class UpstoxWire(Wire):
    name = "upstox"

    def channel_name(self, mode: Mode, key: str) -> bytes:
        return rc.entry_channel(mode, key).encode()

    def last_value_key(self, mode: Mode, key: str) -> str:
        return rc.last_entry_key(mode, key)

    def encoded_key(self, key: str) -> bytes:
        return key.encode()

    def item(self, encoded_key: bytes, payload: bytes) -> FeedItem:
        entry, partial = rc.split_entry(payload)
        return FeedItem(entry, rc.PARTIAL_META_END if partial else _WHOLE)

    def merged(self, encoded_key: bytes, older: FeedItem, newer: FeedItem) -> FeedItem:
        key = encoded_key.decode()
        whole = pb.FeedResponse.FromString(older.feed).feeds[key]
        update = pb.FeedResponse.FromString(newer.feed).feeds[key]
        meta = older.meta if rc.is_partial(older.meta) else _WHOLE
        return FeedItem(feed_entry(key, merge_feed(whole, update)), meta)

    def stamp(self, epoch_ms: int) -> bytes:
        return timestamp_field(epoch_ms)

    def frame(self, initial: bool, items: Collection[FeedItem], stamp: bytes) -> bytes:
        return binary_frame_of(frame_parts(initial, [item.feed for item in items], stamp))

    def market_info(self, payload: bytes) -> bytes | None:
        """The `market_info` frame of the JSON one the ingestor stores (converted once per
        change, not per client); None if it cannot be read."""
        try:
            message = json_format.Parse(payload, pb.FeedResponse(), ignore_unknown_fields=True)
        except (json_format.ParseError, ProtobufError, ValueError) as error:
            logger.warning("unreadable market status, not sent to Upstox clients: %s", error)
            return None
        return binary_frame_of([message.SerializeToString()])


JSON: Final = Wire()
UPSTOX: Final = UpstoxWire()
