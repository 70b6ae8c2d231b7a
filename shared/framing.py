"""No answer of any service may be framed: a decoy page over a framed page (auth's "Log out",
the dashboard, the simulator's login dialog) would get the user's click.

`NoFraming` is the ASGI middleware `shared.serve.protect` puts around every service (and the
front): each HTTP answer, errors and redirects included, gets CSP `frame-ancestors 'none'`,
`X-Frame-Options: DENY` (for browsers that predate frame-ancestors) and `nosniff`, unless it
already says so itself (the gateway's pages carry a whole CSP). Wrapping twice changes nothing,
and a second X-Frame-Options (which some browsers take as invalid) is never added.
"""

from __future__ import annotations

from typing import Final

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["NO_FRAMING", "NoFraming", "with_no_framing"]

NO_FRAMING: Final = (
    (b"content-security-policy", b"frame-ancestors 'none'"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
)


def with_no_framing(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """`headers` plus whichever of `NO_FRAMING` they do not already carry."""
    present = {name.lower() for name, _ in headers}
    framed_policy = any(
        name.lower() == b"content-security-policy" and b"frame-ancestors" in value
        for name, value in headers
    )
    added = [
        (name, value)
        for name, value in NO_FRAMING
        if not (framed_policy if name == b"content-security-policy" else name in present)
    ]
    return [*headers, *added]


class NoFraming:
    """Adds `NO_FRAMING` to every HTTP answer that lacks it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": with_no_framing(list(message.get("headers", [])))}
            await send(message)

        await self.app(scope, receive, send_with_headers)
