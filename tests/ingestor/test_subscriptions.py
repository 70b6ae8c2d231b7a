"""The subscription planner: demand -> upstream mode per key, refusals, request batches."""

from __future__ import annotations

import orjson
import pytest

from services.ingestor.settings import COMBINED_MODE_LIMITS, SINGLE_MODE_LIMITS
from services.ingestor.subscriptions import (
    ModeLimits,
    Request,
    aggregate_demand,
    diff_requests,
    plan,
)
from shared.instruments import Mode

LTPC, GREEKS, FULL, D30 = Mode.LTPC, Mode.OPTION_GREEKS, Mode.FULL, Mode.FULL_D30
UPSTOX = ModeLimits(SINGLE_MODE_LIMITS, COMBINED_MODE_LIMITS)


def limits(single: int, combined: int) -> ModeLimits:
    return ModeLimits(dict.fromkeys(Mode, single), dict.fromkeys(Mode, combined))


def keys(n: int, segment: str = "NSE_EQ") -> list[str]:
    return [f"{segment}|K{i:05d}" for i in range(n)]


# ---- aggregation ---------------------------------------------------------------------------


def test_aggregate_unions_modes_across_replicas_and_static_keys() -> None:
    total = aggregate_demand(
        [
            {"NSE_EQ|A1": {LTPC}, "NSE_EQ|B1": {FULL}},
            {"NSE_EQ|A1": {FULL}, "NSE_INDEX|Nifty 50": {LTPC}},
            {"NSE_INDEX|Nifty 50": {GREEKS}},
        ]
    )
    assert total == {
        "NSE_EQ|A1": {LTPC, FULL},
        "NSE_EQ|B1": {FULL},
        "NSE_INDEX|Nifty 50": {LTPC, GREEKS},
    }


def test_aggregate_skips_malformed_keys_and_empty_modes() -> None:
    total = aggregate_demand([{"bogus": {LTPC}, "NSE_EQ|A1": set(), "NSE_EQ|B1": {LTPC}}])
    assert total == {"NSE_EQ|B1": {LTPC}}


# ---- richest mode and rendering ------------------------------------------------------------


def test_each_key_is_subscribed_once_in_its_richest_mode() -> None:
    result = plan(
        {"NSE_EQ|A1": {LTPC, FULL}, "NSE_EQ|B1": {GREEKS, LTPC}, "NSE_FO|1": {D30, FULL}},
        UPSTOX,
    )
    assert result.upstream == {"NSE_EQ|A1": FULL, "NSE_EQ|B1": GREEKS, "NSE_FO|1": D30}
    assert result.render == {
        "NSE_EQ|A1": {LTPC, FULL},
        "NSE_EQ|B1": {GREEKS, LTPC},
        "NSE_FO|1": {D30, FULL},
    }
    assert result.refused == {}
    assert result.counts() == {"ltpc": 0, "option_greeks": 1, "full": 1, "full_d30": 1}


def test_empty_demand_plans_nothing() -> None:
    result = plan({}, UPSTOX)
    assert (result.upstream, result.render, result.refused) == ({}, {}, {})


# ---- limits ----------------------------------------------------------------------------------


def test_single_mode_limit_applies_when_one_mode_is_used() -> None:
    demand = {key: {LTPC} for key in keys(5000)}
    assert len(plan(demand, UPSTOX).upstream) == 5000
    demand["NSE_EQ|EXTRA"] = {LTPC}
    result = plan(demand, UPSTOX)
    assert len(result.upstream) == 5000
    assert set(result.refused) == {"NSE_EQ|K04999"}  # sorted order: the last key loses
    refusal = result.refused["NSE_EQ|K04999"]
    assert refusal.modes == {LTPC}
    assert "5000" in refusal.reason and "ltpc" in refusal.reason


def test_combined_limits_apply_when_modes_are_mixed() -> None:
    demand = {key: {LTPC} for key in keys(2500)}
    demand["NSE_EQ|FULL1"] = {FULL}
    result = plan(demand, UPSTOX)
    assert sum(1 for m in result.upstream.values() if m is LTPC) == 2000
    assert result.upstream["NSE_EQ|FULL1"] is FULL
    assert len(result.refused) == 500
    assert all("2000" in r.reason and "combined" in r.reason for r in result.refused.values())


def test_refused_demand_falls_back_to_a_poorer_demanded_mode() -> None:
    demand = {"NSE_EQ|A1": {FULL}, "NSE_EQ|B1": {FULL, LTPC}, "NSE_EQ|C1": {FULL}}
    result = plan(demand, limits(single=1, combined=1))
    assert result.upstream == {"NSE_EQ|A1": FULL, "NSE_EQ|B1": LTPC}
    assert result.render == {"NSE_EQ|A1": {FULL}, "NSE_EQ|B1": {LTPC}}
    assert result.refused["NSE_EQ|B1"].modes == {FULL}
    assert result.refused["NSE_EQ|C1"].modes == {FULL}
    assert "full" in result.refused["NSE_EQ|B1"].reason


def test_a_fallback_that_mixes_modes_switches_to_the_combined_limits() -> None:
    # Every richest mode is full (single-mode limits), but B1 falls back to ltpc: now two modes
    # are in use, so the smaller combined limits must hold.
    demand = {"NSE_EQ|A1": {FULL}, "NSE_EQ|A2": {FULL}, "NSE_EQ|B1": {FULL, LTPC}}
    single = dict.fromkeys(Mode, 2)
    combined = dict.fromkeys(Mode, 1)
    result = plan(demand, ModeLimits(single, combined))
    assert result.upstream == {"NSE_EQ|A1": FULL, "NSE_EQ|B1": LTPC}
    assert set(result.refused) == {"NSE_EQ|A2", "NSE_EQ|B1"}


def test_subscribed_keys_keep_their_place_over_newcomers() -> None:
    demand = {"NSE_EQ|A1": {FULL}, "NSE_EQ|Z9": {FULL}}
    result = plan(demand, limits(1, 1), current={"NSE_EQ|Z9": FULL})
    assert result.upstream == {"NSE_EQ|Z9": FULL}
    assert set(result.refused) == {"NSE_EQ|A1"}


def test_static_keys_win_over_everything() -> None:
    demand = {"NSE_EQ|A1": {FULL}, "NSE_INDEX|Nifty 50": {FULL}}
    result = plan(
        demand, limits(1, 1), current={"NSE_EQ|A1": FULL}, priority={"NSE_INDEX|Nifty 50"}
    )
    assert result.upstream == {"NSE_INDEX|Nifty 50": FULL}
    assert set(result.refused) == {"NSE_EQ|A1"}


def test_zero_limit_refuses_the_mode() -> None:
    result = plan({"NSE_FO|1": {D30}}, limits(0, 0))
    assert result.upstream == {}
    assert result.refused["NSE_FO|1"].modes == {D30}


def test_plan_is_stable_when_called_again_with_its_own_result() -> None:
    demand = {key: {FULL} for key in keys(30)} | {key: {LTPC} for key in keys(30, "BSE_EQ")}
    first = plan(demand, limits(20, 10))
    second = plan(demand, limits(20, 10), current=first.upstream)
    assert second.upstream == first.upstream
    assert diff_requests(first.upstream, second.upstream, 7) == []


# ---- requests ------------------------------------------------------------------------------


def test_diff_adds_changes_and_removes_in_batches() -> None:
    current = {"NSE_EQ|A1": LTPC, "NSE_EQ|B1": FULL, "NSE_EQ|C1": LTPC, "NSE_EQ|D1": FULL}
    target = {
        "NSE_EQ|A1": FULL,  # upgrade
        "NSE_EQ|B1": LTPC,  # downgrade
        "NSE_EQ|D1": FULL,  # unchanged
        "NSE_EQ|E1": LTPC,  # new
        "NSE_EQ|F1": LTPC,  # new
        "NSE_EQ|G1": FULL,  # new
    }
    requests = diff_requests(current, target, batch_size=1)
    assert requests == [
        Request("unsub", None, ("NSE_EQ|C1",)),
        Request("change_mode", LTPC, ("NSE_EQ|B1",)),
        Request("change_mode", FULL, ("NSE_EQ|A1",)),
        Request("sub", LTPC, ("NSE_EQ|E1",)),
        Request("sub", LTPC, ("NSE_EQ|F1",)),
        Request("sub", FULL, ("NSE_EQ|G1",)),
    ]


def test_diff_batches_by_size() -> None:
    target = {key: FULL for key in keys(1201)}
    requests = diff_requests({}, target, batch_size=500)
    assert [len(r.keys) for r in requests] == [500, 500, 201]
    assert {k for r in requests for k in r.keys} == set(target)
    assert diff_requests(target, {}, 500)[0].method == "unsub"


def test_diff_rejects_a_zero_batch() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        diff_requests({}, {}, 0)


def test_request_encoding_matches_upstox_v3() -> None:
    sub = orjson.loads(Request("sub", FULL, ("NSE_INDEX|Nifty 50",)).encode("g-1"))
    assert sub == {
        "guid": "g-1",
        "method": "sub",
        "data": {"mode": "full", "instrumentKeys": ["NSE_INDEX|Nifty 50"]},
    }
    unsub = orjson.loads(Request("unsub", None, ("NSE_EQ|A1",)).encode())
    assert unsub["method"] == "unsub" and "mode" not in unsub["data"]
    assert len(unsub["guid"]) >= 16
    change = orjson.loads(Request("change_mode", LTPC, ("NSE_EQ|A1",)).encode("x"))
    assert change["data"] == {"mode": "ltpc", "instrumentKeys": ["NSE_EQ|A1"]}
