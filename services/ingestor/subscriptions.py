"""The subscription planner: pure functions from demand to upstream requests. No I/O here.

Demand is, per instrument key, the set of modes some client wants. Upstream each key is
subscribed once, in the richest demanded mode that Upstox's per-mode key limits still allow; every
demanded mode that mode covers is rendered from it. Demand that does not fit is refused with a
reason (never silently dropped), and the difference between what is subscribed and what should
be becomes `unsub`, `change_mode` and `sub` requests in batches.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal

import orjson

from shared.instruments import Mode, count_modes, is_instrument_key

Method = Literal["sub", "unsub", "change_mode"]

__all__ = [
    "ModeLimits",
    "Plan",
    "Refusal",
    "Request",
    "aggregate_demand",
    "diff_requests",
    "plan",
]


@dataclass(frozen=True, slots=True)
class Request:
    """One request to the feed, as Upstox's V3 protocol spells it."""

    method: Method
    mode: Mode | None  # None for `unsub`, which takes no mode
    keys: tuple[str, ...]

    def encode(self, guid: str | None = None) -> bytes:
        """JSON bytes, to be sent as a BINARY WebSocket frame."""
        data: dict[str, object] = {"instrumentKeys": list(self.keys)}
        if self.mode is not None:
            data["mode"] = self.mode.value
        return orjson.dumps({"guid": guid or uuid.uuid4().hex, "method": self.method, "data": data})


@dataclass(frozen=True, slots=True)
class ModeLimits:
    """Upstox's key limits per mode: `single` when one mode is used, `combined` when several are."""

    single: Mapping[Mode, int]
    combined: Mapping[Mode, int]


@dataclass(frozen=True, slots=True)
class Refusal:
    """Demanded modes of one key that are not served, and why."""

    modes: frozenset[Mode]
    reason: str


@dataclass(frozen=True)
class Plan:
    """What should be subscribed upstream, what gets rendered, and what is refused."""

    upstream: dict[str, Mode] = field(default_factory=dict)  # key -> mode subscribed upstream
    render: dict[str, frozenset[Mode]] = field(default_factory=dict)  # key -> modes to publish
    refused: dict[str, Refusal] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        """Keys subscribed upstream per mode (every mode present, zeros included)."""
        return count_modes(self.upstream.values())


def aggregate_demand(demands: Iterable[Mapping[str, Iterable[Mode]]]) -> dict[str, set[Mode]]:
    """The union of several demand tables; malformed keys and empty mode sets are left out."""
    total: dict[str, set[Mode]] = {}
    for demand in demands:
        for key, modes in demand.items():
            wanted = set(modes)
            if wanted and is_instrument_key(key):
                total.setdefault(key, set()).update(wanted)
    return total


def _by_richness(modes: Iterable[Mode]) -> list[Mode]:
    return sorted(modes, key=lambda mode: mode.richness, reverse=True)


def _assign(
    order: list[str], demand: Mapping[str, set[Mode]], limits: Mapping[Mode, int]
) -> dict[str, Mode]:
    """Greedy: each key, in priority order, gets the richest demanded mode that has room."""
    used = dict.fromkeys(Mode, 0)
    upstream: dict[str, Mode] = {}
    for key in order:
        for mode in _by_richness(demand[key]):
            if used[mode] < limits.get(mode, 0):
                used[mode] += 1
                upstream[key] = mode
                break
    return upstream


def plan(
    demand: Mapping[str, set[Mode]],
    limits: ModeLimits,
    *,
    current: Mapping[str, Mode] | None = None,
    priority: Iterable[str] = (),
) -> Plan:
    """Decide the upstream mode of every demanded key within `limits`.

    When a limit is reached, `priority` keys (the static ones) win first, then keys already
    subscribed (so a newcomer never knocks out a subscription that clients are using), then keys
    in sorted order, so the outcome is stable from one call to the next. A key whose richest mode
    is full falls back to a poorer mode it is also demanded in, and only the modes it cannot
    serve are refused.
    """
    current = current or {}
    first = set(priority)
    order = sorted(demand, key=lambda key: (key not in first, key not in current, key))

    richest_modes = {_by_richness(modes)[0] for modes in demand.values()}
    combined = len(richest_modes) > 1
    upstream = _assign(order, demand, limits.combined if combined else limits.single)
    if not combined and len({mode for mode in upstream.values()}) > 1:
        # A fallback brought in a second mode, so the combined limits apply after all.
        combined = True
        upstream = _assign(order, demand, limits.combined)
    applied = limits.combined if combined else limits.single

    render: dict[str, frozenset[Mode]] = {}
    refused: dict[str, Refusal] = {}
    for key, modes in demand.items():
        served = upstream.get(key)
        covered = frozenset(m for m in modes if served is not None and served.covers(m))
        if covered:
            render[key] = covered
        missing = frozenset(modes - covered)
        if missing:
            worst = _by_richness(missing)[0]
            scope = "modes combined" if combined else "single mode"
            refused[key] = Refusal(
                missing,
                f"over Upstox's limit of {applied.get(worst, 0)} keys in {worst.value} mode "
                f"({scope})",
            )
    return Plan(upstream=upstream, render=render, refused=refused)


def _batches(keys: Iterable[str], size: int) -> list[tuple[str, ...]]:
    ordered = sorted(keys)
    return [tuple(ordered[i : i + size]) for i in range(0, len(ordered), size)]


def diff_requests(
    current: Mapping[str, Mode], target: Mapping[str, Mode], batch_size: int
) -> list[Request]:
    """Requests turning the `current` upstream subscriptions into `target`.

    Unsubscriptions go first so that their room is free before new keys arrive; then mode
    changes and new subscriptions, poorest mode first, each in batches of `batch_size` keys.
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    requests: list[Request] = []
    gone = [key for key in current if key not in target]
    requests.extend(Request("unsub", None, batch) for batch in _batches(gone, batch_size))
    changed: dict[Mode, list[str]] = {}
    added: dict[Mode, list[str]] = {}
    for key, mode in target.items():
        before = current.get(key)
        if before is None:
            added.setdefault(mode, []).append(key)
        elif before != mode:
            changed.setdefault(mode, []).append(key)
    steps: tuple[tuple[Method, dict[Mode, list[str]]], ...] = (
        ("change_mode", changed),
        ("sub", added),
    )
    for method, groups in steps:
        for mode in sorted(groups, key=lambda m: m.richness):
            requests.extend(
                Request(method, mode, batch) for batch in _batches(groups[mode], batch_size)
            )
    return requests
