"""The instrument catalogue: what `/api/instruments` searches (symbol, name or key), and the
only keys a client may subscribe (`Catalogue.keys`, one frozenset lookup per key).

Sources: the simulator's universe (the default, built in this process from the same code the
simulator runs) or Upstox's instrument master (a JSON list, optionally gzipped, from a file path
or URL; its `instrument_key` fields). Records keep Upstox's field names, so the same client code
reads either. `CatalogueSource.run` loads it at start and keeps it current off the event loop
(the simulator's derivatives roll with the date; Upstox lists new contracts daily); a refresh
that fails keeps the catalogue already loaded.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import gzip
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import httpx
import orjson

from shared.instruments import is_instrument_key
from shared.ist import IST

logger = logging.getLogger(__name__)

SIMULATOR: Final = "simulator"
FIELDS: Final = (
    "instrument_key",
    "trading_symbol",
    "name",
    "segment",
    "exchange",
    "instrument_type",
    "expiry",
    "strike_price",
    "lot_size",
    "tick_size",
    "underlying_key",
)
SIMULATOR_REFRESH_SECONDS: Final = 3600.0  # its derivatives roll with the date
MASTER_REFRESH_SECONDS: Final = 6 * 3600.0  # Upstox republishes it daily around 06:00 IST
MAX_LIMIT: Final = 500
RETRY_SECONDS: Final = 30.0  # after a failed load of the master


class CatalogueError(Exception):
    """The configured instrument source could not be loaded."""


@dataclass(frozen=True, slots=True)
class _Entry:
    record: dict[str, Any]
    symbol: str  # lower case
    name: str
    key: str


def _expiry(value: object) -> str | None:
    """`YYYY-MM-DD` from a date, an ISO string or Upstox's epoch milliseconds."""
    if value in (None, "", 0):
        return None
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, int | float):
        return dt.datetime.fromtimestamp(value / 1000, IST).date().isoformat()
    return str(value)[:10]


def normalise(raw: Mapping[str, Any]) -> dict[str, Any] | None:
    """One record in Upstox's vocabulary, or None if it has no usable instrument key."""
    key = raw.get("instrument_key")
    if not is_instrument_key(key):
        return None
    record = {field: raw.get(field) for field in FIELDS}
    record["expiry"] = _expiry(raw.get("expiry"))
    record["trading_symbol"] = str(raw.get("trading_symbol") or raw.get("tradingsymbol") or key)
    record["name"] = str(raw.get("name") or "")
    return record


class Catalogue:
    """An immutable, searchable list of instruments."""

    def __init__(self, records: Iterable[Mapping[str, Any]]) -> None:
        entries = []
        for raw in records:
            record = normalise(raw)
            if record is not None:
                entries.append(
                    _Entry(
                        record,
                        record["trading_symbol"].lower(),
                        record["name"].lower(),
                        record["instrument_key"].lower(),
                    )
                )
        self._entries = entries
        self.keys: frozenset[str] = frozenset(entry.record["instrument_key"] for entry in entries)

    def __len__(self) -> int:
        return len(self._entries)

    def search(self, query: str, limit: int) -> tuple[list[dict[str, Any]], int]:
        """(best matches first, how many matched). Exact symbol, then symbol prefix, then
        name prefix, then any substring of symbol, name or key; case-insensitive."""
        limit = max(1, min(limit, MAX_LIMIT))
        q = query.strip().lower()
        if not q:
            return [e.record for e in self._entries[:limit]], len(self._entries)
        ranked: list[tuple[int, int, _Entry]] = []
        for position, entry in enumerate(self._entries):
            if entry.symbol == q or entry.key == q:
                rank = 0
            elif entry.symbol.startswith(q):
                rank = 1
            elif entry.name.startswith(q):
                rank = 2
            elif q in entry.symbol or q in entry.name or q in entry.key:
                rank = 3
            else:
                continue
            ranked.append((rank, position, entry))
        ranked.sort(key=lambda item: (item[0], item[1]))
        return [entry.record for _, _, entry in ranked[:limit]], len(ranked)


def _simulator_records() -> list[dict[str, Any]]:
    from services.simulator.universe import universe

    return [instrument.to_dict() for instrument in universe()]


def _decode_master(content: bytes) -> list[dict[str, Any]]:
    if content[:2] == b"\x1f\x8b":
        content = gzip.decompress(content)
    data = orjson.loads(content)
    if isinstance(data, dict):
        data = data.get("data", data.get("instruments", []))
    if not isinstance(data, list):
        raise CatalogueError("the instrument master is not a JSON list")
    return [item for item in data if isinstance(item, dict)]


async def load_master(source: str, timeout_seconds: float) -> list[dict[str, Any]]:
    """Upstox's instrument master from a path or an http(s) URL."""
    try:
        if source.startswith(("http://", "https://")):
            async with httpx.AsyncClient(timeout=timeout_seconds, follow_redirects=True) as http:
                response = await http.get(source)
                response.raise_for_status()
                content = response.content
        else:
            content = await asyncio.to_thread(Path(source).read_bytes)
        return await asyncio.to_thread(_decode_master, content)
    except (OSError, httpx.HTTPError, orjson.JSONDecodeError, EOFError) as error:
        raise CatalogueError(f"cannot load the instrument master from {source}: {error}") from None


class CatalogueSource:
    """Gives the current catalogue: `current` without waiting (None until a load succeeded),
    `get()` loading or refreshing it first if due; `run()` as a task keeps it loaded."""

    def __init__(
        self,
        source: str,
        timeout: float = 30.0,
        simulator: Callable[[], list[dict[str, Any]]] = _simulator_records,
    ) -> None:
        self.source = source
        self._timeout = timeout
        self._simulator = simulator
        self._catalogue: Catalogue | None = None
        self._loaded_at = 0.0
        self._loading = asyncio.Lock()
        self._retry_at = 0.0  # concurrent first searches load the master once

    @property
    def current(self) -> Catalogue | None:
        return self._catalogue

    @property
    def _refresh_seconds(self) -> float:
        return SIMULATOR_REFRESH_SECONDS if self.source == SIMULATOR else MASTER_REFRESH_SECONDS

    async def get(self) -> Catalogue:
        async with self._loading:
            return await self._get()

    async def run(self) -> None:
        """Load the catalogue, retrying until it loads, then refresh it when due."""
        while True:
            try:
                await self.get()
            except CatalogueError as error:
                logger.error("%s; subscriptions are refused until it loads", error)
            await asyncio.sleep(self._next_load_in())

    def _next_load_in(self) -> float:
        if self._catalogue is None:
            return RETRY_SECONDS
        due = self._loaded_at + self._refresh_seconds - time.monotonic()
        return due if due > 0 else RETRY_SECONDS  # the last refresh failed

    async def _get(self) -> Catalogue:
        now = time.monotonic()
        current = self._catalogue
        if current is not None and now - self._loaded_at <= self._refresh_seconds:
            return current
        if self.source == SIMULATOR:
            self._catalogue = await asyncio.to_thread(lambda: Catalogue(self._simulator()))
            self._loaded_at = now
            return self._catalogue
        if now < self._retry_at:
            if current is not None:
                return current
            raise CatalogueError("the instrument master failed to load; retrying shortly")
        try:
            records = await load_master(self.source, self._timeout)
        except CatalogueError as error:
            self._retry_at = now + RETRY_SECONDS  # do not hammer a source that is down
            if current is None:
                raise
            logger.warning("%s; keeping the %d instruments loaded", error, len(current))
            return current
        # Upstox's master has ~100k instruments: index them off the event loop.
        self._catalogue = await asyncio.to_thread(Catalogue, records)
        self._loaded_at = now
        logger.info("loaded %d instruments from the instrument master", len(self._catalogue))
        return self._catalogue
