"""The rules of the client commands as pure functions: a request and the fan-out in, a `Decision`
out.

Owns what a request comes to: only keys in the instrument catalogue are subscribed (the
others get `unknown_key`, and never reach the demand; no catalogue loaded: nothing is
subscribed, `instruments_unavailable`), the per-client key limit, the cap on distinct keys in
the replica's demand (`capacity` for the keys not taken), requests with some malformed or
unknown keys (an error for those, then the ack for the rest), unsubscribing keys not held, a
snapshot of every held key, and how a refusal by the ingestor is reported. An Upstox-protocol
request (`upstox_request`) follows Upstox's rules instead: no acknowledgement and no error,
keys past its per-mode limits, unknown keys, keys the viewer may not see and keys over the
replica's cap silently get no data. Subscribe and
unsubscribe change the `FanOut` (joining and leaving channels); nothing here sends, touches
Redis or counts: the hub applies the decision, in the order `Decision` documents.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Final

from services.gateway.fanout import Channel, FanOut, Subscriber
from services.gateway.protocol import (
    ErrorCode,
    ProtocolError,
    RequestId,
    Snapshot,
    Subscribe,
    Unsubscribe,
    ack_frame,
    bad_key_error,
)
from shared.feed_protocol import FeedRequest, Subscriptions
from shared.instruments import Mode

__all__ = [
    "NOTHING",
    "Decision",
    "Refusals",
    "is_refused",
    "refusals",
    "snapshot",
    "subscribe",
    "unsubscribe",
    "upstox_request",
]

Refusals = Mapping[str, tuple[set[Mode], str]]
"""Keys the ingestor will not stream: key -> (refused modes, reason)."""


@dataclass(frozen=True, slots=True)
class Decision:
    """What one request comes to, carried out in this order: leave `closed` and open `opened`
    (pub/sub and demand), send `frames` (error frames first, then the ack), then send the
    snapshot of `snapshot`: an `initial_feed` even when it is empty; None sends none."""

    frames: tuple[bytes, ...] = ()
    errors: tuple[ErrorCode, ...] = ()  # the codes of the error frames among `frames`
    opened: tuple[Channel, ...] = ()
    closed: tuple[Channel, ...] = ()
    snapshot: tuple[Channel, ...] | None = None


NOTHING: Final = Decision()
SHOWN_KEYS: Final = 5  # unknown keys named in the error's message (its `keys` lists them all)
UNAVAILABLE: Final = "the instrument list is not loaded, so no key can be checked; retry shortly"


def subscribe(
    fanout: FanOut,
    sub: Subscriber,
    command: Subscribe,
    max_keys: int,
    *,
    known: Container[str] | None,
    max_demand_keys: int,
) -> Decision:
    """Join the good keys in the command's mode (a key held in another mode switches), unless
    that would take the client over `max_keys`: then the whole request is refused. A key
    subscribed again, or switching mode, is not a new key. Good keys are well-formed and in
    `known` (the catalogue; None: not loaded, so none is). Keys new to this replica's demand
    are taken in order while it holds fewer than `max_demand_keys` distinct keys."""
    errors = _bad_keys(command)
    keys, rid = command.keys, command.request_id
    if keys and known is None:
        errors.append(
            ProtocolError("instruments_unavailable", UNAVAILABLE, request_id=rid, keys=keys)
        )
        return _decision(errors)
    unknown = [key for key in keys if known is not None and key not in known]
    if unknown:
        errors.append(_unknown_keys(unknown, command.request_id))
        keys = tuple(key for key in keys if known is not None and key in known)
    if not keys:
        return _decision(errors)
    new = sum(1 for key in keys if key not in sub.subs)
    if len(sub.subs) + new > max_keys:
        message = (
            f"a client may hold at most {max_keys} keys; it holds {len(sub.subs)} and "
            f"this request adds {new}"
        )
        errors.append(
            ProtocolError("too_many_keys", message, request_id=command.request_id, keys=keys)
        )
        return _decision(errors)
    keys, over = _within_capacity(fanout, keys, max_demand_keys)
    if over:
        message = f"this server streams at most {max_demand_keys} instruments: these were not taken"
        errors.append(ProtocolError("capacity", message, request_id=rid, keys=over))
    if not keys:
        return _decision(errors)
    channels: list[Channel] = []
    opened: list[Channel] = []
    closed: list[Channel] = []
    for key in keys:
        join = fanout.join(sub, command.mode, key)
        channels.append(join.channel)
        if join.opened:
            opened.append(join.channel)
        if join.closed is not None:
            closed.append(join.closed)
    ack = ack_frame("subscribe", command.request_id, keys, command.mode)
    return _decision(errors, ack, opened=opened, closed=closed, snapshot=channels)


def upstox_request(
    fanout: FanOut,
    sub: Subscriber,
    subscriptions: Subscriptions,
    request: FeedRequest,
    *,
    known: Container[str] | None,
    allowed: Callable[[str], bool] | None,
    max_demand_keys: int,
) -> Decision:
    """Apply an Upstox `sub`/`unsub`/`change_mode` to the client's `subscriptions` (Upstox's
    per-mode limits) and move it onto the channels of its keys within them. Keys not in
    `known` (the catalogue; None: not loaded), not `allowed` (the viewer's keys; None: any)
    or new to the replica's demand past `max_demand_keys` are left out of the request, as
    Upstox leaves keys it will not serve: silently. Every channel joined gets a snapshot, and so
    does every key a `sub` names (Upstox answers each `sub` with its keys' `initial_feed`)."""
    keys = tuple(
        key
        for key in request.keys
        if known is not None and key in known and (allowed is None or allowed(key))
    )
    if request.method == "sub":
        keys = _within_capacity(fanout, keys, max_demand_keys)[0]
    if not keys:
        return NOTHING
    before = dict(subscriptions.active)
    named = subscriptions.apply(replace(request, keys=keys))
    after = subscriptions.active
    joined: list[Channel] = []
    opened: list[Channel] = []
    closed: list[Channel] = []
    for key in before:
        if key not in after:
            channel = fanout.part(sub, key)[1]
            if channel is not None:
                closed.append(channel)
    for key, mode in after.items():
        if before.get(key) is not mode:
            join = fanout.join(sub, mode, key)
            joined.append(join.channel)
            if join.opened:
                opened.append(join.channel)
            if join.closed is not None:
                closed.append(join.closed)
    snapshot = dict.fromkeys([*joined, *(sub.subs[key] for key in named if key in sub.subs)])
    return Decision(
        opened=tuple(opened), closed=tuple(closed), snapshot=tuple(snapshot) if snapshot else None
    )


def unsubscribe(fanout: FanOut, sub: Subscriber, command: Unsubscribe) -> Decision:
    """Leave the keys held; keys not held get a `not_subscribed` error. The ack names the keys
    left, and is sent unless every key named was one not held."""
    errors = _bad_keys(command)
    removed: list[str] = []
    missing: list[str] = []
    closed: list[Channel] = []
    for key in command.keys:
        held, channel = fanout.part(sub, key)
        (removed if held else missing).append(key)
        if channel is not None:
            closed.append(channel)
    if missing:
        errors.append(_not_subscribed(missing, command.request_id))
    ack = ack_frame("unsubscribe", command.request_id, removed) if removed or not missing else None
    return _decision(errors, ack, closed=closed)


def snapshot(sub: Subscriber, command: Snapshot, known: Container[str] | None) -> Decision:
    """A fresh snapshot of the keys named (no keys: every key held, possibly none); keys not
    held get `unknown_key` when they are not in `known` (the catalogue, when loaded), else
    `not_subscribed`. A key held is served whether or not the catalogue still lists it."""
    errors = _bad_keys(command)
    keys = list(sub.subs) if command.keys is None else list(command.keys)
    held = [key for key in keys if key in sub.subs]
    missing = [key for key in keys if key not in sub.subs]
    unknown = [key for key in missing if known is not None and key not in known]
    if unknown:
        errors.append(_unknown_keys(unknown, command.request_id))
        missing = [key for key in missing if known is not None and key in known]
    if missing:
        errors.append(_not_subscribed(missing, command.request_id))
    if not held and command.keys is not None:
        return _decision(errors)
    ack = ack_frame("snapshot", command.request_id, held)
    return _decision(errors, ack, snapshot=[sub.subs[key] for key in held])


def is_refused(channel: Channel, refused: Refusals) -> bool:
    """Whether the ingestor refuses `channel`'s key in its mode (no value will come)."""
    entry = refused.get(channel.key)
    return entry is not None and channel.mode in entry[0]


def refusals(channels: Iterable[Channel], refused: Refusals, request_id: RequestId) -> Decision:
    """One `refused_by_upstream` error naming the channels whose key the ingestor refuses in
    their mode, with its reasons; NOTHING when it refuses none of them."""
    keys = [channel.key for channel in channels if is_refused(channel, refused)]
    if not keys:
        return NOTHING
    reasons = sorted({refused[key][1] for key in keys})
    detail = "; ".join(reason for reason in reasons if reason) or "over Upstox's limits"
    message = f"Upstox will not stream these keys in this mode ({detail})"
    return _decision(
        [ProtocolError("refused_by_upstream", message, request_id=request_id, keys=keys)]
    )


def _bad_keys(command: Subscribe | Unsubscribe | Snapshot) -> list[ProtocolError]:
    """The error for the malformed keys of a request that goes ahead for the others."""
    if not command.bad_keys:
        return []
    return [bad_key_error(command.bad_keys, command.request_id)]


def _within_capacity(
    fanout: FanOut, keys: Sequence[str], max_demand_keys: int
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(keys taken, keys over the cap): keys already in the replica's demand cost nothing."""
    room = max_demand_keys - len(fanout.demand)
    taken: list[str] = []
    over: list[str] = []
    for key in keys:
        if key in fanout.demand:
            taken.append(key)
        elif room > 0:
            room -= 1
            taken.append(key)
        else:
            over.append(key)
    return tuple(taken), tuple(over)


def _unknown_keys(keys: Sequence[str], request_id: RequestId) -> ProtocolError:
    shown = ", ".join(keys[:SHOWN_KEYS]) + (
        f" and {len(keys) - SHOWN_KEYS} more" if len(keys) > SHOWN_KEYS else ""
    )
    return ProtocolError(
        "unknown_key",
        f"no such instrument: {shown} (keys come from /api/instruments)",
        request_id=request_id,
        keys=keys,
    )


def _not_subscribed(keys: Sequence[str], request_id: RequestId) -> ProtocolError:
    return ProtocolError(
        "not_subscribed", "not subscribed to these keys", request_id=request_id, keys=keys
    )


def _decision(
    errors: Sequence[ProtocolError],
    ack: bytes | None = None,
    *,
    opened: Sequence[Channel] = (),
    closed: Sequence[Channel] = (),
    snapshot: Sequence[Channel] | None = None,
) -> Decision:
    frames = [error.frame() for error in errors]
    if ack is not None:
        frames.append(ack)
    return Decision(
        frames=tuple(frames),
        errors=tuple(error.code for error in errors),
        opened=tuple(opened),
        closed=tuple(closed),
        snapshot=None if snapshot is None else tuple(snapshot),
    )
