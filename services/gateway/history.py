"""`/api/history` without burning the operator's Upstox quota: a cache in Redis shared by every
replica, one Upstox call per chart part however many viewers open the chart at once, and a
rate limit per viewer.

A chart is at most two Upstox calls (`chart_parts`, pure): today's candles (cached for
`GATEWAY_HISTORY_CACHE_SECONDS`, since today's last candle still moves) and, with `days`, the
past days up to yesterday (cached for an hour: they no longer change; the key names the dates,
so a new day is a new entry). `HistoryCache.get` reads a part's entry; on a miss it takes the
part's lock (`SET NX PX`), asks Upstox, stores the answer and releases the lock, while every
other request for that part, on any replica, polls the entry until it is there (or the lock is
gone: then one of them takes it). Upstox's errors are stored too, for two seconds only, so a
failing Upstox is asked once, not once per viewer; an error entry names the login it happened
under (a hash of the token, never the token), so after a new login no refusal of the old token
is ever served. What viewers are counted under: `shared.viewer_guard.viewer_of`; their
buckets: `BucketTable`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
import redis.asyncio as aioredis
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from shared import redis_contract as rc
from shared.metrics import counter
from shared.token_bucket import BucketTable

__all__ = [
    "Failure",
    "History",
    "HistoryCache",
    "HistoryCollector",
    "Part",
    "Rows",
    "chart_parts",
    "merge_rows",
]

logger = logging.getLogger(__name__)

Rows = list[list[Any]]

PAST_TTL_MS: Final = 3_600_000
ERROR_TTL_MS: Final = 2_000
# Long enough for an Upstox call with its retries; a replica that dies holding it delays the
# others this long at most. Waiters give up (503) after as long.
LOCK_MS: Final = 30_000
POLL_FIRST: Final = 0.01
POLL_MAX: Final = 0.1
MAX_VIEWERS: Final = 10_000
METRIC_PREFIX: Final = "tickstream_gateway_history_"

# Deletes the lock only if it is still ours (it may have lapsed and been taken by another).
_RELEASE: Final = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class Part:
    """One Upstox call of a chart: today's candles, or the days `first`..`last`."""

    key: str
    unit: str
    interval: int
    ttl_ms: int
    first: dt.date | None = None  # None: today's (intraday) candles
    last: dt.date | None = None
    today: dt.date | None = None

    @property
    def span(self) -> str:
        if self.first is None:
            return f"intraday:{self.today}"
        return f"{self.first}..{self.last}"

    @property
    def cache_key(self) -> str:
        return rc.history_cache_key(self.key, self.unit, self.interval, self.span)

    @property
    def lock_key(self) -> str:
        return rc.history_lock_key(self.key, self.unit, self.interval, self.span)


def chart_parts(
    key: str, unit: str, interval: int, days: int, today: dt.date, intraday_ttl_ms: int
) -> list[Part]:
    """The Upstox calls behind one chart, oldest first."""
    parts = []
    if days:
        last = today - dt.timedelta(days=1)
        first = today - dt.timedelta(days=days)
        parts.append(Part(key, unit, interval, PAST_TTL_MS, first=first, last=last))
    parts.append(Part(key, unit, interval, intraday_ttl_ms, today=today))
    return parts


def merge_rows(parts: list[Rows]) -> Rows:
    """The parts' rows as one series, oldest first, each time once (Upstox's times all carry
    +05:30, so their ISO text sorts as time does)."""
    by_time = {row[0]: row for rows in parts for row in rows}
    return [by_time[ts] for ts in sorted(by_time)]


@dataclass(frozen=True)
class Failure:
    """An answer that is not candles, as the route sends it (status and JSON body)."""

    status: int
    body: bytes


def login_mark(token: str) -> str:
    """Which login an error happened under: a truncated hash, never the token itself."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


def encode_entry(result: Rows | Failure, mark: str) -> bytes:
    if isinstance(result, Failure):
        body = result.body.decode()
        return orjson.dumps({"status": result.status, "body": body, "login": mark})
    return orjson.dumps({"rows": result})


def decode_entry(raw: bytes | str | None, mark: str) -> Rows | Failure | None:
    """A cached answer for a request under login `mark`; None when there is none for it (absent,
    unreadable, or an error of another login)."""
    if raw is None:
        return None
    try:
        entry = orjson.loads(raw)
        if "rows" in entry:
            rows: Rows = entry["rows"]
            return rows
        if entry["login"] == mark:
            return Failure(int(entry["status"]), str(entry["body"]).encode())
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        logger.warning("an unreadable /api/history cache entry was ignored")
    return None


@dataclass
class HistoryStats:
    hits: int = 0  # chart parts answered from the cache (after a wait or not)
    misses: int = 0  # chart parts this replica fetched from Upstox
    waits: int = 0  # chart parts that waited for another request's Upstox call
    busy: int = 0  # chart parts given up on (503) while another call took too long
    rate_limited: int = 0  # requests refused with 429


class HistoryCache:
    """The shared cache and its single-flight locks (the I/O; the rules are above)."""

    def __init__(self, redis: aioredis.Redis, stats: HistoryStats) -> None:
        self._redis = redis
        self._stats = stats

    async def get(
        self, part: Part, token: str, load: Callable[[], Awaitable[Rows | Failure]]
    ) -> Rows | Failure | None:
        """The part's answer: cached, or from `load` (one caller at a time across replicas).
        None when another request's call took longer than the lock (the caller answers 503)."""
        mark = login_mark(token)
        owner = secrets.token_hex(8)
        pause = POLL_FIRST
        waited = 0.0
        while True:
            found = decode_entry(await self._redis.get(part.cache_key), mark)
            if found is not None:
                self._stats.hits += 1
                return found
            if await self._redis.set(part.lock_key, owner, nx=True, px=LOCK_MS):
                try:
                    # Read again under the lock: the previous holder may have stored the entry
                    # and released the lock between this caller's two reads above.
                    found = decode_entry(await self._redis.get(part.cache_key), mark)
                    if found is not None:
                        self._stats.hits += 1
                        return found
                    self._stats.misses += 1
                    return await self._fill(part, mark, load)
                finally:
                    await self._redis.eval(_RELEASE, 1, part.lock_key, owner)
            if waited == 0.0:
                self._stats.waits += 1
            if waited * 1000 >= LOCK_MS:
                self._stats.busy += 1
                return None
            await asyncio.sleep(pause)
            waited += pause
            pause = min(POLL_MAX, pause * 2)

    async def _fill(
        self, part: Part, mark: str, load: Callable[[], Awaitable[Rows | Failure]]
    ) -> Rows | Failure:
        result = await load()
        ttl = ERROR_TTL_MS if isinstance(result, Failure) else part.ttl_ms
        await self._redis.set(part.cache_key, encode_entry(result, mark), px=ttl)
        return result


@dataclass
class History:
    """What the route needs: the cache, each viewer's bucket, the counts."""

    cache: HistoryCache
    viewers: BucketTable
    intraday_ttl_ms: int
    stats: HistoryStats = field(default_factory=HistoryStats)

    @classmethod
    def create(cls, redis: aioredis.Redis, per_minute: int, cache_seconds: float) -> History:
        stats = HistoryStats()
        return cls(
            HistoryCache(redis, stats),
            BucketTable(per_minute, MAX_VIEWERS),
            round(cache_seconds * 1000),
            stats,
        )


class HistoryCollector(Collector):
    def __init__(self, stats: HistoryStats) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats
        counts = (
            ("cache_hits", "Chart parts answered from the shared cache", stats.hits),
            ("cache_misses", "Chart parts fetched from Upstox by this replica", stats.misses),
            ("waits", "Chart parts that waited for another request's Upstox call", stats.waits),
            ("busy", "Chart parts given up on (503) while another call took too long", stats.busy),
            ("rate_limited", "Requests over GATEWAY_HISTORY_PER_MINUTE (429)", stats.rate_limited),
        )
        for name, doc, value in counts:
            yield counter(METRIC_PREFIX + name, doc, value)
