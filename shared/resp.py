"""RESP2, the Redis wire format: incremental parsing, command encoding, reply normalising.

Owns only bytes in and bytes out: no sockets, no event loop, no Redis names (those are in
`redis_contract`). The gateway's pub/sub reader parses with it and the ingestor's publisher
encodes its batched EVALs with it; both bypass redis-py's generic packing and parsing on their
hot paths (see their docstrings for the measured reasons).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = [
    "CRLF",
    "ErrorReply",
    "Reply",
    "RespError",
    "as_bytes",
    "as_text",
    "bulk",
    "encode_command",
    "parse_replies",
    "parse_reply",
]

CRLF: Final = b"\r\n"


class RespError(Exception):
    """The byte stream is not valid RESP2 (a bug or a stream out of step): reconnect."""


@dataclass(frozen=True, slots=True)
class ErrorReply:
    """A `-ERR ...` reply."""

    message: str


Reply = bytes | int | None | ErrorReply | list["Reply"]


def parse_reply(buf: bytes | bytearray, pos: int) -> tuple[Reply, int] | None:
    """One RESP2 value starting at `pos`: (value, position after it), or None if incomplete."""
    end = buf.find(CRLF, pos)
    if end < 0:
        return None
    kind = buf[pos]
    if kind == 0x24:  # $ bulk string
        length = int(buf[pos + 1 : end])
        if length < 0:
            return None, end + 2
        stop = end + 2 + length
        if len(buf) < stop + 2:
            return None
        return bytes(buf[end + 2 : stop]), stop + 2
    if kind == 0x2A:  # * array
        count = int(buf[pos + 1 : end])
        if count < 0:
            return None, end + 2
        items: list[Reply] = []
        at = end + 2
        for _ in range(count):
            found = parse_reply(buf, at)
            if found is None:
                return None
            items.append(found[0])
            at = found[1]
        return items, at
    if kind == 0x3A:  # : integer
        return int(buf[pos + 1 : end]), end + 2
    if kind == 0x2B:  # + simple string
        return bytes(buf[pos + 1 : end]), end + 2
    if kind == 0x2D:  # - error
        return ErrorReply(bytes(buf[pos + 1 : end]).decode(errors="replace")), end + 2
    raise RespError(f"unexpected RESP type byte {kind!r}")


def parse_replies(buf: bytes | bytearray) -> tuple[list[Reply], int]:
    """Every complete value at the start of `buf`, and how many bytes they took."""
    replies: list[Reply] = []
    pos = 0
    size = len(buf)
    while pos < size:
        found = parse_reply(buf, pos)
        if found is None:
            break
        replies.append(found[0])
        pos = found[1]
    return replies, pos


def bulk(data: bytes) -> bytes:
    """One bulk string: `$<length>\\r\\n<data>\\r\\n`."""
    return b"$%d\r\n%b\r\n" % (len(data), data)


def encode_command(*parts: bytes | str) -> bytes:
    """A command as an array of bulk strings (str parts are UTF-8 encoded)."""
    out = [b"*%d\r\n" % len(parts)]
    out.extend(bulk(as_bytes(part)) for part in parts)
    return b"".join(out)


def as_bytes(value: bytes | str) -> bytes:
    """A reply value or argument as bytes, whether the client decoded responses or not."""
    return value.encode() if isinstance(value, str) else value


def as_text(value: bytes | str) -> str:
    """A reply value as text, whether the client decoded responses or not."""
    return value.decode() if isinstance(value, bytes) else value
