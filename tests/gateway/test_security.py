"""Origin allowlist, API keys and the request-rate bucket (pure functions)."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from services.gateway.settings import GatewaySettings
from shared.origins import origin_allowed
from shared.settings import SettingsError, load_settings
from shared.token_bucket import TokenBucket
from shared.viewer_access import key_accepted, presented_key


@pytest.mark.parametrize(
    ("origin", "hosts", "allowed", "ok"),
    [
        (None, ("gw:8000",), [], True),  # not a browser
        ("http://gw:8000", ("gw:8000",), [], True),  # same site
        ("http://GW:8000/", ("gw:8000",), [], True),
        ("https://example.com", ("example.com",), [], True),  # default ports
        ("http://example.com", ("example.com:80",), [], True),
        ("https://example.com", ("example.com:80",), [], False),  # other scheme's port
        ("http://localhost:8080", ("gateway:8000", "localhost:8080"), [], True),  # proxied
        ("http://evil.test", ("gw:8000",), [], False),
        ("http://evil.test", ("gw:8000", None), ["http://good.test"], False),
        ("http://good.test", ("gw:8000",), ["http://good.test"], True),
        ("http://good.test", ("gw:8000",), ["HTTP://GOOD.TEST/"], True),
        ("http://any.test", ("gw:8000",), ["*"], True),
        ("null", ("gw:8000",), [], False),
        ("file://", ("gw:8000",), [], False),
        ("http://gw:8000", (None, None), [], False),
    ],
)
def test_origin_allowed(
    origin: str | None, hosts: tuple[str | None, ...], allowed: list[str], ok: bool
) -> None:
    assert origin_allowed(origin, hosts, allowed) is ok


def test_presented_key() -> None:
    assert presented_key("", "Bearer  abc ") == "abc"
    assert presented_key("api_key=q1&x=2", None) == "q1"
    assert presented_key("api_key=q1", "Bearer h1") == "h1"
    assert presented_key("", "Basic abc") is None
    assert presented_key("x=1", None) is None


def test_key_accepted() -> None:
    keys = [SecretStr("k-one"), SecretStr("k-two")]
    assert key_accepted(None, [])  # auth off
    assert key_accepted("k-two", keys)
    assert not key_accepted("k-three", keys)
    assert not key_accepted(None, keys)
    assert not key_accepted("", keys)


def test_token_bucket() -> None:
    bucket = TokenBucket(rate=3, now=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(0.34)  # one token back after a third of a second
    assert not bucket.take(0.35)
    assert [bucket.take(10.0) for _ in range(4)] == [True, True, True, False]  # burst capped


def test_settings_lists_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_ALLOWED_ORIGINS", "https://a.test, https://b.test")
    monkeypatch.setenv("GATEWAY_API_KEYS", '["k1", "k2"]')
    settings = load_settings(GatewaySettings)
    assert settings.gateway_allowed_origins == ["https://a.test", "https://b.test"]
    assert [k.get_secret_value() for k in settings.gateway_api_keys] == ["k1", "k2"]
    assert "k1" not in repr(settings)
    monkeypatch.setenv("GATEWAY_API_KEYS", "")
    assert load_settings(GatewaySettings).gateway_api_keys == []


def test_bad_settings_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_IDLE_TIMEOUT_SECONDS", "5")
    monkeypatch.setenv("GATEWAY_PING_INTERVAL_SECONDS", "10")
    with pytest.raises(SettingsError, match="GATEWAY_IDLE_TIMEOUT_SECONDS"):
        load_settings(GatewaySettings)
    monkeypatch.delenv("GATEWAY_IDLE_TIMEOUT_SECONDS")
    monkeypatch.setenv("GATEWAY_MAX_KEYS_PER_CLIENT", "0")
    with pytest.raises(SettingsError, match="GATEWAY_MAX_KEYS_PER_CLIENT"):
        load_settings(GatewaySettings)
