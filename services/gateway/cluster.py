"""Redis Cluster topology for the gateway's subscriber: which master carries each channel.

Owns the slot map (from a node's `CLUSTER SLOTS` reply), the routing of channel names to the
master serving their slot (`redis.crc.key_slot` on the name: tick channels carry the instrument
key as a hash tag, so a channel lives in its instrument's slot), which names are sharded
(tick channels: SSUBSCRIBE) and which are classic (control channels: SUBSCRIBE, which a cluster
broadcasts to every node), and how each node's URL derives from REDIS_URL (same scheme and
credentials). Everything here is pure but `fetch_slot_map`, which asks the nodes in turn.

It must not hold connections, subscriptions or clients: the broker does.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, TypeVar
from urllib.parse import urlsplit, urlunsplit

from redis.crc import key_slot

from shared import redis_contract as rc
from shared.redis_client import connect_redis
from shared.redis_link import REDIS_ERRORS, guarded
from shared.resp import as_text

__all__ = [
    "SLOTS",
    "Address",
    "SlotMap",
    "fetch_slot_map",
    "group_by_slot",
    "is_sharded",
    "node_url",
    "slot_of",
]

logger = logging.getLogger(__name__)

SLOTS: Final = 16384
Address = tuple[str, int]
_TICK_PREFIX: Final = rc.TICK_CHANNEL_PREFIX.encode()
T = TypeVar("T", bytes, str)


def slot_of(name: bytes | str) -> int:
    return int(key_slot(name.encode() if isinstance(name, str) else name))


def is_sharded(name: bytes) -> bool:
    """Tick channels are sharded (SPUBLISH/SSUBSCRIBE); control channels stay classic."""
    return name.startswith(_TICK_PREFIX)


def group_by_slot(names: Iterable[T]) -> dict[int, list[T]]:
    """Names by slot, in their order: one SSUBSCRIBE or MGET may only name one slot."""
    groups: dict[int, list[T]] = {}
    for name in names:
        groups.setdefault(slot_of(name), []).append(name)
    return groups


def node_url(seed_url: str, address: Address) -> str:
    """The URL of another node of the seed's cluster: its scheme, credentials and path."""
    parts = urlsplit(seed_url)
    host, port = address
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    userinfo, at, _ = parts.netloc.rpartition("@")
    return urlunsplit((parts.scheme, f"{userinfo}{at}{netloc}", "", "", ""))


def seed_address(seed_url: str) -> Address:
    parts = urlsplit(seed_url)
    return parts.hostname or "localhost", parts.port or 6379


@dataclass(frozen=True, slots=True)
class SlotMap:
    """Slot ranges (start, end inclusive, master) sorted by start, and every node known."""

    ranges: tuple[tuple[int, int, Address], ...]
    nodes: tuple[Address, ...]

    @classmethod
    def from_slots_reply(cls, reply: Sequence[object], seed: Address) -> SlotMap:
        """From `CLUSTER SLOTS`: [[start, end, [host, port, id, ...], replica...], ...]. A node
        announcing no address (an empty host) is the one answering: the seed."""
        ranges: list[tuple[int, int, Address]] = []
        nodes: dict[Address, None] = {}
        for entry in reply:
            if not isinstance(entry, list | tuple) or len(entry) < 3:
                raise ValueError(f"unexpected CLUSTER SLOTS entry: {entry!r}")
            start, end, *served_by = entry
            addresses = [_address(node, seed) for node in served_by]
            ranges.append((_int(start), _int(end), addresses[0]))
            nodes.update(dict.fromkeys(addresses))
        ranges.sort()
        return cls(tuple(ranges), tuple(nodes))

    @property
    def masters(self) -> frozenset[Address]:
        return frozenset(master for _, _, master in self.ranges)

    @property
    def complete(self) -> bool:
        """Every slot is served (after a failover, once a replica has been promoted)."""
        expected = 0
        for start, end, _ in self.ranges:
            if start != expected:
                return False
            expected = end + 1
        return expected == SLOTS

    def master_of(self, slot: int) -> Address | None:
        index = bisect.bisect_right([start for start, _, _ in self.ranges], slot) - 1
        if index < 0:
            return None
        start, end, master = self.ranges[index]
        return master if start <= slot <= end else None

    def route(self, names: Iterable[bytes]) -> dict[Address | None, list[bytes]]:
        """Names by the master serving their slot (None: a slot nobody serves right now)."""
        routed: dict[Address | None, list[bytes]] = {}
        for name in names:
            routed.setdefault(self.master_of(slot_of(name)), []).append(name)
        return routed


def _address(node: object, seed: Address) -> Address:
    if not isinstance(node, list | tuple) or len(node) < 2:
        raise ValueError(f"unexpected CLUSTER SLOTS node: {node!r}")
    host = as_text(node[0]) if isinstance(node[0], bytes | str) and node[0] else seed[0]
    return host, _int(node[1])


def _int(value: object) -> int:
    if not isinstance(value, int | bytes | str):
        raise ValueError(f"unexpected CLUSTER SLOTS number: {value!r}")
    return int(value)


async def fetch_slot_map(seed_url: str, known: Iterable[Address] = ()) -> SlotMap | None:
    """The first complete slot map a node gives, asking the seed, then the nodes known from
    before (the seed may be the node that died). None when no node answers with one."""
    seed = seed_address(seed_url)
    for address in dict.fromkeys((seed, *known)):
        client = connect_redis(node_url(seed_url, address))
        try:
            reply = await guarded(client.execute_command("CLUSTER", "SLOTS"))  # type: ignore[no-untyped-call]
            slot_map = SlotMap.from_slots_reply(reply, address)
        except (*REDIS_ERRORS, ValueError) as error:
            logger.debug("no slot map from %s:%d: %s", *address, error)
            continue
        finally:
            await guarded(client.aclose())
        if slot_map.complete:
            return slot_map
        logger.debug("%s:%d does not serve every slot yet", *address)
    return None
