"""The exceptions a feed raises: refusals of the connection and refusals of keys."""

from __future__ import annotations

__all__ = [
    "BadKeys",
    "ConnectionRefused",
    "FeedClosed",
    "ForbiddenKeys",
    "KeysRefused",
    "OverCapacity",
    "RefusedByUpstream",
    "RequestRefused",
    "TickstreamError",
    "TokenExpired",
    "Unauthorized",
    "UnknownKeys",
]


class TickstreamError(Exception):
    """Everything this library raises."""


class FeedClosed(TickstreamError):
    """The feed was closed by its user (`close()` or leaving `async with`)."""


class ConnectionRefused(TickstreamError):
    """The gateway closed the connection for a reason a reconnect would not fix."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class Unauthorized(ConnectionRefused):
    """No valid credential (close 1008 `unauthorized`): missing, bad signature, wrong audience."""


class TokenExpired(Unauthorized):
    """The token's `exp` has come (close 4003, or refused at connect as expired)."""


class RequestRefused(TickstreamError):
    """A request refused whole (`bad_mode`, `too_many_keys`, `rate_limited`, ...): nothing of it
    was done. `code` is the protocol's error code."""

    def __init__(self, code: str, message: str, keys: tuple[str, ...] = ()) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.keys = keys


class KeysRefused(TickstreamError):
    """Some keys of a subscribe were refused. `keys` are the refused ones, `subscribed` the keys
    of the same request the gateway took (they stay subscribed and stream)."""

    code = ""

    def __init__(self, message: str, keys: tuple[str, ...], subscribed: tuple[str, ...]) -> None:
        super().__init__(message)
        self.keys = keys
        self.subscribed = subscribed


class BadKeys(KeysRefused):
    code = "bad_key"


class UnknownKeys(KeysRefused):
    code = "unknown_key"


class ForbiddenKeys(KeysRefused):
    code = "forbidden_key"


class OverCapacity(KeysRefused):
    code = "capacity"


class RefusedByUpstream(KeysRefused):
    code = "refused_by_upstream"


KEY_REFUSALS: dict[str, type[KeysRefused]] = {
    cls.code: cls for cls in (BadKeys, UnknownKeys, ForbiddenKeys, OverCapacity, RefusedByUpstream)
}
