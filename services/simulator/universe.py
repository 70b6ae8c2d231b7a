"""The simulated market's instruments: what exists, under which key, with which parameters.

Pure data, no web framework: the gateway's instrument catalogue (`/api/instruments`, and the
only keys it lets clients subscribe) is `universe()`. The built-in universe holds the main
NSE/BSE indices, a few dozen equities under their real ISINs (listed on NSE and BSE), their
stock futures, and index options and futures whose expiries follow today's date (NIFTY weeklies
and monthlies on Tuesdays, BANKNIFTY and FINNIFTY monthlies; strikes around each index's price,
as exchanges list them), and MCX's gold, silver and crude oil futures (on the same monthly
expiries, a simplification). Like Upstox, the simulator knows nothing else: `lookup()` answers None
for a key that is not listed, and such a key streams nothing.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import asdict, dataclass, replace
from functools import lru_cache
from typing import Final, Literal

from services.simulator.holidays import is_trading_holiday
from shared.instruments import is_instrument_key, segment_of
from shared.ist import now_ist

InstrumentType = Literal["EQ", "INDEX", "FUT", "CE", "PE"]


@dataclass(frozen=True, kw_only=True)
class Instrument:
    """One instrument, in the vocabulary of Upstox's instrument master.

    `base_price`, `annual_volatility`, `annual_drift` and `daily_volume` parameterise the
    simulator's price model; they are not Upstox fields. `tick_size` is in rupees.
    """

    instrument_key: str
    segment: str
    exchange: str
    instrument_type: InstrumentType
    trading_symbol: str
    name: str
    exchange_token: str
    isin: str | None = None
    expiry: dt.date | None = None
    strike_price: float | None = None
    lot_size: int
    tick_size: float
    underlying_key: str | None = None
    underlying_symbol: str | None = None
    base_price: float
    annual_volatility: float
    annual_drift: float
    daily_volume: int

    @property
    def is_index(self) -> bool:
        return self.instrument_type == "INDEX"

    @property
    def is_option(self) -> bool:
        return self.instrument_type in ("CE", "PE")

    @property
    def is_derivative(self) -> bool:
        return self.instrument_type in ("CE", "PE", "FUT")

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form (expiry as `YYYY-MM-DD`)."""
        record = asdict(self)
        record["expiry"] = self.expiry.isoformat() if self.expiry else None
        return record


# (symbol, ISIN, name, price, volatility, drift, daily volume)
_EQUITIES: Final = (
    ("RELIANCE", "INE002A01018", "RELIANCE INDUSTRIES LTD", 1520.0, 0.22, 0.10, 9_000_000),
    ("TCS", "INE467B01029", "TATA CONSULTANCY SERV LT", 3150.0, 0.20, 0.08, 2_500_000),
    ("HDFCBANK", "INE040A01034", "HDFC BANK LTD", 990.0, 0.18, 0.09, 12_000_000),
    ("INFY", "INE009A01021", "INFOSYS LIMITED", 1560.0, 0.24, 0.08, 6_000_000),
    ("ICICIBANK", "INE090A01021", "ICICI BANK LTD.", 1360.0, 0.20, 0.14, 10_000_000),
    ("HINDUNILVR", "INE030A01027", "HINDUSTAN UNILEVER LTD.", 2450.0, 0.17, 0.05, 1_500_000),
    ("ITC", "INE154A01025", "ITC LTD", 405.0, 0.18, 0.07, 11_000_000),
    ("SBIN", "INE062A01020", "STATE BANK OF INDIA", 960.0, 0.24, 0.12, 9_000_000),
    ("BHARTIARTL", "INE397D01024", "BHARTI AIRTEL LIMITED", 2090.0, 0.21, 0.16, 5_000_000),
    ("KOTAKBANK", "INE237A01028", "KOTAK MAHINDRA BANK LTD", 2110.0, 0.20, 0.06, 3_000_000),
    ("LT", "INE018A01030", "LARSEN & TOUBRO LTD.", 4050.0, 0.22, 0.12, 2_000_000),
    ("AXISBANK", "INE238A01034", "AXIS BANK LIMITED", 1270.0, 0.23, 0.09, 7_000_000),
    ("ASIANPAINT", "INE021A01026", "ASIAN PAINTS LIMITED", 2880.0, 0.20, 0.03, 1_200_000),
    ("MARUTI", "INE585B01010", "MARUTI SUZUKI INDIA LTD.", 15900.0, 0.21, 0.10, 400_000),
    ("SUNPHARMA", "INE044A01036", "SUN PHARMACEUTICAL IND L", 1780.0, 0.20, 0.12, 2_500_000),
    ("TITAN", "INE280A01028", "TITAN COMPANY LIMITED", 3900.0, 0.22, 0.10, 1_000_000),
    ("BAJFINANCE", "INE296A01024", "BAJAJ FINANCE LIMITED", 1030.0, 0.28, 0.12, 6_000_000),
    ("WIPRO", "INE075A01022", "WIPRO LTD", 245.0, 0.24, 0.05, 9_000_000),
    ("HCLTECH", "INE860A01027", "HCL TECHNOLOGIES LTD", 1620.0, 0.23, 0.10, 3_000_000),
    ("ULTRACEMCO", "INE481G01011", "ULTRATECH CEMENT LIMITED", 11800.0, 0.20, 0.09, 300_000),
    ("NESTLEIND", "INE239A01024", "NESTLE INDIA LIMITED", 1270.0, 0.16, 0.06, 1_200_000),
    ("TATASTEEL", "INE081A01020", "TATA STEEL LIMITED", 170.0, 0.30, 0.08, 30_000_000),
    ("POWERGRID", "INE752E01010", "POWER GRID CORP. LTD.", 275.0, 0.22, 0.10, 9_000_000),
    ("NTPC", "INE733E01010", "NTPC LTD", 325.0, 0.23, 0.11, 10_000_000),
    ("ONGC", "INE213A01029", "OIL AND NATURAL GAS CORP.", 245.0, 0.27, 0.07, 12_000_000),
    ("M&M", "INE101A01026", "MAHINDRA & MAHINDRA LTD", 3700.0, 0.25, 0.16, 2_500_000),
    ("ADANIENT", "INE423A01024", "ADANI ENTERPRISES LIMITED", 2400.0, 0.38, 0.10, 1_500_000),
    ("ADANIPORTS", "INE742F01042", "ADANI PORTS AND SEZ LTD", 1480.0, 0.32, 0.12, 2_500_000),
    ("JSWSTEEL", "INE019A01038", "JSW STEEL LIMITED", 1160.0, 0.28, 0.09, 2_000_000),
    ("COALINDIA", "INE522F01014", "COAL INDIA LTD", 385.0, 0.26, 0.09, 6_000_000),
    ("BAJAJFINSV", "INE918I01026", "BAJAJ FINSERV LTD.", 2050.0, 0.25, 0.09, 1_000_000),
    ("TECHM", "INE669C01036", "TECH MAHINDRA LIMITED", 1450.0, 0.26, 0.07, 2_000_000),
    ("HDFCLIFE", "INE795G01014", "HDFC LIFE INS CO LTD", 760.0, 0.22, 0.05, 3_000_000),
    ("SBILIFE", "INE123W01016", "SBI LIFE INSURANCE CO LTD", 1980.0, 0.21, 0.08, 1_000_000),
    ("DRREDDY", "INE089A01031", "DR. REDDY S LABORATORIES", 1250.0, 0.21, 0.08, 1_800_000),
    ("CIPLA", "INE059A01026", "CIPLA LTD", 1510.0, 0.21, 0.09, 1_500_000),
    ("GRASIM", "INE047A01021", "GRASIM INDUSTRIES LTD", 2750.0, 0.22, 0.10, 700_000),
    ("EICHERMOT", "INE066A01021", "EICHER MOTORS LTD", 7000.0, 0.24, 0.14, 500_000),
    ("INDUSINDBK", "INE095A01012", "INDUSIND BANK LIMITED", 860.0, 0.34, 0.00, 4_000_000),
    ("HEROMOTOCO", "INE158A01026", "HERO MOTOCORP LIMITED", 5600.0, 0.24, 0.10, 600_000),
    ("BRITANNIA", "INE216A01030", "BRITANNIA INDUSTRIES LTD", 5900.0, 0.18, 0.08, 300_000),
    ("APOLLOHOSP", "INE437A01024", "APOLLO HOSPITALS ENTER. L", 7500.0, 0.23, 0.12, 400_000),
    ("DIVISLAB", "INE361B01024", "DIVI S LABORATORIES LTD", 6500.0, 0.24, 0.10, 400_000),
    ("TATACONSUM", "INE192A01025", "TATA CONSUMER PRODUCT LTD", 1170.0, 0.22, 0.09, 1_500_000),
    ("BPCL", "INE029A01011", "BHARAT PETROLEUM CORP  LT", 360.0, 0.27, 0.08, 6_000_000),
    ("HINDALCO", "INE038A01020", "HINDALCO  INDUSTRIES  LTD", 810.0, 0.27, 0.12, 5_000_000),
)

# (key, trading symbol, price, volatility, drift)
_INDICES: Final = (
    ("NSE_INDEX|Nifty 50", "NIFTY", 26000.0, 0.14, 0.11),
    ("NSE_INDEX|Nifty Bank", "BANKNIFTY", 59000.0, 0.16, 0.11),
    ("NSE_INDEX|India VIX", "INDIA VIX", 12.0, 0.90, 0.0),
    ("NSE_INDEX|Nifty Fin Service", "FINNIFTY", 27500.0, 0.16, 0.11),
    ("NSE_INDEX|Nifty IT", "NIFTY IT", 36000.0, 0.20, 0.10),
    ("NSE_INDEX|Nifty Next 50", "NIFTY NEXT 50", 69000.0, 0.17, 0.12),
    ("NSE_INDEX|Nifty Midcap 100", "NIFTY MIDCAP 100", 60000.0, 0.18, 0.15),
    ("NSE_INDEX|Nifty Auto", "NIFTY AUTO", 27000.0, 0.19, 0.13),
    ("NSE_INDEX|Nifty Pharma", "NIFTY PHARMA", 22500.0, 0.17, 0.11),
    ("NSE_INDEX|Nifty FMCG", "NIFTY FMCG", 55500.0, 0.14, 0.08),
    ("BSE_INDEX|SENSEX", "SENSEX", 85000.0, 0.14, 0.11),
    ("BSE_INDEX|BANKEX", "BANKEX", 66000.0, 0.16, 0.11),
    # MCX's commodity indices, here at the level of the commodity's price: its futures trade
    # into the evening, after the equity segments close.
    ("MCX_INDEX|MCXGOLDEX", "MCXGOLDEX", 130000.0, 0.15, 0.10),
    ("MCX_INDEX|MCXSILVDEX", "MCXSILVDEX", 160000.0, 0.25, 0.10),
    ("MCX_INDEX|MCXCRUDEX", "MCXCRUDEX", 5200.0, 0.35, 0.0),
)

# Index derivatives listed on the built-in underlyings: (symbol, underlying key, lot, strike
# step, strikes each side of the money, weekly option expiries, monthly option expiries).
# Enough strikes and expiries that benchmarks find well over a thousand real option keys.
_DERIVATIVES: Final = (
    ("NIFTY", "NSE_INDEX|Nifty 50", 75, 50.0, 40, 4, 3),
    ("BANKNIFTY", "NSE_INDEX|Nifty Bank", 35, 100.0, 30, 0, 3),
    ("FINNIFTY", "NSE_INDEX|Nifty Fin Service", 65, 50.0, 20, 0, 3),
)
FUTURE_EXPIRIES: Final = 3  # near, next and far month, for index and stock futures
STOCK_FUTURE_VALUE: Final = 600_000.0  # rupees a stock future's lot is worth, about
_LOTS: Final = {"RELIANCE": 500}  # lots as listed, where the rule above would differ
# Commodity futures on MCX: (symbol, the index that stands for its spot price, lot).
_COMMODITY_FUTURES: Final = (
    ("GOLD", "MCX_INDEX|MCXGOLDEX", 1),
    ("SILVER", "MCX_INDEX|MCXSILVDEX", 30),
    ("CRUDEOIL", "MCX_INDEX|MCXCRUDEX", 100),
)

_MONTHS: Final = (
    "JAN",
    "FEB",
    "MAR",
    "APR",
    "MAY",
    "JUN",
    "JUL",
    "AUG",
    "SEP",
    "OCT",
    "NOV",
    "DEC",
)
_EXCHANGE_OF_PREFIX: Final = {"NCD": "NSE", "BCD": "BSE", "NSE": "NSE", "BSE": "BSE", "MCX": "MCX"}
_OPTION_VOLATILITY: Final = 0.13  # at-the-money implied volatility of index options


def stable_hash(text: str) -> int:
    """A 64-bit hash that, unlike `hash()`, is the same in every process."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def exchange_of(segment: str) -> str:
    return _EXCHANGE_OF_PREFIX.get(segment.split("_", 1)[0], segment.split("_", 1)[0])


def _ist_today() -> dt.date:
    return now_ist().date()


def _on_or_before_trading_day(day: dt.date) -> dt.date:
    while day.weekday() >= 5 or is_trading_holiday(day):
        day -= dt.timedelta(days=1)
    return day


def _last_weekday_of_month(year: int, month: int, weekday: int) -> dt.date:
    first_next = dt.date(year + month // 12, month % 12 + 1, 1)
    day = first_next - dt.timedelta(days=1)
    while day.weekday() != weekday:
        day -= dt.timedelta(days=1)
    return day


def monthly_expiries(today: dt.date, count: int) -> list[dt.date]:
    """The next `count` monthly expiries (last Tuesday, moved back over holidays)."""
    found: list[dt.date] = []
    year, month = today.year, today.month
    while len(found) < count:
        expiry = _on_or_before_trading_day(_last_weekday_of_month(year, month, 1))
        if expiry >= today:
            found.append(expiry)
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return found


def weekly_expiries(today: dt.date, count: int) -> list[dt.date]:
    found: list[dt.date] = []
    day = today + dt.timedelta(days=(1 - today.weekday()) % 7)
    while len(found) < count:
        expiry = _on_or_before_trading_day(day)
        if expiry >= today:
            found.append(expiry)
        day += dt.timedelta(days=7)
    return found


def _expiry_text(day: dt.date) -> str:
    return f"{day.day:02d} {_MONTHS[day.month - 1]} {day.year % 100:02d}"


def _token(taken: set[int], *parts: object) -> str:
    token = 35_000 + stable_hash("|".join(str(part) for part in parts)) % 900_000
    while token in taken:
        token += 1
    taken.add(token)
    return str(token)


def _equities() -> list[Instrument]:
    return [
        Instrument(
            instrument_key=f"NSE_EQ|{isin}",
            segment="NSE_EQ",
            exchange="NSE",
            instrument_type="EQ",
            trading_symbol=symbol,
            name=name,
            exchange_token=str(1000 + stable_hash(isin) % 90_000),
            isin=isin,
            lot_size=1,
            tick_size=0.05 if price >= 250 else 0.01,
            base_price=price,
            annual_volatility=volatility,
            annual_drift=drift,
            daily_volume=volume,
        )
        for symbol, isin, name, price, volatility, drift, volume in _EQUITIES
    ]


def _indices() -> list[Instrument]:
    return [
        Instrument(
            instrument_key=key,
            segment=segment_of(key),
            exchange=exchange_of(segment_of(key)),
            instrument_type="INDEX",
            trading_symbol=symbol,
            name=key.split("|", 1)[1],
            exchange_token=str(26_000 + stable_hash(key) % 1000),
            lot_size=0,
            tick_size=0.01,
            base_price=price,
            annual_volatility=volatility,
            annual_drift=drift,
            daily_volume=0,
        )
        for key, symbol, price, volatility, drift in _INDICES
    ]


def _future(
    symbol: str, underlying: Instrument, lot: int, expiry: dt.date, taken: set[int]
) -> Instrument:
    token = _token(taken, symbol, "FUT", expiry)
    segment = "MCX_FO" if underlying.segment.startswith("MCX") else "NSE_FO"
    return Instrument(
        instrument_key=f"{segment}|{token}",
        segment=segment,
        exchange=exchange_of(segment),
        instrument_type="FUT",
        trading_symbol=f"{symbol} FUT {_expiry_text(expiry)}",
        name=symbol,
        exchange_token=token,
        expiry=expiry,
        lot_size=lot,
        tick_size=0.1 if underlying.is_index else 0.05,
        underlying_key=underlying.instrument_key,
        underlying_symbol=symbol,
        base_price=underlying.base_price,
        annual_volatility=underlying.annual_volatility,
        annual_drift=underlying.annual_drift,
        daily_volume=lot * 40_000,
    )


def _option(
    symbol: str,
    underlying: Instrument,
    lot: int,
    expiry: dt.date,
    strike: float,
    kind: Literal["CE", "PE"],
    taken: set[int],
) -> Instrument:
    token = _token(taken, symbol, kind, expiry, strike)
    moneyness = abs(strike / underlying.base_price - 1.0)
    return Instrument(
        instrument_key=f"NSE_FO|{token}",
        segment="NSE_FO",
        exchange="NSE",
        instrument_type=kind,
        trading_symbol=f"{symbol} {strike:g} {kind} {_expiry_text(expiry)}",
        name=symbol,
        exchange_token=token,
        expiry=expiry,
        strike_price=strike,
        lot_size=lot,
        tick_size=0.05,
        underlying_key=underlying.instrument_key,
        underlying_symbol=symbol,
        base_price=underlying.base_price,
        # a gentle smile: out-of-the-money strikes trade at a higher implied volatility
        annual_volatility=_OPTION_VOLATILITY * (1.0 + 2.5 * moneyness),
        annual_drift=0.0,
        daily_volume=lot * int(200_000 * max(0.05, 1.0 - 20 * moneyness)),
    )


def _stock_lot(symbol: str, price: float) -> int:
    listed = _LOTS.get(symbol)
    if listed is not None:
        return listed
    units = STOCK_FUTURE_VALUE / price
    return max(25, round(units / 25) * 25) if units >= 25 else max(1, round(units / 5) * 5)


def _derivatives(today: dt.date, by_key: dict[str, Instrument]) -> list[Instrument]:
    taken: set[int] = set()
    found: list[Instrument] = []
    monthlies = monthly_expiries(today, FUTURE_EXPIRIES)
    for symbol, underlying_key, lot, step, width, weeklies, months in _DERIVATIVES:
        underlying = by_key[underlying_key]
        found.extend(_future(symbol, underlying, lot, expiry, taken) for expiry in monthlies)
        expiries = sorted(set(monthlies[:months] + weekly_expiries(today, weeklies)))
        atm = round(underlying.base_price / step) * step
        for expiry in expiries:
            for offset in range(-width, width + 1):
                strike = atm + offset * step
                for kind in ("CE", "PE"):
                    found.append(_option(symbol, underlying, lot, expiry, strike, kind, taken))
    for equity in _equities():
        lot = _stock_lot(equity.trading_symbol, equity.base_price)
        for expiry in monthlies:
            found.append(_future(equity.trading_symbol, equity, lot, expiry, taken))
    for symbol, underlying_key, lot in _COMMODITY_FUTURES:
        for expiry in monthlies:
            found.append(_future(symbol, by_key[underlying_key], lot, expiry, taken))
    return found


def _bse_listings(equities: list[Instrument]) -> list[Instrument]:
    """The same companies trade on BSE under the same ISIN."""
    return [
        _replace_listing(equity, f"BSE_EQ|{equity.isin}", "BSE_EQ", "BSE") for equity in equities
    ]


@lru_cache(maxsize=4)
def _universe_of(today: dt.date) -> tuple[Instrument, ...]:
    equities = _equities()
    base = _indices() + equities
    by_key = {instrument.instrument_key: instrument for instrument in base}
    return tuple(base + _bse_listings(equities) + _derivatives(today, by_key))


def universe(today: dt.date | None = None) -> list[Instrument]:
    """Every listed instrument; derivatives are listed as of `today` (IST) by default."""
    return list(_universe_of(today or _ist_today()))


@lru_cache(maxsize=8)
def _index_of(today: dt.date) -> dict[str, Instrument]:
    return {instrument.instrument_key: instrument for instrument in _universe_of(today)}


def _replace_listing(instrument: Instrument, key: str, segment: str, exchange: str) -> Instrument:
    return replace(
        instrument,
        instrument_key=key,
        segment=segment,
        exchange=exchange,
        daily_volume=instrument.daily_volume // 10,
    )


def lookup(key: str, today: dt.date | None = None) -> Instrument | None:
    """The instrument listed under `key` as of `today` or, failing that, as of the current day
    (a simulator running for days lists the new contracts the gateway's catalogue offers, as
    an exchange does); None for any other key, well-formed or not."""
    if not is_instrument_key(key):
        return None
    current = _ist_today()
    found = _index_of(today or current).get(key)
    if found is None and today is not None and today != current:
        found = _index_of(current).get(key)
    return found
