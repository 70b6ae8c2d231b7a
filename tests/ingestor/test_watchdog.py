"""The stall watchdog's policy, driven by hand-moved time (no sockets, no clock)."""

from __future__ import annotations

import orjson

from services.ingestor.watchdog import (
    StallWatch,
    data_due,
    decide,
    resubscribe_requests,
    segment_statuses,
    segments_of,
)
from shared.instruments import Mode

LIMIT = 10.0
NIFTY = "NSE_INDEX|Nifty 50"
RELIANCE = "NSE_EQ|INE002A01018"
GOLD = "MCX_FO|12345"
SUBSCRIBED = {NIFTY: Mode.LTPC, GOLD: Mode.FULL}


def market_info(**statuses: str) -> bytes:
    """A market_info frame as the processor renders it."""
    info = {"type": "market_info", "currentTs": "1", "marketInfo": {"segmentStatus": statuses}}
    return orjson.dumps(info)


NSE_OPEN = market_info(NSE_INDEX="NORMAL_OPEN", MCX_FO="NORMAL_OPEN")
ALL_CLOSED = market_info(NSE_INDEX="NORMAL_CLOSE", MCX_FO="NORMAL_CLOSE")


def test_statuses_and_segments_are_read_from_the_rendered_frame() -> None:
    assert segment_statuses(NSE_OPEN) == {"NSE_INDEX": "NORMAL_OPEN", "MCX_FO": "NORMAL_OPEN"}
    assert segment_statuses(None) == {}
    assert segment_statuses(b"not json") == {}
    assert segment_statuses(orjson.dumps({"type": "market_info"})) == {}
    assert segments_of([NIFTY, RELIANCE, "NSE_EQ|INE009A01021"]) == {"NSE_INDEX", "NSE_EQ"}


def test_data_is_due_only_with_a_subscribed_segment_in_its_continuous_session() -> None:
    statuses = {"NSE_EQ": "NORMAL_OPEN", "NSE_FO": "PRE_OPEN_START", "MCX_FO": "NORMAL_CLOSE"}
    assert data_due({"NSE_EQ", "MCX_FO"}, statuses)
    assert not data_due(set(), statuses)  # nothing subscribed
    assert not data_due({"MCX_FO"}, statuses)
    for quiet in ("PRE_OPEN_START", "PRE_OPEN_END", "CLOSING_START", "CLOSING_END"):
        assert not data_due({"NSE_FO"}, {"NSE_FO": quiet})
    assert not data_due({"BSE_EQ"}, statuses)  # a status we were never told is not "open"


def test_one_resubscription_then_reconnections() -> None:
    assert decide(LIMIT - 0.1, LIMIT, None) is None
    assert decide(LIMIT, LIMIT, None) == "resubscribe"
    assert decide(LIMIT, LIMIT, "resubscribe") == "reconnect"
    assert decide(LIMIT, LIMIT, "reconnect") == "reconnect"


def test_a_resubscription_is_unsub_then_sub_of_the_same_keys_in_their_modes() -> None:
    requests = resubscribe_requests({NIFTY: Mode.LTPC, RELIANCE: Mode.FULL, GOLD: Mode.FULL}, 2)
    assert [(r.method, len(r.keys)) for r in requests] == [
        ("unsub", 2),
        ("unsub", 1),
        ("sub", 1),
        ("sub", 2),
    ]
    assert {key for r in requests[:2] for key in r.keys} == {NIFTY, RELIANCE, GOLD}
    assert [(r.mode, set(r.keys)) for r in requests[2:]] == [
        (Mode.LTPC, {NIFTY}),
        (Mode.FULL, {RELIANCE, GOLD}),
    ]
    assert resubscribe_requests({}, 2) == []


def test_a_silent_open_market_is_a_stall_resubscribed_then_reconnected_until_a_frame() -> None:
    watch = StallWatch(LIMIT)
    watch.opened(0.0)
    assert watch.check(0.5, SUBSCRIBED, NSE_OPEN) is None  # checked every now and then
    watch.heard(1.0)
    assert watch.check(LIMIT + 0.9, SUBSCRIBED, NSE_OPEN) is None
    assert watch.check(LIMIT + 1.0, SUBSCRIBED, NSE_OPEN) == "resubscribe"
    assert watch.stalled and watch.stall_began == 1.0
    assert watch.check(LIMIT + 1.5, SUBSCRIBED, NSE_OPEN) is None  # one step per limit
    assert watch.check(2 * LIMIT + 1.0, SUBSCRIBED, NSE_OPEN) == "reconnect"
    watch.opened(2 * LIMIT + 3.0)  # the new connection is silent too
    assert watch.check(3 * LIMIT + 2.0, SUBSCRIBED, NSE_OPEN) is None
    assert watch.check(3 * LIMIT + 3.0, SUBSCRIBED, NSE_OPEN) == "reconnect"
    assert watch.steps == {"resubscribe": 1, "reconnect": 2}
    assert watch.heard(3 * LIMIT + 4.0) == 3 * LIMIT + 3.0  # silent since 1.0
    assert not watch.stalled
    # the next silence starts again with a resubscription, counted from the last frame
    assert watch.check(4 * LIMIT + 4.0, SUBSCRIBED, NSE_OPEN) == "resubscribe"
    assert watch.steps == {"resubscribe": 1, "reconnect": 0}


def test_a_closed_market_or_nothing_subscribed_is_never_a_stall() -> None:
    watch = StallWatch(LIMIT)
    watch.opened(0.0)
    for now in (LIMIT, 100 * LIMIT, 10_000 * LIMIT):
        assert watch.check(now, SUBSCRIBED, ALL_CLOSED) is None
        assert watch.check(now, {}, NSE_OPEN) is None
        assert watch.check(now, SUBSCRIBED, None) is None  # no market_info yet
    assert not watch.stalled


def test_the_silence_of_a_market_that_opens_counts_from_its_opening() -> None:
    watch = StallWatch(LIMIT)
    watch.opened(0.0)
    assert watch.check(1000.0, SUBSCRIBED, ALL_CLOSED) is None
    assert watch.check(2000.0, SUBSCRIBED, NSE_OPEN) is None  # just opened: not silent yet
    assert watch.check(2000.0 + LIMIT - 1, SUBSCRIBED, NSE_OPEN) is None
    assert watch.check(2000.0 + LIMIT, SUBSCRIBED, NSE_OPEN) == "resubscribe"


def test_a_first_subscription_after_a_long_quiet_gets_a_whole_limit() -> None:
    watch = StallWatch(LIMIT)
    watch.opened(0.0)
    assert watch.check(500.0, {}, NSE_OPEN) is None
    assert watch.check(501.0, SUBSCRIBED, NSE_OPEN) is None
    assert watch.check(501.0 + LIMIT, SUBSCRIBED, NSE_OPEN) == "resubscribe"


def test_a_market_that_closes_during_a_stall_ends_it() -> None:
    watch = StallWatch(LIMIT)
    watch.opened(0.0)
    assert watch.check(0.0, SUBSCRIBED, NSE_OPEN) is None
    assert watch.check(LIMIT, SUBSCRIBED, NSE_OPEN) == "resubscribe"
    assert watch.check(LIMIT + 1, SUBSCRIBED, ALL_CLOSED) is None
    assert not watch.stalled
