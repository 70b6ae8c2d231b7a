"""Everything one simulator instance holds, built from its settings."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from starlette.requests import HTTPConnection

from services.simulator.accounts import (
    DEMO_USERS,
    AuthCode,
    FeedGrant,
    OneTimeCodes,
    TokenRecord,
    TokenStore,
)
from services.simulator.clock import MarketClock, now_ms
from services.simulator.errors import (
    TOO_MANY_REQUESTS,
    EnvelopeError,
    invalid_token,
)
from services.simulator.feed import FeedHub
from services.simulator.market import MarketModel
from services.simulator.ratelimit import RateLimiter
from services.simulator.replay import replay_hub
from services.simulator.settings import SimulatorSettings
from shared.feed_protocol import KeyLimits
from shared.instruments import Mode


@dataclass
class SimulatorState:
    settings: SimulatorSettings
    model: MarketModel
    tokens: TokenStore
    auth_codes: OneTimeCodes[AuthCode]
    feed_codes: OneTimeCodes[FeedGrant]
    limiter: RateLimiter
    hub: FeedHub
    history: MarketModel
    history_lock: threading.Lock = field(default_factory=threading.Lock)
    # Candle requests received (answered or refused), for tests that count calls to Upstox.
    candle_requests: int = 0
    # An admin fault: every candle request is answered with this status until it is cleared.
    candle_fault: int | None = None


def key_limits(settings: SimulatorSettings) -> KeyLimits:
    return KeyLimits(
        single={
            Mode.LTPC: settings.simulator_limit_ltpc,
            Mode.OPTION_GREEKS: settings.simulator_limit_option_greeks,
            Mode.FULL: settings.simulator_limit_full,
            Mode.FULL_D30: settings.simulator_limit_full_d30,
        },
        combined={
            Mode.LTPC: settings.simulator_combined_limit_ltpc,
            Mode.OPTION_GREEKS: settings.simulator_combined_limit_option_greeks,
            Mode.FULL: settings.simulator_combined_limit_full,
            Mode.FULL_D30: settings.simulator_combined_limit_full_d30,
        },
    )


def market_offset_ms(settings: SimulatorSettings) -> int:
    """How far the market's clock runs from real time (`SIMULATOR_MARKET_CLOCK_START`)."""
    start = settings.simulator_market_clock_start
    return 0 if start is None else round(start.timestamp() * 1000) - now_ms()


def build_state(settings: SimulatorSettings) -> SimulatorState:
    demo = settings.simulator_demo_token
    tokens = TokenStore(demo.get_secret_value() if demo else None, DEMO_USERS[0])
    model = MarketModel(settings.simulator_seed, MarketClock(settings.simulator_market_clock))
    make_hub: Callable[..., FeedHub] = FeedHub
    if settings.simulator_replay is not None:  # the feed's data from a recording instead
        make_hub = replay_hub(settings)
    hub = make_hub(
        model=model,
        tokens=tokens,
        limits=key_limits(settings),
        tick_interval_ms=settings.simulator_tick_interval_ms,
        max_connections_per_user=settings.simulator_max_connections_per_user,
        max_queued_frames=settings.simulator_send_queue_frames,
        market_offset_ms=market_offset_ms(settings),
        partial_ticks=settings.simulator_partial_ticks,
    )
    return SimulatorState(
        settings=settings,
        model=model,
        tokens=tokens,
        auth_codes=OneTimeCodes(),
        feed_codes=OneTimeCodes(),
        limiter=RateLimiter(
            settings.simulator_rate_limit_per_second,
            settings.simulator_rate_limit_per_minute,
            settings.simulator_rate_limit_per_30_minutes,
        ),
        hub=hub,
        history=model.fresh(),  # candles are built in worker threads, on their own caches
    )


def state_of(connection: HTTPConnection) -> SimulatorState:
    state: SimulatorState = connection.app.state.simulator
    return state


def bearer_token(connection: HTTPConnection) -> str | None:
    header = connection.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def authenticate(connection: HTTPConnection) -> tuple[str, TokenRecord] | None:
    token = bearer_token(connection)
    if token is None:
        return None
    record = state_of(connection).tokens.resolve(token, now_ms())
    return None if record is None else (token, record)


def require_user(connection: HTTPConnection) -> tuple[str, TokenRecord]:
    """Bearer check plus the user's rate limits, for every authenticated REST call."""
    found = authenticate(connection)
    if found is None:
        raise invalid_token()
    if not state_of(connection).limiter.allow(found[1].user.user_id, now_ms()):
        raise EnvelopeError(429, TOO_MANY_REQUESTS, "Too Many Request Sent")
    return found
