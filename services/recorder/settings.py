"""The recorder's settings: environment variable = field name in upper case (no prefix)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from shared.settings import CommonSettings
from shared.upstox.backoff import Backoff
from shared.viewer_access import ViewerSettings


class RecorderSettings(ViewerSettings, CommonSettings):
    """Where and how the recording is written, and who may query it (`ViewerSettings`: the
    gateway's GATEWAY_VIEWER_ACCESS and token variables, so both answer the same viewers)."""

    recorder_dir: Path = Field(
        default=Path("./recording"), description="Root of the recording (frames/, ticks/)."
    )
    recorder_consumer: str = Field(
        default="recorder-1",
        min_length=1,
        max_length=100,
        description="Consumer name in the record stream's group. Stable, so a restarted "
        "recorder first re-reads the entries it had read but not acknowledged.",
    )
    recorder_flush_seconds: float = Field(default=5.0, gt=0, le=3600)
    recorder_flush_frames: int = Field(default=2000, ge=1, le=1_000_000)
    recorder_max_buffer_frames: int = Field(
        default=50_000,
        ge=1,
        description="Frames held while the disk fails; when full, the stream is not read "
        "(Redis keeps the entries).",
    )
    recorder_retention_days: int = Field(
        default=30, ge=0, description="Days kept; older day= directories are deleted. 0: forever."
    )
    recorder_compact_files: int = Field(
        default=60, ge=2, description="Files in a day directory above which small ones are merged."
    )
    recorder_queries_per_minute: int = Field(
        default=120,
        ge=1,
        description="Queries (/api/ticks, /api/candles, /api/recording/gaps) one viewer (its "
        "token's subject, else its address) may make per minute; beyond: 429 with Retry-After.",
    )
    recorder_retry_seconds: float = Field(
        default=3.0, gt=0, le=600, description="Pause between tries to write after a disk error."
    )

    def backoff(self) -> Backoff:
        """Redis probes after a failure."""
        return Backoff(0.2, 5.0)
