"""The lean pub/sub connection: the RESP2 parser alone, then against a real Redis."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from services.gateway.errors import PubSubClosed
from services.gateway.pubsub import PubSubLink, RedisAddress
from shared.resp import ErrorReply, RespError, encode_command, parse_replies
from tests.gateway.conftest import eventually

STREAM = (
    b"*3\r\n$9\r\nsubscribe\r\n$3\r\nabc\r\n:1\r\n"
    b"*3\r\n$7\r\nmessage\r\n$3\r\nabc\r\n$12\r\nhello\r\nworld\r\n"
    b"*2\r\n$4\r\npong\r\n$2\r\nt1\r\n"
    b"+OK\r\n-ERR wrong\r\n$-1\r\n*-1\r\n*0\r\n$0\r\n\r\n"
    b"*2\r\n*1\r\n:5\r\n$1\r\nx\r\n"
)
EXPECTED = [
    [b"subscribe", b"abc", 1],
    [b"message", b"abc", b"hello\r\nworld"],  # binary-safe: CRLF inside a payload
    [b"pong", b"t1"],
    b"OK",
    ErrorReply("ERR wrong"),
    None,
    None,
    [],
    b"",
    [[5], b"x"],
]


def test_parse_a_whole_stream() -> None:
    replies, used = parse_replies(STREAM)
    assert replies == EXPECTED and used == len(STREAM)


def test_parse_any_split_of_the_stream() -> None:
    for cut in range(1, len(STREAM)):
        head, tail = STREAM[:cut], STREAM[cut:]
        first, used = parse_replies(head)
        rest, used_rest = parse_replies(head[used:] + tail)
        assert first + rest == EXPECTED, cut
        assert used + used_rest == len(STREAM)


def test_garbage_is_an_error() -> None:
    with pytest.raises(RespError):
        parse_replies(b"?what\r\n")


def test_encode_command() -> None:
    assert encode_command(b"PING", "t") == b"*2\r\n$4\r\nPING\r\n$1\r\nt\r\n"


def test_addresses() -> None:
    plain = RedisAddress.from_url("redis://127.0.0.1:6380/2")
    assert (plain.host, plain.port, plain.tls, plain.password) == ("127.0.0.1", 6380, False, None)
    secure = RedisAddress.from_url("rediss://user:p%40ss@cache.example/0")
    assert (secure.host, secure.port, secure.tls) == ("cache.example", 6379, True)
    assert (secure.username, secure.password) == ("user", "p@ss")
    local = RedisAddress.from_url("unix:///run/redis.sock")
    assert local.path == "/run/redis.sock" and local.host is None
    with pytest.raises(ValueError):
        RedisAddress.from_url("http://nope")


async def test_subscribe_receive_ping_unsubscribe(
    redis_url: str, redis_client: aioredis.Redis
) -> None:
    messages: list[tuple[bytes, bytes]] = []
    pongs: list[bytes] = []
    link = await PubSubLink.open(
        redis_url, on_message=lambda c, d: messages.append((c, d)), on_pong=pongs.append
    )
    try:
        link.subscribe([b"ch:a", b"ch:b"])
        link.ping(b"barrier-1")
        await eventually(lambda: pongs == [b"barrier-1"], "the barrier's pong")
        # the PING came after the SUBSCRIBE: both channels are live now
        payload = b"\x00binary\r\n\xff" * 1000
        await redis_client.publish("ch:a", payload)
        await redis_client.publish("ch:b", b"two")
        await eventually(lambda: len(messages) == 2, "two messages")
        assert messages == [(b"ch:a", payload), (b"ch:b", b"two")]
        link.unsubscribe([b"ch:a"])
        link.ping(b"barrier-2")
        await eventually(lambda: pongs[-1:] == [b"barrier-2"], "the second pong")
        assert await redis_client.publish("ch:a", b"lost") == 0
        assert not link.closed.done()
    finally:
        link.close()
    with pytest.raises(PubSubClosed):
        link.ping(b"after close")


async def test_a_refused_password_and_a_dead_server_raise(redis_url: str) -> None:
    with pytest.raises(PubSubClosed, match="AUTH"):
        await PubSubLink.open(
            redis_url.replace("redis://", "redis://:wrong@"),
            on_message=lambda c, d: None,
            on_pong=lambda t: None,
        )
    from shared.ports import free_port

    with pytest.raises(OSError):
        await PubSubLink.open(
            f"redis://127.0.0.1:{free_port()}/0",
            on_message=lambda c, d: None,
            on_pong=lambda t: None,
        )


async def test_the_link_reports_a_server_that_goes_away(redis_url: str, redis_server) -> None:  # type: ignore[no-untyped-def]
    link = await PubSubLink.open(redis_url, on_message=lambda c, d: None, on_pong=lambda t: None)
    try:
        redis_server.stop()
        with pytest.raises(PubSubClosed):
            await asyncio.wait_for(asyncio.shield(link.closed), 15)
    finally:
        link.close()
        redis_server.start()
