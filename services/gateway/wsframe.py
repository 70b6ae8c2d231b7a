"""Server-to-client WebSocket data frames (RFC 6455 section 5.2), built in one allocation.

A server's frames are unmasked, so a frame is a 2-10 byte header and the payload as is. The fan-out
writes pre-built frames straight to the socket's transport; the handshake, control frames and
everything the client sends go through `websockets`' sans-I/O protocol instead.
"""

from __future__ import annotations

import struct
from typing import Final

_FIN_TEXT: Final = 0x81
_FIN_BINARY: Final = 0x82
_U16: Final = struct.Struct("!BBH")
_U64: Final = struct.Struct("!BBQ")


def _header(first: int, length: int) -> bytes:
    if length < 126:
        return bytes((first, length))
    if length < 1 << 16:
        return _U16.pack(first, 126, length)
    return _U64.pack(first, 127, length)


def text_header(length: int) -> bytes:
    """The header of a final, unmasked text frame carrying `length` payload bytes."""
    # `_header` spelled out: one call per live frame on the flush's hot path.
    if length < 126:
        return bytes((_FIN_TEXT, length))
    if length < 1 << 16:
        return _U16.pack(_FIN_TEXT, 126, length)
    return _U64.pack(_FIN_TEXT, 127, length)


def text_frame(payload: bytes) -> bytes:
    return text_header(len(payload)) + payload


def binary_frame_of(parts: list[bytes]) -> bytes:
    """A final, unmasked binary frame whose payload is the concatenation of `parts` (Upstox's
    feed frames are binary protobuf)."""
    length = 0
    for part in parts:
        length += len(part)
    return b"".join([_header(_FIN_BINARY, length), *parts])
