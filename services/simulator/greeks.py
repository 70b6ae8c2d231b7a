"""Black-Scholes prices and greeks for European options (no dividends), as option chains quote
them: theta per calendar day, vega and rho per one percentage point."""

from __future__ import annotations

import math
from dataclasses import dataclass

_SQRT_2PI = math.sqrt(2.0 * math.pi)
MIN_YEARS = 1e-6  # at expiry the option is worth its intrinsic value


def _cdf(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def _pdf(x: float) -> float:
    return math.exp(-0.5 * x * x) / _SQRT_2PI


@dataclass(frozen=True, slots=True)
class Greeks:
    price: float
    delta: float
    gamma: float
    theta: float
    vega: float
    rho: float


def black_scholes(
    spot: float, strike: float, years: float, rate: float, volatility: float, call: bool
) -> Greeks:
    if years <= MIN_YEARS or volatility <= 0.0 or spot <= 0.0 or strike <= 0.0:
        intrinsic = max(0.0, spot - strike) if call else max(0.0, strike - spot)
        in_money = (spot > strike) if call else (spot < strike)
        delta = (1.0 if call else -1.0) if in_money else 0.0
        return Greeks(intrinsic, delta, 0.0, 0.0, 0.0, 0.0)
    root = math.sqrt(years)
    d1 = (math.log(spot / strike) + (rate + 0.5 * volatility * volatility) * years) / (
        volatility * root
    )
    d2 = d1 - volatility * root
    discount = math.exp(-rate * years)
    density = _pdf(d1)
    gamma = density / (spot * volatility * root)
    vega = spot * density * root / 100.0
    decay = -spot * density * volatility / (2.0 * root)
    if call:
        price = spot * _cdf(d1) - strike * discount * _cdf(d2)
        delta = _cdf(d1)
        theta = (decay - rate * strike * discount * _cdf(d2)) / 365.0
        rho = strike * years * discount * _cdf(d2) / 100.0
    else:
        price = strike * discount * _cdf(-d2) - spot * _cdf(-d1)
        delta = _cdf(d1) - 1.0
        theta = (decay + rate * strike * discount * _cdf(-d2)) / 365.0
        rho = -strike * years * discount * _cdf(-d2) / 100.0
    return Greeks(max(price, 0.0), delta, gamma, theta, vega, rho)
