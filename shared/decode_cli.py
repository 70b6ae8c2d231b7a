"""`tickstream decode FILE...`: print raw feed frames as JSON lines, in MessageToDict form.

Each FILE holds one raw frame (the bytes of one binary WebSocket message of Upstox's V3 feed);
with `--capture`, each FILE is a capture of length-prefixed frames (see `shared.capture`: a
4-byte big-endian unsigned length, then that many frame bytes, repeated). Every frame becomes
one line on stdout: the whole `FeedResponse` as `MessageToDict` gives it, in the order given.

A file that cannot be read, a frame that does not decode or a truncated capture gets one line
on stderr naming the file (and the frame index in a capture); the remaining files are still
printed, and the command then exits 1.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from shared.capture import CaptureError, iter_capture
from shared.render import RenderError, decode_frame, render_frame_envelope

HELP = "print raw feed frames as JSON lines (MessageToDict form)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help="raw frame files")
    parser.add_argument(
        "--capture",
        action="store_true",
        help="each FILE is a capture: frames each preceded by a 4-byte big-endian length",
    )


def decode_file(path: Path, capture: bool) -> Iterator[bytes | str]:
    """JSON lines (bytes) and error messages (str) for one file, in order."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        yield f"{path}: cannot read: {exc.strerror or exc}"
        return
    if not capture:
        try:
            yield render_frame_envelope(decode_frame(data))
        except RenderError as exc:
            yield f"{path}: {exc}"
        return
    try:
        for index, frame in enumerate(iter_capture(data)):
            try:
                yield render_frame_envelope(decode_frame(frame))
            except RenderError as exc:
                yield f"{path}: frame {index}: {exc}"
    except CaptureError as exc:
        yield f"{path}: {exc}"


def run(args: argparse.Namespace) -> int:
    failed = False
    out = sys.stdout.buffer
    try:
        for path in args.files:
            for item in decode_file(path, args.capture):
                if isinstance(item, str):
                    out.flush()  # keep stdout and stderr in order on a terminal
                    sys.stderr.write(f"tickstream decode: {item}\n")
                    failed = True
                else:
                    out.write(item + b"\n")
        out.flush()
    except BrokenPipeError:
        # The reader went away (`| head`): stop quietly; point stdout at devnull so the
        # interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return 1 if failed else 0
