"""`tickstream decode`, run as the real console script on files the tests write."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from google.protobuf.json_format import MessageToDict

from bench.frames import FrameKind, build_frames, market_info_frame
from shared.capture import CaptureError, encode_frame, iter_capture, read_capture, write_capture
from shared.proto import pb

TICKSTREAM = Path(sys.executable).with_name("tickstream")
MALFORMED = b"\x12\x05ab"  # a feeds entry longer than the frame


def decode(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(TICKSTREAM), "decode", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def lines(stdout: str) -> list[object]:
    return [orjson.loads(line) for line in stdout.splitlines()]


def sample_frames() -> list[pb.FeedResponse]:
    return [
        market_info_frame(),
        build_frames(FrameKind.FULL_OPTION, 1, feeds_per_frame=2)[0],
        build_frames(FrameKind.LTPC, 1, feeds_per_frame=3)[0],
        pb.FeedResponse(),
    ]


def test_one_frame_per_file_in_the_order_given(tmp_path: Path) -> None:
    frames = sample_frames()
    paths = []
    for number, frame in enumerate(frames):
        path = tmp_path / f"frame-{number}.bin"
        path.write_bytes(frame.SerializeToString())
        paths.append(path)
    result = decode(*reversed(paths))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert lines(result.stdout) == [MessageToDict(frame) for frame in reversed(frames)]


def test_capture_files(tmp_path: Path) -> None:
    frames = sample_frames()
    first, second = tmp_path / "a.cap", tmp_path / "b.cap"
    write_capture(first, [frame.SerializeToString() for frame in frames[:2]])
    write_capture(second, [frame.SerializeToString() for frame in frames[2:]])
    result = decode("--capture", first, second)
    assert result.returncode == 0, result.stderr
    assert lines(result.stdout) == [MessageToDict(frame) for frame in frames]


def test_a_malformed_file_is_reported_and_the_rest_still_printed(tmp_path: Path) -> None:
    good = sample_frames()[1]
    before, bad, after = tmp_path / "before.bin", tmp_path / "bad.bin", tmp_path / "after.bin"
    before.write_bytes(good.SerializeToString())
    bad.write_bytes(MALFORMED)
    after.write_bytes(pb.FeedResponse(type=pb.live_feed).SerializeToString())
    result = decode(before, bad, tmp_path / "missing.bin", after)
    assert result.returncode == 1
    assert lines(result.stdout) == [MessageToDict(good), {"type": "live_feed"}]
    errors = result.stderr.splitlines()
    assert len(errors) == 2
    assert errors[0].startswith(f"tickstream decode: {bad}: undecodable feed frame (4 bytes)")
    assert errors[1].startswith(f"tickstream decode: {tmp_path / 'missing.bin'}: cannot read")
    assert "Traceback" not in result.stderr


def test_a_bad_frame_in_a_capture_names_its_index(tmp_path: Path) -> None:
    frames = sample_frames()
    capture = tmp_path / "mixed.cap"
    write_capture(capture, [frames[1].SerializeToString(), MALFORMED, b""])
    with capture.open("ab") as out:  # then a frame cut short
        out.write(encode_frame(frames[2].SerializeToString())[:-3])
    result = decode("--capture", capture)
    assert result.returncode == 1
    assert lines(result.stdout) == [MessageToDict(frames[1]), {}]
    errors = result.stderr.splitlines()
    assert errors[0].startswith(f"tickstream decode: {capture}: frame 1: undecodable feed frame")
    assert errors[1].startswith(f"tickstream decode: {capture}: frame 3: truncated")
    assert "Traceback" not in result.stderr


def test_usage_errors() -> None:
    result = decode()
    assert result.returncode == 2
    assert "FILE" in result.stderr


# --- the capture format ----------------------------------------------------------------------


def test_capture_round_trip(tmp_path: Path) -> None:
    frames = [b"", b"\x08\x01", bytes(range(256)) * 300]
    path = tmp_path / "frames.cap"
    write_capture(path, frames)
    assert read_capture(path) == frames
    assert path.read_bytes()[:4] == b"\x00\x00\x00\x00"  # big-endian length of the empty frame
    assert path.read_bytes()[4:10] == b"\x00\x00\x00\x02\x08\x01"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x00\x00", "frame 0: truncated length prefix (2 of 4 bytes)"),
        (b"\x00\x00\x00\x01\x08\x00\x00\x00\x05ab", "frame 1: truncated, the prefix says 5"),
    ],
)
def test_truncated_captures_keep_the_intact_frames(data: bytes, message: str) -> None:
    frames: list[bytes] = []
    with pytest.raises(CaptureError, match=message.replace("(", r"\(").replace(")", r"\)")):
        frames.extend(iter_capture(data))
    assert frames == ([b"\x08"] if message.startswith("frame 1") else [])
