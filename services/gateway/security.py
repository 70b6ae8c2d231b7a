"""Who may open a WebSocket: the client's address behind trusted proxies, the connection caps
and the keys a token forbids (where a client puts its credential and the API keys are
`shared.viewer_access`; the Origin rule is `shared.origins`). Pure: no I/O."""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from typing import Literal

from services.gateway.protocol import ProtocolError, Subscribe
from shared.viewer_tokens import KeyScope

__all__ = ["CapRefusal", "ConnectionCaps", "client_address", "peer_trusted", "split_forbidden"]


def client_address(peer: str | None, forwarded_for: Sequence[str], trusted: Sequence[str]) -> str:
    """The client's address: the TCP peer, unless the peer is a trusted proxy; then the nearest
    address in X-Forwarded-For that is not one (uvicorn's rule for HTTP, which the WebSocket
    protocol class does not go through). `*` trusts everyone, as uvicorn does: the first."""
    if peer is None or not _trusted(peer, trusted):
        return peer or "unknown"
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",") if hop.strip()]
    if not hops:
        return peer
    if "*" in trusted:
        return hops[0]
    for hop in reversed(hops):
        if not _trusted(hop, trusted):
            return hop
    return hops[0]


def peer_trusted(peer: str | None, trusted: Sequence[str]) -> bool:
    """Whether the TCP peer is a trusted proxy, whose X-Forwarded-* headers are believed."""
    return peer is not None and _trusted(peer, trusted)


def _trusted(address: str, trusted: Sequence[str]) -> bool:
    if "*" in trusted:
        return True
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(entry, strict=False) for entry in trusted)


CapRefusal = Literal["connections", "connections_per_address"]


class ConnectionCaps:
    """Open WebSocket connections, in all and per client address, against their caps
    (`per_address` 0: no cap there). Counted when admitted, released when closed."""

    __slots__ = ("_by_address", "_open", "per_address", "total")

    def __init__(self, total: int, per_address: int) -> None:
        self.total = total
        self.per_address = per_address
        self._open = 0
        self._by_address: Counter[str] = Counter()

    def admit(self, address: str) -> CapRefusal | None:
        """Count one more connection from `address`, or say which cap refuses it."""
        if self._open >= self.total:
            return "connections"
        if self.per_address and self._by_address[address] >= self.per_address:
            return "connections_per_address"
        self._open += 1
        self._by_address[address] += 1
        return None

    def release(self, address: str) -> None:
        self._open -= 1
        self._by_address[address] -= 1
        if self._by_address[address] <= 0:
            del self._by_address[address]

    @property
    def open(self) -> int:
        return self._open


def split_forbidden(
    command: Subscribe, scope: KeyScope
) -> tuple[Subscribe | None, ProtocolError | None]:
    """A subscribe as a viewer whose token allows `scope` may make it: the keys outside it are
    refused with `forbidden_key` and the others go ahead, as malformed keys are (None: nothing
    is left to do)."""
    forbidden = scope.forbidden(command.keys)
    if not forbidden:
        return command, None
    error = ProtocolError(
        "forbidden_key",
        "your token does not allow these keys",
        request_id=command.request_id,
        keys=forbidden,
    )
    refused = set(forbidden)
    allowed = tuple(key for key in command.keys if key not in refused)
    if not allowed and not command.bad_keys:
        return None, error
    return replace(command, keys=allowed), error
