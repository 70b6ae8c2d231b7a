"""Instrument keys and subscription modes: the vocabulary every service shares."""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from typing import Final


class Mode(enum.StrEnum):
    """A subscription mode as clients and Upstox's `sub` request spell it."""

    LTPC = "ltpc"
    OPTION_GREEKS = "option_greeks"
    FULL = "full"
    FULL_D30 = "full_d30"

    @property
    def richness(self) -> int:
        return _RICHNESS[self]

    def covers(self, other: Mode) -> bool:
        """Whether a feed in this mode carries what `other` needs (so it can be projected)."""
        return self.richness >= other.richness


_RICHNESS: Final = {Mode.LTPC: 0, Mode.OPTION_GREEKS: 1, Mode.FULL: 2, Mode.FULL_D30: 3}


def count_modes(modes: Iterable[Mode]) -> dict[str, int]:
    """How many of `modes` are of each mode, every mode present (zeros included)."""
    counts = {mode.value: 0 for mode in Mode}
    for mode in modes:
        counts[mode.value] += 1
    return counts


def richest(modes: set[Mode] | list[Mode]) -> Mode:
    """The richest of the given modes: the one an instrument is subscribed in upstream."""
    return max(modes, key=lambda mode: mode.richness)


SEGMENTS: Final = (
    "NSE_EQ",
    "NSE_FO",
    "NSE_INDEX",
    "NSE_COM",
    "NCD_FO",
    "BSE_EQ",
    "BSE_FO",
    "BSE_INDEX",
    "BCD_FO",
    "MCX_FO",
    "MCX_INDEX",
)
"""The 11 segments the feed's `market_info` reports, in Upstox's order."""

KEY_SEGMENTS: Final = (*SEGMENTS, "GLOBAL_INDEX", "GLOBAL_INDICATOR")
"""Segments an instrument key may name (the newer global ones have no market status)."""

# SEGMENT|IDENTIFIER: an ISIN, an index name (spaces allowed, e.g. "Nifty 50") or a token.
INSTRUMENT_KEY_RE: Final = re.compile(
    r"^(?:" + "|".join(KEY_SEGMENTS) + r")\|[A-Za-z0-9][A-Za-z0-9 &._\-]{0,63}$"
)
MAX_KEY_LENGTH: Final = 80


def is_instrument_key(key: object) -> bool:
    """Whether `key` is a well-formed Upstox instrument key (not whether it exists)."""
    return (
        isinstance(key, str) and len(key) <= MAX_KEY_LENGTH and bool(INSTRUMENT_KEY_RE.match(key))
    )


def segment_of(key: str) -> str:
    return key.split("|", 1)[0]


def is_index(key: str) -> bool:
    return segment_of(key).endswith("_INDEX") or segment_of(key).startswith("GLOBAL_")
