"""One instrument's value as delivered: typed access to the common fields over the Upstox-shaped
dict, and the part-wise merge that makes a partial live tick whole again."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Depth", "Greeks", "Level", "Update", "merge_value"]

# The sub-messages a live tick may leave out when they did not change (README, "Client
# protocol"); scalars are not parts: left out means zero.
_PARTS: Mapping[str, tuple[str, ...]] = {
    "marketFF": ("ltpc", "marketLevel", "optionGreeks", "marketOHLC"),
    "indexFF": ("ltpc", "marketOHLC"),
    "firstLevelWithGreeks": ("ltpc", "firstDepth", "optionGreeks"),
    "ltpc": ("ltpc",),
}


def _body(value: Mapping[str, Any]) -> tuple[str, Mapping[str, Any]] | None:
    """(branch, the dict holding its parts), None for a value of no known shape."""
    full = value.get("fullFeed")
    if isinstance(full, Mapping):
        for branch in ("marketFF", "indexFF"):
            body = full.get(branch)
            if isinstance(body, Mapping):
                return branch, body
        return None
    first = value.get("firstLevelWithGreeks")
    if isinstance(first, Mapping):
        return "firstLevelWithGreeks", first
    if "ltpc" in value:
        return "ltpc", value
    return None


def merge_value(whole: Mapping[str, Any] | None, update: Mapping[str, Any]) -> dict[str, Any]:
    """`update` completed with each part it lacks from `whole` (the previous whole value of the
    same key and mode); `update` itself when the shapes differ. Neither argument is changed."""
    merged = _copy(update)
    old = _body(whole) if whole is not None else None
    new = _body(merged)
    if old is None or new is None or old[0] != new[0]:
        return merged
    body = new[1]
    assert isinstance(body, dict)
    for part in _PARTS[new[0]]:
        if part not in body and part in old[1]:
            body[part] = old[1][part]
    return merged


def _copy(value: Mapping[str, Any]) -> dict[str, Any]:
    """Copies the two levels the merge writes into (parts themselves are shared, never written)."""
    out = dict(value)
    full = out.get("fullFeed")
    if isinstance(full, Mapping):
        out["fullFeed"] = {k: dict(v) if isinstance(v, Mapping) else v for k, v in full.items()}
    first = out.get("firstLevelWithGreeks")
    if isinstance(first, Mapping):
        out["firstLevelWithGreeks"] = dict(first)
    return out


def _num(value: object) -> float:
    """A protobuf-JSON number: int64 come as strings, left-out fields are zero."""
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return 0.0
    return 0.0


@dataclass(frozen=True, slots=True)
class Level:
    """One depth level: the best bid and ask at that level."""

    bid_price: float
    bid_quantity: int
    ask_price: float
    ask_quantity: int


@dataclass(frozen=True, slots=True)
class Depth:
    """The book as Upstox sends it: 5 levels (`full`), 30 (`full_d30`), 1 (`option_greeks`)."""

    levels: tuple[Level, ...]

    @property
    def bids(self) -> list[tuple[float, int]]:
        """(price, quantity) per level, best first."""
        return [(level.bid_price, level.bid_quantity) for level in self.levels]

    @property
    def asks(self) -> list[tuple[float, int]]:
        return [(level.ask_price, level.ask_quantity) for level in self.levels]


@dataclass(frozen=True, slots=True)
class Greeks:
    delta: float
    theta: float
    gamma: float
    vega: float
    rho: float


def _level(quote: Mapping[str, Any]) -> Level:
    return Level(
        bid_price=_num(quote.get("bidP")),
        bid_quantity=int(_num(quote.get("bidQ"))),
        ask_price=_num(quote.get("askP")),
        ask_quantity=int(_num(quote.get("askQ"))),
    )


@dataclass(frozen=True, slots=True)
class Update:
    """One instrument's value from an `initial_feed` or `live_feed`.

    `raw` is `feeds[key]` exactly as it came (Upstox's `MessageToDict` shape; a live tick may be
    partial). `value` is the whole value: `raw` with the parts a partial tick left out taken from
    the previous value of the key; the typed properties read `value`. `seq`, `epoch`, `ts` are the
    gateway's `meta[key]`. `snapshot`: from an `initial_feed` (after a subscribe, a reconnect or a
    new epoch): the whole current value, not a tick. `gap`: how many updates of this key were
    superseded before this one (seq jumped by gap + 1): conflation, the value is still current,
    nothing is lost. `new_epoch`: continuity was lost upstream (a snapshot of the key follows).
    """

    key: str
    mode: str
    raw: Mapping[str, Any]
    value: Mapping[str, Any]
    seq: int | None
    epoch: str | None
    ts: int | None
    snapshot: bool = False
    partial: bool = False
    gap: int = 0
    new_epoch: bool = False

    def _branch(self) -> Mapping[str, Any]:
        found = _body(self.value)
        return found[1] if found is not None else {}

    def _ltpc(self) -> Mapping[str, Any] | None:
        ltpc = self._branch().get("ltpc")
        return ltpc if isinstance(ltpc, Mapping) else None

    @property
    def ltp(self) -> float | None:
        """Last traded price (None: the value carries no LTP yet)."""
        ltpc = self._ltpc()
        return None if ltpc is None else _num(ltpc.get("ltp"))

    @property
    def close_price(self) -> float | None:
        """The previous session's close (`cp`), which `change` is measured against."""
        ltpc = self._ltpc()
        return None if ltpc is None or not _num(ltpc.get("cp")) else _num(ltpc.get("cp"))

    @property
    def ltt(self) -> int | None:
        """Last trade time, ms since the epoch."""
        ltpc = self._ltpc()
        return None if ltpc is None else int(_num(ltpc.get("ltt")))

    @property
    def change(self) -> float | None:
        """LTP minus the previous close (None without both)."""
        ltp, close = self.ltp, self.close_price
        return None if ltp is None or close is None else ltp - close

    @property
    def change_percent(self) -> float | None:
        change, close = self.change, self.close_price
        return None if change is None or close is None else change / close * 100

    @property
    def depth(self) -> Depth | None:
        """The book (`full`, `full_d30`: every level; `option_greeks`: the first); None in ltpc
        mode and for indices."""
        branch = self._branch()
        level = branch.get("marketLevel")
        if isinstance(level, Mapping):
            quotes = level.get("bidAskQuote") or []
            return Depth(tuple(_level(q) for q in quotes if isinstance(q, Mapping)))
        first = branch.get("firstDepth")
        if isinstance(first, Mapping):
            return Depth((_level(first),))
        return None

    @property
    def greeks(self) -> Greeks | None:
        greeks = self._branch().get("optionGreeks")
        if not isinstance(greeks, Mapping):
            return None
        names = ("delta", "theta", "gamma", "vega", "rho")
        return Greeks(*(_num(greeks.get(name)) for name in names))

    def _scalar(self, name: str) -> float | None:
        """A scalar of `marketFF` or `firstLevelWithGreeks` (None where the shape has none)."""
        found = _body(self.value)
        if found is None or found[0] not in ("marketFF", "firstLevelWithGreeks"):
            return None
        return _num(found[1].get(name))

    @property
    def oi(self) -> float | None:
        """Open interest (0 for what has none; None in modes that do not carry it)."""
        return self._scalar("oi")

    @property
    def iv(self) -> float | None:
        """Implied volatility, a fraction."""
        return self._scalar("iv")

    @property
    def volume(self) -> int | None:
        """Volume traded today (`vtt`)."""
        vtt = self._scalar("vtt")
        return None if vtt is None else int(vtt)
