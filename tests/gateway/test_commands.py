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
HDFCBANK = "NSE_EQ|INE040A01034"
KNOWN = frozenset({NIFTY, BANK, RELIANCE, HDFCBANK})  # the catalogue these rules check against


class NullSink:
    def send_frame(self, frame: bytes) -> None:
        raise AssertionError("a decision sends nothing by itself")

    def backlog(self) -> int:
        return 0


def client() -> Subscriber:
    return Subscriber(NullSink())


def frames(decision: Decision) -> list[dict[str, Any]]:
    return [orjson.loads(frame) for frame in decision.frames]


def keys_of(channels: tuple[Channel, ...] | None) -> list[str] | None:
    return None if channels is None else [channel.key for channel in channels]


def subscribe(
    fan: FanOut,
    sub: Subscriber,
    command: Subscribe,
    max_keys: int,
    known: frozenset[str] | None = KNOWN,
    max_demand_keys: int = 1000,
) -> Decision:
    return commands.subscribe(
        fan, sub, command, max_keys, known=known, max_demand_keys=max_demand_keys
    )


def snapshot(sub: Subscriber, command: Snapshot, known: frozenset[str] | None = KNOWN) -> Decision:
    return commands.snapshot(sub, command, known)


def holding(fan: FanOut, sub: Subscriber, *keys: str, mode: Mode = Mode.LTPC) -> None:
    decision = subscribe(fan, sub, Subscribe("s", keys, mode), max_keys=100)
    assert decision.snapshot is not None
    fan.complete(sub, [(channel, None) for channel in decision.snapshot])


# ---- subscribe ----------------------------------------------------------------------------


def test_subscribe_opens_channels_acks_and_wants_their_snapshot() -> None:
    fan, sub = FanOut(), client()
    decision = subscribe(fan, sub, Subscribe(7, (NIFTY, BANK), Mode.FULL), max_keys=3)
    assert frames(decision) == [{"type": "ack", "op": "subscribe", "id": 7,
                                 "keys": [NIFTY, BANK], "mode": "full"}]  # fmt: skip
    assert decision.errors == () and decision.closed == ()
    assert keys_of(decision.opened) == keys_of(decision.snapshot) == [NIFTY, BANK]
    assert set(sub.subs) == {NIFTY, BANK}


def test_a_channel_already_open_is_not_opened_again() -> None:
    fan, first, second = FanOut(), client(), client()
    holding(fan, first, NIFTY)
    decision = subscribe(fan, second, Subscribe("b", (NIFTY, BANK), Mode.LTPC), 10)
    assert keys_of(decision.opened) == [BANK]
    assert keys_of(decision.snapshot) == [NIFTY, BANK]


def test_a_mode_switch_closes_the_old_channel_when_nobody_else_holds_it() -> None:
    fan, sub = FanOut(), client()
    holding(fan, sub, NIFTY, BANK)
    decision = subscribe(fan, sub, Subscribe("f", (NIFTY,), Mode.FULL), max_keys=2)
    assert [(c.mode, c.key) for c in decision.closed] == [(Mode.LTPC, NIFTY)]
    assert [(c.mode, c.key) for c in decision.opened] == [(Mode.FULL, NIFTY)]
    assert decision.errors == ()  # a switch is not a new key, even at the limit


def test_too_many_keys_per_client_refuses_the_whole_request() -> None:
    fan, sub = FanOut(), client()
    holding(fan, sub, NIFTY, BANK)
    decision = subscribe(
        fan, sub, Subscribe("more", (NIFTY, RELIANCE, HDFCBANK), Mode.LTPC), max_keys=3
    )
    [error] = frames(decision)
    assert error["code"] == "too_many_keys" and error["id"] == "more"
    assert error["keys"] == [NIFTY, RELIANCE, HDFCBANK]
    assert "at most 3 keys; it holds 2 and this request adds 2" in error["message"]
    assert decision.errors == ("too_many_keys",)
    assert decision.snapshot is None and decision.opened == ()
    assert set(sub.subs) == {NIFTY, BANK}  # nothing joined


def test_some_bad_keys_get_an_error_then_the_good_ones_go_ahead() -> None:
    fan, sub = FanOut(), client()
    command = Subscribe("m", (NIFTY, BANK), Mode.LTPC, bad_keys=("bad|key",))
    decision = subscribe(fan, sub, command, max_keys=10)
    error, ack = frames(decision)
    assert error["code"] == "bad_key" and error["keys"] == ["bad|key"] and error["id"] == "m"
    assert ack["type"] == "ack" and ack["keys"] == [NIFTY, BANK]
    assert decision.errors == ("bad_key",)
    assert keys_of(decision.snapshot) == [NIFTY, BANK]


def test_only_bad_keys_is_an_error_and_nothing_else() -> None:
    fan, sub = FanOut(), client()
    command = Subscribe("m", (), Mode.LTPC, bad_keys=("bad|key",))
    decision = subscribe(fan, sub, command, max_keys=10)
    assert [f["code"] for f in frames(decision)] == ["bad_key"]
    assert decision.snapshot is None and decision.opened == () and not fan.channels


def test_keys_not_in_the_catalogue_are_refused_and_the_known_ones_go_ahead() -> None:
    fan, sub = FanOut(), client()
    unknown = tuple(f"NSE_FO|NOSUCH{n}" for n in range(7))
    decision = subscribe(fan, sub, Subscribe("u", (NIFTY, *unknown, BANK), Mode.LTPC), 10)
    error, ack = frames(decision)
    assert error["code"] == "unknown_key" and error["id"] == "u"
    assert error["keys"] == list(unknown)  # all of them; the message names a few
    assert "NSE_FO|NOSUCH4 and 2 more" in error["message"]
    assert "NSE_FO|NOSUCH5" not in error["message"]
    assert ack["keys"] == [NIFTY, BANK] and decision.errors == ("unknown_key",)
    assert set(fan.demand) == {NIFTY, BANK}  # an unknown key never opens a channel


def test_without_a_catalogue_nothing_is_subscribed() -> None:
    fan, sub = FanOut(), client()
    decision = subscribe(fan, sub, Subscribe("u", (NIFTY,), Mode.LTPC), 10, known=None)
    [error] = frames(decision)
    assert error["code"] == "instruments_unavailable" and error["keys"] == [NIFTY]
    assert decision.snapshot is None and not fan.channels


def test_the_replica_takes_new_keys_up_to_its_demand_cap() -> None:
    fan, first, second = FanOut(), client(), client()
    holding(fan, first, NIFTY, BANK)
    command = Subscribe("c", (RELIANCE, NIFTY, HDFCBANK), Mode.FULL)
    decision = subscribe(fan, second, command, 10, max_demand_keys=3)
    error, ack = frames(decision)
    # NIFTY is in the demand already (another mode costs nothing); RELIANCE is the third key.
    assert error["code"] == "capacity" and error["keys"] == [HDFCBANK]
    assert ack["keys"] == [RELIANCE, NIFTY] and decision.errors == ("capacity",)
    assert set(fan.demand) == {NIFTY, BANK, RELIANCE} and set(first.subs) == {NIFTY, BANK}


def test_snapshot_of_an_unknown_key_says_so() -> None:
    fan, sub = FanOut(), client()
    holding(fan, sub, NIFTY)
    decision = snapshot(sub, Snapshot("s", (NIFTY, RELIANCE, "NSE_FO|NOSUCH")))
    unknown, missing, ack = frames(decision)
    assert unknown["code"] == "unknown_key" and unknown["keys"] == ["NSE_FO|NOSUCH"]
    assert missing["code"] == "not_subscribed" and missing["keys"] == [RELIANCE]
    assert ack["keys"] == [NIFTY]


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
    decision = snapshot(sub, Snapshot("all", None))
    assert frames(decision) == [{"type": "ack", "op": "snapshot", "id": "all",
                                 "keys": [NIFTY, BANK]}]  # fmt: skip
    assert keys_of(decision.snapshot) == [NIFTY, BANK]


def test_snapshot_with_no_keys_and_none_held_is_an_empty_snapshot() -> None:
    decision = snapshot(client(), Snapshot("all", None))
    assert [f["keys"] for f in frames(decision)] == [[]]
    assert decision.snapshot == ()  # still an initial_feed, with nothing in it


def test_snapshot_of_keys_not_held_errors_and_goes_ahead_for_the_others() -> None:
    fan, sub = FanOut(), client()
    holding(fan, sub, NIFTY, BANK)
    decision = snapshot(sub, Snapshot("s", (NIFTY, RELIANCE)))
    error, ack = frames(decision)
    assert error["code"] == "not_subscribed" and error["keys"] == [RELIANCE]
    assert ack["keys"] == [NIFTY] and keys_of(decision.snapshot) == [NIFTY]
    assert decision.errors == ("not_subscribed",)


def test_snapshot_of_only_keys_not_held_sends_no_snapshot() -> None:
    decision = snapshot(client(), Snapshot("s", (RELIANCE,), bad_keys=("x",)))
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
