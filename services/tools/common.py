"""What the tools share: finding a token, running, reporting errors, printing tables.

A tool's failure is one line on stderr and a non-zero exit status, never a traceback.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TextIO
from urllib.parse import urlsplit

from redis.exceptions import RedisError

from services.tools.settings import ToolSettings
from shared.logs import configure_logging
from shared.redis_client import connect_redis
from shared.sessions import SessionDecryptError, SessionStore
from shared.settings import SettingsError, load_settings
from shared.upstox.client import UpstoxClient
from shared.upstox.errors import UpstoxAuthError, UpstoxError

logger = logging.getLogger(__name__)


class ToolError(Exception):
    """A failure worth one line to the user."""


def redis_location(url: str) -> str:
    """host:port of a Redis URL, without the password it may carry."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    return f"{parts.hostname or '?'}:{parts.port or 6379}"


async def find_token(settings: ToolSettings) -> tuple[str | None, str]:
    """(token, why there is none): the active session's from Redis, else UPSTOX_ACCESS_TOKEN."""
    problem = "nobody is logged in (no valid session in Redis)"
    client = connect_redis(settings.redis_url, cluster=settings.redis_cluster)
    try:
        found = await SessionStore(client, settings.token_encryption_key).active_token()
    except (RedisError, OSError):
        found = None
        problem = f"Redis at {redis_location(settings.redis_url)} is unreachable"
    except SessionDecryptError as error:
        found = None
        problem = str(error)
    finally:
        await client.aclose()
    if found is not None:
        return found[1], ""
    if settings.upstox_access_token is not None:
        return settings.upstox_access_token.get_secret_value(), ""
    return None, problem


async def resolve_token(settings: ToolSettings) -> str:
    """A token, or a `ToolError` saying why there is none and how to get one."""
    token, problem = await find_token(settings)
    if token is None:
        raise ToolError(
            f"no Upstox token: {problem}; log in through the auth service "
            "or set UPSTOX_ACCESS_TOKEN"
        )
    return token


def open_client(settings: ToolSettings) -> UpstoxClient:
    return UpstoxClient(settings.upstox_base_url, settings.upstox_timeout_seconds)


def run_tool(name: str, main: Callable[[ToolSettings], Coroutine[Any, Any, int]]) -> int:
    """Load settings, run `main`, and turn every failure into one line and an exit status."""
    try:
        settings = load_settings(ToolSettings)
    except SettingsError as error:
        _fail(name, str(error))
        return 2
    # A tool's output is its answer and at most one error line; retries are logged only when
    # asked for with LOG_LEVEL=DEBUG.
    level = "DEBUG" if settings.log_level == "DEBUG" else "ERROR"
    configure_logging(level, settings.log_format, service=name)
    try:
        return asyncio.run(main(settings))
    except ToolError as error:
        _fail(name, str(error))
    except UpstoxAuthError as error:
        _fail(name, f"Upstox refused the token ({error.describe()}); log in again")
    except UpstoxError as error:
        _fail(name, f"Upstox: {error.describe()}")
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # the promise is one line, not a traceback, whatever happens
        logger.debug("unexpected failure", exc_info=True)
        _fail(name, f"unexpected error: {type(error).__name__}: {error}")
    return 1


def _fail(name: str, message: str) -> None:
    sys.stderr.write(f"tickstream {name}: {message}\n")


def print_json(value: Any, out: TextIO | None = None) -> None:
    (out or sys.stdout).write(json.dumps(value, indent=2, ensure_ascii=False) + "\n")


def format_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()
) -> str:
    """A plain text table; columns listed in `right` are right-aligned (numbers)."""
    widths = [len(header) for header in headers]
    for row in rows:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        padded = [
            cell.rjust(width) if index in right else cell.ljust(width)
            for index, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(padded).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])
