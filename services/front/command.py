"""`tickstream front`: the reverse proxy `tickstream dev` puts in front of the services."""

from __future__ import annotations

import argparse
import logging

from shared.logs import configure_logging
from shared.serve import add_server_arguments, protect
from shared.settings import CommonSettings, load_settings_or_exit

DEFAULT_PORT = 8080

logger = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_server_arguments(parser, DEFAULT_PORT)
    parser.add_argument(
        "--gateway",
        action="append",
        required=True,
        metavar="URL",
        help="a gateway replica's base URL, e.g. http://127.0.0.1:8000 (repeat for each replica)",
    )
    parser.add_argument("--auth", required=True, metavar="URL", help="the auth service's base URL")
    parser.add_argument(
        "--simulator",
        metavar="URL",
        help="the simulator's base URL, for its login dialog at /v2/login/ (omit for Upstox)",
    )
    parser.add_argument(
        "--recorder",
        metavar="URL",
        help="the recorder's base URL, for /api/ticks/, /api/candles/ and /api/recording/ "
        "(omit when nothing records: the gateways answer those 404)",
    )


class NoQueryInLogs(logging.Filter):
    """uvicorn logs each WebSocket handshake with its query string, which may hold a gateway API
    key (`?api_key=`): the front's lines keep the path only."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and '"WebSocket %s"' in record.msg and record.args:
            args = record.args if isinstance(record.args, tuple) else (record.args,)
            record.args = tuple(
                arg.split("?", 1)[0] if isinstance(arg, str) else arg for arg in args
            )
        return True


def run(args: argparse.Namespace) -> int:
    import uvicorn

    from services.front.proxy import create_front_app

    settings = load_settings_or_exit(CommonSettings)
    configure_logging(settings.log_level, settings.log_format, service="front")
    logging.getLogger("uvicorn.error").addFilter(NoQueryInLogs())
    # The Host allowlist first, and no framing of the front's own answers (`protect`).
    app = protect(
        create_front_app(args.gateway, args.auth, args.simulator, args.recorder),
        settings,
        behind_proxies=False,
    )
    config = uvicorn.Config(
        app,
        host=args.host,
        port=args.port,
        log_config=None,
        access_log=False,
        ws_max_size=1 << 20,  # as the gateways: a bigger frame is closed with 1009 here
        # h11 hands the app the request target as sent, so the front itself refuses what is not
        # origin-form; httptools quietly makes `http://host/x` into `/x` first.
        http="h11",
        # The front is the edge: the TCP peer is the client, and X-Forwarded-* from outside is
        # not trusted (shared.serve trusts it, which is right for services behind a proxy).
        proxy_headers=False,
        timeout_graceful_shutdown=5,
    )
    logger.info("starting on %s:%d", args.host, args.port)
    uvicorn.Server(config).run()
    return 0
