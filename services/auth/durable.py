"""auth's durable copy of the login, on disk apart from Redis, so a Redis crash never loses it.

Redis holds the session every service reads, but Redis is also the tick bus and runs without an
append-only file (`bench/persistence.py`: an AOF would log every last-value SET, megabytes a
second, to protect a few hundred bytes written a few times a day). So auth keeps the small
state a crash must not lose in a directory of its own (`AUTH_STATE_DIR`):

- `session.json`: the last login, the same `StoredSession` JSON `shared/sessions.py` writes to
  Redis (the token Fernet-encrypted when `TOKEN_ENCRYPTION_KEY` is set), written at every login,
  marked invalid once Upstox refused its token, removed at logout;
- `logouts.json`: logouts Redis has not seen yet (made while it was down, or interrupted), as
  user id -> when (epoch seconds).

Every write is atomic: a temporary file in the same directory (mode 0600), fsynced, renamed
over the old one, then the directory fsynced; a reader sees the old file or the new one, never
half of one. A file that cannot be parsed is treated as absent, and said so (without its
content). The directory is created with mode 0700.

`DurableState` owns these files and nothing else: it must not touch Redis, nor decide what is
restored or when (`recovery` decides, `restore` acts). Its calls are synchronous: the files are
a few hundred bytes, written on a login or a logout.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Final

from pydantic import ValidationError

from shared.redis_contract import StoredSession

__all__ = ["DurableState", "same_login"]

logger = logging.getLogger(__name__)

SESSION_FILE: Final = "session.json"
LOGOUTS_FILE: Final = "logouts.json"


class DurableState:
    """The stored session and the logouts Redis has not seen, in `directory`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    # ---- the session ---------------------------------------------------------------------

    def session(self) -> StoredSession | None:
        raw = self._read(SESSION_FILE)
        if raw is None:
            return None
        try:
            return StoredSession.model_validate_json(raw)
        except ValidationError:
            logger.warning("ignoring an unreadable %s in AUTH_STATE_DIR", SESSION_FILE)
            return None

    def keep(self, session: StoredSession) -> None:
        """A login: `session` becomes the copy, and a pending logout of its user is void."""
        self._write(SESSION_FILE, session.model_dump_json().encode())
        logouts = self.logouts()
        if session.user_id in logouts:
            del logouts[session.user_id]
            self._write_logouts(logouts)

    def mark_invalid(self, session: StoredSession) -> bool:
        """Upstox refused `session`'s token: mark the copy invalid if it is that same login."""
        copy = self.session()
        if copy is None or not copy.valid or not same_login(copy, session):
            return False
        marked = copy.model_copy(update={"valid": False})
        self._write(SESSION_FILE, marked.model_dump_json().encode())
        return True

    def forget(self, user_id: str | None = None) -> bool:
        """Remove the copy (only if it is `user_id`'s, when given; an unreadable one always);
        whether there was one."""
        copy = self.session()
        if copy is not None and user_id is not None and copy.user_id != user_id:
            return False
        try:
            (self.directory / SESSION_FILE).unlink()
        except FileNotFoundError:
            return False
        self._sync_directory()
        return True

    # ---- logouts Redis has not seen ------------------------------------------------------

    def logouts(self) -> dict[str, int]:
        raw = self._read(LOGOUTS_FILE)
        if raw is None:
            return {}
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, int) for k, v in data.items()
        ):
            logger.warning("ignoring an unreadable %s in AUTH_STATE_DIR", LOGOUTS_FILE)
            return {}
        return data

    def add_logout(self, user_id: str, at: int) -> None:
        logouts = self.logouts()
        logouts[user_id] = at
        self._write_logouts(logouts)

    def logout_done(self, user_id: str, at: int) -> None:
        """Redis has seen the logout recorded at `at` (a later one for the user is kept)."""
        logouts = self.logouts()
        if logouts.get(user_id) == at:
            del logouts[user_id]
            self._write_logouts(logouts)

    # ---- files ---------------------------------------------------------------------------

    def _write_logouts(self, logouts: dict[str, int]) -> None:
        if logouts:
            self._write(LOGOUTS_FILE, json.dumps(logouts, sort_keys=True).encode())
            return
        with contextlib.suppress(FileNotFoundError):
            (self.directory / LOGOUTS_FILE).unlink()
        self._sync_directory()

    def _read(self, name: str) -> bytes | None:
        try:
            return (self.directory / name).read_bytes()
        except FileNotFoundError:
            return None

    def _write(self, name: str, data: bytes) -> None:
        # mkstemp creates the file with mode 0600: the token is never readable by others.
        fd, temporary = tempfile.mkstemp(dir=self.directory, prefix=f".{name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.directory / name)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
            raise
        self._sync_directory()

    def _sync_directory(self) -> None:
        # The rename (or removal) itself is durable only once the directory is flushed.
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def same_login(a: StoredSession, b: StoredSession) -> bool:
    """Whether two stored sessions are the same login (user, issue time and stored token)."""
    return (a.user_id, a.issued_at, a.access_token) == (b.user_id, b.issued_at, b.access_token)
