"""The client protocol as pure functions: client frames in, typed commands or errors out; server
frames out as bytes.

No I/O here. Live frames are spliced together from bytes the ingestor already rendered: a tick's
value and metadata are never parsed, only placed after their (cached, JSON-encoded) key. The
protocol itself is documented in the README ("Client protocol").
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, get_args

import orjson

from services.gateway.errors import GatewayError
from shared.instruments import Mode, is_instrument_key

ErrorCode = Literal[
    "bad_json",
    "bad_request",
    "bad_key",
    "unknown_key",
    "instruments_unavailable",
    "bad_mode",
    "too_many_keys",
    "capacity",
    "rate_limited",
    "not_subscribed",
    "refused_by_upstream",
    "unauthorized",
    "forbidden_key",
    "token_expired",
    "too_many_connections",
]
ERROR_CODES: Final[tuple[ErrorCode, ...]] = get_args(ErrorCode)

RequestId = str | int | float | None

# Close codes (RFC 6455 and the protocol's own).
CLOSE_GOING_AWAY: Final = 1001
CLOSE_POLICY: Final = 1008
CLOSE_TOO_BIG: Final = 1009
CLOSE_SERVICE_RESTART: Final = 1012  # the replica is draining: reconnect (to another)
CLOSE_SLOW_CONSUMER: Final = 4000
CLOSE_IDLE: Final = 4001
CLOSE_TOKEN_EXPIRED: Final = 4003
CLOSE_TRY_AGAIN_LATER: Final = 1013

MAX_ID_LENGTH: Final = 128
MAX_ECHOED_KEY_LENGTH: Final = 100


class ProtocolError(GatewayError):
    """A client request refused as a whole (or in part: `keys` names the refused keys)."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        request_id: RequestId = None,
        keys: Sequence[str] = (),
    ) -> None:
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message
        self.request_id = request_id
        self.keys = tuple(keys)

    def frame(self) -> bytes:
        return error_frame(self.code, self.message, self.request_id, self.keys)


# ---- client -> server ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Subscribe:
    request_id: RequestId
    keys: tuple[str, ...]
    mode: Mode
    bad_keys: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    request_id: RequestId
    keys: tuple[str, ...]
    bad_keys: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Snapshot:
    request_id: RequestId
    keys: tuple[str, ...] | None  # None: every key the client holds
    bad_keys: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Ping:
    request_id: RequestId


Command = Subscribe | Unsubscribe | Snapshot | Ping
OPS: Final = ("subscribe", "unsubscribe", "snapshot", "ping")


def parse_command(data: bytes | str, max_keys: int) -> Command:
    """The command in one client text frame; raises `ProtocolError` for anything refused.

    Malformed keys do not refuse the request: they come back in `bad_keys` while the
    well-formed ones go ahead. `max_keys` bounds the keys one request may name.
    """
    try:
        message = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise ProtocolError("bad_json", "the frame is not valid JSON") from None
    if not isinstance(message, dict):
        raise ProtocolError("bad_request", "a request must be a JSON object")
    request_id = _request_id(message)
    op = message.get("op")
    if not isinstance(op, str) or op not in OPS:
        shown = op if isinstance(op, str) else type(op).__name__
        raise ProtocolError(
            "bad_request",
            f"unknown op {str(shown)[:40]!r}; expected one of {', '.join(OPS)}",
            request_id=request_id,
        )
    if op == "ping":
        return Ping(request_id)
    if op == "snapshot" and message.get("keys") is None:
        return Snapshot(request_id, None)
    keys, bad_keys = _keys(message.get("keys"), max_keys, request_id)
    if op == "subscribe":
        return Subscribe(request_id, keys, _mode(message.get("mode"), request_id), bad_keys)
    if op == "unsubscribe":
        return Unsubscribe(request_id, keys, bad_keys)
    return Snapshot(request_id, keys, bad_keys)


def _request_id(message: dict[str, Any]) -> RequestId:
    value = message.get("id")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ProtocolError("bad_request", "'id' must be a string or a number")
    if isinstance(value, str) and len(value) > MAX_ID_LENGTH:
        raise ProtocolError("bad_request", f"'id' is longer than {MAX_ID_LENGTH} characters")
    if isinstance(value, int) and not -(2**53) <= value <= 2**53:
        raise ProtocolError("bad_request", "'id' is out of range")
    return value


def _keys(
    value: object, max_keys: int, request_id: RequestId
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if not isinstance(value, list) or not value:
        raise ProtocolError(
            "bad_request",
            "'keys' must be a non-empty list of instrument keys",
            request_id=request_id,
        )
    if not all(isinstance(key, str) for key in value):
        raise ProtocolError(
            "bad_request", "'keys' must hold strings (instrument keys)", request_id=request_id
        )
    unique: list[str] = list(dict.fromkeys(value))
    if len(unique) > max_keys:
        raise ProtocolError(
            "too_many_keys",
            f"a request may name at most {max_keys} keys; this one names {len(unique)}",
            request_id=request_id,
        )
    good = tuple(key for key in unique if is_instrument_key(key))
    bad = tuple(key[:MAX_ECHOED_KEY_LENGTH] for key in unique if not is_instrument_key(key))
    return good, bad


def _mode(value: object, request_id: RequestId) -> Mode:
    if value is None:
        return Mode.LTPC
    if isinstance(value, str):
        try:
            return Mode(value)
        except ValueError:
            pass
    shown = value if isinstance(value, str) else type(value).__name__
    raise ProtocolError(
        "bad_mode",
        f"unknown mode {str(shown)[:40]!r}; expected one of {', '.join(m.value for m in Mode)}",
        request_id=request_id,
    )


def bad_key_error(keys: Sequence[str], request_id: RequestId) -> ProtocolError:
    return ProtocolError(
        "bad_key",
        "malformed instrument key(s): expected SEGMENT|IDENTIFIER, e.g. NSE_INDEX|Nifty 50",
        request_id=request_id,
        keys=keys,
    )


# ---- server -> client: control frames -----------------------------------------------------


def _with_id(frame: dict[str, Any], request_id: RequestId) -> dict[str, Any]:
    if request_id is not None:
        frame["id"] = request_id
    return frame


def error_frame(
    code: ErrorCode, message: str, request_id: RequestId = None, keys: Sequence[str] = ()
) -> bytes:
    frame: dict[str, Any] = {"type": "error", "code": code, "message": message}
    _with_id(frame, request_id)
    if keys:
        frame["keys"] = list(keys)
    return orjson.dumps(frame)


def ack_frame(
    op: str, request_id: RequestId, keys: Sequence[str], mode: Mode | None = None
) -> bytes:
    frame: dict[str, Any] = {"type": "ack", "op": op}
    _with_id(frame, request_id)
    frame["keys"] = list(keys)
    if mode is not None:
        frame["mode"] = mode.value
    return orjson.dumps(frame)


def pong_frame(request_id: RequestId) -> bytes:
    return orjson.dumps(_with_id({"type": "pong"}, request_id))


def status_frame(redis_up: bool, ingestor: str, message: str) -> bytes:
    return orjson.dumps(
        {
            "type": "status",
            "redis": "up" if redis_up else "down",
            "ingestor": ingestor,
            "message": message,
        }
    )


# ---- server -> client: feed frames, spliced from pre-encoded bytes --------------------------


def key_json(key: str) -> bytes:
    """The key as a JSON string (`"NSE_INDEX|Nifty 50"`), encoded once per channel."""
    return orjson.dumps(key)


@dataclass(frozen=True, slots=True)
class FeedItem:
    """One instrument's update, ready to splice: `"KEY":VALUE` and `"KEY":META`."""

    feed: bytes
    meta: bytes

    @classmethod
    def of(cls, encoded_key: bytes, value: bytes, meta: bytes) -> FeedItem:
        return cls(encoded_key + b":" + value, encoded_key + b":" + meta)

    @property
    def size(self) -> int:
        return len(self.feed) + len(self.meta)


LIVE_FEED: Final = b'{"type":"live_feed","feeds":{'
INITIAL_FEED: Final = b'{"type":"initial_feed","feeds":{'
FEED_META: Final = b'},"meta":{'
FEED_TS: Final = b'},"currentTs":"'
FEED_END: Final = b'"}'


def feed_frame(head: bytes, items: Iterable[FeedItem], current_ts: bytes) -> bytes:
    """A live_feed/initial_feed payload, unframed: the reference `wires.JSON.frame` builds in
    one join with its WebSocket header."""
    items = list(items)
    feeds = b",".join(item.feed for item in items)
    metas = b",".join(item.meta for item in items)
    return b"".join((head, feeds, FEED_META, metas, FEED_TS, current_ts, FEED_END))


def current_ts(epoch_ms: int) -> bytes:
    return b"%d" % epoch_ms
