"""Upstox V3 `FeedResponse` frames built by splicing bytes, never by encoding a message.

A `feeds` map entry (field 2: a length-delimited submessage of key 1 and `Feed` value 2) is
serialized once per (mode, key) and value; a frame is a header, any number of entries, and the
timestamp, concatenated. Protobuf parses repeated map entries of one message as one map, so the
result is a valid `FeedResponse` for every decoder, Upstox's SDK included. The simulator builds
its upstream frames this way, and the gateway its Upstox-protocol clients' frames.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

from shared.proto import pb

_TYPE_INITIAL: Final = b""  # initial_feed is enum value 0: proto3 leaves it out
_TYPE_LIVE: Final = b"\x08\x01"


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


_SMALL_VARINTS: Final = tuple(_varint(value) for value in range(1 << 14))


def _length(value: int) -> bytes:
    return _SMALL_VARINTS[value] if value < 16_384 else _varint(value)


def entry_bytes(key: str, feed_bytes: bytes) -> bytes:
    """`feeds` map entry bytes (field 2) of one instrument's serialized `Feed`."""
    key_bytes = key.encode()
    entry = b"\x0a" + _length(len(key_bytes)) + key_bytes
    entry += b"\x12" + _length(len(feed_bytes)) + feed_bytes
    return b"\x12" + _length(len(entry)) + entry


def feed_entry(key: str, feed: pb.Feed) -> bytes:
    """`feeds` map entry bytes (field 2) for one instrument, ready to concatenate."""
    return entry_bytes(key, feed.SerializeToString())


def timestamp_field(current_ms: int) -> bytes:
    """A frame's `currentTs` field (3), to hand to `frame_parts`: made once for many frames."""
    return b"\x18" + _varint(current_ms)


def frame_parts(initial: bool, entries: Iterable[bytes], stamp: bytes) -> list[bytes]:
    """A frame's parts, to join (or to hand to a WebSocket framer: one copy in all); `stamp`
    from `timestamp_field`."""
    return [_TYPE_INITIAL if initial else _TYPE_LIVE, *entries, stamp]


def live_frame(entries: Iterable[bytes], current_ms: int) -> bytes:
    return b"".join(frame_parts(False, entries, timestamp_field(current_ms)))


def initial_frame(entries: Iterable[bytes], current_ms: int) -> bytes:
    return b"".join(frame_parts(True, entries, timestamp_field(current_ms)))
