"""The OAuth login round trip over real sockets, as the auth service will drive it."""

from __future__ import annotations

import re

import httpx

from tests.simulator.helpers import assert_error, bearer, get
from tests.support.simulator import SimulatorHandle, login_via_dialog

TOKEN_FIELDS = {
    "email",
    "exchanges",
    "products",
    "broker",
    "user_id",
    "user_name",
    "order_types",
    "user_type",
    "poa",
    "is_active",
    "access_token",
    "extended_token",
}


async def exchange(sim: SimulatorHandle, **fields: str) -> httpx.Response:
    form = {
        "client_id": sim.client_id,
        "client_secret": sim.client_secret,
        "redirect_uri": sim.redirect_uri,
        "grant_type": "authorization_code",
    } | fields
    async with httpx.AsyncClient(base_url=sim.http_url, timeout=10) as client:
        return await client.post(
            "/v2/login/authorization/token", data=form, headers={"Accept": "application/json"}
        )


async def test_login_round_trip(simulator: SimulatorHandle) -> None:
    async with httpx.AsyncClient(base_url=simulator.http_url, timeout=10) as client:
        page = await client.get(
            "/v2/login/authorization/dialog",
            params={
                "response_type": "code",
                "client_id": simulator.client_id,
                "redirect_uri": simulator.redirect_uri,
                "state": "s-1",
            },
        )
    assert page.status_code == 200
    assert "Simulated Upstox login" in page.text
    assert "<form" in page.text and simulator.client_secret not in page.text

    code = await login_via_dialog(
        simulator.http_url, simulator.client_id, simulator.redirect_uri, "s-1"
    )
    response = await exchange(simulator, code=code)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == TOKEN_FIELDS  # flat: no status/data wrapper, no expires_in
    assert body["broker"] == "UPSTOX" and body["user_id"] == "DEMO01"
    assert isinstance(body["exchanges"], list) and isinstance(body["poa"], bool)
    token = body["access_token"]
    assert re.fullmatch(r"[0-9a-f]{48}", token) and token != body["extended_token"]

    profile = await get(simulator, "/v2/user/profile", token)
    assert profile.status_code == 200
    assert profile.json()["data"]["user_id"] == "DEMO01"

    async with httpx.AsyncClient(base_url=simulator.http_url, timeout=10) as client:
        logout = await client.delete("/v2/logout", headers=bearer(token))
    assert logout.json() == {"status": "success", "data": True}
    assert_error(await get(simulator, "/v2/user/profile", token), 401, "UDAPI100050")


async def test_codes_are_single_use_even_when_the_exchange_fails(
    simulator: SimulatorHandle,
) -> None:
    code = await login_via_dialog(
        simulator.http_url, simulator.client_id, simulator.redirect_uri, "s"
    )
    assert_error(await exchange(simulator, code=code, client_secret="wrong"), 400, "UDAPI100016")
    assert_error(await exchange(simulator, code=code), 400, "UDAPI100016")

    code = await login_via_dialog(
        simulator.http_url, simulator.client_id, simulator.redirect_uri, "s"
    )
    assert (await exchange(simulator, code=code)).status_code == 200
    assert_error(await exchange(simulator, code=code), 400, "UDAPI100016")  # reused
    assert_error(await exchange(simulator, code="0" * 32), 400, "UDAPI100016")  # unknown


async def test_token_exchange_checks_client_and_redirect(simulator: SimulatorHandle) -> None:
    code = await login_via_dialog(
        simulator.http_url, simulator.client_id, simulator.redirect_uri, "s"
    )
    other_uri = simulator.settings.simulator_redirect_uris[1]
    assert_error(await exchange(simulator, code=code, redirect_uri=other_uri), 400, "UDAPI100069")
    assert_error(await exchange(simulator, code="x", client_id="nobody"), 400, "UDAPI100069")
    assert_error(await exchange(simulator, code="x", grant_type="password"), 400, "UDAPI100036")
    async with httpx.AsyncClient(base_url=simulator.http_url, timeout=10) as client:
        missing = await client.post("/v2/login/authorization/token", data={"code": "x"})
    assert_error(missing, 400, "UDAPI100036")


async def test_dialog_refuses_unknown_client_or_redirect(simulator: SimulatorHandle) -> None:
    base = {"response_type": "code", "state": "s"}
    async with httpx.AsyncClient(base_url=simulator.http_url, timeout=10) as client:
        unknown_client = await client.get(
            "/v2/login/authorization/dialog",
            params=base | {"client_id": "nobody", "redirect_uri": simulator.redirect_uri},
        )
        near_miss = await client.get(
            "/v2/login/authorization/dialog",
            params=base
            | {"client_id": simulator.client_id, "redirect_uri": simulator.redirect_uri + "/"},
        )
        forged_post = await client.post(
            "/v2/login/authorization/dialog",
            data={"client_id": simulator.client_id, "redirect_uri": "http://evil.example/cb"},
        )
    assert_error(unknown_client, 400, "UDAPI100068")
    assert_error(near_miss, 400, "UDAPI100068")
    assert_error(forged_post, 400, "UDAPI100068")


async def test_second_demo_user_can_log_in(simulator: SimulatorHandle) -> None:
    async with httpx.AsyncClient(base_url=simulator.http_url, timeout=10) as client:
        approved = await client.post(
            "/v2/login/authorization/dialog",
            data={
                "client_id": simulator.client_id,
                "redirect_uri": simulator.redirect_uri,
                "user_id": "DEMO02",
            },
        )
    assert approved.status_code == 302
    code = httpx.URL(approved.headers["location"]).params["code"]
    assert "state" not in httpx.URL(approved.headers["location"]).params
    body = (await exchange(simulator, code=code)).json()
    assert body["user_id"] == "DEMO02"
