"""tickstream-client: a Python client for tickstream's `/ws` feed.

```python
async with connect("ws://localhost:8080/ws", token=TOKEN) as feed:
    await feed.subscribe(["NSE_INDEX|Nifty 50"], "full")
    async for update in feed:
        print(update.key, update.ltp, update.change_percent)
```
"""

from tickstream_client._errors import (
    BadKeys,
    ConnectionRefused,
    FeedClosed,
    ForbiddenKeys,
    KeysRefused,
    OverCapacity,
    RefusedByUpstream,
    RequestRefused,
    TickstreamError,
    TokenExpired,
    Unauthorized,
    UnknownKeys,
)
from tickstream_client._feed import MODES, Event, Feed, connect
from tickstream_client._policy import SequenceTracker, Verdict, backoff_delay
from tickstream_client._update import Depth, Greeks, Level, Update, merge_value

__all__ = [
    "MODES",
    "BadKeys",
    "ConnectionRefused",
    "Depth",
    "Event",
    "Feed",
    "FeedClosed",
    "ForbiddenKeys",
    "Greeks",
    "KeysRefused",
    "Level",
    "OverCapacity",
    "RefusedByUpstream",
    "RequestRefused",
    "SequenceTracker",
    "TickstreamError",
    "TokenExpired",
    "Unauthorized",
    "UnknownKeys",
    "Update",
    "Verdict",
    "backoff_delay",
    "connect",
    "merge_value",
]
