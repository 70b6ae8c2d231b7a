"""`python -m bench.peer --port N`: a per-message fan-out server, the usual Python design, to
measure against the gateway in the same harness (`bench.fanout --server peer`).

It is what encode/broadcaster-style servers do: FastAPI under uvicorn, one redis-py pub/sub
connection for the process, and each message sent at once to every WebSocket subscribed to its
channel with `await websocket.send_text` (no coalescing, no conflation, no flow control). It
speaks just enough of our `/ws` protocol for the benchmark's clients: `subscribe` is answered
with an empty `initial_feed`, and each tick goes out as its own `live_feed` frame, its value and
metadata spliced in as the gateway splices them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
from collections.abc import AsyncIterator

import orjson
import redis.asyncio as aioredis
import uvicorn
from fastapi import FastAPI, WebSocket, WebSocketDisconnect
from fastapi.responses import PlainTextResponse

from services.gateway.protocol import LIVE_FEED, key_json
from shared import redis_contract as rc
from shared.instruments import Mode


def create_app(redis_url: str) -> FastAPI:
    subscribers: dict[bytes, set[WebSocket]] = {}
    client = aioredis.from_url(redis_url)
    pubsub = client.pubsub()

    async def relay() -> None:
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
            if message is None:
                continue
            name, payload = message["channel"], message["data"]
            value, meta = rc.split_tick(payload)
            key = key_json(name.decode().rsplit(":", 1)[1])
            frame = b"".join(
                (LIVE_FEED, key, b":", value, b'},"meta":{', key, b":", meta, b'},"currentTs":"0"}')
            ).decode()
            for websocket in list(subscribers.get(name, ())):
                with contextlib.suppress(Exception):
                    await websocket.send_text(frame)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await pubsub.subscribe("bench:peer")  # get_message needs a subscription to wait on
        task = asyncio.create_task(relay())
        yield
        task.cancel()
        await client.aclose()

    app = FastAPI(lifespan=lifespan)

    @app.get("/readyz")
    async def readyz() -> PlainTextResponse:
        return PlainTextResponse("ok")

    @app.get("/metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse("")

    @app.websocket("/ws")
    async def feed(websocket: WebSocket) -> None:
        await websocket.accept()
        names: list[bytes] = []
        try:
            while True:
                request = orjson.loads(await websocket.receive_text())
                mode = Mode(request.get("mode", "ltpc"))
                for key in request["keys"]:
                    name = rc.tick_channel(mode, key).encode()
                    if name not in subscribers:
                        subscribers[name] = set()
                        await pubsub.subscribe(name)
                    subscribers[name].add(websocket)
                    names.append(name)
                await websocket.send_text('{"type":"initial_feed","feeds":{}}')
        except WebSocketDisconnect:
            pass
        finally:
            for name in names:
                subscribers.get(name, set()).discard(websocket)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.peer", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = create_app(os.environ["REDIS_URL"])
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", loop="uvloop")


if __name__ == "__main__":
    main()
