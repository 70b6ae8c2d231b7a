"""What `tickstream dev` runs: every service, its port, its environment, its start-up stage.

Pure: `plan()` turns options, ports and per-run secrets into `ServiceSpec`s, and
`TopologyAddresses` says where each planned service is reached; nothing here starts a process.
The topology is compose's: Redis, the simulator (the upstream), auth, two ingestors (one active,
one standby), the recorder, N gateways and one front port.

Environment precedence, lowest first: `DEMO_SETTINGS` (the demo's tunables, the same values
compose's `x-` block carries), the caller's environment (so `LOG_LEVEL=DEBUG tickstream dev`
works), the wiring (ports, URLs and per-run keys that make the services find each other), and
last the explicit overrides a test passes.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from services.auth.settings import DEMO_CLIENT_ID, DEMO_CLIENT_SECRET
from services.front.routes import HEALTH_PATH as FRONT_HEALTH_PATH
from shared.hosts import LOOPBACK_HOSTS
from shared.settings import comma_list

# Default ports (README): the front is the one a user opens.
FRONT_PORT: Final = 8080

# The demo's tunables, shared with compose. Anything not here takes the service's own default.
DEMO_SETTINGS: Final[Mapping[str, str]] = {
    "LOG_LEVEL": "INFO",
    "LOG_FORMAT": "text",
    "SIMULATOR_MARKET_CLOCK": "open",
    "SIMULATOR_TICK_INTERVAL_MS": "500",
    # Not compose's: on one machine there is no other replica to spread reconnects over, and a
    # gateway still draining clients connected to it directly when the stop's 10 s are up would
    # be killed (the default drain is 10 s).
    "GATEWAY_DRAIN_SECONDS": "2",
}

REDIS = "redis"
# Where a redis-server spec carries its password (a planned value, not its process environment).
REDIS_PASSWORD = "REDIS_PASSWORD"
SIMULATOR = "simulator"
AUTH = "auth"
RECORDER = "recorder"
FRONT = "front"


def ingestor_name(index: int) -> str:
    return f"ingestor-{index}"


def gateway_name(index: int) -> str:
    return f"gateway-{index}"


@dataclass(frozen=True)
class Options:
    host: str = "127.0.0.1"
    port: int = FRONT_PORT
    gateways: int = 1
    ingestors: int = 2
    redis_url: str | None = None  # an existing Redis; None starts a private redis-server
    public_url: str | None = None  # the front as the browser reaches it; default from host:port

    def __post_init__(self) -> None:
        if self.gateways < 1:
            raise ValueError("at least one gateway is needed")
        if self.ingestors < 1:
            raise ValueError("at least one ingestor is needed")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port {self.port} is out of range")

    @property
    def front_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host
        return f"http://{host}:{self.port}"


@dataclass(frozen=True)
class Secrets:
    """Per-run keys: random each time, never written anywhere but the children's environment."""

    internal_service_key: str
    token_encryption_key: str
    simulator_admin_key: str
    demo_token: str
    redis_password: str  # the private redis-server's; unused with an existing Redis

    @classmethod
    def generate(cls) -> Secrets:
        return cls(
            internal_service_key=secrets.token_urlsafe(24),
            token_encryption_key=base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
            simulator_admin_key=secrets.token_urlsafe(24),
            demo_token="demo-" + secrets.token_urlsafe(24),
            redis_password=secrets.token_urlsafe(24),
        )


@dataclass(frozen=True)
class ServiceSpec:
    """One process. `command` is a `tickstream` subcommand, or `redis-server`."""

    name: str
    command: str
    port: int
    stage: int  # started in stage order; a stage's services start together
    env: Mapping[str, str] = field(default_factory=dict)
    args: tuple[str, ...] = ()
    ready_path: str | None = "/readyz"  # None: a Redis PING

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass(frozen=True)
class Topology:
    options: Options
    services: tuple[ServiceSpec, ...]
    redis_url: str
    secrets: Secrets

    def spec(self, name: str) -> ServiceSpec:
        for spec in self.services:
            if spec.name == name:
                return spec
        names = ", ".join(s.name for s in self.services)
        raise KeyError(f"no service {name!r} (services: {names})")

    def names(self, prefix: str = "") -> list[str]:
        return [s.name for s in self.services if s.name.startswith(prefix)]

    @property
    def front_url(self) -> str:
        return self.options.front_url

    @property
    def gateway_urls(self) -> list[str]:
        return [s.url for s in self.services if s.command == "gateway"]


class TopologyAddresses:
    """Names, URLs and per-run keys of a planned topology, for whatever runs it to expose."""

    topology: Topology

    @property
    def names(self) -> list[str]:
        return [spec.name for spec in self.topology.services]

    @property
    def front_url(self) -> str:
        return self.topology.front_url

    @property
    def gateway_urls(self) -> list[str]:
        return self.topology.gateway_urls

    @property
    def auth_url(self) -> str:
        return self.topology.spec(AUTH).url

    @property
    def simulator_url(self) -> str:
        return self.topology.spec(SIMULATOR).url

    @property
    def recorder_url(self) -> str:
        return self.topology.spec(RECORDER).url

    @property
    def redis_url(self) -> str:
        return self.topology.redis_url

    @property
    def admin_key(self) -> str:
        """The simulator's admin API key (header `X-Admin-Key`)."""
        return self.topology.secrets.simulator_admin_key

    @property
    def demo_token(self) -> str:
        return self.topology.secrets.demo_token

    @property
    def urls(self) -> dict[str, str]:
        """Every service's own base URL (Redis: its redis:// URL), by name."""
        result = {spec.name: spec.url for spec in self.topology.services if spec.name != REDIS}
        result[REDIS] = self.redis_url
        result[FRONT] = self.front_url
        return result


def internal_names(options: Options) -> list[str]:
    """Services that need a free internal port (all but the front)."""
    names = [] if options.redis_url else [REDIS]
    names += [SIMULATOR, AUTH]
    names += [ingestor_name(i + 1) for i in range(options.ingestors)]
    names += [RECORDER]
    names += [gateway_name(i + 1) for i in range(options.gateways)]
    return names


def wiring_env(
    options: Options, redis_url: str, simulator_url: str, secrets_: Secrets
) -> dict[str, str]:
    """What makes the services find each other: the same for every service.

    No origin allowlist for the gateways: the front passes the browser's `Host` on, as compose's
    nginx does, so the gateways' same-origin check accepts the page they served.
    """
    front = options.front_url
    origins = _origins(options)
    return {
        "REDIS_URL": redis_url,
        "UPSTOX_BASE_URL": simulator_url,
        "INTERNAL_SERVICE_KEY": secrets_.internal_service_key,
        "TOKEN_ENCRYPTION_KEY": secrets_.token_encryption_key,
        # the simulated Upstox app, and auth as its client (the browser goes through the front)
        "SIMULATOR_CLIENT_ID": DEMO_CLIENT_ID,
        "SIMULATOR_CLIENT_SECRET": DEMO_CLIENT_SECRET,
        "SIMULATOR_REDIRECT_URIS": ",".join(o + "/exchange-token" for o in origins),
        "SIMULATOR_ADMIN_KEY": secrets_.simulator_admin_key,
        "SIMULATOR_DEMO_TOKEN": secrets_.demo_token,
        "API_KEY": DEMO_CLIENT_ID,
        "API_SECRET": DEMO_CLIENT_SECRET,
        "UPSTOX_REDIRECT_URI": front + "/exchange-token",
        "UPSTOX_DIALOG_BASE_URL": front,
        # the demo shows live data at once: auth stores the simulator's demo token at start
        "UPSTOX_ACCESS_TOKEN": secrets_.demo_token,
        "AUTH_DASHBOARD_URL": "/",
    }


def _origins(options: Options) -> list[str]:
    """The front's origin, and its localhost/127.0.0.1 twin: a browser may use either."""
    front = options.front_url
    origins = [front]
    for a, b in (("://127.0.0.1:", "://localhost:"), ("://localhost:", "://127.0.0.1:")):
        if a in front:
            origins.append(front.replace(a, b))
    return origins


def allowed_hosts(options: Options, given: str | None) -> str:
    """`TICKSTREAM_ALLOWED_HOSTS` of every service: the caller's (default: loopback names), plus
    the front's host (the front passes the browser's Host on to the services) and 127.0.0.1
    (where the services, and this command's readiness checks, reach each other)."""
    hosts: list[str] = comma_list(given) if given else list(LOOPBACK_HOSTS)
    for host in ("127.0.0.1", urlsplit(options.front_url).hostname):
        if host and host not in hosts:
            hosts.append(host)
    return ",".join(hosts)


def plan(
    options: Options,
    ports: Mapping[str, int],
    secrets_: Secrets,
    base_env: Mapping[str, str] | None = None,
    overrides: Mapping[str, str] | None = None,
    workdir: Path | None = None,
) -> Topology:
    """The services to run, in start order. `ports` has one entry per `internal_names()`;
    `workdir`, the run's working directory, holds auth's durable copy of the login and the
    recording (gone with the run, as the rest of the demo's state)."""
    redis_url = options.redis_url or (
        f"redis://:{secrets_.redis_password}@127.0.0.1:{ports[REDIS]}/0"
    )
    simulator_url = f"http://127.0.0.1:{ports[SIMULATOR]}"
    env = {
        **DEMO_SETTINGS,
        **(base_env or {}),
        **wiring_env(options, redis_url, simulator_url, secrets_),
        **(overrides or {}),
    }
    env["TICKSTREAM_ALLOWED_HOSTS"] = allowed_hosts(options, env.get("TICKSTREAM_ALLOWED_HOSTS"))

    def service(name: str, command: str, stage: int, **extra: str) -> ServiceSpec:
        return ServiceSpec(name, command, ports[name], stage, {**env, **extra})

    services: list[ServiceSpec] = []
    if not options.redis_url:
        # Its password goes into its config file (launch), never on its command line.
        redis_env = {REDIS_PASSWORD: secrets_.redis_password}
        services.append(
            ServiceSpec(REDIS, "redis-server", ports[REDIS], 0, redis_env, ready_path=None)
        )
    services.append(service(SIMULATOR, "simulator", 1))
    auth_state = {} if workdir is None else {"AUTH_STATE_DIR": str(workdir / "auth")}
    services.append(service(AUTH, "auth", 2, **{**auth_state, **(overrides or {})}))
    for i in range(options.ingestors):
        name = ingestor_name(i + 1)
        services.append(service(name, "ingestor", 3, INGESTOR_INSTANCE_ID=name))
    # One recorder (its consumer group reads each frame once); with the ingestors, after Redis.
    # It reads the gateways' viewer settings (GATEWAY_VIEWER_ACCESS, GATEWAY_TOKEN_*,
    # GATEWAY_API_KEYS) from the same `env`, so token mode closes the recording's API too.
    recording = {} if workdir is None else {"RECORDER_DIR": str(workdir / "recording")}
    services.append(service(RECORDER, "recorder", 3, **{**recording, **(overrides or {})}))
    gateways = [gateway_name(i + 1) for i in range(options.gateways)]
    for name in gateways:
        services.append(service(name, "gateway", 3, GATEWAY_REPLICA_ID=name))
    front_args = [
        arg for name in gateways for arg in ("--gateway", f"http://127.0.0.1:{ports[name]}")
    ]
    front_args += ["--auth", f"http://127.0.0.1:{ports[AUTH]}", "--simulator", simulator_url]
    front_args += ["--recorder", f"http://127.0.0.1:{ports[RECORDER]}"]
    services.append(
        ServiceSpec(
            FRONT, "front", options.port, 4, env, tuple(front_args), ready_path=FRONT_HEALTH_PATH
        )
    )
    return Topology(options, tuple(services), redis_url, secrets_)
