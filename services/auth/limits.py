"""How often one client address may start a login (`/authorize`) or try to sign in as the
operator: a token bucket per address, in memory, pure (the caller passes the time). It must not
know about requests or Redis.

Each `/authorize` writes an OAuth state to Redis, so an unthrottled client could fill Redis
with them for as long as their TTL; each operator sign-in is a guess at a secret. A bucket
holds `per_minute` attempts and refills at that rate; the table of addresses is bounded (the
least recently seen one is forgotten first), so many addresses cost memory only up to
`max_clients`. Forgetting one hands it a full bucket again: acceptable, since it was idle
longest.
"""

from __future__ import annotations

from shared.token_bucket import BucketTable

__all__ = ["AuthorizeLimit"]


class AuthorizeLimit(BucketTable):
    """Admits or refuses one start per call, per client address (`take` answers 0, or the
    Retry-After in whole seconds)."""
