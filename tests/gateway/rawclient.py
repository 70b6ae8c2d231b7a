"""A WebSocket client over a bare socket that reads only when told to.

It stands for a slow or dead browser: while the test does not call `read_*`, nothing is read
from the socket (no library reads ahead into a buffer) and pings go unanswered. Framing is
`websockets`' sans-I/O client protocol.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

import orjson
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

WAIT = 15.0


class RawClient:
    def __init__(self, sock: socket.socket, protocol: ClientProtocol) -> None:
        self._sock = sock
        self._protocol = protocol
        self._loop = asyncio.get_running_loop()
        self.frames: list[dict[str, Any]] = []
        self.pings = 0
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self.eof = False
        self.received_bytes = 0

    @classmethod
    async def connect(
        cls, url: str, *, receive_buffer: int | None = None, headers: dict[str, str] | None = None
    ) -> RawClient:
        uri = parse_uri(url)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if receive_buffer is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        await loop.sock_connect(sock, (uri.host, uri.port))
        protocol = ClientProtocol(uri)
        request = protocol.connect()
        for name, value in (headers or {}).items():
            request.headers[name] = value
        protocol.send_request(request)
        client = cls(sock, protocol)
        await client._flush()
        async with asyncio.timeout(WAIT):
            while protocol.handshake_exc is None and protocol.state.name == "CONNECTING":
                await client._read_once()
        if protocol.handshake_exc is not None:
            sock.close()
            raise protocol.handshake_exc
        return client

    async def _flush(self) -> None:
        for data in self._protocol.data_to_send():
            if data:
                await self._loop.sock_sendall(self._sock, data)

    async def _read_once(self, size: int = 65536) -> int:
        data = await self._loop.sock_recv(self._sock, size)
        self.received_bytes += len(data)
        if not data:
            self.eof = True
            self._protocol.receive_eof()
        else:
            self._protocol.receive_data(data)
        for event in self._protocol.events_received():
            if isinstance(event, Frame):
                self._on_frame(event)
            elif isinstance(event, Response) and event.status_code != 101:
                self.eof = True
        await self._flush()
        return len(data)

    def _on_frame(self, frame: Frame) -> None:
        if frame.opcode is Opcode.TEXT:
            self.frames.append(orjson.loads(bytes(frame.data)))
        elif frame.opcode is Opcode.PING:
            self.pings += 1
        elif frame.opcode is Opcode.CLOSE:
            received = self._protocol.close_rcvd
            if received is not None:
                self.close_code, self.close_reason = received.code, received.reason

    async def send(self, request: dict[str, Any]) -> None:
        self._protocol.send_text(orjson.dumps(request))
        await self._flush()

    async def read_until(self, done: Callable[[RawClient], bool], size: int = 65536) -> None:
        """Read (and answer pings) until `done(self)` or the connection ends."""
        async with asyncio.timeout(WAIT):
            while not done(self) and not self.eof:
                await self._read_once(size)

    async def read_until_closed(self) -> None:
        await self.read_until(lambda c: c.close_code is not None and c.eof)

    async def send_bytes(self, data: bytes) -> None:
        """Write `data` as it is, past the protocol (a frame the test built by hand)."""
        await self._loop.sock_sendall(self._sock, data)

    def seqs(self, key: str) -> list[int]:
        return [
            f["meta"][key]["seq"]
            for f in self.frames
            if f.get("type") in ("live_feed", "initial_feed") and key in f["meta"]
        ]

    def close(self) -> None:
        self._sock.close()
