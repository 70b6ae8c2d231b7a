"""A feed: one reconnecting WebSocket to a gateway's `/ws`, the subscriptions wanted on it, and
the queue of updates its user iterates.

The protocol is the README's "Client protocol". What the feed does for its user: it reconnects
with jittered exponential backoff (reset once a connection stayed up `stable_after` seconds),
subscribes everything again on each new connection (whose `initial_feed` is the snapshot), asks
for a snapshot when a key's epoch changes, drops repeats, flags sequence gaps, and merges partial
live ticks into whole values.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from tickstream_client._errors import (
    KEY_REFUSALS,
    ConnectionRefused,
    FeedClosed,
    KeysRefused,
    RequestRefused,
    TickstreamError,
    TokenExpired,
    Unauthorized,
)
from tickstream_client._policy import SequenceTracker, backoff_delay
from tickstream_client._update import Update, merge_value

__all__ = ["MODES", "Event", "Feed", "connect"]

logger = logging.getLogger("tickstream_client")

MODES: Final = ("ltpc", "option_greeks", "full", "full_d30")
CHUNK: Final = 100  # keys per subscribe frame: small frames, well under any size limit
CLOSE_POLICY: Final = 1008
CLOSE_TOO_BIG: Final = 1009
CLOSE_TOKEN_EXPIRED: Final = 4003
EXPIRED_MESSAGE: Final = "the token has expired"  # the gateway's words for an expired token

TokenProvider = Callable[[], Awaitable[str]]


@dataclass(frozen=True, slots=True)
class Event:
    """Something besides updates, for `on_event`: `connected` (`attempt`), `disconnected`
    (`code`, `reason`, `delay` before the next attempt), `refused` (keys the gateway refused
    outside an awaited subscribe: on a resubscribe after a reconnect, or `refused_by_upstream`
    later; `code`, `keys`, `reason` its message; they are no longer wanted), `status` and
    `market_info` (`frame`: the gateway's frame as it came)."""

    kind: str
    code: int | str | None = None
    reason: str = ""
    keys: tuple[str, ...] = ()
    attempt: int = 0
    delay: float = 0.0
    frame: Mapping[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class _Request:
    """A request awaiting its answer: the ack, or refusals covering all its keys."""

    keys: tuple[str, ...]
    outstanding: set[str]
    done: asyncio.Future[None] | None
    refused: dict[str, list[str]] = field(default_factory=dict)
    messages: dict[str, str] = field(default_factory=dict)
    acked: tuple[str, ...] = ()
    whole: RequestRefused | None = None


class _End:
    """The queue's last item: iteration ends (or raises the feed's failure)."""


class Feed:
    """See `connect`. Iterate it for `Update`s; `subscribe`, `unsubscribe`, `snapshot` from any
    task of the same event loop."""

    def __init__(
        self,
        url: str,
        *,
        token: str | None = None,
        api_key: str | None = None,
        token_provider: TokenProvider | None = None,
        on_event: Callable[[Event], None] | None = None,
        backoff_base: float = 0.5,
        backoff_max: float = 30.0,
        stable_after: float = 10.0,
        open_timeout: float = 10.0,
        request_timeout: float = 15.0,
        ping_interval: float = 15.0,
        max_queue: int = 10_000,
    ) -> None:
        self.url = url
        self._credential = token or api_key
        self._provider = token_provider
        self._on_event = on_event
        self._backoff = (backoff_base, backoff_max)
        self._stable_after = stable_after
        self._open_timeout = open_timeout
        self._request_timeout = request_timeout
        self._ping_interval = ping_interval
        self._wanted: dict[str, str] = {}  # key -> mode, what the user asked for and kept
        self._values: dict[str, dict[str, Any]] = {}  # key -> the last whole value
        self._tracker = SequenceTracker()
        self._requests: dict[str, _Request] = {}
        self._ids = itertools.count(1)
        self._queue: asyncio.Queue[Update | _End] = asyncio.Queue(max_queue)
        self._ws: ClientConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._ready: asyncio.Future[None] | None = None
        self._failure: TickstreamError | None = None
        self._last_error: Mapping[str, Any] | None = None
        self.connects = 0
        self.market_info: Mapping[str, Any] | None = None
        self.status: Mapping[str, Any] | None = None

    # ---- the user's side -------------------------------------------------------------------

    @property
    def subscriptions(self) -> dict[str, str]:
        """key -> mode of every key wanted (and kept across reconnects)."""
        return dict(self._wanted)

    @property
    def connected(self) -> bool:
        return self._ws is not None

    async def __aenter__(self) -> Feed:
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        self._task = loop.create_task(self._run(), name="tickstream-feed")
        try:
            await self._ready
        except BaseException:
            await self.close()
            raise
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def __aiter__(self) -> AsyncIterator[Update]:
        return self

    async def __anext__(self) -> Update:
        item = await self._queue.get()
        if isinstance(item, _End):
            self._queue.put_nowait(item)  # every later call ends the same way
            if self._failure is not None and not isinstance(self._failure, FeedClosed):
                raise self._failure
            raise StopAsyncIteration
        return item

    async def subscribe(self, keys: Iterable[str], mode: str = "ltpc") -> tuple[str, ...]:
        """Subscribe `keys` in `mode` (a key held in another mode switches) and wait for the
        gateway's answer; returns the keys it took. Raises `UnknownKeys`, `ForbiddenKeys`,
        `BadKeys`, `OverCapacity` when some were refused (the others are subscribed: see the
        exception's `subscribed`), `RequestRefused` when the whole request was. While
        disconnected it returns at once: the keys go out on the next connection."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        wanted = tuple(dict.fromkeys(keys))
        for key in wanted:
            self._wanted[key] = mode
        taken: list[str] = []
        for part in _chunks(wanted):
            request = await self._request({"op": "subscribe", "keys": list(part), "mode": mode})
            if request is None:
                return wanted
            taken.extend(request.acked)
            self._raise_refusals(request, tuple(taken))
        return tuple(taken)

    async def unsubscribe(self, keys: Iterable[str]) -> None:
        """Stop `keys` (keys not subscribed are ignored); their updates stop at once here."""
        gone = [key for key in dict.fromkeys(keys) if self._wanted.pop(key, None) is not None]
        self._tracker.forget(gone)
        for key in gone:
            self._values.pop(key, None)
        for part in _chunks(gone):
            await self._request({"op": "unsubscribe", "keys": list(part)}, wait=False)

    async def snapshot(self, keys: Iterable[str] | None = None) -> None:
        """Ask for the current value of `keys` (all of ours when None): updates with
        `snapshot=True` follow."""
        message: dict[str, Any] = {"op": "snapshot"}
        if keys is not None:
            message["keys"] = list(keys)
        await self._request(message, wait=False)

    async def close(self) -> None:
        """Close the connection and stop reconnecting; iteration ends."""
        self._fail(FeedClosed("the feed was closed"))
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # ---- requests ------------------------------------------------------------------------

    async def _request(self, message: dict[str, Any], wait: bool = True) -> _Request | None:
        """Send `message` with a fresh id; with `wait`, return it answered. None: not sent
        (disconnected; the subscriptions go out on the next connection)."""
        if self._failure is not None:
            raise self._failure
        ws = self._ws
        if ws is None:
            return None
        rid = f"c{next(self._ids)}"
        keys = tuple(message.get("keys") or ())
        done = asyncio.get_running_loop().create_future() if wait else None
        request = _Request(keys, set(keys), done)
        if message["op"] == "subscribe":
            self._requests[rid] = request
        try:
            await ws.send(json.dumps({**message, "id": rid}))
        except ConnectionClosed:
            self._requests.pop(rid, None)
            return None
        if done is None:
            return request
        try:
            async with asyncio.timeout(self._request_timeout):
                await done
        finally:
            self._requests.pop(rid, None)
        return request

    def _raise_refusals(self, request: _Request, taken: tuple[str, ...]) -> None:
        if request.whole is not None:
            raise request.whole
        for code, keys in request.refused.items():
            kind = KEY_REFUSALS.get(code, KeysRefused)
            raise kind(f"{code}: {request.messages[code]}", tuple(keys), taken)

    def _answer(self, frame: Mapping[str, Any]) -> None:
        """An ack or error frame: settles the request it names, if it awaits one."""
        request = self._requests.get(str(frame.get("id")))
        keys = [k for k in frame.get("keys") or () if isinstance(k, str)]
        if frame.get("type") == "ack":
            if frame.get("op") == "subscribe":
                self._tracker.forget(keys)  # a mode switch: the new mode's sequence numbers
            if request is not None:
                request.acked = tuple(keys)
                _settle(request)
            return
        code = str(frame.get("code", ""))
        message = str(frame.get("message", ""))
        if code in KEY_REFUSALS:
            for key in keys:
                self._wanted.pop(key, None)
            if request is None or request.done is None:
                self._emit(Event("refused", code=code, reason=message, keys=tuple(keys)))
                return
            request.refused.setdefault(code, []).extend(keys)
            request.messages[code] = message
            request.outstanding.difference_update(keys)
            if not request.outstanding:
                _settle(request)
            return
        if request is not None:
            for key in request.keys:
                self._wanted.pop(key, None)
            request.whole = RequestRefused(code, message, tuple(keys))
            _settle(request)
            if request.done is None:
                self._emit(Event("refused", code=code, reason=message, keys=request.keys))
            return
        self._last_error = frame  # unauthorized, token_expired...: the close follows

    # ---- the connection ------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        attempt = 0
        while self._failure is None:
            opened_at: float | None = None
            code: int | None = None
            reason = ""
            self._last_error = None
            try:
                credential = await self._provider() if self._provider else self._credential
                headers = {"Authorization": f"Bearer {credential}"} if credential else {}
                async with ws_connect(
                    self.url,
                    additional_headers=headers,
                    open_timeout=self._open_timeout,
                    ping_interval=self._ping_interval,
                    ping_timeout=self._ping_interval,
                    max_size=None,
                ) as ws:
                    opened_at = loop.time()
                    await self._session(ws, attempt)
                code, reason = ws.close_code, ws.close_reason or ""
            except (InvalidURI, ValueError) as error:
                self._fail(ConnectionRefused(f"bad URL: {error}"))
                return
            except (OSError, InvalidHandshake, TimeoutError, ConnectionClosed) as error:
                reason = type(error).__name__
                if self._ws is not None and isinstance(error, ConnectionClosed):
                    code, reason = error.rcvd.code if error.rcvd else None, str(error)
            finally:
                self._ws = None
                for request in list(self._requests.values()):
                    _settle(request)  # its keys stay wanted and go out again on reconnect
            fatal = self._refusal(code, reason)
            if fatal is not None and not (isinstance(fatal, TokenExpired) and self._provider):
                self._fail(fatal)
                return
            if opened_at is not None and loop.time() - opened_at >= self._stable_after:
                attempt = 0
            delay = backoff_delay(attempt, *self._backoff)
            attempt += 1
            logger.info("feed disconnected (%s %s): reconnecting in %.2fs", code, reason, delay)
            self._emit(Event("disconnected", code=code, reason=reason, delay=delay))
            await asyncio.sleep(delay)

    async def _session(self, ws: ClientConnection, attempt: int) -> None:
        """One connection's life: subscribe everything wanted, then take frames until it ends."""
        self._ws = ws
        self.connects += 1
        by_mode: dict[str, list[str]] = {}
        for key, mode in self._wanted.items():
            by_mode.setdefault(mode, []).append(key)
        for mode, keys in by_mode.items():
            for part in _chunks(keys):
                rid = f"c{next(self._ids)}"
                self._requests[rid] = _Request(tuple(part), set(part), None)
                await ws.send(
                    json.dumps({"op": "subscribe", "keys": part, "mode": mode, "id": rid})
                )
        first = True
        async for message in ws:
            frame = json.loads(message)
            if not isinstance(frame, dict):
                continue
            if first and frame.get("type") != "error":
                first = False
                self._emit(Event("connected", attempt=attempt))
                if self._ready is not None and not self._ready.done():
                    self._ready.set_result(None)
            await self._dispatch(frame)

    def _refusal(self, code: int | None, reason: str) -> TickstreamError | None:
        """The failure a close means, None when reconnecting may help."""
        error = self._last_error or {}
        message = str(error.get("message") or reason)
        if code == CLOSE_TOKEN_EXPIRED:
            return TokenExpired(message, code)
        if code == CLOSE_POLICY:
            if error.get("code") == "unauthorized" or reason == "unauthorized":
                kind = TokenExpired if message.startswith(EXPIRED_MESSAGE) else Unauthorized
                return kind(message, code)
            return ConnectionRefused(f"refused by policy: {message}", code)
        if code == CLOSE_TOO_BIG:
            return ConnectionRefused("a request was over the gateway's frame limit", code)
        return None

    async def _dispatch(self, frame: Mapping[str, Any]) -> None:
        kind = frame.get("type")
        if kind in ("initial_feed", "live_feed"):
            await self._on_feed(frame, initial=kind == "initial_feed")
        elif kind in ("ack", "error"):
            self._answer(frame)
        elif kind == "market_info":
            self.market_info = frame
            self._emit(Event("market_info", frame=frame))
        elif kind == "status":
            self.status = frame
            self._emit(Event("status", frame=frame))

    async def _on_feed(self, frame: Mapping[str, Any], initial: bool) -> None:
        feeds = frame.get("feeds") or {}
        metas = frame.get("meta") or {}
        stale: list[str] = []
        for key, raw in feeds.items():
            mode = self._wanted.get(key)
            if mode is None or not isinstance(raw, dict):
                continue  # in flight when we unsubscribed
            meta = metas.get(key) or {}
            seq = meta.get("seq") if isinstance(meta.get("seq"), int) else None
            epoch = str(meta["epoch"]) if meta.get("epoch") is not None else None
            verdict = self._tracker.check(key, seq, epoch, initial)
            if verdict.resync:
                stale.append(key)
            if not verdict.accept:
                continue
            partial = bool(meta.get("partial")) and not initial
            value = merge_value(self._values.get(key), raw) if partial else raw
            self._values[key] = value
            ts = meta.get("ts")
            update = Update(
                key=key,
                mode=mode,
                raw=raw,
                value=value,
                seq=seq,
                epoch=epoch,
                ts=ts if isinstance(ts, int) else None,
                snapshot=initial,
                partial=partial,
                gap=verdict.gap,
                new_epoch=verdict.new_epoch,
            )
            await self._queue.put(update)  # a full queue holds the socket: the gateway conflates
        if stale and self._ws is not None:
            await self._ws.send(json.dumps({"op": "snapshot", "keys": stale}))

    def _fail(self, failure: TickstreamError) -> None:
        """End the feed: iteration raises `failure` (ends, for `FeedClosed`)."""
        if self._failure is not None:
            return
        self._failure = failure
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(failure)
        for request in list(self._requests.values()):
            _settle(request)
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(_End())
        if self._queue.full():
            # Make room: the end must be seen; the user is not reading anyway.
            self._queue.get_nowait()
            self._queue.put_nowait(_End())

    def _emit(self, event: Event) -> None:
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception:
                logger.exception("on_event raised")


def _settle(request: _Request) -> None:
    if request.done is not None and not request.done.done():
        request.done.set_result(None)


def _chunks(keys: Iterable[str]) -> list[list[str]]:
    listed = list(keys)
    return [listed[i : i + CHUNK] for i in range(0, len(listed), CHUNK)]


def connect(
    url: str,
    *,
    token: str | None = None,
    api_key: str | None = None,
    token_provider: TokenProvider | None = None,
    on_event: Callable[[Event], None] | None = None,
    **options: Any,
) -> Feed:
    """A feed on the gateway's `/ws` at `url` (e.g. `ws://localhost:8080/ws`), to use as
    `async with connect(url) as feed:`. Entering waits for the first connection to be heard from
    (connection failures are retried) and raises `Unauthorized` or `TokenExpired` when the
    credential is refused. `token` or `api_key` goes as `Authorization: Bearer`;
    `token_provider` (an async callable returning a token) is asked before every connection,
    and with it an expired token is replaced instead of raised. `options`: `backoff_base`,
    `backoff_max`, `stable_after`, `open_timeout`, `request_timeout`, `ping_interval`,
    `max_queue` (see `Feed`)."""
    return Feed(
        url,
        token=token,
        api_key=api_key,
        token_provider=token_provider,
        on_event=on_event,
        **options,
    )
