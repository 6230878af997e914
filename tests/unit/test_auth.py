"""JWT verification, token extraction and minting (tracker_ws/auth.py) with real crypto."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from tracker_ws.auth import (
    LEEWAY_S,
    TokenVerifier,
    extract_token,
    mint_token,
)
from tracker_ws.config import Settings
from tracker_ws.domain.errors import AuthError, ConfigError, TokenExpired
from tracker_ws.domain.models import UserContext

SECRET = "unit-test-secret-that-is-at-least-32-bytes-long"
USER = "6f1c2b1e-8d2a-4c5e-9a1b-2c3d4e5f6a7b"
COMPANY = "0a1b2c3d-4e5f-4a6b-8c7d-8e9f0a1b2c3d"
V1 = "11111111-1111-4111-8111-111111111111"
V2 = "22222222-2222-4222-8222-222222222222"
G1 = "33333333-3333-4333-8333-333333333333"
NOW = 1_700_000_000.0


@dataclass(frozen=True)
class KeyPair:
    private_pem: str
    public_pem: str


def _pems(private_key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> KeyPair:
    private_pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public_pem = (
        private_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return KeyPair(private_pem, public_pem)


@pytest.fixture(scope="module")
def rsa_keys() -> KeyPair:
    return _pems(rsa.generate_private_key(public_exponent=65537, key_size=2048))


@pytest.fixture(scope="module")
def ec_keys() -> KeyPair:
    return _pems(ec.generate_private_key(ec.SECP256R1()))


@pytest.fixture(scope="module")
def hs() -> TokenVerifier:
    return TokenVerifier(SECRET, None, ["HS256"])


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(**overrides: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {"sub": USER, "companyId": COMPANY, "exp": int(NOW) + 3600}
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _hs256(claims: dict[str, Any], secret: str = SECRET) -> str:
    return jwt.encode(claims, secret, algorithm="HS256")


def _hand_signed(header: dict[str, Any], claims: Any, key: bytes | None) -> str:
    """A token built without PyJWT, which refuses to produce the attacks tested here."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    signature = (
        b"" if key is None else hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    )
    return f"{signing_input}.{_b64(signature)}"


# ---------------------------------------------------------------- HS256


def test_valid_hs256_token(hs: TokenVerifier) -> None:
    ctx = hs.verify(_hs256(_claims()), now=NOW)
    assert ctx == UserContext(
        user_id=USER,
        company_id=COMPANY,
        roles=frozenset(),
        vehicle_ids=None,
        group_ids=None,
        expires_at=NOW + 3600,
        platform="web",
    )
    assert not ctx.is_admin


def test_expired_token_raises_token_expired(hs: TokenVerifier) -> None:
    token = _hs256(_claims(exp=int(NOW) - 60))
    with pytest.raises(TokenExpired) as info:
        hs.verify(token, now=NOW)
    assert info.value.code == "TOKEN_EXPIRED"


def test_expiry_leeway_boundary(hs: TokenVerifier) -> None:
    exp = int(NOW)
    token = _hs256(_claims(exp=exp))
    # Within the leeway the token still passes; at exp + leeway it is expired.
    assert hs.verify(token, now=exp + LEEWAY_S - 0.001).expires_at == exp
    with pytest.raises(TokenExpired):
        hs.verify(token, now=exp + LEEWAY_S)


def test_verify_uses_wall_clock_by_default(hs: TokenVerifier) -> None:
    fresh = _hs256(_claims(exp=int(time.time()) + 60))
    stale = _hs256(_claims(exp=int(time.time()) - 60))
    assert hs.verify(fresh).user_id == USER
    with pytest.raises(TokenExpired):
        hs.verify(stale)


def test_missing_exp_rejected(hs: TokenVerifier) -> None:
    token = _hs256(_claims(exp=None))
    with pytest.raises(AuthError, match="exp") as info:
        hs.verify(token, now=NOW)
    assert not isinstance(info.value, TokenExpired)


@pytest.mark.parametrize("exp", ["tomorrow", True, [1]])
def test_non_numeric_exp_rejected(hs: TokenVerifier, exp: Any) -> None:
    with pytest.raises(AuthError, match="exp"):
        hs.verify(_hs256(_claims(exp=exp)), now=NOW)


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
@pytest.mark.parametrize("value", [10**400, -(10**400), float("inf"), float("-inf")])
def test_time_claim_beyond_any_float_rejected(hs: TokenVerifier, claim: str, value: Any) -> None:
    """JSON `1` and 400 zeros is a valid int no float holds (math.isfinite raised
    OverflowError: a 500); `1e400` parses to inf. Both are refused as AuthError."""
    token = _hand_signed({"alg": "HS256", "typ": "JWT"}, _claims(**{claim: value}), SECRET.encode())
    with pytest.raises(AuthError, match=claim) as info:
        hs.verify(token, now=NOW)
    assert not isinstance(info.value, TokenExpired)


@pytest.mark.parametrize("payload", [[1, 2], "text", 7, None])
def test_a_payload_that_is_not_an_object_is_refused(hs: TokenVerifier, payload: Any) -> None:
    token = _hand_signed({"alg": "HS256", "typ": "JWT"}, payload, SECRET.encode())
    with pytest.raises(AuthError, match="not a JSON object"):
        hs.verify(token, now=NOW)


def test_a_jti_that_is_not_a_string_is_refused(hs: TokenVerifier) -> None:
    token = _hand_signed({"alg": "HS256", "typ": "JWT"}, _claims(jti=17), SECRET.encode())
    with pytest.raises(AuthError, match="jti"):
        hs.verify(token, now=NOW)
    assert hs.verify(_hand_signed({"alg": "HS256"}, _claims(jti="j-1"), SECRET.encode()), now=NOW)


def test_the_prepared_secret_still_refuses_another_secret(hs: TokenVerifier) -> None:
    other = _hand_signed({"alg": "HS256", "typ": "JWT"}, _claims(), b"x" * len(SECRET))
    with pytest.raises(AuthError, match="signature"):
        hs.verify(other, now=NOW)


def test_nbf_in_the_future_rejected(hs: TokenVerifier) -> None:
    with pytest.raises(AuthError, match="not valid yet"):
        hs.verify(_hs256(_claims(nbf=int(NOW) + 60)), now=NOW)
    assert hs.verify(_hs256(_claims(nbf=int(NOW) + 1)), now=NOW).user_id == USER


def test_forged_signature_rejected(hs: TokenVerifier) -> None:
    token = _hs256(_claims(roles=["admin"]), secret="another-secret-that-is-also-32-bytes-long")
    with pytest.raises(AuthError, match="signature"):
        hs.verify(token, now=NOW)


def test_tampered_payload_rejected(hs: TokenVerifier) -> None:
    header, _, signature = _hs256(_claims()).split(".")
    payload = _b64(json.dumps(_claims(roles=["admin"])).encode())
    with pytest.raises(AuthError, match="signature"):
        hs.verify(f"{header}.{payload}.{signature}", now=NOW)


def test_alg_none_rejected(hs: TokenVerifier) -> None:
    token = _hand_signed({"alg": "none", "typ": "JWT"}, _claims(roles=["admin"]), None)
    assert token.endswith(".")
    with pytest.raises(AuthError, match="not allowed"):
        hs.verify(token, now=NOW)


def test_algorithm_outside_allow_list_rejected(hs: TokenVerifier) -> None:
    token = jwt.encode(_claims(), SECRET + SECRET, algorithm="HS512")
    with pytest.raises(AuthError, match="HS512"):
        hs.verify(token, now=NOW)


@pytest.mark.parametrize(
    "token", ["", "garbage", "a.b.c", "a.b", "a.b.c.d", "a!.b.c", "a b.c.d", "x" * 9000]
)
def test_malformed_tokens_rejected(hs: TokenVerifier, token: str) -> None:
    with pytest.raises(AuthError):
        hs.verify(token, now=NOW)


def test_short_secret_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="tracker_ws.auth"):
        TokenVerifier("short-secret", None, ["HS256"])
        TokenVerifier(SECRET, None, ["HS256"])
    assert [r.getMessage() for r in caplog.records] == [
        "JWT secret is shorter than 32 bytes: fine for development, weak for HS256"
    ]


def test_non_object_payload_rejected(hs: TokenVerifier) -> None:
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = _b64(b"[1, 2, 3]")
    signing_input = f"{header}.{payload}"
    sig = hmac.new(SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
    with pytest.raises(AuthError, match="malformed"):
        hs.verify(f"{signing_input}.{_b64(sig)}", now=NOW)


# ---------------------------------------------------------------- RS256 / ES256


def test_rs256_valid_with_public_key(rsa_keys: KeyPair) -> None:
    verifier = TokenVerifier(None, rsa_keys.public_pem, ["RS256"])
    token = jwt.encode(_claims(roles=["admin"]), rsa_keys.private_pem, algorithm="RS256")
    ctx = verifier.verify(token, now=NOW)
    assert (ctx.user_id, ctx.company_id, ctx.is_admin) == (USER, COMPANY, True)


def test_es256_valid_with_public_key(ec_keys: KeyPair) -> None:
    verifier = TokenVerifier(None, ec_keys.public_pem, ["ES256"])
    token = jwt.encode(_claims(), ec_keys.private_pem, algorithm="ES256")
    assert verifier.verify(token, now=NOW).user_id == USER


def test_rs256_signed_by_another_key_rejected(rsa_keys: KeyPair) -> None:
    other = _pems(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    verifier = TokenVerifier(None, rsa_keys.public_pem, ["RS256"])
    token = jwt.encode(_claims(), other.private_pem, algorithm="RS256")
    with pytest.raises(AuthError, match="signature"):
        verifier.verify(token, now=NOW)


def test_hs256_signed_with_public_key_text_rejected(rsa_keys: KeyPair) -> None:
    """Algorithm confusion: the public key is public, so an attacker can HMAC with it."""
    forged = _hand_signed(
        {"alg": "HS256", "typ": "JWT"}, _claims(roles=["admin"]), rsa_keys.public_pem.encode()
    )
    asymmetric_only = TokenVerifier(SECRET, rsa_keys.public_pem, ["RS256", "ES256"])
    with pytest.raises(AuthError, match="not allowed"):
        asymmetric_only.verify(forged, now=NOW)
    # Even with HS256 allowed too, HS256 is bound to the secret, never to the public key.
    mixed = TokenVerifier(SECRET, rsa_keys.public_pem, ["HS256", "RS256"])
    with pytest.raises(AuthError, match="signature"):
        mixed.verify(forged, now=NOW)


def test_mixed_allow_list_routes_each_algorithm_to_its_key(rsa_keys: KeyPair) -> None:
    verifier = TokenVerifier(SECRET, rsa_keys.public_pem, ["HS256", "RS256"])
    assert verifier.algorithms == ("HS256", "RS256")
    assert verifier.verify(_hs256(_claims()), now=NOW).user_id == USER
    rs = jwt.encode(_claims(), rsa_keys.private_pem, algorithm="RS256")
    assert verifier.verify(rs, now=NOW).user_id == USER
    with pytest.raises(AuthError, match="not allowed"):
        verifier.verify(_hand_signed({"alg": "none"}, _claims(), None), now=NOW)


def test_es256_token_refused_when_public_key_is_rsa(rsa_keys: KeyPair, ec_keys: KeyPair) -> None:
    # Settings.from_env allows RS256 and ES256 whenever a key is set; an RSA key narrows that.
    verifier = TokenVerifier(SECRET, rsa_keys.public_pem, ("RS256", "ES256"))
    assert verifier.algorithms == ("RS256",)
    token = jwt.encode(_claims(), ec_keys.private_pem, algorithm="ES256")
    with pytest.raises(AuthError, match="not allowed"):
        verifier.verify(token, now=NOW)


def test_hs256_refused_when_only_asymmetric_allowed(ec_keys: KeyPair) -> None:
    verifier = TokenVerifier(SECRET, ec_keys.public_pem, ["RS256", "ES256"])
    with pytest.raises(AuthError, match="not allowed"):
        verifier.verify(_hs256(_claims()), now=NOW)


def test_from_settings(rsa_keys: KeyPair) -> None:
    default = TokenVerifier.from_settings(Settings(jwt_secret=SECRET))
    assert default.algorithms == ("HS256",)
    assert default.verify(_hs256(_claims()), now=NOW).user_id == USER
    keyed = TokenVerifier.from_settings(
        Settings(jwt_public_key=rsa_keys.public_pem, jwt_algorithms=("RS256", "ES256"))
    )
    assert keyed.algorithms == ("RS256",)


def test_configuration_errors(rsa_keys: KeyPair) -> None:
    with pytest.raises(ConfigError):
        TokenVerifier(SECRET, None, [])
    with pytest.raises(ConfigError, match="none"):
        TokenVerifier(SECRET, None, ["none"])
    with pytest.raises(ConfigError, match="secret"):
        TokenVerifier(None, None, ["HS256"])
    with pytest.raises(ConfigError, match="public key"):
        TokenVerifier(SECRET, None, ["RS256"])
    with pytest.raises(ConfigError, match="PEM"):
        TokenVerifier(None, "not a key", ["RS256"])
    with pytest.raises(ConfigError, match="cannot verify"):
        TokenVerifier(None, rsa_keys.public_pem, ["ES256"])
    p384 = _pems(ec.generate_private_key(ec.SECP384R1()))
    with pytest.raises(ConfigError, match="cannot verify"):
        TokenVerifier(None, p384.public_pem, ["ES256"])
    small = _pems(rsa.generate_private_key(public_exponent=65537, key_size=1024))
    with pytest.raises(ConfigError, match="2048"):
        TokenVerifier(None, small.public_pem, ["RS256"])


# ---------------------------------------------------------------- claims


@pytest.mark.parametrize(
    ("claim", "value"),
    [
        ("sub", None),
        ("sub", "user-42"),
        ("sub", 42),
        ("sub", USER + "0"),
        ("companyId", None),
        ("companyId", "acme"),
        ("companyId", ["0a1b2c3d-4e5f-4a6b-8c7d-8e9f0a1b2c3d"]),
    ],
)
def test_bad_identity_claims_rejected(hs: TokenVerifier, claim: str, value: Any) -> None:
    with pytest.raises(AuthError, match=claim):
        hs.verify(_hs256(_claims(**{claim: value})), now=NOW)


def test_uuids_are_normalized_to_lower_case(hs: TokenVerifier) -> None:
    token = _hs256(
        _claims(
            sub=USER.upper(),
            companyId=COMPANY.upper(),
            vehicleIds=[V1, V2.upper(), V2],
            groupIds=[G1.upper()],
        )
    )
    ctx = hs.verify(token, now=NOW)
    assert ctx.user_id == USER
    assert ctx.company_id == COMPANY
    assert ctx.vehicle_ids == frozenset({V1, V2})
    assert ctx.group_ids == frozenset({G1})


def test_roles_vehicle_and_group_claims(hs: TokenVerifier) -> None:
    token = _hs256(
        _claims(roles=["admin", "dispatcher"], vehicleIds=[V1], groupIds=[], platform="mobile")
    )
    ctx = hs.verify(token, now=NOW)
    assert ctx.roles == frozenset({"admin", "dispatcher"})
    assert ctx.is_admin
    assert ctx.vehicle_ids == frozenset({V1})
    assert ctx.group_ids == frozenset()  # an explicit empty list narrows to nothing
    assert ctx.platform == "mobile"


def test_null_optional_claims_mean_no_narrowing(hs: TokenVerifier) -> None:
    token = _hs256({**_claims(), "roles": None, "vehicleIds": None, "groupIds": None})
    ctx = hs.verify(token, now=NOW)
    assert (ctx.roles, ctx.vehicle_ids, ctx.group_ids) == (frozenset(), None, None)


@pytest.mark.parametrize(
    ("claim", "value"),
    [
        ("roles", "admin"),
        ("roles", [1]),
        ("roles", [""]),
        ("roles", {"admin": True}),
        ("vehicleIds", V1),
        ("vehicleIds", [V1, "truck-7"]),
        ("vehicleIds", [7]),
        ("groupIds", [None]),
        ("groupIds", "all"),
        ("platform", "tv"),
        ("platform", 1),
    ],
)
def test_malformed_optional_claims_rejected(hs: TokenVerifier, claim: str, value: Any) -> None:
    with pytest.raises(AuthError, match=claim):
        hs.verify(_hs256(_claims(**{claim: value})), now=NOW)


@pytest.mark.parametrize("platform", ["web", "mobile", "desktop", "Desktop"])
def test_platform_values(hs: TokenVerifier, platform: str) -> None:
    assert hs.verify(_hs256(_claims(platform=platform)), now=NOW).platform == platform.lower()


# ---------------------------------------------------------------- extract_token


def test_extract_from_query() -> None:
    assert extract_token({"token": "q.t.s"}, {}) == ("q.t.s", None)


def test_extract_from_authorization_header() -> None:
    assert extract_token({}, {"Authorization": "Bearer h.t.s"}) == ("h.t.s", None)
    assert extract_token({}, {"authorization": "bearer  h.t.s "}) == ("h.t.s", None)
    assert extract_token({}, {"Authorization": "Basic dXNlcjpwYXNz"}) == (None, None)
    assert extract_token({}, {"Authorization": "Bearer "}) == (None, None)


def test_extract_from_subprotocol_pair() -> None:
    headers = {"Sec-WebSocket-Protocol": "bearer, p.t.s"}
    assert extract_token({}, headers) == ("p.t.s", "bearer")
    other_first = {"sec-websocket-protocol": "tracker.v1, bearer, p.t.s"}
    assert extract_token({}, other_first) == ("p.t.s", "bearer")


def test_extract_from_subprotocol_dotted() -> None:
    headers = {"Sec-WebSocket-Protocol": "tracker.v1, bearer.p.t.s"}
    assert extract_token({}, headers) == ("p.t.s", "bearer.p.t.s")


@pytest.mark.parametrize("value", ["bearer", "bearer, ", "bearer.", "tracker.v1", ""])
def test_extract_subprotocol_without_token(value: str) -> None:
    assert extract_token({}, {"Sec-WebSocket-Protocol": value}) == (None, None)


def test_extract_precedence() -> None:
    headers = {"Authorization": "Bearer header", "Sec-WebSocket-Protocol": "bearer, proto"}
    # The token comes from the first source; an offered bearer subprotocol is always echoed.
    assert extract_token({"token": "query"}, headers) == ("query", "bearer")
    assert extract_token({}, headers) == ("header", "bearer")
    assert extract_token({"token": ""}, headers) == ("header", "bearer")
    assert extract_token({"token": "query"}, {"Authorization": "Bearer h"}) == ("query", None)
    assert extract_token({}, {"Sec-WebSocket-Protocol": "bearer, proto"}) == ("proto", "bearer")
    assert extract_token({}, {}) == (None, None)


def test_extract_works_with_case_insensitive_multidict() -> None:
    multidict = pytest.importorskip("multidict")
    headers = multidict.CIMultiDictProxy(
        multidict.CIMultiDict({"SEC-WEBSOCKET-PROTOCOL": "bearer.x.y.z"})
    )
    assert extract_token({}, headers) == ("x.y.z", "bearer.x.y.z")


def test_extracted_subprotocol_token_verifies(hs: TokenVerifier) -> None:
    minted = mint_token(USER, COMPANY, secret=SECRET, now=NOW)
    token, echo = extract_token({}, {"Sec-WebSocket-Protocol": f"bearer, {minted}"})
    assert echo == "bearer"
    assert token is not None
    assert hs.verify(token, now=NOW).user_id == USER


# ---------------------------------------------------------------- mint_token


def test_mint_round_trip(hs: TokenVerifier) -> None:
    token = mint_token(
        USER,
        COMPANY,
        secret=SECRET,
        roles=["admin"],
        vehicle_ids=[V1],
        group_ids=[G1],
        ttl_s=120,
        platform="desktop",
        now=NOW,
    )
    assert hs.verify(token, now=NOW) == UserContext(
        user_id=USER,
        company_id=COMPANY,
        roles=frozenset({"admin"}),
        vehicle_ids=frozenset({V1}),
        group_ids=frozenset({G1}),
        expires_at=NOW + 120,
        platform="desktop",
    )
    with pytest.raises(TokenExpired):
        hs.verify(token, now=NOW + 120 + LEEWAY_S)


def test_mint_defaults_and_wall_clock(hs: TokenVerifier) -> None:
    ctx = hs.verify(mint_token(USER, COMPANY, secret=SECRET))
    assert ctx.vehicle_ids is None and ctx.group_ids is None
    assert ctx.platform == "web"
    assert ctx.expires_at == pytest.approx(time.time() + 86400, abs=5)


def test_mint_asymmetric(rsa_keys: KeyPair, ec_keys: KeyPair) -> None:
    for keys, alg in ((rsa_keys, "RS256"), (ec_keys, "ES256")):
        token = mint_token(
            USER, COMPANY, secret="", algorithm=alg, private_key=keys.private_pem, now=NOW
        )
        assert jwt.get_unverified_header(token)["alg"] == alg
        assert TokenVerifier(None, keys.public_pem, [alg]).verify(token, now=NOW).user_id == USER
    with pytest.raises(ValueError, match="private_key"):
        mint_token(USER, COMPANY, secret=SECRET, algorithm="RS256")


def test_verification_is_cheap(hs: TokenVerifier) -> None:
    # Every connect verifies a token; the target is >= 1000 connects/s per instance.
    token = mint_token(USER, COMPANY, secret=SECRET, vehicle_ids=[V1, V2], now=NOW)
    n = 500
    started = time.perf_counter()
    for _ in range(n):
        hs.verify(token, now=NOW)
    per_token = (time.perf_counter() - started) / n
    assert per_token < 1e-3
