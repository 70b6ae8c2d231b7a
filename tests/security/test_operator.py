"""The operator role through the running system's front (`tickstream dev`'s processes).

Before it, anyone who reached the front had the operator's Upstox account: POST /logout logged
out and revoked the token, /user-profile gave the e-mail, /session named the user, /authorize
started a login that replaced the account the deployment streams from. Now each needs the
operator's cookie (from the one-time link auth prints at start), and state changes need the
session's CSRF token from this site. The demo still streams to anyone.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from http.cookies import SimpleCookie

import httpx
import pytest

from tests.support.stack import Stack, running_stack
from tests.support.waiting import eventually
from tests.system.feed import FeedClient

pytestmark = pytest.mark.timeout(300)

JSON = {"Accept": "application/json"}
HTML = {"Accept": "text/html,application/xhtml+xml"}
KEYS = ["NSE_INDEX|Nifty 50"]
LINK = re.compile(r"operator sign-in link \(single use, valid \d+ min\): (\S+)")


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    with running_stack(gateways=1) as running:
        yield running


@pytest.fixture
async def anyone() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=20, trust_env=False) as http:
        yield http


async def feed_user(stack: Stack) -> str:
    """Who the feed is logged in as, as the operator sees it ('' when nobody is)."""
    async with stack.operator() as operator:
        body = (await operator.get(stack.front_url + "/session")).json()
    return str(body.get("user_id", "")) if body["logged_in"] else ""


async def test_the_link_in_auths_log_signs_in_once_through_the_front(
    stack: Stack, anyone: httpx.AsyncClient
) -> None:
    def announced() -> list[str]:
        return [m.group(1) for line in stack.logs("auth") if (m := LINK.search(line))]

    (link,) = await eventually(announced, "the sign-in link in auth's log")
    assert link.startswith(stack.front_url + "/auth/operator?code=")

    first = await anyone.get(link, headers=HTML)
    second = await anyone.get(link, headers=JSON)

    assert (first.status_code, first.headers["location"]) == (303, "./")
    cookie: SimpleCookie = SimpleCookie()
    cookie.load(first.headers["set-cookie"])
    morsel = cookie["tickstream_operator"]
    assert morsel["httponly"] is True and morsel["samesite"] == "strict"
    assert (morsel["path"], morsel["max-age"]) == ("/", str(12 * 3600))
    assert (second.status_code, second.json()["error"]) == (401, "bad_link")


async def test_anyone_reaching_the_front_gets_nothing_of_the_account(
    stack: Stack, anyone: httpx.AsyncClient
) -> None:
    await eventually(lambda: feed_user(stack), "the demo login")
    front = stack.front_url

    logout = await anyone.post(front + "/logout", headers=JSON)
    profile = await anyone.get(front + "/user-profile/DEMO01", headers=JSON)
    session = await anyone.get(front + "/session")
    authorize = await anyone.get(front + "/authorize", headers=JSON)
    browser = await anyone.get(front + "/authorize", headers=HTML)
    page = await anyone.get(front + "/auth/", headers=HTML)

    assert (logout.status_code, logout.json()["error"]) == (401, "operator_required")
    assert (profile.status_code, profile.json()["error"]) == (401, "operator_required")
    assert set(session.json()) == {"logged_in", "valid", "expires_at"}
    assert session.json()["logged_in"] is True
    assert (authorize.status_code, authorize.json()["error"]) == (401, "operator_required")
    assert (browser.status_code, browser.headers["location"]) == (303, "/auth/")
    assert page.status_code == 200 and "DEMO01" not in page.text
    assert "DEMO01" not in session.text + profile.text
    assert await feed_user(stack) == "DEMO01"  # still logged in


@pytest.mark.parametrize(
    "refusal",
    ["no token", "a wrong token", "Origin: null", "a foreign Origin", "a wrong form field"],
)
async def test_the_operators_logout_needs_the_csrf_token_from_this_site(
    stack: Stack, refusal: str
) -> None:
    await eventually(lambda: feed_user(stack), "a login")
    async with stack.operator() as operator:
        token = operator.headers.pop("X-CSRF-Token")
        headers = {
            "no token": {},
            "a wrong token": {"X-CSRF-Token": token[::-1]},
            "Origin: null": {"X-CSRF-Token": token, "Origin": "null"},
            "a foreign Origin": {"X-CSRF-Token": token, "Origin": "https://evil.example"},
            "a wrong form field": {},
        }[refusal]
        form = {"csrf_token": "x" + token} if refusal == "a wrong form field" else None
        refused = await operator.post(
            stack.front_url + "/logout", headers={**JSON, **headers}, data=form
        )
    assert (refused.status_code, refused.json()["error"]) == (403, "csrf"), refusal
    assert await feed_user(stack) != ""


async def test_the_operator_signs_in_logs_out_and_logs_in_again_and_the_feed_is_live(
    stack: Stack,
) -> None:
    async with FeedClient(stack.front_ws_url, KEYS, origin=stack.front_url) as feed:
        await feed.wait_live(3)  # a viewer needs nothing
        async with stack.operator() as operator:
            logout = await operator.post(
                stack.front_url + "/logout", headers={**JSON, "Origin": stack.front_url}
            )
            assert logout.status_code == 200, logout.text
            after = (await operator.get(stack.front_url + "/session")).json()
            assert after["logged_in"] is False and after["operator"] is True
        await stack.login(user_id="DEMO02")  # the simulated Upstox dialog, as the operator
        await eventually(lambda: _is(stack, "DEMO02"), "DEMO02 logged in")
        mark = feed.mark()
        await feed.wait_live(3, mark, "live updates after the operator's new login")


async def _is(stack: Stack, user: str) -> bool:
    return await feed_user(stack) == user
