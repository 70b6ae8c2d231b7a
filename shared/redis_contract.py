"""The Redis contract: every key and channel name the system uses, and the payload of each.

Nothing else in the code base spells a Redis name. `docs/architecture.md` documents the same
table for people. All names start with `PREFIX`.

Names that one command or transaction touches together share a Redis Cluster hash tag (the part
in braces), so they live in one slot: `{sessions}` (a session, the active pointer and the token
events announced in the same MULTI), `{demand}` (the replicas' demand hashes and their
registry), `{ingestor}` (the lease, status, refusals and market info: the gateway reads status
and market info in one MGET), and each instrument key (its tick channel and last value, so the
ingestor's per-slot script SPUBLISHes and SETs both on one master). A channel carries a tag only
so that redis-py's cluster client accepts its PUBLISH in the same transaction as the keys it
announces; classic pub/sub reaches every node whatever the slot.

| name | kind | written by | payload |
| --- | --- | --- | --- |
| `session:{sessions}:user:<user_id>` | string, TTL to expiry | auth | `StoredSession` JSON |
| `session:{sessions}:active` | string, same TTL | auth | user id whose token the ingestor uses |
| `events:{sessions}:token` | channel | auth, ingestor | `TokenEvent` JSON (never the token) |
| `oauth:state:{state}` | string, short TTL | auth | `OAuthState` JSON |
| `operator:code:{sha256}` | string, TTL = link lifetime | auth | "1": a sign-in code not yet used |
| `operator:session:{sha256}` | string, TTL = session lifetime | auth | `OperatorSession` JSON |
| `demand:{demand}:replica:<replica>` | hash, TTL = lease | gateway | key -> "ltpc,upstox:full" |
| `demand:{demand}:replicas` | sorted set | gateway | replica id, score lease expiry (ms) |
| `events:{demand}:demand` | channel | gateway | replica id whose demand changed |
| `tick:<mode>:{<key>}` | channel (sharded in a cluster) | ingestor | tick payload (`encode_tick`) |
| `last:<mode>:{<key>}` | string | ingestor | the last tick payload, for snapshots |
| `entry:<mode>:{<key>}` | channel (sharded in a cluster) | ingestor | entry (`split_entry`) |
| `lastentry:<mode>:{<key>}` | string | ingestor | the last whole `feeds` entry, for snapshots |
| `ingestor:{ingestor}:market_info` | string | ingestor | `market_info` frame JSON (dict form) |
| `events:{ingestor}:market_info` | channel | ingestor | the same JSON, on change |
| `ingestor:{ingestor}:lease` | string, PX lease | ingestor | id of the active instance |
| `ingestor:{ingestor}:status` | string, TTL | ingestor | `IngestorStatus` JSON |
| `ingestor:{ingestor}:refused` | hash | ingestor | key -> "modes: reason" (a refusal) |
| `events:{ingestor}:ingestor` | channel | ingestor | `IngestorStatus` JSON, on change |
| `ingestor:{ingestor}:record` | stream, MAXLEN ~ | ingestor | raw frames (`RECORD_FIELDS`) |
| `recorder:{ingestor}:status` | string, TTL | recorder | `RecorderStatus` JSON |
| `upstox:code:{sha256}` | string, short TTL | gateway | `FeedGrant` JSON: whom a feed URL admits |
| `history:cache:{key}:{unit}:{interval}:{span}` | string, TTL | gateway | candle rows or error |
| `history:lock:{key}:{unit}:{interval}:{span}` | string, PX | gateway | id of the replica asking |
"""

from __future__ import annotations

from typing import Final, Literal, NamedTuple

from pydantic import BaseModel

from shared.instruments import Mode
from shared.resp import as_text

PREFIX: Final = "tickstream"

# auth
ACTIVE_SESSION: Final = f"{PREFIX}:session:{{sessions}}:active"
TOKEN_EVENTS: Final = f"{PREFIX}:events:{{sessions}}:token"

# gateways' demand
DEMAND_REGISTRY: Final = f"{PREFIX}:demand:{{demand}}:replicas"
DEMAND_EVENTS: Final = f"{PREFIX}:events:{{demand}}:demand"

# ingestor output
TICK_CHANNEL_PREFIX: Final = f"{PREFIX}:tick:"
LAST_VALUE_PREFIX: Final = f"{PREFIX}:last:"
# The same values as Upstox's protobuf: one `FeedResponse.feeds` map entry (`shared.feed_frames`)
ENTRY_CHANNEL_PREFIX: Final = f"{PREFIX}:entry:"
LAST_ENTRY_PREFIX: Final = f"{PREFIX}:lastentry:"
MARKET_INFO: Final = f"{PREFIX}:ingestor:{{ingestor}}:market_info"
MARKET_INFO_EVENTS: Final = f"{PREFIX}:events:{{ingestor}}:market_info"

# ingestor coordination
INGESTOR_LEASE: Final = f"{PREFIX}:ingestor:{{ingestor}}:lease"
INGESTOR_STATUS: Final = f"{PREFIX}:ingestor:{{ingestor}}:status"
# The feed as the active ingestor received it, for the recorder (`shared.recording`). In the
# lease's slot, so that the script appending to it is fenced by the lease on a cluster too.
RECORD_STREAM: Final = f"{PREFIX}:ingestor:{{ingestor}}:record"
RECORD_GROUP: Final = "recorder"  # the recorder's consumer group
# A record stream entry's fields: the frame's bytes, when it was received (epoch ms), the
# receiving instance, and that instance's frame counter (consecutive: a jump is a gap).
RECORD_FIELDS: Final = (b"f", b"t", b"i", b"n")
RECORDER_STATUS: Final = f"{PREFIX}:recorder:{{ingestor}}:status"
INGESTOR_REFUSED: Final = f"{PREFIX}:ingestor:{{ingestor}}:refused"
INGESTOR_EVENTS: Final = f"{PREFIX}:events:{{ingestor}}:ingestor"


def session_key(user_id: str) -> str:
    # Users live under `user:` so no user id (not even `active`) names the pointer. Sessions
    # stored under a former name (`session:{user_id}`, `session:user:{user_id}` before the
    # hash tag) are not read: auth's durable copy puts the login back under the new name, else
    # the user logs in again (a token dies at 03:30 IST anyway, and the old key's TTL with it).
    return f"{PREFIX}:session:{{sessions}}:user:{user_id}"


def oauth_state_key(state: str) -> str:
    return f"{PREFIX}:oauth:state:{state}"


# The operator's one-time sign-in codes and session cookies are kept only as the sha256 of
# their value (hex), so a copy of Redis holds nothing that signs anyone in.
def operator_code_key(code_digest: str) -> str:
    return f"{PREFIX}:operator:code:{code_digest}"


def operator_session_key(session_digest: str) -> str:
    return f"{PREFIX}:operator:session:{session_digest}"


# A one-time Upstox feed URL's code, kept as its sha256 (hex): redeemed once, by any replica.
def upstox_feed_code_key(code_digest: str) -> str:
    return f"{PREFIX}:upstox:code:{code_digest}"


def demand_key(replica_id: str) -> str:
    return f"{PREFIX}:demand:{{demand}}:replica:{replica_id}"


# /api/history's cache, shared by the replicas: one entry per chart part (`span` is
# `intraday:{date}` or `{from}..{to}`), and the single-flight lock of the replica filling it.
def history_cache_key(instrument_key: str, unit: str, interval: int, span: str) -> str:
    return f"{PREFIX}:history:cache:{instrument_key}:{unit}:{interval}:{span}"


def history_lock_key(instrument_key: str, unit: str, interval: int, span: str) -> str:
    return f"{PREFIX}:history:lock:{instrument_key}:{unit}:{interval}:{span}"


# The instrument key is the hash tag (Upstox keys hold no braces), so in a cluster a key's
# channels and last values of every mode are on one master.
def tick_channel(mode: Mode, instrument_key: str) -> str:
    return f"{TICK_CHANNEL_PREFIX}{mode.value}:{{{instrument_key}}}"


def parse_tick_channel(channel: str) -> tuple[Mode, str]:
    """Inverse of `tick_channel`: (mode, instrument key)."""
    mode, _, tagged = channel.removeprefix(TICK_CHANNEL_PREFIX).partition(":")
    return Mode(mode), tagged.removeprefix("{").removesuffix("}")


def last_value_key(mode: Mode, instrument_key: str) -> str:
    return f"{LAST_VALUE_PREFIX}{mode.value}:{{{instrument_key}}}"


def entry_channel(mode: Mode, instrument_key: str) -> str:
    return f"{ENTRY_CHANNEL_PREFIX}{mode.value}:{{{instrument_key}}}"


def last_entry_key(mode: Mode, instrument_key: str) -> str:
    return f"{LAST_ENTRY_PREFIX}{mode.value}:{{{instrument_key}}}"


# ---- demand hash values -------------------------------------------------------------------


# A value lists the modes a key is wanted in: a bare mode ("ltpc,full") as our JSON ticks, a
# mode after `ENTRY_DEMAND` ("upstox:full") as Upstox's protobuf entries, which the ingestor
# produces only where some replica asks for them. A name an ingestor does not know (a newer
# gateway's) is ignored.

ENTRY_DEMAND: Final = "upstox:"


class WireModes(NamedTuple):
    """The modes one key is wanted in, per wire."""

    ticks: frozenset[Mode]  # JSON ticks (`tick:` channels)
    entries: frozenset[Mode]  # protobuf `feeds` entries (`entry:` channels)


def encode_modes(modes: set[Mode]) -> str:
    return ",".join(sorted(mode.value for mode in modes))


def encode_demand(wanted: WireModes) -> str:
    names = [mode.value for mode in wanted.ticks]
    names += [ENTRY_DEMAND + mode.value for mode in wanted.entries]
    return ",".join(sorted(names))


def decode_demand(value: str | bytes) -> WireModes:
    """A demand hash value's modes per wire."""
    names = as_text(value).split(",")
    entries = [name.removeprefix(ENTRY_DEMAND) for name in names if name.startswith(ENTRY_DEMAND)]
    known = {mode.value for mode in Mode}
    return WireModes(
        frozenset(Mode(name) for name in names if name in known),
        frozenset(Mode(name) for name in entries if name in known),
    )


def decode_modes(value: str | bytes) -> set[Mode]:
    """Modes from a demand hash value; unknown names (a newer gateway) are ignored."""
    text = as_text(value)
    known = {mode.value for mode in Mode}
    return {Mode(name) for name in text.split(",") if name in known}


# ---- refusals ----------------------------------------------------------------------------
# A refused key may still be served in a poorer mode (wanted in full and ltpc, full is over its
# limit: it is subscribed in ltpc), so the value names the refused modes before the reason.


def encode_refusal(modes: set[Mode] | frozenset[Mode], reason: str) -> str:
    return f"{encode_modes(set(modes))}: {reason}"


def decode_refusal(value: str | bytes) -> tuple[set[Mode], str]:
    """(refused modes, reason) of an `ingestor:refused` hash value."""
    text = as_text(value)
    modes, _, reason = text.partition(": ")
    return decode_modes(modes), reason


# ---- tick payloads ------------------------------------------------------------------------
# A tick payload is the instrument's value exactly as the renderer wrote it (Upstox's
# `feeds[key]` in MessageToDict form), a newline, and our own metadata as compact JSON:
# `{"seq":N,"epoch":"E","ts":MS}`. Compact JSON never contains a raw newline, so gateways split
# on the first one and splice both halves into client frames without parsing either.
# A partial value (a live tick that left out parts that did not change, as Upstox's may) ends
# its metadata with `,"partial":true}`; it goes out on `tick:` channels only: a last value is
# always whole (the ingestor merges), so gateways take snapshots from there, never from it.

TICK_SEPARATOR: Final = b"\n"
PARTIAL_META_END: Final = b',"partial":true}'
_PARTIAL_MARK: Final = PARTIAL_META_END[:-1]


def encode_tick(value: bytes, seq: int, epoch: str, ts: int, partial: bool = False) -> bytes:
    mark = _PARTIAL_MARK if partial else b""
    return b'%b\n{"seq":%d,"epoch":"%b","ts":%d%b}' % (value, seq, epoch.encode(), ts, mark)


def is_partial(meta: bytes) -> bool:
    """Whether a tick's metadata (`split_tick`'s second half) marks a partial value."""
    return meta.endswith(PARTIAL_META_END)


def whole_meta(meta: bytes) -> bytes:
    """The metadata without the partial mark (of a value merged whole)."""
    return meta[: -len(PARTIAL_META_END)] + b"}" if meta.endswith(PARTIAL_META_END) else meta


def split_tick(payload: bytes) -> tuple[bytes, bytes]:
    """(value JSON, metadata JSON) of a tick payload."""
    value, _, meta = payload.partition(TICK_SEPARATOR)
    return value, meta


# ---- protobuf entry payloads --------------------------------------------------------------
# An `entry:` payload is one `FeedResponse.feeds` map entry (`shared.feed_frames`), ready to
# splice. A partial one (see tick payloads) is preceded by `PARTIAL_ENTRY`: a zero byte, which
# no entry starts with (a protobuf tag is never 0), so gateways tell them apart by one byte. A
# `lastentry:` value is always whole and never marked.

PARTIAL_ENTRY: Final = b"\x00"


def split_entry(payload: bytes) -> tuple[bytes, bool]:
    """(entry, whether it is partial) of an `entry:` payload."""
    if payload[:1] == PARTIAL_ENTRY:
        return payload[1:], True
    return payload, False


# ---- JSON payload models ------------------------------------------------------------------


class StoredSession(BaseModel):
    """An Upstox login kept by auth. `access_token` is Fernet ciphertext when encryption is on."""

    user_id: str
    user_name: str = ""
    email: str = ""
    access_token: str
    encrypted: bool = False
    issued_at: int  # epoch seconds
    expires_at: int  # epoch seconds: the next 03:30 IST after issue
    valid: bool = True  # false once Upstox rejected the token


# `restored`: auth put a session back that Redis lost (a crash), from its own durable copy.
TokenEventKind = Literal["login", "logout", "invalid", "restored"]


class TokenEvent(BaseModel):
    event: TokenEventKind
    user_id: str


class OAuthState(BaseModel):
    created_at: int
    next_url: str = "/"


class OperatorSession(BaseModel):
    """What auth keeps of a signed-in operator: the CSRF token of that session."""

    csrf_token: str
    created_at: int  # epoch seconds


# `stalled`: connected, but the feed sent nothing while data was due (the stall watchdog is
# resubscribing or reconnecting).
IngestorState = Literal[
    "starting",
    "standby",
    "waiting_token",
    "connecting",
    "connected",
    "stalled",
    "backoff",
    "stopped",
]


class FeedGrant(BaseModel):
    """The viewer a one-time Upstox feed URL admits (`shared.viewer_tokens.Viewer`'s fields)."""

    sub: str
    exp: float | None = None
    exact: list[str] | None = None  # None: every key
    segments: list[str] = []


RecorderState = Literal["starting", "recording", "catching_up", "disk_error", "redis_down"]


class RecorderStatus(BaseModel):
    """What the recorder reports (`RECORDER_STATUS`, its /status, its metrics say the same)."""

    instance: str
    state: RecorderState
    detail: str = ""  # why, for disk_error and redis_down
    frames_recorded: int = 0  # since the recorder started
    last_recorded_id: str | None = None  # the newest frame durably written
    last_received_ms: int | None = None  # when the ingestor received that frame
    lag_frames: int | None = None  # stream entries not yet written (Redis's group lag)
    gaps: int = 0  # gaps found since the recording began (see `/api/recording/gaps`)
    updated_at: float = 0.0


class IngestorStatus(BaseModel):
    instance: str
    state: IngestorState
    epoch: str = ""
    subscribed: dict[str, int] = {}  # mode -> keys subscribed upstream in that mode
    refused: int = 0  # keys refused because a limit was reached
    updated_at: int = 0  # epoch ms
