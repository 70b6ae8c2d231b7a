"""`tickstream token issue`: mint an HS256 viewer token signed with GATEWAY_TOKEN_SECRET, for
deployments that run with GATEWAY_VIEWER_ACCESS=token. The token goes to stdout, alone, so
it can be piped; what it allows goes to stderr."""

from __future__ import annotations

import argparse
import datetime as dt
import sys

from services.gateway.settings import GatewaySettings
from shared.settings import SettingsError, load_settings
from shared.viewer_tokens import mint, parse_ttl


def _ttl(text: str) -> int:
    try:
        return parse_ttl(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    issue = actions.add_parser("issue", help="print a new viewer token")
    issue.add_argument("--sub", required=True, help="who the token is for (its `sub` claim)")
    issue.add_argument(
        "--ttl", type=_ttl, default="30d", help="lifetime: 90s, 15m, 12h, 30d (default 30d)"
    )
    issue.add_argument(
        "--keys",
        default="",
        help="comma-separated instrument keys (or SEGMENT|*) the holder may subscribe; "
        "default: any",
    )
    issue.add_argument("--aud", default=None, help="audience (`aud`), if the gateways check one")


def run(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(GatewaySettings)
    except SettingsError as error:
        sys.stderr.write(f"tickstream: {error}\n")
        return 2
    if settings.gateway_token_secret is None:
        sys.stderr.write(
            "tickstream: GATEWAY_TOKEN_SECRET is not set: set it (at least 32 bytes, e.g. "
            "`openssl rand -hex 32`) to the value the gateways use\n"
        )
        return 2
    keys = [key.strip() for key in args.keys.split(",") if key.strip()]
    token = mint(
        settings.gateway_token_secret.get_secret_value(),
        args.sub,
        args.ttl,
        keys=keys or None,
        audience=args.aud,
    )
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=args.ttl)
    sys.stderr.write(
        f"viewer token for {args.sub!r}, valid until {expires:%Y-%m-%d %H:%M} UTC, "
        f"keys: {', '.join(keys) or 'any'}\n"
    )
    sys.stdout.write(token + "\n")
    return 0
