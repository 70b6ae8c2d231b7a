"""The client protocol's pure core: parsing requests, building frames, WebSocket framing."""

from __future__ import annotations

import json

import orjson
import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from services.gateway.protocol import (
    INITIAL_FEED,
    LIVE_FEED,
    FeedItem,
    Ping,
    ProtocolError,
    Snapshot,
    Subscribe,
    Unsubscribe,
    ack_frame,
    current_ts,
    error_frame,
    feed_frame,
    key_json,
    parse_command,
    pong_frame,
    status_frame,
)
from services.gateway.wsframe import text_frame, text_header
from shared.instruments import Mode
from shared.redis_contract import encode_tick, split_tick

NIFTY = "NSE_INDEX|Nifty 50"
RELIANCE = "NSE_EQ|INE002A01018"


def refused(data: bytes | str, max_keys: int = 10) -> ProtocolError:
    with pytest.raises(ProtocolError) as caught:
        parse_command(data, max_keys)
    return caught.value


# ---- parsing ------------------------------------------------------------------------------


def test_subscribe_with_mode_and_id() -> None:
    command = parse_command(
        json.dumps({"op": "subscribe", "keys": [NIFTY, RELIANCE], "mode": "full", "id": "r1"}), 10
    )
    assert command == Subscribe("r1", (NIFTY, RELIANCE), Mode.FULL, ())


def test_subscribe_mode_defaults_to_ltpc_and_keys_are_deduplicated_in_order() -> None:
    command = parse_command(
        json.dumps({"op": "subscribe", "keys": [RELIANCE, NIFTY, RELIANCE]}), 10
    )
    assert command == Subscribe(None, (RELIANCE, NIFTY), Mode.LTPC, ())


def test_every_mode_is_accepted() -> None:
    for mode in Mode:
        command = parse_command(json.dumps({"op": "subscribe", "keys": [NIFTY], "mode": mode}), 1)
        assert isinstance(command, Subscribe) and command.mode is mode


def test_malformed_keys_are_set_aside_and_the_rest_go_ahead() -> None:
    command = parse_command(
        json.dumps({"op": "subscribe", "keys": [NIFTY, "nse_eq|x", "NOPE|1", "NSE_EQ|"], "id": 3}),
        10,
    )
    assert command == Subscribe(3, (NIFTY,), Mode.LTPC, ("nse_eq|x", "NOPE|1", "NSE_EQ|"))


def test_a_huge_bad_key_is_echoed_truncated() -> None:
    command = parse_command(json.dumps({"op": "unsubscribe", "keys": ["x" * 5000]}), 10)
    assert isinstance(command, Unsubscribe)
    assert command.keys == () and len(command.bad_keys[0]) == 100


def test_unsubscribe_snapshot_and_ping() -> None:
    assert parse_command('{"op":"unsubscribe","keys":["NSE_INDEX|Nifty 50"],"id":1.5}', 5) == (
        Unsubscribe(1.5, (NIFTY,), ())
    )
    assert parse_command('{"op":"snapshot"}', 5) == Snapshot(None, None)
    assert parse_command('{"op":"snapshot","keys":null,"id":"s"}', 5) == Snapshot("s", None)
    assert parse_command('{"op":"snapshot","keys":["NSE_INDEX|Nifty 50"]}', 5) == Snapshot(
        None, (NIFTY,), ()
    )
    assert parse_command('{"op":"ping","id":7}', 5) == Ping(7)
    assert parse_command(b'{"op":"ping"}', 5) == Ping(None)


@pytest.mark.parametrize("data", ["", "{", "nope", b"\xff\xfe", '{"op": "subscribe",}'])
def test_bad_json(data: str | bytes) -> None:
    error = refused(data)
    assert error.code == "bad_json"
    assert error.request_id is None


@pytest.mark.parametrize(
    ("request_body", "fragment"),
    [
        ([1, 2], "JSON object"),
        ("text", "JSON object"),
        ({"keys": [NIFTY]}, "unknown op"),
        ({"op": "dance", "id": "d1"}, "unknown op 'dance'"),
        ({"op": 5}, "unknown op 'int'"),
        ({"op": "subscribe"}, "'keys'"),
        ({"op": "subscribe", "keys": []}, "'keys'"),
        ({"op": "subscribe", "keys": NIFTY}, "'keys'"),
        ({"op": "subscribe", "keys": [NIFTY, 5]}, "strings"),
        ({"op": "unsubscribe", "keys": {"a": 1}}, "'keys'"),
        ({"op": "ping", "id": True}, "'id'"),
        ({"op": "ping", "id": ["x"]}, "'id'"),
        ({"op": "ping", "id": "x" * 200}, "'id'"),
        ({"op": "ping", "id": 2**60}, "'id'"),
    ],
)
def test_bad_requests(request_body: object, fragment: str) -> None:
    error = refused(json.dumps(request_body))
    assert error.code == "bad_request"
    assert fragment in error.message


def test_the_request_id_is_echoed_in_errors_once_it_is_readable() -> None:
    assert refused('{"op":"dance","id":"d1"}').request_id == "d1"
    assert refused('{"op":"subscribe","keys":[],"id":9}').request_id == 9


def test_unknown_mode() -> None:
    for mode in ("full_d5", "LTPC", 3, ""):
        error = refused(json.dumps({"op": "subscribe", "keys": [NIFTY], "mode": mode, "id": "m"}))
        assert error.code == "bad_mode"
        assert error.request_id == "m"
        assert "ltpc, option_greeks, full, full_d30" in error.message


def test_too_many_keys_in_one_request() -> None:
    keys = [f"NSE_FO|{n}" for n in range(11)]
    error = refused(json.dumps({"op": "subscribe", "keys": keys}), max_keys=10)
    assert error.code == "too_many_keys"
    assert parse_command(json.dumps({"op": "subscribe", "keys": keys[:10]}), 10)


# ---- control frames -----------------------------------------------------------------------


def test_control_frames() -> None:
    assert orjson.loads(ack_frame("subscribe", "r1", [NIFTY], Mode.FULL)) == {
        "type": "ack",
        "op": "subscribe",
        "id": "r1",
        "keys": [NIFTY],
        "mode": "full",
    }
    assert orjson.loads(ack_frame("unsubscribe", None, [])) == {
        "type": "ack",
        "op": "unsubscribe",
        "keys": [],
    }
    assert orjson.loads(error_frame("bad_key", "bad", 4, ["X|"])) == {
        "type": "error",
        "code": "bad_key",
        "message": "bad",
        "id": 4,
        "keys": ["X|"],
    }
    assert orjson.loads(pong_frame("p")) == {"type": "pong", "id": "p"}
    assert orjson.loads(status_frame(False, "unknown", "m")) == {
        "type": "status",
        "redis": "down",
        "ingestor": "unknown",
        "message": "m",
    }


def test_protocol_error_frame_carries_code_id_and_keys() -> None:
    error = ProtocolError("not_subscribed", "nope", request_id="u", keys=[NIFTY])
    assert orjson.loads(error.frame()) == {
        "type": "error",
        "code": "not_subscribed",
        "message": "nope",
        "id": "u",
        "keys": [NIFTY],
    }


# ---- feed frames: spliced bytes, exact values ---------------------------------------------

VALUES = {
    NIFTY: b'{"fullFeed":{"indexFF":{"ltpc":{"ltp":22450.5,"ltt":"1740727891235","cp":22300.1}}},'
    b'"requestMode":"full_d5"}',
    RELIANCE: b'{"ltpc":{"ltp":1520.05,"ltt":"1740727891235","ltq":"75","cp":1500.0}}',
    'NSE_INDEX|Quote "q" \\ key': b'{"ltpc":{"ltp":1e-7}}',
}


def items() -> list[FeedItem]:
    found = []
    for seq, (key, value) in enumerate(VALUES.items(), start=1):
        tick_value, meta = split_tick(encode_tick(value, seq, "ep-1", 1740727891235 + seq))
        found.append(FeedItem.of(key_json(key), tick_value, meta))
    return found


def test_live_feed_values_are_exactly_the_ingestors_bytes() -> None:
    frame = feed_frame(LIVE_FEED, items(), current_ts(1740727891300))
    decoded = json.loads(frame)
    assert decoded["type"] == "live_feed"
    assert decoded["currentTs"] == "1740727891300"
    assert list(decoded["feeds"]) == list(VALUES)
    for seq, (key, value) in enumerate(VALUES.items(), start=1):
        assert decoded["feeds"][key] == json.loads(value)
        assert decoded["meta"][key] == {"seq": seq, "epoch": "ep-1", "ts": 1740727891235 + seq}
        assert orjson.dumps(decoded["feeds"][key]) == orjson.dumps(orjson.loads(value))


def test_empty_initial_feed_is_valid_json() -> None:
    assert json.loads(feed_frame(INITIAL_FEED, [], b"5")) == {
        "type": "initial_feed",
        "feeds": {},
        "meta": {},
        "currentTs": "5",
    }


# ---- WebSocket framing, checked by websockets' own parser ---------------------------------


def parse_server_frame(data: bytes) -> Frame:
    reader = StreamReader()
    reader.feed_data(data)
    parser = Frame.parse(reader.read_exact, mask=False)
    try:
        next(parser)
    except StopIteration as done:
        frame: Frame = done.value
        assert reader.at_eof() is not None
        return frame
    raise AssertionError("incomplete frame")


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_text_frames_parse_back(size: int) -> None:
    payload = b"x" * size
    frame = parse_server_frame(text_frame(payload))
    assert frame.opcode is Opcode.TEXT and frame.fin
    assert bytes(frame.data) == payload
    parts = [payload[: size // 3], payload[size // 3 :]]
    assert b"".join((text_header(size), *parts)) == text_frame(payload)
