"""The exceptions the gateway raises: one base class, and who raises and who catches each.

```
GatewayError
├── ProtocolError   a client request refused, as a whole or for some of its keys (`code`, `keys`)
├── RedisLost       the pub/sub link is unusable: a barrier went unconfirmed, or a user of Redis
│                   reported a failure
└── PubSubClosed    the pub/sub connection itself ended, or Redis refused a pub/sub command
                    (also a ConnectionError, so `shared.redis_link.REDIS_ERRORS` covers it)
```

- `ProtocolError` is defined in `protocol.py`, next to the error codes and the `error` frame it
  becomes (import it from there). `protocol.parse_command` raises it; `commands` builds it for
  requests that are refused in part. The connection and the hub turn it into an `error` frame
  counted by code; it never closes a connection and is never logged.
- `RedisLost` is raised inside the broker only: by a barrier that times out, and by its link
  loop when any user reported a Redis failure (`Broker.failed`). The same loop catches it.
- `PubSubClosed` is raised by `pubsub.PubSubLink`; the broker catches it, with redis-py's own
  errors, and reconnects with backoff.

Nothing Redis-side reaches a client as an exception: clients stay connected and are told in a
`status` frame. redis-py's errors are not wrapped: whoever sees one reports it to the broker.
"""

from __future__ import annotations

__all__ = ["GatewayError", "PubSubClosed", "RedisLost"]


class GatewayError(Exception):
    """Anything the gateway itself raises."""


class RedisLost(GatewayError):
    """The pub/sub connection failed or a barrier could not be confirmed."""


class PubSubClosed(GatewayError, ConnectionError):
    """The pub/sub connection is gone."""
