"""A TCP relay for fault tests: forwards each connection to a target, and breaks the connections
open at a given moment the way networks do, without closing them.

```python
async with tcp_relay("127.0.0.1", redis_port) as relay:
    url = f"redis://{relay.host}:{relay.port}/0"      # point the service here
    relay.black_hole()   # open connections stop forwarding both ways, and stay open
    await relay.rewire() # open connections are moved to a new connection to the target
```

A black hole is a half-dead link: the client's writes are accepted and vanish, nothing comes
back, no FIN and no reset. A rewire is a proxy that failed over: the client keeps its socket,
the target sees a new client (without the old one's state, e.g. its subscriptions).
Connections made after either go through normally, so a client that reconnects recovers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from shared.tasks import cancel_and_wait

__all__ = ["TcpRelay", "tcp_relay"]

CHUNK = 65536


class _Pipe:
    """One client connection and its current connection to the target."""

    def __init__(
        self,
        client: asyncio.StreamWriter,
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
    ) -> None:
        self.client = client
        self.upstream = upstream[1]
        self.black_holed = False
        self.tasks: set[asyncio.Task[None]] = set()
        self.writers = [client, upstream[1]]

    def start(self, client: asyncio.StreamReader, upstream: asyncio.StreamReader) -> None:
        self.tasks.add(asyncio.create_task(self._up(client)))
        self.down(upstream, self.upstream)

    def down(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.tasks.add(asyncio.create_task(self._down(reader, writer)))

    async def _up(self, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(CHUNK):
                if not self.black_holed:
                    self.upstream.write(data)
                    await self.upstream.drain()
        self.upstream.close()

    async def _down(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(CHUNK):
                if not self.black_holed and writer is self.upstream:
                    self.client.write(data)
                    await self.client.drain()
        if writer is self.upstream:  # the target ended the current connection: pass it on
            self.client.close()

    async def close(self) -> None:
        await cancel_and_wait(self.tasks)
        for writer in self.writers:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()


@contextlib.asynccontextmanager
async def tcp_relay(target_host: str, target_port: int) -> AsyncIterator[TcpRelay]:
    """A relay to the target, listening until the block ends (then every connection closes)."""
    relay = TcpRelay((target_host, target_port))
    server = await asyncio.start_server(relay.accept, relay.host, 0)
    relay.port = server.sockets[0].getsockname()[1]
    try:
        yield relay
    finally:
        server.close()
        await relay.close()
        await server.wait_closed()


class TcpRelay:
    """Listens on 127.0.0.1 at a free port (`host`, `port`) and forwards to the target."""

    def __init__(self, target: tuple[str, int]) -> None:
        self._target = target
        self._pipes: list[_Pipe] = []
        self.host = "127.0.0.1"
        self.port = 0
        self.accepted = 0  # connections accepted so far

    async def close(self) -> None:
        for pipe in self._pipes:
            await pipe.close()

    async def accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            upstream = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            return
        pipe = _Pipe(writer, upstream)
        self._pipes.append(pipe)
        pipe.start(reader, upstream[0])

    def black_hole(self) -> int:
        """Every connection open now forwards nothing more, either way, and stays open.
        Returns how many there are."""
        count = 0
        for pipe in self._pipes:
            if not pipe.black_holed:
                pipe.black_holed = True
                count += 1
        return count

    async def rewire(self) -> int:
        """Move every connection open now (not black-holed) to a new connection to the target;
        the old one stays open and what it still sends is dropped. Returns how many moved."""
        moved = 0
        for pipe in self._pipes:
            if pipe.black_holed or pipe.client.is_closing():
                continue
            reader, writer = await asyncio.open_connection(*self._target)
            pipe.upstream = writer
            pipe.writers.append(writer)
            pipe.down(reader, writer)
            moved += 1
        return moved
