"""The client-command rules without sockets or Redis: what each request comes to."""

from __future__ import annotations

from typing import Any

import orjson

from services.gateway import commands
from services.gateway.commands import Decision
from services.gateway.fanout import Channel, FanOut, Subscriber
from services.gateway.protocol import Snapshot, Subscribe, Unsubscribe
from shared.instruments import Mode

NIFTY = "NSE_INDEX|Nifty 50"
BANK = "NSE_INDEX|Nifty Bank"
RELIANCE = "NSE_EQ|INE002A01018"


class NullSink:
    def send_frame(self, frame: bytes) -> None:
        raise AssertionError("a decision sends nothing by itself")


def client() -> Subscriber:
    return Subscriber(NullSink())


def frames(decision: Decision) -> list[dict[str, Any]]:
    return [orjson.loads(frame) for frame in decision.frames]


def keys_of(channels: tuple[Channel, ...] | None) -> list[str] | None:
    return None if channels is None else [channel.key for channel in channels]


def holding(fan: FanOut, sub: Subscriber, *keys: str, mode: Mode = Mode.LTPC) -> None:
    decision = commands.subscribe(fan, sub, Subscribe("s", keys, mode), max_keys=100)
    assert decision.snapshot is not None
    fan.complete(sub, [(channel, None) for channel in decision.snapshot])


# ---- subscribe ----------------------------------------------------------------------------


def test_subscribe_opens_channels_acks_and_wants_their_snapshot() -> None:
    fan, sub = FanOut(), client()
    decision = commands.subscribe(fan, sub, Subscribe(7, (NIFTY, BANK), Mode.FULL), max_keys=3)
    assert frames(decision) == [{"type": "ack", "op": "subscribe", "id": 7,
                                 "keys": [NIFTY, BANK], "mode": "full"}]  # fmt: skip
    assert decision.errors == () and decision.closed == ()
    assert keys_of(decision.opened) == keys_of(decision.snapshot) == [NIFTY, BANK]
    assert set(sub.subs) == {NIFTY, BANK}


def test_a_channel_already_open_is_not_opened_again() -> None:
    fan, first, second = FanOut(), client(), client()
    holding(fan, first, NIFTY)
    decision = commands.subscribe(fan, second, Subscribe("b", (NIFTY, BANK), Mode.LTPC), 10)
    assert keys_of(decision.opened) == [BANK]
    assert keys_of(decision.snapshot) == [NIFTY, BANK]


def test_a_mode_switch_closes_the_old_channel_when_nobody_else_holds_it() -> None:
    fan, sub = FanOut(), client()
    holding(fan, sub, NIFTY, BANK)
    decision = commands.subscribe(fan, sub, Subscribe("f", (NIFTY,), Mode.FULL), max_keys=2)
    assert [(c.mode, c.key) for c in decision.closed] == [(Mode.LTPC, NIFTY)]
    assert [(c.mode, c.key) for c in decision.opened] == [(Mode.FULL, NIFTY)]
    assert decision.errors == ()  # a switch is not a new key, even at the limit


def test_too_many_keys_per_client_refuses_the_whole_request() -> None:
    fan, sub = FanOut(), client()
    holding(fan, sub, NIFTY, BANK)
    decision = commands.subscribe(
        fan, sub, Subscribe("more", (NIFTY, RELIANCE, "NSE_FO|1"), Mode.LTPC), max_keys=3
    )
    [error] = frames(decision)
    assert error["code"] == "too_many_keys" and error["id"] == "more"
    assert error["keys"] == [NIFTY, RELIANCE, "NSE_FO|1"]
    assert "at most 3 keys; it holds 2 and this request adds 2" in error["message"]
    assert decision.errors == ("too_many_keys",)
    assert decision.snapshot is None and decision.opened == ()
    assert set(sub.subs) == {NIFTY, BANK}  # nothing joined


def test_some_bad_keys_get_an_error_then_the_good_ones_go_ahead() -> None:
    fan, sub = FanOut(), client()
    command = Subscribe("m", (NIFTY, BANK), Mode.LTPC, bad_keys=("bad|key",))
    decision = commands.subscribe(fan, sub, command, max_keys=10)
    error, ack = frames(decision)
    assert error["code"] == "bad_key" and error["keys"] == ["bad|key"] and error["id"] == "m"
    assert ack["type"] == "ack" and ack["keys"] == [NIFTY, BANK]
    assert decision.errors == ("bad_key",)
    assert keys_of(decision.snapshot) == [NIFTY, BANK]


def test_only_bad_keys_is_an_error_and_nothing_else() -> None:
    fan, sub = FanOut(), client()
    command = Subscribe("m", (), Mode.LTPC, bad_keys=("bad|key",))
    decision = commands.subscribe(fan, sub, command, max_keys=10)
    assert [f["code"] for f in frames(decision)] == ["bad_key"]
    assert decision.snapshot is None and decision.opened == () and not fan.channels


# ---- unsubscribe --------------------------------------------------------------------------


def test_unsubscribe_of_keys_not_held_errors_and_acks_the_others() -> None:
    fan, sub = FanOut(), client()
    holding(fan, sub, NIFTY, BANK)
    decision = commands.unsubscribe(fan, sub, Unsubscribe("u", (RELIANCE, NIFTY)))
    error, ack = frames(decision)
    assert error["code"] == "not_subscribed" and error["keys"] == [RELIANCE]
    assert ack == {"type": "ack", "op": "unsubscribe", "id": "u", "keys": [NIFTY]}
    assert decision.errors == ("not_subscribed",)
    assert keys_of(decision.closed) == [NIFTY] and decision.snapshot is None
    assert set(sub.subs) == {BANK}


def test_unsubscribe_of_nothing_held_is_the_error_alone() -> None:
    fan, sub = FanOut(), client()
    decision = commands.unsubscribe(fan, sub, Unsubscribe("u", (NIFTY,)))
    assert [f["code"] for f in frames(decision)] == ["not_subscribed"]


def test_unsubscribe_with_nothing_missing_acks_even_with_no_keys() -> None:
    fan, sub = FanOut(), client()
    decision = commands.unsubscribe(fan, sub, Unsubscribe("u", (), bad_keys=("x",)))
    error, ack = frames(decision)
    assert error["code"] == "bad_key"
    assert ack == {"type": "ack", "op": "unsubscribe", "id": "u", "keys": []}


def test_a_channel_still_held_by_another_client_is_not_closed() -> None:
    fan, one, two = FanOut(), client(), client()
    holding(fan, one, NIFTY)
    holding(fan, two, NIFTY)
    assert commands.unsubscribe(fan, one, Unsubscribe("u", (NIFTY,))).closed == ()
    assert keys_of(commands.unsubscribe(fan, two, Unsubscribe("u", (NIFTY,))).closed) == [NIFTY]


# ---- snapshot -----------------------------------------------------------------------------


def test_snapshot_with_no_keys_is_every_key_held() -> None:
    fan, sub = FanOut(), client()
    holding(fan, sub, NIFTY, BANK)
    decision = commands.snapshot(sub, Snapshot("all", None))
    assert frames(decision) == [{"type": "ack", "op": "snapshot", "id": "all",
                                 "keys": [NIFTY, BANK]}]  # fmt: skip
    assert keys_of(decision.snapshot) == [NIFTY, BANK]


def test_snapshot_with_no_keys_and_none_held_is_an_empty_snapshot() -> None:
    decision = commands.snapshot(client(), Snapshot("all", None))
    assert [f["keys"] for f in frames(decision)] == [[]]
    assert decision.snapshot == ()  # still an initial_feed, with nothing in it


def test_snapshot_of_keys_not_held_errors_and_goes_ahead_for_the_others() -> None:
    fan, sub = FanOut(), client()
    holding(fan, sub, NIFTY, BANK)
    decision = commands.snapshot(sub, Snapshot("s", (NIFTY, RELIANCE)))
    error, ack = frames(decision)
    assert error["code"] == "not_subscribed" and error["keys"] == [RELIANCE]
    assert ack["keys"] == [NIFTY] and keys_of(decision.snapshot) == [NIFTY]
    assert decision.errors == ("not_subscribed",)


def test_snapshot_of_only_keys_not_held_sends_no_snapshot() -> None:
    decision = commands.snapshot(client(), Snapshot("s", (RELIANCE,), bad_keys=("x",)))
    assert [f["code"] for f in frames(decision)] == ["bad_key", "not_subscribed"]
    assert decision.errors == ("bad_key", "not_subscribed") and decision.snapshot is None


# ---- refusals -----------------------------------------------------------------------------


def test_refusals_name_the_keys_refused_in_their_mode_with_the_reasons() -> None:
    fan, sub = FanOut(), client()
    holding(fan, sub, NIFTY, BANK, RELIANCE, mode=Mode.FULL)
    refused = {
        NIFTY: ({Mode.FULL}, "full: 2000 keys at most"),
        BANK: ({Mode.LTPC}, "not in this mode"),
        RELIANCE: ({Mode.FULL, Mode.LTPC}, "a limit"),
    }
    decision = commands.refusals(sub.subs.values(), refused, "r")
    [error] = frames(decision)
    assert error["code"] == "refused_by_upstream" and error["id"] == "r"
    assert error["keys"] == [NIFTY, RELIANCE]
    assert error["message"].endswith("(a limit; full: 2000 keys at most)")
    assert decision.errors == ("refused_by_upstream",)
    # The same rule tells the snapshots which keys not to wait a first value for.
    assert [commands.is_refused(ch, refused) for ch in sub.subs.values()] == [True, False, True]


def test_a_refusal_without_a_reason_and_a_later_report_without_an_id() -> None:
    fan, sub = FanOut(), client()
    holding(fan, sub, NIFTY)
    [error] = frames(commands.refusals(sub.subs.values(), {NIFTY: ({Mode.LTPC}, "")}, None))
    assert "id" not in error and "over Upstox's limits" in error["message"]


def test_no_refusal_is_nothing_to_send() -> None:
    fan, sub = FanOut(), client()
    holding(fan, sub, NIFTY)
    assert commands.refusals(sub.subs.values(), {BANK: ({Mode.LTPC}, "x")}, "r") is commands.NOTHING
