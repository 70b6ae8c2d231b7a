"""The upstream session: token, one-time URL, connection, read loop, subscription requests.

`UpstreamSession.run` is the active instance's connection loop: wait for a usable token (a
token Upstox refused is not tried again until the session store holds another; the token in
use is kept when the store loses the session without a logout, `tokens.TokenChoice`),
authorize a fresh one-time feed URL, connect, subscribe what is wanted, and hand every frame to the
processor and the publisher until the connection ends; then classify how it ended
(`failures.classify`) and count, log and back off in one place. While connected, the stall
watchdog's task asks the pure `watchdog.StallWatch` now and then whether the feed has gone
silent while data is due, and carries out its verdict: resubscribe, or close the connection
for a reconnect. It owns the connection and the state only it uses: the rejected token, the
token in use, the connected user, what is subscribed upstream, the send lock, the
malformed-frame burst, the stall watch, and its counters.

It must NOT decide what to subscribe (the demand sync hands it a target), touch the lease, or
write anything to Redis but the session store's "this token was refused". The one-time URL and
the token never reach a log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Mapping

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from services.ingestor.failures import (
    UPSTREAM_ERRORS,
    FeedStalled,
    UpstreamError,
    UpstreamFailure,
    classify,
)
from services.ingestor.framelog import FrameLog
from services.ingestor.processor import PART_FEEDS, TickProcessor
from services.ingestor.publisher import Publisher
from services.ingestor.settings import IngestorSettings
from services.ingestor.status import StatusReporter
from services.ingestor.subscriptions import Request, diff_requests
from services.ingestor.tokens import TokenChoice
from services.ingestor.watchdog import StallWatch, resubscribe_requests
from shared import redis_contract as rc
from shared.instruments import Mode, count_modes
from shared.redis_link import REDIS_ERRORS, RedisLink, guarded
from shared.render import RenderError
from shared.sessions import SessionDecryptError, SessionStore
from shared.tasks import cancel_and_wait
from shared.upstox.client import UpstoxClient
from shared.upstox.errors import UpstoxAuthError, UpstoxError

__all__ = ["AUTHORIZE_OUTCOMES", "UpstreamSession"]

logger = logging.getLogger(__name__)

# websockets logs handshake request lines at DEBUG, and the one-time feed URL's query holds a
# code: its logger for our connection never goes below INFO, whatever LOG_LEVEL says.
_ws_logger = logging.getLogger("tickstream.ingestor.feed")
_ws_logger.setLevel(logging.INFO)

# Let the publisher run once this many ticks wait, even while frames keep arriving.
_YIELD_BACKLOG = 4000

AUTHORIZE_OUTCOMES = ("ok", "auth", "error")


class UpstreamSession:
    def __init__(
        self,
        settings: IngestorSettings,
        link: RedisLink,
        processor: TickProcessor,
        publisher: Publisher,
        reporter: StatusReporter,
        framelog: FrameLog | None = None,
    ) -> None:
        """`framelog`: where every frame received goes for the recorder (None: not recorded)."""
        self._settings = settings
        self._framelog = framelog
        self._link = link
        self._processor = processor
        self._publisher = publisher
        self._reporter = reporter
        self._sessions = SessionStore(link.client, settings.token_encryption_key)
        self._upstox = UpstoxClient(settings.upstox_base_url, settings.upstox_timeout_seconds)
        self._ws: ClientConnection | None = None
        self._user: str | None = None
        self._wanted: Mapping[str, Mode] = {}
        self._subscribed: Mapping[str, Mode] = {}
        self._send_lock = asyncio.Lock()
        self._token_changed = asyncio.Event()
        self._rejected_token: str | None = None
        self._tokens = TokenChoice()  # the token in use, kept if the store loses the session
        self._opened_at: float | None = None
        self._malformed_burst = 0
        self._watch = StallWatch(settings.ingestor_silence_seconds)
        self._stall_closed: FeedStalled | None = None  # the watchdog closed this connection
        self.closers: set[asyncio.Task[None]] = set()
        """Connections being closed on a logout (cancelled by a stopping ingestor)."""
        self.frames = 0  # frames decoded (malformed ones not included)
        self.feeds = 0  # instrument updates in those frames
        self.decode_errors = 0  # frames skipped as malformed
        self.connections = 0  # connections opened
        self.failures: Counter[str] = Counter()  # attempts ended, by `failures.REASONS`
        self.authorize: Counter[str] = Counter()  # feed authorize calls, by AUTHORIZE_OUTCOMES
        self.stalls: Counter[str] = Counter()  # watchdog steps, by `watchdog.ACTIONS`

    @property
    def connected(self) -> bool:
        return self._ws is not None

    @property
    def stalled(self) -> bool:
        """The feed went silent while data was due, and has sent nothing since."""
        return self._watch.stalled

    @property
    def subscribed(self) -> Mapping[str, Mode]:
        """What is subscribed upstream right now (empty while disconnected)."""
        return self._subscribed

    async def subscribe(self, target: Mapping[str, Mode]) -> None:
        """Make `target` what is subscribed upstream: now if connected, else on connecting."""
        self._wanted = dict(target)
        await self._send_requests()

    def forget(self) -> None:
        """Nothing is wanted any more (the instance became a standby)."""
        self._wanted = {}
        self._set_subscribed({})
        self._tokens.forget()  # a standby hears no token events: what it held may be stale
        self._watch = StallWatch(self._settings.ingestor_silence_seconds)

    def recheck_token(self) -> None:
        """The session store may have changed unseen: read it again."""
        self._token_changed.set()

    def token_event(self, data: object) -> None:
        """An event on `TOKEN_EVENTS`: look at the token again; drop the feed on a logout of
        the user it is connected as."""
        try:
            event = rc.TokenEvent.model_validate_json(data)  # type: ignore[arg-type]
        except ValueError:
            logger.warning("ignoring an unreadable token event")
            return
        self._token_changed.set()
        self._tokens.event(event.event, event.user_id)
        ws = self._ws
        if event.event == "logout" and event.user_id == self._user and ws is not None:
            logger.info("%s logged out: closing the feed connection", event.user_id)
            closer = asyncio.create_task(ws.close(reason="logged out"))
            self.closers.add(closer)
            closer.add_done_callback(self.closers.discard)

    async def aclose(self) -> None:
        await self._upstox.aclose()

    # ---- the connection loop -----------------------------------------------------------------

    async def run(self) -> None:
        backoff = self._settings.backoff()
        stable = self._settings.ingestor_stable_after_seconds
        while True:
            user, token = await self._wait_token()
            self._reporter.set_state("connecting")
            self._opened_at = None
            try:
                url = await self._authorize(token)
                ended: UpstreamError = await self._connection(url, user)
            except UPSTREAM_ERRORS as error:
                ended = error
            failure = classify(ended)
            self.failures[failure.reason] += 1
            if failure.is_auth:
                await self._token_rejected(user, token, failure)
                backoff.reset()  # a new token deserves an immediate attempt
                continue
            logger.log(logging.INFO if failure.quiet else logging.WARNING, "%s", failure.message)
            if self._opened_at is not None and time.monotonic() - self._opened_at >= stable:
                backoff.reset()  # it held for a while: a blip, not a feed that keeps failing
            self._reporter.set_state("backoff")
            await asyncio.sleep(backoff.next_delay())

    async def _wait_token(self) -> tuple[str, str]:
        told = False
        while True:
            self._token_changed.clear()
            await self._link.wait_up()
            session: rc.StoredSession | None = None
            token: str | None = None
            try:
                session = await guarded(self._sessions.active())
                token = None if session is None else self._sessions.decrypt(session)
            except REDIS_ERRORS as error:
                self._link.failed(error)
                continue
            except SessionDecryptError as error:
                logger.error("%s", error)
            found, held = self._tokens.choose(session, token, time.time(), self._rejected_token)
            if found is not None:
                if held:
                    logger.warning(
                        "the session store has no session, and no logout was announced (Redis "
                        "lost it?): connecting as %s with the token already in use",
                        found[0],
                    )
                return found
            if not told:
                logger.info("no usable Upstox token: waiting for a login")
                told = True
            self._reporter.set_state("waiting_token")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._settings.ingestor_token_recheck_seconds):
                    await self._token_changed.wait()

    async def _token_rejected(self, user: str, token: str, failure: UpstreamFailure) -> None:
        logger.warning(
            "%s: marking the session of %s invalid and waiting for a new login",
            failure.message,
            user,
        )
        self._rejected_token = token
        self._tokens.forget()
        try:
            await guarded(self._sessions.mark_invalid(user, rejected_token=token))
        except REDIS_ERRORS as error:
            self._link.failed(error)

    async def _authorize(self, token: str) -> str:
        try:
            url = await self._upstox.authorize_feed(token)
        except UpstoxError as error:
            self.authorize["auth" if isinstance(error, UpstoxAuthError) else "error"] += 1
            raise
        self.authorize["ok"] += 1
        return url

    async def _connection(self, url: str, user: str) -> ConnectionClosed:
        """Connect and serve until the connection closes; how it closed, when it did cleanly
        (a failure raises)."""
        async with self._connect(url) as ws:
            self._opened_at = time.monotonic()
            await self._serve(ws, user)
        return ws.protocol.close_exc

    def _connect(self, url: str) -> ws_connect:
        s = self._settings
        # No `ssl` argument: wss:// URLs get the default context, certificates verified.
        return ws_connect(
            url,
            ping_interval=s.ingestor_ping_interval,
            ping_timeout=s.ingestor_ping_timeout,
            open_timeout=s.ingestor_open_timeout,
            close_timeout=2,
            max_size=s.ingestor_max_frame_bytes,
            max_queue=64,
            compression=None,  # like Upstox's SDK: frames are protobuf, deflate would cost CPU
            user_agent_header="tickstream-ingestor",
            logger=_ws_logger,
        )

    async def _serve(self, ws: ClientConnection, user: str) -> None:
        epoch = self._processor.new_epoch()
        self._user = user
        self._rejected_token = None
        self.connections += 1
        self._set_subscribed({})
        self._ws = ws
        self._stall_closed = None
        self._watch.opened(time.monotonic())
        self._reporter.set_state("stalled" if self._watch.stalled else "connected")
        logger.info("connected to the feed as %s (epoch %s)", user, epoch)
        watchdog = asyncio.create_task(self._watchdog(ws), name="stall watchdog")
        try:
            await self._send_requests()
            await self._read(ws)
        except ConnectionClosed:
            if self._stall_closed is None:
                raise
        finally:
            # Before the await: a session being cancelled (the lease lost) gets its cancellation
            # back from cancel_and_wait, and must not look connected afterwards.
            self._ws = None
            self._set_subscribed({})
            await cancel_and_wait([watchdog])
        if self._stall_closed is not None:
            raise self._stall_closed

    async def _watchdog(self, ws: ClientConnection) -> None:
        """Ask the stall watch now and then; resubscribe, or close for a reconnect."""
        watch = self._watch
        period = min(1.0, watch.limit / 4)
        while True:
            await asyncio.sleep(period)
            was_stalled = watch.stalled
            now = time.monotonic()
            action = watch.check(now, self._subscribed, self._processor.market_info)
            if action is None:
                if was_stalled and not watch.stalled:
                    logger.info("no data is due any more: the feed is not counted as stalled")
                    self._reporter.set_state("connected")
                continue
            self.stalls[action] += 1
            silent = now - watch.stall_began
            if not was_stalled:
                logger.warning(
                    "the feed is stalled: no data for %.1f s with %d keys subscribed and %s "
                    "open; resubscribing, then reconnecting while it stays silent",
                    silent,
                    len(self._subscribed),
                    ", ".join(watch.open_segments()),
                )
                self._reporter.set_state("stalled")
            if action == "resubscribe":
                async with self._send_lock:
                    batch = self._settings.ingestor_batch_size
                    await self._send(ws, resubscribe_requests(self._subscribed, batch))
                continue
            self._stall_closed = FeedStalled(silent)
            await ws.close(reason="no data: reconnecting")
            return

    def _heard_again(self, silent: float) -> None:
        steps = self._watch.steps
        logger.info(
            "the feed is sending data again after %.1f s of silence (resubscribed %d times, "
            "reconnected %d times)",
            silent,
            steps["resubscribe"],
            steps["reconnect"],
        )
        self._reporter.set_state("connected")

    async def _read(self, ws: ClientConnection) -> None:
        process_parts = self._processor.process_parts
        submit = self._publisher.submit
        publisher = self._publisher
        clock = time.monotonic
        heard = self._watch.heard
        record = self._framelog.append if self._framelog is not None else None
        async for message in ws:
            received = clock()
            try:
                if isinstance(message, str):
                    raise RenderError("a text frame (the feed sends binary protobuf)")
                for result in process_parts(message, PART_FEEDS):
                    data = result.market_info is None  # the market status is not data
                    result.received = received
                    self.feeds += result.feeds
                    submit(result)
                    if result.more or publisher.backlog >= _YIELD_BACKLOG:
                        # Let the publisher send this much while the rest is rendered.
                        await asyncio.sleep(0)
            except Exception as error:  # a bad frame must never end the session
                self._malformed(error)
                continue
            self.frames += 1
            if record is not None:
                record(message, int(time.time() * 1000))
            if data and (silent := heard(received)) is not None:
                self._heard_again(silent)
            if self._malformed_burst:
                logger.warning("%d malformed frames skipped in that burst", self._malformed_burst)
                self._malformed_burst = 0

    def _malformed(self, error: Exception) -> None:
        self.decode_errors += 1
        if self._malformed_burst == 0:
            if isinstance(error, RenderError):
                logger.warning("skipping a malformed frame from the feed: %s", error)
            else:
                logger.error("skipping a frame that could not be processed", exc_info=error)
        self._malformed_burst += 1

    # ---- subscriptions -----------------------------------------------------------------------

    async def _send_requests(self) -> None:
        async with self._send_lock:
            ws = self._ws
            if ws is None:
                return
            target = self._wanted
            requests = diff_requests(self._subscribed, target, self._settings.ingestor_batch_size)
            if not await self._send(ws, requests):
                return  # the reader sees it too; everything is subscribed again on reconnect
            if requests:
                logger.info(
                    "upstream subscriptions: %s (%d requests)",
                    ", ".join(
                        f"{mode} {n}" for mode, n in count_modes(target.values()).items() if n
                    ),
                    len(requests),
                )
            self._set_subscribed(target)

    @staticmethod
    async def _send(ws: ClientConnection, requests: list[Request]) -> bool:
        """Send `requests` in order (call under the send lock); False if the connection closed."""
        try:
            for request in requests:
                await ws.send(request.encode())  # bytes: a binary frame, as Upstox wants
        except ConnectionClosed:
            return False
        return True

    def _set_subscribed(self, subscribed: Mapping[str, Mode]) -> None:
        self._subscribed = subscribed
        self._reporter.changed()
