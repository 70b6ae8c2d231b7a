"""Which token the upstream connects with: the session store's, or the one it already holds.

Pure: `TokenChoice` is told what the session store answered and which token events arrived,
and says which (user, token) to use. The rule it owns: a session that vanished from the store
without a logout (Redis lost its data: a crash, a restart from an old snapshot) does not stop a
running feed. The token the feed connected with, which Upstox still accepts, stays in use while
the store holds nothing at all; a logout or invalid event for its user, Upstox refusing it
(`rejected`), its expiry, or the instance becoming a standby (`forget`) ends that. Anything
the store does hold (another login, an invalid or expired session) wins over the memory.

The token lives only in this object's memory: never logged, never written.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.redis_contract import StoredSession, TokenEventKind

__all__ = ["HeldToken", "TokenChoice"]


@dataclass(frozen=True)
class HeldToken:
    user_id: str
    token: str = field(repr=False)
    expires_at: int  # epoch seconds


class TokenChoice:
    def __init__(self) -> None:
        self._held: HeldToken | None = None

    @property
    def held_user(self) -> str | None:
        return None if self._held is None else self._held.user_id

    def choose(
        self,
        stored: StoredSession | None,
        token: str | None,
        now: float,
        rejected: str | None = None,
    ) -> tuple[tuple[str, str] | None, bool]:
        """((user, token) to connect with or None, whether it is the held one) given the store's
        active session `stored`, its plaintext `token` (None: unreadable) and the token Upstox
        last refused."""
        held = self._held
        if stored is None:
            if held is not None and held.token != rejected and held.expires_at > now:
                return (held.user_id, held.token), True
            return None, False
        if token is None or token == rejected or not stored.valid or stored.expires_at <= now:
            self._held = None  # the store holds something: it wins over the memory
            return None, False
        self._held = HeldToken(stored.user_id, token, stored.expires_at)
        return (stored.user_id, token), False

    def event(self, kind: TokenEventKind, user_id: str) -> None:
        """A token event: a logout or invalid mark of the held user ends the memory."""
        if kind in ("logout", "invalid") and user_id == self.held_user:
            self._held = None

    def forget(self) -> None:
        """Upstox refused the held token, or the instance is no longer the active one."""
        self._held = None
