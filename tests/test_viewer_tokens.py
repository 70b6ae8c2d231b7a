"""Viewer tokens (shared/viewer_tokens.py) and the gateway's pure admission rules: where a
credential is taken from, the client address behind trusted proxies, the connection caps, and
a subscribe screened by a token's `keys` claim. Keys are generated here (cryptography)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from services.gateway.protocol import Subscribe
from services.gateway.security import ConnectionCaps, client_address, split_forbidden
from services.gateway.settings import GatewaySettings
from shared.instruments import Mode
from shared.settings import SettingsError, load_settings
from shared.viewer_access import presented_key
from shared.viewer_tokens import (
    KeyScope,
    TokenRefused,
    header_of,
    mint,
    parse_ttl,
    verify_hmac,
    verify_with_jwk,
)
from tests.support.tokens import claims, ec_key, hmac_signed, rsa_key, unsigned
from tests.test_cli_tools import tickstream

SECRET = "s" * 40
OTHER_SECRET = "o" * 40
RELIANCE = "NSE_EQ|INE002A01018"
NIFTY = "NSE_INDEX|Nifty 50"


def hs256(payload: dict[str, Any], secret: str = SECRET) -> str:
    return jwt.encode(payload, secret.encode(), algorithm="HS256")


def refusal(call: Any, *args: Any) -> str:
    with pytest.raises(TokenRefused) as refused:
        call(*args)
    assert "eyJ" not in refused.value.message  # never the token
    return refused.value.reason


def test_an_hs256_token_admits_its_subject_until_exp() -> None:
    token = hs256(claims())
    viewer = verify_hmac(token, SECRET, None)
    assert viewer.sub == "viewer-1" and viewer.exp is not None and viewer.keys is None
    assert viewer.allows(RELIANCE)


def test_refusals_say_why() -> None:
    expired = hs256(claims(exp=int(time.time()) - 5))
    assert refusal(verify_hmac, expired, SECRET, None) == "expired"
    assert refusal(verify_hmac, hs256(claims(), OTHER_SECRET), SECRET, None) == "bad_signature"
    aud = hs256(claims(aud="other-app"))
    assert refusal(verify_hmac, aud, SECRET, "tickstream") == "wrong_audience"
    assert verify_hmac(hs256(claims(aud="tickstream")), SECRET, "tickstream").sub == "viewer-1"
    no_aud = hs256(claims())
    assert refusal(verify_hmac, no_aud, SECRET, "tickstream") == "bad_claims"
    assert refusal(verify_hmac, hs256({"exp": int(time.time()) + 60}), SECRET, None) == (
        "bad_claims"
    )
    assert refusal(verify_hmac, hs256({"sub": "x"}), SECRET, None) == "bad_claims"
    assert refusal(verify_hmac, hs256(claims(sub="")), SECRET, None) == "bad_claims"
    assert refusal(verify_hmac, "not-a-token", SECRET, None) == "malformed"
    assert refusal(header_of, "a.b") == "malformed"


def test_alg_none_is_never_accepted() -> None:
    bare = unsigned(claims())
    assert refusal(verify_hmac, bare, SECRET, None) == "unsupported_algorithm"
    assert header_of(bare)["alg"] == "none"


def test_an_rsa_public_key_is_no_hmac_secret() -> None:
    """The RS256 -> HS256 confusion: a token HMAC-signed with the provider's public key."""
    private, public = rsa_key("k1")
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    jwk = jwt.PyJWK.from_dict(public)
    forged = hmac_signed(claims(), public_pem)
    assert refusal(verify_with_jwk, forged, jwk, None) == "unsupported_algorithm"
    good = jwt.encode(claims(), private, algorithm="RS256", headers={"kid": "k1"})
    assert verify_with_jwk(good, jwk, None).sub == "viewer-1"


def test_es256_from_a_jwk() -> None:
    private, public = ec_key("e1")
    jwk = jwt.PyJWK.from_dict(public)
    token = jwt.encode(claims(), private, algorithm="ES256", headers={"kid": "e1"})
    assert verify_with_jwk(token, jwk, None).sub == "viewer-1"
    other, _ = ec_key("e1")
    forged = jwt.encode(claims(), other, algorithm="ES256", headers={"kid": "e1"})
    assert refusal(verify_with_jwk, forged, jwk, None) == "bad_signature"


def test_keys_claim_limits_exact_keys_and_segments() -> None:
    viewer = verify_hmac(hs256(claims(keys=[RELIANCE, "NSE_INDEX|*"])), SECRET, None)
    assert viewer.allows(RELIANCE) and viewer.allows(NIFTY)
    assert not viewer.allows("NSE_EQ|INE090A01021") and not viewer.allows("NSE_FO|1234")
    assert KeyScope.parse(f"{RELIANCE}, NSE_FO|*").forbidden([RELIANCE, "BSE_EQ|X"]) == ["BSE_EQ|X"]
    assert refusal(verify_hmac, hs256(claims(keys=7)), SECRET, None) == "bad_claims"
    assert refusal(verify_hmac, hs256(claims(keys=[1])), SECRET, None) == "bad_claims"


def test_mint_and_ttl() -> None:
    token = mint(SECRET, "ops", parse_ttl("30d"), keys=[RELIANCE], audience="tickstream")
    viewer = verify_hmac(token, SECRET, "tickstream")
    assert viewer.sub == "ops" and viewer.keys == KeyScope.parse([RELIANCE])
    assert viewer.exp is not None and viewer.exp - time.time() > 29 * 86400
    assert [parse_ttl(t) for t in ("90", "90s", "15m", "12h", "2d")] == [90, 90, 900, 43200, 172800]
    for bad in ("", "0", "1w", "-5m", "5 m"):
        with pytest.raises(ValueError):
            parse_ttl(bad)


def test_where_a_credential_is_taken_from() -> None:
    cookie = "theme=dark; tickstream_viewer=cookie-token"
    assert presented_key("token=q&api_key=k", "Bearer h", cookie) == "h"
    assert presented_key("token=q&api_key=k", None, cookie) == "q"
    assert presented_key("api_key=k", None, cookie) == "k"
    assert presented_key("", None, cookie) == "cookie-token"
    assert presented_key("", None, "tickstream_viewer_x=1") is None


@pytest.mark.parametrize(
    ("peer", "forwarded", "trusted", "address"),
    [
        ("10.0.0.9", ["1.2.3.4"], ["127.0.0.1"], "10.0.0.9"),  # untrusted peer: its header ignored
        ("127.0.0.1", ["1.2.3.4"], ["127.0.0.1"], "1.2.3.4"),
        ("127.0.0.1", [], ["127.0.0.1"], "127.0.0.1"),
        ("172.18.0.5", ["6.6.6.6, 1.2.3.4, 172.18.0.7"], ["172.16.0.0/12"], "1.2.3.4"),
        ("172.18.0.5", ["1.2.3.4", "172.18.0.7"], ["172.16.0.0/12"], "1.2.3.4"),  # two headers
        ("172.18.0.5", ["172.18.0.8"], ["172.16.0.0/12"], "172.18.0.8"),  # all trusted
        ("9.9.9.9", ["1.2.3.4, 5.6.7.8"], ["*"], "1.2.3.4"),
        ("127.0.0.1", ["1.2.3.4"], [], "127.0.0.1"),
        (None, ["1.2.3.4"], ["*"], "unknown"),
    ],
)
def test_client_address(
    peer: str | None, forwarded: list[str], trusted: list[str], address: str
) -> None:
    assert client_address(peer, forwarded, trusted) == address


def test_connection_caps() -> None:
    caps = ConnectionCaps(total=3, per_address=2)
    assert [caps.admit("a"), caps.admit("a"), caps.admit("a")] == [
        None,
        None,
        "connections_per_address",
    ]
    assert caps.admit("b") is None
    assert caps.admit("c") == "connections"
    caps.release("a")
    assert caps.open == 2 and caps.admit("c") is None
    unlimited = ConnectionCaps(total=10, per_address=0)
    assert all(unlimited.admit("a") is None for _ in range(10))


def test_a_subscribe_screened_by_the_keys_claim() -> None:
    scope = KeyScope.parse(["NSE_INDEX|*"])
    command = Subscribe("r", (NIFTY, RELIANCE), Mode.LTPC)
    allowed, error = split_forbidden(command, scope)
    assert allowed is not None and allowed.keys == (NIFTY,)
    assert error is not None and error.code == "forbidden_key" and error.keys == (RELIANCE,)
    assert split_forbidden(Subscribe("r", (NIFTY,), Mode.LTPC), scope) == (
        Subscribe("r", (NIFTY,), Mode.LTPC),
        None,
    )
    nothing, error = split_forbidden(Subscribe("r", (RELIANCE,), Mode.LTPC), scope)
    assert nothing is None and error is not None
    with_bad = Subscribe("r", (RELIANCE,), Mode.LTPC, bad_keys=("x",))
    rest, _ = split_forbidden(with_bad, scope)
    assert rest is not None and rest.keys == () and rest.bad_keys == ("x",)


def test_settings_for_token_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_VIEWER_ACCESS", "token")
    with pytest.raises(SettingsError, match="GATEWAY_TOKEN_SECRET"):
        load_settings(GatewaySettings)
    monkeypatch.setenv("GATEWAY_TOKEN_SECRET", "short")
    with pytest.raises(SettingsError, match="GATEWAY_TOKEN_SECRET"):
        load_settings(GatewaySettings)
    monkeypatch.setenv("GATEWAY_TOKEN_SECRET", SECRET)
    settings = load_settings(GatewaySettings)
    assert settings.viewers_need_credentials and SECRET not in repr(settings)
    monkeypatch.setenv("GATEWAY_VIEWER_ACCESS", "open")
    assert not load_settings(GatewaySettings).viewers_need_credentials
    monkeypatch.setenv("GATEWAY_API_KEYS", "k1")
    assert load_settings(GatewaySettings).viewers_need_credentials


async def test_tickstream_token_issue(tmp_path: Path) -> None:
    run = await tickstream(
        "token", "issue", "--sub", "desk-7", "--ttl", "12h", "--keys", f"{NIFTY},NSE_FO|*",
        "--aud", "tickstream", cwd=tmp_path, GATEWAY_TOKEN_SECRET=SECRET,
    )  # fmt: skip
    assert run.status == 0, run.err
    token = run.out.strip()
    viewer = verify_hmac(token, SECRET, "tickstream")
    assert viewer.sub == "desk-7" and viewer.allows(NIFTY) and viewer.allows("NSE_FO|123")
    assert not viewer.allows(RELIANCE)
    assert viewer.exp is not None and 11 * 3600 < viewer.exp - time.time() <= 12 * 3600
    assert token not in run.err and "desk-7" in run.err
    unset = await tickstream("token", "issue", "--sub", "x", cwd=tmp_path)
    assert "GATEWAY_TOKEN_SECRET is not set" in unset.assert_one_line_error()
    short = await tickstream("token", "issue", "--sub", "x", cwd=tmp_path, GATEWAY_TOKEN_SECRET="s")
    assert "GATEWAY_TOKEN_SECRET" in short.assert_one_line_error() and short.status == 2
    bad_ttl = await tickstream(
        "token", "issue", "--sub", "x", "--ttl", "5w", cwd=tmp_path, GATEWAY_TOKEN_SECRET=SECRET
    )
    assert bad_ttl.status == 2 and "5w" in bad_ttl.err
