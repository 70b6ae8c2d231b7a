"""auth's Prometheus metrics, read from plain counts at scrape time.

The handlers bump `AuthCounts` (ints and `Counter`s, nothing from prometheus_client);
`AuthCollector` turns them into metric families through `shared.metrics`. Each app has a registry
of its own, so tests can build many apps in one process. The label values a handler may count
are the Literals here: the collector shows each of them from the start, zeros included.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal, get_args

from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from shared.metrics import counter, labelled_counter

__all__ = [
    "AuthCollector",
    "AuthCounts",
    "EnvTokenOutcome",
    "LoginFailure",
    "LoginStartRefusal",
    "OperatorSignIn",
    "RecoveryEvent",
    "TokenExchange",
    "TokenRead",
]

PREFIX = "tickstream_auth_"

LoginFailure = Literal[
    "missing_state",
    "unknown_state",
    "upstox_denied",
    "missing_code",
    "upstox_refused",
    "upstox_unavailable",
    "token_refused",
]
# `rate`: over AUTH_AUTHORIZE_PER_MINUTE for its address; `bad_next`: not a short same-site path.
LoginStartRefusal = Literal["rate", "bad_next"]
TokenExchange = Literal["ok", "refused", "error"]
EnvTokenOutcome = Literal["stored", "unchanged", "refused"]
TokenRead = Literal["granted", "denied"]
# `rate`: over AUTH_OPERATOR_LOGINS_PER_MINUTE for its address; `refused`: wrong password or code.
OperatorSignIn = Literal["ok", "refused", "rate"]
# What the restore loop and a logout without Redis did with the durable copy (`restore.py`).
RecoveryEvent = Literal[
    "restored",
    "env_token_stored",
    "logout_deferred",
    "logout_applied",
    "copy_marked_invalid",
    "copy_expired",
]


@dataclass
class AuthCounts:
    login_starts: int = 0
    login_starts_refused: Counter[str] = field(default_factory=Counter)
    logins: int = 0
    logouts: int = 0
    login_failures: Counter[str] = field(default_factory=Counter)
    token_exchanges: Counter[str] = field(default_factory=Counter)
    env_token: Counter[str] = field(default_factory=Counter)
    internal_token_reads: Counter[str] = field(default_factory=Counter)
    recovery: Counter[str] = field(default_factory=Counter)
    operator_sign_ins: Counter[str] = field(default_factory=Counter)
    state_errors: int = 0  # AUTH_STATE_DIR could not be read or written


class AuthCollector(Collector):
    def __init__(self, counts: AuthCounts) -> None:
        self._counts = counts

    def collect(self) -> Iterator[Metric]:
        counts = self._counts
        yield counter(
            PREFIX + "login_starts", "Login links handed out (/authorize).", counts.login_starts
        )
        yield labelled_counter(
            PREFIX + "login_starts_refused",
            "Login starts (/authorize) refused before anything was stored, by reason.",
            "reason",
            counts.login_starts_refused,
            get_args(LoginStartRefusal),
        )
        yield counter(PREFIX + "logins", "Completed logins (session stored).", counts.logins)
        yield labelled_counter(
            PREFIX + "login_failures",
            "Callbacks refused, by reason.",
            "reason",
            counts.login_failures,
            get_args(LoginFailure),
        )
        yield labelled_counter(
            PREFIX + "token_exchanges",
            "Code-for-token exchanges with Upstox, by outcome.",
            "outcome",
            counts.token_exchanges,
            get_args(TokenExchange),
        )
        yield counter(PREFIX + "logouts", "Logouts.", counts.logouts)
        yield labelled_counter(
            PREFIX + "env_token",
            "UPSTOX_ACCESS_TOKEN checks at start, by outcome.",
            "outcome",
            counts.env_token,
            get_args(EnvTokenOutcome),
        )
        yield labelled_counter(
            PREFIX + "internal_token_reads",
            "Requests for the token itself with X-Internal-Key, by outcome.",
            "outcome",
            counts.internal_token_reads,
            get_args(TokenRead),
        )
        yield labelled_counter(
            PREFIX + "recovery",
            "What auth did to bring Redis in line with its durable copy of the login, by event.",
            "event",
            counts.recovery,
            get_args(RecoveryEvent),
        )
        yield labelled_counter(
            PREFIX + "operator_sign_ins",
            "Operator sign-in attempts (password or one-time link), by outcome.",
            "outcome",
            counts.operator_sign_ins,
            get_args(OperatorSignIn),
        )
        yield counter(
            PREFIX + "state_errors",
            "Failures to read or write the durable copy (AUTH_STATE_DIR).",
            counts.state_errors,
        )
