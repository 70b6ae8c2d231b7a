"""The durable copy as auth's handlers and restore loop use it: one lock, no failure from disk.

`Keeper` wraps `DurableState` (or nothing, when `AUTH_STATE_DIR` is unset) with what every
caller needs: a disk error never fails a login or a logout (it is logged, without the token,
and counted; Redis still has the session), and one `lock` that a login, a logout and a restore
round each hold while they change Redis and the copy together, so a restore decided on an
old view cannot undo a login or a logout that ran in between.

It must not touch Redis itself (the callers do, under the lock) nor decide what to restore
(`recovery`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TypeVar

from services.auth.durable import DurableState
from services.auth.metrics import AuthCounts
from shared.redis_contract import StoredSession

__all__ = ["Keeper"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class Keeper:
    def __init__(self, state: DurableState | None, metrics: AuthCounts) -> None:
        self.state = state
        self.lock = asyncio.Lock()
        self._metrics = metrics

    @property
    def enabled(self) -> bool:
        return self.state is not None

    def session(self) -> StoredSession | None:
        state = self.state
        return None if state is None else self._disk("read the login", state.session, None)

    def logouts(self) -> dict[str, int]:
        state = self.state
        return {} if state is None else self._disk("read the logouts", state.logouts, {})

    def kept(self, session: StoredSession) -> None:
        """A login was stored in Redis: keep its copy (call under `lock`)."""
        if self.state is not None:
            state = self.state
            self._disk("keep the login", lambda: state.keep(session), None)

    def mark_invalid(self, session: StoredSession) -> None:
        if self.state is not None:
            state = self.state
            if self._disk("mark the login invalid", lambda: state.mark_invalid(session), False):
                self._metrics.recovery["copy_marked_invalid"] += 1

    def drop_expired(self) -> None:
        if self.state is not None:
            state = self.state
            if self._disk("drop the expired login", state.forget, False):
                self._metrics.recovery["copy_expired"] += 1

    def logout_begins(self, user_id: str) -> int | None:
        """A logout: the copy goes, and the logout is recorded until Redis has seen it (call
        under `lock`). Returns the record's time, None if nothing could be recorded."""
        state = self.state
        if state is None:
            return None
        at = int(time.time())

        def record() -> int:
            state.add_logout(user_id, at)
            state.forget(user_id)
            return at

        return self._disk("record the logout", record, None)

    def logout_applied(self, user_id: str, at: int) -> None:
        """Redis has seen the logout recorded at `at`."""
        if self.state is not None:
            state = self.state
            self._disk("clear the logout", lambda: state.logout_done(user_id, at), None)

    def _disk(self, what: str, call: Callable[[], T], failed: T) -> T:
        try:
            return call()
        except OSError as error:
            self._metrics.state_errors += 1
            # An OSError names the path and the reason, never the file's content.
            logger.error("cannot %s in AUTH_STATE_DIR: %s", what, error)
            return failed
