"""Renderer throughput: feeds/s of `shared.render` vs `MessageToDict` + `json.dumps`.

Run: `.venv/bin/python -m bench.render [--seconds S]`. Both paths render the same realistic
frames (`bench.frames`), one JSON document per instrument; CPU time (`time.process_time`) of
the best of a few rounds is reported, so other load on the machine matters less. Before
timing, every rendered feed is checked against MessageToDict, so the figures are for correct
output. Projection rows compare `project()` with the naive way: build the target mode's
`Feed` by copying protobuf fields, then MessageToDict + json.dumps.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import orjson
from google.protobuf.json_format import MessageToDict

from bench.frames import FrameKind, build_frames, mixed_frames
from shared.instruments import Mode
from shared.proto import pb
from shared.render import project, render_feed, render_frame

FRAMES_PER_KIND = 40


def measure(work: Callable[[], int], seconds: float, rounds: int) -> float:
    """Best items/s of `rounds` rounds, each repeating `work` (which returns its item count)
    for at least `seconds` of CPU time."""
    best = 0.0
    for _ in range(rounds):
        items, start = 0, time.process_time()
        while (elapsed := time.process_time() - start) < seconds:
            items += work()
        best = max(best, items / elapsed)
    return best


def all_feeds(frames: list[pb.FeedResponse]) -> list[pb.Feed]:
    return [feed for frame in frames for feed in frame.feeds.values()]


def render_frames(frames: list[pb.FeedResponse]) -> int:
    count = 0
    for frame in frames:
        count += len(render_frame(frame))
    return count


def baseline_frames(frames: list[pb.FeedResponse]) -> int:
    count = 0
    for frame in frames:
        for feed in frame.feeds.values():
            json.dumps(MessageToDict(feed))
            count += 1
    return count


def check(frames: list[pb.FeedResponse]) -> None:
    for feed in all_feeds(frames):
        if orjson.loads(render_feed(feed)) != MessageToDict(feed):
            raise SystemExit(f"renderer output differs from MessageToDict for {feed}")


def _copy(target: Any, name: str, source: Any) -> None:
    field = getattr(target, name)
    field.SetInParent()
    field.MergeFrom(source)


def naive_projection(feed: pb.Feed, mode: Mode) -> pb.Feed:
    """The projected Feed built the obvious way, with protobuf copies."""
    market = feed.fullFeed.marketFF
    out = pb.Feed()
    if mode == Mode.LTPC:
        _copy(out, "ltpc", market.ltpc)
    elif mode == Mode.OPTION_GREEKS:
        out.requestMode = pb.option_greeks
        first = out.firstLevelWithGreeks
        first.SetInParent()
        if market.HasField("ltpc"):
            _copy(first, "ltpc", market.ltpc)
        if market.marketLevel.bidAskQuote:
            _copy(first, "firstDepth", market.marketLevel.bidAskQuote[0])
        if market.HasField("optionGreeks"):
            _copy(first, "optionGreeks", market.optionGreeks)
        first.vtt, first.oi, first.iv = market.vtt, market.oi, market.iv
    else:
        out.CopyFrom(feed)
        out.requestMode = pb.full_d5
        del out.fullFeed.marketFF.marketLevel.bidAskQuote[5:]
    return out


COLUMNS = ("feeds", "renderer feeds/s", "baseline feeds/s", "ratio")


def header(first: str) -> str:
    cells = [f"{first:<40}", *COLUMNS]
    rule = ["-" * len(cell) for cell in cells]
    return f"| {' | '.join(cells)} |\n|-{'-|-'.join(rule)}-|\n"


def row(name: str, feeds: int, ours: float, theirs: float) -> str:
    widths = [len(column) for column in COLUMNS]
    cells = [
        f"{name:<40}",
        f"{feeds:>{widths[0]}}",
        f"{ours:>{widths[1]},.0f}",
        f"{theirs:>{widths[2]},.0f}",
        f"{ours / theirs:>{widths[3] - 1}.1f}x",
    ]
    return f"| {' | '.join(cells)} |\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.render", description=__doc__)
    parser.add_argument("--seconds", type=float, default=0.2, help="CPU seconds per round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per measurement (best)")
    args = parser.parse_args(argv)
    out = sys.stdout

    out.write("renderer = shared.render.render_frame; baseline = json.dumps(MessageToDict(feed))\n")
    out.write(header("frames of"))
    kinds: list[tuple[str, list[pb.FeedResponse]]] = [
        (kind.value, build_frames(kind, FRAMES_PER_KIND)) for kind in FrameKind
    ]
    kinds.append(("mixed (all of the above in turn)", mixed_frames(FRAMES_PER_KIND * 3)))
    for name, frames in kinds:
        check(frames)
        feeds = len(all_feeds(frames))
        ours = measure(functools.partial(render_frames, frames), args.seconds, args.rounds)
        theirs = measure(functools.partial(baseline_frames, frames), args.seconds, args.rounds)
        out.write(row(name, feeds, ours, theirs))
        out.flush()

    out.write("\nrenderer = shared.render.project; baseline = the target mode's Feed built with ")
    out.write("protobuf copies, then json.dumps(MessageToDict(...))\n")
    out.write(header("projection"))
    cases = [
        ("full option -> ltpc", FrameKind.FULL_OPTION, Mode.LTPC),
        ("full option -> option_greeks", FrameKind.FULL_OPTION, Mode.OPTION_GREEKS),
        ("full_d30 option -> full", FrameKind.FULL_D30, Mode.FULL),
    ]
    for name, kind, mode in cases:
        feeds_list = all_feeds(build_frames(kind, FRAMES_PER_KIND))
        for feed in feeds_list:
            want = MessageToDict(naive_projection(feed, mode))
            if orjson.loads(project(feed, mode)) != want:
                raise SystemExit(f"projection differs for {name}")

        def ours_work(fl: list[pb.Feed] = feeds_list, m: Mode = mode) -> int:
            for feed in fl:
                project(feed, m)
            return len(fl)

        def naive_work(fl: list[pb.Feed] = feeds_list, m: Mode = mode) -> int:
            for feed in fl:
                json.dumps(MessageToDict(naive_projection(feed, m)))
            return len(fl)

        ours = measure(ours_work, args.seconds, args.rounds)
        theirs = measure(naive_work, args.seconds, args.rounds)
        out.write(row(name, len(feeds_list), ours, theirs))
        out.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
