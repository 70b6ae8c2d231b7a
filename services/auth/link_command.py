"""`tickstream operator-link`: mint a one-time operator sign-in link and print it.

Whoever can run this (a shell on the machine, `docker compose exec auth ...`) reads auth's
settings and reaches its Redis, so is the operator already; auth need not restart.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from shared.settings import load_settings_or_exit


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--minutes",
        type=int,
        default=None,
        help="how long the link stays redeemable (default AUTH_OPERATOR_LINK_MINUTES)",
    )


def run(args: argparse.Namespace) -> int:
    from redis.exceptions import RedisError

    from services.auth.operator import mint_code, sign_in_link
    from services.auth.settings import AuthSettings
    from shared.redis_client import connect_redis

    settings = load_settings_or_exit(AuthSettings)
    minutes: int = args.minutes or settings.auth_operator_link_minutes

    async def mint() -> str:
        redis = connect_redis(settings.redis_url, cluster=settings.redis_cluster)
        try:
            return await mint_code(redis, minutes * 60)
        finally:
            await redis.aclose()

    try:
        code = asyncio.run(mint())
    except (RedisError, OSError) as error:
        sys.stderr.write(f"cannot store the sign-in code in Redis: {error}\n")
        return 1
    link = sign_in_link(settings.upstox_redirect_uri, code)
    sys.stdout.write(f"operator sign-in link (single use, valid {minutes} min):\n{link}\n")
    return 0
