"""Capture files: a sequence of raw feed frames in one file.

Format: for each frame, a 4-byte big-endian unsigned length N, then the N bytes of the frame
(one binary WebSocket message of the V3 feed, a serialized `FeedResponse`). Frames follow each
other with nothing in between; an empty file holds no frames. Zero-length frames are allowed
(they decode to an empty `FeedResponse`).

`tickstream decode --capture FILE` prints such a file; tests and benchmarks write them with
`write_capture`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Final

_HEADER: Final = struct.Struct(">I")
MAX_FRAME_BYTES: Final = 2**32 - 1


class CaptureError(ValueError):
    """A capture that does not follow the format (a truncated header or frame)."""


def encode_frame(frame: bytes) -> bytes:
    """One frame with its length prefix, for writers that append frame by frame."""
    if len(frame) > MAX_FRAME_BYTES:
        raise CaptureError(f"a frame of {len(frame)} bytes does not fit a capture's length")
    return _HEADER.pack(len(frame)) + frame


def write_capture(path: str | Path, frames: Iterable[bytes]) -> None:
    with open(path, "wb") as out:
        for frame in frames:
            out.write(encode_frame(frame))


def iter_capture(data: bytes) -> Iterator[bytes]:
    """Yield the frames of a capture; `CaptureError` (naming the frame index) on truncation.

    Frames before a truncated one are yielded first, so a reader loses nothing that is intact.
    """
    view = memoryview(data)
    offset, index = 0, 0
    while offset < len(view):
        if len(view) - offset < _HEADER.size:
            raise CaptureError(
                f"frame {index}: truncated length prefix ({len(view) - offset} of 4 bytes)"
            )
        (size,) = _HEADER.unpack_from(view, offset)
        offset += _HEADER.size
        if len(view) - offset < size:
            raise CaptureError(
                f"frame {index}: truncated, the prefix says {size} bytes but "
                f"{len(view) - offset} remain"
            )
        yield bytes(view[offset : offset + size])
        offset += size
        index += 1


def read_capture(path: str | Path) -> list[bytes]:
    return list(iter_capture(Path(path).read_bytes()))
