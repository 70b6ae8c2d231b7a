"""The lease: its proof (on our clock, from the start of the last renewal) against a real Redis,
and when the holder and a standby try again (pure)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis.asyncio as aioredis

from services.ingestor.lease import LAPSE_MARGIN, Lease, LeaseTiming, LeaseView
from services.ingestor.settings import IngestorSettings
from shared import redis_contract as rc
from shared.settings import SettingsError, load_settings

TIMING = LeaseTiming(ttl=1.0, renew_every=0.2)


def ticking(*readings: float) -> Callable[[], float]:
    """A clock that reads these values in turn, then keeps the last."""
    values = list(readings)

    def clock() -> float:
        return values.pop(0) if len(values) > 1 else values[0]

    return clock


async def test_the_proof_lasts_a_ttl_from_the_start_of_the_renewal(
    redis_client: aioredis.Redis,
) -> None:
    # Read before the call (10.0), then by proven(): the call itself took no time on this clock
    # or a lot; either way the proof ends at 10.0 + TTL, never later.
    lease = Lease(redis_client, "a", 1000, clock=ticking(10.0, 10.999, 11.0))
    view = await lease.acquire()
    assert view == LeaseView(held=True, holder_ttl=1.0)
    assert lease.proven()  # 10.999
    assert not lease.proven()  # 11.0
    assert lease.remaining() == 0.0
    assert 900 < await redis_client.pttl(rc.INGESTOR_LEASE) <= 1000


async def test_a_standby_learns_what_the_holder_has_left_and_proves_nothing(
    redis_client: aioredis.Redis,
) -> None:
    holder, standby = Lease(redis_client, "a", 1000), Lease(redis_client, "b", 1000)
    assert (await holder.acquire()).held
    view = await standby.acquire()
    assert not view.held and 0.5 < view.holder_ttl <= 1.0
    assert not standby.proven()
    assert await redis_client.get(rc.INGESTOR_LEASE) == b"a"


async def test_a_failed_renewal_ends_the_proof_and_a_release_frees_the_lease(
    redis_client: aioredis.Redis,
) -> None:
    first, second = Lease(redis_client, "a", 1000), Lease(redis_client, "b", 1000)
    await first.acquire()
    await redis_client.set(rc.INGESTOR_LEASE, "b", px=1000)  # taken over (e.g. after a pause)
    assert not (await first.acquire()).held
    assert not first.proven()
    assert (await second.acquire()).held
    assert not await first.release()  # not ours: left alone
    assert await second.release()
    assert not second.proven()
    assert await redis_client.get(rc.INGESTOR_LEASE) is None


def test_the_holder_renews_at_its_pace_from_the_start_of_the_last_try() -> None:
    held = LeaseView(held=True, holder_ttl=1.0)
    assert TIMING.next_try(held, elapsed=0.05) == pytest.approx(0.15)
    assert TIMING.next_try(held, elapsed=0.5) == 0.0  # late already: at once


def test_a_standby_wakes_just_after_the_holders_lease_would_lapse() -> None:
    dying = LeaseView(held=False, holder_ttl=0.3)
    assert TIMING.next_try(dying, elapsed=0.0) == pytest.approx(0.3 + LAPSE_MARGIN)
    # Never longer than a TTL, and a lease without expiry is looked at every renewal period.
    assert TIMING.next_try(LeaseView(held=False, holder_ttl=50.0), elapsed=0.0) == 1.0
    assert TIMING.next_try(LeaseView(held=False, holder_ttl=-0.001), elapsed=0.0) == 0.2


def test_renewal_must_fit_twice_in_the_ttl() -> None:
    with pytest.raises(SettingsError, match="INGESTOR_LEASE_RENEW_MS"):
        load_settings(IngestorSettings, ingestor_lease_ttl_ms=1000, ingestor_lease_renew_ms=600)
    settings = load_settings(
        IngestorSettings, ingestor_lease_ttl_ms=1000, ingestor_lease_renew_ms=500
    )
    assert settings.ingestor_lease_renew_ms == 500
