"""Upstox's V3 feed client protocol, without I/O: parsing requests and keeping a connection's
subscriptions within Upstox's per-mode key limits. The simulator serves it as the upstream, and
the gateway's Upstox-compatible endpoint to tools written against Upstox.

Requests are JSON objects (sent as binary frames, text tolerated): `{"guid": "...", "method":
"sub"|"unsub"|"change_mode", "data": {"mode": ..., "instrumentKeys": [...]}}`.
`sub` without a mode means `ltpc`; `unsub` ignores the mode. A malformed request raises
`RequestError`; the caller logs and ignores it, it never closes the connection.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal

import orjson

from shared.instruments import Mode, is_instrument_key

Method = Literal["sub", "unsub", "change_mode"]
METHODS: Final = ("sub", "unsub", "change_mode")
MAX_REQUEST_BYTES: Final = 1 << 20


class RequestError(ValueError):
    """A feed request that cannot be understood."""


@dataclass(frozen=True)
class FeedRequest:
    guid: str | None
    method: Method
    mode: Mode | None
    keys: tuple[str, ...]
    rejected_keys: tuple[str, ...] = ()


def parse_request(raw: bytes | str) -> FeedRequest:
    if len(raw) > MAX_REQUEST_BYTES:
        raise RequestError("request too large")
    try:
        message = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise RequestError("not JSON") from error
    if not isinstance(message, dict):
        raise RequestError("not a JSON object")
    method = message.get("method")
    if method not in METHODS:
        raise RequestError("unknown method")
    guid = message.get("guid")
    data = message.get("data")
    if not isinstance(data, dict):
        raise RequestError("missing data")
    raw_keys = data.get("instrumentKeys")
    if not isinstance(raw_keys, list) or not raw_keys:
        raise RequestError("missing instrumentKeys")
    mode: Mode | None = None
    raw_mode = data.get("mode")
    if method == "sub":
        mode = _mode(raw_mode if raw_mode is not None else "ltpc")
    elif method == "change_mode":
        mode = _mode(raw_mode)
    keys = tuple(dict.fromkeys(key for key in raw_keys if is_instrument_key(key)))
    rejected = tuple(str(key)[:100] for key in raw_keys if not is_instrument_key(key))
    if not keys:
        raise RequestError("no well-formed instrument key")
    return FeedRequest(
        guid=guid if isinstance(guid, str) else None,
        method=method,
        mode=mode,
        keys=keys,
        rejected_keys=rejected,
    )


def _mode(value: object) -> Mode:
    try:
        return Mode(str(value)) if isinstance(value, str) else Mode("?")
    except ValueError:
        raise RequestError("unknown mode") from None


@dataclass(frozen=True)
class KeyLimits:
    """Keys per mode: `single` when one mode is in use, `combined` when several are."""

    single: dict[Mode, int]
    combined: dict[Mode, int]


UPSTOX_LIMITS: Final = KeyLimits(
    single={Mode.LTPC: 5000, Mode.OPTION_GREEKS: 3000, Mode.FULL: 2000, Mode.FULL_D30: 50},
    combined={Mode.LTPC: 2000, Mode.OPTION_GREEKS: 2000, Mode.FULL: 1500, Mode.FULL_D30: 50},
)


@dataclass
class Subscriptions:
    """One connection's keys and modes, in subscription order, and which are within limits.

    Keys past a limit stay subscribed but get no data (as reported of Upstox); they become
    active when earlier keys go away.
    """

    limits: KeyLimits = UPSTOX_LIMITS
    _modes: dict[str, Mode] = field(default_factory=dict)
    active: dict[str, Mode] = field(default_factory=dict)
    active_pairs: tuple[tuple[str, Mode], ...] = ()
    signature: frozenset[tuple[str, Mode]] = frozenset()
    version: int = 0

    @property
    def modes(self) -> dict[str, Mode]:
        return dict(self._modes)

    def refused(self) -> dict[str, Mode]:
        return {key: mode for key, mode in self._modes.items() if key not in self.active}

    def apply(self, request: FeedRequest) -> list[str]:
        """Apply `request`; return the keys that need an `initial_feed` snapshot now."""
        if request.method == "unsub":
            for key in request.keys:
                self._modes.pop(key, None)
        elif request.method == "sub":
            assert request.mode is not None
            for key in request.keys:
                self._modes.pop(key, None)  # re-subscribing moves the key to the back
                self._modes[key] = request.mode
        else:
            assert request.mode is not None
            for key in request.keys:
                if key in self._modes and self._modes[key] is not request.mode:
                    del self._modes[key]
                    self._modes[key] = request.mode
        self._recompute()
        if request.method != "sub":
            return []
        return [key for key in request.keys if key in self.active]

    def _recompute(self) -> None:
        in_use = set(self._modes.values())
        limits = self.limits.single if len(in_use) <= 1 else self.limits.combined
        counts = dict.fromkeys(Mode, 0)
        active: dict[str, Mode] = {}
        for key, mode in self._modes.items():
            if counts[mode] < limits[mode]:
                counts[mode] += 1
                active[key] = mode
        self.active = active
        self.active_pairs = tuple(active.items())
        self.signature = frozenset(self.active_pairs)
        self.version += 1
