"""The Kubernetes manifests (deploy/k8s) stay true to the services and to compose.yaml.

There is no cluster here, so this is what can be checked without one: both overlays render with
`kubectl kustomize`; every object validates against the API schemas of a pinned Kubernetes
version (strict: no unknown field); every environment variable and secret file is a setting the
container's service reads; every probe asks a route the service serves, with a Host it answers
to; ports agree from the command line to the Ingress; every pod is non-root, read-only, without
privilege escalation or capabilities; a secret reaches only the services compose gives it to;
the gateway's grace period covers its drain.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml  # type: ignore[import-untyped]
from fastapi import FastAPI
from pydantic_settings import BaseSettings
from starlette.routing import Match

from services.auth.app import create_app as create_auth
from services.auth.settings import AuthSettings
from services.gateway.app import create_app as create_gateway
from services.gateway.settings import GatewaySettings
from services.ingestor.app import create_app as create_ingestor
from services.ingestor.settings import IngestorSettings
from services.recorder.app import create_app as create_recorder
from services.recorder.settings import RecorderSettings
from services.simulator.app import create_app as create_simulator
from services.simulator.settings import SimulatorSettings
from shared.settings import SECRETS_DIR_VARIABLE
from shared.viewer_access import ViewerSettings

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("demo", "production")
# A version kubernetes-validate ships schemas for; the README names it.
KUBERNETES_VERSION = "1.31.0"
# The gateway exits within GATEWAY_DRAIN_SECONDS plus this margin after SIGTERM.
DRAIN_MARGIN_SECONDS = 10  # GATEWAY_CLOSE_TIMEOUT_SECONDS (5) + uvicorn's shutdown (up to 5)

Manifest = dict[str, Any]

SETTINGS: dict[str, type[BaseSettings]] = {
    "auth": AuthSettings,
    "gateway": GatewaySettings,
    "ingestor": IngestorSettings,
    "recorder": RecorderSettings,
    "simulator": SimulatorSettings,
}

pytestmark = pytest.mark.skipif(
    shutil.which("kubectl") is None, reason="kubectl (with kustomize) is not installed"
)


def render(k8s: Path, overlay: str) -> list[Manifest]:
    output = subprocess.run(
        ["kubectl", "kustomize", str(k8s / "overlays" / overlay)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return [document for document in yaml.safe_load_all(output) if document]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Manifest]]:
    """Both overlays, rendered from a copy whose demo secrets make-secrets.sh wrote (so the
    test writes nothing into the tree and checks the script too)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl (make-secrets.sh needs it) is not installed")
    copy = tmp_path_factory.mktemp("k8s") / "k8s"
    shutil.copytree(K8S, copy, ignore=shutil.ignore_patterns("secrets"))
    subprocess.run(
        [str(copy / "overlays" / "demo" / "make-secrets.sh")],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return {overlay: render(copy, overlay) for overlay in OVERLAYS}


def pod_templates(objects: list[Manifest]) -> Iterator[tuple[str, Manifest]]:
    for item in objects:
        if item["kind"] in {"Deployment", "StatefulSet"}:
            yield item["metadata"]["name"], item["spec"]["template"]


def service_of(container: Manifest) -> str | None:
    """The tickstream service a container runs (`tickstream <service> ...`), else None."""
    args = container.get("args") or container.get("command") or []
    return args[1] if len(args) > 1 and args[0] == "tickstream" else None


def tickstream_containers(objects: list[Manifest]) -> Iterator[tuple[str, Manifest, Manifest]]:
    """(service, pod spec, container) for every container running a tickstream service."""
    for _, template in pod_templates(objects):
        for container in template["spec"]["containers"]:
            service = service_of(container)
            if service is not None:
                yield service, template["spec"], container


def find(objects: list[Manifest], kind: str, name: str) -> Manifest:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind} {name}: {len(matches)} objects"
    return matches[0]


def environment(objects: list[Manifest], container: Manifest) -> dict[str, str | None]:
    """Every variable the container gets: its env (None: from a field or a secret) and the
    keys of the ConfigMaps it takes whole."""
    values: dict[str, str | None] = {}
    for source in container.get("envFrom", []):
        assert "configMapRef" in source, f"envFrom takes ConfigMaps only, not {source}"
        values.update(find(objects, "ConfigMap", source["configMapRef"]["name"])["data"])
    for variable in container.get("env", []):
        values[variable["name"]] = variable.get("value")
    return values


def secret_files(pod: Manifest, container: Manifest) -> set[tuple[str, str]]:
    """(Secret, key) of every secret the container can read, by env or by a mounted volume."""
    mounted = {mount["name"] for mount in container.get("volumeMounts", [])}
    found: set[tuple[str, str]] = set()
    for variable in container.get("env", []):
        reference = variable.get("valueFrom", {}).get("secretKeyRef")
        if reference:
            found.add((reference["name"], reference["key"]))
    for volume in pod.get("volumes", []):
        if volume["name"] not in mounted:
            continue
        sources = [{"secret": volume["secret"]}] if "secret" in volume else []
        sources += volume.get("projected", {}).get("sources", [])
        for source in sources:
            secret = source.get("secret")
            if secret is None:
                continue
            name = secret.get("name") or secret.get("secretName")
            assert "items" in secret, f"secret {name} mounted whole: list its keys"
            found |= {(name, item["key"]) for item in secret["items"]}
    return found


def secrets_files_read(pod: Manifest, container: Manifest) -> set[str]:
    """File names in the container's TICKSTREAM_SECRETS_DIR (each one a setting)."""
    directory = next(
        (v.get("value") for v in container.get("env", []) if v["name"] == SECRETS_DIR_VARIABLE),
        None,
    )
    names = {m["name"] for m in container.get("volumeMounts", []) if m["mountPath"] == directory}
    files: set[str] = set()
    for volume in pod.get("volumes", []):
        if volume["name"] in names:
            for source in volume.get("projected", {}).get("sources", []):
                files |= {item["path"] for item in source.get("secret", {}).get("items", [])}
    return files


def settings_read(service: str) -> set[str]:
    return {name.upper() for name in SETTINGS[service].model_fields} | {SECRETS_DIR_VARIABLE}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_matches_the_kubernetes_schema(
    rendered: dict[str, list[Manifest]], overlay: str
) -> None:
    failures = []
    for item in rendered[overlay]:
        try:
            kubernetes_validate.validate(item, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            failures.append(f"{item['kind']} {item['metadata']['name']}: {error.message}")
    assert failures == []


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_variable_is_a_setting_of_its_service(
    rendered: dict[str, list[Manifest]], overlay: str
) -> None:
    objects = rendered[overlay]
    unknown = []
    for service, pod, container in tickstream_containers(objects):
        names = set(environment(objects, container))
        names |= {name.upper() for name in secrets_files_read(pod, container)}
        unknown += [f"{service}: {name}" for name in sorted(names - settings_read(service))]
    assert unknown == [], f"not read by the service they are given to: {unknown}"


def serves(app: FastAPI, path: str) -> bool:
    scope = {"type": "http", "method": "GET", "path": path, "root_path": "", "headers": []}
    return any(route.matches(scope)[0] is Match.FULL for route in app.router.routes)


@pytest.fixture(scope="module")
def apps() -> dict[str, FastAPI]:
    """Each service's app as its command builds it (nothing started: no lifespan runs)."""
    return {
        "auth": create_auth(AuthSettings()),
        "gateway": create_gateway(GatewaySettings()),
        "ingestor": create_ingestor(IngestorSettings()),
        "recorder": create_recorder(RecorderSettings()),
        "simulator": create_simulator(SimulatorSettings()),
    }


def test_the_route_check_sees_a_missing_route(apps: dict[str, FastAPI]) -> None:
    assert serves(apps["gateway"], "/readyz")
    assert not serves(apps["gateway"], "/readyzz")
    assert not serves(apps["simulator"], "/readyz")


def listen_port(container: Manifest) -> int:
    args: list[str] = container["args"]
    return int(args[args.index("--port") + 1])


def container_port(container: Manifest, port: int | str) -> int:
    """A probe's or a Service's port (a number, or a container port's name) as a number."""
    if isinstance(port, int):
        return port
    named = [p["containerPort"] for p in container.get("ports", []) if p.get("name") == port]
    assert named, f"{container['name']} has no port named {port}"
    return int(named[0])


PROBES = ("livenessProbe", "readinessProbe", "startupProbe")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_ask_served_routes_on_the_listening_port(
    rendered: dict[str, list[Manifest]], overlay: str, apps: dict[str, FastAPI]
) -> None:
    objects = rendered[overlay]
    for service, _, container in tickstream_containers(objects):
        port = listen_port(container)
        assert [p["containerPort"] for p in container["ports"]] == [port], service
        allowed = (environment(objects, container)["TICKSTREAM_ALLOWED_HOSTS"] or "").split(",")
        assert {"livenessProbe", "readinessProbe"} <= set(container), service
        for kind in PROBES:
            if kind not in container:
                continue
            probe = container[kind]["httpGet"]
            where = f"{service} {kind} {probe['path']}"
            assert serves(apps[service], probe["path"]), f"{where}: no such route"
            assert container_port(container, probe["port"]) == port, where
            # The Host allowlist answers 421 to any other Host, such as the pod IP kubelet sends.
            hosts = [h["value"] for h in probe.get("httpHeaders", []) if h["name"] == "Host"]
            assert hosts and hosts[0] in allowed, f"{where}: Host {hosts} not allowed"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", service
        readiness = "/readyz" if serves(apps[service], "/readyz") else "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == readiness, service


def selected(objects: list[Manifest], selector: dict[str, str]) -> list[Manifest]:
    """The containers of the pods a Service's selector picks."""
    return [
        container
        for _, template in pod_templates(objects)
        if selector.items() <= template["metadata"]["labels"].items()
        for container in template["spec"]["containers"]
    ]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_services_and_ingresses_reach_the_listening_ports(
    rendered: dict[str, list[Manifest]], overlay: str
) -> None:
    objects = rendered[overlay]
    services = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service"}
    for name, spec in services.items():
        for container in selected(objects, spec["spec"].get("selector") or {"-": "-"}):
            for port in spec["spec"]["ports"]:
                target = port.get("targetPort", port["port"])
                listens = listen_port(container) if service_of(container) else None
                actual = container_port(container, target)
                assert listens in (None, actual), f"Service {name} -> {target}"
    hosts: set[str] = set()
    for ingress in (o for o in objects if o["kind"] == "Ingress"):
        for rule in ingress["spec"]["rules"]:
            hosts.add(rule["host"])
            for path in rule["http"]["paths"]:
                backend = path["backend"]["service"]
                assert backend["name"] in services, f"Ingress backend {backend['name']}"
                ports = services[backend["name"]]["spec"]["ports"]
                assert backend["port"]["name"] in {p["name"] for p in ports}, backend
    assert len(hosts) == 1, f"one host for every route, not {hosts}"
    for service, _, container in tickstream_containers(objects):
        if service in {"auth", "gateway", "recorder", "simulator"}:
            allowed = environment(objects, container)["TICKSTREAM_ALLOWED_HOSTS"] or ""
            assert hosts <= set(allowed.split(",")), f"{service} refuses the Ingress host"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_pod_is_unprivileged_and_read_only(
    rendered: dict[str, list[Manifest]], overlay: str
) -> None:
    for name, template in pod_templates(rendered[overlay]):
        pod = template["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] != 0, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert pod.get("automountServiceAccountToken") is False, name
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context.get("privileged", False) is False, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            assert "add" not in context["capabilities"], name
            assert "/tmp" in {m["mountPath"] for m in container["volumeMounts"]}, name
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]), name
            assert {"cpu", "memory"} <= set(container["resources"]["limits"]), name


# A compose value with a literal default (`${NAME:-value}`) is one compose itself calls no secret
# (the simulator's demo token).
COMPOSE_LITERAL = re.compile(r"^\$\{\w+:?-.+\}$")


def compose_secrets() -> dict[str, set[str]]:
    """Which secret settings compose.yaml gives each service: the files of its `secrets`
    service's volume (services/dev/compose_secrets.py) to the services mounting it, and each
    secret setting (a SecretStr field, or REDIS_URL with its password) in a service's
    environment with no literal default."""
    from services.dev.compose_secrets import FERNET_KEY_FILE, REDIS_URL_FILE

    compose = yaml.safe_load((ROOT / "compose.yaml").read_text(encoding="utf-8"))
    given: dict[str, set[str]] = {service: set() for service in SETTINGS}
    for spec in compose["services"].values():
        service = service_of({"args": spec.get("command", [])})
        if service is None:
            continue
        fields = SETTINGS[service].model_fields
        given[service] |= {
            name.lower()
            for name, value in spec.get("environment", {}).items()
            if name.lower() in fields
            and ("SecretStr" in str(fields[name.lower()].annotation) or name == "REDIS_URL")
            and not COMPOSE_LITERAL.match(str(value or ""))
        }
        volumes = spec.get("volumes", [])
        if any(volume.startswith("service-secrets:") for volume in volumes):
            given[service] |= {REDIS_URL_FILE, FERNET_KEY_FILE}
        if any(volume.startswith("recorder-secrets:") for volume in volumes):
            given[service] |= {REDIS_URL_FILE}
    return given


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_secret_reaches_only_the_services_compose_gives_it_to(
    rendered: dict[str, list[Manifest]], overlay: str
) -> None:
    given = compose_secrets()
    assert given["auth"] >= {"redis_url", "api_secret", "auth_operator_password"}
    assert given["gateway"] >= {"redis_url", "gateway_token_secret"}
    assert given["simulator"] == set()
    assert given["recorder"] >= {"redis_url"}
    secret = set().union(*given.values())
    objects = rendered[overlay]
    for _, template in pod_templates(objects):
        for container in template["spec"]["containers"]:
            service = service_of(container)
            keys = {key for _, key in secret_files(template["spec"], container)}
            if service is None:  # Redis: its own secret, none of the services'
                assert not keys & secret, container["name"]
                continue
            assert keys <= given[service], f"{service} gets {sorted(keys - given[service])}"
            # A secret only from a Secret: never a value in the manifests or a ConfigMap.
            plain = {n.lower() for n, v in environment(objects, container).items() if v}
            assert not plain & secret, f"{service}: {sorted(plain & secret)} in plain text"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_gateway_has_time_to_drain(rendered: dict[str, list[Manifest]], overlay: str) -> None:
    objects = rendered[overlay]
    gateway = find(objects, "Deployment", "gateway")["spec"]["template"]["spec"]
    container = gateway["containers"][0]
    field = GatewaySettings.model_fields.get("gateway_drain_seconds")
    default = field.default if field is not None else 10
    drain = float(environment(objects, container).get("GATEWAY_DRAIN_SECONDS") or default)
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    grace = float(command[1]) + drain + DRAIN_MARGIN_SECONDS
    assert gateway["terminationGracePeriodSeconds"] == grace


def test_production_runs_against_a_redis_cluster_and_real_upstox(
    rendered: dict[str, list[Manifest]],
) -> None:
    objects = rendered["production"]
    assert not [o for o in objects if o["metadata"]["name"].startswith("simulator")]
    for service, _, container in tickstream_containers(objects):
        variables = environment(objects, container)
        assert variables["REDIS_CLUSTER"] == "true", service
        assert variables["UPSTOX_BASE_URL"] == "https://api.upstox.com", service
        if service in {"gateway", "recorder"}:  # the recording answers the same viewers
            assert variables["GATEWAY_VIEWER_ACCESS"] == "token", service
        if service == "gateway":
            assert (variables["GATEWAY_INSTRUMENTS_SOURCE"] or "").startswith("https://")


# Who may watch (shared/viewer_access.py ViewerSettings): the gateway's and the recorder's.
VIEWER_SETTINGS = {name.upper() for name in ViewerSettings.model_fields}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_recorder_asks_viewers_for_what_the_gateway_asks(
    rendered: dict[str, list[Manifest]], overlay: str
) -> None:
    objects = rendered[overlay]
    seen: dict[str, tuple[dict[str, str | None], set[str]]] = {}
    for service, pod, container in tickstream_containers(objects):
        if service in {"gateway", "recorder"}:
            variables = environment(objects, container)
            viewer = {name: value for name, value in variables.items() if name in VIEWER_SETTINGS}
            files = {f.upper() for f in secrets_files_read(pod, container)} & VIEWER_SETTINGS
            seen[service] = (viewer, files)
    gateway, recorder = seen["gateway"], seen["recorder"]
    assert gateway[0] and "GATEWAY_VIEWER_ACCESS" in gateway[0]
    assert "GATEWAY_TOKEN_SECRET" in gateway[1]
    assert recorder == gateway


# The recorder's paths on the edge (services/front/routes.py); the rest of /api is the gateways'.
RECORDER_PREFIXES = ("/api/ticks", "/api/candles", "/api/recording")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_recorder_is_one_writer_on_its_own_volume_behind_the_ingress(
    rendered: dict[str, list[Manifest]], overlay: str
) -> None:
    objects = rendered[overlay]
    deployment = find(objects, "Deployment", "recorder")
    # Never two writers of the recording, not even during a rollout.
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    directory = environment(objects, container)["RECORDER_DIR"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert directory in mounts, f"RECORDER_DIR {directory} is not a mounted volume"
    volume = next(v for v in pod["volumes"] if v["name"] == mounts[directory])
    claim = find(objects, "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    assert deployment["spec"]["template"]["metadata"]["labels"]["tickstream/redis-client"] == "true"
    routed = {
        path["path"]: path["backend"]["service"]["name"]
        for ingress in objects
        if ingress["kind"] == "Ingress"
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    }
    assert {prefix: routed.get(prefix) for prefix in RECORDER_PREFIXES} == dict.fromkeys(
        RECORDER_PREFIXES, "recorder"
    )
    edge = find(objects, "NetworkPolicy", "edge-to-services")
    names = edge["spec"]["podSelector"]["matchExpressions"][0]["values"]
    assert "recorder" in names, "the ingress controller cannot reach the recorder"
