"""Partial values in the fan-out: never a snapshot, merged when conflated, clients told which.

A partial value (a live tick that left unchanged parts out, flagged in its metadata) goes to
clients as it came; a channel whose newest update is partial is not served from memory (its
snapshot is read from the whole last value in Redis), and whatever partial updates land while
that value is read, or are conflated for a client that is behind, are merged part-wise so that
nothing they carried is lost.
"""

from __future__ import annotations

from typing import Any

import orjson

from services.gateway.fanout import FanOut, Subscriber
from shared.instruments import Mode
from shared.redis_contract import encode_tick
from tests.gateway.test_fanout import RecordingSink, name, subscribed

KEY = "NSE_EQ|INE002A01018"
BOOK = {"bidAskQuote": [{"bidQ": "10", "bidP": 99.5, "askQ": "20", "askP": 100.5}]}
NEW_BOOK = {"bidAskQuote": [{"bidQ": "11", "bidP": 99.0, "askQ": "21", "askP": 101.0}]}
CANDLES = {"ohlc": [{"interval": "1d", "open": 98.0, "high": 101.0, "low": 97.0, "close": 100.0}]}


def value(ltp: float, **parts: Any) -> bytes:
    market = {"ltpc": {"ltp": ltp}, **parts, "vtt": "5"}
    return orjson.dumps({"fullFeed": {"marketFF": market}, "requestMode": "full_d5"})


def tick(seq: int, ltp: float, partial: bool = False, **parts: Any) -> bytes:
    return encode_tick(value(ltp, **parts), seq, "e1", 1000 + seq, partial)


WHOLE = tick(1, 100.0, marketLevel=BOOK, marketOHLC=CANDLES)


def market_of(frame: dict[str, Any]) -> dict[str, Any]:
    market: dict[str, Any] = frame["feeds"][KEY]["fullFeed"]["marketFF"]
    return market


def ready_channel(fan: FanOut) -> tuple[Subscriber, RecordingSink]:
    sub, sink = subscribed(fan, KEY, mode=Mode.FULL)
    fan.channels[(Mode.FULL, KEY)].ready = True
    return sub, sink


def test_a_partial_update_leaves_the_channel_to_be_read_from_redis() -> None:
    fan = FanOut(lambda: 1)
    _, sink = ready_channel(fan)
    channel = fan.channels[(Mode.FULL, KEY)]
    fan.publish(name(KEY, Mode.FULL), WHOLE)
    assert channel.fresh  # a whole live value: a snapshot may come from memory
    fan.publish(name(KEY, Mode.FULL), tick(2, 100.5, partial=True))
    assert not channel.fresh  # the snapshot is read: the last value in Redis is whole
    fan.flush()
    live = sink.frames[-1]
    assert "marketLevel" not in market_of(live)  # clients get it as Upstox sent it, flagged
    assert live["meta"][KEY]["partial"] is True
    fan.publish(name(KEY, Mode.FULL), tick(3, 101.0, marketLevel=NEW_BOOK, marketOHLC=CANDLES))
    assert channel.fresh


def test_partial_updates_during_a_snapshot_read_are_merged_onto_the_value_read() -> None:
    fan = FanOut(lambda: 1)
    ready_channel(fan)
    channel = fan.channels[(Mode.FULL, KEY)]
    joiner = Subscriber(RecordingSink())
    fan.join(joiner, Mode.FULL, KEY)
    version = channel.version  # the read starts; then two partial updates land
    fan.publish(name(KEY, Mode.FULL), tick(2, 100.5, partial=True, marketLevel=NEW_BOOK))
    fan.publish(name(KEY, Mode.FULL), tick(3, 101.0, partial=True))
    item = fan.resolve(channel, WHOLE, version)  # the whole value read, older than both
    assert item is not None
    snapshot = orjson.loads(b"{" + item.feed + b"}")[KEY]["fullFeed"]["marketFF"]
    assert snapshot["ltpc"] == {"ltp": 101.0}  # the newest price
    assert snapshot["marketLevel"] == NEW_BOOK  # the book a partial update carried
    assert snapshot["marketOHLC"] == CANDLES  # what no update carried, from the value read
    assert b"partial" not in item.meta


def test_a_client_behind_gets_partial_updates_merged_not_superseded() -> None:
    fan = FanOut(lambda: 1)
    sub, sink = ready_channel(fan)
    sub.behind = True
    fan.publish(name(KEY, Mode.FULL), tick(2, 100.5, partial=True, marketLevel=NEW_BOOK))
    fan.publish(name(KEY, Mode.FULL), tick(3, 101.0, partial=True))
    fan.publish(name(KEY, Mode.FULL), tick(4, 101.5, partial=True))
    assert fan.resume(sub)
    fan.flush()
    frame = sink.frames[-1]
    assert market_of(frame)["ltpc"] == {"ltp": 101.5}
    assert market_of(frame)["marketLevel"] == NEW_BOOK  # seq 2's book survives conflation
    assert frame["meta"][KEY] == {"seq": 4, "epoch": "e1", "ts": 1004, "partial": True}

    sub.behind = True  # a whole pending value with a partial after it: whole again
    fan.publish(name(KEY, Mode.FULL), tick(5, 102.0, marketLevel=BOOK, marketOHLC=CANDLES))
    fan.publish(name(KEY, Mode.FULL), tick(6, 102.5, partial=True))
    fan.resume(sub)
    fan.flush()
    frame = sink.frames[-1]
    assert market_of(frame)["marketLevel"] == BOOK and market_of(frame)["marketOHLC"] == CANDLES
    assert frame["meta"][KEY] == {"seq": 6, "epoch": "e1", "ts": 1006}
