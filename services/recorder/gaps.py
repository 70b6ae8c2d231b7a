"""Gap detection over the record stream: pure, no I/O.

Each ingestor instance numbers the frames it appends (`n`), consecutively. Within one instance a
jump means frames that never reached the stream, or were trimmed from it before the recorder read
them; either way they are missing from the recording, and the jump says how many. A frame of
another instance (a failover) starts that instance's own count: not a gap. A count that goes
back (an instance restarted under the same name) starts a new run: not a gap either.
"""

from __future__ import annotations

from typing import NamedTuple

from shared.recording import StreamFrame


class Gap(NamedTuple):
    """Frames `from_n + 1 .. to_n - 1` of `instance` are missing."""

    instance: str
    from_n: int
    to_n: int
    missing: int
    before_received_ms: int
    after_received_ms: int
    before_id: str
    after_id: str

    def key(self) -> tuple[str, int, int]:
        return self.instance, self.from_n, self.to_n


class GapDetector:
    """Remembers the last frame of each instance; `observe` says whether a frame follows a gap."""

    def __init__(self) -> None:
        self._last: dict[str, StreamFrame] = {}

    def copy(self) -> GapDetector:
        twin = GapDetector()
        twin._last = dict(self._last)
        return twin

    def observe(self, frame: StreamFrame) -> Gap | None:
        previous = self._last.get(frame.instance)
        self._last[frame.instance] = frame
        if previous is None or frame.seq <= previous.seq + 1:
            return None
        return Gap(
            instance=frame.instance,
            from_n=previous.seq,
            to_n=frame.seq,
            missing=frame.seq - previous.seq - 1,
            before_received_ms=previous.received_ms,
            after_received_ms=frame.received_ms,
            before_id=previous.stream_id,
            after_id=frame.stream_id,
        )
