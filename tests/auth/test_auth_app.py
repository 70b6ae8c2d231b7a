"""auth over real HTTP with a real Redis, for everything that needs no answer from Upstox:
OAuth state, refused callbacks, session metadata, the internal key, logout, CORS, health."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
import redis.asyncio as aioredis
from cryptography.fernet import Fernet
from pydantic import SecretStr

from services.auth.settings import AuthSettings
from shared.redis_contract import ACTIVE_SESSION, OAuthState, oauth_state_key, session_key
from shared.resp import as_text
from shared.sessions import SessionStore
from shared.settings import SettingsError, load_settings
from shared.upstox.models import Profile
from tests.auth.conftest import REDIRECT_URI, TokenEvents, auth_settings, running_auth
from tests.support.redis_server import RedisServer

TOKEN = "stored-token-4be1c0ffee"
HTML = {"Accept": "text/html,application/xhtml+xml"}
JSON = {"Accept": "application/json"}


async def stored_keys(redis: aioredis.Redis) -> list[str]:
    """Redis's keys but the operator's (the test client's session, the start's sign-in code)."""
    return [name for key in await redis.keys("*") if ":operator:" not in (name := as_text(key))]


async def store_session(redis: aioredis.Redis, key: str | None = None) -> SessionStore:
    store = SessionStore(redis, key)
    await store.save(Profile(user_id="AB1234", user_name="Asha Rao"), TOKEN)
    return store


# ---- /authorize ------------------------------------------------------------------------------


async def test_authorize_redirects_to_the_dialog_with_a_fresh_state(
    redis_url: str, redis_client: aioredis.Redis, nowhere: str
) -> None:
    async with running_auth(auth_settings(redis_url, nowhere)) as auth:
        response = await auth.http.get("/authorize", headers=HTML)
        as_json = await auth.http.get("/authorize", headers=JSON)

    assert response.status_code == 302
    assert response.headers["cache-control"] == "no-store"
    location = urlsplit(response.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == (
        f"{nowhere}/v2/login/authorization/dialog"
    )
    query = parse_qs(location.query)
    assert query["response_type"] == ["code"]
    assert query["client_id"] == ["tickstream-demo"]
    assert query["redirect_uri"] == [REDIRECT_URI]
    state = query["state"][0]
    assert len(state) >= 32
    record = await redis_client.get(oauth_state_key(state))
    assert record is not None and OAuthState.model_validate_json(record).next_url == "/"
    assert 0 < await redis_client.ttl(oauth_state_key(state)) <= 600

    assert as_json.status_code == 200
    other_state = parse_qs(urlsplit(as_json.json()["auth_url"]).query)["state"][0]
    assert other_state != state
    assert await redis_client.exists(oauth_state_key(other_state))


async def test_authorize_uses_the_dialog_base_url_and_only_same_site_next_urls(
    redis_url: str, redis_client: aioredis.Redis, nowhere: str
) -> None:
    settings = auth_settings(redis_url, nowhere, upstox_dialog_base_url="http://front.example")
    async with running_auth(settings) as auth:
        answers = [
            await auth.http.get("/authorize", params=params, headers=JSON)
            for params in ({"next": "/watch?x=1"}, {}, {"next": "//evil.example/"})
        ]
    assert [answer.status_code for answer in answers] == [200, 200, 400]
    urls = [answer.json()["auth_url"] for answer in answers[:2]]
    assert all(
        url.startswith("http://front.example/v2/login/authorization/dialog?") for url in urls
    )
    next_urls = []
    for url in urls:
        state = parse_qs(urlsplit(url).query)["state"][0]
        record = await redis_client.get(oauth_state_key(state))
        assert record is not None
        next_urls.append(OAuthState.model_validate_json(record).next_url)
    assert next_urls == ["/watch?x=1", "/"]


# ---- refused callbacks ----------------------------------------------------------------------


async def test_callbacks_without_a_known_state_are_refused_and_store_nothing(
    redis_url: str, redis_client: aioredis.Redis, token_events: TokenEvents, nowhere: str
) -> None:
    async with running_auth(auth_settings(redis_url, nowhere)) as auth:
        missing = await auth.http.get("/exchange-token", params={"code": "c"})
        unknown = await auth.http.get("/exchange-token", params={"code": "c", "state": "forged"})
        page = await auth.http.get(
            "/exchange-token", params={"code": "c", "state": "forged"}, headers=HTML
        )
        failures = (await auth.http.get("/metrics")).text

    assert (missing.status_code, missing.json()["error"]) == (400, "missing_state")
    assert (unknown.status_code, unknown.json()["error"]) == (400, "unknown_state")
    assert "start the login again" in unknown.json()["detail"]
    assert page.status_code == 400
    assert page.headers["content-type"].startswith("text/html")
    assert "already used" in page.text and 'href="authorize"' in page.text
    assert 'tickstream_auth_login_failures_total{reason="unknown_state"} 2.0' in failures
    assert await stored_keys(redis_client) == []
    await token_events.assert_quiet()


async def test_a_state_is_spent_by_its_first_callback(
    redis_url: str, redis_client: aioredis.Redis, token_events: TokenEvents, nowhere: str
) -> None:
    async with running_auth(auth_settings(redis_url, nowhere)) as auth:
        url = (await auth.http.get("/authorize", headers=JSON)).json()["auth_url"]
        state = parse_qs(urlsplit(url).query)["state"][0]
        no_code = await auth.http.get("/exchange-token", params={"state": state})
        replay = await auth.http.get("/exchange-token", params={"state": state, "code": "c"})

    assert (no_code.status_code, no_code.json()["error"]) == (400, "missing_code")
    assert (replay.status_code, replay.json()["error"]) == (400, "unknown_state")
    assert await stored_keys(redis_client) == []
    await token_events.assert_quiet()


async def test_an_error_from_the_dialog_is_shown_escaped(redis_url: str, nowhere: str) -> None:
    async with running_auth(auth_settings(redis_url, nowhere)) as auth:
        url = (await auth.http.get("/authorize", headers=JSON)).json()["auth_url"]
        state = parse_qs(urlsplit(url).query)["state"][0]
        page = await auth.http.get(
            "/exchange-token",
            params={"state": state, "error": "<script>alert(1)</script>"},
            headers=HTML,
        )
    assert page.status_code == 400
    assert "<script>" not in page.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text


async def test_upstox_unreachable_at_the_exchange_is_a_502_and_stores_nothing(
    redis_url: str, redis_client: aioredis.Redis, token_events: TokenEvents, nowhere: str
) -> None:
    async with running_auth(auth_settings(redis_url, nowhere)) as auth:
        url = (await auth.http.get("/authorize", headers=JSON)).json()["auth_url"]
        state = parse_qs(urlsplit(url).query)["state"][0]
        response = await auth.http.get(
            "/exchange-token", params={"state": state, "code": "one-time-code-xyz"}
        )
    assert response.status_code == 502
    assert response.json()["error"] == "upstox_unavailable"
    assert "one-time-code-xyz" not in response.text
    assert await stored_keys(redis_client) == []
    await token_events.assert_quiet()


# ---- session metadata and the internal key ---------------------------------------------------


async def test_token_and_session_show_metadata_never_the_token(
    redis_url: str, redis_client: aioredis.Redis, nowhere: str
) -> None:
    async with running_auth(auth_settings(redis_url, nowhere)) as auth:
        nobody = await auth.http.get("/session")
        unknown = await auth.http.get("/token/AB1234")
        await store_session(redis_client)
        session = await auth.http.get("/session")
        token = await auth.http.get("/token/AB1234")
        with_header = await auth.http.get("/token/AB1234", headers={"X-Internal-Key": ""})
        bad_id = await auth.http.get("/token/a:b")

    assert nobody.json()["logged_in"] is False
    assert (unknown.status_code, unknown.json()["error"]) == (404, "no_session")
    body = session.json()
    assert body["logged_in"] is True
    assert (body["user_id"], body["user_name"], body["valid"]) == ("AB1234", "Asha Rao", True)
    assert body["expires_at"].endswith("T03:30:00+05:30")
    session_only = ("logged_in", "operator", "csrf_token")
    assert token.json() == {key: value for key, value in body.items() if key not in session_only}
    assert token.headers["cache-control"] == "no-store"
    # No key configured: the header grants nothing, not even an empty one.
    assert with_header.status_code == 403
    assert bad_id.status_code == 422
    for response in (session, token, with_header):
        assert TOKEN not in response.text


async def test_the_internal_key_reads_the_token(
    redis_url: str, redis_client: aioredis.Redis, nowhere: str
) -> None:
    key = Fernet.generate_key().decode()
    settings = auth_settings(
        redis_url, nowhere, internal_service_key="k-internal", token_encryption_key=key
    )
    async with running_auth(settings) as auth:
        await store_session(redis_client, key)
        wrong = await auth.http.get("/token/AB1234", headers={"X-Internal-Key": "k-wrong"})
        right = await auth.http.get("/token/AB1234", headers={"X-Internal-Key": "k-internal"})
        metrics = (await auth.http.get("/metrics")).text

    assert wrong.status_code == 403 and TOKEN not in wrong.text
    assert right.status_code == 200
    assert right.json()["access_token"] == TOKEN
    assert right.json()["user_id"] == "AB1234"
    raw = await redis_client.get(session_key("AB1234"))
    assert raw is not None and TOKEN.encode() not in raw
    assert 'tickstream_auth_internal_token_reads_total{outcome="denied"} 1.0' in metrics
    assert 'tickstream_auth_internal_token_reads_total{outcome="granted"} 1.0' in metrics


async def test_home_page_shows_who_is_logged_in(
    redis_url: str, redis_client: aioredis.Redis, nowhere: str
) -> None:
    async with running_auth(auth_settings(redis_url, nowhere)) as auth:
        before = await auth.http.get("/")
        store = await store_session(redis_client)
        during = await auth.http.get("/")
        await store.mark_invalid("AB1234")
        after = await auth.http.get("/")

    assert 'href="authorize"' in before.text and "Log in with Upstox" in before.text
    assert "Logged in as <b>Asha Rao</b> (AB1234) until" in during.text
    assert "03:30:00+05:30" in during.text
    assert 'action="logout"' in during.text
    assert "no longer valid" in after.text
    assert all(TOKEN not in page.text for page in (before, during, after))


# ---- logout ----------------------------------------------------------------------------------


async def test_logout_refuses_another_site_and_works_from_this_one(
    redis_url: str, redis_client: aioredis.Redis, token_events: TokenEvents, nowhere: str
) -> None:
    store = await store_session(redis_client)
    await token_events.next()
    async with running_auth(auth_settings(redis_url, nowhere)) as auth:
        host = urlsplit(auth.url).netloc
        forged = await auth.http.post("/logout", headers={"Origin": "http://evil.example"})
        assert forged.status_code == 403
        assert await store.get("AB1234") is not None
        await token_events.assert_quiet()

        # The home page's form: same host, Upstox unreachable, logged out here anyway.
        response = await auth.http.post(
            "/logout",
            content=b"user_id=AB1234",
            headers={
                **HTML,
                "Origin": f"http://{host}",
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )
        assert (response.status_code, response.headers["location"]) == (303, "./")
        again = await auth.http.post("/logout", json={"user_id": "AB1234"})

    assert await store.get("AB1234") is None
    assert await redis_client.exists(ACTIVE_SESSION) == 0
    event = await token_events.next()
    assert (event.event, event.user_id) == ("logout", "AB1234")
    assert (again.status_code, again.json()["error"]) == (404, "no_session")


# ---- operations ------------------------------------------------------------------------------


async def test_readyz_follows_redis_while_healthz_stays_up(
    redis_url: str, redis_server: RedisServer, nowhere: str
) -> None:
    async with running_auth(auth_settings(redis_url, nowhere)) as auth:
        assert (await auth.http.get("/readyz")).status_code == 200
        redis_server.stop()
        try:
            ready = await auth.http.get("/readyz")
            health = await auth.http.get("/healthz")
            session = await auth.http.get("/session")
            login = await auth.http.get("/authorize", headers=HTML)
        finally:
            redis_server.start()
        assert (await auth.http.get("/readyz")).status_code == 200

    assert ready.status_code == 503 and ready.json() == {
        "ready": False,
        "reason": "redis unreachable",
    }
    assert health.status_code == 200
    assert (session.status_code, session.json()["error"]) == (503, "store_unavailable")
    assert login.status_code == 503 and "Redis" in login.text


async def test_cors_allows_only_the_listed_origins(redis_url: str, nowhere: str) -> None:
    settings = auth_settings(redis_url, nowhere, auth_cors_origins=["http://dash.example:8000"])
    preflight = {"Access-Control-Request-Method": "GET"}
    async with running_auth(settings) as auth:
        allowed = await auth.http.options(
            "/session", headers={"Origin": "http://dash.example:8000", **preflight}
        )
        refused = await auth.http.options(
            "/session", headers={"Origin": "http://evil.example", **preflight}
        )
        simple = await auth.http.get("/session", headers={"Origin": "http://evil.example"})

    assert allowed.headers["access-control-allow-origin"] == "http://dash.example:8000"
    assert allowed.headers["access-control-allow-credentials"] == "true"
    assert "access-control-allow-origin" not in refused.headers
    assert "access-control-allow-origin" not in simple.headers


@pytest.mark.parametrize(
    ("value", "message"),
    [("*", "not allowed"), ("dash.example", "is not an origin")],
)
def test_cors_settings_refuse_wildcards_and_non_origins(value: str, message: str) -> None:
    with pytest.raises(SettingsError, match="AUTH_CORS_ORIGINS") as caught:
        load_settings(AuthSettings, _env_file=None, auth_cors_origins=value)
    assert message in str(caught.value)


def test_settings_read_the_seed_names_and_comma_separated_origins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("API_KEY", "my-app")
    monkeypatch.setenv("API_SECRET", "my-secret")
    monkeypatch.setenv("UPSTOX_ACCESS_TOKEN", "console-token")
    monkeypatch.setenv("AUTH_CORS_ORIGINS", "http://a.example, https://b.example/")
    settings = load_settings(AuthSettings, _env_file=None)
    assert settings.api_key == "my-app"
    assert settings.api_secret == SecretStr("my-secret")
    assert settings.upstox_access_token == SecretStr("console-token")
    assert settings.auth_cors_origins == ["http://a.example", "https://b.example"]
    assert "my-secret" not in repr(settings) and "console-token" not in repr(settings)
    monkeypatch.setenv("API_KEY", "")
    monkeypatch.setenv("UPSTOX_ACCESS_TOKEN", " ")
    blank = load_settings(AuthSettings, _env_file=None)
    assert blank.api_key == "tickstream-demo" and blank.upstox_access_token is None
