"""Compose's `secrets` service (services/dev/compose_secrets.py) and how the services read what
it writes (TICKSTREAM_SECRETS_DIR): checked with a real redis-server started from its config
file, not against compose itself (that is test_compose_stack's). Runs in the default suite."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from cryptography.fernet import Fernet

from services.dev import compose_secrets
from services.gateway.settings import GatewaySettings
from shared.settings import SECRETS_DIR_VARIABLE, load_settings
from tests.support.redis_server import redis_from_config


@pytest.fixture
def volumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    # settings come from the files alone: no variable of the test's own, no stray .env
    for variable in ("REDIS_URL", "TOKEN_ENCRYPTION_KEY", SECRETS_DIR_VARIABLE):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.chdir(tmp_path)
    redis_dir, services_dir = tmp_path / "redis", tmp_path / "services"
    redis_dir.mkdir()
    services_dir.mkdir()
    return redis_dir, services_dir


def run(redis_dir: Path, services_dir: Path, **env: str) -> dict[str, str]:
    address = "127.0.0.1:6379/0"
    return compose_secrets.provision(redis_dir, services_dir, env, address)


def test_with_nothing_given_it_generates_secrets_redis_and_the_services_agree_on(
    volumes: tuple[Path, Path], tmp_path: Path
) -> None:
    redis_dir, services_dir = volumes
    assert run(redis_dir, services_dir) == {
        "REDIS_PASSWORD": "generated",
        "TOKEN_ENCRYPTION_KEY": "generated",
    }
    modes = {
        p.name: stat.S_IMODE(p.stat().st_mode)
        for p in [*volumes[0].iterdir(), *volumes[1].iterdir()]
    }
    assert modes == {"password": 0o644, "redis.conf": 0o644, "redis_url": 0o600,
                     "token_encryption_key": 0o600}  # fmt: skip
    password = (redis_dir / "password").read_text().strip()
    assert len(password) >= 32

    settings = load_settings(GatewaySettings, _secrets_dir=services_dir)
    Fernet(settings.token_encryption_key.get_secret_value())  # type: ignore[union-attr]
    with redis_from_config(redis_dir / "redis.conf", tmp_path) as port:
        with pytest.raises(redis.AuthenticationError):
            redis.Redis(port=port).ping()
        url = settings.redis_url.replace("127.0.0.1:6379", f"127.0.0.1:{port}")
        assert redis.Redis.from_url(url).ping() is True


def test_a_restart_keeps_them_and_dot_env_overrides_them(volumes: tuple[Path, Path]) -> None:
    redis_dir, services_dir = volumes
    run(redis_dir, services_dir)
    first = {p.name: p.read_text() for p in [*redis_dir.iterdir(), *services_dir.iterdir()]}
    assert run(redis_dir, services_dir) == {
        "REDIS_PASSWORD": "kept",
        "TOKEN_ENCRYPTION_KEY": "kept",
    }
    assert {p.name: p.read_text() for p in [*redis_dir.iterdir(), *services_dir.iterdir()]} == first

    key = Fernet.generate_key().decode()
    origins = run(redis_dir, services_dir, REDIS_PASSWORD="from-dot-env", TOKEN_ENCRYPTION_KEY=key)
    assert origins == {"REDIS_PASSWORD": "environment", "TOKEN_ENCRYPTION_KEY": "environment"}
    assert (redis_dir / "password").read_text() == "from-dot-env\n"
    assert (services_dir / "token_encryption_key").read_text() == key + "\n"


def test_any_password_from_dot_env_works_in_redis_conf_and_the_url(
    volumes: tuple[Path, Path], tmp_path: Path
) -> None:
    redis_dir, services_dir = volumes
    password = 'a b"c\\d@e:f/g%h#'
    run(redis_dir, services_dir, REDIS_PASSWORD=password)
    url = (services_dir / "redis_url").read_text().strip()
    assert password not in url  # %-escaped
    with redis_from_config(redis_dir / "redis.conf", tmp_path) as port:
        assert redis.Redis(port=port, password=password).ping() is True
        assert redis.Redis.from_url(url.replace(":6379", f":{port}")).ping() is True


def test_the_command_logs_where_each_secret_came_from_never_the_value(
    volumes: tuple[Path, Path],
) -> None:
    redis_dir, services_dir = volumes
    done = subprocess.run(
        [sys.executable, "-m", "services.dev.compose_secrets", str(redis_dir), str(services_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "REDIS_PASSWORD": "given-password-value"},
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "REDIS_PASSWORD: environment" in done.stderr
    assert "TOKEN_ENCRYPTION_KEY: generated" in done.stderr
    key = (services_dir / "token_encryption_key").read_text().strip()
    assert "given-password-value" not in done.stderr + done.stdout
    assert key not in done.stderr + done.stdout
    assert (
        (services_dir / "redis_url").read_text().strip()
    ) == "redis://:given-password-value@redis:6379/0"


def test_services_read_secrets_from_the_directory_the_environment_names(
    volumes: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    redis_dir, services_dir = volumes
    run(redis_dir, services_dir)
    url = (services_dir / "redis_url").read_text().strip()

    assert load_settings(GatewaySettings).redis_url != url  # not read unless named
    monkeypatch.setenv(SECRETS_DIR_VARIABLE, str(services_dir))
    settings = load_settings(GatewaySettings)
    assert settings.redis_url == url
    assert settings.token_encryption_key is not None
    # the environment still wins, as for every other setting
    monkeypatch.setenv("REDIS_URL", "redis://elsewhere:6379/0")
    assert load_settings(GatewaySettings).redis_url == "redis://elsewhere:6379/0"


def test_the_recorders_volume_holds_redis_url_alone(
    volumes: tuple[Path, Path], tmp_path: Path
) -> None:
    redis_dir, services_dir = volumes
    recorder_dir = tmp_path / "recorder"
    recorder_dir.mkdir()
    address = "127.0.0.1:6379/0"
    compose_secrets.provision(redis_dir, services_dir, {}, address, recorder_dir)
    assert sorted(p.name for p in recorder_dir.iterdir()) == ["redis_url"]
    assert (recorder_dir / "redis_url").read_text() == (services_dir / "redis_url").read_text()
    assert stat.S_IMODE((recorder_dir / "redis_url").stat().st_mode) == 0o600
