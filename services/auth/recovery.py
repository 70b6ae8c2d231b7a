"""When Redis and auth's durable copy disagree, what to do: pure decisions, no I/O.

The restore loop (`restore.py`) reads what Redis holds and what the copy holds (`durable.py`),
asks `decide`, and carries the actions out in order. The rules:

1. A logout Redis has not seen (made while it was down) is applied first: the session deleted
   if Redis holds it (a snapshot may), and the logout announced. It is applied again on every
   round until a subscriber heard the announcement (the active ingestor may hold the token in
   memory, and it listens only once it has noticed Redis is back) or the logged-out token has
   expired anyway (`logout_settled`).
2. The copy is put back when Redis has no active session, or an older one than the copy (Redis
   came back from a snapshot taken before the last login), provided the copy is unexpired,
   valid, and its user has no logout pending. A logout removes the copy, so restoring never
   resurrects a session that was logged out.
3. Redis says the copy's login is invalid (Upstox refused the token): the copy is marked so too,
   and is never restored.
4. An expired copy is dropped.
5. Nothing active and nothing to restore: the token given as `UPSTOX_ACCESS_TOKEN` is stored
   again, when the caller allows it (not while the start-up check runs, not once the token was
   refused or its user logged out).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass

from services.auth.durable import same_login
from shared.ist import next_token_expiry
from shared.redis_contract import StoredSession

__all__ = [
    "Action",
    "ApplyLogout",
    "DropCopy",
    "MarkCopyInvalid",
    "Restore",
    "Seen",
    "StoreEnvToken",
    "decide",
    "logout_settled",
]


@dataclass(frozen=True)
class Seen:
    """One look at both sides. `active`: Redis's active session (None: no pointer, or no
    session behind it); `copy`: the durable copy; `logouts`: user id -> when, not yet seen by
    Redis; `now`: epoch seconds."""

    active: StoredSession | None
    copy: StoredSession | None
    logouts: Mapping[str, int]
    now: float


@dataclass(frozen=True)
class ApplyLogout:
    user_id: str
    at: int  # when the logout was made (the pending entry's key)


@dataclass(frozen=True)
class Restore:
    session: StoredSession


@dataclass(frozen=True)
class MarkCopyInvalid:
    session: StoredSession  # Redis's invalid session, the same login as the copy


@dataclass(frozen=True)
class DropCopy:
    pass


@dataclass(frozen=True)
class StoreEnvToken:
    pass


Action = ApplyLogout | Restore | MarkCopyInvalid | DropCopy | StoreEnvToken


def decide(seen: Seen, *, env_token: bool = False) -> list[Action]:
    """The actions that bring Redis in line, in order. `env_token`: whether the configured
    `UPSTOX_ACCESS_TOKEN` may be stored again when nothing else is active."""
    actions: list[Action] = [ApplyLogout(user, at) for user, at in sorted(seen.logouts.items())]
    copy, active = seen.copy, seen.active
    if copy is not None and copy.expires_at <= seen.now:
        actions.append(DropCopy())
        copy = None
    if copy is not None and active is not None and same_login(copy, active):
        if copy.valid and not active.valid:
            actions.append(MarkCopyInvalid(active))
        return actions
    restorable = copy is not None and copy.valid and copy.user_id not in seen.logouts
    if copy is not None and restorable and (active is None or active.issued_at < copy.issued_at):
        actions.append(Restore(copy))
    elif active is None and env_token:
        actions.append(StoreEnvToken())
    return actions


def logout_settled(at: int, listeners: int, now: float) -> bool:
    """Whether a pending logout, just announced to `listeners` subscribers, may be forgotten."""
    expired_at = next_token_expiry(dt.datetime.fromtimestamp(at, dt.UTC)).timestamp()
    return listeners > 0 or now >= expired_at
