"""auth's Prometheus metrics, on a registry per app so tests can build many apps."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class AuthMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.login_starts = Counter(
            "tickstream_auth_login_starts",
            "Login links handed out (/authorize).",
            registry=self.registry,
        )
        self.logins = Counter(
            "tickstream_auth_logins", "Completed logins (session stored).", registry=self.registry
        )
        self.login_failures = Counter(
            "tickstream_auth_login_failures",
            "Callbacks refused, by reason.",
            ["reason"],
            registry=self.registry,
        )
        self.token_exchanges = Counter(
            "tickstream_auth_token_exchanges",
            "Code-for-token exchanges with Upstox, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self.logouts = Counter("tickstream_auth_logouts", "Logouts.", registry=self.registry)
        self.env_token = Counter(
            "tickstream_auth_env_token",
            "UPSTOX_ACCESS_TOKEN checks at start, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
        self.internal_token_reads = Counter(
            "tickstream_auth_internal_token_reads",
            "Requests for the token itself with X-Internal-Key, by outcome.",
            ["outcome"],
            registry=self.registry,
        )
