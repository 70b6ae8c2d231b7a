"""Compose's one-shot `secrets` service: the stack's generated secrets, each only where needed.

`docker compose up` with no `.env` must still give Redis a password and encrypt the stored
Upstox token, without a password printed in compose.yaml for anyone to read. So this runs once
before Redis and the services (from the tickstream image, as its user) and writes two volumes:

- Redis's (mounted in Redis only): `password` and `redis.conf` (`requirepass`), both readable
  by any user of that container, because Redis runs under its own image's user;
- the services' (mounted read-only in auth, the ingestors and the gateways, 0600 for the
  tickstream user): `redis_url` (with the password) and `token_encryption_key`, which those
  services read through TICKSTREAM_SECRETS_DIR (shared/settings.py);
- the recorder's (mounted read-only in the recorder): `redis_url` alone, since the recorder never
  reads the stored token. The simulator and nginx get none of them.

Each secret is the value given in the environment (REDIS_PASSWORD, TOKEN_ENCRYPTION_KEY from
`.env`) when set, else the one this service wrote before (a restart keeps Redis's password and
the key that decrypts the stored token), else a new random one. No value is ever logged.

Lives with `tickstream dev`'s code as the other way the whole system is run; `tickstream dev`
itself keeps its per-run secrets in its children's environment, never on disk.
"""

from __future__ import annotations

import argparse
import base64
import logging
import os
import secrets
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final
from urllib.parse import quote

logger = logging.getLogger("tickstream.compose_secrets")

PASSWORD_FILE: Final = "password"
REDIS_CONF_FILE: Final = "redis.conf"
REDIS_URL_FILE: Final = "redis_url"
FERNET_KEY_FILE: Final = "token_encryption_key"

SERVICE_MODE: Final = 0o600
# Redis runs as its image's user, not ours: it must be able to read what this writes.
REDIS_MODE: Final = 0o644


@dataclass(frozen=True)
class Choice:
    value: str
    origin: str  # "environment", "kept" or "generated": for the log, never the value


def choose(given: str | None, kept: str | None, generate: Callable[[], str]) -> Choice:
    """The environment's value when set, else the one kept from before, else a new one."""
    if given:
        return Choice(given, "environment")
    if kept:
        return Choice(kept, "kept")
    return Choice(generate(), "generated")


def new_password() -> str:
    return secrets.token_urlsafe(32)


def new_fernet_key() -> str:
    return base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()


def redis_conf(password: str) -> str:
    """A config file setting Redis's password, quoted as redis.conf reads double quotes."""
    escaped = password.replace("\\", "\\\\").replace('"', '\\"')
    return f'requirepass "{escaped}"\n'


def redis_url(password: str, address: str) -> str:
    """The URL the services connect with; the password %-escaped, as redis-py unquotes it."""
    return f"redis://:{quote(password, safe='')}@{address}"


def files(password: str, fernet_key: str, address: str) -> dict[str, dict[str, tuple[str, int]]]:
    """What each volume holds: {"redis"|"services"|"recorder": {file name: (content, mode)}}."""
    url = (redis_url(password, address) + "\n", SERVICE_MODE)
    return {
        "redis": {
            PASSWORD_FILE: (password + "\n", REDIS_MODE),
            REDIS_CONF_FILE: (redis_conf(password), REDIS_MODE),
        },
        "services": {REDIS_URL_FILE: url, FERNET_KEY_FILE: (fernet_key + "\n", SERVICE_MODE)},
        "recorder": {REDIS_URL_FILE: url},
    }


def read_kept(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except FileNotFoundError:
        return None


def write_atomically(path: Path, content: str, mode: int) -> None:
    """Readers see the old file or the new one, never a half-written secret."""
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def provision(
    redis_dir: Path,
    services_dir: Path,
    environ: Mapping[str, str],
    address: str,
    recorder_dir: Path | None = None,
) -> dict[str, str]:
    """Writes the volumes (the recorder's when given); returns where each secret came from, by
    variable."""
    password = choose(
        environ.get("REDIS_PASSWORD"), read_kept(redis_dir / PASSWORD_FILE), new_password
    )
    key = choose(
        environ.get("TOKEN_ENCRYPTION_KEY"),
        read_kept(services_dir / FERNET_KEY_FILE),
        new_fernet_key,
    )
    directories = {"redis": redis_dir, "services": services_dir, "recorder": recorder_dir}
    for volume, contents in files(password.value, key.value, address).items():
        directory = directories[volume]
        if directory is None:
            continue
        for name, (content, mode) in contents.items():
            write_atomically(directory / name, content, mode)
    return {"REDIS_PASSWORD": password.origin, "TOKEN_ENCRYPTION_KEY": key.origin}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("redis_dir", type=Path, help="Redis's secrets volume")
    parser.add_argument("services_dir", type=Path, help="the services' secrets volume")
    parser.add_argument(
        "recorder_dir", type=Path, nargs="?", help="the recorder's secrets volume (REDIS_URL only)"
    )
    parser.add_argument(
        "--redis-address", default="redis:6379/0", help="host:port/db in the services' REDIS_URL"
    )
    options = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    try:
        origins = provision(
            options.redis_dir,
            options.services_dir,
            os.environ,
            options.redis_address,
            options.recorder_dir,
        )
    except OSError as error:
        logger.error("cannot write the secrets: %s", error)
        return 1
    for variable, origin in origins.items():
        logger.info("%s: %s", variable, origin)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
