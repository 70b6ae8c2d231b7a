"""auth's few HTML pages. Every interpolated value is escaped; links are relative so the pages
work whether auth is served at the site root or under a proxy prefix."""

from __future__ import annotations

from html import escape

from shared.ist import format_ist
from shared.redis_contract import StoredSession

_STYLE = """
body { font: 16px/1.5 system-ui, sans-serif; max-width: 36rem; margin: 4rem auto; padding: 0 1rem;
       color: #1d2430; }
h1 { font-size: 1.4rem; }
.button { display: inline-block; padding: .5rem 1rem; border-radius: .4rem; border: 0;
          background: #5a2ca0; color: #fff; text-decoration: none; font: inherit; cursor: pointer; }
.muted { color: #5b6675; }
.error { border-left: 4px solid #c0392b; padding-left: 1rem; }
"""


def _page(title: str, body: str) -> str:
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        # no icon: a browser would ask the site for /favicon.ico, which nobody serves
        '<link rel=icon href="data:,">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body>{body}</body></html>"
    )


def sign_in_page(password: bool, dashboard_url: str, error: str | None = None) -> str:
    """The operator's sign-in: a password form, or where to find the one-time link."""
    problem = "" if error is None else f"<p class=error>{escape(error)}</p>"
    if password:
        how = (
            '<form method=post action="operator">'
            "<p><label>Operator password<br>"
            "<input type=password name=password autocomplete=current-password required "
            "autofocus></label></p>"
            "<button class=button type=submit>Sign in</button></form>"
        )
    else:
        how = (
            "<p>Open the one-time sign-in link printed in auth's log at start, or mint a new "
            "one on the server with <code>tickstream operator-link</code> (compose: "
            "<code>docker compose exec auth tickstream operator-link</code>).</p>"
        )
    return _page(
        "tickstream operator",
        "<h1>tickstream operator</h1>"
        "<p class=muted>Logging in and out of Upstox is for the operator. Viewers need "
        f'nothing: <a href="{escape(dashboard_url)}">open the dashboard</a>.</p>'
        f"{problem}{how}",
    )


def home_page(
    session: StoredSession | None, valid: bool, dashboard_url: str, csrf_token: str
) -> str:
    """The operator's page: the Upstox login's state, Log in/out, and Sign out."""
    csrf = f'<input type=hidden name=csrf_token value="{escape(csrf_token)}">'
    dashboard = f'<p><a href="{escape(dashboard_url)}">Open the dashboard</a></p>'
    sign_out = (
        f'<form method=post action="sign-out">{csrf}'
        "<button class=button type=submit>Sign out (operator)</button></form>"
    )
    if session is None:
        return _page(
            "tickstream login",
            "<h1>tickstream</h1><p>Nobody is logged in to Upstox.</p>"
            '<p><a class=button href="authorize">Log in with Upstox</a></p>'
            f"{dashboard}{sign_out}",
        )
    who = escape(session.user_name or session.user_id)
    until = escape(format_ist(session.expires_at))
    if valid:
        status = f"<p>Logged in as <b>{who}</b> ({escape(session.user_id)}) until {until}.</p>"
    else:
        status = (
            f"<p>The Upstox session of <b>{who}</b> is no longer valid "
            "(expired or refused by Upstox).</p>"
            '<p><a class=button href="authorize">Log in with Upstox again</a></p>'
        )
    logout = (
        f'<form method=post action="logout">{csrf}'
        f'<input type=hidden name=user_id value="{escape(session.user_id)}">'
        "<button class=button type=submit>Log out of Upstox</button></form>"
    )
    return _page("tickstream login", f"<h1>tickstream</h1>{status}{logout}{dashboard}{sign_out}")


def error_page(title: str, detail: str) -> str:
    return _page(
        title,
        f"<h1>{escape(title)}</h1><p class=error>{escape(detail)}</p>"
        '<p><a class=button href="authorize">Start the login again</a></p>'
        '<p class=muted><a href="./">Back</a></p>',
    )
